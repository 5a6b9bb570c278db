"""Scoring: check a loaded model against the feature contract and predict Arrow batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_predict import staging
from batch_predict.contract import probability_column
from batch_predict.models.types import LoadedModel, fitted_on_array


@dataclass(frozen=True)
class RunInfo:
    """The run that predicts: its partition (which may take carried records of others) and id."""

    partition_key: str
    run_id: str
    predicted_at: datetime


ERROR_SCHEMA = pa.schema(
    [
        pa.field("partition_key", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("error", pa.string()),
        pa.field("attempted_in_partition", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("failed_at", pa.timestamp("us", tz="UTC")),
    ]
)


def prediction_schema(model: LoadedModel) -> pa.Schema:
    """The staged prediction rows: the record, its predicted class and one probability per class.

    The columns that are the same for a whole run (model, run id, time, predicting partition) are
    not staged: the publish writes them, so no chunk carries a million copies of one value.
    """
    fields = [
        pa.field("partition_key", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("prediction", pa.string()),
        *(pa.field(probability_column(label), pa.float64()) for label in model.metadata.classes),
    ]
    return pa.schema(fields)


@dataclass
class Scored:
    """The outcome of one batch: a prediction row or an error row for every input row."""

    predictions: list[pa.Table] = field(default_factory=list)
    errors: list[pa.Table] = field(default_factory=list)
    model_calls: int = 0


def _repeat(value: object, n: int, kind: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, kind), n)


def _prediction_rows(model: LoadedModel, batch: pa.RecordBatch, proba: np.ndarray) -> pa.Table:
    classes = model.metadata.classes
    columns: dict[str, pa.Array] = {
        "partition_key": batch.column("partition_key"),
        "record_id": batch.column("record_id"),
        # The class with the highest probability, so the label and the probability columns never disagree.
        "prediction": pa.array(classes, pa.string()).take(pa.array(proba.argmax(axis=1), pa.int64())),
    }
    for index, label in enumerate(classes):
        columns[probability_column(label)] = pa.array(proba[:, index], pa.float64())
    return pa.table(columns, schema=prediction_schema(model))


def _error_rows(batch: pa.RecordBatch, message: str, run: RunInfo) -> pa.Table:
    n = batch.num_rows
    return pa.table(
        {
            "partition_key": batch.column("partition_key"),
            "record_id": batch.column("record_id"),
            "error": _repeat(message[:1000], n, pa.string()),
            "attempted_in_partition": _repeat(run.partition_key, n, pa.string()),
            "run_id": _repeat(run.run_id, n, pa.string()),
            "failed_at": _repeat(run.predicted_at, n, pa.timestamp("us", tz="UTC")),
        },
        schema=ERROR_SCHEMA,
    )


def model_input(model: LoadedModel, batch: pa.RecordBatch, features: tuple[str, ...]) -> Any:
    """The batch's features as the model takes them: a row-major array for a scikit-learn model fitted on
    an array (no pandas frame built only to be converted back), else a frame with the features' names."""
    if fitted_on_array(model.estimator):
        return np.column_stack([batch.column(name).to_numpy(zero_copy_only=False) for name in features])
    return batch.select(list(features)).to_pandas()


def score_batch(model: LoadedModel, batch: pa.RecordBatch, features: tuple[str, ...], run: RunInfo) -> Scored:
    """Predict a batch; when the model raises, bisect it until the failing records are isolated.

    Every input row ends as exactly one prediction row or one error row, in input order.
    A record whose probabilities are not finite or do not sum to 1 is an error too. The
    predicted class is the one with the highest probability, so the label and the
    probability columns never disagree.
    """
    scored = Scored()
    _score_or_bisect(model, batch, features, run, scored)
    return scored


def _score_or_bisect(
    model: LoadedModel, part: pa.RecordBatch, features: tuple[str, ...], run: RunInfo, scored: Scored
) -> None:
    # A plain recursive function, not a closure: a closure that calls itself is a reference
    # cycle, and would keep every chunk's results alive until the garbage collector runs.
    if part.num_rows == 0:
        return
    scored.model_calls += 1
    try:
        proba = model.predict_proba(model_input(model, part, features))
    except Exception as error:  # any exception of the model is a property of these records
        if part.num_rows == 1:
            scored.errors.append(_error_rows(part, f"{type(error).__name__}: {error}", run))
            return
        middle = part.num_rows // 2
        _score_or_bisect(model, part.slice(0, middle), features, run, scored)
        _score_or_bisect(model, part.slice(middle), features, run, scored)
        return
    if proba.shape != (part.num_rows, len(model.metadata.classes)):
        sane = np.zeros(part.num_rows, dtype=bool)
    else:
        # A sum that is not finite has a probability that is not: one check for both.
        sane = np.isclose(proba.sum(axis=1), 1.0, atol=1e-4)
    if sane.all():
        scored.predictions.append(_prediction_rows(model, part, proba))
        return
    mask = pa.array(sane)
    scored.predictions.append(_prediction_rows(model, part.filter(mask), proba[sane]))
    scored.errors.append(
        _error_rows(
            part.filter(pc.invert(mask)),
            "InvalidProbabilities: the model returned probabilities that are not finite or do not sum to 1",
            run,
        )
    )


@dataclass(frozen=True)
class ChunksOutcome:
    chunks: int
    resumed: int
    predicted: int
    failed: int
    model_calls: int
    peak_rows: int


def predict_chunks(
    model: LoadedModel,
    work_dir: Path,
    chunk_dir: Path,
    features: tuple[str, ...],
    run: RunInfo,
) -> ChunksOutcome:
    """Predict the work's chunk files one by one, staging each chunk's outcome as it is done.

    Chunks already staged (by an earlier attempt that died) are skipped without calling the
    model. Memory is bounded by the chunk size: one input chunk and its outcome at a time.
    """
    chunks = resumed = predicted = failed = calls = peak = 0
    for index, path in enumerate(staging.work_chunks(work_dir)):
        chunks += 1
        if staging.is_staged(chunk_dir, index):
            resumed += 1
            continue
        [batch] = staging.read_table(path).to_batches()
        peak = max(peak, batch.num_rows)
        scored = score_batch(model, batch, features, run)
        staging.stage_chunk(
            chunk_dir,
            index,
            pa.concat_tables(scored.predictions) if scored.predictions else prediction_schema(model).empty_table(),
            pa.concat_tables(scored.errors) if scored.errors else None,
            run.run_id,
            run.predicted_at,
        )
        predicted += sum(table.num_rows for table in scored.predictions)
        failed += sum(table.num_rows for table in scored.errors)
        calls += scored.model_calls
        del batch, scored
        # Hand freed Arrow buffers back, so the process does not grow with the partition.
        pa.default_memory_pool().release_unused()
    return ChunksOutcome(chunks, resumed, predicted, failed, calls, peak)
