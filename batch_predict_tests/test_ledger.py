"""The per-record outcome ledger and the three rerun modes, on a real warehouse without Dagster."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from batch_predict.batch import predict_partition
from batch_predict.demo import FlakyClassifier, train_demo_model
from batch_predict.models.registry import Registry
from batch_predict.models.types import LoadedModel
from batch_predict.scoring import ERROR_SCHEMA, RunInfo, predict_chunks, prediction_schema
from batch_predict.settings import IRIS_FEATURES, OnFailure, Settings
from batch_predict.staging import staged_outcome, work_chunks, write_work
from batch_predict.warehouse import PredictionRun, Source, Warehouse

from .conftest import BOTH_BACKENDS, change_stored_rows, stored_rows

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]


@pytest.fixture
def snapshotted(warehouse: Warehouse, source: Source, landing: Path) -> Warehouse:
    for key in DAYS:
        start = datetime.fromisoformat(key).replace(tzinfo=UTC)
        warehouse.snapshot_inputs(source, key, start, start + timedelta(days=1), f"inputs-{key}")
    return warehouse


def flaky(registry: Registry, share: float = 0.03) -> LoadedModel:
    clean = registry.load("champion")
    return LoadedModel(clean.metadata, FlakyClassifier(clean.estimator, fail_share=share), clean.path)


def failing_ids(warehouse: Warehouse, model: LoadedModel, key: str) -> set[str]:
    frame = pd.DataFrame(
        warehouse.query("SELECT * FROM inputs WHERE partition_key = $k ORDER BY record_id", {"k": key})
    )
    mask = model.estimator.failing(frame[list(IRIS_FEATURES)])
    return set(frame["record_id"][mask])


def ledger(warehouse: Warehouse, key: str) -> dict[str, Any]:
    [(inputs, predicted, failed, both)] = stored_rows(
        warehouse,
        """
        SELECT (SELECT count(*) FROM inputs WHERE partition_key = $k),
               (SELECT count(*) FROM predictions WHERE partition_key = $k),
               (SELECT count(*) FROM prediction_errors WHERE partition_key = $k),
               (SELECT count(*) FROM predictions p JOIN prediction_errors e USING (partition_key, record_id)
                WHERE p.partition_key = $k)
        """,
        k=key,
    )
    assert both == 0, "a record is both predicted and failed"
    assert predicted + failed == inputs, "a record is lost or duplicated"
    return {"inputs": inputs, "predicted": predicted, "failed": failed}


def run(warehouse: Warehouse, model: LoadedModel, key: str, mode: str, **kwargs: Any) -> Any:
    return predict_partition(warehouse, model, key, f"run-{key}-{mode}", chunk_size=64, mode=mode, **kwargs)


@BOTH_BACKENDS
def test_failed_records_are_isolated_and_recorded(snapshotted: Warehouse, registry: Registry) -> None:
    model = flaky(registry)
    expected = failing_ids(snapshotted, model, DAYS[0])
    assert 3 <= len(expected) < 40
    outcome = run(snapshotted, model, DAYS[0], OnFailure.RETRY_ALL)
    counts = ledger(snapshotted, DAYS[0])
    assert counts["failed"] == len(expected) == outcome.published.failed
    assert outcome.published.completeness.passed
    errors = stored_rows(snapshotted, "SELECT record_id, error, attempt, dead, run_id FROM prediction_errors")
    assert {row[0] for row in errors} == expected
    assert all("injected fault" in row[1] and row[2] == 1 and not row[3] for row in errors)
    assert {row[4] for row in errors} == {"run-2026-03-01-retry_all"}
    [stats] = stored_rows(
        snapshotted,
        "SELECT succeeded, failed, rejected, carried_in, model_version, run_id, rows_per_second, wall_seconds "
        "FROM prediction_stats",
    )
    assert stats[:6] == (counts["predicted"], len(expected), stats[2], 0, "v1", "run-2026-03-01-retry_all")
    assert stats[2] > 0 and stats[6] > 0 and stats[7] > 0


@BOTH_BACKENDS
def test_retry_all_repredicts_every_record(snapshotted: Warehouse, registry: Registry) -> None:
    run(snapshotted, flaky(registry), DAYS[0], OnFailure.RETRY_ALL)
    outcome = predict_partition(snapshotted, registry.load("champion"), DAYS[0], "second", 64, mode=OnFailure.RETRY_ALL)
    counts = ledger(snapshotted, DAYS[0])
    assert counts["failed"] == 0
    assert outcome.work.own == counts["inputs"] == outcome.published.run_predicted
    assert stored_rows(snapshotted, "SELECT DISTINCT run_id FROM predictions") == [("second",)]


@BOTH_BACKENDS
def test_retry_failed_repredicts_only_the_failed_records(snapshotted: Warehouse, registry: Registry) -> None:
    first = run(snapshotted, flaky(registry), DAYS[0], OnFailure.RETRY_ALL)
    failed = first.published.failed
    before = stored_rows(snapshotted, "SELECT record_id, run_id, predicted_at FROM predictions ORDER BY 1")
    clean = registry.load("champion")
    outcome = predict_partition(snapshotted, clean, DAYS[0], "partial", 64, mode=OnFailure.RETRY_FAILED)
    assert outcome.work.own == failed == outcome.published.run_predicted
    assert outcome.scored.model_calls == 1  # one chunk of the failed records, nothing else
    counts = ledger(snapshotted, DAYS[0])
    assert counts["failed"] == 0
    after = stored_rows(
        snapshotted, "SELECT record_id, run_id, predicted_at FROM predictions WHERE run_id <> 'partial' ORDER BY 1"
    )
    assert after == before
    assert stored_rows(snapshotted, "SELECT count(*) FROM predictions WHERE run_id = 'partial'") == [(failed,)]


@BOTH_BACKENDS
def test_retry_failed_counts_attempts_and_full_refresh_takes_everything(
    snapshotted: Warehouse, registry: Registry
) -> None:
    model = flaky(registry)
    run(snapshotted, model, DAYS[0], OnFailure.RETRY_ALL)
    run(snapshotted, model, DAYS[0], OnFailure.RETRY_FAILED)
    assert {row[0] for row in stored_rows(snapshotted, "SELECT attempt FROM prediction_errors")} == {2}
    refreshed = predict_partition(
        snapshotted, registry.load("champion"), DAYS[0], "refresh", 64, mode=OnFailure.RETRY_FAILED, full_refresh=True
    )
    assert refreshed.mode == OnFailure.RETRY_ALL
    assert refreshed.work.own == ledger(snapshotted, DAYS[0])["inputs"]
    assert stored_rows(snapshotted, "SELECT DISTINCT run_id FROM predictions") == [("refresh",)]


@BOTH_BACKENDS
def test_carry_over_takes_failed_records_into_the_next_batch(snapshotted: Warehouse, registry: Registry) -> None:
    first = run(snapshotted, flaky(registry), DAYS[0], OnFailure.CARRY_OVER)
    failed = first.published.failed
    second = run(snapshotted, registry.load("champion"), DAYS[1], OnFailure.CARRY_OVER)
    assert second.work.carried == failed == second.published.carried_in
    assert ledger(snapshotted, DAYS[0]) == {"inputs": first.work.own, "predicted": first.work.own, "failed": 0}
    ledger(snapshotted, DAYS[1])
    carried = stored_rows(
        snapshotted,
        "SELECT partition_key, predicted_in_partition, count(*) FROM predictions "
        "WHERE partition_key <> predicted_in_partition GROUP BY partition_key, predicted_in_partition",
    )
    assert carried == [(DAYS[0], DAYS[1], failed)]
    # The same record ids, not copies: each input of the first day has exactly one prediction.
    assert stored_rows(
        snapshotted,
        "SELECT count(*), count(DISTINCT record_id) FROM predictions WHERE partition_key = $k",
        k=DAYS[0],
    ) == [(first.work.own, first.work.own)]


@BOTH_BACKENDS
def test_a_record_that_keeps_failing_dies_after_max_attempts(snapshotted: Warehouse, registry: Registry) -> None:
    model = flaky(registry)
    origin = failing_ids(snapshotted, model, DAYS[0])
    for key in DAYS:
        run(snapshotted, model, key, OnFailure.CARRY_OVER, max_attempts=3)
    rows = stored_rows(
        snapshotted,
        "SELECT record_id, attempt, dead, attempted_in_partition FROM prediction_errors WHERE partition_key = $k",
        k=DAYS[0],
    )
    assert {row[0] for row in rows} == origin
    assert {row[1:] for row in rows} == {(3, True, DAYS[2])}
    # Dead records are not carried any further; the later days' failures (attempts 1 and 2) are.
    alive = failing_ids(snapshotted, model, DAYS[1]) | failing_ids(snapshotted, model, DAYS[2])
    later = predict_partition(
        snapshotted, registry.load("champion"), "2026-03-04", "later", 64, mode=OnFailure.CARRY_OVER
    )
    assert later.work.carried == len(alive) == later.published.carried_in
    assert {row[0] for row in stored_rows(snapshotted, "SELECT record_id FROM prediction_errors")} == origin
    for key in DAYS:
        ledger(snapshotted, key)


@BOTH_BACKENDS
def test_two_runs_carrying_the_same_record_store_one_prediction(
    snapshotted: Warehouse, registry: Registry, tmp_path: Path
) -> None:
    run(snapshotted, flaky(registry), DAYS[0], OnFailure.CARRY_OVER)
    clean = registry.load("champion")
    work = {}
    for key in DAYS[1:]:  # both read their work before either publishes
        work[key] = tmp_path / key / "work"
        with snapshotted.partition_work(key) as source:
            write_work(source.records(only_unpredicted=False, carry=True), work[key], 64, key)
    results = {}
    for key in DAYS[1:]:
        info = RunInfo(partition_key=key, run_id=f"race-{key}", predicted_at=datetime.now(UTC))
        predict_chunks(clean, work[key], tmp_path / key / "chunks", IRIS_FEATURES, info)
        results[key] = snapshotted.publish_outcome(
            PredictionRun(
                key,
                f"race-{key}",
                OnFailure.CARRY_OVER,
                "m",
                "v1",
                ["proba_setosa", "proba_versicolor", "proba_virginica"],
                3,
                1.0,
            ),
            staged_outcome(tmp_path / key / "chunks", prediction_schema(clean), ERROR_SCHEMA, work_chunks(work[key])),
        )
    assert results[DAYS[1]].carried_in > 0
    assert results[DAYS[2]].carried_in == 0
    for key in DAYS:
        ledger(snapshotted, key)
    assert stored_rows(
        snapshotted, "SELECT count(*) - count(DISTINCT (partition_key, record_id)) FROM predictions"
    ) == [(0,)]


@BOTH_BACKENDS
def test_completeness_names_missing_doubled_and_unexpected_outcomes(snapshotted: Warehouse, registry: Registry) -> None:
    run(snapshotted, registry.load("champion"), DAYS[0], OnFailure.RETRY_ALL)
    assert snapshotted.completeness(DAYS[0]).passed
    change_stored_rows(
        snapshotted,
        "DELETE FROM predictions WHERE record_id = (SELECT min(record_id) FROM predictions)",
        # The same table on both sides: its columns line up without naming them.
        "INSERT INTO predictions SELECT * FROM predictions WHERE record_id = (SELECT max(record_id) FROM predictions)",
        "INSERT INTO prediction_errors (partition_key, record_id, error, attempt, dead) VALUES ($k, 'ghost', 'x', 1, false)",
        k=DAYS[0],
    )
    broken = snapshotted.completeness(DAYS[0])
    assert not broken.passed
    assert (broken.missing, broken.duplicated, broken.unexpected) == (1, 1, 1)


def scanned_versions(warehouse: Warehouse) -> dict[str, list[str]]:
    """Each predicted partition's model versions, read from every prediction (what `model_versions` keeps)."""
    rows = stored_rows(
        warehouse,
        """
        SELECT s.partition_key, s.model_version, p.model_version
        FROM prediction_stats AS s LEFT JOIN predictions AS p ON p.partition_key = s.partition_key
        """,
    )
    found: dict[str, set[str]] = {}
    last: dict[str, str] = {}
    for key, stats_version, version in rows:
        last[key] = stats_version
        found.setdefault(key, set())
        if version is not None:
            found[key].add(version)
    return {key: sorted(found[key]) or [last[key]] for key in sorted(found)}


