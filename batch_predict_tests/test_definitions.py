import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from batch_predict.checks import newest_due_partition
from batch_predict.contract import FeatureContract
from batch_predict.definitions import build_definitions
from batch_predict.demo import write_landing
from batch_predict.models.registry import METADATA, Registry
from batch_predict.partitions import build_partitions
from batch_predict.settings import Settings
from batch_predict.warehouse import Warehouse

from .conftest import FIRST_DAY, run_assets, run_model_job, stored_rows

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_PREDICT_")}
    return env | extra


def test_definitions_load_with_nothing_set(tmp_path: Path) -> None:
    code = "from batch_predict.definitions import defs; print(len(defs.resolve_all_asset_keys()))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"  # inputs, model, predictions; labels, training_set, trained_model


def test_a_bad_setting_fails_at_load_naming_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import batch_predict.definitions"],
        cwd=tmp_path,
        env=clean_env(BATCH_PREDICT_CADENCE="fortnightly"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "BATCH_PREDICT_CADENCE='fortnightly' is not valid: use one of hourly|daily|weekly|monthly" in done.stderr


def test_workspace_is_the_only_code_location_pointer() -> None:
    assert "batch_predict.definitions" in (ROOT / "workspace.yaml").read_text()
    assert "[tool.dagster]" not in (ROOT / "pyproject.toml").read_text()


def test_every_asset_is_described_owned_and_typed(settings: Settings) -> None:
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {"inputs", "model", "predictions", "labels", "training_set", "trained_model"}
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert spec.description and len(spec.description) > 40, key
        assert spec.owners, key
        assert spec.kinds, key
    for name in ("inputs", "predictions"):
        assert "dagster/column_schema" in graph.get(dg.AssetKey(name)).metadata
    predictions = graph.get(dg.AssetKey("predictions"))
    assert {k.to_user_string() for k in predictions.parent_keys} == {"inputs", "model"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("model")).parent_keys} == {"trained_model"}
    # The registry holds the model: no run can select it (so none can skip predictions waiting on it);
    # model_job records it when the champion changes (test_model_age_warns_past_the_limit runs its check).
    assert {key.to_user_string() for key in graph.get_all_asset_keys() if not graph.get(key).is_executable} == {"model"}
    assert [node.name for node in defs.resolve_job_def("model_job").nodes] == ["record_model"]
    training = {key.to_user_string() for key in defs.resolve_job_def("training_job").asset_layer.selected_asset_keys}
    assert training == {"labels", "training_set", "trained_model"}
    training = defs.resolve_schedule_def("training_job_schedule")
    assert training.default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_sensor_def("champion_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def("stale_predictions_sensor").default_status == dg.DefaultSensorStatus.STOPPED


def test_one_partitions_definition_for_assets_job_and_schedule(settings: Settings) -> None:
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    inputs_parts = graph.get(dg.AssetKey("inputs")).partitions_def
    assert inputs_parts == graph.get(dg.AssetKey("predictions")).partitions_def
    assert defs.resolve_job_def("predictions_job").partitions_def == inputs_parts


def tick(settings: Settings, at: datetime) -> list[Any]:
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("predictions_job_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.build_schedule_context(scheduled_execution_time=at) as context:
        data = schedule.evaluate_tick(context)
    assert data.run_requests is not None
    return data.run_requests


def test_daily_schedule_requests_the_day_that_just_closed(settings: Settings) -> None:
    defs = build_definitions(settings)
    assert defs.resolve_schedule_def("predictions_job_schedule").cron_schedule == "15 0 * * *"
    [request] = tick(settings, datetime(2026, 3, 5, 0, 15, tzinfo=UTC))
    assert request.partition_key == "2026-03-04"


def test_hourly_schedule_requests_the_hour_that_just_closed(make_settings: Any) -> None:
    settings = make_settings(cadence="hourly", schedule_delay_minutes="5")
    [request] = tick(settings, datetime(2026, 3, 5, 10, 5, tzinfo=UTC))
    assert request.partition_key == "2026-03-05-09:00"


def test_schedule_follows_the_partition_timezone(make_settings: Any) -> None:
    settings = make_settings(timezone="America/New_York", schedule_delay_minutes="0")
    [request] = tick(settings, datetime(2026, 3, 5, 5, 0, tzinfo=UTC))  # midnight in New York
    assert request.partition_key == "2026-03-04"


def test_newest_due_partition_waits_for_the_deadline(settings: Settings) -> None:
    partitions = build_partitions(settings)
    six = timedelta(hours=6)
    assert newest_due_partition(partitions, six, datetime(2026, 3, 5, 5, 59, tzinfo=UTC)) == (
        "2026-03-03",
        datetime(2026, 3, 4, 6, tzinfo=UTC),
    )
    assert newest_due_partition(partitions, six, datetime(2026, 3, 5, 6, 0, tzinfo=UTC)) == (
        "2026-03-04",
        datetime(2026, 3, 5, 6, tzinfo=UTC),
    )
    assert newest_due_partition(partitions, six, datetime(2026, 3, 1, 12, tzinfo=UTC)) is None


def check_results(settings: Settings) -> dict[str, dg.AssetCheckEvaluation]:
    defs = build_definitions(settings)
    result = defs.resolve_job_def("monitoring_job").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_backfilling_an_old_partition_does_not_meet_the_deadline(
    settings: Settings, landing: Path, registry: Registry
) -> None:
    defs = build_definitions(settings)
    job = defs.resolve_job_def("predictions_job")
    assert job.execute_in_process(partition_key="2026-03-01", instance=dg.DagsterInstance.ephemeral()).success
    missed = check_results(settings)["newest_due_partition_on_time"]
    assert not missed.passed
    assert missed.severity == dg.AssetCheckSeverity.ERROR
    due = newest_due_partition(build_partitions(settings), timedelta(hours=6), datetime.now(UTC))
    assert due is not None
    assert job.execute_in_process(partition_key=due[0], instance=dg.DagsterInstance.ephemeral()).success
    met = check_results(settings)["newest_due_partition_on_time"]
    assert met.metadata["partition_key"].value == due[0]
    # Done after its deadline (it is a backfill), so it passes only if it was on time.
    assert met.passed == (datetime.now(UTC) <= due[1])


def test_the_clock_driven_checks_run_with_every_job_that_predicts_and_hourly(settings: Settings) -> None:
    """predictions_monitoring (the deadline and champion checks, one step) follows each predictions run."""
    defs = build_definitions(settings)
    for name in ("predictions_job", "repredict_job", "monitoring_job"):
        steps = {node.name for node in defs.resolve_job_def(name).graph.node_defs}
        assert "predictions_monitoring" in steps, (name, steps)


def test_one_monitoring_check_that_cannot_be_evaluated_keeps_the_others_result(
    settings: Settings, landing: Path, registry: Registry
) -> None:
    """The deadline and champion checks share one step; a champion check that raises (no model to
    compare with) fails that step naming it, and the deadline check's result is still recorded."""
    (registry.root / "aliases" / "champion.json").unlink()
    result = (
        build_definitions(settings)
        .resolve_job_def("monitoring_job")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )
    assert not result.success
    names = {e.check_name for e in result.get_asset_check_evaluations()}
    assert "newest_due_partition_on_time" in names
    assert "predictions_made_by_champion" not in names
    [failure] = [e for e in result.all_events if e.is_step_failure and e.step_key == "predictions_monitoring"]
    assert "predictions_made_by_champion could not be evaluated" in str(failure.event_specific_data)


def test_monitoring_checks_that_both_fail_are_both_named(settings: Settings, landing: Path, registry: Registry) -> None:
    warehouse = Path(settings.warehouse)
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    warehouse.write_bytes(b"not a database" * 100)
    result = (
        build_definitions(settings)
        .resolve_job_def("monitoring_job")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )
    assert not {e.check_name for e in result.get_asset_check_evaluations()} & {
        "newest_due_partition_on_time",
        "predictions_made_by_champion",
    }
    [failure] = [e for e in result.all_events if e.is_step_failure and e.step_key == "predictions_monitoring"]
    message = str(failure.event_specific_data)
    for name in ("newest_due_partition_on_time", "predictions_made_by_champion"):
        assert f"{name} could not be evaluated" in message
    assert str(settings.warehouse) in message


def test_a_monitoring_check_runs_alone_when_selected_alone(
    settings: Settings, landing: Path, registry: Registry
) -> None:
    """From the UI one check of the shared step can be run by itself: only its result is recorded."""
    only = dg.AssetCheckKey(dg.AssetKey("predictions"), "predictions_made_by_champion")
    defs = build_definitions(settings)
    job = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=[dg.define_asset_job("only_champion", selection=dg.AssetSelection.checks(only))],
        resources=defs.resources,
    ).resolve_job_def("only_champion")
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.asset_check_key == only
    assert evaluation.passed


def test_model_age_warns_past_the_limit(settings: Settings, registry: Registry) -> None:
    assert check_results(settings)["model_not_outdated"].passed
    path = registry.root / "v1" / METADATA
    meta = json.loads(path.read_text())
    meta["trained_at"] = (datetime.now(UTC) - timedelta(days=31)).isoformat()
    path.write_text(json.dumps(meta))
    outdated = check_results(settings)["model_not_outdated"]
    assert not outdated.passed
    assert outdated.severity == dg.AssetCheckSeverity.WARN
    assert outdated.metadata["age_days"].value > 30
    meta["trained_at"] = (datetime.now(UTC) - timedelta(days=91)).isoformat()
    path.write_text(json.dumps(meta))
    past_hard_limit = check_results(settings)["model_not_outdated"]
    assert not past_hard_limit.passed
    assert past_hard_limit.severity == dg.AssetCheckSeverity.ERROR
    assert "hard limit is 90 days" in (past_hard_limit.description or "")


@pytest.mark.parametrize("cadence", ["weekly", "monthly"])
def test_every_cadence_builds(make_settings: Any, cadence: str) -> None:
    settings = make_settings(cadence=cadence)
    keys = build_partitions(settings).get_partition_keys(current_time=datetime(2026, 6, 1, tzinfo=UTC))
    assert keys


@pytest.mark.parametrize(
    ("cadence", "start", "first_key"),
    [
        ("daily", "2026-03-01T06:00", "2026-03-01"),
        ("weekly", "2026-03-02", "2026-03-01"),  # a Monday: the week begins the Sunday before
        ("monthly", "2026-03-15", "2026-03-01"),
        ("hourly", "2026-03-01T06:30", "2026-03-01-06:00"),
        ("daily", "2026-03-01T06:00+05:00", "2026-03-01"),  # 01:00 UTC
    ],
)
def test_the_first_partition_is_the_one_holding_the_start(
    make_settings: Callable[..., Settings], cadence: str, start: str, first_key: str
) -> None:
    partitions = build_partitions(make_settings(cadence=cadence, start=start))
    assert partitions.get_first_partition_key() == first_key


def test_records_after_a_start_inside_a_day_are_predicted(
    make_settings: Callable[..., Settings], registry: Registry
) -> None:
    """A start of 06:00 does not push the day's partition to the next day: the day's records are all placed."""
    settings = make_settings(start=f"{FIRST_DAY.isoformat()}T06:00")
    write_landing(settings.landing, FIRST_DAY, 1, 200, seed=3, files_per_day=2)
    run_model_job(settings)
    result = run_assets(settings, ["inputs", "predictions"], FIRST_DAY.isoformat())
    assert result.success
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings))
    [(inputs, rejected, predicted)] = stored_rows(
        warehouse,
        "SELECT (SELECT count(*) FROM inputs), (SELECT count(*) FROM rejected_inputs), (SELECT count(*) FROM predictions)",
    )
    assert (inputs + rejected, predicted) == (200, inputs)
    assert warehouse.unplaced(10)[0] == {}
