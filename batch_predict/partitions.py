"""The one time-window partitions definition, built from the cadence, start and timezone settings."""

from collections.abc import Callable
from datetime import datetime

import dagster as dg

from batch_predict.settings import Settings


def build_partitions(settings: Settings) -> dg.TimeWindowPartitionsDefinition:
    """Partitions of `settings.cadence` from `settings.start`, in `settings.timezone`.

    The newest partition is the last complete one (Dagster's default end offset of 0):
    a partition becomes runnable once its window has closed.
    """
    start, timezone = settings.start, settings.timezone
    if settings.cadence == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=start, timezone=timezone)
    if settings.cadence == "weekly":
        return dg.WeeklyPartitionsDefinition(start_date=start, timezone=timezone)
    if settings.cadence == "monthly":
        return dg.MonthlyPartitionsDefinition(start_date=start, timezone=timezone)
    return dg.DailyPartitionsDefinition(start_date=start, timezone=timezone)


def partition_end(partitions_def: dg.TimeWindowPartitionsDefinition) -> Callable[[str], datetime]:
    """A partition key's window end, for code that must not know about Dagster (staleness.py)."""
    return lambda key: partitions_def.time_window_for_partition_key(key).end
