"""The table of contents: every asset, check, job, schedule, sensor and resource of batch_predict, by name.

The builders take what only the settings know (the partitions, the feature contract, retries,
model-age limits) and return named objects; this file lists each one.
"""

import dagster as dg

from batch_predict.assets import build_assets
from batch_predict.checks import build_checks
from batch_predict.contract import FeatureContract
from batch_predict.partitions import build_partitions
from batch_predict.resources import build_resources
from batch_predict.schedules import build_automation
from batch_predict.settings import Settings, load_settings
from batch_predict.training_assets import build_training_assets


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions_def = build_partitions(settings)
    # inputs -> predictions <- model: the batch pattern's three assets.
    pipeline = build_assets(
        partitions_def,
        FeatureContract.from_settings(settings),
        settings.step_retries,
        settings.max_partitions_per_run,
        settings.model_max_age_days,
        settings.model_hard_max_age_days,
    )
    # labels -> training_set -> trained_model (-> the registry alias -> model).
    training = build_training_assets(pipeline.inputs, partitions_def)
    checks = build_checks(partitions_def)
    automation = build_automation(pipeline, training, checks, settings, partitions_def)
    return dg.Definitions(
        assets=[
            pipeline.inputs,
            pipeline.model,
            pipeline.predictions,
            training.labels,
            training.training_set,
            training.trained_model,
        ],
        asset_checks=[
            checks.model_not_outdated,
            checks.predictions_monitoring,  # newest_due_partition_on_time, predictions_made_by_champion
        ],
        jobs=[
            automation.predictions_job,
            automation.repredict_job,
            automation.model_job,
            automation.monitoring_job,
            automation.training_job,
        ],
        schedules=[
            automation.predictions_schedule,
            automation.monitoring_schedule,
            automation.training_schedule,
        ],
        sensors=[
            automation.champion_sensor,
            automation.stale_predictions_sensor,
            automation.dead_run_sensor,
        ],
        # The checks built into the asset definitions (every_input_predicted, no_prediction_errors,
        # no_feature_drift, no_prediction_drift on predictions; every_record_placed on inputs) come
        # with their assets.
        resources=build_resources(settings),  # source, warehouse, model_registry, batch, training
        # A run is one partition's few steps; starting a process per step would cost more than
        # the steps. Parallelism comes from several runs at once (dagster_home/dagster.yaml).
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_settings())
