"""The jobs, their schedules, and the sensors that follow the model.

- `predictions_job` (+ schedule): snapshot and predict the newest complete partition.
- `monitoring_job` (+ hourly schedule): clock-driven checks (model age, deadline, stale partitions).
- `model_job` + `champion_sensor` (running by default): record the `model` asset when the
  alias moves, so Dagster marks prediction partitions made by the old model as unsynced.
- `repredict_job` + `stale_predictions_sensor` (stopped by default): re-predict exactly the
  partitions predicted by another version than the one that should make them.
- `training_job` + weekly schedule (stopped unless BATCH_PREDICT_RETRAIN_SCHEDULE=running):
  labels -> training set -> candidate, promoted only if it beats the champion.
- `dead_run_sensor` (running by default): fail the runs whose worker process died, and
  remove staging left by dead runs.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

import dagster as dg

from batch_predict.assets import PredictionAssets, record_model
from batch_predict.batch import remove_stale_staging
from batch_predict.checks import ModelChecks
from batch_predict.models.types import ModelError
from batch_predict.partitions import partition_end
from batch_predict.resources import ModelRegistryResource, SourceResource, WarehouseResource
from batch_predict.runs import sweep_dead_runs
from batch_predict.settings import Settings
from batch_predict.staleness import find_stale_partitions
from batch_predict.training_assets import TrainingAssets
from batch_predict.warehouse import WarehouseLockTimeout

FULL_REFRESH = {"ops": {"predictions": {"config": {"full_refresh": True}}}}
# A requested model run that has not materialized after this long (it failed) is requested again.
MODEL_RUN_PATIENCE_SECONDS = 600
SENSOR_LOCK_TIMEOUT_SECONDS = 20
REPREDICT_TAG = "batch_predict/repredict_with"


class Automation(NamedTuple):
    """Every job, schedule and sensor, by name."""

    predictions_job: dg.UnresolvedAssetJobDefinition
    monitoring_job: dg.UnresolvedAssetJobDefinition
    model_job: dg.JobDefinition
    repredict_job: dg.UnresolvedAssetJobDefinition
    training_job: dg.UnresolvedAssetJobDefinition
    predictions_schedule: Any  # built from the partitioned job; Definitions resolves it
    monitoring_schedule: dg.ScheduleDefinition
    training_schedule: dg.ScheduleDefinition
    champion_sensor: dg.SensorDefinition
    stale_predictions_sensor: dg.SensorDefinition
    dead_run_sensor: dg.SensorDefinition


def build_automation(
    pipeline: PredictionAssets,
    training: TrainingAssets,
    checks: ModelChecks,
    settings: Settings,
    partitions_def: dg.TimeWindowPartitionsDefinition,
) -> Automation:
    predictions_job = dg.define_asset_job(
        "predictions_job",
        selection=dg.AssetSelection.assets(pipeline.inputs, pipeline.predictions),
        description="Snapshot one partition's source records and predict them.",
    )
    monitoring_job = dg.define_asset_job(
        "monitoring_job",
        selection=dg.AssetSelection.checks(*checks),
        description="Evaluate the clock-driven checks: model age, the prediction deadline, stale partitions.",
    )

    @dg.job(
        name="model_job",
        description="Load and check the model the alias points at; records the model asset only if it changed.",
    )
    def model_job() -> None:
        record_model()

    repredict_job = dg.define_asset_job(
        "repredict_job",
        selection=dg.AssetSelection.assets(pipeline.predictions),
        config=FULL_REFRESH,
        description="Re-predict a partition from its stored inputs, every record, with the model that should make it.",
    )
    training_job = dg.define_asset_job(
        "training_job",
        selection=dg.AssetSelection.assets(*training),
        # model_job (champion_sensor, or `batch-predict model train` right after) records a promoted model.
        description="Load the labels, cut the training set, train a candidate and promote it if it beats the champion.",
    )
    training_schedule = dg.ScheduleDefinition(
        name="training_job_schedule",
        job=training_job,
        cron_schedule="0 3 * * 1",
        execution_timezone=settings.timezone,
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if settings.retrain_schedule == "running"
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description="Weekly (Monday 03:00): retrain from the labelled history. Off unless BATCH_PREDICT_RETRAIN_SCHEDULE=running.",
    )
    delay = settings.schedule_delay_minutes
    predictions_schedule = dg.build_schedule_from_partitioned_job(
        predictions_job,
        name="predictions_job_schedule",
        description=(
            f"At each {settings.cadence} tick, {delay} minutes after a partition closes (for late data), "
            "materialize that newest complete partition."
        ),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        minute_of_hour=delay % 60,
        hour_of_day=None if settings.cadence == "hourly" else delay // 60,
    )
    monitoring_schedule = dg.ScheduleDefinition(
        name="monitoring_job_schedule",
        job=monitoring_job,
        cron_schedule="30 * * * *",
        execution_timezone=settings.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly: is the model outdated, did the newest due partition meet its deadline?",
    )

    @dg.sensor(
        job=model_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records the model asset (model_job) when the alias points at another model.",
    )
    def champion_sensor(
        context: dg.SensorEvaluationContext, model_registry: ModelRegistryResource
    ) -> dg.SensorResult | dg.SkipReason:
        try:
            current = model_registry.models().current_version()
        except ModelError as error:
            return dg.SkipReason(f"No model to follow yet: {error}")
        event = context.instance.get_latest_materialization_event(dg.AssetKey("model"))
        recorded = (
            event.asset_materialization.metadata.get("model_version") if event and event.asset_materialization else None
        )
        if recorded is not None and recorded.value == current:
            return dg.SkipReason(f"The model asset already holds version {current}.")
        requested = json.loads(context.cursor) if context.cursor else {}
        if requested.get("version") == current and time.time() - requested.get("at", 0) < MODEL_RUN_PATIENCE_SECONDS:
            return dg.SkipReason(f"A run for version {current} was requested at {requested['at']:.0f}; waiting for it.")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(tags={"batch_predict/model_version": current})],
            cursor=json.dumps({"version": current, "at": time.time()}),
        )

    @dg.sensor(
        job=repredict_job,
        minimum_interval_seconds=120,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Re-predicts the partitions whose predictions another model version made than the one that "
            "should (BATCH_PREDICT_BACKFILL_MODEL), one run per partition. Turn it on to re-predict "
            "automatically after a promotion; `batch-predict repredict` does the same once."
        ),
    )
    def stale_predictions_sensor(
        context: dg.SensorEvaluationContext,
        source: SourceResource,
        warehouse: WarehouseResource,
        model_registry: ModelRegistryResource,
    ) -> dg.SensorResult | dg.SkipReason:
        # A sensor evaluation has a time limit: wait for other runs' warehouse locks only briefly.
        store = warehouse.open(source.contract())
        store.lock_timeout_seconds = min(store.lock_timeout_seconds, SENSOR_LOCK_TIMEOUT_SECONDS)
        store.backend.lock_timeout_seconds = store.lock_timeout_seconds  # what the backend waits, opening
        try:
            staleness = find_stale_partitions(store, model_registry.models(), partition_end(partitions_def))
            token = model_registry.models().state_token()
        except WarehouseLockTimeout:
            return dg.SkipReason("The warehouse is busy with runs; trying again at the next evaluation.")
        except ModelError as error:
            return dg.SkipReason(f"No model to compare with: {error}")
        # Each move of the alias starts a new generation of run keys, so a partition is requested
        # once per move (a failed re-prediction is not retried in a loop), and again after a rollback.
        state: dict[str, Any] = json.loads(context.cursor) if context.cursor else {"token": None, "generation": 0}
        if state["token"] != token:
            state = {"token": token, "generation": int(state["generation"]) + 1}
        if not staleness.stale:
            return dg.SensorResult(
                skip_reason=f"Every predicted partition was made by the model that should make it ({staleness.current}).",
                cursor=json.dumps(state),
            )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    partition_key=stale.partition_key,
                    run_key=f"{stale.partition_key}:{stale.wanted}:{state['generation']}",
                    tags={REPREDICT_TAG: stale.wanted, "batch_predict/made_by": ",".join(stale.made_by)},
                )
                for stale in staleness.stale
            ],
            cursor=json.dumps(state),
        )

    @dg.sensor(
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Every minute: marks failed the runs of this host whose worker process is gone (killed or crashed), "
            "so run retries relaunch them and they free their run slot; removes staging folders older than "
            "BATCH_PREDICT_STAGING_MAX_AGE_HOURS that no run holds."
        ),
    )
    def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        swept = sweep_dead_runs(context.instance)
        for run in swept:
            context.log.warning(f"Run {run.run_id} ({run.job_name}) was {run.status}, but PID {run.pid} is gone.")
        removed = remove_stale_staging(settings.staging, settings.staging_max_age_hours)
        return dg.SkipReason(
            f"{len(swept)} run(s) with a dead worker marked ended"
            + (f" ({', '.join(run.run_id for run in swept)})" if swept else "")
            + f"; {len(removed)} stale staging folder(s) removed"
            + (f" ({', '.join(removed)})." if removed else ".")
        )

    return Automation(
        predictions_job=predictions_job,
        monitoring_job=monitoring_job,
        model_job=model_job,
        repredict_job=repredict_job,
        training_job=training_job,
        predictions_schedule=predictions_schedule,
        monitoring_schedule=monitoring_schedule,
        training_schedule=training_schedule,
        champion_sensor=champion_sensor,
        stale_predictions_sensor=stale_predictions_sensor,
        dead_run_sensor=dead_run_sensor,
    )
