"""Connections and locking: the one seam between the warehouse's logic and the database that stores it.

Every unit of work (a snapshot, a publish, a status read) runs in one `Session`: one
transaction on the warehouse, plus an in-process DuckDB *engine* that reads landing and
staging files, validates and bins. Two backends provide sessions:

- `DuckDBBackend` (the default): a DuckDB file. The engine is the warehouse connection
  itself, so nothing is copied. DuckDB lets one process open the file for writing at a
  time, and a second cannot even open it read-only meanwhile; so a session is short, the
  heavy work (prediction) runs outside it, and a lock conflict is retried with jittered
  exponential backoff until the lock timeout. Each connection first takes its turn at the
  file (`turns`: an `flock` beside it, shared to read, exclusive to write), then DuckDB's
  own lock. That serializes every writer, which is what makes the cross-partition steps
  safe: `lock_all`/`lock_partition` have nothing more to do.
- `PostgresBackend`: a PostgreSQL database (`postgresql://user@host:port/db`), which many
  writers on many machines share. The engine is an in-memory DuckDB; tables cross between
  the two as Arrow record batches through `COPY`. PostgreSQL does not serialize writers,
  so the logic takes transaction-scoped advisory locks: `lock_partition` around every
  partition replace, `lock_all` (shared or exclusive) around what reads or settles other
  partitions. Lock waits are bounded by `lock_timeout`; a timeout, deadlock or lost
  connection is a `WarehouseLockTimeout` (retryable).

Statements are written once, in the SQL both engines accept, with `$name` parameters.
"""

from __future__ import annotations

import io
import os
import random
import re
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from batch_predict.redaction import redact, redact_url
from batch_predict.warehouse import pgcopy, turns
from batch_predict.warehouse.sql import ident, literal, parameter_names, postgres_statement
from batch_predict.warehouse.types import WarehouseDamaged, WarehouseError, WarehouseLockTimeout, WarehouseUnavailable

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# How long `hold` keeps a DuckDB file open for one process at most, and at least before it lets a
# waiting process have a turn; how long it then stands back for the waiter to get in.
HOLD_SECONDS = 10.0
# How long `hold` keeps a connection no session uses (a step doing other work lets it go).
IDLE_SECONDS = 0.25
MIN_HOLD_SECONDS = 1.5
YIELD_SECONDS = 0.5
# A DuckDB transaction that appends at least this many rows checkpoints at its commit, instead of writing
# them to the write-ahead log and into the file again at the close: replacing 100,000 rows, the commit and
# the close took 64 against 84 ms (a write-ahead log of 12 MB; measured 2026-12-03). Small
# commits keep the log, which DuckDB checkpoints once it reaches 16 MB: a checkpoint per commit of a
# 10,000-row partition would add its fixed cost 365 times to a year's backfill.
LARGE_COMMIT_ROWS = 50_000
# How long a process waiting for another's DuckDB lock sleeps between tries, at most.
_MAX_RETRY_DELAY = 0.25
# How many engine rows cross into PostgreSQL per COPY buffer.
_COPY_BATCH_ROWS = 65_536
# Advisory lock keys: one for the whole warehouse, one per partition (hashed with the key).
_ALL_PARTITIONS = "batch_predict:all"
_PARTITION = "batch_predict:partition:"
_SCHEMA = "batch_predict:schema"
# SQLSTATEs after which the same work, tried again, can succeed.
_RETRYABLE_SQLSTATE = {
    "55P03": "a lock wait passed lock_timeout",
    "40P01": "a deadlock",
    "40001": "a serialization failure",
    "57P01": "the server shut down",
    "57P03": "the server is starting up",
    "57P05": "the server ended an idle session",
}
# What the server or libpq says when it refuses a connection for a reason no retry changes. A failed
# connection carries no SQLSTATE in psycopg, only this text (in English unless the server's lc_messages
# says otherwise; a refusal in another language is then retried, as an outage is).
_REFUSED_CONNECTION = re.compile(
    r"password authentication failed|no password supplied|authentication failed|"
    r'database ".*" does not exist|role ".*" does not exist|no pg_hba\.conf entry|pg_hba\.conf rejects|'
    r'permission denied for database|role ".*" is not permitted to log in'
)

Params = Mapping[str, Any] | None


def _bound(sql: str, params: Params) -> dict[str, Any] | None:
    """The parameters the statement uses (DuckDB refuses a statement given any it does not use)."""
    if not params:
        return None
    used = set(parameter_names(sql))
    return {name: value for name, value in params.items() if name in used}


# Statements that can change a table's columns (DuckDB sessions cache column lists until one runs).
_DDL = re.compile(r"\s*(ALTER|CREATE|DROP)\b", re.IGNORECASE)
# ... and those of them that name the one table or view they change.
_DDL_NAMED = re.compile(
    r"\s*(?:ALTER\s+TABLE|CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?(?:TABLE|VIEW)(?:\s+IF\s+NOT\s+EXISTS)?"
    r"|DROP\s+(?:TABLE|VIEW)(?:\s+IF\s+EXISTS)?)\s+([A-Za-z_][A-Za-z_0-9.]*)\b(?![.\w\"])",
    re.IGNORECASE,
)


def adopt(con: Any, name: str, table: pa.Table | pa.RecordBatchReader) -> None:
    """Make an Arrow table (or a stream of batches, read once) the DuckDB connection's temp table `name`,
    replacing one of that name."""
    con.register("_bp_adopt", table)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _bp_adopt")
    finally:
        con.unregister("_bp_adopt")


def _start_time(pid: int) -> str:
    """When the process started (clock ticks since boot, /proc/<pid>/stat field 22); OSError if it is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[19]


def _mark(marker: Path) -> None:
    """Leave this process's waiting marker (its start time in it), if the folder can be written."""
    with suppress(OSError):
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(_start_time(os.getpid()))


def _forget(marker: Path) -> None:
    with suppress(OSError):
        marker.unlink(missing_ok=True)


