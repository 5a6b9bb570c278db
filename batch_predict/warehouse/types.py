"""What the warehouse returns and raises: plain values, the same for every backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.dataset as ds


class WarehouseError(RuntimeError):
    """The warehouse cannot be used as it is (a wrong file or URL, a table built for other features)."""


class WarehouseLockTimeout(WarehouseError):
    """Another writer held what this one needed longer than the lock timeout; worth retrying."""


class WarehouseUnavailable(WarehouseLockTimeout):
    """The warehouse server could not be reached or dropped the connection; worth retrying. `reason` is the
    message without what a run does about it, for a caller that does otherwise."""

    def __init__(self, reason: str, then: str = "a run's step tries again on this error") -> None:
        super().__init__(f"{reason}; {then}.")
        self.reason, self.then = reason, then

    def __reduce__(self) -> tuple[type[WarehouseUnavailable], tuple[str, str]]:
        return type(self), (self.reason, self.then)  # a copy or a pickle says it once


class WarehouseDamaged(WarehouseError):
    """DuckDB read a block of the warehouse file that fails its checksum, or that the file is too short
    to hold. Worth retrying: a reader has met a block mid-change by another process and read it whole
    on retry; damage that stays fails every retry the same way."""


class SourceError(RuntimeError):
    """The source files cannot be read into the feature contract."""


class PartitionCheckError(SourceError):
    """A partition's window fails a check on its records (too many rejected, shrunk since its last snapshot)."""


@dataclass(frozen=True)
class InputStats:
    partition_key: str
    source_rows: int
    valid_rows: int
    rejected_rows: int
    rejected_by_reason: dict[str, int]
    # After the snapshot: every record of the landing files in no partition, per reason.
    unplaced_by_reason: dict[str, int] = field(default_factory=dict)
    # Partitions whose stored copy of a record id this snapshot took, and how many.
    demoted: dict[str, int] = field(default_factory=dict)
    # Predictions of records no longer in the partitions' inputs, moved to predictions_history.
    archived_predictions: int = 0
    # After the snapshot: other partitions, snapshotted earlier, whose window now holds landed records their
    # snapshot lacks (a late file), with how many more records it holds (0: as many, but not the same).
    late: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelStats:
    """What loading the label files did with their rows: rows = kept + incomplete + superseded."""

    rows: int
    kept: int
    incomplete: int
    superseded: int


@dataclass(frozen=True)
class PredictionCounts:
    """A partition's predicted classes and score bins, and the predicted classes of the partition before it."""

    classes: dict[str, int]
    score_bins: dict[int, int]
    previous_partition: str | None
    previous_classes: dict[str, int]


@dataclass(frozen=True)
class WorkSet:
    """How many records a run predicts: its own partition's and those carried from earlier ones."""

    own: int
    carried: int


@dataclass(frozen=True)
class PredictionRun:
    """What publishing needs to know about the run whose outcome it records."""

    partition_key: str
    run_id: str
    mode: str
    model_name: str
    model_version: str
    probability_columns: Sequence[str]
    max_attempts: int
    wall_seconds: float


@dataclass(frozen=True)
class StagedPredictions:
    """Prediction rows staged by one attempt at a run (a resumed run publishes those of the attempt that died too).

    `rows` holds `partition_key`, `record_id`, `prediction` and one probability column per class;
    the columns that are the same for every row of the attempt are written by the publish.
    """

    run_id: str
    predicted_at: datetime
    rows: pa.RecordBatchReader  # read once, by the publish


@dataclass(frozen=True)
class StagedOutcome:
    """A run's staged outcome: every worked record ends in exactly one of `predictions` and `errors`.

    `work` (`partition_key`, `record_id`, `attempt_seen` of every worked record) is needed only
    when the run did not take the whole partition: `retry_failed` and `carry_over`.
    """

    predictions: Sequence[StagedPredictions]
    errors: ds.Dataset
    work: ds.Dataset | None = None


@dataclass(frozen=True)
class Completeness:
    """How the outcomes (predictions plus recorded errors) of one partition cover its valid inputs."""

    valid_inputs: int
    predictions: int
    missing: int
    duplicated: int
    unexpected: int

    @property
    def passed(self) -> bool:
        return self.missing == 0 and self.duplicated == 0 and self.unexpected == 0


@dataclass(frozen=True)
class PublishResult:
    """The partition's ledger right after a run published: live counts of its own records."""

    completeness: Completeness
    succeeded: int
    failed: int
    dead: int
    carried_in: int
    run_predicted: int
    run_failed: int
