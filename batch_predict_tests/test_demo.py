from datetime import date
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_predict.demo import MALFORMED_SHARE, generate_day, write_landing
from batch_predict.settings import IRIS_FEATURES


def test_a_day_is_the_same_whatever_window_generates_it(tmp_path: Path) -> None:
    write_landing(tmp_path / "a", date(2026, 5, 1), 3, 300, seed=3)
    write_landing(tmp_path / "b", date(2026, 5, 2), 1, 300, seed=3)
    day = "2026-05-02"
    a = sorted((tmp_path / "a" / day).iterdir())
    b = sorted((tmp_path / "b" / day).iterdir())
    assert [p.name for p in a] == [p.name for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))


def test_another_seed_gives_other_records() -> None:
    assert not generate_day(date(2026, 5, 1), 100, seed=1).equals(generate_day(date(2026, 5, 1), 100, seed=2))


def test_records_fall_in_their_day_spread_over_files(tmp_path: Path) -> None:
    files = write_landing(tmp_path, date(2026, 5, 1), 2, 500, files_per_day=4)
    assert [len(day.paths) for day in files] == [4, 4]
    rows = duckdb.sql(
        "SELECT min(event_time)::DATE, max(event_time)::DATE, count(*), count(DISTINCT filename) "
        "FROM read_parquet(?, filename = true) ",
        params=[str(tmp_path / "2026-05-01" / "*.parquet")],
    ).fetchall()[0]
    assert rows[0] == rows[1] == date(2026, 5, 1)
    assert rows[2] == 500
    assert rows[3] == 4


def test_about_one_percent_malformed_of_every_kind() -> None:
    table = generate_day(date(2026, 5, 1), 4000)
    columns = [table.column(name) for name in IRIS_FEATURES]
    missing = sum(column.null_count for column in columns)
    nan = sum(pc.sum(pc.is_nan(column)).as_py() or 0 for column in columns)
    negative = sum(pc.sum(pc.less(column, 0)).as_py() or 0 for column in columns)
    duplicate = table.num_rows - pc.count_distinct(table.column("record_id")).as_py()
    counts = [missing, nan, negative, duplicate]
    assert all(count >= 5 for count in counts), counts
    assert abs(sum(counts) - 4000 * MALFORMED_SHARE) <= 4


def test_versicolor_petals_drift_over_time() -> None:
    def mean_petal_length(day: date) -> float:
        table = generate_day(day, 6000).to_pandas()
        middle = table[(table["petal_length"] > 2.5) & (table["petal_length"] < 6.5)]
        return float(middle["petal_length"].mean())

    assert mean_petal_length(date(2026, 12, 1)) > mean_petal_length(date(2026, 1, 1)) + 0.15


def test_files_are_real_parquet(tmp_path: Path) -> None:
    files = write_landing(tmp_path, date(2026, 5, 1), 1, 100)
    schema = pq.read_schema(files[0].paths[0])
    assert schema.names == ["record_id", "event_time", *IRIS_FEATURES]
