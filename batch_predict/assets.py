"""The three assets: the partition's inputs, the loaded model and the partition's predictions."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import dagster as dg
import duckdb
from pydantic import Field

from batch_predict import contract as rules
from batch_predict.batch import BatchOutcome, predict_partition
from batch_predict.contract import FeatureContract
from batch_predict.drift import Reference
from batch_predict.monitoring import DriftReport, partition_drift
from batch_predict.registry import LoadedModel, ModelError
from batch_predict.resources import BatchResource, ModelRegistryResource, SourceResource, WarehouseResource
from batch_predict.scoring import probability_column
from batch_predict.settings import SettingsError
from batch_predict.warehouse import (
    PREDICTION_BASE_COLUMNS,
    SourceError,
    Warehouse,
    WarehouseError,
    WarehouseLockTimeout,
)
from batch_predict.warehouse.schema import TYPES, dagster_columns
from batch_predict.warehouse.schema import table as table_spec

GROUP = "batch_predict"
OWNERS = ["team:ml-platform"]
EVERY_INPUT_PREDICTED = "every_input_predicted"
NO_PREDICTION_ERRORS = "no_prediction_errors"
NO_FEATURE_DRIFT = "no_feature_drift"
NO_PREDICTION_DRIFT = "no_prediction_drift"
EVERY_RECORD_PLACED = "every_record_placed"
MODEL = dg.AssetKey("model")
DATA_VERSION_TAG = "dagster/data_version"  # where Dagster's staleness reads an asset event's data version


class PredictionsConfig(dg.Config):
    full_refresh: bool = Field(
        default=False,
        description="Re-predict every record of the partition, whatever BATCH_PREDICT_ON_FAILURE says.",
    )


class InputsConfig(dg.Config):
    allow_shrink: bool = Field(
        default=False,
        description="Replace the partition even when its window now holds fewer records than "
        "BATCH_PREDICT_MAX_SHRINK_SHARE of those it was snapshotted with (e.g. landing files were moved away); "
        "the removed records' predictions go to predictions_history.",
    )


def placeable_range(partitions_def: dg.TimeWindowPartitionsDefinition) -> tuple[datetime, datetime] | None:
    """[start of the first partition, end of the newest one that exists now): where an event time has a partition."""
    first, last = partitions_def.get_first_partition_window(), partitions_def.get_last_partition_window()
    return (first.start, last.end) if first is not None and last is not None else None


def placed_check(unplaced: dict[str, int]) -> dg.AssetCheckResult:
    """Warn while landed records are in no partition (`unplaced_inputs`), with their counts per reason.

    Records of the partition still in progress (`future_event_time`) are waiting, not lost:
    they are counted, but only the other reasons fail the check.
    """
    total = sum(unplaced.values())
    waiting = unplaced.get(rules.FUTURE_EVENT_TIME, 0)
    counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(unplaced.items()))
    if total > waiting:
        description = (
            f"{total - waiting} landed record(s) are in no partition ({counts}); see unplaced_inputs or "
            "`batch-predict unplaced`. Fix their event times in the landing files, or set BATCH_PREDICT_START "
            "earlier; future_event_time records are placed once their partition exists."
        )
    elif waiting:
        description = (
            f"Every landed record is placed, but for {waiting} whose event time is after the newest partition "
            "(future_event_time): they are placed once their partition exists."
        )
    else:
        description = "Every landed record is in a partition's inputs or rejected_inputs."
    return dg.AssetCheckResult(
        check_name=EVERY_RECORD_PLACED,
        passed=total == waiting,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={"unplaced": total, "unplaced_by_reason": dg.MetadataValue.json(unplaced)},
    )


@contextmanager
def deterministic_failures() -> Iterator[None]:
    """Fail without step retries on bad data, a bad model or a bad setting: retrying cannot help.

    Everything else (I/O errors, a warehouse lock held too long) stays retryable.
    """
    try:
        yield
    except WarehouseLockTimeout:
        raise
    except (SourceError, ModelError, SettingsError, WarehouseError) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error


T = TypeVar("T")


def each_partition(keys: Sequence[str], work: Callable[[str], T]) -> tuple[dict[str, T], dict[str, Exception]]:
    """Do `work` for every partition of a run, keeping the outcomes of those that succeeded.

    A single partition fails as it is. In a range, a failing partition is recorded and
    the others still run: what succeeded is kept, and the caller fails the run after.
    """
    if len(keys) == 1:
        with deterministic_failures():
            return {keys[0]: work(keys[0])}, {}
    done: dict[str, T] = {}
    failed: dict[str, Exception] = {}
    for key in keys:
        try:
            done[key] = work(key)
        except Exception as error:  # recorded and raised below, naming the partition
            failed[key] = error
    return done, failed


def range_failure(failed: dict[str, Exception], total: int) -> dg.Failure:
    """Fail a range run naming its failed partitions; retry only if every failure was transient."""
    lines = [f"{key}: {type(error).__name__}: {error}" for key, error in sorted(failed.items())]
    transient = all(isinstance(error, WarehouseLockTimeout | OSError) for error in failed.values())
    return dg.Failure(
        description=(
            f"{len(failed)} of {total} partitions failed ({', '.join(sorted(failed))}); the other "
            "partitions were written and recorded as materialized.\n" + "\n".join(lines)
        ),
        metadata={"failed_partitions": sorted(failed)},
        allow_retries=transient,
    )


@dataclass(frozen=True)
class PartitionResult:
    """One partition's prediction outcome, and what monitoring it measured (or why it could not)."""

    outcome: BatchOutcome
    drift: DriftReport | None = None
    quality: dict[str, Any] | None = None
    monitoring_error: str | None = None
    too_many_failed: str | None = None  # why the partition's failed share is over the limit

    def monitoring_metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        if self.drift is not None:
            metadata |= {**self.drift.metadata(), "drift_report": dg.MetadataValue.md(self.drift.markdown)}
        elif self.monitoring_error is not None:
            metadata["drift_report"] = f"Not measured: {self.monitoring_error}"
        else:
            metadata["drift_report"] = (
                "Not measured: the model has no reference statistics (register it with --reference)."
            )
        if self.quality is not None:
            metadata |= {"labelled": self.quality["labelled"], "realized_accuracy": round(self.quality["accuracy"], 4)}
        return metadata


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


