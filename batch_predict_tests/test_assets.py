from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from batch_predict.models.registry import Registry
from batch_predict.settings import Settings

from .conftest import ROWS_PER_DAY, recorded_models, run_assets, run_model_job

run = run_assets


def query(settings: Settings, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def materialize_partition(settings: Settings, key: str) -> dg.ExecuteInProcessResult:
    result = run(settings, ["inputs", "predictions"], key)
    assert result.success
    return result


def test_model_asset_records_version_checksum_and_data_version(settings: Settings, registry: Registry) -> None:
    result = run_model_job(settings)
    assert result.success
    [materialization] = recorded_models(result)
    meta = registry.metadata("v1")
    assert materialization.metadata["model_version"].value == "v1"
    assert materialization.metadata["checksum"].value == meta.checksum
    assert materialization.metadata["trained_at"].value == meta.trained_at
    assert materialization.tags is not None
    assert materialization.tags["dagster/data_version"] == meta.checksum


def test_one_partition_end_to_end(settings: Settings, landing: Path, registry: Registry) -> None:
    result = materialize_partition(settings, "2026-03-02")
    [(source_rows, valid, rejected)] = query(
        settings, "SELECT source_rows, valid_rows, rejected_rows FROM input_stats WHERE partition_key = ?", "2026-03-02"
    )
    assert source_rows == ROWS_PER_DAY == valid + rejected
    [(predictions, distinct, versions)] = query(
        settings,
        "SELECT count(*), count(DISTINCT record_id), list(DISTINCT model_version) FROM predictions "
        "WHERE partition_key = ?",
        "2026-03-02",
    )
    assert predictions == distinct == valid
    assert versions == ["v1"]
    assert query(
        settings,
        "SELECT count(*) FROM inputs i ANTI JOIN predictions p USING (partition_key, record_id) "
        "WHERE i.partition_key = ?",
        "2026-03-02",
    ) == [(0,)]
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert checks["every_input_predicted"].passed
    [inputs_mat] = result.asset_materializations_for_node("inputs")
    assert inputs_mat.metadata["source_rows"].value == ROWS_PER_DAY
    assert inputs_mat.metadata["dagster/row_count"].value == valid
    [pred_mat] = result.asset_materializations_for_node("predictions")
    assert pred_mat.metadata["model_version"].value == "v1"
    assert pred_mat.metadata["dagster/row_count"].value == valid
    lineage = pred_mat.metadata["dagster/column_lineage"].value
    assert {dep.column_name for dep in lineage.deps_by_column["prediction"]} == set(settings.features)


def test_rerun_replaces_run_ids_and_changes_no_count(settings: Settings, landing: Path, registry: Registry) -> None:
    count_sql = (
        "SELECT (SELECT count(*) FROM inputs), (SELECT count(*) FROM rejected_inputs), "
        "(SELECT count(*) FROM predictions), (SELECT count(*) FROM prediction_stats)"
    )
    materialize_partition(settings, "2026-03-01")
    first = materialize_partition(settings, "2026-03-02")
    before = query(settings, count_sql)
    second = materialize_partition(settings, "2026-03-02")
    assert query(settings, count_sql) == before
    runs = query(settings, "SELECT DISTINCT run_id FROM predictions WHERE partition_key = '2026-03-02'")
    assert runs == [(second.run_id,)]
    assert first.run_id != second.run_id
    other = query(settings, "SELECT DISTINCT run_id FROM predictions WHERE partition_key = '2026-03-01'")
    assert len(other) == 1 and other != runs


def test_an_empty_partition_succeeds_with_zero_rows(settings: Settings, landing: Path, registry: Registry) -> None:
    result = materialize_partition(settings, "2026-03-20")
    [inputs_mat] = result.asset_materializations_for_node("inputs")
    assert inputs_mat.metadata["empty_partition"].value is True
    assert query(settings, "SELECT succeeded, every_input_predicted FROM prediction_stats") == [(0, True)]


def test_a_missing_model_fails_predictions_and_keeps_inputs(settings: Settings, landing: Path) -> None:
    result = run(settings, ["inputs", "predictions"], "2026-03-01", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "No model registry" in str(failure.event_specific_data)
    assert query(settings, "SELECT count(*) FROM predictions") == [(0,)]
    assert query(settings, "SELECT count(*) FROM input_stats") == [(1,)]


def test_a_corrupt_model_leaves_earlier_predictions_untouched(
    settings: Settings, landing: Path, registry: Registry
) -> None:
    materialize_partition(settings, "2026-03-01")
    before = query(settings, "SELECT count(*), min(run_id) FROM predictions")
    (registry.root / "v1" / "model.joblib").write_bytes(b"garbage")
    result = run(settings, ["predictions"], "2026-03-01", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "corrupt or was changed" in str(failure.event_specific_data)
    assert query(settings, "SELECT count(*), min(run_id) FROM predictions") == before


@pytest.mark.parametrize("chunk_size", ["7", "100000"])
def test_chunk_size_does_not_change_the_result(
    make_settings: Any, landing: Path, registry: Registry, chunk_size: str
) -> None:
    settings = make_settings(chunk_size=chunk_size)
    materialize_partition(settings, "2026-03-01")
    rows = query(settings, "SELECT count(*), count(DISTINCT record_id) FROM predictions")
    assert rows[0][0] == rows[0][1] > 0


def test_partitions_follow_the_configured_timezone(make_settings: Any, landing: Path, registry: Registry) -> None:
    settings = make_settings(timezone="Asia/Tokyo")
    materialize_partition(settings, "2026-03-02")
    [(first, last, window_start)] = query(
        settings,
        "SELECT min(event_time), max(event_time), any_value(window_start) FROM inputs JOIN input_stats USING (partition_key)",
    )
    # Tokyo's 2 March is [1 March 15:00, 2 March 15:00) in UTC.
    assert window_start.isoformat() == "2026-03-01T15:00:00+00:00"
    assert first.isoformat() >= "2026-03-01T15:00:00+00:00"
    assert last.isoformat() < "2026-03-02T15:00:00+00:00"
