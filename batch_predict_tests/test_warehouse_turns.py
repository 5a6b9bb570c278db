"""Turns at a DuckDB file (`batch_predict.warehouse.turns`): every connection holds an `flock` beside the
file for its whole life, shared to read and exclusive to write, whatever DuckDB's own lock says."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import pytest

from batch_predict.contract import FeatureContract
from batch_predict.warehouse import Warehouse, WarehouseLockTimeout, turns
from batch_predict.warehouse import connection as connection_module

CONTRACT = FeatureContract("record_id", "event_time", ("a", "b"))

TAKER = """
import sys, time
from batch_predict.warehouse import turns
assert turns.take(sys.argv[1], exclusive=sys.argv[2] == "exclusive")[0]
print("taken", flush=True)
sys.stdin.read()
"""


@contextmanager
def other_process_turn(path: Path, mode: str) -> Iterator[int]:
    """Another process takes a turn at `path` (and opens no DuckDB connection) until the block ends; its PID."""
    process = subprocess.Popen(
        [sys.executable, "-c", TAKER, os.path.realpath(path), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == b"taken\n"
        yield process.pid
    finally:
        process.kill()
        process.wait()


def made(tmp_path: Path) -> Warehouse:
    warehouse = Warehouse(tmp_path / "w.duckdb", CONTRACT, lock_timeout_seconds=1.5)
    with warehouse.session() as session:
        session.execute("CREATE TABLE t (x INTEGER)")
        session.execute("INSERT INTO t VALUES (1)")
    return warehouse


def test_a_writer_waits_for_another_process_turn_though_duckdb_would_let_it_in(tmp_path: Path) -> None:
    warehouse = made(tmp_path)
    with other_process_turn(warehouse.backend.path, "exclusive") as pid:
        with duckdb.connect(str(warehouse.backend.path)) as con:  # DuckDB's own lock is free
            assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)
        for read_only in (False, True):
            held = rf"another process .*PID {pid} holds its turn at the file through .*w\.duckdb\.lock.*do not delete"
            with pytest.raises(WarehouseLockTimeout, match=held), warehouse.session(read_only=read_only):
                pass
    with warehouse.session() as session:  # the other process's turn ended with it
        session.execute("INSERT INTO t VALUES (2)")
    assert turns.held(os.path.realpath(warehouse.backend.path)) == 0


def test_readers_share_a_turn_and_a_writer_waits_for_them(tmp_path: Path) -> None:
    warehouse = made(tmp_path)
    with other_process_turn(warehouse.backend.path, "shared"):
        with warehouse.session(read_only=True) as session:
            assert session.fetchall("SELECT count(*) FROM t") == [(1,)]
        with pytest.raises(WarehouseLockTimeout, match="another process"), warehouse.session():
            pass


def test_a_process_keeps_its_turn_when_it_closes_another_descriptor_of_the_file(tmp_path: Path) -> None:
    """A POSIX `fcntl` lock, DuckDB's own, is let go when the process closes any descriptor of the file;
    the turn is not. Another process then gets past DuckDB's lock, but not past the turn."""
    warehouse = made(tmp_path)
    path = warehouse.backend.path
    other = Warehouse(path, CONTRACT, lock_timeout_seconds=1.5)
    probe = (
        "import sys, duckdb\n"
        "from batch_predict.contract import FeatureContract\n"
        "from batch_predict.warehouse import Warehouse, WarehouseLockTimeout\n"
        "with duckdb.connect(sys.argv[1], read_only=True) as con: con.execute('SELECT 1')\n"
        "print('duckdb let me in', flush=True)\n"
        "try:\n"
        "    with Warehouse(sys.argv[1], FeatureContract('record_id', 'event_time', ('a',)), lock_timeout_seconds=1.5)"
        ".session(read_only=True): print('turn taken')\n"
        "except WarehouseLockTimeout as error: print('waited:', error)\n"
    )
    with warehouse.session() as session:
        session.execute("INSERT INTO t VALUES (2)")
        path.read_bytes()  # opens and closes another descriptor of the file: DuckDB's lock is gone
        found = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60)
        assert "duckdb let me in" in found.stdout, found.stderr
        assert "waited:" in found.stdout and f"PID {os.getpid()} holds its turn" in found.stdout, (
            found.stdout + found.stderr
        )
        assert turns.held(os.path.realpath(path)) == 1
    with other.session(read_only=True) as session:
        assert session.fetchall("SELECT count(*) FROM t") == [(2,)]


