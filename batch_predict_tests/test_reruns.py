"""Rerun modes, retries and per-partition outcome stats through real in-process Dagster runs."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from batch_predict.cli import status_rows
from batch_predict.contract import FeatureContract
from batch_predict.definitions import build_definitions
from batch_predict.demo import train_demo_model
from batch_predict.models.registry import Registry
from batch_predict.settings import Settings
from batch_predict.warehouse import Warehouse, WarehouseLockTimeout

from .conftest import BOTH_BACKENDS, stored_rows


def materialize(settings: Settings, key: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def("predictions_job")
    return job.execute_in_process(
        partition_key=key, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, **kwargs
    )


def events(result: dg.ExecuteInProcessResult, kind: str) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.event_type_value == kind]


@BOTH_BACKENDS
def test_carry_over_through_dagster_adds_up_in_status(make_settings: Any, landing: Path) -> None:
    settings = make_settings(on_failure="carry_over")
    registry = Registry(settings.models)
    train_demo_model(registry, fail_share=0.03)
    first = materialize(settings, "2026-03-01")
    assert first.success
    [mat] = first.asset_materializations_for_node("predictions")
    failed = mat.metadata["failed"].value
    assert isinstance(failed, int) and failed > 0
    assert mat.metadata["mode"].value == "carry_over"
    checks = {c.check_name: c for c in first.get_asset_check_evaluations()}
    assert checks["every_input_predicted"].passed
    assert not checks["no_prediction_errors"].passed
    assert checks["no_prediction_errors"].severity == dg.AssetCheckSeverity.WARN

    train_demo_model(registry)  # a fixed model becomes champion
    second = materialize(settings, "2026-03-02")
    assert second.success
    [mat2] = second.asset_materializations_for_node("predictions")
    assert mat2.metadata["carried_in"].value == failed

    rows = {row["partition_key"]: row for row in status_rows(settings, 10, datetime.now(UTC))}
    for row in rows.values():
        assert row["source_rows"] == row["rejected"] + row["predictions"] + row["failed"]
    assert rows["2026-03-01"]["failed"] == 0
    assert rows["2026-03-01"]["carried_out"] == failed
    assert rows["2026-03-02"]["carried_in"] == failed


@BOTH_BACKENDS
def test_full_refresh_overrides_retry_failed(make_settings: Any, landing: Path, registry: Registry) -> None:
    settings = make_settings(on_failure="retry_failed")
    assert materialize(settings, "2026-03-01").success
    partial = materialize(settings, "2026-03-01")
    [mat] = partial.asset_materializations_for_node("predictions")
    assert mat.metadata["work_own"].value == 0  # nothing failed, nothing to redo
    full = materialize(settings, "2026-03-01", run_config={"ops": {"predictions": {"config": {"full_refresh": True}}}})
    [mat] = full.asset_materializations_for_node("predictions")
    assert mat.metadata["mode"].value == "retry_all"
    assert mat.metadata["work_own"].value == mat.metadata["succeeded"].value > 0


@BOTH_BACKENDS
def test_bad_input_fails_without_retries(settings: Settings, landing: Path) -> None:
    result = materialize(settings, "2026-03-01")  # no model registry
    assert not result.success
    assert not events(result, "STEP_UP_FOR_RETRY")
    failure = events(result, "STEP_FAILURE")[0]
    assert "No model registry" in str(failure.event_specific_data)


@BOTH_BACKENDS
def test_a_lock_timeout_is_retried_and_duplicates_nothing(
    settings: Settings, landing: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Warehouse.publish_outcome
    calls = {"n": 0}

    def flaky_publish(self: Warehouse, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise WarehouseLockTimeout("The warehouse stayed locked (simulated)")
        return real(self, *args)

    monkeypatch.setattr(Warehouse, "publish_outcome", flaky_publish)
    result = materialize(settings, "2026-03-01")
    assert result.success
    assert len(events(result, "STEP_UP_FOR_RETRY")) == 1
    [(n, distinct, inputs)] = stored_rows(
        Warehouse(settings.warehouse, FeatureContract.from_settings(settings)),
        "SELECT count(*), count(DISTINCT record_id), (SELECT count(*) FROM inputs) FROM predictions",
    )
    assert n == distinct == inputs
