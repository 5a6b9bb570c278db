"""Record ids read as floats, and per-feature plausibility ranges, through a real `inputs` run."""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from batch_predict.contract import FeatureContract
from batch_predict.settings import IRIS_FEATURES, Settings
from batch_predict.warehouse import Source, Warehouse

from .conftest import run_assets

KEY = "2026-03-01"
START = datetime(2026, 3, 1, 8, tzinfo=UTC)


def land(landing: Path, name: str, ids: pa.Array, features: dict[str, Sequence[float | None]] | None = None) -> None:
    """One landing file of `len(ids)` records of 2026-03-01, with plausible features unless given."""
    n = len(ids)
    columns = {name: [1.0 + i % 4 for i in range(n)] for name in IRIS_FEATURES} | (features or {})
    folder = landing / KEY
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "record_id": ids,
            "event_time": pa.array([START + timedelta(minutes=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
            **{name: pa.array(values, pa.float64()) for name, values in columns.items()},
        }
    )
    pq.write_table(table, folder / name)


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_float_ids_become_integer_text_and_join_labels(settings: Settings, tmp_path: Path) -> None:
    # pandas writes integer ids with a NULL among them as float64; another file has them as integers.
    floats = [float(i) for i in range(1, 21)] + [7.5, float("inf"), float("nan"), None]
    land(settings.landing, "from-pandas.parquet", pa.array(floats, pa.float64()))
    land(settings.landing, "from-elsewhere.parquet", pa.array([3, 30], pa.int64()))
    assert run_assets(settings, ["inputs"], KEY).success

    ids = {row[0] for row in query(settings, "SELECT record_id FROM inputs")}
    assert ids == {str(i) for i in range(1, 21)} | {"30"}
    rejected = sorted(query(settings, "SELECT record_id, reason, detail FROM rejected_inputs"), key=str)
    assert rejected == sorted(
        [
            # The integer file's copy of 3 is two minutes earlier: it keeps the id.
            (
                "3",
                "duplicate_record_id",
                f"record id kept by the copy at 2026-03-01 08:00:00+00 in {settings.landing / KEY / 'from-elsewhere.parquet'}",
            ),
            ("7.5", "non_integer_record_id", "record_id"),
            ("inf", "non_integer_record_id", "record_id"),
            ("nan", "non_integer_record_id", "record_id"),
            (None, "missing_record_id", "record_id"),
        ],
        key=str,
    )
    assert query(settings, "SELECT source_rows, valid_rows, rejected_rows FROM input_stats") == [(26, 21, 5)]

    # Labels written by pandas with a NULL label among them: the ids join the inputs.
    labels = tmp_path / "label-files"
    labels.mkdir()
    pq.write_table(
        pa.table(
            {
                "record_id": pa.array([1.0, 2.0, 30.0, 4.5], pa.float64()),
                "label": pa.array(["setosa", "virginica", None, "setosa"]),
            }
        ),
        labels / "labels.parquet",
    )
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings), lock_timeout_seconds=30)
    stats = warehouse.load_labels(Source(labels), "label")
    assert (stats.rows, stats.kept, stats.incomplete) == (4, 2, 2)
    joined = query(settings, "SELECT record_id, label FROM inputs JOIN labels USING (record_id) ORDER BY 1")
    assert joined == [("1", "setosa"), ("2", "virginica")]


def test_values_outside_a_feature_range_are_rejected(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(feature_ranges="sepal_length=0:50, petal_width=:10")
    n = 20
    sepal = [50.0, 1e200, 50.5, float("nan")] + [5.0] * (n - 4)
    petal = [0.5, 0.5, 0.5, 0.5, 10.0, 10.5, -1.0] + [1.0] * (n - 7)
    land(
        settings.landing,
        "day.parquet",
        pa.array([f"r{i}" for i in range(n)]),
        {"sepal_length": sepal, "petal_width": petal},
    )
    assert run_assets(settings, ["inputs"], KEY).success

    rejected = dict(query(settings, "SELECT record_id, reason || ': ' || detail FROM rejected_inputs"))
    assert rejected == {
        "r1": "out_of_range: sepal_length = 1e+200, outside its range 0:50 (BATCH_PREDICT_FEATURE_RANGES)",
        "r2": "out_of_range: sepal_length = 50.5, outside its range 0:50 (BATCH_PREDICT_FEATURE_RANGES)",
        "r3": "nan_feature: sepal_length",
        "r5": "out_of_range: petal_width = 10.5, outside its range :10 (BATCH_PREDICT_FEATURE_RANGES)",
        "r6": "negative_value: petal_width",
    }
    assert query(settings, "SELECT valid_rows, rejected_rows FROM input_stats") == [(n - 5, 5)]


def test_without_ranges_a_huge_finite_value_is_valid(settings: Settings) -> None:
    land(settings.landing, "day.parquet", pa.array(["a", "b"]), {"sepal_length": [1e200, 5.0]})
    assert run_assets(settings, ["inputs"], KEY).success
    assert query(settings, "SELECT count(*) FROM rejected_inputs") == [(0,)]
    assert query(settings, "SELECT max(sepal_length) FROM inputs") == [(1e200,)]
