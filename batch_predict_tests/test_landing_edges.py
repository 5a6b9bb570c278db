"""Landing files at the edges: moved away, unplaceable, duplicated across partitions, corrupt, oddly named."""

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_predict.cli import main
from batch_predict.contract import FeatureContract
from batch_predict.models.registry import Registry
from batch_predict.settings import IRIS_FEATURES, Settings, SettingsError
from batch_predict.warehouse import Source, SourceError, Warehouse

from .conftest import ROWS_PER_DAY, run_assets, use_settings_in_environment

DAY = datetime(2026, 3, 1, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
HEADER = "record_id,event_time," + ",".join(IRIS_FEATURES) + "\n"


def query(path: Path, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or {}).fetchall()


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run failed outside a step"
    return str(failures[0].event_specific_data)


def write(path: Path, ids: list[str | None], times: list[Any], **features: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, Any] = {"record_id": ids, "event_time": times}
    columns |= {name: features.get(name, [1.0] * len(ids)) for name in IRIS_FEATURES}
    pq.write_table(pa.table(columns), path)


# -- 1. a rerun after the landing files are gone -------------------------------------------


def test_a_rerun_without_its_landing_files_fails_until_told_and_keeps_predictions(
    settings: Settings, landing: Path, registry: Registry, tmp_path: Path
) -> None:
    assert run_assets(settings, ["inputs", "predictions"], "2026-03-01").success
    tables = ("inputs", "rejected_inputs", "input_stats", "predictions", "prediction_errors")
    before = {
        t: query(settings.warehouse, f"SELECT count(*) FROM {t} WHERE partition_key = '2026-03-01'") for t in tables
    }
    [(predicted,)] = before["predictions"]
    shutil.move(landing / "2026-03-01", tmp_path / "archived")  # a retention job moved the day away

    refused = run_assets(settings, ["inputs", "predictions"], "2026-03-01", raise_on_error=False)
    message = failure_message(refused)
    assert "Partition 2026-03-01 was snapshotted with 400 source records" in message
    assert f"{Source(landing).pattern} now holds 0" in message
    assert '{"ops": {"inputs": {"config": {"allow_shrink": true}}}}' in message and "--allow-shrink" in message
    after = {
        t: query(settings.warehouse, f"SELECT count(*) FROM {t} WHERE partition_key = '2026-03-01'") for t in tables
    }
    assert after == before
    assert [e for e in refused.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []

    forced = run_assets(
        settings,
        ["inputs", "predictions"],
        "2026-03-01",
        run_config={"ops": {"inputs": {"config": {"allow_shrink": True}}}},
    )
    assert forced.success
    assert query(settings.warehouse, "SELECT count(*) FROM inputs WHERE partition_key = '2026-03-01'") == [(0,)]
    assert query(settings.warehouse, "SELECT count(*) FROM predictions WHERE partition_key = '2026-03-01'") == [(0,)]
    # What the forced shrink removed stays queryable.
    archived = query(
        settings.warehouse,
        """SELECT count(*), count(DISTINCT superseded_by_run) FROM predictions_history
           WHERE partition_key = '2026-03-01' AND superseded_by_run = $run""",
        {"run": forced.run_id},
    )
    assert archived == [(predicted, 1)]
    assert query(
        settings.warehouse,
        "SELECT count(*) FROM predictions_all_versions WHERE partition_key = '2026-03-01' AND NOT is_current",
    ) == [(predicted,)]


def test_a_small_shrink_is_accepted(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "a.parquet", ["a", "b", "c"], [DAY] * 3)
    warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r1")
    write(source.root / "a.parquet", ["a", "b"], [DAY] * 2)
    assert warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r2").valid_rows == 2


def test_the_shrink_share_is_a_setting(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with pytest.raises(
        SettingsError, match="BATCH_PREDICT_MAX_SHRINK_SHARE='1.5' is not valid: use a share from 0 to 1"
    ):
        make_settings(max_shrink_share="1.5")
    settings = make_settings(max_shrink_share="0.9")
    write(settings.landing / "a.parquet", [f"r{i}" for i in range(10)], [DAY] * 10)
    assert run_assets(settings, ["inputs"], "2026-03-01").success
    write(settings.landing / "a.parquet", [f"r{i}" for i in range(8)], [DAY] * 8)
    message = failure_message(run_assets(settings, ["inputs"], "2026-03-01", raise_on_error=False))
    assert "with 10 source records" in message and "holds 8" in message
    assert "BATCH_PREDICT_MAX_SHRINK_SHARE=0.9" in message


# -- 2. records in no partition -------------------------------------------------------------


def test_records_of_the_partition_in_progress_wait_without_failing_the_check(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(source_glob="*.csv")
    settings.landing.mkdir(parents=True)
    (settings.landing / "a.csv").write_text(
        HEADER + "ok,2026-03-01T01:00:00Z,5.1,3.5,1.4,0.2\n" + "later,2099-01-01T00:00:00Z,5.1,3.5,1.4,0.2\n"
    )
    [check] = run_assets(settings, ["inputs"], "2026-03-01").get_asset_check_evaluations()
    assert check.passed
    assert check.metadata["unplaced_by_reason"].value == {"future_event_time": 1}
    assert "1 whose event time is after the newest partition" in str(check.description)
    assert query(settings.warehouse, "SELECT record_id, reason FROM unplaced_inputs") == [
        ("later", "future_event_time")
    ]


def test_records_without_a_partition_are_listed_and_checked(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(source_glob="*.csv")
    settings.landing.mkdir(parents=True)
    (settings.landing / "a.csv").write_text(
        HEADER
        + "ok,2026-03-01T01:00:00Z,5.1,3.5,1.4,0.2\n"
        + "empty,,5.1,3.5,1.4,0.2\n"
        + "bad,yesterday,5.1,3.5,1.4,0.2\n"
        + "early,2026-02-01T00:00:00Z,5.1,3.5,1.4,0.2\n"
        + "future,2099-01-01T00:00:00Z,5.1,3.5,1.4,0.2\n"
    )
    first = run_assets(settings, ["inputs"], "2026-03-01")
    assert first.success
    [check] = first.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.severity) == (
        "every_record_placed",
        False,
        dg.AssetCheckSeverity.WARN,
    )
    assert check.metadata["unplaced_by_reason"].value == {
        "before_start": 1,
        "future_event_time": 1,
        "missing_event_time": 1,
        "unparseable_event_time": 1,
    }
    unplaced = "SELECT record_id, reason, raw_event_time, first_seen_at FROM unplaced_inputs ORDER BY record_id"
    rows = query(settings.warehouse, unplaced)
    assert [row[:3] for row in rows] == [
        ("bad", "unparseable_event_time", "yesterday"),
        ("early", "before_start", "2026-02-01T00:00:00Z"),
        ("empty", "missing_event_time", None),
        ("future", "future_event_time", "2099-01-01T00:00:00Z"),
    ]
    assert query(settings.warehouse, "SELECT record_id FROM inputs") == [("ok",)]
    # A rerun refreshes the rows, never adds copies, and keeps when each was first seen.
    assert run_assets(settings, ["inputs"], "2026-03-01").success
    assert query(settings.warehouse, unplaced) == rows

    use_settings_in_environment(settings, monkeypatch, BATCH_PREDICT_SOURCE_GLOB="*.csv")
    assert main(["unplaced", "--json", "--limit", "2"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (listed["total"], len(listed["records"])) == (4, 2)
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "unplaced: 4 records (before_start: 1, future_event_time: 1, missing_event_time: 1, unparseable_event_time: 1)"
    )
    with pytest.raises(SystemExit) as exit_code:
        main(["unplaced", "--limit", "0"])
    assert exit_code.value.code == 2


def test_a_future_record_leaves_once_its_partition_exists(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "a.parquet", ["today", "tomorrow"], [DAY, NEXT + timedelta(hours=1)])
    warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r1", placeable=(DAY, NEXT))
    assert query(warehouse.path, "SELECT record_id, reason FROM unplaced_inputs") == [("tomorrow", "future_event_time")]
    later = NEXT + timedelta(days=1)
    stats = warehouse.snapshot_inputs(source, "2026-03-02", NEXT, later, "r2", placeable=(DAY, later))
    assert (stats.valid_rows, stats.unplaced_by_reason) == (1, {})
    assert query(warehouse.path, "SELECT count(*) FROM unplaced_inputs") == [(0,)]


# -- 4. which copy of a duplicated record id wins ------------------------------------------


def tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The snapshot tables without the columns that name the run or the time it ran."""
    return {
        "inputs": query(path, "SELECT * EXCLUDE (run_id, loaded_at) FROM inputs ORDER BY ALL"),
        "rejected": query(path, "SELECT * EXCLUDE (run_id, rejected_at) FROM rejected_inputs ORDER BY ALL"),
        "stats": query(path, "SELECT * EXCLUDE (run_id, loaded_at) FROM input_stats ORDER BY ALL"),
        "unplaced": query(path, "SELECT * EXCLUDE (last_seen_run_id, first_seen_at) FROM unplaced_inputs ORDER BY ALL"),
    }


def test_the_winning_copy_does_not_depend_on_snapshot_order(settings: Settings, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    # x: the later copy sits in the file that sorts first; y: an invalid earlier copy never takes the id.
    write(source.root / "a.parquet", ["x", "y"], [NEXT + timedelta(hours=2)] * 2)
    write(source.root / "b.parquet", ["x", "y", "x"], [DAY + timedelta(hours=3)] * 3, petal_width=[0.1, -1.0, 0.2])
    windows = {"2026-03-01": (DAY, NEXT), "2026-03-02": (NEXT, NEXT + timedelta(days=1))}
    results = []
    for order in (["2026-03-01", "2026-03-02"], ["2026-03-02", "2026-03-01"]):
        warehouse = Warehouse(tmp_path / f"{order[0]}.duckdb", FeatureContract.from_settings(settings))
        for run, key in enumerate([*order, *order]):  # and each rerun changes nothing
            warehouse.snapshot_inputs(source, key, *windows[key], f"r{run}", placeable=(DAY, NEXT + timedelta(days=1)))
        results.append(tables(warehouse.path))
    assert results[0] == results[1]
    inputs = {(row[0], row[1]): row for row in results[0]["inputs"]}
    assert set(inputs) == {("2026-03-01", "x"), ("2026-03-02", "y")}
    assert inputs["2026-03-01", "x"][6] == 0.1  # the first row of b.parquet, the earliest copy
    reasons = sorted((row[0], row[1], row[3]) for row in results[0]["rejected"])
    assert reasons == [
        ("2026-03-01", "x", "duplicate_record_id"),
        ("2026-03-01", "y", "negative_value"),
        ("2026-03-02", "x", "duplicate_record_id"),
    ]


def test_many_copies_in_shuffled_files_end_the_same_whether_the_staged_rows_are_reused_or_not(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each window reads its own rows from the landing staged once: the outcome is the same as snapshotting
    each partition afresh in the opposite order (where later partitions keep an id until an earlier copy's
    partition takes it), and every row ends in exactly one place."""
    import random

    from batch_predict.warehouse import landing as landing_module

    monkeypatch.setattr(landing_module, "RACY_SECONDS", 0)  # the files may be reused as soon as written
    staged = []
    stage_all = landing_module.Landing._stage_all
    monkeypatch.setattr(
        landing_module.Landing, "_stage_all", lambda self, *args: (staged.append(1), stage_all(self, *args))[1]
    )
    rng = random.Random(7)
    days = [DAY + timedelta(days=i) for i in range(3)]
    placeable = (DAY, DAY + timedelta(days=3))
    times: list[Any] = [DAY + timedelta(minutes=rng.randrange(3 * 24 * 60)) for _ in range(300)]
    times += [None] * 5 + [DAY - timedelta(hours=1)] * 5 + [placeable[1] + timedelta(hours=1)] * 5
    rows = [(f"id{rng.randrange(120)}", time, rng.choice([1.0, 2.0, -1.0, float("nan")])) for time in times]
    rng.shuffle(rows)
    source = Source(tmp_path / "src")
    for name, part in (("a.parquet", rows[::2]), ("b.parquet", rows[1::2])):
        write(source.root / name, [r[0] for r in part], [r[1] for r in part], petal_width=[r[2] for r in part])
    keys = [f"{day:%Y-%m-%d}" for day in days]
    windows = {key: (day, day + timedelta(days=1)) for key, day in zip(keys, days, strict=True)}

    def snapshot(warehouse: Warehouse, order: list[str]) -> None:
        for run, key in enumerate(order):
            warehouse.snapshot_inputs(source, key, *windows[key], f"r{run}", placeable=placeable)

    contract = FeatureContract.from_settings(settings)
    held = Warehouse(tmp_path / "held.duckdb", contract)
    with held.hold():
        snapshot(held, [*keys, *keys])  # and each rerun changes nothing
    assert len(staged) == 1  # the six snapshots read the files once
    afresh = Warehouse(tmp_path / "afresh.duckdb", contract)
    snapshot(afresh, list(reversed(keys)))
    assert len(staged) == 4
    outcome = tables(held.path)
    assert outcome == tables(afresh.path)
    # Every placed row is in one partition's inputs or rejections; the rest are unplaced.
    placed = [r for r in rows if r[1] is not None and placeable[0] <= r[1] < placeable[1]]
    assert len(outcome["inputs"]) + len(outcome["rejected"]) == len(placed)
    assert len(outcome["unplaced"]) == len(rows) - len(placed)
    assert len({row[1] for row in outcome["inputs"]}) == len(outcome["inputs"])  # an id is kept once
    duplicates = [row for row in outcome["rejected"] if row[3] == "duplicate_record_id"]
    assert duplicates and {row[1] for row in duplicates} <= {row[1] for row in outcome["inputs"]}


def test_a_late_earlier_copy_takes_the_id_and_its_prediction_is_archived(
    settings: Settings, landing: Path, registry: Registry
) -> None:
    assert run_assets(settings, ["inputs", "predictions"], "2026-03-02").success
    [(record_id, predicted_by)] = query(
        settings.warehouse, "SELECT record_id, run_id FROM predictions WHERE partition_key = '2026-03-02' LIMIT 1"
    )
    [(valid_before,)] = query(
        settings.warehouse, "SELECT valid_rows FROM input_stats WHERE partition_key = '2026-03-02'"
    )
    write(landing / "2026-03-01" / "late.parquet", [record_id], [DAY + timedelta(hours=5)])
    claim = run_assets(settings, ["inputs"], "2026-03-01")
    assert claim.success
    assert query(settings.warehouse, "SELECT partition_key FROM inputs WHERE record_id = $r", {"r": record_id}) == [
        ("2026-03-01",)
    ]
    [(reason, detail)] = query(
        settings.warehouse,
        "SELECT reason, detail FROM rejected_inputs WHERE partition_key = '2026-03-02' AND record_id = $r",
        {"r": record_id},
    )
    assert (reason, detail) == (
        "duplicate_record_id",
        f"record id kept by the copy at 2026-03-01 05:00:00+00 in {landing / '2026-03-01' / 'late.parquet'}",
    )
    assert query(
        settings.warehouse,
        "SELECT run_id, superseded_by_run FROM predictions_history WHERE record_id = $r",
        {"r": record_id},
    ) == [(predicted_by, claim.run_id)]
    assert query(settings.warehouse, "SELECT count(*) FROM predictions WHERE record_id = $r", {"r": record_id}) == [
        (0,)
    ]
    stats = (
        "SELECT source_rows, valid_rows, rejected_rows, rejected_by_reason FROM input_stats WHERE partition_key = $p"
    )
    [(source_rows, valid_rows, rejected_rows, by_reason)] = query(settings.warehouse, stats, {"p": "2026-03-02"})
    assert (source_rows, valid_rows, rejected_rows) == (ROWS_PER_DAY, valid_before - 1, ROWS_PER_DAY - valid_before + 1)
    assert sum(json.loads(by_reason).values()) == rejected_rows
    # Snapshotting the other partition again gives the same rows: the demotion was what a rerun does.
    before = tables(settings.warehouse)
    assert run_assets(settings, ["inputs"], "2026-03-02").success
    assert tables(settings.warehouse) == before


def placed(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "every_record_placed"]
    return check


def test_a_late_file_for_a_predicted_partition_is_flagged_until_that_partition_runs_again(
    settings: Settings,
    landing: Path,
    registry: Registry,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file lands for a day already predicted, with new records and earlier copies of the next day's ids;
    then only the next day runs (as the schedule would): the day that lacks them must be named."""
    for key in ("2026-03-01", "2026-03-02"):
        assert placed(run_assets(settings, ["inputs", "predictions"], key)).passed
    copied = [
        r
        for (r,) in query(
            settings.warehouse,
            "SELECT record_id FROM predictions WHERE partition_key = '2026-03-02' ORDER BY record_id LIMIT 3",
        )
    ]
    ids = [f"late-{n}" for n in range(10)] + copied
    write(landing / "2026-03-01" / "late.parquet", ids, [DAY + timedelta(hours=5)] * len(ids))

    rerun = run_assets(settings, ["inputs", "predictions"], "2026-03-02")
    assert rerun.success
    # The copied ids keep their predictions where they are: no partition stores their earlier copies yet.
    for record_id in copied:
        where = "SELECT partition_key FROM predictions WHERE record_id = $r"
        assert query(settings.warehouse, where, {"r": record_id}) == [("2026-03-02",)], record_id
    check = placed(rerun)
    assert not check.passed and check.metadata["late_partitions"].value == {"2026-03-01": 13}
    assert "2026-03-01 (13 record(s))" in str(check.description)
    assert "batch-predict backfill --from 2026-03-01 --to 2026-03-01" in str(check.description)
    # Any later snapshot still names it: the day after is not the one that lacks the records.
    assert placed(run_assets(settings, ["inputs"], "2026-03-03")).metadata["late_partitions"].value == {
        "2026-03-01": 13
    }
    # So does the status, which reads only the warehouse.
    use_settings_in_environment(settings, monkeypatch)

    def status() -> tuple[list[str], dict[str, Any]]:
        assert main(["status"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert main(["status", "--json"]) == 0
        rows = {row["partition_key"]: row["late_records"] for row in json.loads(capsys.readouterr().out)}
        return [line for line in lines if line.startswith("late files:")], rows

    assert status() == (
        [
            "late files: 1 partition(s) lack records their window holds: 2026-03-01 (13 records, late_file); "
            "materialize inputs and predictions of that partition again: a backfill of it in the UI, or "
            "batch-predict backfill --from 2026-03-01 --to 2026-03-01 (both run by the daemon), or without a "
            "daemon dagster asset materialize -m batch_predict.definitions --select inputs,predictions "
            "--partition 2026-03-01"
        ],
        {"2026-03-01": 13, "2026-03-02": None, "2026-03-03": None},
    )

    again = run_assets(settings, ["inputs", "predictions"], "2026-03-01")
    check = placed(again)
    assert check.passed and check.metadata["late_partitions"].value == {}
    assert status() == ([], {"2026-03-01": None, "2026-03-02": None, "2026-03-03": None})
    for record_id in ids:
        where = "SELECT partition_key FROM predictions WHERE record_id = $r"
        assert query(settings.warehouse, where, {"r": record_id}) == [("2026-03-01",)], record_id
    # Every landed row is in exactly one place.
    [(landed,)] = query(settings.warehouse, "SELECT sum(source_rows) FROM input_stats")
    [(stored,)] = query(
        settings.warehouse, "SELECT (SELECT count(*) FROM inputs) + (SELECT count(*) FROM rejected_inputs)"
    )
    assert landed == stored


def landing_changes() -> dict[str, Callable[[Path], None]]:
    def retention(landing: Path) -> None:  # an old day's files moved away
        shutil.rmtree(landing / "2026-03-01")

    def partial_retention(landing: Path) -> None:
        next(iter(sorted((landing / "2026-03-01").iterdir()))).unlink()

    def rename(landing: Path) -> None:  # the same rows under another path
        first = sorted((landing / "2026-03-01").iterdir())[0]
        first.rename(landing / "2026-03-01" / "renamed.parquet")

    def folder_moved(landing: Path) -> None:
        shutil.move(landing / "2026-03-01", landing / "archive-2026-03-01")

    def replaced_by_fewer_others(landing: Path) -> None:  # 5 records the snapshot never took, fewer rows
        shutil.rmtree(landing / "2026-03-01")
        write(landing / "2026-03-01" / "again.parquet", [f"n{i}" for i in range(5)], [DAY + timedelta(hours=2)] * 5)

    def touched(landing: Path) -> None:
        for path in (landing / "2026-03-01").iterdir():
            path.write_bytes(path.read_bytes())

    return {
        "retention": retention,
        "partial_retention": partial_retention,
        "rename": rename,
        "folder_moved": folder_moved,
        "replaced_by_fewer_others": replaced_by_fewer_others,
        "touched": touched,
    }


@pytest.mark.parametrize("change", sorted(landing_changes()))
def test_only_records_a_snapshot_lacks_make_its_partition_late(
    settings: Settings, landing: Path, registry: Registry, change: str
) -> None:
    """Files moved away, renamed or rewritten as they were are no late file; records the snapshot never took
    are, even in a window that holds fewer rows than it took."""
    for key in ("2026-03-01", "2026-03-02"):
        assert run_assets(settings, ["inputs"], key).success
    landing_changes()[change](landing)
    check = placed(run_assets(settings, ["inputs"], "2026-03-02"))
    expected = {"2026-03-01": 5} if change == "replaced_by_fewer_others" else {}
    assert check.metadata["late_partitions"].value == expected
    assert check.passed == (not expected)


def test_a_copy_that_loses_its_record_id_names_the_partition_whose_copy_should_keep_it(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    """Day 1 keeps x and day 2 rejects its own x as a duplicate; then day 1's file is corrected and its x turns
    invalid. Day 2's copy should keep x now: day 2 is named until it runs again, and then keeps it."""
    source = Source(tmp_path / "src")
    days = [DAY + timedelta(days=i) for i in range(3)]
    windows = {f"{day:%Y-%m-%d}": (day, day + timedelta(days=1)) for day in days}
    placeable = (days[0], days[-1] + timedelta(days=1))
    write(source.root / "d1.parquet", ["x", "a"], [days[0] + timedelta(hours=2)] * 2)
    write(source.root / "d2.parquet", ["x", "b"], [days[1] + timedelta(hours=2)] * 2)

    def snapshot(key: str) -> Any:
        return warehouse.snapshot_inputs(source, key, *windows[key], f"r-{key}", placeable=placeable)

    snapshot("2026-03-01")
    assert snapshot("2026-03-02").late == {}
    write(source.root / "d1.parquet", ["x", "a"], [days[0] + timedelta(hours=2)] * 2, petal_width=[-0.2, 1.0])
    assert snapshot("2026-03-01").late == {"2026-03-02": 1}
    # A later day that also holds x keeps it meanwhile, but day 2 stays named, and its detail is left alone.
    write(source.root / "d3.parquet", ["x"], [days[2] + timedelta(hours=2)])
    assert snapshot("2026-03-03").late == {"2026-03-02": 1}
    assert snapshot("2026-03-02").late == {}
    kept = "SELECT partition_key FROM inputs WHERE record_id = 'x'"
    assert query(warehouse.path, kept) == [("2026-03-02",)]
    assert query(warehouse.path, "SELECT count(*) FROM late_partitions") == [(0,)]


def test_a_late_copy_with_a_stored_id_and_time_but_other_values_is_named(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    placeable = (DAY, NEXT + timedelta(days=1))
    write(source.root / "b.parquet", ["a", "b"], [DAY + timedelta(hours=1)] * 2, petal_width=[0.5, 0.5])
    warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r1", placeable=placeable)
    # A correction that sorts first: the same record id and event time, other values.
    write(source.root / "a.parquet", ["a"], [DAY + timedelta(hours=1)], petal_width=[9.9])
    stats = warehouse.snapshot_inputs(source, "2026-03-02", NEXT, NEXT + timedelta(days=1), "r2", placeable=placeable)
    assert stats.late == {"2026-03-01": 1}


# -- 6. data errors at read time --------------------------------------------------------------


@pytest.mark.parametrize("bad_row", [5, 24_000])
def test_a_bad_csv_value_is_the_same_rejection_wherever_it_sits(
    warehouse: Warehouse, tmp_path: Path, bad_row: int
) -> None:
    source = Source(tmp_path / "src", "*.csv")
    source.root.mkdir()
    lines = [f"r{i},2026-03-01T01:00:00Z,5.1,3.5,1.4,0.2\n" for i in range(25_000)]
    lines[bad_row] = f"r{bad_row},2026-03-01T01:00:00Z,five,3.5,1.4,0.2\n"  # past DuckDB's type-sniffing sample
    (source.root / "a.csv").write_text(HEADER + "".join(lines))
    stats = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert (stats.valid_rows, stats.rejected_by_reason) == (24_999, {"not_a_number": 1})
    assert query(warehouse.path, "SELECT record_id FROM rejected_inputs") == [(f"r{bad_row}",)]


def jsonl_source(root: Path, files: dict[str, list[tuple[str, str]]]) -> Source:
    """JSON Lines files of records given as (record id, event time) JSON texts, every feature 1.0."""
    root.mkdir()
    features = ", ".join(f'"{name}": 1.0' for name in IRIS_FEATURES)
    for name, records in files.items():
        (root / name).write_text(
            "".join(f'{{"record_id": {rid}, "event_time": {time}, {features}}}\n' for rid, time in records)
        )
    return Source(root, "*.jsonl")


def test_json_files_that_disagree_on_the_id_type_give_one_id_without_quotes(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    """`5` in one file and `"5"` in another make DuckDB read the column as JSON: still the one record `5`."""
    source = jsonl_source(
        tmp_path / "src",
        {
            "a.jsonl": [
                ("5", '"2026-03-01T01:00:00Z"'),
                ("7.0", '"2026-03-01T01:30:00Z"'),
                ("7.5", '"2026-03-01T01:40:00Z"'),
            ],
            "b.jsonl": [
                ('"5"', '"2026-03-01T02:00:00Z"'),
                ('"A-1"', '"2026-03-01T03:00:00Z"'),
                ("null", '"2026-03-01T04:00:00Z"'),
            ],
        },
    )
    stats = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert sorted(r for (r,) in query(warehouse.path, "SELECT record_id FROM inputs")) == ["5", "7", "A-1"]
    assert sorted(query(warehouse.path, "SELECT record_id, reason FROM rejected_inputs"), key=str) == sorted(
        [("5", "duplicate_record_id"), ("7.5", "non_integer_record_id"), (None, "missing_record_id")], key=str
    )
    assert (stats.source_rows, stats.valid_rows, stats.rejected_rows) == (6, 3, 3)


def test_an_empty_or_blank_record_id_is_a_missing_one(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "a.parquet", ["a", "", "  ", "b"], [DAY + timedelta(hours=1)] * 4)
    stats = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert (stats.valid_rows, stats.rejected_by_reason) == (2, {"missing_record_id": 2})


def test_a_json_event_time_that_is_a_number_leaves_only_its_record_unplaced(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    records = [('"a"', '"2026-03-01T01:00:00Z"'), ('"b"', "17"), ('"c"', "null"), ('"d"', '" "'), ('"e"', '"nope"')]
    source = jsonl_source(tmp_path / "src", {"a.jsonl": records})
    stats = warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert (stats.valid_rows, stats.unplaced_by_reason) == (1, {"unparseable_event_time": 2, "missing_event_time": 2})
    assert query(warehouse.path, "SELECT record_id, raw_event_time FROM unplaced_inputs ORDER BY 1") == [
        ("b", "17"),
        ("c", None),
        ("d", " "),
        ("e", "nope"),
    ]


def corrupt_a_page(path: Path) -> None:
    """Overwrite bytes inside the first column chunk: the footer stays valid, reading the data fails."""
    data = bytearray(path.read_bytes())
    data[30:46] = b"\xff" * 16
    path.write_bytes(bytes(data))


def test_a_corrupt_parquet_page_names_the_file_and_is_not_retried(
    settings: Settings, landing: Path, registry: Registry
) -> None:
    bad = landing / "2026-03-01" / "corrupt.parquet"
    ids = [f"c{i}" for i in range(2000)]
    write(bad, ids, [DAY + timedelta(hours=1)] * 2000)  # type: ignore[arg-type]
    pq.write_table(pq.read_table(bad), bad, compression="none")
    corrupt_a_page(bad)
    result = run_assets(settings, ["inputs"], "2026-03-01", raise_on_error=False)
    message = failure_message(result)
    assert f"The unreadable file is {bad}" in message and "Move the unreadable file" in message
    assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []


def test_a_malformed_csv_line_names_the_file_and_line(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src", "*.csv")
    source.root.mkdir()
    rows = "".join(f"r{i},2026-03-01T01:00:00Z,5.1,3.5,1.4,0.2\n" for i in range(25_000))
    (source.root / "a.csv").write_text(HEADER + rows + "z,2026-03-01T01:00:00Z,5.1,3.5,1.4,0.2,extra\n")
    with pytest.raises(SourceError, match=rf"The unreadable file is {source.root / 'a.csv'}, line 25002\."):
        warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")


@pytest.mark.parametrize("fields", ["5.1,3.5", "5.1,3.5,1.4,0.2,9,9"])
@pytest.mark.parametrize("with_a_good_file", [False, True])
def test_a_ragged_csv_row_near_the_top_names_the_file_and_line(
    warehouse: Warehouse, tmp_path: Path, fields: str, with_a_good_file: bool
) -> None:
    """DuckDB finds no delimiter for such a file and reads it as one column: it must not seem to lack the
    contract's columns, nor leave its rows unplaced beside a good file."""
    source = Source(tmp_path / "src", "*.csv")
    source.root.mkdir()
    lines = [f"r{i},2026-03-01T01:00:00Z,5.1,3.5,1.4,0.2\n" for i in range(30)]
    lines.insert(2, f"bad,2026-03-01T01:00:00Z,{fields}\n")
    (source.root / "a.csv").write_text(HEADER + "".join(lines))
    if with_a_good_file:
        (source.root / "b.csv").write_text(HEADER + "g1,2026-03-01T01:00:00Z,5.1,3.5,1.4,0.2\n")
    count = len(fields.split(",")) + 2
    with pytest.raises(
        SourceError,
        match=rf"CSV file\(s\) {source.root / 'a.csv'} \(line 4 has {count} field\(s\), the header 6\).*nothing",
    ):
        warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    assert not warehouse.exists() or query(warehouse.path, "SELECT count(*) FROM input_stats") == [(0,)]


@pytest.mark.parametrize("bad", ['{"record_id": "b", "event_time": tru}', '{"record_id": "b", "event_time": '])
def test_a_malformed_json_line_names_the_file_and_its_line(warehouse: Warehouse, tmp_path: Path, bad: str) -> None:
    source = Source(tmp_path / "src", "*.jsonl")
    source.root.mkdir()
    good = '{"record_id": "a", "event_time": "2026-03-01T01:00:00Z"}'
    (source.root / "a.jsonl").write_text(f"{good}\n{good}\n{bad}\n{good}\n")
    with pytest.raises(SourceError, match=rf"The unreadable file is {source.root / 'a.jsonl'}, line 3\."):
        warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")


def test_a_csv_column_named_like_a_header_line_is_just_a_column(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src", "*.csv")
    source.root.mkdir()
    (source.root / "a.csv").write_text(
        HEADER.rstrip("\n") + ',"note;record_id"\n' + "a,2026-03-01T01:00:00Z,5.1,3.5,1.4,0.2,x\n"
    )
    assert warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r").valid_rows == 1


def test_a_file_gone_mid_read_is_an_io_error_to_retry(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    write(source.root / "a.parquet", ["a"], [DAY])
    with duckdb.connect() as con:
        with pytest.raises(duckdb.IOException) as raised:
            con.execute("SELECT * FROM read_parquet($p)", {"p": str(source.root / "gone.parquet")})
        failure = warehouse.landing._read_failure(con, source, raised.value)
    assert isinstance(failure, OSError) and "retried" in str(failure)


# -- 7. names that used to give unrelated messages ----------------------------------------------


def test_a_source_column_named_filename_is_just_data(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src")
    source.root.mkdir()
    table = pa.table(
        {"record_id": ["a"], "event_time": [DAY], "filename": ["upload-7.csv"], **{f: [1.0] for f in IRIS_FEATURES}}
    )
    pq.write_table(table, source.root / "a.parquet")
    assert warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r").valid_rows == 1
    assert query(warehouse.path, "SELECT source_file FROM inputs") == [(str(source.root / "a.parquet"),)]


def test_a_column_differing_only_in_case_is_named_with_its_file(warehouse: Warehouse, tmp_path: Path) -> None:
    source = Source(tmp_path / "src", "*.csv")
    source.root.mkdir()
    (source.root / "a.csv").write_text(HEADER.replace("sepal_length", "Sepal_Length") + "a,2026-03-01,1,1,1,1\n")
    with pytest.raises(
        SourceError, match=rf"'Sepal_Length' in {source.root / 'a.csv'} differs only in case from 'sepal_length'"
    ):
        warehouse.snapshot_inputs(source, "2026-03-01", DAY, NEXT, "r")
    parquet = Source(tmp_path / "pq")
    write(parquet.root / "a.parquet", ["a"], [DAY])
    pq.write_table(
        pq.read_table(parquet.root / "a.parquet").rename_columns(["record_id", "Event_Time", *IRIS_FEATURES]),
        parquet.root / "b.parquet",
    )
    with pytest.raises(SourceError, match=r"b\.parquet has column 'Event_Time', which differs only in case"):
        warehouse.snapshot_inputs(parquet, "2026-03-01", DAY, NEXT, "r")


# -- copies of one record that nothing but their values tells apart ------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_identical_time_copies_keep_one_by_a_fixed_rule_and_the_other_keeps_its_values(
    tmp_path: Path, suffix: str
) -> None:
    """Two copies of one record id at the same time in the same file: in CSV the copy whose values read
    first as text is kept, in Parquet the earlier row; the other is rejected as a duplicate with the
    values it came with. Rows of other ids are untouched, and valid rows keep no raw values."""
    root = tmp_path / "landing"
    root.mkdir()
    at = DAY + timedelta(hours=3)
    values = {"sepal_length": [9.0, 1.5, 2.0], "sepal_width": [1.0, 1.0, 1.0]}
    if suffix == ".csv":
        lines = [
            f"{record},{at.isoformat()},{sepal_length},{sepal_width},1.0,1.0"
            for record, sepal_length, sepal_width in zip(["dup", "dup", "solo"], *values.values(), strict=True)
        ]
        (root / "day.csv").write_text(HEADER + "\n".join(lines) + "\n")
    else:
        write(root / "day.parquet", ["dup", "dup", "solo"], [at, at, at], **values)
    warehouse = Warehouse(tmp_path / "w.duckdb", FeatureContract("record_id", "event_time", IRIS_FEATURES))
    stats = warehouse.snapshot_inputs(Source(root=root, glob=f"*{suffix}"), "2026-03-01", DAY, NEXT, "run-1")
    assert (stats.valid_rows, stats.rejected_rows) == (2, 1)
    kept = query(warehouse.path, "SELECT record_id, sepal_length FROM inputs ORDER BY record_id")
    # CSV: "{'sepal_length': 1.5, ...}" sorts before "{'sepal_length': 9.0, ...}"; Parquet: row 0 first.
    assert kept == [("dup", 1.5 if suffix == ".csv" else 9.0), ("solo", 2.0)]
    [(reason, raw)] = query(warehouse.path, "SELECT reason, raw_values FROM rejected_inputs")
    assert reason == "duplicate_record_id"
    assert ("9.0" if suffix == ".csv" else "1.5") in raw