def _settled(con: Any) -> bool:
    """Whether a DuckDB connection can take the next session's statements: a result left half-read is
    finished here; one a reader still streams cannot be, and the connection is not kept."""
    try:
        con.execute("SELECT 1").fetchall()
    except duckdb.Error:
        return False
    return True


def _is_damage(error: duckdb.Error, real_path: str) -> bool:
    """Whether DuckDB found the file itself damaged: a block whose checksum does not match, or a block
    the file's own metadata points at and the file is too short to hold."""
    text = str(error)
    # DuckDB names the file by its real path, quoted: not the spill files it keeps in `<file>.tmp/`.
    return "Corrupt database file" in text or f'Could not read enough bytes from file "{real_path}"' in text


def _is_lock_conflict(error: duckdb.Error) -> bool:
    return "lock" in str(error).lower()


def _is_mode_conflict(error: duckdb.Error) -> bool:
    """DuckDB refuses a second connection to a file this process has open with another configuration."""
    return isinstance(error, duckdb.ConnectionException) and "different configuration" in str(error)


def engine_connection(memory_limit: str, threads: int, path: str = ":memory:", read_only: bool = False) -> Any:
    """A DuckDB connection set up as every engine here is: UTC, bounded memory, no order kept."""
    con = duckdb.connect(path, read_only=read_only)
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET memory_limit = {literal(memory_limit)}")
        con.execute(f"SET threads = {int(threads)}")
        # Nothing here relies on row order; without it DuckDB streams COPY and INSERT
        # instead of buffering whole row groups per thread to keep the order.
        con.execute("SET preserve_insertion_order = false")
    except BaseException:
        con.close()
        raise
    return con


class Session(ABC):
    """One unit of work on the warehouse: statements, transfers between engine and warehouse, locks."""

    dialect: str

    @abstractmethod
    def execute(self, sql: str, params: Params = None) -> None: ...

    @abstractmethod
    def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def write(self, sql: str, params: Params = None) -> int:
        """Run an INSERT, UPDATE or DELETE and return how many rows it changed."""

    @abstractmethod
    def records(self, sql: str, params: Params = None) -> list[dict[str, Any]]: ...

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """All of the block's statements, or none of them."""

    @property
    @abstractmethod
    def engine(self) -> Any:
        """The DuckDB connection that reads files and runs DuckDB-only SQL."""

    @abstractmethod
    def share(self, name: str) -> None:
        """Make the engine's temp table `name` a temp table of the warehouse session too."""

    @abstractmethod
    def fetch_into_engine(self, name: str, sql: str, params: Params = None) -> None:
        """Make the result of a warehouse query the engine's temp table `name`."""

    @abstractmethod
    def adopt(self, name: str, table: pa.Table | pa.RecordBatchReader) -> None:
        """Make an Arrow table (or a stream of batches, read once, so that it need not fit in memory) the
        session's temp table `name`, replacing one of that name."""

    @abstractmethod
    def arrow(self, sql: str, params: Params = None) -> pa.Table:
        """The rows of a warehouse query as an Arrow table."""

    @abstractmethod
    def lock_all(self, shared: bool = False) -> None:
        """Until the transaction ends, keep out writers that touch other partitions (shared: only exclusive ones)."""

    @abstractmethod
    def lock_schema(self) -> None:
        """Until the transaction ends, keep out other writers that add columns."""

    @abstractmethod
    def lock_partition(self, partition_key: str) -> None:
        """Until the transaction ends, keep out other writers of this partition."""

    @abstractmethod
    def hash(self, expression: str) -> str:
        """SQL for a 64-bit hash of a text expression whose sum over rows is exact."""

    @abstractmethod
    def columns(self, table: str) -> dict[str, str]:
        """The columns of a warehouse table (or temp relation) and their SQL types, in order."""

    def fetchone(self, sql: str, params: Params = None) -> tuple[Any, ...] | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def temp_table(self, name: str, sql: str, params: Params = None) -> None:
        """A warehouse temp table from a warehouse query, replacing one of the same name."""
        self.execute(f"DROP TABLE IF EXISTS {name}")
        self.execute(f"CREATE TEMP TABLE {name} AS {sql}", params)

    def has_table(self, name: str) -> bool:
        return bool(self.columns(name))

    @abstractmethod
    def arrow_reader(self, sql: str, params: Params = None) -> pa.RecordBatchReader:
        """The rows of a warehouse query as a stream of Arrow record batches, to read before the session ends."""

    @abstractmethod
    def stage_arrow(self, name: str, data: ds.Dataset | pa.RecordBatchReader) -> None:
        """Make Arrow data (files on disk, read where the statements use them; a stream only once) a relation
        `name` of the session."""

    @abstractmethod
    def insert_arrow(self, table: str, rows: pa.RecordBatchReader, constants: Mapping[str, Any]) -> int:
        """Append a stream of Arrow rows (read once) to the stored table `table`, each of `constants` (a column
        and its value) the same in every row; how many rows it appended."""

    def _appended_columns(self, table: str, rows: pa.RecordBatchReader, constants: Mapping[str, Any]) -> dict[str, str]:
        """The columns `insert_arrow` writes, in order, and their types in `table` (each must be one of its)."""
        names = [*rows.schema.names, *constants]
        stored = self.columns(table)
        unknown = [name for name in names if name not in stored]
        if unknown:
            raise WarehouseError(f"Cannot insert into {table}: it has no column {', '.join(unknown)}.")
        return {name: stored[name] for name in names}

    def _insert_from(self, table: str, relation: str, columns: Sequence[str], constants: Mapping[str, Any]) -> int:
        """INSERT into `table` the `columns` of every row of `relation`, each of `constants` the same in every row."""
        values = {f"c{index}": value for index, value in enumerate(constants.values())}
        names = ", ".join(ident(name) for name in [*columns, *constants])
        selected = ", ".join([*(ident(name) for name in columns), *(f"${name}" for name in values)])
        return self.write(f"INSERT INTO {table} ({names}) SELECT {selected} FROM {relation}", values)


