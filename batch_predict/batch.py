"""One partition's prediction batch: export valid inputs, predict in chunks, publish atomically."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from batch_predict.registry import LoadedModel
from batch_predict.scoring import RunInfo, predict_file, probability_column
from batch_predict.warehouse import Completeness, PredictionStats, Warehouse


@dataclass(frozen=True)
class BatchOutcome:
    stats: PredictionStats
    completeness: Completeness


def predict_partition(
    warehouse: Warehouse, model: LoadedModel, partition_key: str, run_id: str, chunk_size: int
) -> BatchOutcome:
    """Predict every valid input of a partition and replace the partition's predictions.

    The warehouse is opened twice, briefly: to export the partition's valid inputs to a
    staging Parquet file, and to publish the predictions in one transaction. Prediction
    itself runs with the warehouse closed, so other runs can use it meanwhile.
    """
    started = time.perf_counter()
    staging_root = warehouse.path.parent / "staging"
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{partition_key.replace(':', '')}-", dir=staging_root))
    try:
        inputs_path = staging / "inputs.parquet"
        output_path = staging / "predictions.parquet"
        valid_inputs = warehouse.export_valid_inputs(partition_key, inputs_path)
        run = RunInfo(partition_key=partition_key, run_id=run_id, predicted_at=datetime.now(UTC))
        written = predict_file(model, inputs_path, output_path, warehouse.contract.features, run, chunk_size)
        stats = PredictionStats(
            partition_key=partition_key,
            valid_inputs=valid_inputs,
            predicted_rows=written,
            model_name=model.metadata.name,
            model_version=model.metadata.version,
            run_id=run_id,
            wall_seconds=time.perf_counter() - started,
        )
        columns = [probability_column(label) for label in model.metadata.classes]
        completeness = warehouse.publish_predictions(stats, output_path, columns)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BatchOutcome(stats=stats, completeness=completeness)
