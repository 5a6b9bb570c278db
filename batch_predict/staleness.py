"""Stale partitions: prediction partitions made by another model than the one that should make them now.

"Should" follows BATCH_PREDICT_BACKFILL_MODEL: with `current`, every partition should
be predicted by the alias's current version; with `point_in_time`, by the version the
alias pointed at when the partition ended. Dagster shows the same thing in the UI as
"unsynced" (the model asset's data version is the model's checksum), but only against
the current model and only once the model asset has been materialized; this listing
reads the versions recorded on the prediction rows themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from batch_predict.models.source import ModelSource
from batch_predict.models.types import ModelError
from batch_predict.warehouse import Warehouse


@dataclass(frozen=True)
class StalePartition:
    partition_key: str
    made_by: list[str]
    wanted: str


@dataclass(frozen=True)
class Staleness:
    current: str
    stale: list[StalePartition]
    undecided: dict[str, str]  # partition -> why no version can be chosen for it


def find_stale_partitions(
    warehouse: Warehouse,
    models: ModelSource,
    partition_end: Callable[[str], datetime],
    since: str | None = None,
) -> Staleness:
    """Partitions (from `since`, a partition key or date prefix, on) whose predictions another version made.

    `partition_end` gives a partition key's end (raising for a key of another partitioning).
    """
    current = models.current_version()
    stale, undecided = [], {}
    for key, made_by in warehouse.model_versions().items():
        if since is not None and key < since:
            continue
        try:
            end = partition_end(key)
        except Exception:  # a key of an older partitioning (BATCH_PREDICT_CADENCE or START changed)
            undecided[key] = "not a partition of the current BATCH_PREDICT_CADENCE/START"
            continue
        try:
            wanted = models.version_for(end, current)
        except ModelError as error:
            undecided[key] = str(error)
            continue
        if made_by != [wanted]:
            stale.append(StalePartition(key, made_by, wanted))
    return Staleness(current, stale, undecided)
