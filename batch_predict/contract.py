"""The feature contract: which columns a source record must have and what makes it valid."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from batch_predict.settings import MAX_COLUMN_NAME_BYTES, FeatureRange, Settings

# Reason codes written to `rejected_inputs.reason`, checked in this order: a record is
# rejected for the first rule it breaks, and `detail` names the offending column.
MISSING_RECORD_ID = "missing_record_id"
NON_INTEGER_RECORD_ID = "non_integer_record_id"
MISSING_FEATURE = "missing_feature"
NOT_A_NUMBER = "not_a_number"
NAN_FEATURE = "nan_feature"
NEGATIVE_VALUE = "negative_value"
OUT_OF_RANGE = "out_of_range"
DUPLICATE_RECORD_ID = "duplicate_record_id"

# Reason codes written to `unplaced_inputs.reason`: why a record's event time places it in no
# partition (checked in this order).
MISSING_EVENT_TIME = "missing_event_time"
UNPARSEABLE_EVENT_TIME = "unparseable_event_time"
BEFORE_START = "before_start"
FUTURE_EVENT_TIME = "future_event_time"


@dataclass(frozen=True)
class FeatureContract:
    """Columns of a source record and the rules a valid record obeys.

    Every feature is a finite DOUBLE (a value that does not cast is `not_a_number`),
    the features in `nonnegative` are at least zero, those in `ranges` lie within their
    bounds, and a record id appears once across all partitions.
    """

    id_column: str
    time_column: str
    features: tuple[str, ...]
    nonnegative: tuple[str, ...] = ()
    ranges: tuple[FeatureRange, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> FeatureContract:
        return cls(
            id_column=settings.id_column,
            time_column=settings.time_column,
            features=settings.features,
            nonnegative=settings.nonnegative_features,
            ranges=settings.feature_ranges,
        )

    @property
    def required_columns(self) -> tuple[str, ...]:
        return (self.id_column, self.time_column, *self.features)


# A label written like this names its column as it is: `proba_<label>`.
_PLAIN_LABEL = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_HASH_CHARS = 10


def probability_column(label: str) -> str:
    """The predictions column holding the probability of one class.

    A plain label (lower-case ASCII letters and digits in words joined by single
    underscores: `setosa`, `0`, `high_risk`) gives `proba_<label>`, as it always has, when
    that fits PostgreSQL's 63 bytes. Any other label (`Iris
    Virginica!`, `a/b`, `class 1`, `"x"`, `é`, the empty label) gives `proba_<words>__<hash>`:
    its letters and digits in lower case, joined by `_` and cut to fit 63 bytes, then two
    underscores and the first 10 hex digits of the label's SHA-256. A plain label never
    holds `__`, so the two forms never meet, and two labels that read alike (`A` and `a`,
    `a b` and `a-b`) get different columns, in DuckDB (whose names ignore case) too. The name
    depends on the label alone, so a class keeps its column across models.
    """
    prefix = "proba_"
    if _PLAIN_LABEL.fullmatch(label) and len(prefix) + len(label) <= MAX_COLUMN_NAME_BYTES:
        return prefix + label
    digest = hashlib.sha256(label.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    words = re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")
    room = MAX_COLUMN_NAME_BYTES - len(prefix) - 2 - _HASH_CHARS
    words = words[:room].rstrip("_")
    return f"{prefix}{words}__{digest}" if words else f"{prefix}_{digest}"
