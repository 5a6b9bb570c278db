"""The deadline and model-age verdicts: judged once, so the checks and `batch-predict status` agree."""

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from batch_predict.checks import newest_due_partition
from batch_predict.cli import champion_line, status_rows
from batch_predict.contract import FeatureContract
from batch_predict.definitions import build_definitions
from batch_predict.demo import train_demo_model, write_landing
from batch_predict.models.registry import METADATA, Registry
from batch_predict.partitions import build_partitions
from batch_predict.settings import Settings
from batch_predict.verdicts import (
    BACKFILLED,
    LATE,
    MISSED,
    ON_TIME,
    PENDING,
    WHY_LATE,
    AgeLevel,
    ModelAge,
    deadline_description,
    deadline_summary,
    deadline_verdict,
)
from batch_predict.warehouse import Warehouse

from .conftest import change_stored_rows, run_assets

DUE = datetime(2026, 3, 2, 6, tzinfo=UTC)
NEXT_DUE = DUE + timedelta(days=1)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("published_at", "covered", "now", "expected"),
    [
        (DUE - HOUR, True, NEXT_DUE, ON_TIME),
        (DUE, True, NEXT_DUE, ON_TIME),
        (DUE + HOUR, True, DUE + 2 * HOUR, LATE),
        (NEXT_DUE, True, NEXT_DUE, LATE),
        (NEXT_DUE + HOUR, True, NEXT_DUE + HOUR, BACKFILLED),
        (DUE - HOUR, False, DUE - HOUR, PENDING),
        (DUE - HOUR, False, DUE, MISSED),
        (None, None, DUE - HOUR, PENDING),
        (None, None, DUE + HOUR, MISSED),
    ],
)
def test_deadline_verdict(published_at: datetime | None, covered: bool | None, now: datetime, expected: str) -> None:
    assert deadline_verdict(published_at, covered, DUE, now, NEXT_DUE) == expected


def test_without_the_next_deadline_a_backfill_is_plain_late() -> None:
    assert deadline_verdict(NEXT_DUE + HOUR, True, DUE, NEXT_DUE + HOUR) == LATE


def test_a_late_partition_is_explained_in_words() -> None:
    text = deadline_description("2026-03-01", LATE, DUE + 2 * HOUR, DUE)
    assert text.startswith(
        "Partition 2026-03-01 was predicted at 2026-03-02T08:00:00+00:00, 2:00:00 after its deadline"
    )
    assert WHY_LATE in text and "late by definition" in text
    assert "was backfilled at" in deadline_description("2026-03-01", BACKFILLED, NEXT_DUE + HOUR, DUE)
    assert deadline_summary([ON_TIME, PENDING, MISSED], 6) is None
    summary = deadline_summary([BACKFILLED, BACKFILLED, LATE, ON_TIME], 6)
    assert summary is not None
    assert summary.startswith("deadline: 2 backfilled and 1 late: predicted after partition end + ")
    assert "(6h)" in summary and WHY_LATE in summary


@pytest.mark.parametrize(
    ("age", "level", "status"),
    [
        (29.0, AgeLevel.WITHIN, "within the 30-day limit"),
        (31.0, AgeLevel.WARN, "past BATCH_PREDICT_MODEL_MAX_AGE_DAYS=30 (warn): retrain it"),
        (91.0, AgeLevel.ERROR, "past the hard limit of 90 days (error): retrain it"),
    ],
)
def test_model_age(age: float, level: AgeLevel, status: str) -> None:
    verdict = ModelAge(age, 30, 90)
    assert verdict.level == level
    assert verdict.passed == (level == AgeLevel.WITHIN)
    assert verdict.status() == status
    limit = "hard limit is 90" if level == AgeLevel.ERROR else "limit is 30"
    assert f"{limit} days." in verdict.description("iris", "v1")


def monitoring(settings: Settings) -> dict[str, dg.AssetCheckEvaluation]:
    result = (
        build_definitions(settings)
        .resolve_job_def("monitoring_job")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral())
    )
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def status_of(settings: Settings, key: str) -> str:
    [row] = [row for row in status_rows(settings, 10, datetime.now(UTC)) if row["partition_key"] == key]
    return str(row["deadline"])


def test_the_deadline_check_and_status_agree_on_the_same_facts(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    due = newest_due_partition(build_partitions(settings), timedelta(hours=settings.deadline_hours), datetime.now(UTC))
    assert due is not None
    key, due_at = due
    older = f"{date.fromisoformat(key) - timedelta(days=2):%Y-%m-%d}"
    write_landing(settings.landing, date.fromisoformat(older), 3, 200, seed=5)
    train_demo_model(Registry(settings.models), "champion")
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings))
    for partition in (older, key):
        assert run_assets(settings, ["inputs", "predictions"], partition).success

    def published(partition: str, at: datetime) -> None:
        statement = "UPDATE prediction_stats SET completed_at = $at WHERE partition_key = $k"
        change_stored_rows(warehouse, statement, at=at, k=partition)

    for at, verdict in ((due_at - HOUR, ON_TIME), (due_at + timedelta(minutes=1), LATE)):
        published(key, at)
        check = monitoring(settings)["newest_due_partition_on_time"]
        assert check.metadata["partition_key"].value == key  # type: ignore[attr-defined]
        assert check.metadata["verdict"].value == verdict == status_of(settings, key)  # type: ignore[attr-defined]
        assert check.passed == (verdict == ON_TIME)
        assert check.severity == dg.AssetCheckSeverity.WARN
        assert (WHY_LATE in (check.description or "")) == (verdict == LATE)
    # The older partition was predicted now, two deadlines after its own: a backfill.
    assert status_of(settings, older) == BACKFILLED


def test_the_model_age_check_and_status_agree(settings: Settings, registry: Registry) -> None:
    path = registry.root / "v1" / METADATA
    for days, level in ((1, AgeLevel.WITHIN), (31, AgeLevel.WARN), (91, AgeLevel.ERROR)):
        meta = json.loads(path.read_text())
        meta["trained_at"] = (datetime.now(UTC) - timedelta(days=days)).isoformat()
        path.write_text(json.dumps(meta))
        check = monitoring(settings)["model_not_outdated"]
        line = champion_line(settings, datetime.now(UTC))
        verdict = ModelAge(float(days), settings.model_max_age_days, settings.model_hard_max_age_days)
        assert verdict.level == level
        assert check.passed == verdict.passed
        assert check.severity == (
            dg.AssetCheckSeverity.ERROR if level == AgeLevel.ERROR else dg.AssetCheckSeverity.WARN
        )
        assert line.endswith(verdict.status())