def failed_share(outcome: BatchOutcome) -> float:
    """The share of the records this run worked in the partition (predicted + failed) that failed."""
    worked = outcome.published.run_predicted + outcome.published.run_failed
    return outcome.published.run_failed / worked if worked else 0.0


def too_many_failed(predictor: Warehouse, key: str, run_id: str, outcome: BatchOutcome, limit: float) -> str | None:
    """Say so, naming the share and the most common error, if more than `limit` of the worked records failed."""
    share = failed_share(outcome)
    if share <= limit:
        return None
    try:
        common = predictor.most_common_error(key, run_id)
        error = f"most common error (on {common[1]} records): {common[0]}" if common else "no error recorded"
    except (WarehouseError, duckdb.Error) as problem:  # the outcome is published; only the summary is missing
        error = f"the most common error could not be read ({type(problem).__name__}: {problem})"
    published = outcome.published
    return (
        f"Partition {key}: {published.run_failed} of {published.run_predicted + published.run_failed} worked "
        f"records ({share:.1%}) failed prediction, more than BATCH_PREDICT_MAX_FAILED_SHARE={limit:g}; {error}. "
        f"The outcome is published and every failed record is in prediction_errors (`batch-predict errors "
        f"--partition {key}`). Fix or roll back the model, then rerun the partition."
    )


def retry_policy(retries: int) -> dg.RetryPolicy:
    return dg.RetryPolicy(max_retries=retries, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def record_partitions(
    context: dg.AssetExecutionContext, done: dict[str, dict[str, Any]], failed: dict[str, Exception]
) -> Iterator[dg.AssetMaterialization]:
    """Attach each partition's own metadata to its materialization, or, if some partitions of
    the range failed, record the others as materialized and then fail naming the failed ones."""
    if failed:
        for key, metadata in done.items():
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=key, metadata=metadata)
        raise range_failure(failed, len(done) + len(failed))
    for key, metadata in done.items():
        context.add_asset_metadata(metadata, partition_key=key)


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


def load_champion(registry: ModelRegistryResource, source: SourceResource) -> LoadedModel:
    return registry.load(registry.current_version(), source.contract())


