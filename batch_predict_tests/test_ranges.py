"""Single-run ranges: several partitions in one run, each with its own rows, stats and outcome."""

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_predict import partition_run as partition_run_module
from batch_predict.contract import FeatureContract
from batch_predict.definitions import build_definitions
from batch_predict.models.registry import Registry
from batch_predict.settings import Settings
from batch_predict.warehouse import Warehouse

from .conftest import BOTH_BACKENDS, run_assets

KEYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
RANGE = {"dagster/asset_partition_range_start": KEYS[0], "dagster/asset_partition_range_end": KEYS[-1]}


@pytest.fixture
def ranged(make_settings: Any) -> Settings:
    return make_settings(max_partitions_per_run="10")


def run_range(settings: Settings, assets: list[str]) -> dg.ExecuteInProcessResult:
    return run_assets(settings, assets, tags=RANGE, raise_on_error=False)


def materialized(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dg.AssetMaterialization]:
    events = [e.event_specific_data.materialization for e in result.all_events if e.is_step_materialization]  # type: ignore[union-attr]
    return {m.partition: m for m in events if m.asset_key == dg.AssetKey(asset)}


def stats(settings: Settings) -> dict[str, tuple[Any, ...]]:
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        rows = con.execute(
            """
            SELECT i.partition_key, i.source_rows, i.valid_rows, p.succeeded, p.run_id,
                   (SELECT count(*) FROM predictions x WHERE x.partition_key = i.partition_key)
            FROM input_stats i LEFT JOIN prediction_stats p USING (partition_key) ORDER BY 1
            """
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_the_backfill_policy_follows_the_setting(ranged: Settings) -> None:
    graph = build_definitions(ranged).resolve_asset_graph()
    for name in ("inputs", "predictions"):
        policy = graph.get(dg.AssetKey(name)).backfill_policy
        assert policy is not None and policy.max_partitions_per_run == 10


def test_a_range_run_writes_each_partition(ranged: Settings, landing: Path, registry: Registry) -> None:
    result = run_range(ranged, ["inputs", "predictions"])
    assert result.success
    written = stats(ranged)
    assert list(written) == KEYS
    for source_rows, valid, succeeded, run_id, stored in written.values():
        assert source_rows == 400 and succeeded == valid == stored
        assert run_id == result.run_id
    per_partition = materialized(result, "predictions")
    assert sorted(per_partition) == KEYS
    for key, materialization in per_partition.items():
        assert materialization.metadata["dagster/row_count"].value == written[key][2]
        assert materialization.metadata["model_version"].value == "v1"
    # The run's own metadata (totals, the model's column schema and lineage) is on the newest partition only.
    newest = per_partition[KEYS[-1]].metadata
    assert newest["total_row_count"].value == sum(written[key][2] for key in KEYS)
    assert newest["partitions"].value == 3
    assert {"dagster/column_schema", "dagster/column_lineage", "model_checksum"} <= set(newest)
    for key in KEYS[:-1]:
        assert not {"dagster/column_lineage", "total_row_count"} & set(per_partition[key].metadata)
    assert sorted(materialized(result, "inputs")) == KEYS


def test_a_failing_partition_keeps_the_others_and_names_itself(
    ranged: Settings, landing: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = partition_run_module.predict_partition

    def failing_on_the_second_day(warehouse: Any, model: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        if key == KEYS[1]:
            raise ValueError("the model server fell over")
        return real(warehouse, model, key, *args, **kwargs)

    monkeypatch.setattr(partition_run_module, "predict_partition", failing_on_the_second_day)
    result = run_range(ranged, ["inputs", "predictions"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data)
    assert "1 of 3 partitions failed (2026-03-02)" in message
    assert "the model server fell over" in message
    assert sorted(materialized(result, "predictions")) == [KEYS[0], KEYS[2]]
    written = stats(ranged)
    assert written[KEYS[0]][2] == written[KEYS[0]][1] and written[KEYS[2]][2] == written[KEYS[2]][1]
    assert written[KEYS[1]][2] is None  # inputs snapshotted, no predictions
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_a_bad_input_partition_in_a_range_keeps_the_others(ranged: Settings, landing: Path, registry: Registry) -> None:
    for path in (ranged.landing / KEYS[1]).iterdir():
        table = pq.read_table(path)
        pq.write_table(table.set_column(2, "sepal_length", pa.array([-1.0] * table.num_rows)), path)
    result = run_range(ranged, ["inputs"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "1 of 3 partitions failed (2026-03-02)" in str(failure.event_specific_data)
    assert sorted(materialized(result, "inputs")) == [KEYS[0], KEYS[2]]
    assert list(stats(ranged)) == [KEYS[0], KEYS[2]]


def drift_rows(settings: Settings) -> list[tuple[Any, ...]]:
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings))
    with warehouse.session(read_only=True) as session:
        rows = session.fetchall(
            "SELECT partition_key, model_version, kind, name, psi, threshold, n, n_reference, drifted "
            "FROM prediction_drift"
        )
    return sorted(rows, key=repr)


@BOTH_BACKENDS
def test_a_range_measures_drift_as_its_partitions_one_by_one(
    backend: str, make_settings: Any, landing: Path, registry: Registry, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A range's partitions are measured together after all are published: the same drift, each against
    the newest earlier partition of the same model version, inside the range or before it."""
    if backend == "postgres":
        server = request.getfixturevalue("postgres_server")
        second = server.create_database(f"single_{tmp_path.name[-20:].replace('-', '_')}")
        request.addfinalizer(lambda: server.drop_database(second.rsplit("/", 1)[1]))
        ranged = make_settings(max_partitions_per_run="10")
        single = make_settings(warehouse=second, staging=str(tmp_path / "single_staging"))
    else:
        ranged = make_settings(max_partitions_per_run="10", warehouse=str(tmp_path / "ranged.duckdb"))
        single = make_settings(warehouse=str(tmp_path / "single.duckdb"), staging=str(tmp_path / "single_staging"))
    assert run_assets(ranged, ["inputs", "predictions"], KEYS[0]).success
    tags = {"dagster/asset_partition_range_start": KEYS[1], "dagster/asset_partition_range_end": KEYS[2]}
    result = run_assets(ranged, ["inputs", "predictions"], tags=tags)
    singles = {key: run_assets(single, ["inputs", "predictions"], key) for key in KEYS}
    assert drift_rows(ranged) == drift_rows(single)
    names = {row[0]: set() for row in drift_rows(ranged)}
    for row in drift_rows(ranged):
        names[row[0]].add(row[3])
    assert f"predicted class vs {KEYS[1]}" in names[KEYS[2]]  # compared with the partition before it in the range
    assert f"predicted class vs {KEYS[0]}" in names[KEYS[1]]  # and with the one before the range
    for key, materialization in materialized(result, "predictions").items():
        [alone] = singles[key].asset_materializations_for_node("predictions")
        for name in ("features_drifted", "predictions_drifted", "max_feature_psi", "drift_report"):
            assert materialization.metadata[name] == alone.metadata[name], (key, name)


def test_monitoring_that_fails_in_a_range_keeps_the_predictions_and_says_so(
    ranged: Settings, landing: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batch_predict.warehouse import WarehouseError

    def unreadable(self: Any, key: str) -> None:
        raise WarehouseError("the labels table is unreadable")

    monkeypatch.setattr(Warehouse, "refresh_quality", unreadable)
    result = run_range(ranged, ["inputs", "predictions"])
    assert result.success
    per_partition = materialized(result, "predictions")
    assert sorted(per_partition) == KEYS
    for materialization in per_partition.values():
        report = materialization.metadata["drift_report"].value
        assert report == "Not measured: WarehouseError: the labels table is unreadable"
    written = stats(ranged)
    assert all(row[2] == row[1] == row[4] for row in written.values())  # every valid input predicted


def test_monitoring_that_fails_for_one_partition_leaves_the_others_measured(
    ranged: Settings, landing: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batch_predict.warehouse import WarehouseError

    refresh = Warehouse.refresh_quality

    def unreadable_on_the_second_day(self: Any, key: str) -> Any:
        if key == KEYS[1]:
            raise WarehouseError("the labels of the second day are unreadable")
        return refresh(self, key)

    monkeypatch.setattr(Warehouse, "refresh_quality", unreadable_on_the_second_day)
    result = run_range(ranged, ["inputs", "predictions"])
    assert result.success
    reports = {key: m.metadata["drift_report"].value for key, m in materialized(result, "predictions").items()}
    assert reports[KEYS[1]] == "Not measured: WarehouseError: the labels of the second day are unreadable"
    assert all(
        str(reports[key]).startswith("#") or "Drift of partition" in str(reports[key]) for key in (KEYS[0], KEYS[2])
    )


def test_a_range_measured_in_several_scans_measures_as_one(
    ranged: Settings,
    landing: Path,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Any,
    tmp_path: Path,
) -> None:
    """A range's partitions are counted in scans of up to ROWS_PER_SCAN rows; the drift is the same."""
    from batch_predict import monitoring

    scans: list[list[str]] = []
    together = monitoring._measure_together
    monkeypatch.setattr(monitoring, "ROWS_PER_SCAN", 500)  # one partition (under 400 valid rows) per scan
    monkeypatch.setattr(
        monitoring, "_measure_together", lambda w, m, r, keys, *a: (scans.append(keys), together(w, m, r, keys, *a))[1]
    )
    assert run_range(ranged, ["inputs", "predictions"]).success
    assert scans == [[key] for key in KEYS]
    single = make_settings(warehouse=str(tmp_path / "single.duckdb"), staging=str(tmp_path / "single_staging"))
    for key in KEYS:
        assert run_assets(single, ["inputs", "predictions"], key).success
    assert drift_rows(ranged) == drift_rows(single)


def test_an_unexpected_error_measuring_a_range_names_every_partition_and_is_not_retried(
    ranged: Settings, landing: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = partition_run_module.predict_partition

    def failing_on_two_days(warehouse: Any, model: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        if key in KEYS[:2]:
            raise ValueError("the model server fell over")
        return real(warehouse, model, key, *args, **kwargs)

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the drift code")

    monkeypatch.setattr(partition_run_module, "predict_partition", failing_on_two_days)
    monkeypatch.setattr(partition_run_module, "range_drift", broken)
    result = run_range(ranged, ["inputs", "predictions"])
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith(f"All 3 partitions failed ({', '.join(KEYS)}).")
    assert message.count("the model server fell over") == 2 and "a bug in the drift code" in message
