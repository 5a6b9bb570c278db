"""A partition run's staging folder on disk: its work in chunk files, and each predicted chunk's outcome.

Everything is Arrow IPC (Feather v2) without compression: written and read back at the speed
of a memory copy, and a chunk file is read by mapping it, so a run holds one chunk in memory
whatever the partition's size. (Parquet, used before, cost about 1.1 s per 1M rows to write
the work, read it back and write the outcomes; IPC costs a tenth of that.)

    work/000000.arrow               chunk 0 of the work: exactly `chunk_size` rows (the last may be shorter)
    chunks/000000.predictions.arrow its predictions
    chunks/000000.errors.arrow      its errors (only if it has any)
    chunks/000000.done              written last: the chunk is staged, by this run id at this time

A chunk whose `done` marker is missing is predicted again, its files overwritten, so a chunk
is either fully staged or not at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from batch_predict.warehouse import StagedOutcome, StagedPredictions, WorkSet

WORK_KEYS = pa.schema(
    [pa.field("partition_key", pa.string()), pa.field("record_id", pa.string()), pa.field("attempt_seen", pa.int32())]
)


def write_table(path: Path, table: pa.Table) -> None:
    """Write `table` as one record batch to an IPC file, replacing `path` only when it is complete."""
    temporary = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    os.replace(temporary, path)


def read_table(path: Path) -> pa.Table:
    """An IPC file's rows, mapped from the file rather than copied (released when the table is)."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def write_work(batches: Iterable[pa.RecordBatch], folder: Path, chunk_size: int, partition_key: str) -> WorkSet:
    """Cut a stream of the work's records into chunk files of exactly `chunk_size` rows (the last may be
    shorter), and count the partition's own records and those carried from others.

    The chunks are fixed here, once: a run that resumes the staging predicts the same chunks.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pending: list[pa.RecordBatch] = []
    rows = own = total = index = 0

    def flush(table: pa.Table) -> None:
        nonlocal own, total, index
        write_table(folder / f"{index:06d}.arrow", table)
        own += pc.sum(pc.equal(table.column("partition_key"), partition_key)).as_py() or 0
        total += table.num_rows
        index += 1

    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        rows += batch.num_rows
        while rows >= chunk_size:
            table = pa.Table.from_batches(pending)
            flush(table.slice(0, chunk_size))
            rest = table.slice(chunk_size)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        flush(pa.Table.from_batches(pending))
    return WorkSet(own=own, carried=total - own)


def work_chunks(folder: Path) -> list[Path]:
    """The work's chunk files, in order."""
    return sorted(folder.glob("*.arrow"))


def is_staged(chunk_dir: Path, index: int) -> bool:
    return (chunk_dir / f"{index:06d}.done").exists()


def stage_chunk(
    chunk_dir: Path, index: int, predictions: pa.Table, errors: pa.Table | None, run_id: str, predicted_at: datetime
) -> None:
    """Stage chunk `index`'s outcome; its `done` marker, written last, says which run predicted it and when."""
    chunk_dir.mkdir(parents=True, exist_ok=True)
    # An earlier attempt at this chunk that died before its marker may have left errors this one has not.
    (chunk_dir / f"{index:06d}.errors.arrow").unlink(missing_ok=True)
    write_table(chunk_dir / f"{index:06d}.predictions.arrow", predictions)
    if errors is not None and errors.num_rows:
        write_table(chunk_dir / f"{index:06d}.errors.arrow", errors)
    done = chunk_dir / f"{index:06d}.done"
    temporary = done.with_name(done.name + ".tmp")
    temporary.write_text(json.dumps({"run_id": run_id, "predicted_at": predicted_at.isoformat()}))
    os.replace(temporary, done)


def staged_outcome(
    chunk_dir: Path, prediction_schema: pa.Schema, error_schema: pa.Schema, work: Sequence[Path] | None
) -> StagedOutcome:
    """The staged chunks as the publish reads them: predictions grouped by the attempt that staged them.

    Each attempt's predictions are a stream that maps one chunk file at a time (a dataset
    scan of them was measured holding far more: 1.1 GB at 10M rows against 0.6 GB), so the
    outcome can be published once. `work` (the work's chunk files) is given when the publish
    needs to know which records were worked; only their keys and the attempt each carried
    record had are read.
    """
    attempts: dict[tuple[str, str], list[Path]] = {}
    errors = []
    for done in sorted(chunk_dir.glob("*.done")):
        stamp = json.loads(done.read_text())
        attempts.setdefault((stamp["run_id"], stamp["predicted_at"]), []).append(
            done.with_name(done.stem + ".predictions.arrow")
        )
        failed = done.with_name(done.stem + ".errors.arrow")
        if failed.exists():
            errors.append(str(failed))
    return StagedOutcome(
        predictions=[
            StagedPredictions(run_id, datetime.fromisoformat(at), _stream(files, prediction_schema))
            for (run_id, at), files in attempts.items()
        ],
        errors=ds.dataset(errors, error_schema, format="ipc"),
        work=None if work is None else ds.dataset([str(path) for path in work], WORK_KEYS, format="ipc"),
    )


def _stream(files: Sequence[Path], schema: pa.Schema) -> pa.RecordBatchReader:
    """The rows of IPC files as one stream, read file by file when consumed."""

    def batches() -> Iterator[pa.RecordBatch]:
        for path in files:
            yield from read_table(path).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())
