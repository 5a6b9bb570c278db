"""What a run tells Dagster: metadata and check results, made from the domain's outcomes by pure functions.

The assets (assets.py) call these and yield what they return; nothing here reads or writes data.
"""

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import dagster as dg

from batch_predict import contract as rules
from batch_predict.batch import BatchOutcome
from batch_predict.contract import FeatureContract
from batch_predict.models.types import LoadedModel
from batch_predict.monitoring import DriftReport
from batch_predict.partition_run import PartitionResult, failed_share
from batch_predict.scoring import probability_column
from batch_predict.verdicts import rerun_hint
from batch_predict.warehouse import PREDICTION_BASE_COLUMNS, InputStats
from batch_predict.warehouse.schema import TYPES, dagster_columns
from batch_predict.warehouse.schema import table as table_spec

EVERY_INPUT_PREDICTED = "every_input_predicted"
NO_PREDICTION_ERRORS = "no_prediction_errors"
NO_FEATURE_DRIFT = "no_feature_drift"
NO_PREDICTION_DRIFT = "no_prediction_drift"
EVERY_RECORD_PLACED = "every_record_placed"


def snapshot_metadata(stats: InputStats, window: dg.TimeWindow) -> dict[str, Any]:
    """One `inputs` partition's metadata: its counts, where the other records went, and its window."""
    empty = stats.source_rows == 0
    return {
        "dagster/row_count": stats.valid_rows,
        "source_rows": stats.source_rows,
        "rejected_rows": stats.rejected_rows,
        "rejected_by_reason": dg.MetadataValue.json(stats.rejected_by_reason),
        "window": f"[{window.start.isoformat()}, {window.end.isoformat()})",
        "empty_partition": empty,
        "unplaced": sum(stats.unplaced_by_reason.values()),
        "archived_predictions": stats.archived_predictions,
        **({"duplicates_taken_from": dg.MetadataValue.json(stats.demoted)} if stats.demoted else {}),
        **({"warning": empty_partition(window)} if empty else {}),
    }


def empty_partition(window: dg.TimeWindow) -> str:
    return f"No source records in [{window.start}, {window.end}): the partition is empty."


def prediction_metadata(result: PartitionResult) -> dict[str, Any]:
    """One `predictions` partition's metadata: its outcome counts, speed, model version and monitoring."""
    outcome = result.outcome
    return {
        "dagster/row_count": outcome.published.succeeded,
        "valid_inputs": outcome.published.completeness.valid_inputs,
        **outcome_metadata(outcome),
        "run_failed_share": round(failed_share(outcome), 4),
        "model_version": outcome.model_version,
        **monitoring_metadata(result),
    }


def monitoring_metadata(result: PartitionResult) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if result.drift is not None:
        metadata |= {**result.drift.metadata(), "drift_report": dg.MetadataValue.md(result.drift.markdown)}
    elif result.monitoring_error is not None:
        metadata["drift_report"] = f"Not measured: {result.monitoring_error}"
    else:
        metadata["drift_report"] = "Not measured: the model has no reference statistics (register it with --reference)."
    if result.quality is not None:
        metadata |= {"labelled": result.quality["labelled"], "realized_accuracy": round(result.quality["accuracy"], 4)}
    return metadata


def models_used_metadata(used: list[LoadedModel], contract: FeatureContract) -> dict[str, Any]:
    """The run's model: its identity, column schema and lineage; or the versions, if the range used several."""
    if len(used) != 1:
        return {"model_versions": ", ".join(m.metadata.version for m in used)}
    meta = used[0].metadata
    return {
        "model_name": meta.name,
        "model_version": meta.version,
        "model_checksum": meta.checksum,
        "dagster/column_schema": predictions_schema(meta.classes),
        "dagster/column_lineage": predictions_lineage(contract, meta.classes),
    }


def prediction_checks(
    results: dict[str, PartitionResult], on_failure: str, max_failed_share: float
) -> list[dg.AssetCheckResult]:
    """The four checks of a prediction run, over all its partitions."""
    return [
        completeness_check(results),
        drift_check(NO_FEATURE_DRIFT, results, lambda drift: drift.features_drifted),
        drift_check(NO_PREDICTION_DRIFT, results, lambda drift: drift.predictions_drifted),
        errors_check(results, on_failure, max_failed_share),
    ]


