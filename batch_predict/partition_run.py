"""One partition of a prediction run, end to end, without Dagster: the version that should predict
it, the prediction itself (batch.py), the failed-share limit, and the monitoring measured after.

The `predictions` asset calls `predict_only` for each partition of its run and `measure` right after
each (or, in a range whose partitions do not carry each other's records, once for all of them), and
turns the `PartitionResult`s into metadata and check results (results.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import duckdb

from batch_predict.batch import BatchOutcome, predict_partition
from batch_predict.models.source import RunModels
from batch_predict.models.types import LoadedModel, ModelError
from batch_predict.monitoring import DriftReport, range_drift
from batch_predict.warehouse import Warehouse, WarehouseDamaged, WarehouseError


class Log(Protocol):
    def warning(self, msg: str) -> Any: ...

    def error(self, msg: str) -> Any: ...


@dataclass(frozen=True)
class BatchSettings:
    """The run-time knobs of a prediction run (BATCH_PREDICT_CHUNK_SIZE, _ON_FAILURE, ...)."""

    chunk_size: int
    on_failure: str
    max_attempts: int
    drift_alpha: float
    drift_psi_floor: float
    max_failed_share: float  # more than this share of a partition's worked records failing fails the run


@dataclass(frozen=True)
class PartitionResult:
    """One partition's prediction outcome, and what monitoring it measured (or why it could not)."""

    outcome: BatchOutcome
    drift: DriftReport | None = None
    quality: dict[str, Any] | None = None
    monitoring_error: str | None = None
    too_many_failed: str | None = None  # why the partition's failed share is over the limit


@dataclass(frozen=True)
class Predicted:
    """One partition predicted and published, not yet measured."""

    model: LoadedModel
    outcome: BatchOutcome
    too_many_failed: str | None


def predict_only(
    predictor: Warehouse,
    models: RunModels,
    key: str,
    partition_end: datetime,
    run_id: str,
    settings: BatchSettings,
    full_refresh: bool,
    log: Log,
) -> Predicted:
    """Predict and publish one partition with the version that should predict it; `measure` it after."""
    loaded = models.for_partition(partition_end)
    outcome = predict_partition(
        predictor,
        loaded,
        key,
        run_id,
        settings.chunk_size,
        mode=settings.on_failure,
        full_refresh=full_refresh,
        max_attempts=settings.max_attempts,
    )
    over = too_many_failed(predictor, key, run_id, outcome, settings.max_failed_share)
    if over is not None:
        log.error(over)
    return Predicted(loaded, outcome, over)


def measure(
    predictor: Warehouse, models: RunModels, predicted: dict[str, Predicted], settings: BatchSettings, log: Log
) -> dict[str, PartitionResult]:
    """The realized quality and drift of published partitions, the drift of those one version predicted
    counted together (`range_drift`).

    Monitoring that fails (labels or reference unreadable) does not fail the partitions: their
    rows are written and complete; the results say what could not be measured.
    """
    by_version: dict[str, list[str]] = {}
    for key in sorted(predicted):
        by_version.setdefault(predicted[key].model.metadata.version, []).append(key)
    results: dict[str, PartitionResult] = {}
    for version, keys in by_version.items():
        try:
            quality = {key: predictor.refresh_quality(key) for key in keys}  # labels that have arrived already
            reference = models.reference(version)
            drift: dict[str, DriftReport] = {}
            if reference is not None:
                model = predicted[keys[0]].model
                valid_rows = {key: predicted[key].outcome.published.completeness.valid_inputs for key in keys}
                drift = range_drift(
                    predictor, model, reference, valid_rows, settings.drift_alpha, settings.drift_psi_floor
                )
            for key in keys:
                results[key] = PartitionResult(
                    predicted[key].outcome, drift.get(key), quality[key], too_many_failed=predicted[key].too_many_failed
                )
        except WarehouseDamaged:
            raise  # not a measuring problem: every later step would meet it too
        except (WarehouseError, ModelError, ValueError, KeyError, duckdb.Error) as error:
            if len(keys) > 1:  # measured one by one, so that a failure leaves the others measured
                for key in keys:
                    results |= measure(predictor, models, {key: predicted[key]}, settings, log)
                continue
            message = f"{type(error).__name__}: {error}"
            log.warning(f"Partition {keys[0]}: drift and realized quality not measured: {message}")
            results[keys[0]] = PartitionResult(
                predicted[keys[0]].outcome, monitoring_error=message, too_many_failed=predicted[keys[0]].too_many_failed
            )
    return results


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
    except WarehouseDamaged:
        raise
    except (WarehouseError, duckdb.Error) as problem:  # the outcome is published; only the summary is missing
        error = f"the most common error could not be read ({type(problem).__name__}: {problem})"
    published = outcome.published
    return (
        f"Partition {key}: {published.run_failed} of {published.run_predicted + published.run_failed} worked "
        f"records ({share:.1%}) failed prediction, more than BATCH_PREDICT_MAX_FAILED_SHARE={limit:g}; {error}. "
        f"The outcome is published and every failed record is in prediction_errors (`batch-predict errors "
        f"--partition {key}`). Fix or roll back the model, then rerun the partition."
    )
