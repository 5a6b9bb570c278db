"""A catalogue of landing files: for each, where every record ends up, or which error names which file.

Each case snapshots two daily partitions (2026-03-01 and 2026-03-02, the partitions that
exist) and checks the exact outcome. When the files are readable, every record written is
in exactly one of `inputs`, `rejected_inputs` and `unplaced_inputs`; when they are not, the
error names the file and nothing is written.
"""

import decimal
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_predict.contract import FeatureContract
from batch_predict.settings import IRIS_FEATURES, Settings
from batch_predict.warehouse import Source, SourceError, Warehouse

DAY = datetime(2026, 3, 1, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
END = NEXT + timedelta(days=1)
WINDOWS = {"2026-03-01": (DAY, NEXT), "2026-03-02": (NEXT, END)}
HEADER = "record_id,event_time," + ",".join(IRIS_FEATURES)


def table(ids: list[Any], times: list[Any] | None = None, **columns: list[Any]) -> pa.Table:
    data: dict[str, Any] = {"record_id": ids, "event_time": times or [DAY + timedelta(hours=1)] * len(ids)}
    data |= {name: [1.0] * len(ids) for name in IRIS_FEATURES}
    return pa.table(data | columns)


def parquet(**files: pa.Table) -> Callable[[Path], int]:
    def write(root: Path) -> int:
        for name, rows in files.items():
            pq.write_table(rows, root / f"{name}.parquet")
        return sum(rows.num_rows for rows in files.values())

    return write


def text(suffix: str, **files: str) -> Callable[[Path], int]:
    """CSV or JSON files; every line after a CSV header (every JSON line) is a record."""

    def write(root: Path) -> int:
        for name, content in files.items():
            (root / f"{name}.{suffix}").write_text(content)
        lines = [line for content in files.values() for line in content.splitlines() if line.strip()]
        return len(lines) - sum(1 for line in lines if line.startswith("record_id") or line.startswith("Record_Id"))

    return write


def csv_rows(*rows: str, header: str = HEADER) -> str:
    return header + "\n" + "".join(row + "\n" for row in rows)


def ok_row(record_id: str = "a", time: str = "2026-03-01T01:00:00Z", values: str = "5.1,3.5,1.4,0.2") -> str:
    return f"{record_id},{time},{values}"


def corrupt_page(root: Path) -> int:
    rows = table([f"r{i}" for i in range(2000)])
    pq.write_table(rows, root / "bad.parquet", compression="none")
    data = bytearray((root / "bad.parquet").read_bytes())
    data[30:46] = b"\xff" * 16  # inside the first column chunk; the footer stays valid
    (root / "bad.parquet").write_bytes(bytes(data))
    return 2000


def not_parquet(root: Path) -> int:
    (root / "bad.parquet").write_text("id,time\n1,2\n")
    return 1


def truncated(root: Path) -> int:
    pq.write_table(table(["a", "b"]), root / "bad.parquet")
    data = (root / "bad.parquet").read_bytes()
    (root / "bad.parquet").write_bytes(data[: len(data) // 2])
    return 2


@dataclass(frozen=True)
class Case:
    write: Callable[[Path], int]
    glob: str = "*.parquet"
    # Where the records end: "inputs", "rejected:<reason>" or "unplaced:<reason>", with counts.
    placed: dict[str, int] = field(default_factory=dict)
    # Or: the read fails with a message matching this, naming `bad_file`.
    error: str | None = None
    bad_file: str | None = None
    # BATCH_PREDICT_FEATURE_RANGES for this case.
    ranges: str = ""


LATER = NEXT + timedelta(hours=1)
CASES: dict[str, Case] = {
    "parquet valid": Case(parquet(a=table(["a", "b", "c"])), placed={"inputs": 3}),
    "parquet integer features": Case(
        parquet(a=table(["a"], **{f: pa.array([2], pa.int64()) for f in IRIS_FEATURES})), placed={"inputs": 1}
    ),
    "parquet decimal feature": Case(
        parquet(a=table(["a"], sepal_length=pa.array([decimal.Decimal("5.10")], pa.decimal128(4, 2)))),
        placed={"inputs": 1},
    ),
    "parquet NULL feature": Case(
        parquet(a=table(["a", "b"], sepal_width=[None, 1.0])), placed={"inputs": 1, "rejected:missing_feature": 1}
    ),
    "parquet NaN": Case(parquet(a=table(["a"], petal_length=[float("nan")])), placed={"rejected:nan_feature": 1}),
    "parquet +inf": Case(parquet(a=table(["a"], petal_length=[float("inf")])), placed={"rejected:nan_feature": 1}),
    "parquet -inf": Case(parquet(a=table(["a"], petal_length=[float("-inf")])), placed={"rejected:nan_feature": 1}),
    "parquet huge finite value": Case(parquet(a=table(["a"], sepal_length=[1e300])), placed={"inputs": 1}),
    "parquet huge value with a range": Case(
        parquet(a=table(["a", "b", "c"], sepal_length=[1e200, 50.0, 10.0])),
        placed={"inputs": 2, "rejected:out_of_range": 1},
        ranges="sepal_length=0:50",
    ),
    "parquet float ids": Case(
        # pandas writes integer ids with a NULL among them as float64; the same record comes as an int elsewhere.
        parquet(
            a=table(pa.array([1.0, 2.0, 2.5, float("nan"), None], pa.float64())),
            b=table(pa.array([1], pa.int64())),
        ),
        placed={
            "inputs": 2,
            "rejected:non_integer_record_id": 2,
            "rejected:missing_record_id": 1,
            "rejected:duplicate_record_id": 1,
        },
    ),
    "parquet negative": Case(parquet(a=table(["a"], petal_width=[-0.5])), placed={"rejected:negative_value": 1}),
    "parquet NULL id": Case(parquet(a=table([None, "b"])), placed={"inputs": 1, "rejected:missing_record_id": 1}),
    "parquet extra column": Case(parquet(a=table(["a"], note=["hello"])), placed={"inputs": 1}),
    "parquet no rows": Case(parquet(a=table(["a"]).slice(0, 0), b=table(["b"])), placed={"inputs": 1}),
    "parquet column missing in one file": Case(
        parquet(a=table(["a"]), b=table(["b"]).drop_columns(["petal_width"])),
        error=r"has no column\(s\) petal_width",
        bad_file="b.parquet",
    ),
    "parquet feature stored as text": Case(
        parquet(a=table(["a"], sepal_width=["wide"])), error="stores feature sepal_width as UTF8", bad_file="a.parquet"
    ),
    "parquet event time stored as a number": Case(
        parquet(a=table(["a"], [17])), error="stores event_time as INT64", bad_file="a.parquet"
    ),
    "parquet NULL event time": Case(
        parquet(a=table(["a", "b"], [None, DAY])), placed={"inputs": 1, "unplaced:missing_event_time": 1}
    ),
    "parquet event time as text, one unparseable": Case(
        parquet(a=table(["a", "b", "c"], ["2026-03-01T02:00:00Z", "soon", ""])),
        placed={"inputs": 1, "unplaced:unparseable_event_time": 1, "unplaced:missing_event_time": 1},
    ),
    "parquet event time as date": Case(
        parquet(a=table(["a", "b"], [date(2026, 3, 1), date(2026, 3, 2)])), placed={"inputs": 2}
    ),
    "parquet before start": Case(
        parquet(a=table(["a", "b"], [DAY - timedelta(seconds=1), DAY])),
        placed={"inputs": 1, "unplaced:before_start": 1},
    ),
    "parquet after the newest partition": Case(
        parquet(a=table(["a", "b"], [END, END - timedelta(seconds=1)])),
        placed={"inputs": 1, "unplaced:future_event_time": 1},
    ),
    "parquet duplicate id within a file": Case(
        parquet(a=table(["a", "a"])), placed={"inputs": 1, "rejected:duplicate_record_id": 1}
    ),
    "parquet duplicate id across files": Case(
        parquet(a=table(["a"]), b=table(["a"])), placed={"inputs": 1, "rejected:duplicate_record_id": 1}
    ),
    "parquet duplicate id across partitions": Case(
        parquet(a=table(["a"], [LATER]), b=table(["a"])), placed={"inputs": 1, "rejected:duplicate_record_id": 1}
    ),
    "parquet duplicate id, invalid copy first": Case(
        parquet(a=table(["a", "a"], petal_width=[-1.0, 1.0])), placed={"inputs": 1, "rejected:negative_value": 1}
    ),
    "parquet duplicate id, unplaced copy": Case(
        parquet(a=table(["a", "a"], [None, DAY])), placed={"inputs": 1, "unplaced:missing_event_time": 1}
    ),
    "parquet column named filename": Case(parquet(a=table(["a"], filename=["x.csv"])), placed={"inputs": 1}),
    "parquet column differing in case": Case(
        parquet(
            a=table(["a"]),
            b=table(["b"]).rename_columns(["record_id", "event_time", "Sepal_Length", *IRIS_FEATURES[1:]]),
        ),
        error="has column 'Sepal_Length', which differs only in case from 'sepal_length'",
        bad_file="b.parquet",
    ),
    "parquet not parquet": Case(
        not_parquet,
        error="No magic bytes",
        bad_file="bad.parquet",
    ),
    "parquet truncated": Case(truncated, error="Cannot read the source files", bad_file="bad.parquet"),
    "parquet corrupt page": Case(corrupt_page, error="Cannot read the source files", bad_file="bad.parquet"),
    "csv valid": Case(text("csv", a=csv_rows(ok_row("a"), ok_row("b", "2026-03-02 01:00:00"))), "*.csv", {"inputs": 2}),
    "csv header only": Case(text("csv", a=csv_rows(ok_row("a")), b=csv_rows()), "*.csv", {"inputs": 1}),
    "csv empty file": Case(text("csv", a=csv_rows(ok_row("a")), b=""), "*.csv", {"inputs": 1}),
    "csv value beyond DOUBLE": Case(
        text("csv", a=csv_rows(ok_row("a", values="1e400,1,1,1"), ok_row("b", values="1e300,1,1,1"))),
        "*.csv",
        {"inputs": 1, "rejected:nan_feature": 1},  # it reads as infinity
    ),
    "parquet event time as timestamp in one file, text in another": Case(
        parquet(a=table(["a"]), b=table(["b", "c"], ["2026-03-02T03:00:00+01:00", "later"])),
        placed={"inputs": 2, "unplaced:unparseable_event_time": 1},
    ),
    "csv NaN and inf as text": Case(
        text(
            "csv",
            a=csv_rows(
                ok_row("a", values="nan,1,1,1"), ok_row("b", values="1,inf,1,1"), ok_row("c", values="1,1,-inf,1")
            ),
        ),
        "*.csv",
        {"rejected:nan_feature": 3},
    ),
    "csv not a number": Case(
        text("csv", a=csv_rows(ok_row("a"), ok_row("b", values="5.1,3.5,1.4,wide"))),
        "*.csv",
        {"inputs": 1, "rejected:not_a_number": 1},
    ),
    "csv empty value": Case(
        text("csv", a=csv_rows(ok_row("a", values="5.1,,1.4,0.2"))), "*.csv", {"rejected:missing_feature": 1}
    ),
    "csv column missing in one file": Case(
        text("csv", a=csv_rows(ok_row("a")), b=csv_rows("b,2026-03-01,1,1,1", header=HEADER.rsplit(",", 1)[0])),
        "*.csv",
        {"inputs": 1, "rejected:missing_feature": 1},
    ),
    "csv extra column": Case(
        text("csv", a=csv_rows(ok_row("a") + ",x", header=HEADER + ",note")), "*.csv", {"inputs": 1}
    ),
    "csv bad event times": Case(
        text("csv", a=csv_rows(ok_row("a"), ok_row("b", ""), ok_row("c", "31/02/2026"), ok_row("d", "2025-12-31"))),
        "*.csv",
        {
            "inputs": 1,
            "unplaced:missing_event_time": 1,
            "unplaced:unparseable_event_time": 1,
            "unplaced:before_start": 1,
        },
    ),
    "csv duplicate ids across files and partitions": Case(
        text("csv", a=csv_rows(ok_row("a", "2026-03-02T05:00:00Z")), b=csv_rows(ok_row("a"), ok_row("a"))),
        "*.csv",
        {"inputs": 1, "rejected:duplicate_record_id": 2},
    ),
    "csv ids: integer-valued decimals are integers, other text as written": Case(
        # pandas writes a float id column as 12.0; 12.0 and 12 are one record, 007 and 7.5 stay text.
        text("csv", a=csv_rows(ok_row("12"), ok_row("007"), ok_row("7.5")), b=csv_rows(ok_row("12.0"))),
        "*.csv",
        {"inputs": 3, "rejected:duplicate_record_id": 1},
    ),
    "csv column named filename": Case(
        text("csv", a=csv_rows(ok_row("a") + ",x.csv", header=HEADER + ",filename")), "*.csv", {"inputs": 1}
    ),
    "csv column differing in case": Case(
        text("csv", a=csv_rows(ok_row("a"), header=HEADER.replace("record_id", "Record_Id"))),
        "*.csv",
        error="'Record_Id' in .* differs only in case from 'record_id'",
        bad_file="a.csv",
    ),
    "csv quoted value after the sniffed rows": Case(
        text("csv", a=csv_rows(*(ok_row(f"r{i}") for i in range(25_000)), ok_row("z", values='5.1,"3,5",1.4,0.2'))),
        "*.csv",
        {"inputs": 25_000, "rejected:not_a_number": 1},
    ),
    "csv quoted value early": Case(
        text("csv", a=csv_rows(ok_row("z", values='5.1,"3,5",1.4,0.2'), *(ok_row(f"r{i}") for i in range(20)))),
        "*.csv",
        {"inputs": 20, "rejected:not_a_number": 1},
    ),
    "csv malformed line": Case(
        text("csv", a=csv_rows(*(ok_row(f"r{i}") for i in range(25_000)), ok_row("z") + ",extra")),
        "*.csv",
        error="line 25002",
        bad_file="a.csv",
    ),
    "json records": Case(
        text(
            "json",
            a='{"record_id": "a", "event_time": "2026-03-01T01:00:00Z", "sepal_length": 1, "sepal_width": 1, '
            '"petal_length": 1, "petal_width": 1}\n'
            '{"record_id": "b", "event_time": "never", "sepal_length": 1, "sepal_width": 1, "petal_length": 1, '
            '"petal_width": 1}\n',
        ),
        "*.json",
        {"inputs": 1, "unplaced:unparseable_event_time": 1},
    ),
}


def outcome(path: Path) -> Counter[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            """
            SELECT 'inputs', count(*) FROM inputs
            UNION ALL SELECT 'rejected:' || reason, count(*) FROM rejected_inputs GROUP BY reason
            UNION ALL SELECT 'unplaced:' || reason, count(*) FROM unplaced_inputs GROUP BY reason
            """
        ).fetchall()
    return Counter({name: int(n) for name, n in rows if n})


@pytest.mark.parametrize("name", list(CASES))
def test_landing_case(name: str, make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    case = CASES[name]
    settings = make_settings(feature_ranges=case.ranges)
    source = Source(tmp_path / "src", case.glob)
    source.root.mkdir()
    records = case.write(source.root)
    warehouse = Warehouse(tmp_path / "w.duckdb", FeatureContract.from_settings(settings))
    if case.error is not None:
        with pytest.raises(SourceError) as raised:
            for key, (start, end) in WINDOWS.items():
                warehouse.snapshot_inputs(source, key, start, end, "r", placeable=(DAY, END))
        assert case.bad_file is not None and str(source.root / case.bad_file) in str(raised.value)
        assert re.search(case.error, str(raised.value)), str(raised.value)
        if case.glob.endswith(".parquet"):  # a line number means nothing in a Parquet file
            assert ", line " not in str(raised.value)
        assert not warehouse.path.exists() or sum(outcome(warehouse.path).values()) == 0
        return
    for key, (start, end) in WINDOWS.items():
        warehouse.snapshot_inputs(source, key, start, end, "r", placeable=(DAY, END))
    found = outcome(warehouse.path)
    assert found == Counter(case.placed)
    assert sum(found.values()) == records
