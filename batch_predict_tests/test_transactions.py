"""A transaction that fails says why, and leaves its session usable."""

from collections.abc import Iterator

import duckdb
import psycopg
import pyarrow as pa
import pytest

from batch_predict.warehouse import connection
from batch_predict.warehouse.connection import DuckDBSession, PostgresSession


def test_a_duckdb_commit_that_fails_raises_its_own_reason() -> None:
    """Two sessions insert the same key: the second commit fails, naming the key, not the rollback."""
    db = duckdb.connect()
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    first, second = DuckDBSession(db.cursor()), DuckDBSession(db.cursor())
    with pytest.raises(duckdb.Error, match='duplicate key "1"'), first.transaction():
        first.execute("INSERT INTO t VALUES (1)")
        with second.transaction():
            second.execute("INSERT INTO t VALUES (1)")
    with first.transaction():
        first.execute("INSERT INTO t VALUES (2)")
    assert db.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (2,)]


def _rows(count: int) -> pa.RecordBatchReader:
    table = pa.table({"id": pa.array(range(count), pa.int32())})
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


def _shifted(start: int, count: int) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    table = pa.table({"id": pa.array(range(start, start + count), pa.int32())})
    return table.schema, table.to_batches()


@pytest.fixture
def small_large_commits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(connection, "LARGE_COMMIT_ROWS", 10)
    yield


def test_a_large_commit_leaves_the_checkpoint_threshold_as_it_was(tmp_path, small_large_commits) -> None:
    """A large commit checkpoints at once, then the threshold is the default again, also after it failed."""
    db = duckdb.connect(str(tmp_path / "w.duckdb"))
    default = db.execute("SELECT current_setting('checkpoint_threshold')").fetchone()
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    session, other = DuckDBSession(db), DuckDBSession(db.cursor())
    wal = tmp_path / "w.duckdb.wal"
    with session.transaction():
        assert session.insert_arrow("t", _rows(20), {}) == 20
    assert not wal.exists() or wal.stat().st_size == 0  # written into the file at the commit
    assert db.execute("SELECT current_setting('checkpoint_threshold')").fetchone() == default
    with session.transaction():
        session.execute("INSERT INTO t VALUES (100)")
    assert wal.stat().st_size > 0  # a small commit keeps the write-ahead log
    session.execute("DELETE FROM t WHERE id = 100")

    with pytest.raises(duckdb.Error, match="(?i)duplicate key"), session.transaction():
        session.insert_arrow("t", _rows(30), {})  # 0-19 are there: refused before the commit
    with pytest.raises(duckdb.Error, match='duplicate key "25"'), session.transaction():
        session.insert_arrow("t", pa.RecordBatchReader.from_batches(*_shifted(20, 20)), {})
        with other.transaction():
            other.execute("INSERT INTO t VALUES (25)")
    assert db.execute("SELECT current_setting('checkpoint_threshold')").fetchone() == default
    assert db.execute("SELECT count(*), max(id) FROM t").fetchone() == (21, 25)


def test_a_postgres_commit_that_fails_raises_its_own_reason(postgres_url: str) -> None:
    """A deferred unique key is checked at COMMIT: the error names it, and the session goes on."""
    con = psycopg.connect(postgres_url)
    session = PostgresSession(con, "256MB", 1, postgres_url)
    try:
        with session.transaction():
            session.execute("CREATE TABLE t (id integer UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        with pytest.raises(psycopg.errors.UniqueViolation, match="Key \\(id\\)=\\(1\\)"), session.transaction():
            session.execute("INSERT INTO t VALUES (1)")
            session.execute("INSERT INTO t VALUES (1)")
        with session.transaction():
            session.execute("INSERT INTO t VALUES (2)")
        assert session.fetchall("SELECT id FROM t ORDER BY id") == [(2,)]
    finally:
        session.close()
        con.close()