def test_sessions_of_one_process_share_its_turn_until_the_last_one_closes(tmp_path: Path) -> None:
    warehouse = made(tmp_path)
    real = os.path.realpath(warehouse.backend.path)
    with warehouse.session() as outer:
        with warehouse.session() as inner:  # DuckDB shares the database between them: so do turns
            inner.execute("INSERT INTO t VALUES (2)")
            assert turns.held(real) == 2
        assert turns.held(real) == 1
        outer.execute("INSERT INTO t VALUES (3)")
    assert turns.held(real) == 0
    with warehouse.hold():
        with warehouse.session() as session:
            session.execute("INSERT INTO t VALUES (4)")
        assert turns.held(real) == 1  # the kept connection keeps its turn
        warehouse.backend.release()
        assert turns.held(real) == 0
    # A reader of this process does not take a writer's turn: upgrading an flock lets go of it first.
    taken, turn = turns.take(real, exclusive=False)
    try:
        assert taken and turn is not None
        assert turns.take(real, exclusive=True) == (False, None)
        assert turns.held(real) == 1
    finally:
        turns.give_back(turn)
    assert turns.held(real) == 0
    # A ticket given back twice ends no other connection's share of the turn.
    (_, first), (_, second) = turns.take(real, exclusive=True), turns.take(real, exclusive=True)
    turns.give_back(first)
    turns.give_back(first)
    assert turns.held(real) == 1
    turns.give_back(second)
    assert turns.held(real) == 0


def test_a_forked_child_takes_its_own_turn_and_leaves_its_parents_be(tmp_path: Path) -> None:
    warehouse = made(tmp_path)
    real = os.path.realpath(warehouse.backend.path)
    taken, turn = turns.take(real, exclusive=True)
    assert taken
    try:
        pid = os.fork()
        if pid == 0:  # the child: the parent's turn shuts it out, and its try does not end the parent's
            code = 0 if turns.take(real, exclusive=False) == (False, None) and turns.held(real) == 0 else 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with other_process_turn_attempt(real) as taken:
            assert not taken
    finally:
        turns.give_back(turn)
    with other_process_turn_attempt(real) as taken:
        assert taken


FORKER = """
import os, sys, time
from batch_predict.contract import FeatureContract
from batch_predict.warehouse import Warehouse
warehouse = Warehouse(sys.argv[1], FeatureContract("record_id", "event_time", ("a", "b")))
with warehouse.session() as session:
    session.execute("INSERT INTO t VALUES (5)")
    if os.fork() == 0:
        time.sleep(60)  # a child that outlives its parent, as a stray worker does
        os._exit(0)
    print("forked", flush=True)
    time.sleep(60)
"""


