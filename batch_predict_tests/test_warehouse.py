import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_predict.contract import FeatureContract
from batch_predict.settings import IRIS_FEATURES
from batch_predict.warehouse import Source, SourceError, Warehouse, WarehouseError

from .conftest import BOTH_BACKENDS, ROWS_PER_DAY, stored_rows

DAY = datetime(2026, 3, 1, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)


def counts(warehouse: Warehouse, partition_key: str) -> tuple[int, int, int]:
    [row] = stored_rows(
        warehouse,
        """
        SELECT (SELECT count(*) FROM inputs WHERE partition_key = $k),
               (SELECT count(*) FROM rejected_inputs WHERE partition_key = $k),
               (SELECT count(DISTINCT record_id) FROM inputs WHERE partition_key = $k)
        """,
        k=partition_key,
    )
    return row


@BOTH_BACKENDS
def test_every_source_row_lands_once(warehouse: Warehouse, source: Source, landing: Path) -> None:
    stats = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "run-1")
    valid, rejected, distinct = counts(warehouse, "2026-03-01")
    assert stats.source_rows == ROWS_PER_DAY
    assert valid + rejected == ROWS_PER_DAY
    assert (valid, rejected) == (stats.valid_rows, stats.rejected_rows)
    assert distinct == valid
    assert rejected > 0
    assert set(stats.rejected_by_reason) <= {
        "missing_feature",
        "nan_feature",
        "negative_value",
        "duplicate_record_id",
    }
    assert sum(stats.rejected_by_reason.values()) == rejected


@BOTH_BACKENDS
def test_rerun_replaces_the_partition_only(warehouse: Warehouse, source: Source, landing: Path) -> None:
    warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "run-1")
    warehouse.snapshot_inputs(source, "2026-03-02", NEXT, NEXT + timedelta(days=1), "run-2")
    first, second = counts(warehouse, "2026-03-01"), counts(warehouse, "2026-03-02")
    warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "run-3")
    assert counts(warehouse, "2026-03-01") == first
    assert counts(warehouse, "2026-03-02") == second
    runs = stored_rows(warehouse, "SELECT DISTINCT run_id FROM inputs WHERE partition_key = '2026-03-01'")
    assert runs == [("run-3",)]
    assert stored_rows(warehouse, "SELECT count(*) FROM input_stats") == [(2,)]


