"""Status and the deadline check judge a partition by what is stored now, not by its last publish."""

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from batch_predict.checks import newest_due_partition
from batch_predict.cli import status_rows
from batch_predict.contract import FeatureContract
from batch_predict.definitions import build_definitions
from batch_predict.demo import train_demo_model, write_landing
from batch_predict.models.registry import Registry
from batch_predict.partitions import build_partitions
from batch_predict.settings import IRIS_FEATURES, Settings
from batch_predict.warehouse import Warehouse

from .conftest import BOTH_BACKENDS, change_stored_rows, run_assets

LATE = 30


def land_late_records(landing: Path, day: date, count: int = LATE) -> None:
    """A file of valid records of `day` that arrives after the partition was predicted."""
    start = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    table = pa.table(
        {
            "record_id": pa.array([f"late-{day:%Y%m%d}-{i:03d}" for i in range(count)]),
            "event_time": pa.array([start + timedelta(minutes=i) for i in range(count)], pa.timestamp("us", tz="UTC")),
            **{name: pa.array([1.5 + i % 3] * count, pa.float64()) for i, name in enumerate(IRIS_FEATURES)},
        }
    )
    pq.write_table(table, landing / f"{day:%Y-%m-%d}" / "late-arrivals.parquet")


def partition_row(settings: Settings, key: str, now: datetime) -> dict[str, object]:
    [row] = [row for row in status_rows(settings, 10, now) if row["partition_key"] == key]
    return row


@BOTH_BACKENDS
def test_status_counts_records_snapshotted_after_the_publish(
    make_settings: Callable[..., Settings], landing: Path, registry: Registry
) -> None:
    # A deadline years away: the first publish is on time, whenever the test runs.
    settings = make_settings(deadline_hours="100000")
    key = "2026-03-01"
    assert run_assets(settings, ["inputs", "predictions"], key).success
    now = datetime.now(UTC)
    published = partition_row(settings, key, now)
    assert published["every_input_predicted"] is True
    assert published["deadline"] == "on_time"

    land_late_records(landing, date(2026, 3, 1))
    assert run_assets(settings, ["inputs"], key).success
    resnapshotted = partition_row(settings, key, now)
    assert resnapshotted["inputs"] == published["inputs"] + LATE  # type: ignore[operator]
    assert resnapshotted["predictions"] == published["predictions"]
    assert resnapshotted["every_input_predicted"] is False
    assert resnapshotted["deadline"] == "pending"
    due_at = datetime.fromisoformat(str(resnapshotted["due_at"]))
    assert partition_row(settings, key, due_at + timedelta(hours=1))["deadline"] == "missed"

    assert run_assets(settings, ["predictions"], key).success
    repredicted = partition_row(settings, key, now)
    assert repredicted["every_input_predicted"] is True
    assert repredicted["deadline"] == "on_time"
    assert repredicted["predictions"] + repredicted["failed"] == repredicted["inputs"]  # type: ignore[operator]


def deadline_check(settings: Settings) -> dg.AssetCheckEvaluation:
    defs = build_definitions(settings)
    result = defs.resolve_job_def("monitoring_job").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "newest_due_partition_on_time"]
    return evaluation


@BOTH_BACKENDS
def test_deadline_check_fails_for_a_partition_snapshotted_again_without_outcomes(settings: Settings) -> None:
    now = datetime.now(UTC)
    due = newest_due_partition(build_partitions(settings), timedelta(hours=settings.deadline_hours), now)
    assert due is not None
    key, due_at = due
    day = date.fromisoformat(key)
    write_landing(settings.landing, day, 1, 300, seed=3, files_per_day=2)
    train_demo_model(Registry(settings.models), "champion")
    assert run_assets(settings, ["inputs", "predictions"], key).success
    # The publish happened before the deadline (a run cannot be started in the past, so its
    # stored time is moved there).
    change_stored_rows(
        Warehouse(settings.warehouse, FeatureContract.from_settings(settings)),
        "UPDATE prediction_stats SET completed_at = $at WHERE partition_key = $k",
        at=due_at - timedelta(hours=1),
        k=key,
    )
    on_time = deadline_check(settings)
    assert on_time.passed
    assert on_time.metadata["partition_key"].value == key  # type: ignore[attr-defined]

    land_late_records(settings.landing, day)
    assert run_assets(settings, ["inputs"], key).success
    not_done = deadline_check(settings)
    assert not not_done.passed
    assert not_done.severity == dg.AssetCheckSeverity.ERROR
    assert not_done.metadata["verdict"].value == "missed"  # type: ignore[attr-defined]
    assert "current input snapshot" in (not_done.description or "")
