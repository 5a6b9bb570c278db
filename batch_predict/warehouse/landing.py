"""The landing files, read by the in-process DuckDB engine: checked against the feature contract, each
row classified (valid, rejected with its reason, or unplaced), whatever backend stores the result.

Values (paths, partition keys, times) are bound as parameters; column names come from the
validated feature contract and are quoted with `ident`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import duckdb

from batch_predict import contract as rules
from batch_predict.contract import FeatureContract
from batch_predict.warehouse.sql import ident, literal, out_of_range_rule, record_id_sql
from batch_predict.warehouse.types import SourceError

# A landing file changed this recently is read again rather than trusted to be what was staged.
RACY_SECONDS = 2
READERS = {".parquet": "read_parquet", ".csv": "read_csv", ".json": "read_json", ".jsonl": "read_json"}

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
# What a landing engine did on which files (a step and the fingerprint of the files, see `Landing.stage`).
_DONE_TABLE = "CREATE TEMP TABLE IF NOT EXISTS landing_done (step VARCHAR PRIMARY KEY, fingerprint VARCHAR)"
# Where DuckDB's message gives the line of a bad CSV row.
_LINE_IN_MESSAGE = re.compile(r"\bline:?\s*(\d+)", re.IGNORECASE)


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


class Landing:
    """Reads a source's files for one feature contract on a DuckDB engine connection."""

    def __init__(self, contract: FeatureContract) -> None:
        self.contract = contract
        # The column types `_check` read, by the fingerprint of the files it read them from.
        self._described: dict[str, dict[str, str]] = {}

    def source_relation(self, source: Source) -> str:
        return f"{source.reader}($pattern, union_by_name = true, filename = true, hive_partitioning = false)"

    def landing_relation(self, source: Source) -> str:
        """The landing files as one table, with each row's file and, for Parquet, its row number in the file.

        The file column has a private name, so a source column called `filename` is just
        another column. CSV is read as text: every value is cast row by row, so a bad value
        is its record's outcome (a rejection, or an unplaced event time), wherever it sits in
        the file, and never a failure of the whole read.
        """
        options = f"union_by_name = true, filename = {literal(SOURCE_FILE_COLUMN)}, hive_partitioning = false"
        if source.reader == "read_parquet":
            options += ", file_row_number = true"
        elif source.reader == "read_csv":
            # Quoting is standard CSV, not sniffed: the sniffer samples the first rows only, and a
            # quoted field after them would otherwise break the whole read.
            options += """, all_varchar = true, quote = '"', escape = '"'"""
        return f"{source.reader}($pattern, {options})"

    def source_files(self, con: Any, source: Source) -> list[str]:
        """The files the source glob matches now, as DuckDB names them in the file column."""
        rows = con.execute("SELECT file FROM glob($pattern) ORDER BY 1", {"pattern": source.pattern}).fetchall()
        return [row[0] for row in rows]

    def _read_failure(self, con: Any, source: Source, error: duckdb.Error) -> Exception:
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
            files = self.source_files(con, source)
        except duckdb.Error:
            files = []
        named = [path for path in files if path in text]
        culprit = named[0] if named else self._first_unreadable(con, source, files)
        if culprit is None and not isinstance(error, _DATA_ERRORS):
            return error  # every file reads on its own, and DuckDB did not blame the data: not a data error
        # A line number means something in a text file only (DuckDB says "line 1" of a Parquet file too).
        found = _LINE_IN_MESSAGE.search(text) if source.reader != "read_parquet" else None
        line = found.group(1) if found else None
        if culprit is not None and culprit.lower().endswith(".jsonl"):
            # DuckDB counts a JSON file's lines from the wrong end of a newline: find the record that does not parse.
            line = _first_bad_json_line(Path(culprit)) or line
        where = ""
        if culprit is not None:
            where = f"The unreadable file is {culprit}" + (f", line {line}. " if line else ". ")
        return SourceError(
            f"Cannot read the source files {source.pattern} with {source.reader}: {first}. {where}Move the "
            "unreadable file out of the landing folder (or fix it) and rerun the partition; nothing was written."
        )

    def raise_read_failure(self, con: Any, source: Source, error: duckdb.Error) -> NoReturn:
        failure = self._read_failure(con, source, error)
        if failure is error:
            raise error
        raise failure from error

    def _first_unreadable(self, con: Any, source: Source, files: list[str]) -> str | None:
        """The first file that fails when read on its own, every column of every row."""
        for path in files:
            try:
                con.execute(f"SELECT bit_xor(hash(s)) FROM {self.landing_relation(source)} AS s", {"pattern": path})
            except duckdb.Error:
                return path
        return None

    def check_source(self, con: Any, source: Source) -> list[str]:
        """Fail with a clear message unless the source files can be read and hold the contract's columns;
        return the files the source matches (as `source_files` names them).

        Files this connection checked already, unchanged since, are not checked again.
        """
        if not source.root.is_dir():
            raise SourceError(
                f"The landing folder {source.root} does not exist. Create it and put source files in it "
                "(`batch-predict demo-data` writes demo records), or set BATCH_PREDICT_LANDING."
            )
        try:
            paths: list[str] | None = self.source_files(con, source)
        except duckdb.Error:
            paths = None  # the check below says what is wrong
        files = self._fingerprint(con, source, paths) if paths is not None else ""
        if not (files and self._done(con, "checked", files)):
            columns = self._check(con, source)
            if files:
                self._record(con, "checked", files)
                self._described = {files: columns}
        return self.source_files(con, source) if paths is None else paths

    def _check(self, con: Any, source: Source) -> dict[str, str]:
        try:
            described = con.execute(
                f"DESCRIBE SELECT * FROM {self.landing_relation(source)}", {"pattern": source.pattern}
            )
            columns = {row[0]: str(row[1]) for row in described.fetchall()}
        except duckdb.Error as error:
            if "no files found" in str(error).lower():
                raise SourceError(
                    f"No source files match {source.pattern}. Put files there, or set "
                    "BATCH_PREDICT_LANDING / BATCH_PREDICT_SOURCE_GLOB to where they are."
                ) from error
            self.raise_read_failure(con, source, error)
        c = self.contract
        if source.reader == "read_csv":
            self._check_csv_dialect(con, source, columns)
        self._check_name_case(con, source, columns)
        if source.reader == "read_parquet":  # Parquet files are checked one by one, naming each that does not fit
            self._check_parquet_files(con, source)
        missing = [name for name in c.required_columns if name not in columns]
        if missing:
            raise SourceError(
                f"The source files {source.pattern} have no column(s) {_listed(missing)} in any file; "
                f"the feature contract needs {_listed(c.required_columns)}. Fix the files, "
                "or set BATCH_PREDICT_ID_COLUMN / BATCH_PREDICT_TIME_COLUMN / BATCH_PREDICT_FEATURES to match them "
                "(CSV readers drop spaces around header names)."
            )
        time_type = columns[c.time_column]
        # Text is parsed row by row: a value that is not a time leaves only its record unplaced. So is a JSON
        # column (JSON files whose event times are of several types): a value that is no string is unplaced.
        if not (time_type.startswith("TIMESTAMP") or time_type in ("DATE", "VARCHAR", "JSON")):
            raise SourceError(
                f"The event-time column {c.time_column} of {source.pattern} reads as {time_type}, not a timestamp, "
                "so its records cannot be placed in partitions. Write it as a timestamp (ISO 8601 text in CSV), "
                "or set BATCH_PREDICT_TIME_COLUMN to the right column."
            )
        return columns

    def _check_csv_dialect(self, con: Any, source: Source, columns: dict[str, str]) -> None:
        """Name the CSV files DuckDB read as one column, the whole header line its name.

        DuckDB detects a file's delimiter from its first rows; a row there with more or fewer fields
        than the header leaves it none, and the file reads as one column. Its rows would then lack
        every contract column (and go unplaced), or the file alone would seem to lack the columns.
        """
        merged = [name for name in columns if _header_line(name, self.contract.required_columns)]
        if not merged:
            return
        problems = []
        for path, described in self._each_file_described(con, source):
            header = next((row[0] for row in described if row[0] in merged), None)
            if header is not None and len(described) <= 2:  # the one column, and the file column
                delimiter = _header_line(header, self.contract.required_columns) or ","
                problems.append(f"{path} ({_ragged_line(Path(path), delimiter)})")
        if not problems:
            return  # a column merely named like a header line, in files whose columns DuckDB did tell apart
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise SourceError(
            f"Cannot tell the columns of the CSV file(s) {shown}: DuckDB reads each as "
            "one column named by its whole header line, because a row near the top has more or fewer fields than "
            "the header, so no delimiter fits. Fix or remove that row (or move the file out of the landing folder) "
            "and rerun the partition; nothing was written."
        )

    def _each_file_described(self, con: Any, source: Source) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        """Each source file with its columns as DuckDB reads it alone (`DESCRIBE` rows); a file that does not
        read is left out (the read of all files says why)."""
        for path in self.source_files(con, source):
            try:
                yield (
                    path,
                    con.execute(
                        f"DESCRIBE SELECT * FROM {self.landing_relation(source)}", {"pattern": path}
                    ).fetchall(),
                )
            except duckdb.Error:
                continue

    def _check_name_case(self, con: Any, source: Source, columns: dict[str, str]) -> None:
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
        for path, described in self._each_file_described(con, source):
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

    def _check_parquet_files(self, con: Any, source: Source) -> None:
        """Name every Parquet file that lacks a contract column or gives one a type it cannot have."""
        c = self.contract
        try:
            rows = con.execute(
                "SELECT file_name, name, type, converted_type, logical_type FROM parquet_schema($pattern)",
                {"pattern": source.pattern},
            ).fetchall()
        except duckdb.Error as error:
            self.raise_read_failure(con, source, error)
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

    def stage(self, con: Any, source: Source, params: dict[str, Any], paths: list[str] | None = None) -> None:
        """Make the engine's tables for the partition being snapshotted: `window_rows`, every landing row
        whose event time falls in its window; `window_ids`, the window's record ids, whose copies other
        partitions store decide who keeps each id too; and `unplaced_rows`, every row whose event time places
        it in no partition.
        Each row has its record id, event time, cast features, `unplaced` (the reason its event time places
        it in no partition, else NULL) and `in_window`.

        Every snapshot reads every landing file (the records in no partition are counted, and the windows
        of the partitions snapshotted before are checked for late files). So the rows are read once into
        `landing_all`, and a later snapshot on the same connection (a run of many partitions) reads them
        from there while the files matched, their sizes and modification times, and the placeable range
        are what they were. A window then reads the rows whose event time falls in it (a scan of one
        column; where the files come in time order DuckDB skips row groups by their bounds).

        `params`: pattern, window_start, window_end, placeable_start, placeable_end; `paths`: the files the
        source matched a moment ago, if the caller has them.
        """
        paths = self.source_files(con, source) if paths is None else paths
        files = self._fingerprint(con, source, paths)
        placeable = f"{params['placeable_start']}|{params['placeable_end']}|{files}"
        if not (files and self._done(con, "staged", placeable)):
            self._stage_all(con, source, params, self._described.get(files))
            # The rows are what the glob matched when they were read: reusable only if that is still the
            # list fingerprinted (a file that came or went meanwhile is read again next time).
            if files and self.source_files(con, source) == paths:
                self._record(con, "staged", placeable)
            else:
                self._forget(con, "staged")
        start, end = _timestamp(params["window_start"]), _timestamp(params["window_end"])
        window = f"event_time >= {start} AND event_time < {end}"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE window_rows AS SELECT *, true AS in_window FROM landing_all WHERE {window}"
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE window_ids AS "
            "SELECT DISTINCT record_id FROM window_rows WHERE record_id IS NOT NULL"
        )
        con.execute(
            "CREATE OR REPLACE TEMP VIEW unplaced_rows AS "
            f"SELECT *, coalesce({window}, false) AS in_window FROM landing_unplaced"
        )

    def _fingerprint(self, con: Any, source: Source, paths: list[str] | None = None) -> str:
        """The files the source matches now (or `paths`), each with its size, inode and change times; ''
        (nothing to reuse) if there are none, one is unreadable, or one changed within the last RACY_SECONDS
        (a file rewritten within a time stamp's resolution could keep its times)."""
        try:
            stats = [(path, os.stat(path)) for path in (self.source_files(con, source) if paths is None else paths)]
        except (duckdb.Error, OSError):
            return ""
        now = time.time_ns()
        if any(now - max(stat.st_mtime_ns, stat.st_ctime_ns) < RACY_SECONDS * 1e9 for _, stat in stats):
            return ""
        return "\n".join(
            f"{path}|{stat.st_size}|{stat.st_ino}|{stat.st_mtime_ns}|{stat.st_ctime_ns}" for path, stat in stats
        )

    def _done(self, con: Any, step: str, fingerprint: str) -> bool:
        """Whether this connection did `step` on exactly these files."""
        try:
            row = con.execute("SELECT fingerprint FROM landing_done WHERE step = $step", {"step": step}).fetchone()
        except duckdb.CatalogException:
            return False
        return row is not None and row[0] == fingerprint

    def _forget(self, con: Any, step: str) -> None:
        """Whatever this connection did `step` on is no longer what it holds."""
        con.execute(_DONE_TABLE)
        con.execute("DELETE FROM landing_done WHERE step = $step", {"step": step})

    def _record(self, con: Any, step: str, fingerprint: str) -> None:
        con.execute(_DONE_TABLE)
        con.execute(
            "INSERT OR REPLACE INTO landing_done VALUES ($step, $fingerprint)",
            {"step": step, "fingerprint": fingerprint},
        )

    def _stage_all(
        self, con: Any, source: Source, params: dict[str, Any], columns: dict[str, str] | None = None
    ) -> None:
        """Read every landing row into the engine's temp table `landing_all`, and the rows whose event time
        places them in no partition into `landing_unplaced`."""
        c = self.contract
        raw_columns = ", ".join(f"s.{ident(f)} AS {ident('raw__' + f)}" for f in c.features)
        cast_columns = ", ".join(f"TRY_CAST(s.{ident(f)} AS DOUBLE) AS {ident(f)}" for f in c.features)
        raw_time = f"s.{ident(c.time_column)}"
        event_time = f"TRY_CAST({raw_time} AS TIMESTAMPTZ)"
        row_number = "s.file_row_number" if source.reader == "read_parquet" else "CAST(NULL AS BIGINT)"
        json = self._json_columns(con, source, columns)
        if c.time_column in json:
            # A JSON string is parsed as a time, and kept without its quotes; any other JSON value is no time.
            text = f"json_type({raw_time}) = 'VARCHAR'"
            event_time = f"TRY_CAST(CASE WHEN {text} THEN json_extract_string({raw_time}, '$') END AS TIMESTAMPTZ)"
            raw_time = (
                f"CASE WHEN {text} THEN json_extract_string({raw_time}, '$') ELSE CAST({raw_time} AS VARCHAR) END"
            )
        record_id, non_integer_id = record_id_sql(
            "s." + ident(c.id_column), source.reader == "read_csv", json=c.id_column in json
        )
        sql = f"""
            CREATE OR REPLACE TEMP TABLE landing_all AS
            WITH src AS (
                SELECT {record_id} AS record_id, {non_integer_id} AS non_integer_record_id,
                       {event_time} AS event_time, {raw_time} AS raw_event_time,
                       {raw_columns}, {cast_columns}, s.{ident(SOURCE_FILE_COLUMN)} AS source_file,
                       {row_number} AS source_row
                FROM {self.landing_relation(source)} AS s
            )
            SELECT *,
                   CASE WHEN event_time IS NULL AND (raw_event_time IS NULL
                             OR trim(CAST(raw_event_time AS VARCHAR)) = '') THEN {literal(rules.MISSING_EVENT_TIME)}
                        WHEN event_time IS NULL THEN {literal(rules.UNPARSEABLE_EVENT_TIME)}
                        WHEN event_time < $placeable_start THEN {literal(rules.BEFORE_START)}
                        WHEN event_time >= $placeable_end THEN {literal(rules.FUTURE_EVENT_TIME)}
                   END AS unplaced
            FROM src
        """
        try:
            con.execute(sql, {name: params[name] for name in ("pattern", "placeable_start", "placeable_end")})
        except duckdb.Error as error:
            self.raise_read_failure(con, source, error)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE landing_unplaced AS SELECT * FROM landing_all WHERE unplaced IS NOT NULL"
        )

    def window_digests(self, con: Any, windows: str) -> dict[str, tuple[int, str]]:
        """For each window of the engine table `windows` (partition_key, window_start, window_end; windows that
        do not overlap), the staged landing rows whose event time falls in it: how many, and a digest of their
        record ids and event times (a sum, so that rows repeated in pairs still count). The same records give
        the same digest whichever files hold them. Windows without a landed row are left out."""
        rows = con.execute(
            f"""
            WITH placed AS (
                SELECT event_time, hash(record_id, event_time) AS row_hash FROM landing_all WHERE unplaced IS NULL
            )
            SELECT w.partition_key, count(*), CAST(sum(p.row_hash) AS VARCHAR)
            FROM placed AS p ASOF JOIN (SELECT * FROM {windows} ORDER BY window_start) AS w
              ON p.event_time >= w.window_start
            WHERE p.event_time < w.window_end
            GROUP BY w.partition_key
            """
        ).fetchall()
        return {str(key): (int(n), str(digest)) for key, n, digest in rows}

    def rows_not_stored(self, con: Any, windows: str, keys: Sequence[str], stored: str) -> dict[str, int]:
        """Per partition of `keys` (windows in the engine table `windows`), how many staged landing rows of its
        window have a record id and event time that none of its rows in the engine table `stored`
        (partition_key, record_id, event_time) has; partitions with none are left out."""
        rows = con.execute(
            f"""
            WITH placed AS (
                SELECT w.partition_key, l.record_id, l.event_time
                FROM (SELECT record_id, event_time FROM landing_all WHERE unplaced IS NULL) AS l
                ASOF JOIN (SELECT * FROM {windows} WHERE list_contains($keys, partition_key) ORDER BY window_start) AS w
                  ON l.event_time >= w.window_start
                WHERE l.event_time < w.window_end
            )
            SELECT p.partition_key, count(*) FROM placed AS p
            WHERE NOT EXISTS (
                SELECT 1 FROM {stored} AS s
                WHERE s.partition_key = p.partition_key AND s.record_id IS NOT DISTINCT FROM p.record_id
                  AND s.event_time = p.event_time
            )
            GROUP BY p.partition_key
            """,
            {"keys": list(keys)},
        ).fetchall()
        return {str(key): int(n) for key, n in rows}

    def _json_columns(self, con: Any, source: Source, columns: dict[str, str] | None) -> set[str]:
        """The contract's id and event-time columns that DuckDB reads as JSON: JSON files that give a column
        values of several types (the number `5` in one, the string `"5"` in another) make it a JSON column.
        `columns`: the column types `_check` read from these files, if it did."""
        if source.reader != "read_json":
            return set()
        if columns is None:
            try:
                described = con.execute(
                    f"DESCRIBE SELECT * FROM {self.landing_relation(source)}", {"pattern": source.pattern}
                ).fetchall()
            except duckdb.Error as error:
                self.raise_read_failure(con, source, error)
            columns = {row[0]: str(row[1]) for row in described}
        wanted = (self.contract.id_column, self.contract.time_column)
        return {name for name in wanted if columns.get(name) == "JSON"}

    def classify(self, con: Any) -> None:
        """From the tables `stage` made and `stored_copies` (record_id, event_time, source_file: the copies of the
        window's record ids that other partitions store), the engine's temp table `staged_source`: the
        window's rows, each with its rejection `reason` and `detail` (NULL when valid), and the rows whose
        event time places them in no partition, each with its `unplaced` reason.

        A record id belongs to its earliest valid copy: the smallest (event time, source file, row
        in the file), among the copies in the window and those other partitions store (their files
        may be gone). A copy in the landing files that another partition's window holds takes the id
        only once that partition is snapshotted (it then demotes the later stored copy), so that a
        record is never rejected for a copy no partition stores: a late file for a partition already
        snapshotted leaves the ids it repeats where they are until that partition runs again. Once
        every partition holding a copy is snapshotted, which copy wins does not depend on the order.
        A stored copy wins a tie with a landing one: it is the same row, already placed. An invalid
        copy never takes the id: it is rejected for its own reason.
        """
        c = self.contract
        whens: list[str] = []

        def when(condition: str, reason: str, detail: str) -> None:
            whens.append(f"WHEN {condition} THEN {{'reason': {literal(reason)}, 'detail': {literal(detail)}}}")

        when("record_id IS NULL OR trim(record_id) = ''", rules.MISSING_RECORD_ID, c.id_column)
        when("non_integer_record_id", rules.NON_INTEGER_RECORD_ID, c.id_column)
        for f in c.features:
            when(f"{ident('raw__' + f)} IS NULL", rules.MISSING_FEATURE, f)
        for f in c.features:
            when(f"{ident(f)} IS NULL", rules.NOT_A_NUMBER, f)
        for f in c.features:
            when(f"NOT isfinite({ident(f)})", rules.NAN_FEATURE, f)
        for f in c.nonnegative:
            when(f"{ident(f)} < 0", rules.NEGATIVE_VALUE, f)
        whens.extend(out_of_range_rule(r) for r in c.ranges)
        raw_values = ", ".join(f"{ident(f)} := {ident('raw__' + f)}" for f in c.features)
        # A rejected record's values as the source gave them (only rejected records keep them).
        raw_text = f"CAST(struct_pack({raw_values}) AS VARCHAR)"
        features = ", ".join(ident(f) for f in c.features)
        kept = (
            f"{{'reason': {literal(rules.DUPLICATE_RECORD_ID)}, "
            f"'detail': {literal(DUPLICATE_DETAIL)} || CAST(kept_time AS VARCHAR) || ' in ' || kept_file}}"
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE staged_source AS
            WITH checked AS (  -- the window's rows, and the other placed copies of its record ids
                SELECT *, CASE {" ".join(whens)} END AS verdict,
                       -- The last tie-break between copies: needed only where no row number tells
                       -- them apart (CSV), and costly to write for every row.
                       CASE WHEN source_row IS NULL THEN {raw_text} END AS tie_values
                FROM window_rows
                WHERE unplaced IS NULL
            ),
            copies AS (
                SELECT *, false AS stored FROM checked
                UNION ALL BY NAME
                SELECT record_id, event_time, source_file, true AS stored, false AS in_window FROM stored_copies
            ),
            ranked AS (
                SELECT *,
                       row_number() OVER copy AS copy_number,
                       first_value(event_time) OVER copy AS kept_time,
                       first_value(source_file) OVER copy AS kept_file
                FROM copies
                WINDOW copy AS (
                    PARTITION BY record_id, verdict IS NULL
                    ORDER BY event_time, source_file, stored DESC, source_row NULLS LAST, tie_values
                )
            ),
            judged AS (
                SELECT *, COALESCE(verdict, CASE WHEN copy_number > 1 THEN {kept} END) AS outcome
                FROM ranked WHERE in_window
            )
            SELECT record_id, event_time, CAST(raw_event_time AS VARCHAR) AS raw_event_time, {features},
                   source_file, in_window, unplaced, CASE WHEN outcome IS NOT NULL THEN {raw_text} END AS raw_values,
                   outcome.reason AS reason, outcome.detail AS detail
            FROM judged
            UNION ALL
            SELECT record_id, event_time, CAST(raw_event_time AS VARCHAR), {features}, source_file, in_window,
                   unplaced, NULL, NULL, NULL
            FROM unplaced_rows
            """
        )


def _timestamp(value: datetime) -> str:
    """An aware datetime as a TIMESTAMPTZ literal (a view takes no parameters)."""
    if value.tzinfo is None:
        raise ValueError(f"A window bound must carry its time zone, got {value!r}.")
    return f"CAST({literal(value.isoformat())} AS TIMESTAMPTZ)"


def _header_line(name: str, required: Sequence[str]) -> str | None:
    """The delimiter of a column name that is a whole CSV header line holding a contract column, if it is one."""
    for delimiter in (",", ";", "\t", "|"):
        parts = [part.strip().strip('"') for part in name.split(delimiter)]
        if len(parts) > 1 and any(part in required for part in parts):
            return delimiter
    return None


def _ragged_line(path: Path, delimiter: str) -> str:
    """Where in a CSV file a row first has another number of fields than its header, as words."""
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            rows = csv.reader(handle, delimiter=delimiter)
            fields = len(next(rows, []))
            for row in rows:
                if row and len(row) != fields:
                    # The line the record ends on (a quoted field may hold line breaks).
                    return f"line {rows.line_num} has {len(row)} field(s), the header {fields}"
    except (OSError, csv.Error) as error:
        return f"unreadable: {error}"
    return f"no row has another number of fields than the header's {fields}"


def _first_bad_json_line(path: Path) -> str | None:
    """The number of the first line of a JSON Lines file that is not one JSON value, if one is found."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, text in enumerate(handle, start=1):
                if text.strip():
                    try:
                        json.loads(text)
                    except ValueError:
                        return str(number)
    except OSError:
        return None
    return None


def _listed(names: Sequence[str]) -> str:
    """Column names as Python literals, so that names holding commas, quotes or newlines stay apart."""
    return ", ".join(repr(name) for name in names)