def last_model_identity(instance: dg.DagsterInstance) -> tuple[str, str] | None:
    """The (version, checksum) recorded by the model asset's latest materialization."""
    event = instance.get_latest_materialization_event(MODEL)
    materialization = event.asset_materialization if event else None
    if materialization is None:
        return None
    version, checksum = (materialization.metadata.get(key) for key in ("model_version", "checksum"))
    if version is None or checksum is None:
        return None
    return str(version.value), str(checksum.value)


@dg.op(out={})
def record_model(
    context: dg.OpExecutionContext, model_registry: ModelRegistryResource, source: SourceResource
) -> Iterator[dg.AssetMaterialization]:
    """Load the model the alias points at, check it with a smoke prediction, and record it as the
    `model` asset if it is not the one recorded last."""
    with deterministic_failures():
        loaded = load_champion(model_registry, source)
    meta = loaded.metadata
    if last_model_identity(context.instance) == (meta.version, meta.checksum):
        context.log.info(f"The champion is still {meta.name} {meta.version}; nothing to record.")
        return
    # The checksum as data version: prediction partitions made with another model turn unsynced.
    yield dg.AssetMaterialization(
        asset_key=MODEL, metadata=model_metadata(loaded), tags={DATA_VERSION_TAG: meta.checksum}
    )


