"""The DuckDB warehouse: every SQL statement of the application lives in this module.

DuckDB lets one process open a database file for writing at a time, and a second
process cannot even open it read-only while the first holds it. So connections are
opened for one short unit of work, the heavy work (prediction) runs outside them, and
a lock conflict is retried with jittered exponential backoff in `Warehouse.connect`,
the one place that opens the file.

Values (paths, partition keys, times, run ids) are always bound as parameters. Column
names come from the validated feature contract and are quoted with `_ident`.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import duckdb
import numpy as np
import pandas as pd

from batch_predict import contract as rules
from batch_predict.contract import FeatureContract, probability_column
from batch_predict.drift import bin_index_sql
from batch_predict.settings import FeatureRange

READERS = {".parquet": "read_parquet", ".csv": "read_csv", ".json": "read_json", ".jsonl": "read_json"}

PREDICTION_BASE_COLUMNS = (
    ("partition_key", "VARCHAR"),
    ("record_id", "VARCHAR"),
    ("prediction", "VARCHAR"),
    ("model_name", "VARCHAR"),
    ("model_version", "VARCHAR"),
    ("run_id", "VARCHAR"),
    ("predicted_at", "TIMESTAMPTZ"),
    ("predicted_in_partition", "VARCHAR"),
)

# Parquet physical/converted types a feature or the event time may have.
_NUMERIC_PARQUET = {"DOUBLE", "FLOAT", "INT32", "INT64"}
_TEMPORAL_CONVERTED = {"TIMESTAMP_MILLIS", "TIMESTAMP_MICROS", "DATE"}

# The column DuckDB adds with each row's file: a name no source is expected to use, so that a
# source column called `filename` is read as data.
SOURCE_FILE_COLUMN = "__batch_predict_source_file"
# How a duplicate's rejection names the copy that keeps the record id: "... <event time> in <file>".
DUPLICATE_DETAIL = "record id kept by the copy at "
# DuckDB I/O errors of a file that is gone or cannot be opened now: worth retrying.
_TRANSIENT_READ = re.compile(r"no such file|cannot open file|no files found|could not open|resource temporarily", re.I)
# Errors by which DuckDB says the data cannot be read as they are.
_DATA_ERRORS = (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.BinderException)
# Where DuckDB's message gives the line of a bad CSV row.
_LINE_IN_MESSAGE = re.compile(r"\bline:?\s*(\d+)", re.IGNORECASE)


class WarehouseError(RuntimeError):
    """The warehouse file cannot be used as it is."""


class WarehouseLockTimeout(WarehouseError):
    """Another process held the warehouse longer than the lock timeout; worth retrying."""


class SourceError(RuntimeError):
    """The source files cannot be read into the feature contract."""


@dataclass(frozen=True)
class Source:
    """Files that DuckDB reads as one table: `root/glob`, e.g. `data/landing/**/*.parquet`.

    The reader (Parquet, CSV or JSON) follows the glob's extension; files are combined
    by column name, so a file lacking a column gives NULLs there (and its records are
    rejected for the missing feature) instead of failing the whole partition.
    """

    root: Path
    glob: str = "**/*.parquet"

    @property
    def pattern(self) -> str:
        return str(self.root / self.glob)

    @property
    def reader(self) -> str:
        suffix = Path(self.glob).suffix.lower()
        if suffix not in READERS:
            raise SourceError(
                f"BATCH_PREDICT_SOURCE_GLOB={self.glob!r} must end in one of {', '.join(READERS)}: "
                "the extension chooses the reader."
            )
        return READERS[suffix]


@dataclass(frozen=True)
class InputStats:
    partition_key: str
    source_rows: int
    valid_rows: int
    rejected_rows: int
    rejected_by_reason: dict[str, int]
    # After the snapshot: every record of the landing files in no partition, per reason.
    unplaced_by_reason: dict[str, int] = field(default_factory=dict)
    # Partitions whose stored copy of a record id this snapshot took, and how many.
    demoted: dict[str, int] = field(default_factory=dict)
    # Predictions of records no longer in the partitions' inputs, moved to predictions_history.
    archived_predictions: int = 0


@dataclass(frozen=True)
class LabelStats:
    """What loading the label files did with their rows: rows = kept + incomplete + superseded."""

    rows: int
    kept: int
    incomplete: int
    superseded: int


@dataclass(frozen=True)
class PredictionCounts:
    """A partition's predicted classes and score bins, and the predicted classes of the partition before it."""

    classes: dict[str, int]
    score_bins: dict[int, int]
    previous_partition: str | None
    previous_classes: dict[str, int]


@dataclass(frozen=True)
class WorkSet:
    """How many records a run predicts: its own partition's and those carried from earlier ones."""

    own: int
    carried: int


@dataclass(frozen=True)
class PredictionRun:
    """What publishing needs to know about the run whose outcome it records."""

    partition_key: str
    run_id: str
    mode: str
    model_name: str
    model_version: str
    probability_columns: Sequence[str]
    max_attempts: int
    wall_seconds: float


@dataclass(frozen=True)
class Completeness:
    """How the outcomes (predictions plus recorded errors) of one partition cover its valid inputs."""

    valid_inputs: int
    predictions: int
    missing: int
    duplicated: int
    unexpected: int

    @property
    def passed(self) -> bool:
        return self.missing == 0 and self.duplicated == 0 and self.unexpected == 0


@dataclass(frozen=True)
class PublishResult:
    """The partition's ledger right after a run published: live counts of its own records."""

    completeness: Completeness
    succeeded: int
    failed: int
    dead: int
    carried_in: int
    run_predicted: int
    run_failed: int


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """All of the block's statements, or none of them."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def record_id_sql(column: str, text_numbers: bool = False) -> tuple[str, str]:
    """SQL giving a source id column's value as record-id text, and SQL true when it is no id at all.

    Ids are text. A column read as FLOAT or DOUBLE (pandas writes integer ids with a NULL
    among them as float64) gives integer text for integer values, so `12.0` is the record
    `12` of another file and of the labels. A fractional, infinite or NaN value, or one
    too large for a 128-bit integer, is no id: the second expression is true for it and
    the first keeps its text. Floats hold integers exactly only up to 2^53 (2^24 for FLOAT).

    With `text_numbers` (CSV, read as text), an id written as an integer-valued decimal
    (`12.0`, as pandas writes a float id column) is the integer `12` too; other text stays
    as written (`007`, `7.5`, `A-12`), since a text column may hold any id.
    """
    if text_numbers:
        as_text = f"CAST({column} AS VARCHAR)"
        decimal = f"regexp_matches({as_text}, '^[+-]?[0-9]+\\.0+$')"
        return (
            f"CASE WHEN {decimal} THEN coalesce(CAST(TRY_CAST({as_text} AS HUGEINT) AS VARCHAR), {as_text}) "
            f"ELSE {as_text} END",
            "false",
        )
    is_float = f"typeof({column}) IN ('FLOAT', 'DOUBLE')"
    number = f"TRY_CAST({column} AS DOUBLE)"
    integral = f"(isfinite({number}) AND {number} = trunc({number}) AND abs({number}) < 1e38)"
    text = (
        f"CASE WHEN {is_float} AND {integral} THEN CAST(CAST({number} AS HUGEINT) AS VARCHAR) "
        f"ELSE CAST({column} AS VARCHAR) END"
    )
    return text, f"coalesce({is_float} AND NOT {integral}, false)"


def _out_of_range_rule(bounds: FeatureRange) -> str:
    """A `WHEN` of the verdict: the feature's value lies outside its inclusive plausibility range."""
    value = _ident(bounds.feature)
    outside = " OR ".join(
        f"{value} {op} CAST({bound!r} AS DOUBLE)"
        for op, bound in (("<", bounds.low), (">", bounds.high))
        if bound is not None
    )
    detail = (
        f"{_literal(bounds.feature + ' = ')} || CAST({value} AS VARCHAR) || "
        f"{_literal(f', outside its range {bounds} (BATCH_PREDICT_FEATURE_RANGES)')}"
    )
    return f"WHEN {outside} THEN {{'reason': {_literal(rules.OUT_OF_RANGE)}, 'detail': {detail}}}"


def _coverage_sql() -> str:
    """CTEs ending in `coverage(partition_key, covered)`: for each partition of a CTE `keys`, whether
    the outcomes stored now (predictions plus recorded errors) cover its inputs stored now exactly.

    The two multisets of record ids are compared by their counts and sums of 64-bit hashes, as
    `_completeness` decides its common case: one streaming aggregate per table over the given
    partitions, whatever their number.
    """
    tallies = ",\n".join(
        f"""
        cov_{table} AS (
            SELECT partition_key, count(*) AS n, sum(hash(record_id)) AS h
            FROM {table} SEMI JOIN keys USING (partition_key) GROUP BY ALL
        )"""
        for table in ("inputs", "predictions", "prediction_errors")
    )
    return f"""{tallies},
        coverage AS (
            SELECT k.partition_key,
                   coalesce(i.n, 0) = coalesce(p.n, 0) + coalesce(e.n, 0)
                   AND coalesce(i.h, 0) = coalesce(p.h, 0) + coalesce(e.h, 0) AS covered
            FROM keys AS k
            LEFT JOIN cov_inputs AS i USING (partition_key)
            LEFT JOIN cov_predictions AS p USING (partition_key)
            LEFT JOIN cov_prediction_errors AS e USING (partition_key)
        )
    """


