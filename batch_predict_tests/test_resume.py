"""Resumable mini-jobs: a batch that died part-way is finished by the next run without redoing staged chunks."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from batch_predict.batch import predict_partition, staging_dir
from batch_predict.demo import FlakyClassifier
from batch_predict.models.registry import Registry
from batch_predict.models.types import LoadedModel, ModelMetadata
from batch_predict.scoring import ERROR_SCHEMA, prediction_schema
from batch_predict.settings import Settings
from batch_predict.staging import staged_outcome
from batch_predict.warehouse import Source, Warehouse

from .conftest import BOTH_BACKENDS, stored_rows
from .slow_model import SlowClassifier

REPO = Path(__file__).resolve().parents[1]

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


def test_a_run_killed_while_it_removes_its_staging_leaves_nothing_the_next_run_trips_on(
    warehouse: Warehouse, registry: Registry, partition: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publish is done; the process dies while it removes the staging folder, one chunk's predictions
    file gone and its `done` marker still there. The next run reads the work anew: it does not resume
    the half-removed folder and fail on the missing file."""
    import batch_predict.batch as batch

    loaded = registry.load("champion")
    remove = batch.shutil.rmtree

    def dies_part_way(path: Path, ignore_errors: bool = False) -> None:
        staged = Path(path) / "chunks" / "000000.predictions.arrow"
        if not staged.exists():  # the clearing of a folder before the work is read
            remove(path, ignore_errors=ignore_errors)
            return
        staged.unlink()
        raise Died()

    monkeypatch.setattr(batch.shutil, "rmtree", dies_part_way)
    with pytest.raises(Died):
        predict_partition(warehouse, loaded, "2026-03-01", "dies while cleaning", CHUNK)
    monkeypatch.setattr(batch.shutil, "rmtree", remove)
    assert predictions(warehouse) == (partition, partition)  # published before the cleanup
    assert (staging_dir(warehouse, "2026-03-01") / "chunks" / "000000.done").exists()

    counting = CountingModel(loaded.estimator)
    outcome = predict_partition(warehouse, wrap(loaded, counting), "2026-03-01", "next", CHUNK)
    assert outcome.scored.resumed == 0
    assert counting.rows == partition
    assert predictions(warehouse) == (partition, partition)
    assert outcome.published.completeness.passed


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


KILLED_CHILD = """
import sys
from pathlib import Path
from batch_predict.batch import predict_partition
from batch_predict.contract import FeatureContract
from batch_predict.models.registry import Registry
from batch_predict.settings import load_settings
from batch_predict.warehouse import Warehouse
location, staging, models = sys.argv[1:4]
contract = FeatureContract.from_settings(load_settings({}))
warehouse = Warehouse(location, contract, lock_timeout_seconds=30, staging_root=Path(staging))
predict_partition(warehouse, Registry(Path(models)).load("champion"), "2026-03-01", "killed", 20)
"""


@BOTH_BACKENDS
def test_a_run_killed_while_predicting_is_resumed_and_every_record_ends_in_one_place(
    warehouse: Warehouse, registry: Registry, partition: int, settings: Settings, tmp_path: Path
) -> None:
    clean = registry.load("champion")
    marker = tmp_path / "model_busy"
    # Fails on about 1% of the records (each isolated by bisection), and stalls from its 16th call on.
    slow = SlowClassifier(FlakyClassifier(clean.estimator, fail_share=0.01), marker, fast_batches=15)
    version = registry.register(
        slow,
        name="iris-slow",
        trained_at=datetime.now(UTC),
        features=[{"name": name, "dtype": "float64"} for name in settings.features],
        metrics={},
        training_window={},
    ).version
    registry.set_alias("champion", version)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(settings.warehouse), str(settings.staging), str(settings.models)],
        env={**os.environ, "PYTHONPATH": str(REPO), "SLOW_MODEL_ACTIVE": "1"},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the run ended before its model stalled"
            assert time.monotonic() < deadline, "the model never stalled"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    chunks = staging_dir(warehouse, "2026-03-01") / "chunks"
    staged = staged_outcome(chunks, prediction_schema(clean), ERROR_SCHEMA, None)
    staged_rows = sum(part.rows.read_all().num_rows for part in staged.predictions) + staged.errors.count_rows()
    done = len(list(chunks.glob("*.done")))
    assert 0 < done < -(-partition // 20), "the kill did not land part-way through the prediction"
    assert stored_rows(warehouse, "SELECT count(*) FROM predictions") == [(0,)], "a run that died published"

    counting = CountingModel(registry.load("champion").estimator)
    outcome = predict_partition(warehouse, wrap(registry.load("champion"), counting), "2026-03-01", "rerun", 20)
    # It resumed: the chunks the killed run staged were not predicted again.
    assert outcome.scored.resumed == done
    assert outcome.scored.predicted + outcome.scored.failed == partition - staged_rows
    assert outcome.published.completeness.passed
    [(run_ids,)] = stored_rows(warehouse, "SELECT array_agg(DISTINCT run_id ORDER BY run_id) FROM predictions")
    assert run_ids == ["killed", "rerun"]
    # Every record of the day's landing files is in exactly one place: predicted, failed or rejected.
    [(outcomes, distinct, unmatched, failed, rejected, source_rows)] = stored_rows(
        warehouse,
        """
        SELECT count(*), count(DISTINCT record_id),
               count(*) FILTER (WHERE record_id NOT IN (SELECT record_id FROM inputs WHERE partition_key = $k)),
               (SELECT count(*) FROM prediction_errors WHERE partition_key = $k),
               (SELECT count(*) FROM rejected_inputs WHERE partition_key = $k),
               (SELECT source_rows FROM input_stats WHERE partition_key = $k)
        FROM (SELECT record_id FROM predictions WHERE partition_key = $k
              UNION ALL SELECT record_id FROM prediction_errors WHERE partition_key = $k) AS outcomes
        """,
        k="2026-03-01",
    )
    assert outcomes == distinct == partition and unmatched == 0
    assert partition + rejected == source_rows
    assert failed > 0
    assert not staging_dir(warehouse, "2026-03-01").exists()