def completeness_check(results: dict[str, PartitionResult]) -> dg.AssetCheckResult:
    """Blocking: every valid input of each partition has exactly one outcome."""
    outcomes = {key: result.outcome for key, result in results.items()}
    incomplete = sorted(k for k, o in outcomes.items() if not o.published.completeness.passed)
    return dg.AssetCheckResult(
        check_name=EVERY_INPUT_PREDICTED,
        passed=not incomplete,
        description=f"Partitions with inputs lacking an outcome: {incomplete}" if incomplete else None,
        metadata={key: dg.MetadataValue.json(asdict(o.published.completeness)) for key, o in outcomes.items()},
    )


def over_failed_share(results: dict[str, PartitionResult]) -> dict[str, str]:
    """Partition -> why its failed share is over BATCH_PREDICT_MAX_FAILED_SHARE."""
    return {key: result.too_many_failed for key, result in results.items() if result.too_many_failed}


def errors_check(results: dict[str, PartitionResult], on_failure: str, max_failed_share: float) -> dg.AssetCheckResult:
    """Warn while records are in the error ledger; an error past the failed-share limit."""
    outcomes = {key: result.outcome for key, result in results.items()}
    with_errors = {k: o.published.failed for k, o in outcomes.items() if o.published.failed}
    over_limit = over_failed_share(results)
    dead = sum(o.published.dead for o in outcomes.values())
    description = (
        "\n".join(
            [
                *(over_limit[key] for key in sorted(over_limit)),
                f"{sum(with_errors.values())} record(s) failed ({dead} dead) in {sorted(with_errors)}; see "
                f"prediction_errors. They are retried as BATCH_PREDICT_ON_FAILURE={on_failure} says.",
            ]
        )
        if with_errors or over_limit
        else "Every valid input has a prediction."
    )
    return dg.AssetCheckResult(
        check_name=NO_PREDICTION_ERRORS,
        passed=not with_errors and not over_limit,
        severity=dg.AssetCheckSeverity.ERROR if over_limit else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "failed": sum(with_errors.values()),
            "dead": dead,
            "run_failed_share": dg.MetadataValue.json({key: round(failed_share(o), 4) for key, o in outcomes.items()}),
            "max_failed_share": max_failed_share,
            "over_max_failed_share": ", ".join(sorted(over_limit)) or "none",
        },
    )


def placed_check(unplaced: dict[str, int], late: dict[str, int] | None = None) -> dg.AssetCheckResult:
    """Warn while landed records are in no partition (`unplaced_inputs`), with their counts per reason, or
    while partitions snapshotted earlier lack landed records of their window (`late`: a file landed after
    their snapshot, or replaced one), naming those partitions.

    Records of the partition still in progress (`future_event_time`) are waiting, not lost:
    they are counted, but only the other reasons fail the check.
    """
    late = late or {}
    total = sum(unplaced.values())
    waiting = unplaced.get(rules.FUTURE_EVENT_TIME, 0)
    counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(unplaced.items()))
    parts = []
    if total > waiting:
        parts.append(
            f"{total - waiting} landed record(s) are in no partition ({counts}); see unplaced_inputs or "
            "`batch-predict unplaced`. Fix their event times in the landing files, or set BATCH_PREDICT_START "
            "earlier; future_event_time records are placed once their partition exists."
        )
    if late:
        keys = sorted(late)
        shown = ", ".join(f"{key} ({late[key]} record(s))" for key in keys[:10]) + (
            f" and {len(keys) - 10} more" if len(keys) > 10 else ""
        )
        parts.append(
            f"{len(keys)} partition(s) snapshotted earlier lack landed records of their window: {shown}. Files "
            "landed (or were replaced) after their snapshot, or a copy that kept a record id lost it (table "
            f"late_partitions says which), so those records are not in their partition's inputs yet. To place them, "
            f"{rerun_hint(keys)}."
        )
    if not parts and waiting:
        parts.append(
            f"Every landed record is placed, but for {waiting} whose event time is after the newest partition "
            "(future_event_time): they are placed once their partition exists."
        )
    return dg.AssetCheckResult(
        check_name=EVERY_RECORD_PLACED,
        passed=total == waiting and not late,
        severity=dg.AssetCheckSeverity.WARN,
        description=" ".join(parts) or "Every landed record is in a partition's inputs or rejected_inputs.",
        metadata={
            "unplaced": total,
            "unplaced_by_reason": dg.MetadataValue.json(unplaced),
            "late_partitions": dg.MetadataValue.json(dict(sorted(late.items()))),
        },
    )


