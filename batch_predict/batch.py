"""One partition's prediction batch: export its work, predict in chunks, publish atomically."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from batch_predict.registry import LoadedModel
from batch_predict.scoring import FileOutcome, RunInfo, predict_file, probability_column
from batch_predict.warehouse import PredictionRun, PublishResult, Warehouse, WorkSet

RETRY_ALL = "retry_all"
RETRY_FAILED = "retry_failed"
CARRY_OVER = "carry_over"


@dataclass(frozen=True)
class BatchOutcome:
    mode: str
    work: WorkSet
    scored: FileOutcome
    published: PublishResult
    wall_seconds: float


def predict_partition(
    warehouse: Warehouse,
    model: LoadedModel,
    partition_key: str,
    run_id: str,
    chunk_size: int,
    mode: str = RETRY_ALL,
    full_refresh: bool = False,
    max_attempts: int = 3,
) -> BatchOutcome:
    """Predict a partition's work and record every record's outcome in the ledger.

    The work depends on `mode`: `retry_all` (or `full_refresh`) takes every valid input
    of the partition; `retry_failed` only those without a prediction; `carry_over` every
    valid input plus the failed, not yet dead records of earlier partitions.

    The warehouse is opened twice, briefly: to export the work to a staging Parquet
    file, and to publish the outcome in one transaction. Prediction runs with the
    warehouse closed, so other runs can use it meanwhile.
    """
    started = time.perf_counter()
    effective = RETRY_ALL if full_refresh else mode
    staging_root = warehouse.path.parent / "staging"
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{partition_key.replace(':', '')}-", dir=staging_root))
    try:
        work_path = staging / "work.parquet"
        work = warehouse.export_work(
            partition_key, work_path, only_unpredicted=effective == RETRY_FAILED, carry=effective == CARRY_OVER
        )
        run = RunInfo(partition_key=partition_key, run_id=run_id, predicted_at=datetime.now(UTC))
        scored = predict_file(
            model,
            work_path,
            staging / "predictions.parquet",
            staging / "errors.parquet",
            warehouse.contract.features,
            run,
            chunk_size,
        )
        published = warehouse.publish_outcome(
            PredictionRun(
                partition_key=partition_key,
                run_id=run_id,
                mode=effective,
                model_name=model.metadata.name,
                model_version=model.metadata.version,
                probability_columns=[probability_column(label) for label in model.metadata.classes],
                max_attempts=max_attempts,
                wall_seconds=time.perf_counter() - started,
            ),
            work_path,
            staging / "predictions.parquet",
            staging / "errors.parquet",
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BatchOutcome(
        mode=effective, work=work, scored=scored, published=published, wall_seconds=time.perf_counter() - started
    )
