"""The training side as assets: labels arrive late, a training set is cut from them, a candidate is judged.

    labels ──▶ training_set ──▶ trained_model ──▶ model ──▶ predictions[P]
    inputs[P] ─┘

`labels` also writes each predicted partition's realized accuracy and log-loss
(`prediction_quality`) as soon as its labels are in.
"""

from datetime import timedelta
from typing import Any, NamedTuple

import dagster as dg

from batch_predict.assets import OWNERS, deterministic_failures
from batch_predict.models.types import ModelError
from batch_predict.resources import ModelRegistryResource, SourceResource, TrainingResource, WarehouseResource
from batch_predict.training import TrainingError, train_and_promote

TRAINING_GROUP = "training"


def quality_markdown(rows: list[dict[str, Any]], limit: int = 14) -> str:
    """The newest partitions' realized quality as a Markdown table."""
    lines = ["| partition | model | labelled | accuracy | log-loss |", "|---|---|---:|---:|---:|"]
    for row in rows[:limit]:
        log_loss = row["log_loss"]
        lines.append(
            f"| {row['partition_key']} | {row['model_version']} | {row['labelled']} | {row['accuracy']:.3f} | "
            + ("-" if log_loss is None else f"{log_loss:.3f}")
            + " |"
        )
    return "\n".join(lines)


class TrainingAssets(NamedTuple):
    """Retraining from delayed labels: the labels, the training set cut from them, the trained candidate."""

    labels: dg.AssetsDefinition
    training_set: dg.AssetsDefinition
    trained_model: dg.AssetsDefinition


def build_training_assets(
    inputs: dg.AssetsDefinition, partitions_def: dg.TimeWindowPartitionsDefinition
) -> TrainingAssets:
    @dg.asset(group_name=TRAINING_GROUP, owners=OWNERS, kinds={"duckdb"})
    def labels(
        training: TrainingResource, source: SourceResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """The true classes of records, which arrive days after the records: one label per record id, and each predicted partition's realized accuracy and log-loss (`prediction_quality`)."""
        store = warehouse.open(source.contract())
        with deterministic_failures():
            stats = store.load_labels(training.source(), training.label_column)
        quality = store.prediction_quality()
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": stats.kept,
                "rows_read": stats.rows,
                "incomplete_rows": stats.incomplete,
                "superseded_rows": stats.superseded,
                "partitions_with_labels": len({row["partition_key"] for row in quality}),
                "realized_quality": dg.MetadataValue.md(quality_markdown(quality)),
            }
        )

    @dg.asset(deps=[labels, inputs], group_name=TRAINING_GROUP, owners=OWNERS, kinds={"duckdb"})
    def training_set(
        training: TrainingResource, source: SourceResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """Labelled valid inputs of the newest BATCH_PREDICT_TRAIN_DAYS + BATCH_PREDICT_HOLDOUT_DAYS days that have labels: a `train` split and a later `holdout` split."""
        store = warehouse.open(source.contract())
        newest = store.newest_labelled_event()
        if newest is None:
            raise dg.Failure(
                description=(
                    "No labelled inputs: materialize `labels` (label files in BATCH_PREDICT_LABELS) and the `inputs` "
                    "partitions they belong to first."
                ),
                allow_retries=False,
            )
        # The window ends with the partition of the newest labelled record, so it follows the partitions'
        # boundaries (and BATCH_PREDICT_TIMEZONE).
        end = partitions_def.time_window_for_partition_key(
            partitions_def.get_partition_key_for_timestamp(newest.timestamp())
        ).end
        holdout_start = end - timedelta(days=training.holdout_days)
        start = holdout_start - timedelta(days=training.train_days)
        counts = store.build_training_set(start, holdout_start, end)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": counts["train"] + counts["holdout"],
                "train_rows": counts["train"],
                "holdout_rows": counts["holdout"],
                "train_window": f"[{start.isoformat()}, {holdout_start.isoformat()})",
                "holdout_window": f"[{holdout_start.isoformat()}, {end.isoformat()})",
            }
        )

    @dg.asset(deps=[training_set], group_name=TRAINING_GROUP, owners=OWNERS, kinds={"scikitlearn"})
    def trained_model(
        context: dg.AssetExecutionContext,
        training: TrainingResource,
        source: SourceResource,
        warehouse: WarehouseResource,
        model_registry: ModelRegistryResource,
    ) -> dg.MaterializeResult:
        """A candidate trained on the training split, registered (alias `challenger`) and promoted to the model alias only if it beats the champion on the holdout by BATCH_PREDICT_PROMOTION_MARGIN in BATCH_PREDICT_PROMOTION_METRIC."""
        models = model_registry.models()
        if models.uses_mlflow:
            raise dg.Failure(
                description=(
                    "trained_model registers candidates in the local registry, but BATCH_PREDICT_MODEL_URI points "
                    "predictions at MLflow. Train and register in MLflow, or unset BATCH_PREDICT_MODEL_URI."
                ),
                allow_retries=False,
            )
        frame = warehouse.open(source.contract()).training_set()
        window = {
            "first_train_event": str(frame["event_time"].min()) if len(frame) else None,
            "first_holdout_event": str(frame.loc[frame["split"] == "holdout", "event_time"].min())
            if len(frame)
            else None,
            "last_event": str(frame["event_time"].max()) if len(frame) else None,
            "source": "training_set",
        }
        try:
            outcome = train_and_promote(
                models.registry,
                frame,
                source.contract().features,
                alias=models.alias,
                metric=training.promotion_metric,
                margin=training.promotion_margin,
                window=window,
            )
        except (TrainingError, ModelError) as error:
            raise dg.Failure(description=str(error), allow_retries=False) from error
        verdict = "promoted" if outcome.promoted else "kept the champion"
        context.log.info(f"Candidate {outcome.candidate.version}: {verdict} ({outcome.reason}).")
        return dg.MaterializeResult(
            metadata={
                "candidate_version": outcome.candidate.version,
                "candidate_metrics": dg.MetadataValue.json(outcome.candidate_metrics),
                "champion_version": outcome.champion_version or "-",
                "champion_metrics": dg.MetadataValue.json(outcome.champion_metrics or {}),
                "promoted": outcome.promoted,
                "decision": f"{verdict}: {outcome.reason}",
                "promotion_metric": training.promotion_metric,
                "promotion_margin": training.promotion_margin,
            },
            data_version=dg.DataVersion(outcome.candidate.checksum),
        )

    return TrainingAssets(labels, training_set, trained_model)
