"""Checks that watch the batch as time passes: an outdated model and a missed deadline.

Both are unpartitioned checks evaluated against the clock, so they run on their own
schedule (`monitoring_job`) rather than only when an asset is materialized. The
deadline check looks up the one partition that is due now, by key, so backfilling an
older partition can never make a missed deadline look met (a `FreshnessPolicy` judges
the asset's newest materialization of any partition and would).
"""

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import dagster as dg

from batch_predict.deadline import LATE, ON_TIME, deadline_verdict
from batch_predict.partitions import partition_end
from batch_predict.resources import BatchResource, ModelRegistryResource, SourceResource, WarehouseResource
from batch_predict.staleness import find_stale_partitions

MODEL_NOT_OUTDATED = "model_not_outdated"
PREDICTIONS_MADE_BY_CHAMPION = "predictions_made_by_champion"
NEWEST_DUE_PARTITION_ON_TIME = "newest_due_partition_on_time"


class ModelChecks(NamedTuple):
    """The checks the clock drives (monitoring_job): model age, the newest partition's deadline, stale partitions."""

    model_not_outdated: dg.AssetChecksDefinition
    newest_due_partition_on_time: dg.AssetChecksDefinition
    predictions_made_by_champion: dg.AssetChecksDefinition


def newest_due_partition(
    partitions_def: dg.TimeWindowPartitionsDefinition, deadline: timedelta, now: datetime
) -> tuple[str, datetime] | None:
    """The newest partition whose predictions were due by `now`, and when they were due."""
    with dg.partition_loading_context(effective_dt=now - deadline):
        key = partitions_def.get_last_partition_key()
    if key is None:
        return None
    return key, partitions_def.time_window_for_partition_key(key).end + deadline


def build_checks(partitions_def: dg.TimeWindowPartitionsDefinition) -> ModelChecks:
    @dg.asset_check(
        asset="model",
        name=MODEL_NOT_OUTDATED,
        description=(
            "Warns when the model the alias points at was trained longer ago than BATCH_PREDICT_MODEL_MAX_AGE_DAYS; "
            "fails (error) past BATCH_PREDICT_MODEL_HARD_MAX_AGE_DAYS."
        ),
    )
    def model_not_outdated(model_registry: ModelRegistryResource, source: SourceResource) -> dg.AssetCheckResult:
        metadata = model_registry.models().metadata(model_registry.models().current_version(), source.contract())
        age = metadata.age_days(datetime.now(UTC))
        hard = age > model_registry.hard_max_age_days
        limit = model_registry.hard_max_age_days if hard else model_registry.max_age_days
        return dg.AssetCheckResult(
            passed=age <= model_registry.max_age_days,
            severity=dg.AssetCheckSeverity.ERROR if hard else dg.AssetCheckSeverity.WARN,
            description=(
                f"Model {metadata.name} {metadata.version} was trained {age:.1f} days ago; the "
                f"{'hard ' if hard else ''}limit is {limit:g} days."
                + (
                    " Retrain it (training_job or `batch-predict model train`)."
                    if age > model_registry.max_age_days
                    else ""
                )
            ),
            metadata={
                "model_version": metadata.version,
                "trained_at": metadata.trained_at,
                "age_days": round(age, 2),
                "max_age_days": model_registry.max_age_days,
                "hard_max_age_days": model_registry.hard_max_age_days,
            },
        )

    @dg.asset_check(
        asset="predictions",
        name=PREDICTIONS_MADE_BY_CHAMPION,
        description=(
            "Warns while prediction partitions were made by another model version than the one that should make "
            "them (BATCH_PREDICT_BACKFILL_MODEL); `batch-predict repredict` or stale_predictions_sensor fixes them."
        ),
    )
    def predictions_made_by_champion(
        source: SourceResource, warehouse: WarehouseResource, model_registry: ModelRegistryResource
    ) -> dg.AssetCheckResult:
        staleness = find_stale_partitions(
            warehouse.open(source.contract()), model_registry.models(), partition_end(partitions_def)
        )
        keys = [stale.partition_key for stale in staleness.stale]
        return dg.AssetCheckResult(
            passed=not keys,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"{len(keys)} partition(s) were predicted by another model version than the one that should "
                f"make them (the champion is {staleness.current}): "
                f"{', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"
                if keys
                else f"Every predicted partition was made by the model that should make it ({staleness.current})."
            ),
            metadata={
                "current_version": staleness.current,
                "stale_partitions": dg.MetadataValue.json(
                    {
                        stale.partition_key: {"made_by": stale.made_by, "wanted": stale.wanted}
                        for stale in staleness.stale
                    }
                ),
            },
        )

    @dg.asset_check(
        asset="predictions",
        name=NEWEST_DUE_PARTITION_ON_TIME,
        description=(
            "Fails when the newest partition whose deadline (partition end + BATCH_PREDICT_DEADLINE_HOURS) has "
            "passed has no predictions, or has records of its current input snapshot without an outcome; warns "
            "when its predictions came late."
        ),
    )
    def newest_due_partition_on_time(
        source: SourceResource, warehouse: WarehouseResource, batch: BatchResource
    ) -> dg.AssetCheckResult:
        now = datetime.now(UTC)
        due = newest_due_partition(partitions_def, timedelta(hours=batch.deadline_hours), now)
        if due is None:
            return dg.AssetCheckResult(passed=True, description="No partition is due yet.")
        key, due_at = due
        published_at, covered = warehouse.open(source.contract()).deliveries([key]).get(key, (None, None))
        verdict = deadline_verdict(published_at, covered, due_at, now)
        metadata = {"partition_key": key, "due_at": due_at.isoformat(), "verdict": verdict}
        if published_at is not None:
            metadata["completed_at"] = published_at.isoformat()
        if verdict in (ON_TIME, LATE):
            late = published_at - due_at if published_at is not None else timedelta(0)
            return dg.AssetCheckResult(
                passed=verdict == ON_TIME,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    f"Partition {key} was predicted at {metadata['completed_at']}"
                    + (f", {late} after its deadline." if verdict == LATE else ", before its deadline.")
                ),
                metadata=metadata,
            )
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"Partition {key} was due at {due_at.isoformat()} and has no predictions."
                if published_at is None
                else f"Partition {key} was due at {due_at.isoformat()} and is not done: its predictions were "
                f"published at {published_at.isoformat()}, but not every record of its current input snapshot has "
                "exactly one outcome (its inputs were snapshotted again after that publish). Materialize its "
                "predictions."
            ),
            metadata=metadata,
        )

    return ModelChecks(model_not_outdated, newest_due_partition_on_time, predictions_made_by_champion)
