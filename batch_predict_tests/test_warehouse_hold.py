"""`Warehouse.hold`: a DuckDB file kept open between the sessions of a run of many partitions, and let go
for a process that waits for it."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_predict.batch import _exclusive, predict_partition
from batch_predict.contract import FeatureContract
from batch_predict.models.registry import Registry
from batch_predict.models.types import LoadedModel
from batch_predict.settings import Settings
from batch_predict.warehouse import Source, SourceError, Warehouse, WarehouseError, WarehouseLockTimeout
from batch_predict.warehouse import connection as connection_module
from batch_predict.warehouse import landing as landing_module
from batch_predict.warehouse.landing import Landing

from .conftest import BOTH_BACKENDS, run_assets

CONTRACT = FeatureContract("record_id", "event_time", ("a", "b"))


def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths every DuckDB warehouse connection is opened on, from now on."""
    opens: list[str] = []
    real = connection_module.engine_connection

    def counting(memory_limit: str, threads: int, path: str = ":memory:", read_only: bool = False) -> object:
        opens.append(path)
        return real(memory_limit, threads, path, read_only)

    monkeypatch.setattr(connection_module, "engine_connection", counting)
    return opens


def counted_connects(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per connection the warehouse's backend opens from now on (DuckDB `_open`, PostgreSQL `_connect`)."""
    connects: list[int] = []
    backend = type(warehouse.backend)
    name = "_open" if hasattr(backend, "_open") else "_connect"
    real = getattr(backend, name)
    monkeypatch.setattr(backend, name, lambda self, *args: connects.append(1) or real(self, *args))
    return connects


def test_sessions_inside_a_hold_share_one_connection_and_stay_separate_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb", CONTRACT)
    with warehouse.session() as session:
        session.execute("CREATE TABLE t (x INTEGER)")
    opens = opened(monkeypatch)
    with warehouse.hold():
        for x in range(5):
            with warehouse.session() as session, session.transaction():
                session.execute("INSERT INTO t VALUES ($x)", {"x": x})
        # A failing session rolls back its own work only, and the next one starts clean.
        with pytest.raises(RuntimeError), warehouse.session() as session, session.transaction():
            session.execute("INSERT INTO t VALUES (99)")
            raise RuntimeError("boom")
        with warehouse.session() as session:
            assert session.fetchall("SELECT sum(x), count(*) FROM t") == [(10, 5)]
    # One open for the five sessions; the failed one closed its connection, so the last opened anew.
    assert len(opens) == 2
    # Outside a hold nothing stays open: another process can open the file at once.
    other = subprocess.run(
        [sys.executable, "-c", f"import duckdb; duckdb.connect({str(tmp_path / 'w.duckdb')!r}).close()"],
        capture_output=True,
        text=True,
    )
    assert other.returncode == 0, other.stderr


@BOTH_BACKENDS
def test_a_held_connection_starts_each_session_clean(warehouse_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a session leaves (a half-read result, a temp table, a failed transaction), the next
    session of the hold works, and only what was committed stays."""
    warehouse = Warehouse(warehouse_location, CONTRACT)
    with warehouse.session() as session, session.transaction():
        session.execute("CREATE TABLE held (x INTEGER)")
    connects = counted_connects(warehouse, monkeypatch)
    with warehouse.hold():
        with warehouse.session() as session, session.transaction():
            session.execute("INSERT INTO held VALUES (1)")
            session.engine.execute("SELECT * FROM range(10)").fetchone()  # half read
            session.temp_table("scratch", "SELECT 1 AS one")
        with warehouse.session() as session:
            session.engine.sql("SELECT 2").to_arrow_reader(10).read_all()
            session.temp_table("scratch", "SELECT 2 AS two")  # replaces the one left behind
            assert session.fetchall("SELECT * FROM scratch") == [(2,)]
        with pytest.raises(RuntimeError), warehouse.session() as session, session.transaction():
            session.execute("INSERT INTO held VALUES (2)")
            raise RuntimeError("boom")
        with warehouse.session() as session, session.transaction():
            session.execute("INSERT INTO held VALUES (3)")
        with warehouse.session() as session:
            assert sorted(session.fetchall("SELECT x FROM held")) == [(1,), (3,)]
    # One connection until the failed session closed it, one after.
    assert len(connects) == 2


def test_column_lists_follow_alter_and_rollback_inside_a_hold(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb", CONTRACT)
    with warehouse.hold():
        with warehouse.session() as session:
            session.execute("CREATE TABLE t (x INTEGER)")
            assert list(session.columns("t")) == ["x"]
        with warehouse.session() as session:
            session.execute("ALTER TABLE t ADD COLUMN y DOUBLE")
        with warehouse.session() as session:
            assert list(session.columns("t")) == ["x", "y"]
        with pytest.raises(RuntimeError), warehouse.session() as session, session.transaction():
            session.execute("ALTER TABLE t ADD COLUMN z DOUBLE")
            assert list(session.columns("t")) == ["x", "y", "z"]
            raise RuntimeError("roll back")
        with warehouse.session() as session:
            assert list(session.columns("t")) == ["x", "y"]
            # A temp table of the engine is read afresh every time, whatever made it.
            session.engine.execute("CREATE OR REPLACE TEMP TABLE tmp AS SELECT 1 AS one")
            assert list(session.columns("tmp")) == ["one"]
            session.engine.execute("CREATE OR REPLACE TEMP TABLE tmp AS SELECT 1 AS uno")
            assert list(session.columns("tmp")) == ["uno"]


def test_a_read_only_connection_serves_later_reads_but_never_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb", CONTRACT)
    with warehouse.session() as session:
        session.execute("CREATE TABLE t (x INTEGER)")
    opens = opened(monkeypatch)
    with warehouse.hold():
        for _ in range(2):  # the second read is served by the first one's read-only connection
            with warehouse.session(read_only=True) as session:
                assert session.fetchall("SELECT count(*) FROM t") == [(0,)]
        assert len(opens) == 1
        with warehouse.session() as session:  # a write opens the file anew, writable
            session.execute("INSERT INTO t VALUES (1)")
        assert len(opens) == 2
        with warehouse.session(read_only=True) as session:  # served by the held writable connection
            assert session.fetchall("SELECT count(*) FROM t") == [(1,)]
        assert len(opens) == 2
    with warehouse.session() as session:  # after the hold, nothing is left open that would refuse a write
        session.execute("INSERT INTO t VALUES (2)")
        assert session.fetchall("SELECT count(*) FROM t") == [(2,)]


@pytest.mark.parametrize("held_read_only", [True, False])
def test_another_warehouse_of_the_same_process_waits_for_a_held_connection_in_the_other_mode(
    tmp_path: Path, held_read_only: bool
) -> None:
    """DuckDB refuses a read-write and a read-only connection to one file in one process: a second
    warehouse object waits until the first lets go of what it holds (idle for IDLE_SECONDS)."""
    path = tmp_path / "w.duckdb"
    first, second = Warehouse(path, CONTRACT), Warehouse(path, CONTRACT)
    with first.session() as session:
        session.execute("CREATE TABLE t (x INTEGER)")
    with first.hold():
        with first.session(read_only=held_read_only) as session:
            assert session.fetchall("SELECT count(*) FROM t") == [(0,)]
        if held_read_only:
            with second.session() as session:  # read-write, while the first holds read-only
                session.execute("INSERT INTO t VALUES (1)")
        else:
            with second.session(read_only=True) as session:  # read-only, while the first holds read-write
                assert session.fetchall("SELECT count(*) FROM t") == [(0,)]
        with first.session(read_only=True) as session:
            assert session.fetchall("SELECT count(*) FROM t") == [(1 if held_read_only else 0,)]


HOLDER = """
import sys, time
from pathlib import Path
from batch_predict.contract import FeatureContract
from batch_predict.warehouse import Warehouse
from batch_predict.warehouse import connection
connection.HOLD_SECONDS = {hold_seconds}  # only a waiter may end a slice
warehouse = Warehouse(Path(sys.argv[1]), FeatureContract("record_id", "event_time", ("a", "b")))
with warehouse.session() as session:
    session.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
with warehouse.hold():
    until = time.monotonic() + float(sys.argv[2])
    said = False
    while time.monotonic() < until:
        with warehouse.session() as session:
            session.execute("INSERT INTO t VALUES (1)")
        if not said:  # the file is held now, with a row in it
            print("holding", flush=True)
            said = True
        time.sleep(0.005)
print("done", flush=True)
"""


@contextmanager
def holder_process(path: Path, seconds: float, hold_seconds: float = 600) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the warehouse file for `seconds`, once it holds it; killed when the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(hold_seconds=hold_seconds), str(path), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read() if holder.stderr else ""
        yield holder
    finally:
        os.killpg(holder.pid, 9)
        holder.wait()


def test_a_process_holding_the_file_lets_a_waiting_process_in(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with Warehouse(path, CONTRACT).session():  # make the file
        pass
    with holder_process(path, seconds=20) as holder:
        waiter = Warehouse(path, CONTRACT, lock_timeout_seconds=8)
        started = time.monotonic()
        with waiter.session() as session:
            rows = session.fetchall("SELECT count(*) FROM t")
        assert rows[0][0] > 0
        assert holder.poll() is None, "the holder finished: the waiter got in only because it stopped"
        assert time.monotonic() - started < 20
        # The waiter's marker is gone once it got in.
        assert not (tmp_path / "w.duckdb.waiting" / str(os.getpid())).exists()


def test_without_a_waiter_marker_a_held_file_stays_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a waiter that does not say it waits times out behind the holder."""
    path = tmp_path / "w.duckdb"
    with Warehouse(path, CONTRACT).session():
        pass
    with holder_process(path, seconds=20):
        monkeypatch.setattr(connection_module, "_mark", lambda marker: None)
        silent = Warehouse(path, CONTRACT, lock_timeout_seconds=3)
        with pytest.raises(WarehouseLockTimeout, match="stayed locked"), silent.session():
            pass


def test_a_marker_left_by_a_dead_process_is_ignored_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.duckdb"
    warehouse = Warehouse(path, CONTRACT)
    with warehouse.session() as session:
        session.execute("CREATE TABLE t (x INTEGER)")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    waiting = tmp_path / "w.duckdb.waiting"
    waiting.mkdir()
    (waiting / dead.stdout.strip()).touch()
    opens = opened(monkeypatch)
    with warehouse.hold():
        until = time.monotonic() + 3 * connection_module.MIN_HOLD_SECONDS
        while time.monotonic() < until:
            with warehouse.session() as session:
                session.execute("INSERT INTO t VALUES (1)")
    assert len(opens) == 1  # the dead process's marker did not make the holder let go
    assert not any(waiting.iterdir())


def test_an_unreadable_file_is_still_a_clear_error_inside_a_hold(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    path.write_text("not a database")
    warehouse = Warehouse(path, CONTRACT)
    with warehouse.hold(), pytest.raises(WarehouseError, match="Cannot open the warehouse"), warehouse.session():
        pass


@BOTH_BACKENDS
def test_a_run_of_many_partitions_reads_the_landing_files_once_unless_they_change(
    warehouse_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a hold, the landing rows staged for one snapshot serve the next while the files are the
    same; a file that lands, changes or goes in between is read."""
    monkeypatch.setattr(landing_module, "RACY_SECONDS", 0)  # the files here are all seconds old
    features = ("a", "b")
    warehouse = Warehouse(warehouse_location, FeatureContract("record_id", "event_time", features))
    root = tmp_path / "landing"
    root.mkdir()
    day = datetime(2026, 3, 1, tzinfo=UTC)

    def land(name: str, ids: list[str], start: datetime) -> None:
        table = pa.table(
            {
                "record_id": ids,
                "event_time": [start + timedelta(hours=i) for i in range(len(ids))],
                "a": [1.0] * len(ids),
                "b": [2.0] * len(ids),
            }
        )
        pq.write_table(table, root / name)

    land("one.parquet", ["r1", "r2"], day)
    land("two.parquet", ["r3", "r4", "r5"], day + timedelta(days=1))
    staged: list[int] = []
    real = Landing._stage_all
    monkeypatch.setattr(Landing, "_stage_all", lambda self, *args: staged.append(1) or real(self, *args))
    source = Source(root=root, glob="*.parquet")

    def snapshot(day_number: int) -> int:
        start = day + timedelta(days=day_number)
        key = f"{start:%Y-%m-%d}"
        return warehouse.snapshot_inputs(source, key, start, start + timedelta(days=1), "run").valid_rows

    with warehouse.hold():
        assert snapshot(0) == 2
        assert snapshot(1) == 3
        assert len(staged) == 1  # the second snapshot read what the first staged
        land("three.parquet", ["r6"], day + timedelta(days=2))
        assert snapshot(2) == 1
        land("two.parquet", ["r3", "r4", "r5", "r7"], day + timedelta(days=1))  # rewritten, one more record
        assert snapshot(1) == 4
        (root / "three.parquet").unlink()
        with pytest.raises(SourceError, match="now holds 0 in its window"):  # the shrink guard saw it go
            snapshot(2)
        assert len(staged) == 4
    with warehouse.hold():
        assert snapshot(0) == 2  # a new hold (a new run) reads the files afresh
    assert len(staged) == 5


TURN_PROBE = """
import sys, duckdb
from batch_predict.warehouse import turns
taken, ticket = turns.take(sys.argv[1], exclusive=True)
if not taken:
    sys.exit("no turn")
duckdb.connect(sys.argv[1]).close()
turns.give_back(ticket)
"""


@pytest.mark.parametrize(("predict_seconds", "lets_go"), [(connection_module.IDLE_SECONDS + 0.75, True), (0.0, False)])
def test_a_held_warehouse_is_let_go_while_a_slow_prediction_runs(
    settings: Settings,
    warehouse: Warehouse,
    source: Source,
    landing: Path,
    registry: Registry,
    predict_seconds: float,
    lets_go: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process can open the DuckDB file while a run predicts a partition for longer than the hold's
    idle time, and the publish opens it anew; a quick prediction keeps the connection that read the work
    for the publish (one connection for the partition). Both partitions are of several chunks."""
    day = datetime(2026, 3, 1, tzinfo=UTC)
    warehouse.snapshot_inputs(source, "2026-03-01", day, day + timedelta(days=1), "snap")
    model = registry.load("champion")
    opened_elsewhere: list[bool] = []
    real = LoadedModel.predict_proba

    def predict_and_look(self: LoadedModel, *args: Any, **kwargs: Any) -> Any:
        if not opened_elsewhere:
            time.sleep(predict_seconds)
            # The file and its turn: a connection closed without giving its turn back would keep this out.
            probe = subprocess.run(
                [sys.executable, "-c", TURN_PROBE, os.path.realpath(settings.warehouse)], capture_output=True
            )
            opened_elsewhere.append(probe.returncode == 0)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LoadedModel, "predict_proba", predict_and_look)
    # Kept: long enough for the probe (a Python start and an import) on a slow machine.
    monkeypatch.setattr(connection_module, "IDLE_SECONDS", 30.0 if not lets_go else connection_module.IDLE_SECONDS)
    connects = counted_connects(warehouse, monkeypatch)
    with warehouse.hold():
        outcome = predict_partition(warehouse, model, "2026-03-01", "run", chunk_size=100)
    assert outcome.work.own > 100  # several chunks
    assert opened_elsewhere == [lets_go]
    assert len(connects) == (2 if lets_go else 1)
    assert outcome.published.completeness.passed


PARTITION_OWNER = """
import sys, time
from pathlib import Path
from batch_predict.batch import _exclusive
from batch_predict.contract import FeatureContract
from batch_predict.warehouse import Warehouse
warehouse = Warehouse(Path(sys.argv[1]), FeatureContract("record_id", "event_time", ("a", "b")), lock_timeout_seconds=20)
with _exclusive(Path(sys.argv[2])):
    print("staging locked", flush=True)
    time.sleep(1)
    with warehouse.session() as session:  # reads its work, publishes: needs the file
        session.fetchall("SELECT 1")
print("published", flush=True)
"""


def test_a_run_that_holds_the_file_lets_it_go_before_waiting_for_a_partitions_staging_lock(tmp_path: Path) -> None:
    """Two runs of one partition: the one that waits for the staging lock must not keep the file the
    other needs to finish (else both wait until one times out)."""
    path, lock = tmp_path / "w.duckdb", tmp_path / "staging" / "2026-03-01.lock"
    warehouse = Warehouse(path, CONTRACT, lock_timeout_seconds=20)
    with warehouse.session():
        pass
    owner = subprocess.Popen(
        [sys.executable, "-c", PARTITION_OWNER, str(path), str(lock)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "staging locked"
        started = time.monotonic()
        with warehouse.hold():
            with warehouse.session() as session:  # the previous partition's last session: kept
                session.fetchall("SELECT 1")
            with _exclusive(lock, before_waiting=warehouse.release):
                waited = time.monotonic() - started
        assert owner.wait(timeout=30) == 0, owner.stderr.read() if owner.stderr else ""
        assert owner.stdout.readline().strip() == "published"
        assert waited < 15  # not the other run's lock timeout
    finally:
        if owner.poll() is None:
            os.killpg(owner.pid, 9)
            owner.wait()


def test_a_waiting_marker_is_only_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that cannot write the waiting folder still opens the file; a marker left by a PID now
    used by another process (another start time) does not make a holder let go."""
    path = tmp_path / "w.duckdb"
    warehouse = Warehouse(path, CONTRACT)
    with warehouse.session() as session:
        session.execute("CREATE TABLE t (x INTEGER)")
    waiting = tmp_path / "w.duckdb.waiting"
    waiting.mkdir()
    (waiting / str(os.getppid())).write_text("1")  # a live PID, but not the process that waited
    opens = opened(monkeypatch)
    with warehouse.hold():
        until = time.monotonic() + 3 * connection_module.MIN_HOLD_SECONDS
        while time.monotonic() < until:
            with warehouse.session() as session:
                session.execute("INSERT INTO t VALUES (1)")
    assert len(opens) == 1
    assert not (waiting / str(os.getppid())).exists()
    # A waiting "folder" that is a file: no marker can be written or removed there, even by root.
    waiting.rmdir()
    waiting.write_text("")
    with holder_process(path, seconds=4, hold_seconds=0.5):
        reader = Warehouse(path, CONTRACT, lock_timeout_seconds=15)
        with reader.session(read_only=True) as session:  # waits out the holder's slices, without a marker
            assert session.fetchall("SELECT count(*) FROM t")[0][0] > 0


def test_a_landing_file_replaced_with_the_same_size_and_times_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A corrected copy put in place with its size and modification time kept (`cp -p`, `rsync -t`) is
    not mistaken for the staged one: its inode or change time differ."""
    monkeypatch.setattr(landing_module, "RACY_SECONDS", 0)
    root = tmp_path / "landing"
    root.mkdir()
    day = datetime(2026, 3, 1, tzinfo=UTC)

    def land(path: Path, value: float) -> None:
        pq.write_table(
            pa.table({"record_id": ["r1", "r2"], "event_time": [day, day], "a": [value] * 2, "b": [value] * 2}), path
        )

    land(root / "day.parquet", 1.0)
    warehouse = Warehouse(tmp_path / "w.duckdb", CONTRACT)
    source = Source(root=root, glob="*.parquet")
    with warehouse.hold():
        warehouse.snapshot_inputs(source, "2026-03-01", day, day + timedelta(days=1), "first")
        land(tmp_path / "fixed.parquet", 7.0)
        times = (root / "day.parquet").stat()
        assert (tmp_path / "fixed.parquet").stat().st_size == times.st_size
        os.utime(tmp_path / "fixed.parquet", ns=(times.st_atime_ns, times.st_mtime_ns))
        os.replace(tmp_path / "fixed.parquet", root / "day.parquet")
        warehouse.snapshot_inputs(source, "2026-03-01", day, day + timedelta(days=1), "second")
        with warehouse.session() as session:
            assert session.fetchall("SELECT DISTINCT a FROM inputs") == [(7.0,)]


def test_a_landing_file_changed_just_now_is_not_trusted_to_be_the_staged_one(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    root.mkdir()
    day = datetime(2026, 3, 1, tzinfo=UTC)
    pq.write_table(pa.table({"record_id": ["r1"], "event_time": [day], "a": [1.0], "b": [1.0]}), root / "d.parquet")
    warehouse = Warehouse(tmp_path / "w.duckdb", CONTRACT)
    with warehouse.hold():
        engine = warehouse.landing_engine()
        assert warehouse.landing._fingerprint(engine, Source(root=root, glob="*.parquet")) == ""


def land_one(root: Path, name: str, record_id: str) -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    pq.write_table(pa.table({"record_id": [record_id], "event_time": [day], "a": [1.0], "b": [1.0]}), root / name)


def held_inputs(tmp_path: Path, root: Path, runs: list[Any]) -> list[list[str]]:
    """Snapshot one partition inside one hold, calling each of `runs` before its snapshot; the record ids
    the partition's inputs hold after each."""
    day = datetime(2026, 3, 1, tzinfo=UTC)
    warehouse = Warehouse(tmp_path / "w.duckdb", CONTRACT)
    source = Source(root=root, glob="*.parquet")
    found = []
    with warehouse.hold():
        for run, before in enumerate(runs):
            before()
            warehouse.snapshot_inputs(source, "2026-03-01", day, day + timedelta(days=1), f"r{run}", allow_shrink=True)
            with warehouse.session() as session:
                found.append([row[0] for row in session.fetchall("SELECT record_id FROM inputs ORDER BY 1")])
    return found


def test_a_landing_file_that_comes_between_the_check_and_the_read_is_not_kept_once_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staged rows are what the glob matched when they were read, which may be more than the check
    saw: they are reused only while the files are still the ones fingerprinted."""
    monkeypatch.setattr(landing_module, "RACY_SECONDS", 0)
    root = tmp_path / "landing"
    root.mkdir()
    land_one(root, "a.parquet", "a1")
    check = Landing.check_source

    def check_then_land(self: Landing, con: Any, source: Source) -> list[str]:
        paths = check(self, con, source)
        if not (root / "b.parquet").exists() and not (root / "b.gone").exists():
            land_one(root, "b.parquet", "b1")  # lands after the check's glob, before the read
        return paths

    monkeypatch.setattr(Landing, "check_source", check_then_land)

    def remove_b() -> None:
        (root / "b.parquet").rename(root / "b.gone")

    assert held_inputs(tmp_path, root, [lambda: None, remove_b]) == [["a1", "b1"], ["a1"]]


def test_rows_staged_while_a_file_was_too_new_to_trust_are_not_mistaken_for_the_earlier_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files staged and trusted, then staged again while one was too new to trust, then back as they were
    the first time: the rows held are the second staging's, so they are read again."""
    root = tmp_path / "landing"
    root.mkdir()
    land_one(root, "a.parquet", "a1")

    def trusted(seconds: float) -> Any:
        return lambda: monkeypatch.setattr(landing_module, "RACY_SECONDS", seconds)

    def land_b_too_new() -> None:
        land_one(root, "b.parquet", "b1")
        monkeypatch.setattr(landing_module, "RACY_SECONDS", 10**9)

    def remove_b() -> None:
        (root / "b.parquet").unlink()
        monkeypatch.setattr(landing_module, "RACY_SECONDS", 0)

    assert held_inputs(tmp_path, root, [trusted(0), land_b_too_new, remove_b]) == [["a1"], ["a1", "b1"], ["a1"]]


@BOTH_BACKENDS
def test_a_held_connection_no_session_uses_is_let_go(warehouse_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a hold, work between sessions that lasts longer than IDLE_SECONDS (a model fit) does not
    keep the connection: on DuckDB, another process can open the file meanwhile."""
    warehouse = Warehouse(warehouse_location, CONTRACT)
    with warehouse.session() as session, session.transaction():
        session.execute("CREATE TABLE idle (x INTEGER)")
    connects = counted_connects(warehouse, monkeypatch)
    with warehouse.hold():
        with warehouse.session() as session:
            session.fetchall("SELECT 1")
        with warehouse.session() as session:  # at once: the kept connection
            session.fetchall("SELECT 1")
        assert len(connects) == 1
        time.sleep(connection_module.IDLE_SECONDS + 0.5)
        if not warehouse_location.startswith("postgresql"):
            probe = subprocess.run(
                [sys.executable, "-c", f"import duckdb; duckdb.connect({warehouse_location!r}).close()"],
                capture_output=True,
                text=True,
            )
            assert probe.returncode == 0, probe.stderr
        with warehouse.session() as session:
            assert session.fetchall("SELECT count(*) FROM idle") == [(0,)]
    assert len(connects) == 2


def test_a_run_leaves_the_warehouse_closed_when_it_ends(settings: Settings, landing: Path, registry: Registry) -> None:
    assert run_assets(settings, ["inputs", "predictions"], "2026-03-01").success
    probe = subprocess.run(
        [sys.executable, "-c", f"import duckdb; duckdb.connect({str(settings.warehouse)!r}).close()"],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr


def test_a_close_that_fails_does_not_stop_letting_go_of_idle_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher that lets go of an idle connection survives a close that raises (an I/O error in its
    checkpoint): the next idle connection is let go too, and another process can open the file."""
    path = tmp_path / "warehouse.duckdb"
    warehouse = Warehouse(path, CONTRACT)
    with warehouse.session() as session, session.transaction():
        session.execute("CREATE TABLE idle (x INTEGER)")
    backend = type(warehouse.backend)
    close = backend._close_held
    failures: list[int] = []

    def failing_once(self: Any, held: Any) -> None:
        close(self, held)
        if not failures:
            failures.append(1)
            raise OSError("the disk went away for a moment")

    monkeypatch.setattr(backend, "_close_held", failing_once)
    with warehouse.hold():
        for _ in range(2):
            with warehouse.session() as session:
                session.fetchall("SELECT 1")
            time.sleep(connection_module.IDLE_SECONDS + 0.5)
        assert failures == [1]
        probe = subprocess.run(
            [sys.executable, "-c", f"import duckdb; duckdb.connect({str(path)!r}).close()"],
            capture_output=True,
            text=True,
        )
        assert probe.returncode == 0, probe.stderr
