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
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from batch_predict import contract as rules
from batch_predict.contract import FeatureContract

READERS = {".parquet": "read_parquet", ".csv": "read_csv", ".json": "read_json", ".jsonl": "read_json"}

PREDICTION_BASE_COLUMNS = (
    ("partition_key", "VARCHAR"),
    ("record_id", "VARCHAR"),
    ("prediction", "VARCHAR"),
    ("model_name", "VARCHAR"),
    ("model_version", "VARCHAR"),
    ("run_id", "VARCHAR"),
    ("predicted_at", "TIMESTAMPTZ"),
)


class WarehouseError(RuntimeError):
    """The warehouse file cannot be used as it is."""


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


@dataclass(frozen=True)
class PredictionStats:
    partition_key: str
    valid_inputs: int
    predicted_rows: int
    model_name: str
    model_version: str
    run_id: str
    wall_seconds: float


@dataclass(frozen=True)
class Completeness:
    """How the predictions of one partition cover its valid inputs."""

    valid_inputs: int
    predictions: int
    missing: int
    duplicated: int
    unexpected: int

    @property
    def passed(self) -> bool:
        return self.missing == 0 and self.duplicated == 0 and self.unexpected == 0


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _is_lock_conflict(error: duckdb.Error) -> bool:
    return "lock" in str(error).lower()