def drift_check(
    name: str, results: dict[str, PartitionResult], drifted_in: Callable[[DriftReport], list[str]]
) -> dg.AssetCheckResult:
    """A warn check over the run's partitions: which drifted in what, and which could not be measured."""
    found = {key: drifted_in(r.drift) for key, r in results.items() if r.drift is not None and drifted_in(r.drift)}
    errors = {key: r.monitoring_error for key, r in results.items() if r.monitoring_error is not None}
    no_reference = sorted(key for key, r in results.items() if r.drift is None and r.monitoring_error is None)
    parts = []
    if found:
        parts.append("Drift in " + "; ".join(f"{key}: {', '.join(names)}" for key, names in sorted(found.items())))
    if errors:
        parts.append("Could not measure " + "; ".join(f"{key} ({error})" for key, error in sorted(errors.items())))
    if no_reference:
        parts.append("Not measured (the model has no reference statistics; register it with --reference).")
    return dg.AssetCheckResult(
        check_name=name,
        passed=not found and not errors,
        severity=dg.AssetCheckSeverity.WARN,
        description=" ".join(parts) or "No drift beyond the thresholds.",
        metadata={
            "drifted": dg.MetadataValue.json(found),
            "not_measured": ", ".join(sorted([*errors, *no_reference])) or "none",
        },
    )


def range_metadata(per_partition: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The run's own metadata: nothing more for one partition, totals for a range."""
    if len(per_partition) == 1:
        return {}
    totals: dict[str, Any] = {"partitions": len(per_partition)}
    for name in ("dagster/row_count", "source_rows", "rejected_rows", "failed", "dead", "carried_in"):
        values = [m[name] for m in per_partition.values() if isinstance(m.get(name), int)]
        if values:
            totals[f"total_{name.removeprefix('dagster/')}"] = sum(values)
    return totals


def outcome_metadata(outcome: BatchOutcome) -> dict[str, Any]:
    published = outcome.published
    return {
        "mode": outcome.mode,
        "succeeded": published.succeeded,
        "failed": published.failed,
        "dead": published.dead,
        "carried_in": published.carried_in,
        "work_own": outcome.work.own,
        "work_carried": outcome.work.carried,
        "run_predicted": published.run_predicted,
        "run_failed": published.run_failed,
        "chunks": outcome.scored.chunks,
        "chunks_resumed": outcome.scored.resumed,
        "model_calls": outcome.scored.model_calls,
        "rows_per_second": round(outcome.scored.predicted / outcome.wall_seconds, 1) if outcome.wall_seconds else 0,
        "wall_seconds": round(outcome.wall_seconds, 3),
    }


def inputs_schema(contract: FeatureContract) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, kind, description=description)
            for name, kind, description in dagster_columns(table_spec(contract, "inputs"))
        ]
    )


def predictions_schema(classes: list[str] | None = None) -> dg.TableSchema:
    columns = [dg.TableColumn(c.name, TYPES[c.kind][0], description=c.description) for c in PREDICTION_BASE_COLUMNS]
    if classes is None:
        columns.append(dg.TableColumn("proba_<class>", "DOUBLE", description="One column per model class."))
    else:
        columns += [
            dg.TableColumn(probability_column(label), "DOUBLE", description=f"Probability of class {label}.")
            for label in classes
        ]
    return dg.TableSchema(columns=columns)


def predictions_lineage(contract: FeatureContract, classes: list[str]) -> dg.TableColumnLineage:
    features = [dg.TableColumnDep(asset_key="inputs", column_name=name) for name in contract.features]
    deps_by_column = {
        "partition_key": [dg.TableColumnDep(asset_key="inputs", column_name="partition_key")],
        "record_id": [dg.TableColumnDep(asset_key="inputs", column_name="record_id")],
        "prediction": features,
        **{probability_column(label): features for label in classes},
    }
    return dg.TableColumnLineage(deps_by_column=deps_by_column)


def model_metadata(loaded: LoadedModel) -> dict[str, Any]:
    meta = loaded.metadata
    return {
        "model_name": meta.name,
        "model_version": meta.version,
        "format": meta.format,
        "checksum": meta.checksum,
        "trained_at": meta.trained_at,
        "training_window": dg.MetadataValue.json(meta.training_window),
        "metrics": dg.MetadataValue.json(meta.metrics),
        "classes": ", ".join(meta.classes),
        "features": dg.MetadataValue.json(meta.features),
        "artifact": dg.MetadataValue.path(str(loaded.path)),
    }