@BOTH_BACKENDS
def test_the_kept_model_versions_follow_every_change_of_the_predictions(
    snapshotted: Warehouse, source: Source, landing: Path, registry: Registry
) -> None:
    """`prediction_stats.model_versions` is kept by the publish (the partition's own and the carried
    records' partitions) and by a snapshot that moves records' predictions to history; at every step it
    says what reading every prediction says."""

    def agrees() -> dict[str, list[str]]:
        kept = snapshotted.model_versions()
        assert kept == scanned_versions(snapshotted)
        return kept

    v1 = flaky(registry, share=0.2)
    run(snapshotted, v1, DAYS[0], OnFailure.RETRY_ALL)
    run(snapshotted, v1, DAYS[1], OnFailure.RETRY_ALL)
    assert agrees() == {DAYS[0]: ["v1"], DAYS[1]: ["v1"]}
    train_demo_model(registry, "champion", seed=1)
    v2 = registry.load("champion")
    assert v2.metadata.version == "v2"
    run(snapshotted, v2, DAYS[0], OnFailure.RETRY_FAILED)  # v2 predicts the records v1 failed
    assert agrees()[DAYS[0]] == ["v1", "v2"]
    run(snapshotted, v2, DAYS[2], OnFailure.CARRY_OVER)  # and settles DAYS[1]'s failed records
    assert agrees() == {DAYS[0]: ["v1", "v2"], DAYS[1]: ["v1", "v2"], DAYS[2]: ["v2"]}
    # A file of DAYS[0] goes: its records' predictions move to history when the day is snapshotted again.
    day = datetime.fromisoformat(DAYS[0]).replace(tzinfo=UTC)
    gone = sorted((landing / DAYS[0]).glob("*.parquet"))[0]
    gone.unlink()
    # A wrong value first, so that agreeing afterwards shows the snapshot set it again.
    change_stored_rows(
        snapshotted, "UPDATE prediction_stats SET model_versions = 'v9' WHERE partition_key = $k", k=DAYS[0]
    )
    snapshotted.snapshot_inputs(source, DAYS[0], day, day + timedelta(days=1), "again")
    assert agrees()[DAYS[0]] != ["v9"]
    change_stored_rows(
        snapshotted, "UPDATE prediction_stats SET model_versions = NULL WHERE partition_key = $k", k=DAYS[1]
    )
    assert agrees()[DAYS[1]] == ["v1", "v2"]  # a row a process of an earlier release wrote: read from predictions
    # A rerun of the whole partition leaves its own version alone, also where every record fails; what the
    # other version made goes to history (the partition is not one version's, so its rows are looked at).
    made_by_v1 = "SELECT record_id FROM {} WHERE partition_key = $k AND model_version = 'v1' ORDER BY record_id"
    v1_rows = stored_rows(snapshotted, made_by_v1.format("predictions"), k=DAYS[1])
    assert v1_rows
    run(snapshotted, v2, DAYS[1], OnFailure.RETRY_ALL)
    assert agrees()[DAYS[1]] == ["v2"]
    assert stored_rows(snapshotted, made_by_v1.format("predictions_history"), k=DAYS[1]) == v1_rows
    run(snapshotted, flaky(registry, share=1.0), DAYS[0], OnFailure.RETRY_ALL)
    assert stored_rows(snapshotted, "SELECT count(*) FROM predictions WHERE partition_key = $k", k=DAYS[0]) == [(0,)]
    assert stored_rows(
        snapshotted, "SELECT model_versions FROM prediction_stats WHERE partition_key = $k", k=DAYS[0]
    ) == [("",)]
    assert agrees()[DAYS[0]] == ["v2"]  # no predictions: the last run's version stands for it