def test_a_forked_child_that_outlives_its_parent_does_not_keep_the_parents_turn(tmp_path: Path) -> None:
    warehouse = made(tmp_path)
    parent = subprocess.Popen(
        [sys.executable, "-c", FORKER, str(warehouse.backend.path)], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == b"forked\n"
        parent.kill()  # SIGKILL to the parent alone: its child lives on
        parent.wait()
        with warehouse.session() as session:  # the lock timeout is 1.5 s
            assert session.fetchall("SELECT count(*) FROM t") == [(2,)]  # the parent's insert was committed
    finally:
        with suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


def test_a_reader_left_open_does_not_keep_the_file_past_its_turn(tmp_path: Path) -> None:
    """A reader not read to the end keeps DuckDB's database open; the session closes it with the connection."""
    warehouse = made(tmp_path)
    left: list[object] = []
    with pytest.raises(RuntimeError), warehouse.session() as session:
        reader = session.arrow_reader("SELECT range AS x FROM range(1000000)")  # type: ignore[attr-defined]
        left.append(reader)
        reader.read_next_batch()
        raise RuntimeError("the step failed while it streamed")
    assert turns.held(os.path.realpath(warehouse.backend.path)) == 0
    script = "import sys, duckdb; duckdb.connect(sys.argv[1]).close(); print('opened')"
    found = subprocess.run([sys.executable, "-c", script, str(warehouse.backend.path)], capture_output=True, text=True)
    assert found.stdout.strip() == "opened", found.stderr
    assert left  # the reader is still referenced: it no longer holds the file


class FailingClose:
    """A connection whose close closes it, then raises (an I/O error in its checkpoint)."""

    def __init__(self, con: Any) -> None:
        self._con = con

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def close(self) -> None:
        self._con.close()
        raise duckdb.IOException("simulated I/O error on close")


def test_a_kept_connection_whose_close_fails_neither_fails_the_next_session_nor_keeps_a_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = made(tmp_path)
    real = os.path.realpath(warehouse.backend.path)
    opening = connection_module.engine_connection
    monkeypatch.setattr(connection_module, "engine_connection", lambda *args: FailingClose(opening(*args)))
    with warehouse.hold():
        with warehouse.session(read_only=True) as outer:
            with warehouse.session(read_only=True) as inner:  # kept when it ends
                inner.fetchall("SELECT 1")
            outer.fetchall("SELECT 1")
        # The outer one is kept in its place: the inner one's close raised, and the outer session still succeeded.
        assert turns.held(real) >= 1
        with suppress(duckdb.IOException):
            warehouse.backend.release()
    assert turns.held(real) == 0


def test_a_relative_path_keeps_its_file_and_lock_after_a_chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    warehouse = Warehouse(Path("data/w.duckdb"), CONTRACT)
    with warehouse.session() as session:
        session.execute("CREATE TABLE t (x INTEGER)")
    monkeypatch.chdir(tmp_path / "b")
    assert warehouse.exists()
    assert warehouse.staging_root == tmp_path / "a" / "data" / "staging"
    with warehouse.session() as session:
        session.execute("INSERT INTO t VALUES (1)")
    with warehouse.session(read_only=True) as session:
        assert session.fetchall("SELECT count(*) FROM t") == [(1,)]
    assert sorted(p.name for p in (tmp_path / "a" / "data").iterdir()) == ["w.duckdb", "w.duckdb.lock"]
    assert list((tmp_path / "b").iterdir()) == []


FORK_IN_HOLD = """
import os, sys, time
from batch_predict.contract import FeatureContract
from batch_predict.warehouse import Warehouse, WarehouseLockTimeout, turns
from batch_predict.warehouse import connection
connection.IDLE_SECONDS = 60  # the parent keeps its connection, and its turn, while the child tries
warehouse = Warehouse(sys.argv[1], FeatureContract("record_id", "event_time", ("a", "b")), lock_timeout_seconds=1)
with warehouse.hold():
    with warehouse.session() as session:  # kept: the parent holds its exclusive turn
        session.execute("INSERT INTO t VALUES (7)")
    pid = os.fork()
    if pid == 0:
        try:
            with warehouse.session() as session:
                session.execute("INSERT INTO t VALUES (8)")
            os._exit(3)  # wrote through the parent's connection, or beside its turn
        except WarehouseLockTimeout:
            os._exit(0)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), turns.held(os.path.realpath(sys.argv[1])))
"""


def test_a_child_forked_inside_a_hold_waits_for_its_parents_turn(tmp_path: Path) -> None:
    warehouse = made(tmp_path)
    parent = subprocess.Popen(
        [sys.executable, "-c", FORK_IN_HOLD, str(warehouse.backend.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = parent.communicate(timeout=60)  # a child stuck on a lock held at the fork never ends
    finally:
        with suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
    assert out.split() == ["0", "1"], out + err
    with warehouse.session(read_only=True) as session:
        assert session.fetchall("SELECT x FROM t ORDER BY x") == [(1,), (7,)]


def test_a_write_behind_this_process_own_reader_says_so(tmp_path: Path) -> None:
    warehouse = made(tmp_path)
    writer = Warehouse(warehouse.backend.path, CONTRACT, lock_timeout_seconds=0.5)
    with warehouse.session(read_only=True) as session:
        session.fetchall("SELECT 1")
        waits = pytest.raises(WarehouseLockTimeout, match="this process has the file open read-only, and a write waits")
        with waits, writer.session():
            pass


@contextmanager
def other_process_turn_attempt(real: str) -> Iterator[bool]:
    """Whether another process can take a shared turn at `real` now."""
    script = "import sys; from batch_predict.warehouse import turns; print(turns.take(sys.argv[1], False)[0])"
    found = subprocess.run([sys.executable, "-c", script, real], capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    yield found.stdout.strip() == "True"


def test_a_deleted_lock_file_is_made_anew_and_still_keeps_turns(tmp_path: Path) -> None:
    warehouse = made(tmp_path)  # this process now keeps a descriptor of the lock file
    path = warehouse.backend.path
    Path(turns.sidecar(os.path.realpath(path))).unlink()
    held = pytest.raises(WarehouseLockTimeout, match="holds its turn")
    # The other process makes the lock file anew.
    with other_process_turn(path, "exclusive"), held, warehouse.session(read_only=True):
        pass
    with warehouse.session(read_only=True) as session:
        assert session.fetchall("SELECT count(*) FROM t") == [(1,)]