# Every backend of this process, for the fork hook below.
_BACKENDS: weakref.WeakSet[Backend] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for backend in list(_BACKENDS):
        backend._forget_after_fork()


os.register_at_fork(after_in_child=_forget_after_fork)


class Backend(ABC):
    """Where the warehouse lives; opens sessions on it."""

    dialect: str
    # Shown in messages (credentials masked).
    location: str

    lock_timeout_seconds: float

    def __init__(self, ensure_schema: Callable[[Session], None], memory_limit: str, threads: int) -> None:
        self._ensure_schema = ensure_schema
        self._schema_ready = False  # tables, once made, stay: check them once per process
        self.memory_limit = memory_limit
        self.threads = threads
        self._holds = 0  # how many `hold` blocks are open
        # What `hold` keeps between sessions, the thread it belongs to, and when to let go of it if no
        # session has used it by then (IDLE_SECONDS after it was kept). One watcher thread lets go of it:
        # it runs while something is kept, not started anew for every session (a few ms each).
        self._held: Any = None
        self._held_by = 0
        self._idle_deadline = 0.0
        self._guard = threading.Condition()
        self._watcher: threading.Thread | None = None
        _BACKENDS.add(self)

    def _forget_after_fork(self) -> None:
        """In a forked child: what `hold` keeps is the parent's (never used or closed here), and a lock
        another thread held at the fork would never be let go."""
        self._guard = threading.Condition()
        self._held, self._watcher = None, None

    @abstractmethod
    def session(self, read_only: bool = False) -> AbstractContextManager[Session]: ...

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep what the block's sessions open (a connection, an engine) for the block's next session.

        Opening costs tens of milliseconds a time, which a run of many small partitions pays
        several times per partition. Sessions stay separate units of work: each commits or
        rolls back; temp tables stay until the connection closes (every statement that makes
        one replaces any of the same name). What no session uses for IDLE_SECONDS is let go,
        so a block that does other work between sessions does not keep other processes out.
        """
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if not self._holds:
                self.release()

    @property
    def holding(self) -> bool:
        """Whether a `hold` block is open."""
        return self._holds > 0

    def release(self) -> None:
        """Close what `hold` keeps open now (the next session opens anew), e.g. before long work elsewhere."""
        with self._guard:
            held, self._held = self._held, None
        if held is not None:
            self._close_held(held)

    def _take_held(self) -> Any:
        """What `hold` kept, for this thread's next session (None if nothing, or another thread's)."""
        with self._guard:
            if self._held is None or self._held_by != threading.get_ident():
                return None
            held, self._held = self._held, None
            return held

    def _keep_held(self, held: Any) -> None:
        """Keep `held` for the next session, and let go of it if none comes within IDLE_SECONDS: a step
        that does other work (a model fit, a slow prediction) must not keep other processes out."""
        # A session opened inside this one kept its own: this one is newer. A close that fails (an I/O
        # error in its checkpoint) must not fail this session, whose work is done.
        with suppress(Exception):
            self.release()
        with self._guard:
            self._held, self._held_by = held, threading.get_ident()
            self._idle_deadline = time.monotonic() + IDLE_SECONDS
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._let_go_when_idle, name="warehouse-idle", daemon=True)
                self._watcher.start()

    def _let_go_when_idle(self) -> None:
        """The watcher: close what is kept once its deadline passes unused; end when nothing is kept."""
        while True:
            with self._guard:
                if self._held is None:
                    self._watcher = None  # the next kept connection starts a new watcher
                    return
                left = self._idle_deadline - time.monotonic()
                if left > 0:
                    self._guard.wait(left)  # a session may take it (and keep it again) meanwhile
                    continue
                held, self._held = self._held, None
            with suppress(Exception):  # a close that fails (an I/O error in its checkpoint) must not stop the watcher
                self._close_held(held)

    @abstractmethod
    def _close_held(self, held: Any) -> None: ...

    @abstractmethod
    def exists(self) -> bool:
        """Whether anything was ever written (a read of a warehouse never written finds nothing)."""

    @property
    @abstractmethod
    def default_staging_root(self) -> Path: ...


# -- DuckDB -----------------------------------------------------------------------------------


class DuckDBSession(Session):
    dialect = "duckdb"

    def __init__(self, con: Any, columns: dict[str, dict[str, str]] | None = None) -> None:
        self.con = con
        # Column lists read so far. While this process has the file open nobody else can change
        # them, so only this connection's own DDL (which clears it) makes them stale.
        self._columns = {} if columns is None else columns
        # Readers handed out: each keeps DuckDB's database open until it is read to the end or closed.
        self._readers: list[pa.RecordBatchReader] = []
        self._appended = 0  # rows `insert_arrow` appended in the open transaction

    def close_readers(self) -> None:
        """Close the readers this session handed out, so that closing the connection closes the file."""
        readers, self._readers = self._readers, []
        for reader in readers:
            with suppress(Exception):
                reader.close()

    def execute(self, sql: str, params: Params = None) -> None:
        if _DDL.match(sql):
            named = _DDL_NAMED.match(sql)
            if named:
                self._columns.pop(named.group(1).split(".")[-1].strip('"'), None)
            else:
                self._columns.clear()
        self.con.execute(sql, _bound(sql, params))

    def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, _bound(sql, params)).fetchall()

    def write(self, sql: str, params: Params = None) -> int:
        row = self.con.execute(sql, _bound(sql, params)).fetchone()
        return int(row[0]) if row else 0

    def records(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        cursor = self.con.execute(sql, _bound(sql, params))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION")
        self._appended = 0
        try:
            yield
            large = self._appended >= LARGE_COMMIT_ROWS
            try:
                if large:
                    # Checkpoint at the commit: the rows go into the file once, not into the write-ahead
                    # log first and into the file again when the connection closes.
                    self.con.execute("SET checkpoint_threshold = '0KB'")
                self.con.execute("COMMIT")
            finally:
                if large:
                    with suppress(duckdb.Error):  # must not hide why the commit failed
                        self.con.execute("RESET checkpoint_threshold")
        except BaseException:
            self._columns.clear()  # columns read after a rolled-back ALTER are gone again
            # A COMMIT that failed has already ended the transaction, and a connection DuckDB invalidated
            # refuses the ROLLBACK: either way the error to raise is the one that got here.
            with suppress(duckdb.Error):
                self.con.execute("ROLLBACK")
            raise

    @property
    def engine(self) -> Any:
        return self.con

    def share(self, name: str) -> None:
        pass  # the engine is the warehouse connection

    def fetch_into_engine(self, name: str, sql: str, params: Params = None) -> None:
        self.temp_table(name, sql, params)

    def adopt(self, name: str, table: pa.Table | pa.RecordBatchReader) -> None:
        adopt(self.con, name, table)

    def arrow(self, sql: str, params: Params = None) -> pa.Table:
        table: pa.Table = self.con.sql(sql, params=_bound(sql, params)).to_arrow_table()
        return table

    def lock_all(self, shared: bool = False) -> None:
        pass  # the file lock already serializes every writer

    def lock_partition(self, partition_key: str) -> None:
        pass

    def lock_schema(self) -> None:
        pass

    def hash(self, expression: str) -> str:
        return f"hash({expression})"

    def columns(self, table: str) -> dict[str, str]:
        if not self._columns:
            self._read_stored_columns()
        if table in self._columns:
            return dict(self._columns[table])
        rows = self.con.execute(
            "SELECT column_name, data_type, table_catalog = 'temp' FROM information_schema.columns "
            "WHERE table_name = $t ORDER BY ordinal_position",
            {"t": table},
        ).fetchall()
        found = {str(name): str(kind) for name, kind, _ in rows}
        # The stored tables change only through `execute` (which clears the cache); temp relations
        # also through the engine, so they are read every time.
        if not any(temporary for _, _, temporary in rows):
            self._columns[table] = found
        return dict(found)

    def _read_stored_columns(self) -> None:
        """Every stored table's and view's columns, in one query (a query per table costs about 3 ms)."""
        rows = self.con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = 'main' ORDER BY table_name, ordinal_position"
        ).fetchall()
        for table, name, kind in rows:
            self._columns.setdefault(str(table), {})[str(name)] = str(kind)

    def arrow_reader(self, sql: str, params: Params = None) -> pa.RecordBatchReader:
        reader = self.con.sql(sql, params=_bound(sql, params)).to_arrow_reader(_COPY_BATCH_ROWS)
        self._readers.append(reader)
        return reader

    def stage_arrow(self, name: str, data: ds.Dataset | pa.RecordBatchReader) -> None:
        self.con.register(name, data)  # a view over the data: read where used, never copied

    def insert_arrow(self, table: str, rows: pa.RecordBatchReader, constants: Mapping[str, Any]) -> int:
        self._appended_columns(table, rows, constants)
        self.con.register("appended_rows", rows)
        try:
            appended = self._insert_from(table, "appended_rows", rows.schema.names, constants)
            self._appended += appended
            return appended
        except duckdb.ConversionException as error:
            raise WarehouseError(f"Cannot insert into {table}: a value does not fit its column ({error}).") from error
        finally:
            with suppress(duckdb.Error):  # refused until the rollback after a failed statement; replaced by the next
                self.con.unregister("appended_rows")


class DuckDBBackend(Backend):
    """A DuckDB file: the default, for one machine."""

    dialect = "duckdb"

    def __init__(
        self,
        path: Path,
        ensure_schema: Callable[[Session], None],
        lock_timeout_seconds: float,
        memory_limit: str,
        threads: int,
    ) -> None:
        super().__init__(ensure_schema, memory_limit, threads)
        self.path = path
        self.location = str(path)
        # The file as DuckDB names it in its errors, resolved once: every open, turn and waiting marker
        # uses it, so that a later chdir or another spelling of the path cannot split them.
        self._real_path = os.path.realpath(path)
        self._tickets: dict[int, turns.Ticket | None] = {}  # each open connection's share of the turn, by id
        # Where staging goes by default: beside the file as named, whatever the working directory later.
        self._folder = Path(os.path.abspath(path)).parent
        self.lock_timeout_seconds = lock_timeout_seconds
        # When the connection `hold` keeps (with the column lists its sessions read) was opened.
        self._opened_at = 0.0
        # Processes waiting for the file leave a marker named by their PID here.
        self._waiting = Path(self._real_path + ".waiting")
        self._stand_back = False  # this process just let go of the file because of a waiter or the time limit

    def exists(self) -> bool:
        return os.path.exists(self._real_path)

    @property
    def default_staging_root(self) -> Path:
        return self._folder / "staging"

    @contextmanager
    def session(self, read_only: bool = False) -> Iterator[Session]:
        """Open the file for one short unit of work, waiting out other processes' locks.

        Inside `hold`, the file stays open for the next session (other processes wait
        meanwhile), for at most `HOLD_SECONDS` at a time, so that they get their turn.
        """
        if read_only and not self.exists():
            raise WarehouseError(
                f"No warehouse at {self.path}: nothing has been materialized yet. Run the `inputs` and "
                "`predictions` assets (for example `make demo`) or point BATCH_PREDICT_WAREHOUSE at your file."
            )
        taken = self._take_held()
        if taken is not None and not read_only and not taken[2]:
            self._close(taken[0])  # a read-only connection cannot serve a write: open the file anew
            taken = None
        if taken is not None:
            con, columns, writable = taken
        else:
            con, columns, writable = self._open(read_only), None, not read_only
            self._opened_at = time.monotonic()
        keep = False
        session = DuckDBSession(con, columns)
        try:
            if not read_only and not self._schema_ready:
                self._ensure_schema(session)
                self._schema_ready = True
            yield session
            session.close_readers()
            if self._keep() and _settled(con):
                # The session's temp tables stay until the connection closes: every statement that makes
                # one replaces any of the same name. A read-only connection serves only later reads.
                self._keep_held((con, session._columns, writable))
                keep = True
        except duckdb.Error as error:
            if _is_damage(error, self._real_path):
                raise self._damaged(error) from error
            raise
        finally:
            if not keep:
                session.close_readers()  # a reader left open would keep the file open past its turn
                self._close(con)

    def _keep(self) -> bool:
        """Whether to keep the connection for the next session: inside `hold`, for at most HOLD_SECONDS,
        and no longer than MIN_HOLD_SECONDS while another process waits for the file."""
        if not self._holds:
            return False
        held_for = time.monotonic() - self._opened_at
        if held_for >= HOLD_SECONDS:
            self._stand_back = True
            return False
        if held_for >= MIN_HOLD_SECONDS and self._others_waiting():
            self._stand_back = True
            return False
        return True

    def _others_waiting(self) -> bool:
        """Whether a live process other than this one waits for the file: its marker is in the waiting
        folder, named by its PID and holding its start time (a PID reused by another process is not it)."""
        try:
            markers = list(os.scandir(self._waiting))
        except OSError:
            return False
        waiting = False
        for marker in markers:
            pid = int(marker.name) if marker.name.isdigit() else 0
            if pid == os.getpid() or pid <= 0:
                continue
            try:
                alive = _start_time(pid) == Path(marker.path).read_text().strip()
            except OSError:
                alive = False
            if alive:
                waiting = True
            else:
                _forget(Path(marker.path))  # left by a process that died waiting
        return waiting

    def _forget_after_fork(self) -> None:
        super()._forget_after_fork()
        self._tickets.clear()  # the parent's connections and their shares of its turn

    def _close_held(self, held: Any) -> None:
        self._close(held[0])

    def _open(self, read_only: bool) -> Any:
        """Open the file, waiting out other processes' locks (and, after holding it, letting a waiter in first)."""
        Path(self._real_path).parent.mkdir(parents=True, exist_ok=True)
        if self._stand_back:
            self._stand_back = False
            until = time.monotonic() + YIELD_SECONDS
            while time.monotonic() < until and self._others_waiting():
                time.sleep(0.01)
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.02
        marker = self._waiting / str(os.getpid())
        try:
            while True:
                error: duckdb.Error | None = None
                try:
                    taken, turn = turns.take(self._real_path, exclusive=not read_only)
                except turns.TurnUnavailable as problem:
                    raise WarehouseError(
                        f"Cannot take a turn at the warehouse {self.path}: {problem}. Every process that opens "
                        "it takes its turn through that file, so that no two change it at once "
                        "(docs/operations.md, 'A damaged warehouse file')."
                    ) from problem
                if taken:
                    try:
                        con = engine_connection(self.memory_limit, self.threads, self._real_path, read_only)
                    except (duckdb.IOException, duckdb.ConnectionException) as failed:
                        turns.give_back(turn)
                        error = failed
                    except BaseException as failed:
                        turns.give_back(turn)
                        if isinstance(failed, duckdb.Error):
                            raise self._unusable(failed) from failed
                        raise
                    else:
                        self._tickets[id(con)] = turn
                        return con
                    # Another warehouse object of this process may keep the file open in the other mode
                    # (read-only against read-write) between its sessions; it lets go when idle.
                    here = _is_mode_conflict(error)
                    # Damage is no lock to wait out (a checksum error's "block" holds the word "lock"; DuckDB
                    # 2.0 raises it as a plain duckdb.Error, which does not come here, but an I/O error might).
                    if _is_damage(error, self._real_path) or not (here or _is_lock_conflict(error)):
                        raise self._unusable(error) from error
                    reason = str(error)
                    if not here:
                        reason += (
                            "; if that is a DuckDB session of your own (the duckdb command line, a notebook), close it"
                        )
                else:
                    # Another process has its turn at the file, or this one reads it and asks to write.
                    here = turns.held(self._real_path) > 0
                    reason = (
                        "this process has the file open read-only, and a write waits until that connection closes"
                        if here
                        else self._turn_holders()
                    )
                if time.monotonic() + delay > deadline:
                    holder = "another connection of this process" if here else "another process"
                    raise WarehouseLockTimeout(
                        f"The warehouse {self.path} stayed locked by {holder} for "
                        f"{self.lock_timeout_seconds:g}s ({reason}). Wait for the other run to finish, "
                        "or raise BATCH_PREDICT_LOCK_TIMEOUT_SECONDS."
                    ) from error
                # Say so, so that a process holding the file between its sessions lets this one in
                # (best effort: a folder this process cannot write only loses it the hint).
                _mark(marker)
                # Full jitter keeps several waiting runs from retrying in lockstep.
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, _MAX_RETRY_DELAY)
        finally:
            _forget(marker)

    def _turn_holders(self) -> str:
        lock = turns.sidecar(self._real_path)
        pids = turns.holders(self._real_path)
        who = f"PID {', '.join(map(str, pids))}" if pids else "another process"
        return (
            f"{who} holds its turn at the file through {lock}, until its connection closes or it ends; do not "
            "delete that file: runs would stop keeping each other out"
        )

    def _close(self, con: Any) -> None:
        """Close a connection of this backend and end its turn at the file."""
        ticket = self._tickets.pop(id(con), None)
        try:
            con.close()
        finally:
            turns.give_back(ticket)

    def _unusable(self, error: duckdb.Error) -> WarehouseError:
        if _is_damage(error, self._real_path):
            return self._damaged(error)
        return WarehouseError(
            f"Cannot open the warehouse {self.path} as a DuckDB database ({error}). "
            "Point BATCH_PREDICT_WAREHOUSE at a DuckDB file, or at a path that does not exist yet to start a new one."
        )

    def _damaged(self, error: duckdb.Error) -> WarehouseDamaged:
        first = str(error).strip().splitlines()[0]
        return WarehouseDamaged(
            f"The warehouse {self.path} may be damaged: DuckDB cannot read a block of it ({first}). The step is "
            "retried, in case another process was changing the file. If the retries fail the same way, the "
            "file is damaged: stop the runs that write to it, keep a copy of it, and salvage, restore or rebuild "
            "it (docs/operations.md, 'A damaged warehouse file')."
        )


