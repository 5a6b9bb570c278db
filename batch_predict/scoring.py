"""Scoring: check a loaded model against the feature contract and predict Arrow batches."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batch_predict.contract import FeatureContract
from batch_predict.registry import LoadedModel, ModelError


def probability_column(label: str) -> str:
    """The predictions column holding the probability of one class: `proba_<label>`."""
    return "proba_" + re.sub(r"[^0-9a-zA-Z]+", "_", label).strip("_").lower()


def verify_model(model: LoadedModel, contract: FeatureContract) -> None:
    """Fail unless the model takes exactly the contract's features and predicts sane probabilities.

    The smoke prediction runs on one row of ones, in the contract's feature order.
    """
    meta = model.metadata
    if meta.feature_names != list(contract.features):
        raise ModelError(
            f"Model {meta.name} {meta.version} expects features {meta.feature_names}, but the source "
            f"contract (BATCH_PREDICT_FEATURES) gives {list(contract.features)}. Register a model trained "
            "on these features, or set BATCH_PREDICT_FEATURES to the model's."
        )
    columns = [probability_column(label) for label in meta.classes]
    if len(set(columns)) != len(columns):
        raise ModelError(f"Model {meta.version} has class labels {meta.classes} that map to the same column names.")
    smoke = pd.DataFrame(np.ones((1, len(contract.features))), columns=list(contract.features))
    try:
        proba = model.predict_proba(smoke)
    except Exception as error:  # the estimator can raise anything; report it as a model problem
        raise ModelError(
            f"Model {meta.version} ({model.path}) failed a smoke prediction on one row: {type(error).__name__}: {error}"
        ) from error
    if proba.shape != (1, len(meta.classes)) or not np.isclose(proba.sum(), 1.0):
        raise ModelError(
            f"Model {meta.version} returned probabilities of shape {proba.shape} summing to "
            f"{proba.sum():.3f} for one row; expected (1, {len(meta.classes)}) summing to 1."
        )


@dataclass(frozen=True)
class RunInfo:
    partition_key: str
    run_id: str
    predicted_at: datetime


def prediction_schema(model: LoadedModel) -> pa.Schema:
    fields = [
        pa.field("partition_key", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("prediction", pa.string()),
        *(pa.field(probability_column(label), pa.float64()) for label in model.metadata.classes),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("predicted_at", pa.timestamp("us", tz="UTC")),
    ]
    return pa.schema(fields)


def score_batch(model: LoadedModel, batch: pa.RecordBatch, features: tuple[str, ...], run: RunInfo) -> pa.Table:
    """Predict one batch of valid inputs: one output row per input row, in the same order.

    The predicted class is the one with the highest probability, so the label and the
    probability columns never disagree.
    """
    frame = batch.select(list(features)).to_pandas()
    proba = model.predict_proba(frame)
    classes = np.asarray(model.metadata.classes, dtype=object)
    n = batch.num_rows
    meta = model.metadata
    columns: dict[str, pa.Array] = {
        "partition_key": pa.array([run.partition_key] * n, pa.string()),
        "record_id": batch.column("record_id"),
        "prediction": pa.array(classes[proba.argmax(axis=1)] if n else [], pa.string()),
    }
    for index, label in enumerate(meta.classes):
        columns[probability_column(label)] = pa.array(proba[:, index] if n else [], pa.float64())
    columns["model_name"] = pa.array([meta.name] * n, pa.string())
    columns["model_version"] = pa.array([meta.version] * n, pa.string())
    columns["run_id"] = pa.array([run.run_id] * n, pa.string())
    columns["predicted_at"] = pa.array([run.predicted_at] * n, pa.timestamp("us", tz="UTC"))
    return pa.table(columns, schema=prediction_schema(model))


def iter_batches(path: Path, chunk_size: int) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file as record batches of at most `chunk_size` rows."""
    yield from pq.ParquetFile(path).iter_batches(batch_size=chunk_size)


def predict_file(
    model: LoadedModel,
    inputs_path: Path,
    output_path: Path,
    features: tuple[str, ...],
    run: RunInfo,
    chunk_size: int,
) -> int:
    """Predict every row of a Parquet file of valid inputs into a Parquet file of predictions.

    Memory is bounded by `chunk_size`: one input batch and its predictions at a time.
    Returns the number of predictions written.
    """
    written = 0
    with pq.ParquetWriter(output_path, prediction_schema(model)) as writer:
        for batch in iter_batches(inputs_path, chunk_size):
            table = score_batch(model, batch, features, run)
            writer.write_table(table)
            written += table.num_rows
    return written
