"""Checks that watch the batch as time passes: an outdated model and a missed deadline.

Both are unpartitioned checks evaluated against the clock, so they run on their own
schedule (`monitoring_job`) rather than only when an asset is materialized. The
deadline check looks up the one partition that is due now, by key, so backfilling an
older partition can never make a missed deadline look met (a `FreshnessPolicy` judges
the asset's newest materialization of any partition and would).
"""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import dagster as dg

from batch_predict.models.source import ModelSource
from batch_predict.partitions import partition_end
from batch_predict.resources import BatchResource, ModelRegistryResource, SourceResource, WarehouseResource
from batch_predict.staleness import find_stale_partitions
from batch_predict.verdicts import BACKFILLED, LATE, ON_TIME, AgeLevel, ModelAge, deadline_description, deadline_verdict
from batch_predict.warehouse import Warehouse

MODEL_NOT_OUTDATED = "model_not_outdated"
PREDICTIONS_MADE_BY_CHAMPION = "predictions_made_by_champion"
NEWEST_DUE_PARTITION_ON_TIME = "newest_due_partition_on_time"


class ModelChecks(NamedTuple):
    """The checks the clock drives (monitoring_job): model age, the newest partition's deadline, stale partitions."""

    model_not_outdated: dg.AssetChecksDefinition
    # newest_due_partition_on_time and predictions_made_by_champion: one step for both
    predictions_monitoring: dg.AssetChecksDefinition


def newest_due_partition(
    partitions_def: dg.TimeWindowPartitionsDefinition, deadline: timedelta, now: datetime
) -> tuple[str, datetime] | None:
    """The newest partition whose predictions were due by `now`, and when they were due."""
    with dg.partition_loading_context(effective_dt=now - deadline):
        key = partitions_def.get_last_partition_key()
    if key is None:
        return None
    return key, partitions_def.time_window_for_partition_key(key).end + deadline


def next_due_at(
    partitions_def: dg.TimeWindowPartitionsDefinition, window_end: datetime, deadline: timedelta
) -> datetime | None:
    """When the predictions of the partition after the one ending at `window_end` are due."""
    following = partitions_def.get_next_partition_window(window_end, respect_bounds=False)
    return following.end + deadline if following is not None else None


def deadline_result(
    warehouse: Warehouse, partitions_def: dg.TimeWindowPartitionsDefinition, deadline: timedelta
) -> dg.AssetCheckResult:
    """newest_due_partition_on_time: did the newest partition that is due now get its predictions in time?"""
    now = datetime.now(UTC)
    due = newest_due_partition(partitions_def, deadline, now)
    if due is None:
        return dg.AssetCheckResult(
            check_name=NEWEST_DUE_PARTITION_ON_TIME, passed=True, description="No partition is due yet."
        )
    key, due_at = due
    window_end = partitions_def.time_window_for_partition_key(key).end
    published_at, covered = warehouse.deliveries([key]).get(key, (None, None))
    verdict = deadline_verdict(published_at, covered, due_at, now, next_due_at(partitions_def, window_end, deadline))
    metadata = {"partition_key": key, "due_at": due_at.isoformat(), "verdict": verdict.value}
    if published_at is not None:
        metadata["completed_at"] = published_at.isoformat()
    done = verdict in (ON_TIME, LATE, BACKFILLED)
    return dg.AssetCheckResult(
        check_name=NEWEST_DUE_PARTITION_ON_TIME,
        passed=verdict == ON_TIME,
        severity=dg.AssetCheckSeverity.WARN if done else dg.AssetCheckSeverity.ERROR,
        description=deadline_description(key, verdict, published_at, due_at),
        metadata=metadata,
    )


def champion_result(
    warehouse: Warehouse, models: ModelSource, partitions_def: dg.TimeWindowPartitionsDefinition
) -> dg.AssetCheckResult:
    """predictions_made_by_champion: which partitions another model version made than the one that should."""
    staleness = find_stale_partitions(warehouse, models, partition_end(partitions_def))
    keys = [stale.partition_key for stale in staleness.stale]
    return dg.AssetCheckResult(
        check_name=PREDICTIONS_MADE_BY_CHAMPION,
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
                {stale.partition_key: {"made_by": stale.made_by, "wanted": stale.wanted} for stale in staleness.stale}
            ),
        },
    )


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
        models = model_registry.models()
        metadata = models.metadata(models.current_version(), source.contract())
        verdict = ModelAge(
            metadata.age_days(datetime.now(UTC)), model_registry.max_age_days, model_registry.hard_max_age_days
        )
        return dg.AssetCheckResult(
            passed=verdict.passed,
            severity=dg.AssetCheckSeverity.ERROR if verdict.level == AgeLevel.ERROR else dg.AssetCheckSeverity.WARN,
            description=verdict.description(metadata.name, metadata.version),
            metadata={
                "model_version": metadata.version,
                "trained_at": metadata.trained_at,
                "age_days": round(verdict.age_days, 2),
                "max_age_days": model_registry.max_age_days,
                "hard_max_age_days": model_registry.hard_max_age_days,
            },
        )

    @dg.multi_asset_check(
        name="predictions_monitoring",
        specs=[
            dg.AssetCheckSpec(
                NEWEST_DUE_PARTITION_ON_TIME,
                asset="predictions",
                description=(
                    "Fails when the newest partition whose deadline (partition end + BATCH_PREDICT_DEADLINE_HOURS) "
                    "has passed has no predictions, or has records of its current input snapshot without an "
                    "outcome; warns when its predictions came late. Predictions published after the deadline are "
                    "late whatever published them: a backfill of a partition whose deadline has passed (such as "
                    "the first pass of `make demo`) is late by definition, and the warning clears once the "
                    "schedule predicts a newer partition in time."
                ),
            ),
            dg.AssetCheckSpec(
                PREDICTIONS_MADE_BY_CHAMPION,
                asset="predictions",
                description=(
                    "Warns while prediction partitions were made by another model version than the one that "
                    "should make them (BATCH_PREDICT_BACKFILL_MODEL); `batch-predict repredict` or "
                    "stale_predictions_sensor fixes them."
                ),
            ),
        ],
        can_subset=True,
        description="The clock-driven checks of the predictions, in one step that opens the warehouse once.",
    )
    def predictions_monitoring(
        context: dg.AssetCheckExecutionContext,
        source: SourceResource,
        warehouse: WarehouseResource,
        batch: BatchResource,
        model_registry: ModelRegistryResource,
    ) -> Iterator[dg.AssetCheckResult]:
        opened = warehouse.open(source.contract())
        evaluations: dict[str, Callable[[], dg.AssetCheckResult]] = {
            PREDICTIONS_MADE_BY_CHAMPION: lambda: champion_result(opened, model_registry.models(), partitions_def),
            NEWEST_DUE_PARTITION_ON_TIME: lambda: deadline_result(
                opened, partitions_def, timedelta(hours=batch.deadline_hours)
            ),
        }
        selected = {key.name for key in context.selected_asset_check_keys}
        failed: list[tuple[str, Exception]] = []
        with opened.hold():
            for name, evaluate in evaluations.items():
                if name not in selected:
                    continue
                # One check that cannot be evaluated must not keep the other's result from being recorded.
                try:
                    result = evaluate()
                except Exception as exc:
                    failed.append((name, exc))
                    continue
                yield result
        if failed:
            why = "; ".join(f"{name} could not be evaluated: {problem}" for name, problem in failed)
            raise RuntimeError(why) from failed[0][1]

    return ModelChecks(model_not_outdated, predictions_monitoring)
