"""Whether a partition's predictions were delivered by their deadline, judged on what is stored now."""

from __future__ import annotations

from datetime import datetime

ON_TIME = "on_time"
LATE = "late"
PENDING = "pending"
MISSED = "missed"


def deadline_verdict(published_at: datetime | None, covered: bool | None, due_at: datetime, now: datetime) -> str:
    """The deadline outcome of one partition.

    A partition is done when its predictions were published and the outcomes stored now
    (predictions plus recorded errors) cover the inputs stored now: a partition snapshotted
    again after its publish, with records that have no outcome yet, is not done, however
    early that publish was.

    Returns:
        `on_time` (done, last published at or before `due_at`), `late` (done, published
        after it), `missed` (not done and `due_at` has passed) or `pending` (not done, not
        due yet).
    """
    if published_at is not None and covered:
        return ON_TIME if published_at <= due_at else LATE
    return MISSED if now >= due_at else PENDING
