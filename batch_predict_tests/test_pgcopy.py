"""Tables cross between the DuckDB engine and PostgreSQL exactly: every value, NULL and edge case."""

import math
from datetime import UTC, date, datetime

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from batch_predict.contract import FeatureContract
from batch_predict.warehouse import Warehouse
from batch_predict.warehouse.sql import ident
from batch_predict.warehouse.types import WarehouseError
from batch_predict_tests.conftest import BOTH_BACKENDS

EDGE = pa.table(
    {
        "text": pa.array(["", None, "a,b", 'say "hi"', "line\nbreak", "back\\slash", "\\N", "NULL", "ü—✓", "x" * 5000]),
        "number": pa.array(
            [0.0, None, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308, 1 / 3, -2.5]
        ),
        "count": pa.array([0, None, -1, 2**62, -(2**62), 1, 2, 3, 4, 5], pa.int64()),
        "small": pa.array([0, None, -1, 2**31 - 1, -(2**31), 1, 2, 3, 4, 5], pa.int32()),
        "flag": pa.array([True, None, False, True, False, True, False, True, False, True]),
        "at": pa.array(
            [
                datetime(2026, 3, 1, tzinfo=UTC),
                None,
                datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                datetime(1, 1, 1, tzinfo=UTC),
                datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                datetime(2000, 1, 1, tzinfo=UTC),
                datetime(1999, 12, 31, 23, 59, 59, 123456, tzinfo=UTC),
                datetime(2026, 12, 1, 12, 0, 0, 1, tzinfo=UTC),
                datetime(1970, 1, 1, tzinfo=UTC),
                datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
            ],
            pa.timestamp("us", tz="UTC"),
        ),
        "day": pa.array([date(2026, 3, 1), None, date(1, 1, 1), date(9999, 12, 31), date(2000, 1, 1)] * 2),
    }
)


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b


def test_edge_values_cross_into_postgresql_and_back_exactly(postgres_url: str) -> None:
    warehouse = Warehouse(postgres_url, FeatureContract("record_id", "event_time", ("a",)))
    with warehouse.session() as session:
        session.engine.register("edge_source", EDGE)
        session.engine.execute("CREATE TEMP TABLE edge AS SELECT row_number() OVER () AS n, * FROM edge_source")
        session.share("edge")
        assert session.fetchone("SELECT count(*), count(text), count(number), count(at) FROM edge") == (10, 9, 9, 9)
        assert session.fetchone("SELECT text FROM edge WHERE n = 1") == ("",)
        assert session.fetchone("SELECT text IS NULL FROM edge WHERE n = 2") == (True,)
        # Back from the session's temp table (COPY text), and from a stored table (ADBC).
        session.fetch_into_engine("back", "SELECT * FROM edge ORDER BY n")
        with session.transaction():
            session.execute("CREATE TABLE edge_stored AS SELECT * FROM edge")
        session.fetch_into_engine("stored", "SELECT * FROM edge_stored WHERE n > $n ORDER BY n", {"n": 0})
        backs = [
            session.engine.sql(f"SELECT * EXCLUDE (n) FROM {t} ORDER BY n").to_arrow_table() for t in ("back", "stored")
        ]
    for back in backs:
        assert back.column_names == EDGE.column_names
        for name in EDGE.column_names:
            sent, got = EDGE.column(name).to_pylist(), back.column(name).to_pylist()
            assert all(same(a, b) for a, b in zip(sent, got, strict=True)), (name, sent, got)


def test_a_stored_table_read_with_parameters_matches_them_exactly(postgres_url: str) -> None:
    """ADBC reads a stored table with the parameters bound on the client (psycopg's quoting): quotes,
    backslashes, `%`, `$`, NULL, numbers, times and lists select exactly the rows they name."""
    texts = ["it's", "100%", "$1", "back\\slash", "\\N", "ü—✓", "'; DROP TABLE t; --", "a''b", ""]
    warehouse = Warehouse(postgres_url, FeatureContract("record_id", "event_time", ("a",)))
    with warehouse.session() as session:
        session.engine.register(
            "source",
            pa.table(
                {
                    "n": pa.array(range(len(texts)), pa.int64()),
                    "text": texts,
                    "at": [datetime(2026, 3, 1, n, tzinfo=UTC) for n in range(len(texts))],
                    "x": [n / 3 for n in range(len(texts))],
                }
            ),
        )
        session.engine.execute("CREATE TEMP TABLE t AS SELECT * FROM source")
        session.share("t")
        with session.transaction():
            session.execute("CREATE TABLE t_stored AS SELECT * FROM t")

        def read(sql: str, **params: object) -> list[int]:
            session.fetch_into_engine("found", sql, params)
            return [n for (n,) in session.engine.sql("SELECT n FROM found ORDER BY n").fetchall()]

        for n, text in enumerate(texts):
            assert read("SELECT n FROM t_stored WHERE text = $text AND text LIKE '%' || '' ", text=text) == [n]
        assert read("SELECT n FROM t_stored WHERE at = $at", at=datetime(2026, 3, 1, 4, tzinfo=UTC)) == [4]
        assert read("SELECT n FROM t_stored WHERE x = $x", x=5 / 3) == [5]
        assert read("SELECT n FROM t_stored WHERE n > $n AND text IS DISTINCT FROM $none", n=6, none=None) == [7, 8]
        assert read("SELECT n FROM t_stored WHERE text = ANY(CAST($texts AS TEXT[]))", texts=texts[:2]) == [0, 1]
        assert session.fetchone("SELECT count(*) FROM t_stored") == (len(texts),)


