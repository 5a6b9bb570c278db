"""The table of contents: every asset, check, job, schedule and resource of batch_predict."""

import dagster as dg

from batch_predict.assets import build_assets
from batch_predict.checks import build_checks
from batch_predict.contract import FeatureContract
from batch_predict.partitions import build_partitions
from batch_predict.resources import build_resources
from batch_predict.schedules import build_jobs_and_schedules
from batch_predict.settings import Settings, load_settings
from batch_predict.training_assets import build_training_assets


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions_def = build_partitions(settings)
    assets = build_assets(
        partitions_def,
        FeatureContract.from_settings(settings),
        settings.step_retries,
        settings.max_partitions_per_run,
        settings.model_max_age_days,
        settings.model_hard_max_age_days,
    )
    assets += build_training_assets(assets[0], partitions_def)
    checks = build_checks(partitions_def)
    jobs, schedules, sensors = build_jobs_and_schedules(assets, checks, settings, partitions_def)
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=build_resources(settings),
        # A run is one partition's few steps; starting a process per step would cost more than
        # the steps. Parallelism comes from several runs at once (dagster_home/dagster.yaml).
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_settings())
