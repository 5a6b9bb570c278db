"""The one time-window partitions definition, built from the cadence, start and timezone settings."""


import dagster as dg

from batch_predict.settings import Settings

_BY_CADENCE: dict[str, type[dg.TimeWindowPartitionsDefinition]] = {
    "hourly": dg.HourlyPartitionsDefinition,
    "daily": dg.DailyPartitionsDefinition,
    "weekly": dg.WeeklyPartitionsDefinition,
    "monthly": dg.MonthlyPartitionsDefinition,
}


def build_partitions(settings: Settings) -> dg.TimeWindowPartitionsDefinition:
    """Partitions of `settings.cadence` from `settings.start`, in `settings.timezone`.

    The newest partition is the last complete one (Dagster's default end offset of 0):
    a partition becomes runnable once its window has closed.
    """
    return _BY_CADENCE[settings.cadence](start_date=settings.start, timezone=settings.timezone)
