"""The jobs and their schedules."""

from __future__ import annotations

from typing import Any

import dagster as dg

from batch_predict.settings import Settings


def build_jobs_and_schedules(
    assets: list[dg.AssetsDefinition], checks: list[dg.AssetChecksDefinition], settings: Settings
) -> tuple[list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition | Any]]:
    by_name = {a.key.to_user_string(): a for a in assets}
    predictions_job = dg.define_asset_job(
        "predictions_job",
        selection=dg.AssetSelection.assets(by_name["inputs"], by_name["predictions"]),
        description="Snapshot one partition's source records and predict them.",
    )
    monitoring_job = dg.define_asset_job(
        "monitoring_job",
        selection=dg.AssetSelection.checks(*checks),
        description="Evaluate the clock-driven checks: model age and the prediction deadline.",
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
    return [predictions_job, monitoring_job], [predictions_schedule, monitoring_schedule]