# -- PostgreSQL -------------------------------------------------------------------------------

# Arrow types of the PostgreSQL type OIDs that cross into the engine (read from CSV text).
_FROM_PG = {
    25: pa.string(),  # text
    1043: pa.string(),  # varchar
    701: pa.float64(),  # float8
    700: pa.float64(),  # float4
    20: pa.int64(),  # int8
    23: pa.int32(),  # int4
    21: pa.int32(),  # int2
    16: pa.bool_(),  # bool
    1700: pa.float64(),  # numeric
}
_DUCKDB_OF_OID = {1184: "TIMESTAMPTZ", 1114: "TIMESTAMP", 1082: "DATE"}


def adbc_errors() -> type[Exception]:
    import adbc_driver_manager

    return adbc_driver_manager.Error


def _pg_error(error: Exception, location: str, url: str = "") -> Exception:
    """A psycopg or ADBC error as the warehouse's own, with no credential in it: retryable when trying
    again can help (a lock wait, a deadlock, a server that is down), else a `WarehouseError` (a wrong
    password or database name, a malformed URL, missing rights), which no retry can fix."""
    state = getattr(error, "sqlstate", None)
    raw = str(error).strip()
    # Judged on the driver's own words: a password such as "failed" masked in them would hide a refusal.
    refused = _REFUSED_CONNECTION.search(raw) if type(error).__name__ == "OperationalError" and not state else None
    text = raw
    password = _password(url)
    if password:
        text = text.replace(password, "***")
    first = redact(text.splitlines()[0] if text else type(error).__name__)
    if state in _RETRYABLE_SQLSTATE:
        return WarehouseLockTimeout(
            f"The warehouse {location} gave up waiting: {_RETRYABLE_SQLSTATE[state]} ({first}). Another run held "
            "what this one needed; the step is retried. If it keeps happening, raise BATCH_PREDICT_LOCK_TIMEOUT_SECONDS."
        )
    if type(error).__name__ == "OperationalError" and not state:
        if refused:
            # The line that says it: from the server's FATAL on, as the server wrote it (it names the user or
            # database, never the password, which masking there could garble); else libpq's line, masked.
            line = raw.split("\n")[raw[: refused.end()].count("\n")]
            fatal = line.find("FATAL:")
            reason = line[fatal:] if fatal >= 0 else line.removeprefix("connection failed: ")
            if fatal < 0 and password:
                reason = reason.replace(password, "***")
            return WarehouseError(
                f"The warehouse {location} refused the connection: {redact(reason)}. Check the user, password "
                "and database of BATCH_PREDICT_WAREHOUSE (a password can also come from PGPASSWORD or ~/.pgpass) "
                "and that the database exists; trying again cannot help, so nothing is retried."
            )
        return WarehouseUnavailable(
            f"Cannot reach the warehouse {location} ({first}). Check that the PostgreSQL server is up and "
            "BATCH_PREDICT_WAREHOUSE is right"
        )
    return WarehouseError(
        f"The warehouse {location} refused the work ({type(error).__name__}{f' {state}' if state else ''}: {first}). "
        "Check BATCH_PREDICT_WAREHOUSE (user, password, database) and the user's rights on the database."
    )


