"""Resumable mini-jobs: a batch that died part-way is finished by the next run without redoing staged chunks."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from batch_predict.batch import predict_partition, staging_dir
from batch_predict.models.registry import Registry
from batch_predict.models.types import LoadedModel, ModelMetadata
from batch_predict.warehouse import Source, Warehouse

CHUNK = 50


class Died(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the batch catches it."""


class CountingModel:
    def __init__(self, inner: Any, die_at_call: int | None = None) -> None:
        self.inner = inner
        self.die_at_call = die_at_call
        self.calls = 0
        self.rows = 0
        self.classes_ = inner.classes_

    def predict_proba(self, frame: Any) -> np.ndarray:
        self.calls += 1
        if self.calls == self.die_at_call:
            raise Died()
        self.rows += len(frame)
        return np.asarray(self.inner.predict_proba(frame))


def wrap(loaded: LoadedModel, model: CountingModel, checksum: str | None = None) -> LoadedModel:
    metadata = (
        loaded.metadata if checksum is None else ModelMetadata(**{**loaded.metadata.__dict__, "checksum": checksum})
    )
    return LoadedModel(metadata, model, loaded.path)


@pytest.fixture
def partition(warehouse: Warehouse, source: Source, landing: Path) -> int:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    return warehouse.snapshot_inputs(source, "2026-03-01", start, start + timedelta(days=1), "snap").valid_rows


def predictions(warehouse: Warehouse) -> tuple[int, int]:
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        row = con.execute("SELECT count(*), count(DISTINCT record_id) FROM predictions").fetchall()[0]
    return row[0], row[1]


def test_a_rerun_predicts_only_the_chunks_not_staged(warehouse: Warehouse, registry: Registry, partition: int) -> None:
    loaded = registry.load("champion")
    chunks = -(-partition // CHUNK)
    dying = CountingModel(loaded.estimator, die_at_call=4)
    with pytest.raises(Died):
        predict_partition(warehouse, wrap(loaded, dying), "2026-03-01", "dies", CHUNK)
    assert predictions(warehouse) == (0, 0), "nothing may be published by a run that died"
    assert len(list((staging_dir(warehouse, "2026-03-01") / "chunks").glob("*.done"))) == 3

    counting = CountingModel(loaded.estimator)
    outcome = predict_partition(warehouse, wrap(loaded, counting), "2026-03-01", "resumes", CHUNK)
    assert outcome.scored.resumed == 3
    assert counting.calls == outcome.scored.model_calls == chunks - 3
    assert counting.rows == partition - 3 * CHUNK
    assert predictions(warehouse) == (partition, partition)
    assert outcome.published.completeness.passed
    assert not staging_dir(warehouse, "2026-03-01").exists()


def test_a_rerun_with_another_model_starts_over(warehouse: Warehouse, registry: Registry, partition: int) -> None:
    loaded = registry.load("champion")
    with pytest.raises(Died):
        predict_partition(warehouse, wrap(loaded, CountingModel(loaded.estimator, 3)), "2026-03-01", "dies", CHUNK)
    counting = CountingModel(loaded.estimator)
    outcome = predict_partition(warehouse, wrap(loaded, counting, checksum="0" * 64), "2026-03-01", "new", CHUNK)
    assert outcome.scored.resumed == 0
    assert counting.rows == partition
    assert predictions(warehouse) == (partition, partition)


def test_rows_held_at_once_do_not_grow_with_the_partition(
    warehouse: Warehouse, source: Source, registry: Registry, partition: int
) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    big = warehouse.snapshot_inputs(source, "2026-03-big", start, start + timedelta(days=3), "snap").valid_rows
    assert big > 1.5 * partition  # day one is already in "2026-03-01": those are duplicates here
    loaded = registry.load("champion")
    peaks = {}
    for key, rows in (("2026-03-01", partition), ("2026-03-big", big)):
        counting = CountingModel(loaded.estimator)
        outcome = predict_partition(warehouse, wrap(loaded, counting), key, f"run-{key}", 7)
        assert counting.rows == rows
        peaks[key] = outcome.scored.peak_rows
    # The most rows held at once is one chunk, whatever the partition's size.
    assert peaks == {"2026-03-01": 7, "2026-03-big": 7}
