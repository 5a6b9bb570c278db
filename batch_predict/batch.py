"""One partition's prediction batch: stage its work, predict it in staged chunks, publish atomically."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from batch_predict.models.types import LoadedModel
from batch_predict.scoring import (
    ERROR_SCHEMA,
    ChunksOutcome,
    RunInfo,
    predict_chunks,
    prediction_schema,
    probability_column,
)
from batch_predict.settings import OnFailure
from batch_predict.staging import staged_outcome, work_chunks, write_work
from batch_predict.warehouse import PredictionRun, PublishResult, Warehouse, WorkSet


@dataclass(frozen=True)
class BatchOutcome:
    mode: str
    model_version: str
    work: WorkSet
    scored: ChunksOutcome
    published: PublishResult
    wall_seconds: float


@dataclass(frozen=True)
class Manifest:
    """What a staged batch was made from; a rerun resumes it only if all of it still holds."""

    partition_key: str
    inputs_snapshot: str
    model_checksum: str
    model_version: str
    mode: str
    chunk_size: int
    layout: int
    own: int
    carried: int


# The staging folder's format (staging.py); a folder in another format is not resumed.
LAYOUT = 2

# Errors of a staging root that no retry mends: it is not a writable folder of this process.
_SETUP_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EEXIST,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EROFS,
    errno.ELOOP,
    errno.ENAMETOOLONG,
}


class StagingError(RuntimeError):
    """The staging root cannot be used: a setting to fix, not an error to retry."""


def staging_dir(warehouse: Warehouse, partition_key: str) -> Path:
    """The partition's staging folder under the warehouse's staging root (local to this machine)."""
    return warehouse.staging_root / partition_key.replace(":", "")


@contextmanager
def _exclusive(path: Path, before_waiting: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold a lock on `path` so that two runs of one partition never share its staging folder.

    `before_waiting` runs before this run waits for another's lock: the other may need what
    this run holds (the warehouse) to finish.
    """
    while True:
        with _open_lock(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                before_waiting()
                fcntl.flock(handle, fcntl.LOCK_EX)
            # The cleanup of old staging may have removed the lock file while this run waited
            # for it; a lock on a removed file excludes nobody, so take the new file's lock.
            if _same_file(handle.fileno(), path):
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
                return
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock(path: Path) -> IO[str]:
    """Open (make) the lock file `path` in the staging root, failing clearly if the root is no folder to write in."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a")
    except OSError as error:
        if error.errno not in _SETUP_ERRNOS:
            raise  # a passing I/O error: the step's retries may get past it
        raise StagingError(
            f"Cannot use the staging folder {path.parent} ({error.strerror or error}: {error.filename}). Runs "
            "stage their work there: set BATCH_PREDICT_STAGING to a folder this process can create and write, "
            "on a disk of this machine (empty: `staging` beside the DuckDB file, or `data/staging` for a "
            "PostgreSQL warehouse)."
        ) from error


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def remove_stale_staging(root: Path, max_age_hours: float, now: float | None = None) -> list[str]:
    """Remove the staging folders and lock files untouched for `max_age_hours` whose partition no run holds.

    They are what runs that died leave behind, if the partition was never run again. A
    younger folder is kept, so that the partition's next run resumes its staged chunks;
    a folder whose lock a run holds (it is in flight, however old) is never touched.

    Returns:
        The staging names (partition keys without colons) that were removed.
    """
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    names = {entry.stem if entry.suffix == ".lock" else entry.name for entry in root.iterdir()}
    removed = []
    for name in sorted(names):
        folder, lock = root / name, root / f"{name}.lock"
        if now - _newest_change(folder, lock) < max_age_hours * 3600:
            continue
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            try:
                shutil.rmtree(folder, ignore_errors=True)
                lock.unlink(missing_ok=True)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        removed.append(name)
    return removed


def _newest_change(*paths: Path) -> float:
    """The newest modification time of the paths and of everything under them (0 if none exists)."""
    newest = 0.0
    for path in paths:
        for found in [path, *(path.rglob("*") if path.is_dir() else [])]:
            try:
                newest = max(newest, found.stat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


def predict_partition(
    warehouse: Warehouse,
    model: LoadedModel,
    partition_key: str,
    run_id: str,
    chunk_size: int,
    mode: str = OnFailure.RETRY_ALL,
    full_refresh: bool = False,
    max_attempts: int = 3,
) -> BatchOutcome:
    """Predict a partition's work and record every record's outcome in the ledger.

    The work depends on `mode`: `retry_all` (or `full_refresh`) takes every valid input
    of the partition; `retry_failed` only those without a prediction; `carry_over` every
    valid input plus the failed, not yet dead records of earlier partitions.

    The work is read from the warehouse into chunk files in a staging folder (staging.py)
    and predicted chunk by chunk, each chunk's outcome staged as it is done; the outcome
    is published in one transaction at the end and the folder removed. A run that died
    part-way is resumed by the next one, which predicts only the chunks not yet staged, if
    the input snapshot, model, mode and chunk size are the same; otherwise it starts over.
    The warehouse is used only to read the work and to publish: a prediction that outlasts the
    hold's idle time (`IDLE_SECONDS`) lets other runs have it meanwhile; a quick one keeps the
    connection that read the work for the publish (an open and a close cost more than it).
    """
    started = time.perf_counter()
    # Compared as the enum; handed on as its plain string, which is what is stored and shown in the UI
    # (Dagster's metadata cannot serialize an Enum).
    effective = OnFailure.RETRY_ALL if full_refresh else OnFailure(mode)
    staging = staging_dir(warehouse, partition_key)
    with _exclusive(staging.with_suffix(".lock"), before_waiting=warehouse.release):
        # Inside a hold, the connection that read the work is kept for the publish; a prediction that
        # takes longer than the hold's idle time (0.25 s) lets other runs have the warehouse meanwhile
        # (the watcher thread closes it, once the model lets go of Python's GIL between or inside calls).
        manifest = _prepare(warehouse, model, partition_key, staging, effective, chunk_size)
        run = RunInfo(partition_key=partition_key, run_id=run_id, predicted_at=datetime.now(UTC))
        scored = predict_chunks(model, staging / "work", staging / "chunks", warehouse.contract.features, run)
        published = warehouse.publish_outcome(
            PredictionRun(
                partition_key=partition_key,
                run_id=run_id,
                mode=effective.value,
                model_name=model.metadata.name,
                model_version=model.metadata.version,
                probability_columns=[probability_column(label) for label in model.metadata.classes],
                max_attempts=max_attempts,
                wall_seconds=time.perf_counter() - started,
            ),
            staged_outcome(
                staging / "chunks",
                prediction_schema(model),
                ERROR_SCHEMA,
                # Only a run that did not take the whole partition needs to say which records it worked.
                None if effective == OnFailure.RETRY_ALL else work_chunks(staging / "work"),
            ),
        )
        # The manifest goes first: a removal cut short (a kill) leaves a folder the next run reads anew,
        # never one it would resume with chunk files gone.
        (staging / "manifest.json").unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return BatchOutcome(
        mode=effective.value,
        model_version=model.metadata.version,
        work=WorkSet(own=manifest.own, carried=manifest.carried),
        scored=scored,
        published=published,
        wall_seconds=time.perf_counter() - started,
    )


def _prepare(
    warehouse: Warehouse, model: LoadedModel, partition_key: str, staging: Path, mode: OnFailure, chunk_size: int
) -> Manifest:
    """The staged work to predict: the one a run that died left, if it was made from what this run would
    make it from; else the partition's work read anew, in one session with the check."""
    with warehouse.partition_work(partition_key) as work:
        wanted: dict[str, object] = {
            "partition_key": partition_key,
            "inputs_snapshot": work.snapshot,
            "model_checksum": model.metadata.checksum,
            "model_version": model.metadata.version,
            "mode": mode.value,
            "chunk_size": chunk_size,
            "layout": LAYOUT,
        }
        manifest = _resumable(staging, wanted)
        if manifest is not None:
            return manifest
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        records = work.records(only_unpredicted=mode == OnFailure.RETRY_FAILED, carry=mode == OnFailure.CARRY_OVER)
        counts = write_work(records, staging / "work", chunk_size, partition_key)
    manifest = Manifest(**wanted, own=counts.own, carried=counts.carried)  # type: ignore[arg-type]
    # Written last: without it the work is incomplete, and the next run reads it anew.
    (staging / "manifest.json").write_text(json.dumps(asdict(manifest)))
    return manifest


def _resumable(staging: Path, wanted: dict[str, object]) -> Manifest | None:
    """The staged batch's manifest, if it was made from exactly what this run would make it from."""
    try:
        manifest = Manifest(**json.loads((staging / "manifest.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None
    same = all(getattr(manifest, key) == value for key, value in wanted.items())
    return manifest if same else None