def _alive(con: Any) -> bool:
    """Whether a kept PostgreSQL connection still works (the server may have ended an idle session)."""
    import psycopg

    if con.closed or con.broken:
        return False
    try:
        con.execute("SELECT 1")
        con.rollback()
    except psycopg.Error:
        return False
    return True


def _password(url: str) -> str:
    """The password a PostgreSQL URL carries, to mask wherever a driver repeats it ('' if none or unreadable)."""
    if not url:
        return ""
    try:
        from psycopg.conninfo import conninfo_to_dict

        return str(conninfo_to_dict(url).get("password") or "")
    except Exception:
        _, _, rest = url.partition("://")
        userinfo = rest.rpartition("@")[0]
        return userinfo.partition(":")[2]


class PostgresSession(Session):
    dialect = "postgres"

    def __init__(self, con: Any, memory_limit: str, threads: int, url: str = "") -> None:
        self.con = con
        self.url = url
        self._reader: Any = None  # an ADBC connection for bulk reads of stored tables
        # Temp tables of this session: a read that uses one must go through the session itself.
        self._temps: set[str] = set()
        self._engine: Any = None
        self._memory_limit = memory_limit
        self._threads = threads

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        if self._reader is not None:
            self._reader.close()

    def temp_table(self, name: str, sql: str, params: Params = None) -> None:
        super().temp_table(name, sql, params)
        self._temps.add(name)

    def execute(self, sql: str, params: Params = None) -> None:
        self.con.execute(*postgres_statement(sql, params))

    def fetchall(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        return list(self.con.execute(*postgres_statement(sql, params)).fetchall())

    def write(self, sql: str, params: Params = None) -> int:
        return int(self.con.execute(*postgres_statement(sql, params)).rowcount)

    def records(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        cursor = self.con.execute(*postgres_statement(sql, params))
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        import psycopg

        # psycopg opened the transaction with the session's first statement; end it here.
        try:
            yield
            self.con.commit()
        except BaseException:
            # A lost connection refuses the rollback too: the error to raise is the one that got here.
            with suppress(psycopg.Error):
                self.con.rollback()
            raise

    @property
    def engine(self) -> Any:
        if self._engine is None:
            self._engine = engine_connection(self._memory_limit, self._threads)
        return self._engine

    def share(self, name: str) -> None:
        reader = self.engine.sql(f"SELECT * FROM {name}").to_arrow_reader(_COPY_BATCH_ROWS)
        self._copy_in(name, reader)

    def _copy_in(self, name: str, reader: pa.RecordBatchReader) -> None:
        """Create the session's temp table `name` shaped like `reader` and COPY its rows into it (binary)."""
        columns = ", ".join(f"{ident(field.name)} {pgcopy.column_type(field.type)}" for field in reader.schema)
        self.execute(f"DROP TABLE IF EXISTS {name}")
        self.execute(f"CREATE TEMP TABLE {name} ({columns})")
        self._temps.add(name)
        with self.con.cursor().copy(f"COPY {name} FROM STDIN (FORMAT binary)") as copy:
            copy.write(pgcopy.HEADER)
            for batch in reader:
                copy.write(pgcopy.encode(batch))
            copy.write(pgcopy.TRAILER)

    def _arrow(self, sql: str, params: Params) -> tuple[pa.Table, dict[str, str]]:
        """A warehouse query's rows as Arrow, and the DuckDB casts its temporal columns need.

        A query of stored tables only is read through ADBC, which hands over Arrow directly
        (2.5 s per 1M rows against 5 s for COPY text, see `make bench`); it sees what is
        committed, as this session does (READ COMMITTED). A query of this session's temp
        tables can only run in the session: COPY text, parsed by Arrow.
        """
        if self.url and not any(re.search(rf"\b{name}\b", sql) for name in self._temps):
            return self._adbc_arrow(sql, params), {}
        statement, bound = postgres_statement(sql, params)
        cursor = self.con.cursor()
        cursor.execute(f"SELECT * FROM ({statement}) AS q LIMIT 0", bound)
        description = cursor.description or []
        types: dict[str, pa.DataType] = {}
        casts: dict[str, str] = {}
        for column in description:
            if column.type_code in _DUCKDB_OF_OID:  # read as text, cast by DuckDB (it parses "+00")
                types[column.name] = pa.string()
                casts[column.name] = _DUCKDB_OF_OID[column.type_code]
            else:
                types[column.name] = _FROM_PG.get(column.type_code, pa.string())
        buffer = io.BytesIO()
        # COPY takes no server-side parameters: psycopg binds them into the statement on the client.
        with cursor.copy(f"COPY ({statement}) TO STDOUT (FORMAT csv)", bound) as copy:
            for data in copy:
                buffer.write(data)
        names = [column.name for column in description]
        if not buffer.tell():
            empty = pa.table({name: pa.array([], type=types[name]) for name in names})
            return empty, casts
        buffer.seek(0)
        table = pacsv.read_csv(
            buffer,
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                true_values=["t"],
                false_values=["f"],
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        return table, casts

    def _adbc_arrow(self, sql: str, params: Params) -> pa.Table:
        import psycopg

        if self._reader is None:
            import adbc_driver_postgresql.dbapi as adbc

            self._reader = adbc.connect(self.url)
        # The parameters are bound on the client, by psycopg's quoting, as for a COPY: ADBC reads a statement
        # without server-side parameters through binary COPY, and one with them row by row (10,000 rows of
        # 18 columns: 34 against 51 ms, medians of 20; 300,000: 0.48 against 0.79 s). psycopg writes a float
        # as an untyped literal, which PostgreSQL reads as numeric: compare it with a column, or cast it.
        statement, bound = postgres_statement(sql, params)
        if bound:
            statement = psycopg.ClientCursor(self.con).mogrify(statement, bound)
        with self._reader.cursor() as cursor:
            cursor.execute(statement)
            table: pa.Table = cursor.fetch_arrow_table()
        self._reader.rollback()
        return table

    def _engine_relation(self, table: pa.Table, casts: dict[str, str]) -> str:
        self.engine.register("_bp_transfer", table)
        return (
            "SELECT "
            + ", ".join(
                f"CAST({ident(name)} AS {casts[name]}) AS {ident(name)}" if name in casts else ident(name)
                for name in table.column_names
            )
            + " FROM _bp_transfer"
        )

    def fetch_into_engine(self, name: str, sql: str, params: Params = None) -> None:
        table, casts = self._arrow(sql, params)
        try:
            self.engine.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {self._engine_relation(table, casts)}")
        finally:
            self.engine.unregister("_bp_transfer")

    def adopt(self, name: str, table: pa.Table | pa.RecordBatchReader) -> None:
        if isinstance(table, pa.Table):
            table = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(_COPY_BATCH_ROWS))
        self._copy_in(name, table)

    def arrow(self, sql: str, params: Params = None) -> pa.Table:
        self.fetch_into_engine("_bp_arrow", sql, params)  # casts the temporal columns read as text
        try:
            table: pa.Table = self.engine.sql("SELECT * FROM _bp_arrow").to_arrow_table()
        finally:
            self.engine.execute("DROP TABLE _bp_arrow")
        return table

    def lock_all(self, shared: bool = False) -> None:
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        self.execute(f"SELECT {function}(hashtextextended($key, 0))", {"key": _ALL_PARTITIONS})

    def lock_schema(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended($key, 0))", {"key": _SCHEMA})

    def lock_partition(self, partition_key: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended($key, 0))", {"key": _PARTITION + partition_key})

    def hash(self, expression: str) -> str:
        return f"hashtextextended({expression}, 0)"

    def columns(self, table: str) -> dict[str, str]:
        rows = self.fetchall(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_attribute AS a
            WHERE a.attrelid = to_regclass($t) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            {"t": ident(table)},
        )
        return {str(name): str(kind) for name, kind in rows}

    def arrow_reader(self, sql: str, params: Params = None) -> pa.RecordBatchReader:
        table, casts = self._arrow(sql, params)
        if casts:
            try:
                table = self.engine.sql(self._engine_relation(table, casts)).to_arrow_table()
            finally:
                self.engine.unregister("_bp_transfer")
        return table.to_reader(_COPY_BATCH_ROWS)

    def stage_arrow(self, name: str, data: ds.Dataset | pa.RecordBatchReader) -> None:
        if isinstance(data, ds.Dataset):
            data = data.scanner(batch_size=_COPY_BATCH_ROWS).to_reader()
        self._copy_in(name, data)

    def insert_arrow(self, table: str, rows: pa.RecordBatchReader, constants: Mapping[str, Any]) -> int:
        """Binary COPY straight into the table: one pass, where a COPY into a temp table and an INSERT from
        it take two (1M predictions: 7.8 s -> 6.65 s for the whole step, docs/performance.md). Binary COPY
        converts nothing, so each column is cast here to the Arrow type of the table's column; a table with
        a column of another type (a `varchar(64)` someone made it) takes the rows through a temp table,
        converted by PostgreSQL as an INSERT converts them."""
        appending = self._appended_columns(table, rows, constants)
        names = list(appending)
        kinds = [pgcopy.arrow_type(kind) for kind in appending.values()]
        if any(kind is None for kind in kinds):
            self._copy_in("appended_rows", rows)
            appended = self._insert_from(table, "appended_rows", rows.schema.names, constants)
            self.execute("DROP TABLE appended_rows")
            return appended
        appended = 0
        with self.con.cursor().copy(
            f"COPY {table} ({', '.join(map(ident, names))}) FROM STDIN (FORMAT binary)"
        ) as copy:
            copy.write(pgcopy.HEADER)
            for batch in rows:
                columns = [
                    *(batch.column(name) for name in rows.schema.names),  # by name, whatever the batch's order
                    *(pa.repeat(pa.scalar(value), batch.num_rows) for value in constants.values()),
                ]
                try:
                    cast = [column.cast(kind) for column, kind in zip(columns, kinds, strict=True)]
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                    raise WarehouseError(
                        f"Cannot insert into {table}: a value does not fit its column ({error})."
                    ) from error
                copy.write(pgcopy.encode(pa.RecordBatch.from_arrays(cast, names=names)))
                appended += batch.num_rows
            copy.write(pgcopy.TRAILER)
        return appended


class PostgresBackend(Backend):
    """A PostgreSQL database that many writers on many machines share."""

    dialect = "postgres"

    def __init__(
        self,
        url: str,
        ensure_schema: Callable[[Session], None],
        lock_timeout_seconds: float,
        memory_limit: str,
        threads: int,
        staging_root: Path,
    ) -> None:
        super().__init__(ensure_schema, memory_limit, threads)
        self.url = url
        self.location = shown_warehouse(url)
        self.lock_timeout_seconds = lock_timeout_seconds
        self._staging_root = staging_root

    def exists(self) -> bool:
        return True

    def _close_held(self, held: Any) -> None:
        held.close()
        held.con.close()

    @property
    def default_staging_root(self) -> Path:
        return self._staging_root

    @contextmanager
    def session(self, read_only: bool = False) -> Iterator[Session]:
        """A connection for one unit of work; inside `hold`, the connection, its engine and its
        reader are kept for the next session (each session still ends its transaction)."""
        import psycopg

        session: PostgresSession | None = self._take_held()
        if session is not None and not _alive(session.con):
            session.close()
            session.con.close()
            session = None
        if session is None:
            session = self._connect()
        con = session.con
        keep = False
        try:
            try:
                if not self._schema_ready:
                    self._ensure_schema(session)
                    self._schema_ready = True
                yield session
                con.rollback()  # a read leaves nothing open
                keep = self._holds > 0 and (session._engine is None or _settled(session._engine))
            except (psycopg.Error, adbc_errors()) as error:
                raise _pg_error(error, self.location, self.url) from None
        finally:
            if keep:
                self._keep_held(session)
            else:
                session.close()
                con.close()

    def _connect(self) -> PostgresSession:
        import psycopg

        try:
            con = psycopg.connect(self.url, connect_timeout=max(1, int(min(self.lock_timeout_seconds, 30))))
        except psycopg.Error as error:
            raise _pg_error(error, self.location, self.url) from None
        try:
            con.execute("SET TimeZone = 'UTC'")
            # Times cast to text (a duplicate's detail) and read back as ISO, whatever the database's DateStyle.
            con.execute("SET DateStyle = 'ISO, MDY'")
            # Text crosses in UTF-8 whatever the database's encoding: binary COPY sends its bytes as they
            # are, read in the client encoding (a LATIN1 database would store 'è' as two characters).
            con.execute("SET client_encoding = 'UTF8'")
            # At least 1 ms: PostgreSQL reads 0 as "wait forever".
            con.execute(f"SET lock_timeout = {max(1, int(self.lock_timeout_seconds * 1000))}")
            con.commit()
        except psycopg.Error as error:
            con.close()
            raise _pg_error(error, self.location, self.url) from None
        return PostgresSession(con, self.memory_limit, self.threads, self.url)


def open_backend(
    location: str,
    ensure_schema: Callable[[Session], None],
    lock_timeout_seconds: float,
    memory_limit: str,
    threads: int,
    staging_root: Path | None = None,
) -> Backend:
    """The backend `BATCH_PREDICT_WAREHOUSE` names: a PostgreSQL URL, or else a DuckDB file path."""
    if location.startswith(POSTGRES_SCHEMES):
        return PostgresBackend(
            location,
            ensure_schema,
            lock_timeout_seconds,
            memory_limit,
            threads,
            staging_root or Path("data/staging").resolve(),
        )
    check_location(location)
    return DuckDBBackend(Path(location), ensure_schema, lock_timeout_seconds, memory_limit, threads)


def shown_warehouse(location: str) -> str:
    """BATCH_PREDICT_WAREHOUSE as messages and the UI show it: a PostgreSQL URL (checked at load) without its
    password, a DuckDB file path as it is."""
    if location.startswith(POSTGRES_SCHEMES):
        return redact_url(location, read_by_libpq=True)
    return location


def check_location(location: str) -> None:
    """Fail with a clear message for a URL of a database the warehouse cannot use."""
    scheme, separator, _ = location.partition("://")
    if separator and not location.startswith(POSTGRES_SCHEMES):
        raise WarehouseError(
            f"BATCH_PREDICT_WAREHOUSE={redact(location)!r} uses the scheme {scheme!r}, which the warehouse does not "
            "support. Use a DuckDB file path (data/warehouse.duckdb, the default) or a PostgreSQL URL "
            "(postgresql://user@host:port/database)."
        )
