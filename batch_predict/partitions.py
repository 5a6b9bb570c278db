"""The one time-window partitions definition, built from the cadence, start and timezone settings."""

from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from batch_predict.settings import Settings


def build_partitions(settings: Settings) -> dg.TimeWindowPartitionsDefinition:
    """Partitions of `settings.cadence` from `settings.start`, in `settings.timezone`.

    The newest partition is the last complete one (Dagster's default end offset of 0):
    a partition becomes runnable once its window has closed.
    """
    timezone = settings.timezone
    start = first_partition_start(settings.start, settings.cadence, settings.timezone)
    if settings.cadence == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=start, timezone=timezone)
    if settings.cadence == "weekly":
        return dg.WeeklyPartitionsDefinition(start_date=start, timezone=timezone)
    if settings.cadence == "monthly":
        return dg.MonthlyPartitionsDefinition(start_date=start, timezone=timezone)
    return dg.DailyPartitionsDefinition(start_date=start, timezone=timezone)


def first_partition_start(start: datetime, cadence: str, timezone: str) -> datetime:
    """The start of the partition that holds `start`, as a naive time in `timezone`.

    Dagster begins its partitions at the first boundary at or after the start it is given, so a
    start of 2026-11-02 06:00 for daily partitions (or a Monday for weekly ones, which begin on
    Sundays) would leave the records between the start and that boundary in no partition.
    """
    if start.tzinfo is not None:
        start = start.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    start = start.replace(minute=0, second=0, microsecond=0)
    if cadence == "hourly":
        return start
    start = start.replace(hour=0)
    if cadence == "weekly":
        return start - timedelta(days=(start.weekday() + 1) % 7)  # back to Sunday, where Dagster's weeks begin
    if cadence == "monthly":
        return start.replace(day=1)
    return start


def partition_end(partitions_def: dg.TimeWindowPartitionsDefinition) -> Callable[[str], datetime]:
    """A partition key's window end, for code that must not know about Dagster (staleness.py)."""
    return lambda key: partitions_def.time_window_for_partition_key(key).end