def _is_lock_conflict(error: duckdb.Error) -> bool:
    return "lock" in str(error).lower()


class Warehouse:
    """One DuckDB file holding inputs, rejected inputs, predictions and per-partition stats."""

    def __init__(
        self,
        path: Path,
        contract: FeatureContract,
        lock_timeout_seconds: float = 300.0,
        memory_limit: str = "512MB",
        threads: int = 2,
    ) -> None:
        self.path = path
        self.contract = contract
        self.lock_timeout_seconds = lock_timeout_seconds
        self.memory_limit = memory_limit
        self.threads = threads
        self._schema_ready = False  # tables, once made, stay: check them once per process

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file for one short unit of work, waiting out other processes' locks."""
        if read_only and not self.path.exists():
            raise WarehouseError(
                f"No warehouse at {self.path}: nothing has been materialized yet. Run the `inputs` and "
                "`predictions` assets (for example `make demo`) or point BATCH_PREDICT_WAREHOUSE at your file."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as error:
                if not _is_lock_conflict(error):
                    raise self._unusable(error) from error
                if time.monotonic() + delay > deadline:
                    raise WarehouseLockTimeout(
                        f"The warehouse {self.path} stayed locked by another process for "
                        f"{self.lock_timeout_seconds:g}s ({error}). Wait for the other run to finish, "
                        "or raise BATCH_PREDICT_LOCK_TIMEOUT_SECONDS."
                    ) from error
                # Full jitter keeps several waiting runs from retrying in lockstep.
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 2.0)
            except duckdb.Error as error:
                raise self._unusable(error) from error
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"SET memory_limit = {_literal(self.memory_limit)}")
            con.execute(f"SET threads = {int(self.threads)}")
            # Nothing here relies on row order; without it DuckDB streams COPY and INSERT
            # instead of buffering whole row groups per thread to keep the order.
            con.execute("SET preserve_insertion_order = false")
            if not read_only and not self._schema_ready:
                self._ensure_schema(con)
                self._schema_ready = True
            yield con
        finally:
            con.close()

    def _unusable(self, error: duckdb.Error) -> WarehouseError:
        return WarehouseError(
            f"Cannot open the warehouse {self.path} as a DuckDB database ({error}). "
            "Point BATCH_PREDICT_WAREHOUSE at a DuckDB file, or at a path that does not exist yet to start a new one."
        )

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        c = self.contract
        features = ", ".join(f"{_ident(name)} DOUBLE" for name in c.features)
        con.execute(
            f"""
            CREATE TABLE IF NOT EXISTS inputs (
                partition_key VARCHAR NOT NULL, record_id VARCHAR NOT NULL, event_time TIMESTAMPTZ,
                {features}, source_file VARCHAR, run_id VARCHAR, loaded_at TIMESTAMPTZ
            );
            CREATE TABLE IF NOT EXISTS rejected_inputs (
                partition_key VARCHAR NOT NULL, record_id VARCHAR, event_time TIMESTAMPTZ,
                reason VARCHAR NOT NULL, detail VARCHAR, raw_values VARCHAR, source_file VARCHAR,
                run_id VARCHAR, rejected_at TIMESTAMPTZ
            );
            CREATE TABLE IF NOT EXISTS unplaced_inputs (
                record_id VARCHAR, source_file VARCHAR, reason VARCHAR NOT NULL, raw_event_time VARCHAR,
                first_seen_at TIMESTAMPTZ, last_seen_run_id VARCHAR
            );
            CREATE TABLE IF NOT EXISTS input_stats (
                partition_key VARCHAR PRIMARY KEY, window_start TIMESTAMPTZ, window_end TIMESTAMPTZ,
                source_rows BIGINT, valid_rows BIGINT, rejected_rows BIGINT, rejected_by_reason VARCHAR,
                run_id VARCHAR, loaded_at TIMESTAMPTZ
            );
            CREATE TABLE IF NOT EXISTS predictions (
                {", ".join(f"{name} {kind}" for name, kind in PREDICTION_BASE_COLUMNS)}
            );
            CREATE TABLE IF NOT EXISTS predictions_history (
                {", ".join(f"{name} {kind}" for name, kind in PREDICTION_BASE_COLUMNS)},
                superseded_at TIMESTAMPTZ, superseded_by_run VARCHAR
            );
            CREATE TABLE IF NOT EXISTS prediction_errors (
                partition_key VARCHAR NOT NULL, record_id VARCHAR NOT NULL, error VARCHAR, attempt INTEGER,
                dead BOOLEAN, attempted_in_partition VARCHAR, run_id VARCHAR, failed_at TIMESTAMPTZ
            );
            CREATE TABLE IF NOT EXISTS prediction_quality (
                partition_key VARCHAR, model_version VARCHAR, labelled BIGINT, accuracy DOUBLE, log_loss DOUBLE,
                unknown_labels BIGINT, computed_at TIMESTAMPTZ
            );
            CREATE TABLE IF NOT EXISTS prediction_drift (
                partition_key VARCHAR, model_version VARCHAR, kind VARCHAR, name VARCHAR, psi DOUBLE,
                threshold DOUBLE, n BIGINT, n_reference BIGINT, drifted BOOLEAN, computed_at TIMESTAMPTZ
            );
            CREATE TABLE IF NOT EXISTS prediction_stats (
                partition_key VARCHAR PRIMARY KEY, mode VARCHAR, valid_inputs BIGINT, succeeded BIGINT,
                failed BIGINT, dead BIGINT, rejected BIGINT, carried_in BIGINT, run_predicted BIGINT,
                run_failed BIGINT, model_name VARCHAR, model_version VARCHAR, run_id VARCHAR,
                completed_at TIMESTAMPTZ, wall_seconds DOUBLE, rows_per_second DOUBLE,
                every_input_predicted BOOLEAN
            );
            """
        )
        # Columns added after the first release: add them to warehouses made before.
        for table, column, kind in (
            ("predictions", "predicted_in_partition", "VARCHAR"),
            *(
                ("prediction_stats", name, "BIGINT")
                for name in ("succeeded", "failed", "dead", "rejected", "carried_in", "run_predicted", "run_failed")
            ),
            ("prediction_stats", "mode", "VARCHAR"),
        ):
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
        # Every version's predictions of every partition: the current ones and those a
        # re-prediction with another model superseded ("what did v3 say on that day").
        con.execute(
            """
            CREATE OR REPLACE VIEW predictions_all_versions AS
            SELECT *, true AS is_current, CAST(NULL AS TIMESTAMPTZ) AS superseded_at,
                   CAST(NULL AS VARCHAR) AS superseded_by_run FROM predictions
            UNION ALL BY NAME
            SELECT *, false AS is_current FROM predictions_history
            """
        )
        have = {row[0] for row in con.execute("SELECT column_name FROM (DESCRIBE inputs)").fetchall()}
        missing = [name for name in c.features if name not in have]
        if missing:
            raise WarehouseError(
                f"The inputs table in {self.path} has no column(s) {', '.join(missing)} that "
                "BATCH_PREDICT_FEATURES asks for: it was built for other features. Point "
                "BATCH_PREDICT_WAREHOUSE at a new file, or set BATCH_PREDICT_FEATURES back."
            )

    # -- inputs ---------------------------------------------------------------------------

    def _source_relation(self, source: Source) -> str:
        return f"{source.reader}($pattern, union_by_name = true, filename = true, hive_partitioning = false)"

    def _landing_relation(self, source: Source) -> str:
        """The landing files as one table, with each row's file and, for Parquet, its row number in the file.

        The file column has a private name, so a source column called `filename` is just
        another column. CSV is read as text: every value is cast row by row, so a bad value
        is its record's outcome (a rejection, or an unplaced event time), wherever it sits in
        the file, and never a failure of the whole read.
        """
        options = f"union_by_name = true, filename = {_literal(SOURCE_FILE_COLUMN)}, hive_partitioning = false"
        if source.reader == "read_parquet":
            options += ", file_row_number = true"
        elif source.reader == "read_csv":
            # Quoting is standard CSV, not sniffed: the sniffer samples the first rows only, and a
            # quoted field after them would otherwise break the whole read.
            options += """, all_varchar = true, quote = '"', escape = '"'"""
        return f"{source.reader}($pattern, {options})"

    def _source_files(self, con: duckdb.DuckDBPyConnection, source: Source) -> list[str]:
        """The files the source glob matches now, as DuckDB names them in the file column."""
        rows = con.execute("SELECT file FROM glob($pattern) ORDER BY 1", {"pattern": source.pattern}).fetchall()
        return [row[0] for row in rows]

    def _read_failure(self, con: duckdb.DuckDBPyConnection, source: Source, error: duckdb.Error) -> Exception:
        """What an error raised while reading the landing files means.

        A file that vanished or could not be opened mid-read is transient: an `OSError`,
        which the step retries. Anything else is in the data (a corrupt Parquet page or
        footer, a malformed CSV line): retrying cannot help, so it is a `SourceError` naming
        the file (from DuckDB's message, or by reading the files one by one) and the line
        where DuckDB gives one.
        """
        text = str(error)
        first = text.splitlines()[0].rstrip(".")
        if isinstance(error, duckdb.IOException) and _TRANSIENT_READ.search(text):
            return OSError(
                f"Reading the source files {source.pattern} failed ({first}): a file was moved or is still being "
                "written. The step is retried; if it keeps failing, check the landing folder."
            )
        try:
            files = self._source_files(con, source)
        except duckdb.Error:
            files = []
        named = [path for path in files if path in text]
        culprit = named[0] if named else self._first_unreadable(con, source, files)
        if culprit is None and not isinstance(error, _DATA_ERRORS):
            return error  # every file reads on its own, and DuckDB did not blame the data: not a data error
        # A line number means something in a text file only (DuckDB says "line 1" of a Parquet file too).
        line = _LINE_IN_MESSAGE.search(text) if source.reader != "read_parquet" else None
        where = ""
        if culprit is not None:
            where = f"The unreadable file is {culprit}" + (f", line {line.group(1)}. " if line else ". ")
        return SourceError(
            f"Cannot read the source files {source.pattern} with {source.reader}: {first}. {where}Move the "
            "unreadable file out of the landing folder (or fix it) and rerun the partition; nothing was written."
        )

    def _raise_read_failure(self, con: duckdb.DuckDBPyConnection, source: Source, error: duckdb.Error) -> NoReturn:
        failure = self._read_failure(con, source, error)
        if failure is error:
            raise error
        raise failure from error

    def _first_unreadable(self, con: duckdb.DuckDBPyConnection, source: Source, files: list[str]) -> str | None:
        """The first file that fails when read on its own, every column of every row."""
        for path in files:
            try:
                con.execute(f"SELECT bit_xor(hash(s)) FROM {self._landing_relation(source)} AS s", {"pattern": path})
            except duckdb.Error:
                return path
        return None

    def check_source(self, con: duckdb.DuckDBPyConnection, source: Source) -> None:
        """Fail with a clear message unless the source files can be read and hold the contract's columns."""
        if not source.root.is_dir():
            raise SourceError(
                f"The landing folder {source.root} does not exist. Create it and put source files in it "
                "(`batch-predict demo-data` writes demo records), or set BATCH_PREDICT_LANDING."
            )
        try:
            described = con.execute(
                f"DESCRIBE SELECT * FROM {self._landing_relation(source)}", {"pattern": source.pattern}
            )
            columns = {row[0]: str(row[1]) for row in described.fetchall()}
        except duckdb.Error as error:
            if "no files found" in str(error).lower():
                raise SourceError(
                    f"No source files match {source.pattern}. Put files there, or set "
                    "BATCH_PREDICT_LANDING / BATCH_PREDICT_SOURCE_GLOB to where they are."
                ) from error
            self._raise_read_failure(con, source, error)
        c = self.contract
        self._check_name_case(con, source, columns)
        if source.reader == "read_parquet":  # Parquet files are checked one by one, naming each that does not fit
            self._check_parquet_files(con, source)
        missing = [name for name in c.required_columns if name not in columns]
        if missing:
            raise SourceError(
                f"The source files {source.pattern} have no column(s) {', '.join(missing)} in any file; "
                f"the feature contract needs {', '.join(c.required_columns)}. Fix the files, "
                "or set BATCH_PREDICT_ID_COLUMN / BATCH_PREDICT_TIME_COLUMN / BATCH_PREDICT_FEATURES to match them."
            )
        time_type = columns[c.time_column]
        # Text is parsed row by row: a value that is not a time leaves only its record unplaced.
        if not (time_type.startswith("TIMESTAMP") or time_type in ("DATE", "VARCHAR")):
            raise SourceError(
                f"The event-time column {c.time_column} of {source.pattern} reads as {time_type}, not a timestamp, "
                "so its records cannot be placed in partitions. Write it as a timestamp (ISO 8601 text in CSV), "
                "or set BATCH_PREDICT_TIME_COLUMN to the right column."
            )

    def _check_name_case(self, con: duckdb.DuckDBPyConnection, source: Source, columns: dict[str, str]) -> None:
        """Name the files whose column differs from a configured name only in case.

        DuckDB combines such columns under the first file's spelling, so without this the
        configured column would be reported missing from every file.
        """
        by_lower = {name.lower(): name for name in columns}
        clashes = {
            name: by_lower[name.lower()]
            for name in self.contract.required_columns
            if name not in columns and name.lower() in by_lower
        }
        if not clashes:
            return
        found_in: dict[str, list[str]] = {}
        for path in self._source_files(con, source):
            try:
                described = con.execute(
                    f"DESCRIBE SELECT * FROM {self._landing_relation(source)}", {"pattern": path}
                ).fetchall()
            except duckdb.Error:
                continue
            for column in (row[0] for row in described):
                if column.lower() in {name.lower() for name in clashes} and column not in clashes:
                    found_in.setdefault(column, []).append(path)
        problems = [
            f"column {spelled!r} in {', '.join(found_in.get(spelled, []) or ['the files'])} differs only in case "
            f"from {name!r}"
            for name, spelled in clashes.items()
        ]
        raise SourceError(
            f"Column names must match the feature contract exactly: {'; '.join(problems)}. Rename the column in "
            "those files (or set BATCH_PREDICT_ID_COLUMN / BATCH_PREDICT_TIME_COLUMN / BATCH_PREDICT_FEATURES to "
            "the files' spelling) and rerun the partition; nothing was written."
        )

    def _check_parquet_files(self, con: duckdb.DuckDBPyConnection, source: Source) -> None:
        """Name every Parquet file that lacks a contract column or gives one a type it cannot have."""
        c = self.contract
        try:
            rows = con.execute(
                "SELECT file_name, name, type, converted_type, logical_type FROM parquet_schema($pattern)",
                {"pattern": source.pattern},
            ).fetchall()
        except duckdb.Error as error:
            self._raise_read_failure(con, source, error)
        by_file: dict[str, dict[str, tuple[str | None, str | None, str | None]]] = {}
        for file_name, name, kind, converted, logical in rows:
            by_file.setdefault(file_name, {})[name] = (kind, converted, logical)
        problems = []
        for file_name, found in sorted(by_file.items()):
            absent = [name for name in c.required_columns if name not in found]
            lower = {name.lower(): name for name in found}
            for name in [name for name in absent if name.lower() in lower]:
                problems.append(
                    f"{file_name} has column {lower[name.lower()]!r}, which differs only in case from {name!r}"
                )
            absent = [name for name in absent if name.lower() not in lower]
            if absent:
                problems.append(f"{file_name} has no column(s) {', '.join(absent)}")
            for name in c.features:
                kind, converted, _ = found.get(name, (None, None, None))
                numeric = (kind in _NUMERIC_PARQUET and converted not in _TEMPORAL_CONVERTED) or converted == "DECIMAL"
                if name in found and not numeric:
                    problems.append(f"{file_name} stores feature {name} as {converted or kind}, not a number")
            if c.time_column in found:
                kind, converted, logical = found[c.time_column]
                temporal = converted in _TEMPORAL_CONVERTED or kind == "INT96" or "Timestamp" in (logical or "")
                # Text is parsed row by row, as in CSV: a value that is not a time leaves its record unplaced.
                text = kind == "BYTE_ARRAY" and (converted == "UTF8" or "String" in (logical or ""))
                if not (temporal or text):
                    problems.append(
                        f"{file_name} stores {c.time_column} as {converted or kind}, not a timestamp, date or text"
                    )
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise SourceError(
                f"Source files do not match the feature contract: {shown}. Fix or move these files out of "
                f"{source.root}, then rerun the partition; nothing was written."
            )

    def _classified_source_sql(self, source: Source) -> str:
        """The source rows of a window, each with its rejection reason (NULL when valid), and the rows
        whose event time places them in no partition, each with its `unplaced` reason.

        A record id belongs to its earliest valid copy that has a partition: the smallest
        (event time, source file, row in the file), among the copies in the landing files
        (whichever window they fall in) and those other partitions store (their files may be
        gone). So which copy wins does not depend on the order partitions are snapshotted in.
        A stored copy wins a tie with a landing one: it is the same row, already placed. An
        invalid copy never takes the id: it is rejected for its own reason.
        """
        c = self.contract
        raw_columns = ", ".join(f"s.{_ident(f)} AS {_ident('raw__' + f)}" for f in c.features)
        cast_columns = ", ".join(f"TRY_CAST(s.{_ident(f)} AS DOUBLE) AS {_ident(f)}" for f in c.features)
        whens: list[str] = []

        def when(condition: str, reason: str, detail: str) -> None:
            whens.append(f"WHEN {condition} THEN {{'reason': {_literal(reason)}, 'detail': {_literal(detail)}}}")

        when("record_id IS NULL", rules.MISSING_RECORD_ID, c.id_column)
        when("non_integer_record_id", rules.NON_INTEGER_RECORD_ID, c.id_column)
        for f in c.features:
            when(f"{_ident('raw__' + f)} IS NULL", rules.MISSING_FEATURE, f)
        for f in c.features:
            when(f"{_ident(f)} IS NULL", rules.NOT_A_NUMBER, f)
        for f in c.features:
            when(f"NOT isfinite({_ident(f)})", rules.NAN_FEATURE, f)
        for f in c.nonnegative:
            when(f"{_ident(f)} < 0", rules.NEGATIVE_VALUE, f)
        whens.extend(_out_of_range_rule(r) for r in c.ranges)
        raw_values = ", ".join(f"{_ident(f)} := {_ident('raw__' + f)}" for f in c.features)
        raw_time = f"s.{_ident(c.time_column)}"
        event_time = f"TRY_CAST({raw_time} AS TIMESTAMPTZ)"
        row_number = "s.file_row_number" if source.reader == "read_parquet" else "CAST(NULL AS BIGINT)"
        record_id, non_integer_id = record_id_sql("s." + _ident(c.id_column), source.reader == "read_csv")
        return f"""
            WITH src AS (
                SELECT {record_id} AS record_id, {non_integer_id} AS non_integer_record_id,
                       {event_time} AS event_time, {raw_time} AS raw_event_time,
                       {raw_columns}, {cast_columns}, s.{_ident(SOURCE_FILE_COLUMN)} AS source_file,
                       {row_number} AS source_row
                FROM {self._landing_relation(source)} AS s
            ),
            placed AS (
                SELECT *,
                       CASE WHEN event_time IS NULL AND (raw_event_time IS NULL
                                 OR trim(CAST(raw_event_time AS VARCHAR)) = '') THEN {_literal(rules.MISSING_EVENT_TIME)}
                            WHEN event_time IS NULL THEN {_literal(rules.UNPARSEABLE_EVENT_TIME)}
                            WHEN event_time < $placeable_start THEN {_literal(rules.BEFORE_START)}
                            WHEN event_time >= $placeable_end THEN {_literal(rules.FUTURE_EVENT_TIME)}
                       END AS unplaced,
                       coalesce(event_time >= $window_start AND event_time < $window_end, false) AS in_window
                FROM src
            ),
            window_ids AS (SELECT DISTINCT record_id FROM placed WHERE in_window AND record_id IS NOT NULL),
            checked AS (  -- the window's rows, and the other placed copies of its record ids
                SELECT *, CAST(struct_pack({raw_values}) AS VARCHAR) AS raw_values,
                       CASE {" ".join(whens)} END AS verdict
                FROM placed
                WHERE unplaced IS NULL AND (in_window OR record_id IN (SELECT record_id FROM window_ids))
            ),
            copies AS (
                SELECT *, false AS stored FROM checked
                UNION ALL BY NAME
                SELECT record_id, event_time, source_file, true AS stored, false AS in_window FROM inputs
                WHERE partition_key <> $partition_key AND record_id IN (SELECT record_id FROM window_ids)
            ),
            ranked AS (
                SELECT *,
                       row_number() OVER copy AS copy_number,
                       first_value(event_time) OVER copy AS kept_time,
                       first_value(source_file) OVER copy AS kept_file
                FROM copies
                WINDOW copy AS (
                    PARTITION BY record_id, verdict IS NULL
                    ORDER BY event_time, source_file, stored DESC, source_row NULLS LAST, raw_values
                )
            )
            SELECT * EXCLUDE (verdict, copy_number, kept_time, kept_file, stored),
                   COALESCE(verdict, CASE WHEN copy_number > 1 THEN
                       {{'reason': {_literal(rules.DUPLICATE_RECORD_ID)},
                         'detail': {_literal(DUPLICATE_DETAIL)} || CAST(kept_time AS VARCHAR) || ' in ' || kept_file}}
                   END) AS verdict
            FROM ranked WHERE in_window
            UNION ALL BY NAME
            SELECT * FROM placed WHERE unplaced IS NOT NULL
        """

    def snapshot_inputs(
        self,
        source: Source,
        partition_key: str,
        window_start: datetime,
        window_end: datetime,
        run_id: str,
        max_rejected_share: float = 1.0,
        *,
        placeable: tuple[datetime, datetime] | None = None,
        max_shrink_share: float = 0.5,
        allow_shrink: bool = False,
    ) -> InputStats:
        """Replace one partition of `inputs` and `rejected_inputs` with the source rows of its window.

        One transaction: the partition is either fully replaced or left as it was. Nothing is
        written, and `SourceError` says why, when more than `max_rejected_share` of the rows
        break the contract (a source that is mostly invalid is usually a wrong file or
        setting, not bad records), or when the window holds fewer than `max_shrink_share` of
        the records the partition was last snapshotted with (landing files that were moved
        away) unless `allow_shrink`.

        The same transaction moves the predictions of records that left the partition to
        `predictions_history`, takes a record id from another partition that stores a later
        copy of it (that copy is rejected there as a duplicate), and refreshes
        `unplaced_inputs` for the files read: records whose event time is missing, does not
        parse, or falls outside `placeable` (the partitions that exist now).
        """
        features = ", ".join(_ident(f) for f in self.contract.features)
        params = {"partition_key": partition_key, "run_id": run_id}
        with self.connect() as con:
            self.check_source(con, source)
            files = self._source_files(con, source)
            try:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE staged_source AS {self._classified_source_sql(source)}",
                    {
                        "partition_key": partition_key,
                        "pattern": source.pattern,
                        "window_start": window_start,
                        "window_end": window_end,
                        "placeable_start": placeable[0] if placeable else None,
                        "placeable_end": placeable[1] if placeable else None,
                    },
                )
            except duckdb.Error as error:
                self._raise_read_failure(con, source, error)
            with _transaction(con):
                counts = con.execute(
                    "SELECT count(*), count(*) FILTER (WHERE verdict IS NULL) FROM staged_source WHERE in_window"
                ).fetchone()
                by_reason = dict(
                    con.execute(
                        """
                        SELECT verdict.reason, count(*) FROM staged_source
                        WHERE in_window AND verdict IS NOT NULL GROUP BY 1 ORDER BY 1
                        """
                    ).fetchall()
                )
                assert counts is not None
                source_rows, valid_rows = int(counts[0]), int(counts[1])
                stored = con.execute("SELECT source_rows FROM input_stats WHERE partition_key = ?", [partition_key])
                stored_rows = int((stored.fetchone() or (0,))[0] or 0)
                if (
                    not allow_shrink
                    and stored_rows
                    and (source_rows == 0 or source_rows < max_shrink_share * stored_rows)
                ):
                    below = f", fewer than BATCH_PREDICT_MAX_SHRINK_SHARE={max_shrink_share:g} of them"
                    raise SourceError(
                        f"Partition {partition_key} was snapshotted with {stored_rows} source records, but "
                        f"{source.pattern} now holds {source_rows} in its window{below if source_rows else ''}: "
                        "were landing files moved or deleted? Nothing was written. Put the files back, or, to "
                        "replace the partition with what is there now (its removed predictions go to "
                        'predictions_history), run it with the run config {"ops": {"inputs": {"config": '
                        '{"allow_shrink": true}}}} or `batch-predict materialize --allow-shrink`.'
                    )
                if source_rows and (source_rows - valid_rows) / source_rows > max_rejected_share:
                    raise SourceError(
                        f"{source_rows - valid_rows} of the {source_rows} source records of partition "
                        f"{partition_key} break the feature contract ({json.dumps(by_reason, sort_keys=True)}), "
                        f"more than BATCH_PREDICT_MAX_REJECTED_SHARE={max_rejected_share:g}. Nothing was written. "
                        "Check the files and the BATCH_PREDICT_*_COLUMN / FEATURES settings, or raise the share "
                        "to accept these rejections."
                    )
                for table in ("inputs", "rejected_inputs", "input_stats"):
                    con.execute(f"DELETE FROM {table} WHERE partition_key = ?", [partition_key])
                con.execute(
                    f"""
                    INSERT INTO inputs BY NAME
                    SELECT $partition_key AS partition_key, record_id, event_time, {features}, source_file,
                           $run_id AS run_id, now() AS loaded_at
                    FROM staged_source WHERE in_window AND verdict IS NULL
                    """,
                    params,
                )
                con.execute(
                    """
                    INSERT INTO rejected_inputs BY NAME
                    SELECT $partition_key AS partition_key, record_id, event_time, verdict.reason AS reason,
                           verdict.detail AS detail, raw_values, source_file, $run_id AS run_id,
                           now() AS rejected_at
                    FROM staged_source WHERE in_window AND verdict IS NOT NULL
                    """,
                    params,
                )
                demoted = self._demote_later_copies(con, partition_key, run_id)
                archived = self._archive_orphans(con, [partition_key, *demoted], run_id)
                con.execute(
                    """
                    INSERT INTO input_stats VALUES
                    ($partition_key, $window_start, $window_end, $source_rows, $valid_rows,
                     $rejected_rows, $by_reason, $run_id, now())
                    """,
                    {
                        **params,
                        "window_start": window_start,
                        "window_end": window_end,
                        "source_rows": source_rows,
                        "valid_rows": valid_rows,
                        "rejected_rows": source_rows - valid_rows,
                        "by_reason": json.dumps(by_reason, sort_keys=True),
                    },
                )
                self._refresh_unplaced(con, files, run_id)
                unplaced = self._unplaced_counts(con)
        return InputStats(
            partition_key,
            source_rows,
            valid_rows,
            source_rows - valid_rows,
            by_reason,
            unplaced_by_reason=unplaced,
            demoted=demoted,
            archived_predictions=archived,
        )

    def _demote_later_copies(self, con: duckdb.DuckDBPyConnection, partition_key: str, run_id: str) -> dict[str, int]:
        """Reject, in their partitions, the stored copies of record ids this partition's inputs now hold.

        Such a copy sorts after this partition's (else this partition would have rejected its
        own): an earlier copy landed late. It goes to its partition's `rejected_inputs` as a
        duplicate, with the detail a rerun of that partition would give, and the partition's
        `input_stats` counts follow. Returns the number demoted per partition.
        """
        raw_values = ", ".join(f"{_ident(f)} := o.{_ident(f)}" for f in self.contract.features)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE demoted AS
            SELECT o.partition_key, o.record_id, o.event_time, o.source_file,
                   CAST(struct_pack({raw_values}) AS VARCHAR) AS raw_values,
                   {_literal(DUPLICATE_DETAIL)} || CAST(n.event_time AS VARCHAR) || ' in ' || n.source_file AS detail
            FROM inputs AS o JOIN inputs AS n ON o.record_id = n.record_id
            WHERE n.partition_key = $p AND o.partition_key <> $p
            """,
            {"p": partition_key},
        )
        counts = dict(con.execute("SELECT partition_key, count(*) FROM demoted GROUP BY 1").fetchall())
        if not counts:
            return {}
        con.execute(
            f"""
            INSERT INTO rejected_inputs BY NAME
            SELECT partition_key, record_id, event_time, {_literal(rules.DUPLICATE_RECORD_ID)} AS reason, detail,
                   raw_values, source_file, $run_id AS run_id, now() AS rejected_at
            FROM demoted
            """,
            {"run_id": run_id},
        )
        con.execute(
            """
            DELETE FROM inputs AS i USING demoted AS d
            WHERE i.partition_key = d.partition_key AND i.record_id = d.record_id
            """
        )
        for key in counts:
            reasons = dict(
                con.execute(
                    "SELECT reason, count(*) FROM rejected_inputs WHERE partition_key = ? GROUP BY 1 ORDER BY 1", [key]
                ).fetchall()
            )
            con.execute(
                """
                UPDATE input_stats SET
                    valid_rows = (SELECT count(*) FROM inputs WHERE partition_key = $p),
                    rejected_rows = (SELECT count(*) FROM rejected_inputs WHERE partition_key = $p),
                    rejected_by_reason = $by_reason
                WHERE partition_key = $p
                """,
                {"p": key, "by_reason": json.dumps(reasons, sort_keys=True)},
            )
        return {str(key): int(n) for key, n in counts.items()}

    def _archive_orphans(self, con: duckdb.DuckDBPyConnection, partition_keys: Sequence[str], run_id: str) -> int:
        """Move the predictions of the partitions' records that are no longer in their inputs to
        `predictions_history` (still queryable in `predictions_all_versions`) and drop their error
        ledger rows. Returns the number of predictions moved."""
        scope = """list_contains($keys, t.partition_key) AND NOT EXISTS (
            SELECT 1 FROM inputs AS i WHERE i.partition_key = t.partition_key AND i.record_id = t.record_id)"""
        params = {"keys": list(partition_keys)}
        archived = self._archive_rows(con, scope, params, run_id)
        con.execute(f"DELETE FROM predictions AS t WHERE {scope}", params)
        con.execute(f"DELETE FROM prediction_errors AS t WHERE {scope}", params)
        return archived

    def _refresh_unplaced(self, con: duckdb.DuckDBPyConnection, files: list[str], run_id: str) -> None:
        """Replace the `unplaced_inputs` rows of the files just read, keeping when each was first seen."""
        params = {"files": files}
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE unplaced_before AS
            SELECT source_file, record_id, raw_event_time, min(first_seen_at) AS first_seen_at
            FROM unplaced_inputs WHERE list_contains($files, source_file) GROUP BY ALL
            """,
            params,
        )
        con.execute("DELETE FROM unplaced_inputs WHERE list_contains($files, source_file)", params)
        con.execute(
            """
            INSERT INTO unplaced_inputs BY NAME
            SELECT s.record_id, s.source_file, s.unplaced AS reason, CAST(s.raw_event_time AS VARCHAR) AS raw_event_time,
                   coalesce(b.first_seen_at, now()) AS first_seen_at, $run_id AS last_seen_run_id
            FROM staged_source AS s LEFT JOIN unplaced_before AS b
              ON s.source_file = b.source_file AND s.record_id IS NOT DISTINCT FROM b.record_id
             AND CAST(s.raw_event_time AS VARCHAR) IS NOT DISTINCT FROM b.raw_event_time
            WHERE s.unplaced IS NOT NULL
            """,
            {"run_id": run_id},
        )

    @staticmethod
    def _unplaced_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
        rows = con.execute("SELECT reason, count(*) FROM unplaced_inputs GROUP BY 1 ORDER BY 1").fetchall()
        return {str(reason): int(n) for reason, n in rows}

    def unplaced(self, limit: int) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Records that are in no partition: counts per reason, and up to `limit` rows, oldest first."""
        with self.connect(read_only=True) as con:
            if not self._has_table(con, "unplaced_inputs"):
                return {}, []
            counts = self._unplaced_counts(con)
            cursor = con.execute(
                """
                SELECT record_id, source_file, reason, raw_event_time, first_seen_at, last_seen_run_id
                FROM unplaced_inputs ORDER BY first_seen_at, source_file, record_id LIMIT $limit
                """,
                {"limit": limit},
            )
            names = [column[0] for column in cursor.description]
            return counts, [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # -- predictions ----------------------------------------------------------------------

    def export_work(self, partition_key: str, path: Path, *, only_unpredicted: bool, carry: bool) -> WorkSet:
        """Write the records a run of `partition_key` must predict to a Parquet work file.

        Own records: every valid input of the partition, or with `only_unpredicted` only
        those without a prediction (failed or never tried). With `carry`, also the failed,
        not yet dead records of earlier partitions, each with the attempt number seen now
        so that publishing can tell whether another run settled it meanwhile.
        """
        features = ", ".join(f"i.{_ident(f)}" for f in self.contract.features)
        own = f"""
            SELECT i.partition_key, i.record_id, {features}, CAST(NULL AS INTEGER) AS attempt_seen
            FROM inputs AS i WHERE i.partition_key = $partition_key
        """
        if only_unpredicted:
            own += """
                AND NOT EXISTS (SELECT 1 FROM predictions AS p
                                WHERE p.partition_key = i.partition_key AND p.record_id = i.record_id)
            """
        carried = f"""
            UNION ALL
            SELECT i.partition_key, i.record_id, {features}, e.attempt AS attempt_seen
            FROM inputs AS i JOIN prediction_errors AS e USING (partition_key, record_id)
            WHERE i.partition_key < $partition_key AND NOT e.dead
        """
        work = own + (carried if carry else "")
        params = {"partition_key": partition_key}
        with self.connect() as con:
            con.execute(
                f"COPY ({work}) TO $path (FORMAT parquet, COMPRESSION uncompressed)",
                {**params, "path": str(path)},
            )
            row = con.execute(
                "SELECT count(*) FILTER (WHERE partition_key = $partition_key), "
                "count(*) FILTER (WHERE partition_key <> $partition_key) FROM read_parquet($path)",
                {**params, "path": str(path)},
            ).fetchone()
        assert row is not None
        return WorkSet(own=int(row[0]), carried=int(row[1]))

    def publish_outcome(self, run: PredictionRun, work: Path, predictions: Path, errors: Path) -> PublishResult:
        """Record a run's predictions and errors in the ledger, in one transaction.

        Every record of the work file gets its new outcome in place of its previous one, so
        a record is never in `predictions` twice nor in both tables. The partition's own
        records are replaced as a whole (by partition key, no join over its rows); carried
        records one by one, and only if their error row is unchanged since the work file
        was written (another run may have settled them meanwhile). A failed record's
        attempt counts up; at `max_attempts` it is marked dead and no longer carried.
        """
        key = {"p": run.partition_key}
        with self.connect() as con, _transaction(con):
            for column in run.probability_columns:
                for table in ("predictions", "predictions_history"):
                    con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {_ident(column)} DOUBLE")
            # Earlier attempts of the records this run worked: the partition's own failed
            # records, and the carried ones still failed as the work file saw them.
            con.execute(
                """
                    CREATE OR REPLACE TEMP TABLE prior AS
                    SELECT partition_key, record_id, attempt FROM prediction_errors WHERE partition_key = $p
                    UNION ALL
                    SELECT e.partition_key, e.record_id, e.attempt
                    FROM read_parquet($work) AS w JOIN prediction_errors AS e USING (partition_key, record_id)
                    WHERE w.partition_key <> $p AND e.attempt = w.attempt_seen AND NOT e.dead
                    """,
                {**key, "work": str(work)},
            )
            if run.mode == "retry_failed":
                # Only the records without a prediction were worked; a prediction that
                # another run wrote for one of them meanwhile gives way to this run's.
                worked = (
                    "t.partition_key = $p AND t.record_id IN "
                    "(SELECT record_id FROM read_parquet($work) WHERE partition_key = $p)"
                )
                self._archive(con, run, worked, {**key, "work": str(work)})
                con.execute(f"DELETE FROM predictions AS t WHERE {worked}", {**key, "work": str(work)})
            else:
                self._archive(con, run, "t.partition_key = $p", key)
                con.execute("DELETE FROM predictions WHERE partition_key = $p", key)
            con.execute("DELETE FROM prediction_errors WHERE partition_key = $p", key)
            for table in ("predictions", "prediction_errors"):
                con.execute(
                    f"""
                        DELETE FROM {table} AS t USING prior AS c
                        WHERE c.partition_key <> $p AND t.partition_key = c.partition_key
                          AND t.record_id = c.record_id
                        """,
                    key,
                )
            carried_ok = "SELECT partition_key, record_id FROM prior WHERE partition_key <> $p"
            [(run_predicted,)] = con.execute(
                f"""
                    INSERT INTO predictions BY NAME
                    SELECT * FROM read_parquet($path) WHERE partition_key = $p
                    UNION ALL BY NAME
                    SELECT f.* FROM read_parquet($path) AS f SEMI JOIN ({carried_ok}) USING (partition_key, record_id)
                    WHERE f.partition_key <> $p
                    """,
                {**key, "path": str(predictions)},
            ).fetchall()
            self._unarchive_current(con, run)
            [(run_failed,)] = con.execute(
                f"""
                    INSERT INTO prediction_errors BY NAME
                    SELECT f.partition_key, f.record_id, f.error, coalesce(c.attempt, 0) + 1 AS attempt,
                           coalesce(c.attempt, 0) + 1 >= $max_attempts AS dead,
                           f.attempted_in_partition, f.run_id, f.failed_at
                    FROM read_parquet($path) AS f LEFT JOIN prior AS c USING (partition_key, record_id)
                    WHERE f.partition_key = $p
                       OR (f.partition_key, f.record_id) IN ({carried_ok})
                    """,
                {**key, "path": str(errors), "max_attempts": run.max_attempts},
            ).fetchall()
            completeness = self._completeness(con, run.partition_key)
            if not completeness.passed and run.mode == "retry_failed":
                # Outcomes of records that left the partition's inputs when it was re-snapshotted.
                for table in ("predictions", "prediction_errors"):
                    con.execute(
                        f"""
                            DELETE FROM {table} AS t WHERE t.partition_key = $p AND NOT EXISTS (
                                SELECT 1 FROM inputs AS i
                                WHERE i.partition_key = t.partition_key AND i.record_id = t.record_id)
                            """,
                        key,
                    )
                completeness = self._completeness(con, run.partition_key)
            [(succeeded, failed, dead, carried_in)] = con.execute(
                f"""
                    SELECT (SELECT count(*) FROM predictions WHERE partition_key = $p),
                           (SELECT count(*) FROM prediction_errors WHERE partition_key = $p),
                           (SELECT count(*) FROM prediction_errors WHERE partition_key = $p AND dead),
                           (SELECT count(*) FROM ({carried_ok}))
                    """,
                key,
            ).fetchall()
            result = PublishResult(
                completeness=completeness,
                succeeded=int(succeeded),
                failed=int(failed),
                dead=int(dead),
                carried_in=int(carried_in),
                run_predicted=int(run_predicted),
                run_failed=int(run_failed),
            )
            rate = result.run_predicted / run.wall_seconds if run.wall_seconds > 0 else None
            con.execute("DELETE FROM prediction_stats WHERE partition_key = $p", key)
            con.execute(
                """
                    INSERT INTO prediction_stats BY NAME SELECT
                        $p AS partition_key, $mode AS mode, $valid_inputs AS valid_inputs,
                        $succeeded AS succeeded, $failed AS failed, $dead AS dead,
                        (SELECT coalesce(max(rejected_rows), 0) FROM input_stats WHERE partition_key = $p) AS rejected,
                        $carried_in AS carried_in, $run_predicted AS run_predicted, $run_failed AS run_failed,
                        $model_name AS model_name, $model_version AS model_version, $run_id AS run_id,
                        now() AS completed_at, $wall_seconds AS wall_seconds, $rate AS rows_per_second,
                        $passed AS every_input_predicted
                    """,
                {
                    **key,
                    "mode": run.mode,
                    "valid_inputs": completeness.valid_inputs,
                    "succeeded": result.succeeded,
                    "failed": result.failed,
                    "dead": result.dead,
                    "carried_in": result.carried_in,
                    "run_predicted": result.run_predicted,
                    "run_failed": result.run_failed,
                    "model_name": run.model_name,
                    "model_version": run.model_version,
                    "run_id": run.run_id,
                    "wall_seconds": run.wall_seconds,
                    "rate": rate,
                    "passed": completeness.passed,
                },
            )
        return result

    @staticmethod
    def _archive(con: duckdb.DuckDBPyConnection, run: PredictionRun, scope: str, params: dict[str, Any]) -> None:
        """Copy the predictions about to be replaced (`scope`, over `predictions AS t`) that another model
        version made into `predictions_history`.

        History keeps, per partition, record and version, that version's latest superseded
        prediction: archiving it again replaces the earlier copy. `_unarchive_current` then
        drops the copies that a run made current again (a rollback to an earlier version).
        """
        Warehouse._archive_rows(
            con,
            f"({scope}) AND t.model_version IS DISTINCT FROM $version",
            {**params, "version": run.model_version},
            run.run_id,
        )

    @staticmethod
    def _archive_rows(con: duckdb.DuckDBPyConnection, scope: str, params: dict[str, Any], run_id: str) -> int:
        """Copy the predictions in `scope` (over `predictions AS t`) into `predictions_history`, superseded
        by `run_id`, replacing an earlier copy of the same partition, record and version. Returns how many."""
        have = {row[0] for row in con.execute("SELECT column_name FROM (DESCRIBE predictions_history)").fetchall()}
        for name, kind in con.execute("SELECT column_name, column_type FROM (DESCRIBE predictions)").fetchall():
            if name not in have:  # a class of an earlier model, in a warehouse made before history existed
                con.execute(f"ALTER TABLE predictions_history ADD COLUMN {_ident(name)} {kind}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE leaving AS SELECT * FROM predictions AS t WHERE {scope}", params)
        con.execute(
            """
            DELETE FROM predictions_history AS h USING leaving AS l
            WHERE h.partition_key = l.partition_key AND h.record_id = l.record_id AND h.model_version = l.model_version
            """
        )
        [(archived,)] = con.execute(
            """
            INSERT INTO predictions_history BY NAME
            SELECT *, now() AS superseded_at, $run_id AS superseded_by_run FROM leaving
            """,
            {"run_id": run_id},
        ).fetchall()
        return int(archived)

    @staticmethod
    def _unarchive_current(con: duckdb.DuckDBPyConnection, run: PredictionRun) -> None:
        """Drop history copies of predictions this run made current again (same record, same version)."""
        con.execute(
            """
            DELETE FROM predictions_history AS h USING predictions AS p
            WHERE p.run_id = $run_id AND h.partition_key = p.partition_key AND h.record_id = p.record_id
              AND h.model_version = p.model_version
            """,
            {"run_id": run.run_id},
        )

    def model_versions(self) -> dict[str, list[str]]:
        """Per partition with predictions (or a prediction run), the model versions that made them.

        A partition whose every record failed has no prediction rows; its last run's
        version stands for it.
        """
        if not self.path.exists():
            return {}
        with self.connect(read_only=True) as con:
            rows = con.execute(
                """
                SELECT s.partition_key, coalesce(p.versions, [s.model_version])
                FROM prediction_stats AS s
                LEFT JOIN (SELECT partition_key, list(DISTINCT model_version ORDER BY model_version) AS versions
                           FROM predictions GROUP BY ALL) AS p USING (partition_key)
                ORDER BY s.partition_key
                """
            ).fetchall()
        return {key: [str(v) for v in versions] for key, versions in rows}

    # -- labels, training data, realized quality --------------------------------------------

    def load_labels(self, source: Source, label_column: str) -> LabelStats:
        """Replace the `labels` table with the label files' rows, one label per record id.

        Every row read is accounted for: kept, missing its record id or label, or
        superseded by a later file's label for the same record (files are read in path
        order, so a correction delivered later wins).
        """
        id_column = self.contract.id_column
        if not source.root.is_dir():
            raise SourceError(
                f"The labels folder {source.root} does not exist. Put label files there (columns {id_column}, "
                f"{label_column}; `batch-predict demo-data` writes demo labels), or set BATCH_PREDICT_LABELS."
            )
        relation = self._source_relation(source)
        with self.connect() as con:
            try:
                described = con.execute(f"DESCRIBE SELECT * FROM {relation}", {"pattern": source.pattern}).fetchall()
            except duckdb.Error as error:
                raise SourceError(
                    f"Cannot read the label files {source.pattern}: {str(error).splitlines()[0]}. "
                    "Add label files, fix or remove the unreadable one, or set BATCH_PREDICT_LABELS."
                ) from error
            types = {row[0]: str(row[1]) for row in described}
            for name, setting in ((id_column, "BATCH_PREDICT_ID_COLUMN"), (label_column, "BATCH_PREDICT_LABEL_COLUMN")):
                if name not in types:
                    raise SourceError(
                        f"The label files {source.pattern} have no column {name}. They need the record id "
                        f"({id_column}) and the label ({label_column}); set {setting} to the right column."
                    )
            # Ids as the inputs have them; a label row whose id is no integer counts as incomplete.
            record_id, non_integer_id = record_id_sql(_ident(id_column))
            label = _ident(label_column)
            if types[label_column] in ("DOUBLE", "FLOAT"):
                # 1.0 is the label 1 (pandas writes integer labels with a NULL among them as floats).
                label = f"CASE WHEN {label} = floor({label}) THEN CAST(CAST({label} AS BIGINT) AS VARCHAR) ELSE CAST({label} AS VARCHAR) END"
            with _transaction(con):
                # Complete rows are ranked per record: the newest file wins, and in it the last row.
                con.execute(
                    f"""
                    CREATE OR REPLACE TEMP TABLE label_rows AS
                    SELECT record_id, label, source_file,
                           CASE WHEN record_id IS NULL OR label IS NULL THEN NULL ELSE row_number() OVER (
                               PARTITION BY record_id, record_id IS NULL OR label IS NULL
                               ORDER BY source_file DESC, file_row_number DESC) END AS newest
                    FROM (SELECT CASE WHEN {non_integer_id} THEN NULL ELSE {record_id} END AS record_id,
                                 CAST({label} AS VARCHAR) AS label,
                                 filename AS source_file, file_row_number
                          FROM read_parquet($pattern, union_by_name = true, filename = true,
                                            file_row_number = true, hive_partitioning = false))
                    """,
                    {"pattern": source.pattern},
                )
                con.execute(
                    """
                    CREATE OR REPLACE TABLE labels AS
                    SELECT record_id, label, source_file, now() AS loaded_at FROM label_rows
                    WHERE record_id IS NOT NULL AND label IS NOT NULL AND newest = 1
                    """
                )
                [(read, kept, incomplete)] = con.execute(
                    """
                    SELECT count(*), (SELECT count(*) FROM labels),
                           count(*) FILTER (WHERE record_id IS NULL OR label IS NULL)
                    FROM label_rows
                    """
                ).fetchall()
                self._record_quality(con)
        return LabelStats(
            rows=int(read), kept=int(kept), incomplete=int(incomplete), superseded=int(read - kept - incomplete)
        )

    def _record_quality(self, con: duckdb.DuckDBPyConnection, partition_key: str | None = None) -> None:
        """Realized quality per partition and model version, from the predictions whose labels have arrived.

        All partitions, or only `partition_key`. Accuracy counts a label the model does not
        know as wrong; log-loss leaves such rows out, with probabilities clipped to
        [eps, 1 - eps] as scikit-learn does.
        """
        columns = {row[0] for row in con.execute("SELECT column_name FROM (DESCRIBE predictions)").fetchall()}
        labels = [row[0] for row in con.execute("SELECT DISTINCT label FROM labels ORDER BY 1").fetchall()]
        known = {label: probability_column(label) for label in labels if probability_column(label) in columns}
        true_proba = (
            "CASE l.label " + " ".join(f"WHEN {_literal(k)} THEN p.{_ident(c)}" for k, c in known.items()) + " END"
            if known
            else "CAST(NULL AS DOUBLE)"
        )
        eps = float(np.finfo(np.float64).eps)
        params = {"p": partition_key}
        con.execute("DELETE FROM prediction_quality WHERE $p IS NULL OR partition_key = $p", params)
        con.execute(
            f"""
            INSERT INTO prediction_quality
            SELECT p.partition_key, p.model_version, count(*) AS labelled,
                   avg(CAST(p.prediction = l.label AS DOUBLE)) AS accuracy,
                   -avg(ln(greatest(least({true_proba}, 1 - {eps!r}), {eps!r})))
                       FILTER (WHERE ({true_proba}) IS NOT NULL) AS log_loss,
                   count(*) FILTER (WHERE ({true_proba}) IS NULL) AS unknown_labels,
                   now() AS computed_at
            FROM predictions AS p JOIN labels AS l USING (record_id)
            WHERE $p IS NULL OR p.partition_key = $p
            GROUP BY ALL ORDER BY ALL
            """,
            params,
        )

    def refresh_quality(self, partition_key: str) -> dict[str, Any] | None:
        """Recompute one partition's realized quality (if labels were loaded) and return it for its newest version."""
        with self.connect() as con:
            if not self._has_table(con, "labels"):
                return None
            with _transaction(con):
                self._record_quality(con, partition_key)
            cursor = con.execute(
                """
                SELECT q.* FROM prediction_quality AS q JOIN prediction_stats AS s USING (partition_key, model_version)
                WHERE q.partition_key = $p
                """,
                {"p": partition_key},
            )
            names = [column[0] for column in cursor.description]
            row = cursor.fetchone()
        return dict(zip(names, row, strict=True)) if row else None

    def drifted(self) -> dict[str, list[str]]:
        """Per partition, the distributions whose latest drift measurement passed its threshold."""
        with self.connect(read_only=True) as con:
            if not self._has_table(con, "prediction_drift"):
                return {}
            rows = con.execute(
                "SELECT partition_key, list(name ORDER BY kind, name) FROM prediction_drift WHERE drifted GROUP BY ALL"
            ).fetchall()
        return {key: list(names) for key, names in rows}

    def prediction_quality(self) -> list[dict[str, Any]]:
        """Realized accuracy and log-loss per partition and model version, newest partition first."""
        with self.connect(read_only=True) as con:
            cursor = con.execute(
                "SELECT * FROM prediction_quality ORDER BY partition_key DESC, model_version"
                if self._has_table(con, "prediction_quality")
                else "SELECT NULL WHERE false"
            )
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @staticmethod
    def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
        found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()
        return bool(found and found[0])

    def newest_labelled_event(self) -> datetime | None:
        """The event time of the newest valid input that has a label."""
        with self.connect() as con:
            if not self._has_table(con, "labels"):
                return None
            row = con.execute("SELECT max(i.event_time) FROM inputs AS i JOIN labels USING (record_id)").fetchone()
        return row[0] if row else None

    def build_training_set(self, train_start: datetime, holdout_start: datetime, end: datetime) -> dict[str, int]:
        """Replace `training_set` with the labelled valid inputs of [train_start, end), split at holdout_start."""
        features = ", ".join(f"i.{_ident(f)}" for f in self.contract.features)
        with self.connect() as con:
            con.execute(
                f"""
                CREATE OR REPLACE TABLE training_set AS
                SELECT i.partition_key, i.record_id, i.event_time, {features}, l.label,
                       CASE WHEN i.event_time < $holdout THEN 'train' ELSE 'holdout' END AS split
                FROM inputs AS i JOIN labels AS l USING (record_id)
                WHERE i.event_time >= $start AND i.event_time < $end
                ORDER BY i.event_time
                """,
                {"start": train_start, "holdout": holdout_start, "end": end},
            )
            rows = con.execute("SELECT split, count(*) FROM training_set GROUP BY ALL").fetchall()
        return {"train": 0, "holdout": 0, **{split: int(n) for split, n in rows}}

    def training_set(self) -> pd.DataFrame:
        with self.connect(read_only=True) as con:
            if not self._has_table(con, "training_set"):
                raise WarehouseError("There is no training_set table yet: materialize the training_set asset first.")
            return con.execute("SELECT * FROM training_set ORDER BY event_time").df()

    # -- drift ------------------------------------------------------------------------------

    def feature_bin_counts(self, partition_key: str, edges: dict[str, list[float]]) -> dict[str, dict[int, int]]:
        """Per feature, how many of the partition's valid inputs fall in each bin of `edges` (right-closed).

        One scan of the partition: each feature's bin is a column, grouped by grouping sets.
        """
        if not edges:
            return {}
        names = list(edges)
        bins = ", ".join(f"{bin_index_sql(_ident(name), edges[name])} AS b{i}" for i, name in enumerate(names))
        sets = ", ".join(f"(b{i})" for i in range(len(names)))
        columns = ", ".join(f"b{i}" for i in range(len(names)))
        flags = ", ".join(f"GROUPING(b{i})" for i in range(len(names)))
        with self.connect(read_only=True) as con:
            rows = con.execute(
                f"""
                SELECT {columns}, [{flags}] AS grouped_out, count(*)
                FROM (SELECT {bins} FROM inputs WHERE partition_key = $p)
                GROUP BY GROUPING SETS ({sets})
                """,
                {"p": partition_key},
            ).fetchall()
        counts: dict[str, dict[int, int]] = {name: {} for name in names}
        for row in rows:
            *values, grouped_out, n = row
            for i, name in enumerate(names):
                if not grouped_out[i] and values[i] is not None:
                    counts[name][int(values[i])] = int(n)
        return counts

    def prediction_counts(
        self, partition_key: str, probability_columns: Sequence[str], score_edges: Sequence[float], model_version: str
    ) -> PredictionCounts:
        """The partition's predictions per class and per bin of the top-class probability (one scan), and
        the predictions per class of the newest earlier partition whose last run used the same model version
        (comparing two models' predictions would flag the model change, not drift)."""
        score = "greatest(" + ", ".join(_ident(c) for c in probability_columns) + ")"
        with self.connect(read_only=True) as con:
            rows = con.execute(
                f"""
                SELECT prediction, bin, GROUPING(prediction) AS by_bin, count(*)
                FROM (SELECT prediction, {bin_index_sql(score, score_edges)} AS bin
                      FROM predictions WHERE partition_key = $p)
                GROUP BY GROUPING SETS ((prediction), (bin))
                """,
                {"p": partition_key},
            ).fetchall()
            [(previous,)] = con.execute(
                "SELECT max(partition_key) FROM prediction_stats WHERE partition_key < $p AND model_version = $v",
                {"p": partition_key, "v": model_version},
            ).fetchall()
            before = (
                con.execute(
                    "SELECT prediction, count(*) FROM predictions WHERE partition_key = $p GROUP BY ALL",
                    {"p": previous},
                ).fetchall()
                if previous is not None
                else []
            )
        return PredictionCounts(
            classes={str(label): int(n) for label, _, by_bin, n in rows if not by_bin},
            score_bins={int(b): int(n) for _, b, by_bin, n in rows if by_bin and b is not None},
            previous_partition=previous,
            previous_classes={str(label): int(n) for label, n in before},
        )

    def record_drift(self, partition_key: str, model_version: str, rows: list[dict[str, Any]]) -> None:
        """Replace the partition's drift results in `prediction_drift`."""
        with self.connect() as con, _transaction(con):
            con.execute("DELETE FROM prediction_drift WHERE partition_key = $p", {"p": partition_key})
            for row in rows:
                con.execute(
                    """
                        INSERT INTO prediction_drift VALUES
                            ($p, $version, $kind, $name, $psi, $threshold, $n, $n_reference, $drifted, now())
                        """,
                    {"p": partition_key, "version": model_version, **row},
                )

    def _completeness(self, con: duckdb.DuckDBPyConnection, partition_key: str) -> Completeness:
        """Compare the partition's inputs with its outcomes (predictions plus recorded errors).

        The common case is decided by streaming aggregates, in constant memory: the two
        multisets of record ids are equal when their counts and their sums of 64-bit hashes
        are. Only when they differ are the joins run that say what is missing or doubled.
        """
        params = {"p": partition_key}
        [(inputs, input_hashes, outcomes, outcome_hashes)] = con.execute(
            """
            SELECT (SELECT count(*) FROM inputs WHERE partition_key = $p),
                   (SELECT coalesce(sum(hash(record_id)), 0) FROM inputs WHERE partition_key = $p),
                   count(*), coalesce(sum(hash(record_id)), 0)
            FROM (SELECT record_id FROM predictions WHERE partition_key = $p
                  UNION ALL SELECT record_id FROM prediction_errors WHERE partition_key = $p)
            """,
            params,
        ).fetchall()
        if inputs == outcomes and input_hashes == outcome_hashes:
            return Completeness(int(inputs), int(outcomes), 0, 0, 0)
        row = con.execute(
            """
            WITH i AS (SELECT record_id FROM inputs WHERE partition_key = $p),
                 o AS (SELECT record_id, count(*) AS n FROM (
                           SELECT record_id FROM predictions WHERE partition_key = $p
                           UNION ALL
                           SELECT record_id FROM prediction_errors WHERE partition_key = $p)
                       GROUP BY record_id)
            SELECT (SELECT count(*) FROM i),
                   (SELECT coalesce(sum(n), 0) FROM o),
                   (SELECT count(*) FROM i ANTI JOIN o USING (record_id)),
                   (SELECT coalesce(sum(n - 1), 0) FROM o),
                   (SELECT count(*) FROM o ANTI JOIN i USING (record_id))
            """,
            params,
        ).fetchone()
        assert row is not None
        return Completeness(*(int(value) for value in row))

    def completeness(self, partition_key: str) -> Completeness:
        with self.connect(read_only=True) as con:
            return self._completeness(con, partition_key)

    def input_snapshot(self, partition_key: str) -> str:
        """An id of the partition's current input snapshot: the run that took it, and when."""
        with self.connect() as con:
            row = con.execute(
                "SELECT run_id || '@' || CAST(loaded_at AS VARCHAR) FROM input_stats WHERE partition_key = ?",
                [partition_key],
            ).fetchone()
        return str(row[0]) if row else "none"

    def deliveries(self, partition_keys: Sequence[str]) -> dict[str, tuple[datetime | None, bool | None]]:
        """Per partition: when its predictions were last published, and whether the outcomes stored
        now cover the inputs stored now (None when it was never published). A partition snapshotted
        again after its publish, with records that have no outcome yet, is not covered."""
        if not self.path.exists():
            return {}
        with self.connect(read_only=True) as con:
            if not self._has_table(con, "prediction_stats"):
                return {}
            rows = con.execute(
                f"""
                WITH keys AS (SELECT unnest(CAST($keys AS VARCHAR[])) AS partition_key),
                {_coverage_sql()}
                SELECT k.partition_key, s.completed_at,
                       CASE WHEN s.partition_key IS NOT NULL THEN c.covered END
                FROM keys AS k JOIN coverage AS c USING (partition_key)
                LEFT JOIN prediction_stats AS s USING (partition_key)
                """,
                {"keys": list(partition_keys)},
            ).fetchall()
        return {key: (completed_at, covered) for key, completed_at, covered in rows}

    def prediction_errors(self, partition_key: str | None, dead_only: bool, limit: int) -> list[dict[str, Any]]:
        """Rows of the error ledger, newest failure first."""
        with self.connect(read_only=True) as con:
            cursor = con.execute(
                """
                SELECT partition_key, record_id, attempt, dead, attempted_in_partition, error, run_id, failed_at
                FROM prediction_errors
                WHERE ($partition_key IS NULL OR partition_key = $partition_key) AND (NOT $dead_only OR dead)
                ORDER BY failed_at DESC, partition_key, record_id
                LIMIT $limit
                """,
                {"partition_key": partition_key, "dead_only": dead_only, "limit": limit},
            )
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def most_common_error(self, partition_key: str, run_id: str) -> tuple[str, int] | None:
        """The error that the run's prediction of a partition recorded most often, and for how many records.

        Chunks resumed from a run that died carry that run's id, so if this run recorded
        none, the partition's ledger rows attempted in it answer instead.
        """
        query = """
            SELECT error, count(*) AS n FROM prediction_errors
            WHERE attempted_in_partition = $p AND ($run IS NULL OR run_id = $run)
            GROUP BY error ORDER BY n DESC, error LIMIT 1
        """
        with self.connect(read_only=True) as con:
            row = con.execute(query, {"p": partition_key, "run": run_id}).fetchone()
            if row is None:
                row = con.execute(query, {"p": partition_key, "run": None}).fetchone()
        return (str(row[0]), int(row[1])) if row else None

    def partition_status(self, last: int) -> list[dict[str, Any]]:
        """One dict per partition that has inputs or predictions, newest first, with live ledger counts.

        `predictions` and `failed` count the partition's own records wherever they were
        predicted; `carried_in` counts earlier partitions' records that this partition's
        run predicted or failed, `carried_out` this partition's records predicted by a
        later partition's run. For every partition: source_rows = rejected + predictions + failed.
        `every_input_predicted` compares the inputs and outcomes stored now (None if never
        published), so a snapshot taken after the last publish counts.
        """
        with self.connect(read_only=True) as con:
            cursor = con.execute(
                f"""
                WITH keys AS (
                    SELECT partition_key FROM input_stats UNION SELECT partition_key FROM prediction_stats
                    ORDER BY partition_key DESC LIMIT $last
                ),
                {_coverage_sql()},
                own AS (
                    SELECT partition_key, count(*) AS n,
                           count(*) FILTER (WHERE predicted_in_partition <> partition_key) AS carried_out
                    FROM predictions SEMI JOIN keys USING (partition_key) GROUP BY ALL
                ),
                failures AS (
                    SELECT partition_key, count(*) AS n, count(*) FILTER (WHERE dead) AS dead
                    FROM prediction_errors SEMI JOIN keys USING (partition_key) GROUP BY ALL
                ),
                carried AS (
                    SELECT attempted AS partition_key, count(*) AS n FROM (
                        SELECT predicted_in_partition AS attempted FROM predictions
                        WHERE predicted_in_partition <> partition_key
                        UNION ALL
                        SELECT attempted_in_partition FROM prediction_errors
                        WHERE attempted_in_partition <> partition_key)
                    GROUP BY ALL
                )
                SELECT k.partition_key, i.window_start, i.window_end, i.source_rows, i.valid_rows AS inputs,
                       i.rejected_rows AS rejected, i.rejected_by_reason,
                       coalesce(own.n, 0) AS predictions, coalesce(failures.n, 0) AS failed,
                       coalesce(failures.dead, 0) AS dead, coalesce(carried.n, 0) AS carried_in,
                       coalesce(own.carried_out, 0) AS carried_out, s.mode,
                       s.model_name, s.model_version, coalesce(s.run_id, i.run_id) AS run_id,
                       coalesce(s.completed_at, i.loaded_at) AS updated_at,
                       s.completed_at, CASE WHEN s.partition_key IS NOT NULL THEN cov.covered END
                           AS every_input_predicted, s.rows_per_second
                FROM keys AS k
                JOIN coverage AS cov USING (partition_key)
                LEFT JOIN input_stats AS i USING (partition_key)
                LEFT JOIN prediction_stats AS s USING (partition_key)
                LEFT JOIN own USING (partition_key)
                LEFT JOIN failures USING (partition_key)
                LEFT JOIN carried USING (partition_key)
                ORDER BY k.partition_key DESC
                """,
                {"last": last},
            )
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
