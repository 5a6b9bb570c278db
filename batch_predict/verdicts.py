"""Verdicts on what is stored now: did a partition's predictions meet their deadline, is the model too old.

Judged here, without Dagster, so that the asset checks and `batch-predict status` say the
same thing about the same facts, in the same words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Deadline(StrEnum):
    """The deadline outcome of one partition (a `StrEnum`: compares equal to, and prints as, its value)."""

    ON_TIME = "on_time"
    LATE = "late"
    BACKFILLED = "backfilled"
    PENDING = "pending"
    MISSED = "missed"


ON_TIME = Deadline.ON_TIME
LATE = Deadline.LATE
BACKFILLED = Deadline.BACKFILLED
PENDING = Deadline.PENDING
MISSED = Deadline.MISSED

WHY_LATE = (
    "A partition counts as late whenever its predictions were last published after its deadline (partition end + "
    "BATCH_PREDICT_DEADLINE_HOURS), whatever published them: a backfill or re-prediction of a partition whose "
    "deadline has already passed is late by definition."
)


def deadline_verdict(
    published_at: datetime | None,
    covered: bool | None,
    due_at: datetime,
    now: datetime,
    next_due_at: datetime | None = None,
) -> Deadline:
    """The deadline outcome of one partition.

    A partition is done when its predictions were published and the outcomes stored now
    (predictions plus recorded errors) cover the inputs stored now: a partition snapshotted
    again after its publish, with records that have no outcome yet, is not done, however
    early that publish was.

    Args:
        next_due_at: when the next partition's predictions were due. A partition last published
            after that was predicted as a backfill or re-prediction, once newer partitions were due,
            not late by its own scheduled run. `None`: not told apart.

    Returns:
        `on_time` (done, last published at or before `due_at`), `backfilled` (done, published after
        `next_due_at`), `late` (done, published after `due_at`), `missed` (not done and `due_at` has
        passed) or `pending` (not done, not due yet).
    """
    if published_at is not None and covered:
        if published_at <= due_at:
            return ON_TIME
        return BACKFILLED if next_due_at is not None and published_at > next_due_at else LATE
    return MISSED if now >= due_at else PENDING


def deadline_description(partition_key: str, verdict: Deadline, published_at: datetime | None, due_at: datetime) -> str:
    """What the verdict means for this partition, in a sentence or three a user can act on."""
    if verdict == ON_TIME and published_at is not None:
        return f"Partition {partition_key} was predicted at {published_at.isoformat()}, before its deadline."
    if verdict in (LATE, BACKFILLED) and published_at is not None:
        how = "backfilled" if verdict == BACKFILLED else "predicted"
        return (
            f"Partition {partition_key} was {how} at {published_at.isoformat()}, {published_at - due_at} after its "
            f"deadline ({due_at.isoformat()}). {WHY_LATE} After a backfill (such as the first pass of `make demo`) "
            "this is expected; the check passes again once the schedule predicts a newer partition before its "
            "deadline."
        )
    if verdict == PENDING:
        return f"Partition {partition_key} is due at {due_at.isoformat()} and is not done yet."
    if published_at is None:
        return f"Partition {partition_key} was due at {due_at.isoformat()} and has no predictions."
    return (
        f"Partition {partition_key} was due at {due_at.isoformat()} and is not done: its predictions were "
        f"published at {published_at.isoformat()}, but not every record of its current input snapshot has "
        "exactly one outcome (its inputs were snapshotted again after that publish). Materialize its predictions."
    )


def deadline_summary(verdicts: Iterable[str], deadline_hours: float) -> str | None:
    """One status line on the partitions predicted after their deadline, saying why they count as late; else None."""
    counts = Counter(verdicts)
    parts = [f"{counts[verdict]} {verdict}" for verdict in (BACKFILLED, LATE) if counts[verdict]]
    if not parts:
        return None
    return (
        f"deadline: {' and '.join(parts)}: predicted after partition end + BATCH_PREDICT_DEADLINE_HOURS "
        f"({deadline_hours:g}h). {WHY_LATE} `backfilled`: predicted once a newer partition was due too; "
        "`late`: predicted while it was still the newest one due."
    )


class AgeLevel(StrEnum):
    """How the model's age compares with the two limits."""

    WITHIN = "within"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True)
class ModelAge:
    """The model's age against BATCH_PREDICT_MODEL_MAX_AGE_DAYS (warn) and ..._HARD_MAX_AGE_DAYS (error)."""

    age_days: float
    max_age_days: float
    hard_max_age_days: float

    @property
    def level(self) -> AgeLevel:
        if self.age_days > self.hard_max_age_days:
            return AgeLevel.ERROR
        return AgeLevel.WARN if self.age_days > self.max_age_days else AgeLevel.WITHIN

    @property
    def passed(self) -> bool:
        return self.level == AgeLevel.WITHIN

    def description(self, name: str, version: str) -> str:
        """The sentence of the `model_not_outdated` check."""
        hard = self.level == AgeLevel.ERROR
        limit = self.hard_max_age_days if hard else self.max_age_days
        return (
            f"Model {name} {version} was trained {self.age_days:.1f} days ago; the "
            f"{'hard ' if hard else ''}limit is {limit:g} days."
            + ("" if self.passed else " Retrain it (training_job or `batch-predict model train`).")
        )

    def status(self) -> str:
        """The verdict at the end of the status's champion line."""
        if self.level == AgeLevel.ERROR:
            return f"past the hard limit of {self.hard_max_age_days:g} days (error): retrain it"
        if self.level == AgeLevel.WARN:
            return f"past BATCH_PREDICT_MODEL_MAX_AGE_DAYS={self.max_age_days:g} (warn): retrain it"
        return f"within the {self.max_age_days:g}-day limit"


def rerun_hint(late_keys: Iterable[str]) -> str:
    """How to rerun the partitions a late file left lacking records: one backfill (or in-process run) per
    partition, so that no partition between them (which may have lost its landing files to retention since) is
    snapshotted again."""
    keys = sorted(late_keys)
    commands = "; ".join(f"batch-predict backfill --from {key} --to {key}" for key in keys[:3])
    more = f" (and the same for the other {len(keys) - 3})" if len(keys) > 3 else ""
    one = len(keys) == 1
    partition = keys[0] if one else "KEY"
    return (
        f"materialize inputs and predictions of {'that partition' if one else 'those partitions'} again: "
        f"a backfill of {'it' if one else 'them'} in the UI, or {commands}{more} (both run by the daemon), or "
        f"without a daemon dagster asset materialize -m batch_predict.definitions --select inputs,predictions "
        f"--partition {partition}{'' if one else ' for each'}"
    )