@BOTH_BACKENDS
def test_a_warehouse_of_an_earlier_release_gets_its_model_versions_filled_in(
    snapshotted: Warehouse, registry: Registry, settings: Settings
) -> None:
    run(snapshotted, flaky(registry, share=0.2), DAYS[0], OnFailure.RETRY_ALL)
    train_demo_model(registry, "champion", seed=1)
    run(snapshotted, registry.load("champion"), DAYS[0], OnFailure.RETRY_FAILED)
    change_stored_rows(snapshotted, "ALTER TABLE prediction_stats DROP COLUMN model_versions")
    older = Warehouse(settings.warehouse, snapshotted.contract, staging_root=settings.staging)
    assert older.model_versions() == {DAYS[0]: ["v1", "v2"]}  # read from the predictions meanwhile
    with older.session():  # the first session that writes adds the column and fills it in
        pass
    assert stored_rows(older, "SELECT model_versions FROM prediction_stats") == [("v1,v2",)]
    assert older.model_versions() == scanned_versions(older) == {DAYS[0]: ["v1", "v2"]}


class _SnapshotMidway:
    """An estimator that, before its first prediction, lets `midway` run (another run's snapshot)."""

    def __init__(self, estimator: Any, midway: Any) -> None:
        self._estimator, self._midway = estimator, midway

    def __getattr__(self, name: str) -> Any:
        return getattr(self._estimator, name)

    def predict_proba(self, features: Any) -> Any:
        midway, self._midway = self._midway, None
        if midway is not None:
            midway()
        return self._estimator.predict_proba(features)