def build_assets(
    partitions_def: dg.TimeWindowPartitionsDefinition,
    contract: FeatureContract,
    step_retries: int = 3,
    max_partitions_per_run: int = 1,
    model_max_age_days: float = 30,
    model_hard_max_age_days: float = 90,
) -> list[dg.AssetsDefinition]:
    # A backfill groups up to this many partitions in one run; each keeps its own rows and stats.
    backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run)

    @dg.asset(
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        retry_policy=retry_policy(step_retries),
        group_name=GROUP,
        owners=OWNERS,
        kinds={"duckdb"},
        metadata={"dagster/column_schema": inputs_schema(contract), "dagster/table_name": "inputs"},
        check_specs=[
            dg.AssetCheckSpec(
                EVERY_RECORD_PLACED,
                asset="inputs",
                description="Warns while landed records are in no partition (table unplaced_inputs): an event time that is missing, does not parse, or is before BATCH_PREDICT_START. Records after the newest partition (future_event_time) are counted but wait for their partition.",
            )
        ],
    )
    def inputs(
        context: dg.AssetExecutionContext, config: InputsConfig, source: SourceResource, warehouse: WarehouseResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
        """One row per valid source record whose event time falls in the partition; records that break the feature contract go to `rejected_inputs` with a reason, records whose event time places them in no partition to `unplaced_inputs`."""
        snapshotter = warehouse.open(source.contract())
        placeable = placeable_range(partitions_def)
        unplaced: dict[str, int] = {}

        def snapshot(key: str) -> dict[str, Any]:
            window = partitions_def.time_window_for_partition_key(key)
            stats = snapshotter.snapshot_inputs(
                source.source(),
                key,
                window.start,
                window.end,
                context.run.run_id,
                source.max_rejected_share,
                placeable=placeable,
                max_shrink_share=source.max_shrink_share,
                allow_shrink=config.allow_shrink,
            )
            unplaced.clear()
            unplaced.update(stats.unplaced_by_reason)
            empty = f"No source records in [{window.start}, {window.end}): the partition is empty."
            if stats.source_rows == 0:
                context.log.warning(f"Partition {key}: {empty}")
            return {
                "dagster/row_count": stats.valid_rows,
                "source_rows": stats.source_rows,
                "rejected_rows": stats.rejected_rows,
                "rejected_by_reason": dg.MetadataValue.json(stats.rejected_by_reason),
                "window": f"[{window.start.isoformat()}, {window.end.isoformat()})",
                "empty_partition": stats.source_rows == 0,
                "unplaced": sum(stats.unplaced_by_reason.values()),
                "archived_predictions": stats.archived_predictions,
                **({"duplicates_taken_from": dg.MetadataValue.json(stats.demoted)} if stats.demoted else {}),
                **({"warning": empty} if stats.source_rows == 0 else {}),
            }

        done, failed = each_partition(context.partition_keys, snapshot)
        yield from record_partitions(context, done, failed)
        yield dg.MaterializeResult(metadata=range_metadata(done), check_results=[placed_check(unplaced)])

    # The registry, not Dagster, holds the model: `model` is recorded by `model_job` (record_model)
    # when the champion changes, and no run can select it, so no run can skip predictions waiting on it.
    model = dg.AssetsDefinition(
        specs=[
            dg.AssetSpec(
                "model",
                deps=["trained_model"],
                group_name=GROUP,
                owners=OWNERS,
                kinds={"scikitlearn"},
                description=(
                    "The registered model the alias (default `champion`) points at, loaded and checked against the "
                    "feature contract with a smoke prediction; recorded by model_job when that model changes, so "
                    "its freshness is the time since it arrived."
                ),
                freshness_policy=dg.FreshnessPolicy.time_window(
                    fail_window=timedelta(days=model_hard_max_age_days),
                    warn_window=timedelta(days=model_max_age_days),
                ),
            )
        ]
    )

    @dg.asset(
        partitions_def=partitions_def,
        deps=[inputs, model],
        backfill_policy=backfill_policy,
        retry_policy=retry_policy(step_retries),
        group_name=GROUP,
        owners=OWNERS,
        kinds={"duckdb", "scikitlearn"},
        metadata={"dagster/column_schema": predictions_schema(), "dagster/table_name": "predictions"},
        check_specs=[
            dg.AssetCheckSpec(
                EVERY_INPUT_PREDICTED,
                asset="predictions",
                blocking=True,
                description="Each valid input of the partition has exactly one outcome: a prediction or a recorded error, and no outcome lacks an input.",
            ),
            dg.AssetCheckSpec(
                NO_FEATURE_DRIFT,
                asset="predictions",
                description="Warns when a feature's distribution in the partition drifted from the model's training reference (PSI above a threshold that accounts for the partition's size; BATCH_PREDICT_DRIFT_ALPHA, BATCH_PREDICT_DRIFT_PSI_FLOOR).",
            ),
            dg.AssetCheckSpec(
                NO_PREDICTION_DRIFT,
                asset="predictions",
                description="Warns when the predicted classes or scores drifted from the training reference, or the predicted classes from the previous partition.",
            ),
            dg.AssetCheckSpec(
                NO_PREDICTION_ERRORS,
                asset="predictions",
                # Blocking only takes effect at ERROR severity: past BATCH_PREDICT_MAX_FAILED_SHARE.
                blocking=True,
                description="Warns while records of the partition are in the prediction_errors ledger (failed, or dead after BATCH_PREDICT_MAX_ATTEMPTS); an error, failing the run, when more than BATCH_PREDICT_MAX_FAILED_SHARE of the records a run worked in the partition failed.",
            ),
        ],
    )
    def predictions(
        context: dg.AssetExecutionContext,
        config: PredictionsConfig,
        source: SourceResource,
        warehouse: WarehouseResource,
        model_registry: ModelRegistryResource,
        batch: BatchResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
        """One row per valid input record of the partition: the model's predicted class, one probability per class, and the model version that made it."""
        contract = source.contract()
        with deterministic_failures():  # resolved once per run: a promotion mid-run does not mix models
            current = model_registry.current_version()
        # Each version is loaded once per run, with its reference statistics, for all its partitions.
        models: dict[str, LoadedModel] = {}
        references: dict[str, Reference | None] = {}
        predictor = warehouse.open(contract)

        def predict(key: str) -> PartitionResult:
            version = model_registry.version_for(partitions_def.time_window_for_partition_key(key).end, current)
            if version not in models:
                models[version] = model_registry.load(version, contract)
            loaded = models[version]
            outcome = predict_partition(
                predictor,
                loaded,
                key,
                context.run.run_id,
                batch.chunk_size,
                mode=batch.on_failure,
                full_refresh=config.full_refresh,
                max_attempts=batch.max_attempts,
            )
            over = too_many_failed(predictor, key, context.run.run_id, outcome, batch.max_failed_share)
            if over is not None:
                context.log.error(over)
            try:
                quality = predictor.refresh_quality(key)  # labels of this partition that have arrived already
                if version not in references:
                    references[version] = model_registry.reference(version)
                reference = references[version]
                drift = None
                if reference is not None:
                    drift = partition_drift(predictor, loaded, reference, key, batch.drift_alpha, batch.drift_psi_floor)
                return PartitionResult(outcome, drift, quality, too_many_failed=over)
            except (WarehouseError, ModelError, ValueError, KeyError, duckdb.Error) as error:
                # The predictions are published; only measuring them failed. The drift checks say so
                # (warn) rather than failing a partition whose rows are written and complete.
                message = f"{type(error).__name__}: {error}"
                context.log.warning(f"Partition {key}: drift and realized quality not measured: {message}")
                return PartitionResult(outcome, monitoring_error=message, too_many_failed=over)

        results, failed = each_partition(context.partition_keys, predict)
        outcomes = {key: result.outcome for key, result in results.items()}
        per_partition = {
            key: {
                "dagster/row_count": result.outcome.published.succeeded,
                "valid_inputs": result.outcome.published.completeness.valid_inputs,
                **outcome_metadata(result.outcome),
                "run_failed_share": round(failed_share(result.outcome), 4),
                "model_version": result.outcome.model_version,
                **result.monitoring_metadata(),
            }
            for key, result in results.items()
        }
        yield from record_partitions(context, per_partition, failed)
        incomplete = sorted(k for k, o in outcomes.items() if not o.published.completeness.passed)
        with_errors = {k: o.published.failed for k, o in outcomes.items() if o.published.failed}
        over_limit = {key: result.too_many_failed for key, result in results.items() if result.too_many_failed}
        dead = sum(o.published.dead for o in outcomes.values())
        used = [models[version] for version in sorted({o.model_version for o in outcomes.values()})]
        model_info: dict[str, Any] = (
            {
                "model_name": used[0].metadata.name,
                "model_version": used[0].metadata.version,
                "model_checksum": used[0].metadata.checksum,
                "dagster/column_schema": predictions_schema(used[0].metadata.classes),
                "dagster/column_lineage": predictions_lineage(contract, used[0].metadata.classes),
            }
            if len(used) == 1
            else {"model_versions": ", ".join(m.metadata.version for m in used)}
        )
        yield dg.MaterializeResult(
            metadata={**range_metadata(per_partition), **model_info},
            check_results=[
                dg.AssetCheckResult(
                    check_name=EVERY_INPUT_PREDICTED,
                    passed=not incomplete,
                    description=f"Partitions with inputs lacking an outcome: {incomplete}" if incomplete else None,
                    metadata={
                        key: dg.MetadataValue.json(asdict(outcome.published.completeness))
                        for key, outcome in outcomes.items()
                    },
                ),
                drift_check(NO_FEATURE_DRIFT, results, lambda drift: drift.features_drifted),
                drift_check(NO_PREDICTION_DRIFT, results, lambda drift: drift.predictions_drifted),
                dg.AssetCheckResult(
                    check_name=NO_PREDICTION_ERRORS,
                    passed=not with_errors and not over_limit,
                    severity=dg.AssetCheckSeverity.ERROR if over_limit else dg.AssetCheckSeverity.WARN,
                    description="\n".join(
                        [
                            *(over_limit[key] for key in sorted(over_limit)),
                            f"{sum(with_errors.values())} record(s) failed ({dead} dead) in {sorted(with_errors)}; see "
                            f"prediction_errors. They are retried as BATCH_PREDICT_ON_FAILURE={batch.on_failure} says.",
                        ]
                    )
                    if with_errors or over_limit
                    else "Every valid input has a prediction.",
                    metadata={
                        "failed": sum(with_errors.values()),
                        "dead": dead,
                        "run_failed_share": dg.MetadataValue.json(
                            {key: round(failed_share(outcome), 4) for key, outcome in outcomes.items()}
                        ),
                        "max_failed_share": batch.max_failed_share,
                        "over_max_failed_share": ", ".join(sorted(over_limit)) or "none",
                    },
                ),
            ],
        )
        if over_limit:
            # Published and recorded above: failing now loses nothing. Not retried: the same model
            # would fail the same records again.
            raise dg.Failure(
                description="\n".join(over_limit[key] for key in sorted(over_limit)),
                metadata={"over_max_failed_share": sorted(over_limit)},
                allow_retries=False,
            )

    return [inputs, model, predictions]