@BOTH_BACKENDS
def test_rows_streamed_into_a_stored_table_arrive_exactly_with_their_constants(warehouse_location: str) -> None:
    """`insert_arrow` (a partition's predictions, streamed into `predictions`): every edge value, each
    column cast to the stored column's type (binary COPY takes none on its own), the constants in every
    row, all in the session's transaction; a column the table lacks is named in the error."""
    warehouse = Warehouse(warehouse_location, FeatureContract("record_id", "event_time", ("a",)))
    typed = {
        "text": "TEXT",
        "number": "DOUBLE PRECISION",
        "count": "BIGINT",
        "small": "INTEGER",
        "flag": "BOOLEAN",
        "at": "TIMESTAMPTZ",
        "day": "DATE",
        "label": "TEXT",
        "run": "TEXT",
        "written": "TIMESTAMPTZ",
    }
    rows = EDGE.append_column("label", pa.array(range(10), pa.int64()))  # an integer into a text column
    rows = rows.set_column(rows.schema.get_field_index("number"), "number", rows.column("number").cast(pa.float32()))
    written = datetime(2026, 12, 2, 6, 30, 0, 123456, tzinfo=UTC)
    with warehouse.session() as session:
        with session.transaction():
            columns = ", ".join(f"{ident(name)} {kind}" for name, kind in typed.items())
            session.execute(f"CREATE TABLE appended ({columns})")
        with session.transaction():
            reader = pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches(max_chunksize=3))
            assert session.insert_arrow("appended", reader, {"run": "r'1", "written": written}) == 10
        with pytest.raises(WarehouseError, match="appended: it has no column nope"), session.transaction():
            session.insert_arrow("appended", pa.table({"nope": [1]}).to_reader(), {})
        back = session.arrow("SELECT * FROM appended")
    assert back.num_rows == 10
    order = sorted(range(10), key=lambda n: back.column("label")[n].as_py())
    assert [back.column("label")[n].as_py() for n in order] == [str(n) for n in range(10)]
    for name in EDGE.column_names:
        sent = rows.column(name).to_pylist()
        got = [back.column(name)[n].as_py() for n in order]
        if name == "number":  # float32 on the way in: the same float32 values, widened
            sent = [None if v is None else float(np.float32(v)) for v in sent]
        assert all(same(a, b) for a, b in zip(sent, got, strict=True)), (name, sent, got)
    assert set(back.column("run").to_pylist()) == {"r'1"}
    assert set(back.column("written").to_pylist()) == {written}


@BOTH_BACKENDS
def test_rows_go_into_columns_of_other_types_and_a_value_that_does_not_fit_writes_nothing(
    warehouse_location: str,
) -> None:
    """A stored column of a type binary COPY cannot write (`varchar(n)`, `real`, `numeric`) takes the rows
    converted, as an INSERT converts them; a value its column cannot hold fails the insert with the table
    named, and the transaction leaves the table as it was."""
    warehouse = Warehouse(warehouse_location, FeatureContract("record_id", "event_time", ("a",)))
    with warehouse.session() as session:
        with session.transaction():
            session.execute("CREATE TABLE narrow (label VARCHAR(8), score REAL, amount NUMERIC(10, 2), n BIGINT)")
            session.execute("INSERT INTO narrow VALUES ('before', 0.5, 1.25, 1)")
        with session.transaction():
            rows = pa.table({"label": ["a", "é", None], "score": [0.25, None, 2.5], "amount": [1.5, 2.25, None]})
            assert session.insert_arrow("narrow", rows.to_reader(), {"n": 7}) == 3
        assert sorted(
            session.fetchall("SELECT label, score, CAST(amount AS DOUBLE PRECISION), n FROM narrow"), key=str
        ) == sorted(
            [("before", 0.5, 1.25, 1), ("a", 0.25, 1.5, 7), ("é", None, 2.25, 7), (None, 2.5, None, 7)], key=str
        )
        fits = pytest.raises(WarehouseError, match="Cannot insert into appended_n: a value does not fit")
        with fits, session.transaction():
            session.execute("CREATE TABLE appended_n (n BIGINT, k TEXT)")
            session.execute("INSERT INTO appended_n VALUES (1, 'old')")
            session.insert_arrow("appended_n", pa.table({"n": ["2", "three"]}).to_reader(), {"k": "new"})
        assert not session.has_table("appended_n")  # the whole transaction, its CREATE too, rolled back


def test_text_arrives_exactly_in_a_database_of_another_encoding(postgres_url: str) -> None:
    """Binary COPY sends text as UTF-8 bytes; the session reads and writes UTF-8 (client_encoding), so a
    LATIN1 database stores 'modèle' as the same six characters a bound parameter gives."""
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    warehouse = Warehouse(postgres_url.rsplit("/", 1)[0] + "/latin", FeatureContract("record_id", "event_time", ("a",)))
    with warehouse.session() as session:
        with session.transaction():
            session.execute("CREATE TABLE t (v TEXT, k TEXT)")
            session.execute("INSERT INTO t VALUES ($v, $k)", {"v": "bound", "k": "modèle"})
            session.insert_arrow("t", pa.table({"v": ["copied"]}).to_reader(), {"k": "modèle"})
        assert sorted(session.fetchall("SELECT v, k, length(k) FROM t")) == [
            ("bound", "modèle", 6),
            ("copied", "modèle", 6),
        ]