@BOTH_BACKENDS
def test_a_record_taken_by_another_partition_while_predicting_is_not_predicted_twice(
    warehouse: Warehouse, registry: Registry, tmp_path: Path, settings: Settings
) -> None:
    """Day 2 keeps an id whose earlier copy sits in day 1's window (day 1 is not snapshotted yet) and reads its
    work; day 1's snapshot takes the id meanwhile; day 2's publish must not store a prediction for it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = Source(tmp_path / "src")
    source.root.mkdir()
    day1, day2 = (datetime(2026, 3, d, tzinfo=UTC) for d in (1, 2))
    ids = ["x", *(f"b{i}" for i in range(20))]
    columns = {"record_id": ids, "event_time": [day2 + timedelta(hours=1)] * len(ids)}
    pq.write_table(pa.table(columns | {f: [1.0] * len(ids) for f in IRIS_FEATURES}), source.root / "b.parquet")
    columns = {"record_id": ["x", "a"], "event_time": [day1 + timedelta(hours=1)] * 2}
    pq.write_table(pa.table(columns | {f: [2.0] * 2 for f in IRIS_FEATURES}), source.root / "a.parquet")
    placeable = (day1, day2 + timedelta(days=1))
    warehouse.snapshot_inputs(source, DAYS[1], day2, day2 + timedelta(days=1), "inputs-2", placeable=placeable)
    assert ("x",) in stored_rows(warehouse, "SELECT record_id FROM inputs WHERE partition_key = $k", k=DAYS[1])

    other = Warehouse(settings.warehouse, warehouse.contract, staging_root=warehouse.staging_root)
    clean = registry.load("champion")
    model = LoadedModel(
        clean.metadata,
        _SnapshotMidway(
            clean.estimator,
            lambda: other.snapshot_inputs(source, DAYS[0], day1, day2, "inputs-1", placeable=placeable),
        ),
        clean.path,
    )
    outcome = run(warehouse, model, DAYS[1], OnFailure.RETRY_ALL)
    assert outcome.scored.model_calls == 1  # the snapshot in the middle did not fail the prediction
    assert outcome.published.completeness.passed
    assert ledger(warehouse, DAYS[1]) == {"inputs": 20, "predicted": 20, "failed": 0}
    run(warehouse, registry.load("champion"), DAYS[0], OnFailure.RETRY_ALL)
    assert stored_rows(warehouse, "SELECT partition_key FROM predictions WHERE record_id = 'x'") == [(DAYS[0],)]
