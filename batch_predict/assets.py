"""The three assets: the partition's inputs, the loaded model and the partition's predictions."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import dagster as dg
from pydantic import Field

from batch_predict.batch import StagingError
from batch_predict.contract import FeatureContract
from batch_predict.models.source import RunModels
from batch_predict.models.types import LoadedModel, ModelError
from batch_predict.partition_run import PartitionResult, Predicted, measure, predict_only
from batch_predict.resources import BatchResource, ModelRegistryResource, SourceResource, WarehouseResource
from batch_predict.results import (
    EVERY_INPUT_PREDICTED,
    EVERY_RECORD_PLACED,
    NO_FEATURE_DRIFT,
    NO_PREDICTION_DRIFT,
    NO_PREDICTION_ERRORS,
    empty_partition,
    inputs_schema,
    model_metadata,
    models_used_metadata,
    over_failed_share,
    placed_check,
    prediction_checks,
    prediction_metadata,
    predictions_schema,
    range_metadata,
    snapshot_metadata,
)
from batch_predict.settings import OnFailure, SettingsError
from batch_predict.warehouse import (
    PartitionCheckError,
    SourceError,
    WarehouseDamaged,
    WarehouseError,
    WarehouseLockTimeout,
)

GROUP = "batch_predict"
# Warehouse errors another try may not meet: a lock held too long, a block read mid-change.
RETRYABLE_WAREHOUSE_ERRORS = (WarehouseLockTimeout, WarehouseDamaged)
OWNERS = ["team:ml-platform"]
MODEL = dg.AssetKey("model")
DATA_VERSION_TAG = "dagster/data_version"  # where Dagster's staleness reads an asset event's data version


class PredictionAssets(NamedTuple):
    """The batch pattern's three assets: a partition's inputs, the model, a partition's predictions."""

    inputs: dg.AssetsDefinition
    model: dg.AssetsDefinition
    predictions: dg.AssetsDefinition


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


@contextmanager
def deterministic_failures() -> Iterator[None]:
    """Fail without step retries on bad data, a bad model or a bad setting (a staging folder that is none):
    retrying cannot help.

    Everything else (I/O errors, a warehouse lock held too long, a block of the warehouse file that
    cannot be read) stays retryable.
    """
    try:
        yield
    except RETRYABLE_WAREHOUSE_ERRORS:
        raise
    except (SourceError, ModelError, SettingsError, StagingError, WarehouseError) as error:
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


def each_range(
    keys: Sequence[str], work: Callable[[Sequence[str]], dict[str, T]]
) -> tuple[dict[str, T], dict[str, Exception]]:
    """Do `work` for all the partitions of a run at once; if the data of one of them fails its checks
    (`PartitionCheckError`), do it for each partition on its own, so that the others are kept and each
    failure names its partition. Any other error fails every partition of the range: nothing was written.
    """
    if len(keys) > 1:
        try:
            return work(keys), {}
        except PartitionCheckError:
            pass  # each partition on its own says which failed, and the others are written
        except Exception as error:  # recorded and raised by the caller, naming the partitions
            return {}, dict.fromkeys(keys, error)
    return each_partition(keys, lambda key: work([key])[key])


def predict_and_measure(
    keys: Sequence[str],
    predict: Callable[[str], Predicted],
    measure_some: Callable[[dict[str, Predicted]], dict[str, PartitionResult]],
    carries: bool,
) -> tuple[dict[str, PartitionResult], dict[str, Exception]]:
    """Predict every partition of a run, then measure it: each right after its own publish in a run that
    carries records (its publish settles earlier partitions' records), else all together once all are
    published. What fails is recorded with its partition, as `each_partition` does."""
    if carries or len(keys) == 1:
        return each_partition(keys, lambda key: measure_some({key: predict(key)})[key])
    predicted, failed = each_partition(keys, predict)
    try:
        return measure_some(predicted), failed
    except Exception:  # measured one by one, so that what fails names its partition
        results: dict[str, PartitionResult] = {}
        for key in sorted(predicted):
            try:
                results[key] = measure_some({key: predicted[key]})[key]
            except Exception as error:  # recorded and raised by the caller, naming the partition
                failed[key] = error
        return results, failed