class Warehouse:
    """One DuckDB file holding inputs, rejected inputs, predictions and per-partition stats."""

    def __init__(
        self,
        path: Path,
        contract: FeatureContract,
        lock_timeout_seconds: float = 300.0,
        memory_limit: str = "1GB",
        threads: int = 2,
    ) -> None:
        self.path = path
        self.contract = contract
        self.lock_timeout_seconds = lock_timeout_seconds
        self.memory_limit = memory_limit
        self.threads = threads

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
                    raise WarehouseError(
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
            if not read_only:
                self._ensure_schema(con)
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
            CREATE TABLE IF NOT EXISTS input_stats (
                partition_key VARCHAR PRIMARY KEY, window_start TIMESTAMPTZ, window_end TIMESTAMPTZ,
                source_rows BIGINT, valid_rows BIGINT, rejected_rows BIGINT, rejected_by_reason VARCHAR,
                run_id VARCHAR, loaded_at TIMESTAMPTZ
            );
            CREATE TABLE IF NOT EXISTS predictions (
                {", ".join(f"{name} {kind}" for name, kind in PREDICTION_BASE_COLUMNS)}
            );
            CREATE TABLE IF NOT EXISTS prediction_stats (
                partition_key VARCHAR PRIMARY KEY, valid_inputs BIGINT, predicted_rows BIGINT,
                model_name VARCHAR, model_version VARCHAR, run_id VARCHAR, completed_at TIMESTAMPTZ,
                wall_seconds DOUBLE, rows_per_second DOUBLE, every_input_predicted BOOLEAN
            );
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

    def check_source(self, con: duckdb.DuckDBPyConnection, source: Source) -> None:
        """Fail with a clear message unless the source files can be read and hold the contract's columns."""
        if not source.root.is_dir():
            raise SourceError(
                f"The landing folder {source.root} does not exist. Create it and put source files in it "
                "(`batch-predict demo-data` writes demo records), or set BATCH_PREDICT_LANDING."
            )
        try:
            described = con.execute(
                f"DESCRIBE SELECT * FROM {self._source_relation(source)}", {"pattern": source.pattern}
            )
            columns = {row[0] for row in described.fetchall()}
        except duckdb.Error as error:
            if "no files found" in str(error).lower():
                raise SourceError(
                    f"No source files match {source.pattern}. Put files there, or set "
                    "BATCH_PREDICT_LANDING / BATCH_PREDICT_SOURCE_GLOB to where they are."
                ) from error
            raise SourceError(
                f"Cannot read the source files {source.pattern} with {source.reader}: "
                f"{str(error).splitlines()[0].rstrip('.')}. "
                "Move the unreadable file out of the landing folder (or fix it) and rerun the partition."
            ) from error
        missing = [name for name in self.contract.required_columns if name not in columns]
        if missing:
            raise SourceError(
                f"The source files {source.pattern} have no column(s) {', '.join(missing)} in any file; "
                f"the feature contract needs {', '.join(self.contract.required_columns)}. Fix the files, "
                "or set BATCH_PREDICT_ID_COLUMN / BATCH_PREDICT_TIME_COLUMN / BATCH_PREDICT_FEATURES to match them."
            )

    def _classified_source_sql(self, source: Source) -> str:
        """The source rows of a window, each with its rejection reason (NULL when valid)."""
        c = self.contract
        raw_columns = ", ".join(f"s.{_ident(f)} AS {_ident('raw__' + f)}" for f in c.features)
        cast_columns = ", ".join(f"TRY_CAST(s.{_ident(f)} AS DOUBLE) AS {_ident(f)}" for f in c.features)
        whens: list[str] = []

        def when(condition: str, reason: str, detail: str) -> None:
            whens.append(f"WHEN {condition} THEN {{'reason': {_literal(reason)}, 'detail': {_literal(detail)}}}")

        when("record_id IS NULL", rules.MISSING_RECORD_ID, c.id_column)
        for f in c.features:
            when(f"{_ident('raw__' + f)} IS NULL", rules.MISSING_FEATURE, f)
        for f in c.features:
            when(f"{_ident(f)} IS NULL", rules.NOT_A_NUMBER, f)
        for f in c.features:
            when(f"NOT isfinite({_ident(f)})", rules.NAN_FEATURE, f)
        for f in c.nonnegative:
            when(f"{_ident(f)} < 0", rules.NEGATIVE_VALUE, f)
        raw_values = ", ".join(f"{_ident(f)} := {_ident('raw__' + f)}" for f in c.features)
        event_time = f"TRY_CAST(s.{_ident(c.time_column)} AS TIMESTAMPTZ)"
        return f"""
            WITH src AS (
                SELECT CAST(s.{_ident(c.id_column)} AS VARCHAR) AS record_id, {event_time} AS event_time,
                       {raw_columns}, {cast_columns}, s.filename AS source_file
                FROM {self._source_relation(source)} AS s
                WHERE {event_time} >= $window_start AND {event_time} < $window_end
            ),
            checked AS (
                SELECT *, CASE {" ".join(whens)} END AS verdict FROM src
            ),
            earlier AS (
                SELECT record_id, min(partition_key) AS partition_key FROM inputs
                WHERE partition_key <> $partition_key GROUP BY record_id
            ),
            ranked AS (
                SELECT checked.*, earlier.partition_key AS earlier_partition,
                       row_number() OVER (
                           PARTITION BY checked.record_id
                           ORDER BY checked.verdict IS NOT NULL, checked.event_time, checked.source_file
                       ) AS copy_number
                FROM checked LEFT JOIN earlier ON checked.record_id = earlier.record_id
            )
            SELECT * EXCLUDE (verdict, earlier_partition, copy_number),
                   CAST(struct_pack({raw_values}) AS VARCHAR) AS raw_values,
                   COALESCE(verdict, CASE
                       WHEN earlier_partition IS NOT NULL THEN
                           {{'reason': {_literal(rules.DUPLICATE_RECORD_ID)},
                             'detail': 'already in partition ' || earlier_partition}}
                       WHEN copy_number > 1 THEN
                           {{'reason': {_literal(rules.DUPLICATE_RECORD_ID)},
                             'detail': 'repeated within this partition'}}
                   END) AS verdict
            FROM ranked
        """

    def snapshot_inputs(
        self,
        source: Source,
        partition_key: str,
        window_start: datetime,
        window_end: datetime,
        run_id: str,
    ) -> InputStats:
        """Replace one partition of `inputs` and `rejected_inputs` with the source rows of its window.

        One transaction: the partition is either fully replaced or left as it was.
        """
        features = ", ".join(_ident(f) for f in self.contract.features)
        params = {"partition_key": partition_key, "run_id": run_id}
        with self.connect() as con:
            self.check_source(con, source)
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE staged_source AS {self._classified_source_sql(source)}",
                    {
                        "partition_key": partition_key,
                        "pattern": source.pattern,
                        "window_start": window_start,
                        "window_end": window_end,
                    },
                )
                for table in ("inputs", "rejected_inputs", "input_stats"):
                    con.execute(f"DELETE FROM {table} WHERE partition_key = ?", [partition_key])
                con.execute(
                    f"""
                    INSERT INTO inputs BY NAME
                    SELECT $partition_key AS partition_key, record_id, event_time, {features}, source_file,
                           $run_id AS run_id, now() AS loaded_at
                    FROM staged_source WHERE verdict IS NULL
                    """,
                    params,
                )
                con.execute(
                    """
                    INSERT INTO rejected_inputs BY NAME
                    SELECT $partition_key AS partition_key, record_id, event_time, verdict.reason AS reason,
                           verdict.detail AS detail, raw_values, source_file, $run_id AS run_id,
                           now() AS rejected_at
                    FROM staged_source WHERE verdict IS NOT NULL
                    """,
                    params,
                )
                counts = con.execute(
                    "SELECT count(*), count(*) FILTER (WHERE verdict IS NULL) FROM staged_source"
                ).fetchone()
                by_reason = dict(
                    con.execute(
                        """
                        SELECT verdict.reason, count(*) FROM staged_source
                        WHERE verdict IS NOT NULL GROUP BY 1 ORDER BY 1
                        """
                    ).fetchall()
                )
                assert counts is not None
                source_rows, valid_rows = int(counts[0]), int(counts[1])
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
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return InputStats(partition_key, source_rows, valid_rows, source_rows - valid_rows, by_reason)

    # -- predictions ----------------------------------------------------------------------

    def export_valid_inputs(self, partition_key: str, path: Path) -> int:
        """Write the partition's valid inputs (id and features, ordered by id) to a Parquet file.

        The prediction step then streams that file chunk by chunk without holding the
        warehouse open. Returns the number of rows written.
        """
        features = ", ".join(_ident(f) for f in self.contract.features)
        with self.connect() as con:
            con.execute(
                f"""
                COPY (SELECT record_id, {features} FROM inputs WHERE partition_key = $partition_key
                      ORDER BY record_id)
                TO $path (FORMAT parquet)
                """,
                {"partition_key": partition_key, "path": str(path)},
            )
            row = con.execute("SELECT count(*) FROM inputs WHERE partition_key = ?", [partition_key]).fetchone()
        assert row is not None
        return int(row[0])

    def publish_predictions(
        self, stats: PredictionStats, predictions_path: Path, probability_columns: Sequence[str]
    ) -> Completeness:
        """Replace one partition of `predictions` with the rows of a Parquet file, in one transaction.

        The completeness of the new rows against the partition's valid inputs is computed
        in the same transaction and stored with the partition's stats.
        """
        params: dict[str, Any] = {"partition_key": stats.partition_key}
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for column in probability_columns:
                    con.execute(f"ALTER TABLE predictions ADD COLUMN IF NOT EXISTS {_ident(column)} DOUBLE")
                con.execute("DELETE FROM predictions WHERE partition_key = $partition_key", params)
                con.execute(
                    "INSERT INTO predictions BY NAME SELECT * FROM read_parquet($path)",
                    {"path": str(predictions_path)},
                )
                completeness = self._completeness(con, stats.partition_key)
                con.execute("DELETE FROM prediction_stats WHERE partition_key = $partition_key", params)
                rate = stats.predicted_rows / stats.wall_seconds if stats.wall_seconds > 0 else None
                con.execute(
                    """
                    INSERT INTO prediction_stats BY NAME SELECT
                        $partition_key AS partition_key, $valid_inputs AS valid_inputs,
                        $predicted_rows AS predicted_rows, $model_name AS model_name,
                        $model_version AS model_version, $run_id AS run_id, now() AS completed_at,
                        $wall_seconds AS wall_seconds, $rate AS rows_per_second,
                        $passed AS every_input_predicted
                    """,
                    {
                        **params,
                        "valid_inputs": stats.valid_inputs,
                        "predicted_rows": stats.predicted_rows,
                        "model_name": stats.model_name,
                        "model_version": stats.model_version,
                        "run_id": stats.run_id,
                        "wall_seconds": stats.wall_seconds,
                        "rate": rate,
                        "passed": completeness.passed,
                    },
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return completeness

    def _completeness(self, con: duckdb.DuckDBPyConnection, partition_key: str) -> Completeness:
        row = con.execute(
            """
            WITH i AS (SELECT record_id FROM inputs WHERE partition_key = $partition_key),
                 p AS (SELECT record_id, count(*) AS n FROM predictions
                       WHERE partition_key = $partition_key GROUP BY record_id)
            SELECT (SELECT count(*) FROM i),
                   (SELECT coalesce(sum(n), 0) FROM p),
                   (SELECT count(*) FROM i ANTI JOIN p USING (record_id)),
                   (SELECT coalesce(sum(n - 1), 0) FROM p),
                   (SELECT count(*) FROM p ANTI JOIN i USING (record_id))
            """,
            {"partition_key": partition_key},
        ).fetchone()
        assert row is not None
        return Completeness(*(int(value) for value in row))

    def completeness(self, partition_key: str) -> Completeness:
        with self.connect(read_only=True) as con:
            return self._completeness(con, partition_key)

    def completed_partitions(self, partition_keys: Sequence[str]) -> dict[str, datetime]:
        """When each of the given partitions last had its predictions published."""
        if not self.path.exists():
            return {}
        with self.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT partition_key, completed_at FROM prediction_stats WHERE list_contains($keys, partition_key)",
                {"keys": list(partition_keys)},
            ).fetchall()
        return {key: completed_at for key, completed_at in rows}

    def partition_status(self, last: int) -> list[dict[str, Any]]:
        """One dict per partition that has inputs or predictions, newest first."""
        with self.connect(read_only=True) as con:
            cursor = con.execute(
                """
                SELECT coalesce(i.partition_key, p.partition_key) AS partition_key,
                       i.window_start, i.window_end, i.source_rows, i.valid_rows AS inputs,
                       i.rejected_rows AS rejected, i.rejected_by_reason,
                       p.predicted_rows AS predictions, p.model_name, p.model_version,
                       coalesce(p.run_id, i.run_id) AS run_id,
                       coalesce(p.completed_at, i.loaded_at) AS updated_at,
                       p.completed_at, p.every_input_predicted, p.rows_per_second
                FROM input_stats AS i FULL OUTER JOIN prediction_stats AS p USING (partition_key)
                ORDER BY partition_key DESC
                LIMIT $last
                """,
                {"last": last},
            )
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