def write(path: Path, rows: dict[str, list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path)


def rows(ids: list[str], **overrides: list[object]) -> dict[str, list[object]]:
    n = len(ids)
    base: dict[str, list[object]] = {
        "record_id": ids,
        "event_time": [DAY + timedelta(hours=i) for i in range(n)],
        **{name: [1.0] * n for name in IRIS_FEATURES},
    }
    return base | overrides


@BOTH_BACKENDS
def test_each_rule_has_its_reason(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(
        source.root / "a.parquet",
        rows(
            ["ok", None, "null", "nan", "neg", "inf", "ok"],  # type: ignore[list-item]
            sepal_length=[1.0, 1.0, None, float("nan"), -2.0, float("inf"), 1.0],
        ),
    )
    stats = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert stats.rejected_by_reason == {
        "missing_record_id": 1,
        "missing_feature": 1,
        "nan_feature": 2,
        "negative_value": 1,
        "duplicate_record_id": 1,
    }
    details = dict(stored_rows(warehouse, "SELECT reason, detail FROM rejected_inputs WHERE reason <> 'nan_feature'"))
    assert details["missing_feature"] == "sepal_length"
    assert details["missing_record_id"] == "record_id"
    assert (
        details["duplicate_record_id"]
        == f"record id kept by the copy at 2026-03-01 00:00:00+00 in {source.root / 'a.parquet'}"
    )


@BOTH_BACKENDS
def test_a_valid_copy_wins_over_an_invalid_one(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "a.parquet", rows(["x", "x"], petal_width=[-1.0, 0.5]))
    warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert stored_rows(warehouse, "SELECT record_id, petal_width FROM inputs") == [("x", 0.5)]
    assert stored_rows(warehouse, "SELECT reason FROM rejected_inputs") == [("negative_value",)]


@BOTH_BACKENDS
def test_a_record_already_in_another_partition_is_rejected(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "a.parquet", rows(["x"]))
    late = rows(["x"])
    late["event_time"] = [NEXT + timedelta(hours=1)]
    write(source.root / "b.parquet", late)
    warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r1")
    stats = warehouse.snapshot_inputs(source, "2026-03-02", NEXT, NEXT + timedelta(days=1), "r2")
    assert stats.rejected_by_reason == {"duplicate_record_id": 1}
    assert stored_rows(warehouse, "SELECT detail FROM rejected_inputs") == [
        (f"record id kept by the copy at 2026-03-01 00:00:00+00 in {source.root / 'a.parquet'}",)
    ]
    # Rerunning the first partition keeps the record there: no flip-flop, no loss.
    again = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r3")
    assert again.valid_rows == 1


@BOTH_BACKENDS
def test_strings_that_are_not_numbers_are_rejected(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src", "*.csv")
    source.root.mkdir()
    (source.root / "a.csv").write_text(
        "record_id,event_time,sepal_length,sepal_width,petal_length,petal_width\n"
        "a,2026-03-01T01:00:00Z,5.1,3.5,1.4,0.2\n"
        "b,2026-03-01T02:00:00Z,five,3.5,1.4,0.2\n"
        "c,2026-03-02T02:00:00Z,5.1,3.5,1.4,0.2\n"
    )
    stats = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert (stats.source_rows, stats.valid_rows, stats.rejected_by_reason) == (2, 1, {"not_a_number": 1})


@BOTH_BACKENDS
def test_window_is_half_open_in_the_partition_timezone(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    edges = rows(["start", "before-end", "end"])
    edges["event_time"] = [DAY, NEXT - timedelta(microseconds=1), NEXT]
    write(source.root / "a.parquet", edges)
    stats = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert stats.source_rows == 2


@BOTH_BACKENDS
def test_missing_landing_folder_names_the_fix(warehouse: Warehouse, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist.*BATCH_PREDICT_LANDING"):
        warehouse.snapshot_inputs(Source(tmp_path / "nowhere"), "2026-03-01", DAY, NEXT, "r")


@BOTH_BACKENDS
def test_a_file_that_is_not_parquet_names_the_problem(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "good.parquet", rows(["a"]))
    (source.root / "bad.parquet").write_text("this is not parquet")
    with pytest.raises(SourceError, match="Cannot read the source files.*Move the unreadable file"):
        warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert not warehouse.exists() or counts(warehouse, "2026-03-01") == (0, 0, 0)


@BOTH_BACKENDS
def test_a_column_missing_everywhere_fails_before_writing(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    table = rows(["a"])
    del table["petal_width"]
    write(source.root / "a.parquet", table)
    with pytest.raises(SourceError, match="no column\\(s\\) petal_width"):
        warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")


@BOTH_BACKENDS
def test_a_parquet_file_missing_a_column_fails_naming_it(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "a.parquet", rows(["a"]))
    warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r1")
    table = rows(["b"])
    del table["petal_width"]
    write(source.root / "b.parquet", table)
    with pytest.raises(SourceError, match=r"b\.parquet has no column\(s\) petal_width.*nothing was written"):
        warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r2")
    assert counts(warehouse, "2026-03-01") == (1, 0, 1)


@BOTH_BACKENDS
def test_a_parquet_column_of_the_wrong_type_fails_naming_it(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "a.parquet", rows(["a"], sepal_width=["wide"]))
    with pytest.raises(SourceError, match=r"a\.parquet stores feature sepal_width as UTF8, not a number"):
        warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")


@BOTH_BACKENDS
def test_an_event_time_that_is_not_a_time_leaves_its_record_unplaced(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src", "*.csv")
    source.root.mkdir()
    (source.root / "a.csv").write_text(
        "record_id,event_time,sepal_length,sepal_width,petal_length,petal_width\na,yesterday,5.1,3.5,1.4,0.2\n"
    )
    stats = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert (stats.source_rows, stats.unplaced_by_reason) == (0, {"unparseable_event_time": 1})


@BOTH_BACKENDS
def test_an_event_time_that_is_a_number_fails_naming_it(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src", "*.json")
    source.root.mkdir()
    (source.root / "a.json").write_text(
        '{"record_id": "a", "event_time": 17, "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, '
        '"petal_width": 0.2}\n'
    )
    with pytest.raises(SourceError, match="event-time column event_time .* reads as BIGINT"):
        warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")


@BOTH_BACKENDS
def test_a_csv_file_missing_a_column_rejects_its_rows(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src", "*.csv")
    source.root.mkdir()
    header = "record_id,event_time,sepal_length,sepal_width,petal_length"
    (source.root / "a.csv").write_text(header + ",petal_width\na,2026-03-01T01:00:00Z,5.1,3.5,1.4,0.2\n")
    (source.root / "b.csv").write_text(header + "\nb,2026-03-01T02:00:00Z,5.1,3.5,1.4\n")
    stats = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert (stats.valid_rows, stats.rejected_by_reason) == (1, {"missing_feature": 1})


@BOTH_BACKENDS
def test_a_partition_of_invalid_rows_fails_and_writes_nothing(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "a.parquet", rows(["a", "b"]))
    warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r1")
    write(source.root / "a.parquet", rows(["a", "b"], petal_length=[-1.0, float("nan")]))
    with pytest.raises(
        SourceError, match=r"2 of the 2 source records of partition 2026-03-01 break.*MAX_REJECTED_SHARE"
    ):
        warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r2", max_rejected_share=0.5)
    assert counts(warehouse, "2026-03-01") == (2, 0, 2)
    accepted = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r3", max_rejected_share=1.0)
    assert (accepted.valid_rows, accepted.rejected_rows) == (0, 2)


def test_a_file_that_is_not_duckdb_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    path.write_text("not a database")
    warehouse = Warehouse(path, FeatureContract("record_id", "event_time", IRIS_FEATURES))
    with pytest.raises(WarehouseError, match="BATCH_PREDICT_WAREHOUSE"), warehouse.connect():
        pass


def _hold_lock(path: str, seconds: float, ready: "multiprocessing.synchronize.Event") -> None:
    con = duckdb.connect(path)
    con.execute("CREATE TABLE IF NOT EXISTS held (x INT)")
    ready.set()
    time.sleep(seconds)
    con.close()


def test_a_lock_held_by_another_process_is_waited_out(warehouse: Warehouse) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold_lock, args=(str(warehouse.path), 1.5, ready))
    holder.start()
    try:
        assert ready.wait(30)
        started = time.monotonic()
        with warehouse.connect() as con:
            assert con.execute("SELECT count(*) FROM held").fetchone() == (0,)
        assert time.monotonic() - started > 0.5
    finally:
        holder.join(30)


def test_a_lock_held_too_long_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold_lock, args=(str(path), 3, ready))
    holder.start()
    try:
        assert ready.wait(30)
        warehouse = Warehouse(path, FeatureContract("record_id", "event_time", IRIS_FEATURES), lock_timeout_seconds=0.5)
        with pytest.raises(WarehouseError, match="BATCH_PREDICT_LOCK_TIMEOUT_SECONDS"), warehouse.connect():
            pass
    finally:
        holder.join(30)