def range_failure(failed: dict[str, Exception], total: int) -> dg.Failure:
    """Fail a range run naming its failed partitions; retry only if every failure was transient."""
    errors = list({id(error): error for error in failed.values()}.values())
    named = ", ".join(sorted(failed))
    lines = [f"{key}: {type(error).__name__}: {error}" for key, error in sorted(failed.items())]
    if len(errors) == 1 and len(failed) > 1:  # the range failed as one, in one transaction
        summary = f"All {total} partitions failed ({named}); none was written."
        lines = [f"{type(errors[0]).__name__}: {errors[0]}"]
    elif len(failed) == total:
        summary = f"All {total} partitions failed ({named})."
    else:
        summary = (
            f"{len(failed)} of {total} partitions failed ({named}); the other "
            "partitions were written and recorded as materialized."
        )
    transient = all(isinstance(error, (*RETRYABLE_WAREHOUSE_ERRORS, OSError)) for error in errors)
    return dg.Failure(
        description=summary + "\n" + "\n".join(lines),
        metadata={"failed_partitions": sorted(failed)},
        allow_retries=transient,
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


def load_champion(registry: ModelRegistryResource, source: SourceResource) -> LoadedModel:
    models = registry.models()
    return models.load(models.current_version(), source.contract())


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
) -> PredictionAssets:
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
                description="Warns while landed records are in no partition (table unplaced_inputs): an event time that is missing, does not parse, or is before BATCH_PREDICT_START. Records after the newest partition (future_event_time) are counted but wait for their partition. Also warns while partitions snapshotted earlier lack landed records of their window (a late file; table late_partitions), until they run again.",
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
        late: dict[str, int] = {}

        windows = {key: partitions_def.time_window_for_partition_key(key) for key in context.partition_keys}

        def snapshot(keys: Sequence[str]) -> dict[str, dict[str, Any]]:
            stats = snapshotter.snapshot_range(
                source.source(),
                [(key, windows[key].start, windows[key].end) for key in keys],
                context.run.run_id,
                source.max_rejected_share,
                placeable=placeable,
                max_shrink_share=source.max_shrink_share,
                allow_shrink=config.allow_shrink,
            )
            unplaced.clear()  # a snapshot counts every landed record, so the last one's counts hold
            unplaced.update(stats[keys[-1]].unplaced_by_reason)
            late.clear()  # and judges every partition snapshotted before
            late.update(stats[keys[-1]].late)
            for key in keys:
                if stats[key].source_rows == 0:
                    context.log.warning(f"Partition {key}: {empty_partition(windows[key])}")
            return {key: snapshot_metadata(stats[key], windows[key]) for key in keys}

        with snapshotter.hold():
            done, failed = each_range(context.partition_keys, snapshot)
        yield from record_partitions(context, done, failed)
        yield dg.MaterializeResult(metadata=range_metadata(done), check_results=[placed_check(unplaced, late)])

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
        with deterministic_failures():
            models = RunModels(model_registry.models(), contract)
        predictor = warehouse.open(contract)
        settings = batch.settings()

        def predict_alone(key: str) -> Predicted:
            end = partitions_def.time_window_for_partition_key(key).end
            return predict_only(
                predictor, models, key, end, context.run.run_id, settings, config.full_refresh, context.log
            )

        def measure_some(predicted: dict[str, Predicted]) -> dict[str, PartitionResult]:
            return measure(predictor, models, predicted, settings, context.log)

        carries = OnFailure(settings.on_failure) == OnFailure.CARRY_OVER and not config.full_refresh
        with predictor.hold():
            results, failed = predict_and_measure(context.partition_keys, predict_alone, measure_some, carries)
        per_partition = {key: prediction_metadata(result) for key, result in results.items()}
        used = [models.load(version) for version in sorted({r.outcome.model_version for r in results.values()})]
        run_metadata = {**range_metadata(per_partition), **models_used_metadata(used, contract)}
        if len(per_partition) > 1:
            # Dagster would copy a range run's own metadata (about 10 KB of column schema and lineage)
            # into every partition's materialization; the newest partition's carries it.
            per_partition[max(per_partition)] |= run_metadata
            run_metadata = {}
        yield from record_partitions(context, per_partition, failed)
        yield dg.MaterializeResult(
            metadata=run_metadata,
            check_results=prediction_checks(results, settings.on_failure, settings.max_failed_share),
        )
        over_limit = over_failed_share(results)
        if over_limit:
            # Published and recorded above: failing now loses nothing. Not retried: the same model
            # would fail the same records again.
            raise dg.Failure(
                description="\n".join(over_limit[key] for key in sorted(over_limit)),
                metadata={"over_max_failed_share": sorted(over_limit)},
                allow_retries=False,
            )

    return PredictionAssets(inputs, model, predictions)
