"""A range of partitions snapshotted at once ends exactly as the same partitions snapshotted one by one."""

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_predict.contract import FeatureContract
from batch_predict.settings import IRIS_FEATURES, Settings
from batch_predict.warehouse import Source, SourceError, Warehouse
from batch_predict.warehouse import snapshots as snapshots_module

from .conftest import run_assets

DAY = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 5
KEYS = [f"{DAY + timedelta(days=i):%Y-%m-%d}" for i in range(DAYS)]
WINDOWS = [(key, DAY + timedelta(days=i), DAY + timedelta(days=i + 1)) for i, key in enumerate(KEYS)]
PLACEABLE = (DAY, DAY + timedelta(days=DAYS))
RANGE = WINDOWS[1:4]  # the middle three days; the first and last store copies the range can take or lose


def write(path: Path, rows: list[tuple[Any, Any, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, Any] = {"record_id": [r[0] for r in rows], "event_time": [r[1] for r in rows]}
    columns |= {name: [1.0] * len(rows) for name in IRIS_FEATURES}
    columns["petal_width"] = [r[2] for r in rows]
    pq.write_table(pa.table(columns), path)


def random_rows(rng: random.Random, n: int, ids: int) -> list[tuple[Any, Any, float]]:
    """Rows with ids that repeat within and across days, a few invalid values and a few unplaceable times."""
    times: list[Any] = [DAY + timedelta(minutes=rng.randrange(DAYS * 24 * 60)) for _ in range(n)]
    times += [None, DAY - timedelta(hours=1), PLACEABLE[1] + timedelta(hours=2)]
    return [(f"id{rng.randrange(ids)}", time, rng.choice([1.0, 1.0, 2.0, -1.0])) for time in times]


def seed_predictions(warehouse: Warehouse) -> None:
    """An outcome for every stored input, so that records that leave a partition have one to archive or drop:
    a recorded error for ids ending in 7, a prediction for the others."""
    failed = "record_id LIKE '%7'"
    with warehouse.session() as session, session.transaction():
        session.execute(
            f"""
            INSERT INTO predictions (partition_key, record_id, prediction, model_name, model_version, run_id,
                                     predicted_at, predicted_in_partition)
            SELECT partition_key, record_id, 'setosa', 'iris', 'v1', 'p0', now(), partition_key FROM inputs
            WHERE NOT {failed}
            """
        )
        session.execute(
            f"""
            INSERT INTO prediction_errors (partition_key, record_id, error, attempt, dead, attempted_in_partition,
                                           run_id, failed_at)
            SELECT partition_key, record_id, 'ValueError: no', 1, false, partition_key, 'p0', now() FROM inputs
            WHERE {failed}
            """
        )


def outcome(warehouse: Warehouse) -> dict[str, list[tuple[Any, ...]]]:
    """Every table a snapshot writes, without the columns that name the run or when it ran."""
    queries = {
        "inputs": "SELECT partition_key, record_id, event_time, petal_width, source_file FROM inputs",
        "rejected": "SELECT partition_key, record_id, event_time, reason, detail, raw_values, source_file "
        "FROM rejected_inputs",
        "stats": "SELECT partition_key, window_start, window_end, source_rows, valid_rows, rejected_rows, "
        "rejected_by_reason FROM input_stats",
        "unplaced": "SELECT record_id, source_file, reason, raw_event_time FROM unplaced_inputs",
        "predictions": "SELECT partition_key, record_id FROM predictions",
        "errors": "SELECT partition_key, record_id, attempt FROM prediction_errors",
        "history": "SELECT partition_key, record_id, superseded_by_run FROM predictions_history",
    }
    with warehouse.session(read_only=True) as session:
        return {name: sorted(session.fetchall(sql), key=repr) for name, sql in queries.items()}


def twin_warehouses(
    backend: str, tmp_path: Path, settings: Settings, request: pytest.FixtureRequest
) -> tuple[Warehouse, Warehouse]:
    contract = FeatureContract.from_settings(settings)
    if backend == "postgres":
        server = request.getfixturevalue("postgres_server")
        second = server.create_database(f"twin_{tmp_path.name[-20:].replace('-', '_')}")
        request.addfinalizer(lambda: server.drop_database(second.rsplit("/", 1)[1]))
        return Warehouse(str(settings.warehouse), contract), Warehouse(second, contract)
    return Warehouse(tmp_path / "ranged.duckdb", contract), Warehouse(tmp_path / "one_by_one.duckdb", contract)


# Two seeds suffice on PostgreSQL: its statements are the same for every seed.
@pytest.mark.parametrize(
    ("backend", "seed"),
    [("duckdb", 1), ("duckdb", 2), ("duckdb", 3), ("duckdb", 4), ("postgres", 1), ("postgres", 2)],
    indirect=["backend"],
)
def test_a_range_ends_as_its_partitions_one_by_one(
    backend: str, seed: int, settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(seed)
    source = Source(tmp_path / "src")
    first = random_rows(rng, 240, 90)
    write(source.root / "a.parquet", first[::2])
    write(source.root / "b.parquet", first[1::2])
    ranged, one_by_one = twin_warehouses(backend, tmp_path, settings, request)
    for warehouse in (ranged, one_by_one):
        for key, start, end in WINDOWS:
            warehouse.snapshot_inputs(source, key, start, end, "r0", placeable=PLACEABLE)
        seed_predictions(warehouse)
    assert outcome(ranged) == outcome(one_by_one)
    # Then copies land late (earlier and later than the stored ones), a file is rewritten and one goes away.
    write(source.root / "c.parquet", random_rows(rng, 120, 90))
    write(source.root / "a.parquet", [(i, t, -1.0 if rng.random() < 0.2 else w) for i, t, w in first[::2]])
    (source.root / "b.parquet").unlink()
    write(source.root / "d.parquet", random_rows(rng, 60, 90))
    stats = ranged.snapshot_range(source, RANGE, "r1", placeable=PLACEABLE, max_shrink_share=0.0)
    one_stats = {
        key: one_by_one.snapshot_inputs(source, key, start, end, "r1", placeable=PLACEABLE) for key, start, end in RANGE
    }
    result = outcome(ranged)
    assert result == outcome(one_by_one)
    for key, _, _ in RANGE:
        mine, theirs = stats[key], one_stats[key]
        assert (mine.source_rows, mine.valid_rows, mine.rejected_rows, mine.rejected_by_reason) == (
            theirs.source_rows,
            theirs.valid_rows,
            theirs.rejected_rows,
            theirs.rejected_by_reason,
        )
        assert mine.unplaced_by_reason == one_stats[RANGE[-1][0]].unplaced_by_reason
    # The scenario did what it is for: copies moved between the range and the partitions around it.
    assert any(stats[key].demoted for key, _, _ in RANGE) or any(r[0] in (KEYS[0], KEYS[-1]) for r in result["history"])
    assert result["history"], "no record left a partition: the scenario tests nothing"
    # Every stored row is in one place, and a record id is kept once.
    ids = [row[1] for row in result["inputs"]]
    assert len(ids) == len(set(ids))


def test_late_earlier_copies_in_a_range_take_their_ids_with_a_known_outcome(settings: Settings, tmp_path: Path) -> None:
    """A hand-made case with its outcome written out: X and Y are stored on the fifth day, then earlier
    copies land on the second and third; W's copy on the third day is later than the one on the first."""
    source = Source(tmp_path / "src")
    at = {day: DAY + timedelta(days=day - 1) for day in range(1, 6)}
    write(
        source.root / "a.parquet",
        [
            ("X", at[5] + timedelta(hours=1), 1.0),
            ("Y", at[5] + timedelta(hours=2), 1.0),
            ("Z", at[2] + timedelta(hours=5), 1.0),
            ("W", at[1] + timedelta(hours=6), 1.0),
            ("W", at[3] + timedelta(hours=6), 1.0),
        ],
    )
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", FeatureContract.from_settings(settings))
    for key, start, end in WINDOWS:
        warehouse.snapshot_inputs(source, key, start, end, "r0", placeable=PLACEABLE)
    seed_predictions(warehouse)
    write(source.root / "b.parquet", [("X", at[2] + timedelta(hours=1), 1.0), ("Y", at[3] + timedelta(hours=1), 1.0)])
    stats = warehouse.snapshot_range(source, WINDOWS[1:3], "r1", placeable=PLACEABLE)
    result = outcome(warehouse)
    assert [(row[0][-2:], row[1]) for row in result["inputs"]] == [("01", "W"), ("02", "X"), ("02", "Z"), ("03", "Y")]
    rejected = sorted((row[0][-2:], row[1], row[3], row[4]) for row in result["rejected"])
    assert rejected == [
        (
            "03",
            "W",
            "duplicate_record_id",
            "record id kept by the copy at 2026-03-01 06:00:00+00 in " + str(source.root / "a.parquet"),
        ),
        (
            "05",
            "X",
            "duplicate_record_id",
            "record id kept by the copy at 2026-03-02 01:00:00+00 in " + str(source.root / "b.parquet"),
        ),
        (
            "05",
            "Y",
            "duplicate_record_id",
            "record id kept by the copy at 2026-03-03 01:00:00+00 in " + str(source.root / "b.parquet"),
        ),
    ]
    # The fifth day's predictions of X and Y are history now; each partition that took one counts it once.
    assert sorted((row[0][-2:], row[1], row[2]) for row in result["history"]) == [("05", "X", "r1"), ("05", "Y", "r1")]
    assert [row[:2] for row in result["predictions"] if row[0].endswith("05")] == []
    assert (stats["2026-03-02"].demoted, stats["2026-03-02"].archived_predictions) == ({"2026-03-05": 1}, 1)
    assert (stats["2026-03-03"].demoted, stats["2026-03-03"].archived_predictions) == ({"2026-03-05": 1}, 1)
    counts = {row[0][-2:]: row[3:6] for row in result["stats"]}
    assert counts == {"01": (1, 1, 0), "02": (2, 2, 0), "03": (2, 1, 1), "04": (0, 0, 0), "05": (2, 0, 2)}


def test_a_partition_failing_its_checks_writes_nothing_of_the_range(settings: Settings, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "a.parquet", [(f"a{i}", DAY + timedelta(hours=i), 1.0) for i in range(72)])
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", FeatureContract.from_settings(settings))
    # The second day is mostly invalid: more than the share allowed.
    write(source.root / "b.parquet", [(f"b{i}", DAY + timedelta(days=1, minutes=i), -1.0) for i in range(200)])
    with pytest.raises(SourceError, match="partition 2026-03-02 break the feature contract"):
        warehouse.snapshot_range(source, WINDOWS[:3], "r1", max_rejected_share=0.5, placeable=PLACEABLE)
    with warehouse.session(read_only=True) as session:
        assert session.fetchall("SELECT count(*) FROM inputs") == [(0,)]
        assert session.fetchall("SELECT count(*) FROM input_stats") == [(0,)]


def test_windows_that_are_not_one_range_are_refused(settings: Settings, tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", FeatureContract.from_settings(settings))
    with pytest.raises(ValueError, match="2026-03-03 does not start where 2026-03-01 ends"):
        warehouse.snapshot_range(Source(tmp_path / "src"), [WINDOWS[0], WINDOWS[2]], "r1", placeable=PLACEABLE)


def test_an_error_in_the_middle_of_a_range_run_writes_none_of_it_and_is_retried(
    make_settings: Callable[..., Settings], landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range is one transaction: a transient failure part way leaves every partition as it was."""
    settings = make_settings(max_partitions_per_run="10", step_retries="1")
    keys = ["2026-03-01", "2026-03-02", "2026-03-03"]
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    calls: list[int] = []

    def failing(self: Any, session: Any, *args: Any) -> None:
        calls.append(1)
        # After the range's inputs and stats are written, before the commit.
        assert session.fetchall("SELECT count(DISTINCT partition_key) FROM input_stats") == [(3,)]
        raise OSError("the disk went away for a moment")

    monkeypatch.setattr(snapshots_module.Snapshots, "_refresh_unplaced", failing)
    result = run_assets(settings, ["inputs"], tags=tags, raise_on_error=False)
    assert not result.success and len(calls) == 2  # the first try and its retry
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried and "All 3 partitions failed" in str(retried[0].event_specific_data)
    assert "none was written" in str(retried[0].event_specific_data)
    assert not [e for e in result.all_events if e.is_step_materialization]
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings))
    with warehouse.session(read_only=True) as session:
        assert session.fetchall("SELECT count(*) FROM inputs") == [(0,)]
        assert session.fetchall("SELECT count(*) FROM input_stats") == [(0,)]


def test_an_empty_day_in_a_range_keeps_its_own_stats_and_warning(
    make_settings: Callable[..., Settings], landing: Path
) -> None:
    """Each partition of a range run keeps its own stats and warning when its window is empty."""
    settings = make_settings(max_partitions_per_run="10")
    for path in (settings.landing / "2026-03-02").iterdir():
        path.unlink()
    tags = {"dagster/asset_partition_range_start": "2026-03-01", "dagster/asset_partition_range_end": "2026-03-03"}
    result = run_assets(settings, ["inputs"], tags=tags, raise_on_error=False)
    assert result.success
    events = [e.event_specific_data.materialization for e in result.all_events if e.is_step_materialization]  # type: ignore[union-attr]
    by_key = {m.partition: m.metadata for m in events if m.asset_key == dg.AssetKey("inputs")}
    assert by_key["2026-03-02"]["empty_partition"].value is True
    assert by_key["2026-03-02"]["source_rows"].value == 0
    assert by_key["2026-03-01"]["source_rows"].value == by_key["2026-03-03"]["source_rows"].value > 0


def test_an_unreadable_file_fails_the_range_once_without_retries(
    make_settings: Callable[..., Settings], landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a partition's own checks make the range fall back to one partition at a time: a file that
    cannot be read fails every partition with one message, read once, and is not retried."""
    from batch_predict.warehouse import landing as landing_module

    from .test_landing_edges import corrupt_a_page

    settings = make_settings(max_partitions_per_run="10")
    bad = landing / "2026-03-02" / "corrupt.parquet"
    write(bad, [(f"c{i}", DAY + timedelta(days=1, hours=1), 1.0) for i in range(2000)])
    pq.write_table(pq.read_table(bad), bad, compression="none")
    corrupt_a_page(bad)
    reads: list[int] = []
    raise_read_failure = landing_module.Landing.raise_read_failure
    monkeypatch.setattr(
        landing_module.Landing,
        "raise_read_failure",
        lambda self, *args: (reads.append(1), raise_read_failure(self, *args))[1],
    )
    tags = {"dagster/asset_partition_range_start": "2026-03-01", "dagster/asset_partition_range_end": "2026-03-03"}
    result = run_assets(settings, ["inputs"], tags=tags, raise_on_error=False)
    assert not result.success and reads == [1]
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("All 3 partitions failed (2026-03-01, 2026-03-02, 2026-03-03); none was written.\n")
    assert message.count(f"The unreadable file is {bad}") == 1
    assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []
