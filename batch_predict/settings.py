"""Every setting of the application, written once: the spec below is what loads, validates and documents them.

`SETTINGS` lists each environment variable with its type (a parser), default, accepted
values and description. `load_settings` reads them from it, so a bad value fails when
the definitions load, with a message naming the variable and the values it accepts; and
`python -m batch_predict.settings --write` (`make settings-docs`) writes `.env.example`
and `docs/settings.md` from it, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import textwrap
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from batch_predict.models.names import NAME_RULE, valid_name
from batch_predict.redaction import redact, redact_url


class OnFailure(StrEnum):
    """How a later run treats the records that failed prediction (BATCH_PREDICT_ON_FAILURE).

    A `StrEnum`, so a mode compares equal to, and is stored as, its plain string.
    """

    RETRY_ALL = "retry_all"
    RETRY_FAILED = "retry_failed"
    CARRY_OVER = "carry_over"


CADENCES = ("hourly", "daily", "weekly", "monthly")
ON_FAILURE_MODES = tuple(mode.value for mode in OnFailure)
BACKFILL_MODELS = ("current", "point_in_time")
PROMOTION_METRICS = ("accuracy", "log_loss")
SCHEDULE_STATES = ("stopped", "running")
IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
# The source glob's extension chooses DuckDB's reader (warehouse.READERS).
SOURCE_EXTENSIONS = (".parquet", ".csv", ".json", ".jsonl")

# The schedule fires this many minutes after a partition ends (to let late data land);
# the delay is expressed as the tick's minute and hour, so it must stay under an hour
# for hourly partitions and under a day otherwise.
_MAX_DELAY_MINUTES = {"hourly": 59, "daily": 24 * 60 - 1, "weekly": 24 * 60 - 1, "monthly": 24 * 60 - 1}


class SettingsError(ValueError):
    """A setting has a value the application cannot use."""


@dataclass(frozen=True)
class FeatureRange:
    """The plausible values of one feature, bounds included; `None` leaves that side open."""

    feature: str
    low: float | None
    high: float | None

    def __str__(self) -> str:
        return ":".join("" if bound is None else _number_text(bound) for bound in (self.low, self.high))


def _number_text(number: float) -> str:
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)


@dataclass(frozen=True)
class Settings:
    # A DuckDB file path (resolved) or a PostgreSQL URL.
    warehouse: str
    landing: Path
    source_glob: str
    models: Path
    model_alias: str
    cadence: str
    start: datetime
    timezone: str
    model_max_age_days: float
    deadline_hours: float
    schedule_delay_minutes: int
    chunk_size: int
    id_column: str
    time_column: str
    features: tuple[str, ...]
    nonnegative_features: tuple[str, ...]
    on_failure: OnFailure
    max_attempts: int
    max_rejected_share: float
    step_retries: int
    max_partitions_per_run: int
    lock_timeout_seconds: float
    duckdb_memory_limit: str
    duckdb_threads: int
    model_uri: str
    backfill_model: str
    model_hard_max_age_days: float
    labels: Path
    label_column: str
    train_days: int
    holdout_days: int
    promotion_metric: str
    promotion_margin: float
    retrain_schedule: str
    drift_alpha: float
    drift_psi_floor: float
    feature_ranges: tuple[FeatureRange, ...]
    max_failed_share: float
    max_shrink_share: float
    staging_max_age_hours: float = 48.0
    # Where runs stage their work, on the machine that runs them.
    staging: Path = Path("data/staging")


# A parser turns one variable's text into its value: (text, variable name, the values parsed
# before it, by field) -> value, raising SettingsError with the variable's name on a bad value.
Parser = Callable[[str, str, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Setting:
    """One environment variable: what it is called, holds, defaults to, accepts and means.

    Attributes:
        name: the variable (a user contract: never renamed).
        field: the `Settings` attribute it fills.
        default: the text used when the variable is unset or blank.
        accepts: the values it accepts, in the words its error message uses.
        description: what it changes, for `.env.example` and `docs/settings.md`.
        parse: its parser; it may read settings listed before it.
        choices: the allowed values of a setting that is one of a few words.
    """

    name: str
    field: str
    default: str
    accepts: str
    description: str
    parse: Parser
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Documented:
    """A variable read by something other than `load_settings`, listed in the docs with where it is read."""

    name: str
    default: str
    description: str


def _whole(minimum: int, maximum: int | None = None) -> Parser:
    return lambda value, name, _: _int(value, name, minimum, maximum)


def _number(minimum: float, maximum: float | None = None) -> Parser:
    return lambda value, name, _: _float(value, name, minimum, maximum)


# Upper bounds where a larger value cannot be meant and would break something: a time span past
# what Python's timedelta holds, a lock timeout past PostgreSQL's (int32 milliseconds), threads that
# would swamp the machine.
MAX_DAYS = 36_500
MAX_HOURS = MAX_DAYS * 24
MAX_LOCK_TIMEOUT_SECONDS = 86_400
MAX_DUCKDB_THREADS = 256


def _share(value: str, name: str, _: Mapping[str, Any]) -> float:
    share = _float(value, name, 0)
    if share > 1:
        raise SettingsError(_bad(name, value, "a share from 0 to 1"))
    return share


def _one_of(choices: Sequence[str], echo_lowered: bool = False) -> Parser:
    # Cadence and rerun mode have always echoed a bad value lowercased; the others as given.
    return lambda value, name, _: _choice(value.lower() if echo_lowered else value, name, tuple(choices))


def _plain(value: str, name: str, _: Mapping[str, Any]) -> str:
    return value


def _path_setting(value: str, name: str, _: Mapping[str, Any]) -> Path:
    return _path(value, name)


def _column(value: str, name: str, _: Mapping[str, Any]) -> str:
    return _names(value, name)[0]


def _features(value: str, name: str, _: Mapping[str, Any]) -> tuple[str, ...]:
    return _names(value, name)


def _nonnegative(value: str, name: str, parsed: Mapping[str, Any]) -> tuple[str, ...]:
    features: tuple[str, ...] = parsed["features"]
    nonnegative = () if value.lower() == "none" else _names(value, name)
    unknown = sorted(set(nonnegative) - set(features))
    if unknown:
        raise SettingsError(
            _bad(
                name,
                ",".join(unknown),
                "a comma-separated subset of BATCH_PREDICT_FEATURES (" + ",".join(features) + ")",
            )
        )
    return nonnegative


def _feature_ranges(value: str, name: str, parsed: Mapping[str, Any]) -> tuple[FeatureRange, ...]:
    return _ranges(value, parsed["features"])


def _on_failure(value: str, name: str, parsed: Mapping[str, Any]) -> OnFailure:
    return OnFailure(_choice(value.lower(), name, ON_FAILURE_MODES))


def _timezone(value: str, name: str, _: Mapping[str, Any]) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SettingsError(_bad(name, value, "an IANA time zone name such as UTC or Europe/Berlin")) from None
    return value


def _start_setting(value: str, name: str, parsed: Mapping[str, Any]) -> datetime:
    start = _start(value)
    timezone = parsed["timezone"]
    start_at = start if start.tzinfo else start.replace(tzinfo=zoneinfo.ZoneInfo(timezone))
    if start_at > datetime.now(UTC):
        raise SettingsError(
            f"{name}={value!r} is in the future ({timezone}): no partition exists "
            "until then, so nothing would be snapshotted, predicted or scheduled. Set it to the first day of your "
            f"source records (or unset it for the default {DEFAULTS[name]!r})."
        )
    return start


def _delay(value: str, name: str, parsed: Mapping[str, Any]) -> int:
    delay = _int(value, name, 0)
    cadence = parsed["cadence"]
    if delay > _MAX_DELAY_MINUTES[cadence]:
        raise SettingsError(
            _bad(
                name,
                str(delay),
                f"a whole number of minutes from 0 to {_MAX_DELAY_MINUTES[cadence]} for {cadence} partitions",
            )
        )
    return delay


def _source_glob(value: str, name: str, _: Mapping[str, Any]) -> str:
    if Path(value).suffix.lower() not in SOURCE_EXTENSIONS:
        raise SettingsError(
            _bad(name, value, "a glob ending in " + ", ".join(SOURCE_EXTENSIONS)) + " The extension chooses the reader."
        )
    return value


def _hard_max_age(value: str, name: str, parsed: Mapping[str, Any]) -> float:
    hard = _float(value, name, 0, MAX_DAYS)
    max_age: float = parsed["model_max_age_days"]
    if hard < max_age:
        raise SettingsError(
            _bad(name, value, f"a number of days at least BATCH_PREDICT_MODEL_MAX_AGE_DAYS ({max_age:g})")
        )
    return hard


def _drift_alpha(value: str, name: str, _: Mapping[str, Any]) -> float:
    alpha = _float(value, name, 0)
    if not 0 < alpha < 1:
        raise SettingsError(_bad(name, value, "a share between 0 and 1"))
    return alpha


# What BATCH_PREDICT_MAX_PARTITIONS_PER_RUN=auto groups in one backfill run, by cadence. A run costs
# seconds of process start, imports, bookkeeping and a read of every landing file; a partition inside a
# run a fraction of a second. Measured from the UI on a real daemon (docs/performance.md): a year of days
# in 4 runs of 92 took 94 s, in 12 runs of 31 159 s, in 2 runs 98 s, in one run 104 s; 2,208 hours in
# runs of 744 took 165 s, in runs of 168 219 s, in one run 232 s (Dagster plans each partition of a run
# before the run starts). So a quarter of days (4 runs a year, one per run slot) and a month of hours.
BACKFILL_PARTITIONS_PER_RUN = {"hourly": 744, "daily": 92, "weekly": 13, "monthly": 12}


def _partitions_per_run(value: str, name: str, parsed: Mapping[str, Any]) -> int:
    if value.lower() == "auto":
        return BACKFILL_PARTITIONS_PER_RUN[parsed["cadence"]]
    try:
        return _int(value, name, 1)
    except SettingsError:
        raise SettingsError(_bad(name, value, "a whole number of at least 1, or auto")) from None


def _staging_max_age(value: str, name: str, _: Mapping[str, Any]) -> float:
    hours = _float(value, name, 0, MAX_HOURS)
    if hours == 0:
        raise SettingsError(_bad(name, "0", "a number of hours above 0 (0 would remove resumable work)"))
    return hours


# models:/NAME@ALIAS or models:/NAME/VERSION (a version number, or a stage such as Production).
_MODEL_URI = re.compile(r"models:/[^/@?#]+(@[^/@?#]+|/[^/@?#]+)")


def _model_uri(value: str, name: str, _: Mapping[str, Any]) -> str:
    # No query string either: a models:/ URI takes none, and one with a token would show as resource config.
    if value and not _MODEL_URI.fullmatch(value):
        raise SettingsError(_bad(name, redact(value), "an MLflow model URI models:/NAME@ALIAS or models:/NAME/VERSION"))
    return value


def _backfill_model(value: str, name: str, parsed: Mapping[str, Any]) -> str:
    choice = _choice(value, name, BACKFILL_MODELS)
    if choice == "point_in_time" and parsed["model_uri"]:
        raise SettingsError(
            "BATCH_PREDICT_BACKFILL_MODEL='point_in_time' needs the local registry's alias history; with "
            "BATCH_PREDICT_MODEL_URI (MLflow) set, use 'current'."
        )
    if choice == "point_in_time" and parsed["on_failure"] == OnFailure.CARRY_OVER:
        raise SettingsError(
            "BATCH_PREDICT_ON_FAILURE='carry_over' predicts an earlier partition's failed records with a later "
            "partition's model, which BATCH_PREDICT_BACKFILL_MODEL='point_in_time' rules out. Use retry_all or "
            "retry_failed with point_in_time, or current with carry_over."
        )
    return choice


def _warehouse_setting(value: str, name: str, _: Mapping[str, Any]) -> str:
    return _warehouse(value)


def _staging(value: str, name: str, parsed: Mapping[str, Any]) -> Path:
    return _path(value, name) if value else default_staging(parsed["warehouse"])


def _alias_setting(value: str, name: str, _: Mapping[str, Any]) -> str:
    return _alias(value)


def _memory_setting(value: str, name: str, _: Mapping[str, Any]) -> str:
    return _memory(value)


_NAMES_ACCEPTED = "comma-separated column names, without repeats"
_COLUMN_ACCEPTED = "one column name"

# The settings, in the order they are documented. A parser may read the values of settings listed
# before it (the delay reads the cadence, the start the time zone, the nonnegative features and
# the ranges the features, the hard age limit the soft one, staging the warehouse).
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "BATCH_PREDICT_WAREHOUSE",
        "warehouse",
        "data/warehouse.duckdb",
        "a DuckDB file path or a PostgreSQL URL postgresql://user@host:port/database",
        "Where inputs, rejected inputs, predictions, the error ledger and stats live: a DuckDB file (one machine), "
        "or a PostgreSQL database that many writers share (put the password in PGPASSWORD or ~/.pgpass rather "
        "than in the URL; see docs/cluster.md). Another URL scheme, a mistyped `postgresql://`, or a URL that "
        "names no database (without PGDATABASE or a libpq service naming one) fails at load.",
        _warehouse_setting,
    ),
    Setting(
        "BATCH_PREDICT_STAGING",
        "staging",
        "",
        "a folder path, or empty",
        "Where runs stage their work, local to the machine that runs them; empty: `staging` beside the DuckDB "
        "file, or `data/staging` for a PostgreSQL warehouse.",
        _staging,
    ),
    Setting(
        "BATCH_PREDICT_LANDING",
        "landing",
        "data/landing",
        "a folder path",
        "Folder the source files land in.",
        _path_setting,
    ),
    Setting(
        "BATCH_PREDICT_SOURCE_GLOB",
        "source_glob",
        "**/*.parquet",
        "a glob ending in " + ", ".join(SOURCE_EXTENSIONS),
        "Which files under the landing folder to read; the extension picks the reader; another extension fails "
        "at load.",
        _source_glob,
    ),
    Setting(
        "BATCH_PREDICT_MODELS",
        "models",
        "data/models",
        "a folder path",
        "Model registry folder (one subfolder per version, aliases in `aliases/`).",
        _path_setting,
    ),
    Setting(
        "BATCH_PREDICT_MODEL_ALIAS",
        "model_alias",
        "champion",
        f"one alias name of {NAME_RULE}",
        "The alias whose version predicts.",
        _alias_setting,
    ),
    Setting(
        "BATCH_PREDICT_CADENCE",
        "cadence",
        "daily",
        "one of " + "|".join(CADENCES),
        "Partition cadence.",
        _one_of(CADENCES, echo_lowered=True),
        CADENCES,
    ),
    Setting(
        "BATCH_PREDICT_TIMEZONE",
        "timezone",
        "UTC",
        "an IANA time zone name such as UTC or Europe/Berlin",
        "Time zone of the partition boundaries and of the schedule.",
        _timezone,
    ),
    Setting(
        "BATCH_PREDICT_START",
        "start",
        "2026-01-01",
        "an ISO date or date-time such as 2026-01-01 or 2026-01-01T06:00, not in the future",
        "First partition: the partition that holds this time is the first (a start inside a day, or a weekday "
        "other than Sunday for weekly partitions, begins that day's or week's partition); a start in the future fails "
        "at load (no partition would exist until then). Set it to "
        "the first day of your records: every partition from it on shows in the UI, as missing until predicted. `make demo` sets it to its first data day.",
        _start_setting,
    ),
    Setting(
        "BATCH_PREDICT_MODEL_MAX_AGE_DAYS",
        "model_max_age_days",
        "30",
        f"a number from 0 to {MAX_DAYS}",
        "`model_not_outdated` warns, and the model asset's freshness warns, when the model is older than this.",
        _number(0, MAX_DAYS),
    ),
    Setting(
        "BATCH_PREDICT_MODEL_HARD_MAX_AGE_DAYS",
        "model_hard_max_age_days",
        "90",
        f"a number of days from BATCH_PREDICT_MODEL_MAX_AGE_DAYS to {MAX_DAYS}",
        "`model_not_outdated` fails (error), and the model asset's freshness fails, past this age.",
        _hard_max_age,
    ),
    Setting(
        "BATCH_PREDICT_DEADLINE_HOURS",
        "deadline_hours",
        "6",
        f"a number from 0 to {MAX_HOURS}",
        "Hours after a partition's end by which its predictions are due. Predictions published later count as "
        "late, whatever wrote them: a backfill of a partition whose deadline has passed is late by definition.",
        _number(0, MAX_HOURS),
    ),
    Setting(
        "BATCH_PREDICT_SCHEDULE_DELAY_MINUTES",
        "schedule_delay_minutes",
        "15",
        "a whole number of minutes from 0 to 59 for hourly partitions, to 1439 otherwise",
        "Minutes after a partition closes before the schedule runs it (late data).",
        _delay,
    ),
    Setting(
        "BATCH_PREDICT_CHUNK_SIZE",
        "chunk_size",
        "65536",
        "a whole number of at least 1",
        "Rows per Arrow record batch when predicting; bounds the prediction step's memory.",
        _whole(1),
    ),
    Setting(
        "BATCH_PREDICT_ID_COLUMN",
        "id_column",
        "record_id",
        _COLUMN_ACCEPTED,
        "Source column with the record id: any name a Parquet or CSV file holds, written as it is (`order id`, `a,b`; spaces around the value are dropped, as for every setting).",
        _column,
    ),
    Setting(
        "BATCH_PREDICT_TIME_COLUMN",
        "time_column",
        "event_time",
        _COLUMN_ACCEPTED,
        "Source column with the event time that places a record in a partition: any name, written as it is.",
        _column,
    ),
    Setting(
        "BATCH_PREDICT_FEATURES",
        "features",
        ",".join(IRIS_FEATURES),
        _NAMES_ACCEPTED,
        "Feature columns, in the model's order. Any name a Parquet or CSV file holds (`od280/od315_of_diluted_wines`, "
        '`petal width (cm)`, `é`; a CSV header loses the spaces around it); a name with a comma, or starting with `"`, is written in double quotes with `""` '
        'for a quote inside (`"a,b",x`; in `.env`, single-quote the whole value). Refused: names that differ only in '
        "case (DuckDB does not tell them apart), names longer than 63 bytes (PostgreSQL's limit, on both backends), and "
        "columns the tables use themselves (`run_id`, `partition_key`, `record_id`, `event_time`, `label`, ...).",
        _features,
    ),
    Setting(
        "BATCH_PREDICT_NONNEGATIVE_FEATURES",
        "nonnegative_features",
        ",".join(IRIS_FEATURES),
        "a comma-separated subset of BATCH_PREDICT_FEATURES, or none",
        "Features that must be at least 0 (`none` for no such rule).",
        _nonnegative,
    ),
    Setting(
        "BATCH_PREDICT_FEATURE_RANGES",
        "feature_ranges",
        "",
        "comma-separated FEATURE=LOW:HIGH ranges of BATCH_PREDICT_FEATURES, or empty",
        "Plausible values per feature, bounds included, e.g. `sepal_length=0:50,petal_width=0:10`; a side may be "
        "left empty (`0:`, `:10`). The feature is what comes before the entry's last `=`, so `a:b=0:1` bounds the "
        'feature `a:b`; a name with a comma is quoted as in BATCH_PREDICT_FEATURES (`"a,b"=0:1`). Values outside are '
        "rejected as `out_of_range`. Empty: no ranges.",
        _feature_ranges,
    ),
    Setting(
        "BATCH_PREDICT_ON_FAILURE",
        "on_failure",
        OnFailure.RETRY_ALL.value,
        "one of " + "|".join(ON_FAILURE_MODES),
        "How records that failed prediction are rerun: `retry_all`, `retry_failed` or `carry_over` (see the "
        "reruns section of the README).",
        _on_failure,
        ON_FAILURE_MODES,
    ),
    Setting(
        "BATCH_PREDICT_MAX_ATTEMPTS",
        "max_attempts",
        "3",
        "a whole number of at least 1",
        "Attempts after which a failed record is marked dead and no longer carried over.",
        _whole(1),
    ),
    Setting(
        "BATCH_PREDICT_MAX_REJECTED_SHARE",
        "max_rejected_share",
        "0.5",
        "a share from 0 to 1",
        "`inputs` fails, writing nothing, when more than this share of a partition's records break the contract.",
        _share,
    ),
    Setting(
        "BATCH_PREDICT_MAX_FAILED_SHARE",
        "max_failed_share",
        "0.1",
        "a share from 0 to 1",
        "`predictions` fails, after publishing (nothing is lost), when more than this share of a partition's "
        "worked records fail prediction; `no_prediction_errors` is then an error. `1.0` turns it off.",
        _share,
    ),
    Setting(
        "BATCH_PREDICT_MAX_SHRINK_SHARE",
        "max_shrink_share",
        "0.5",
        "a share from 0 to 1",
        "`inputs` fails, writing nothing, when a partition's window holds no records, or fewer than this share of "
        "those it was last snapshotted with (moved landing files); `allow_shrink` forces it.",
        _share,
    ),
    Setting(
        "BATCH_PREDICT_STEP_RETRIES",
        "step_retries",
        "3",
        "a whole number of at least 0",
        "Step retries (exponential backoff with jitter) for I/O and lock errors; bad data, models and settings "
        "are never retried.",
        _whole(0),
    ),
    Setting(
        "BATCH_PREDICT_MAX_PARTITIONS_PER_RUN",
        "max_partitions_per_run",
        "auto",
        "a whole number of at least 1, or auto",
        "A backfill groups up to this many partitions in one run (`BackfillPolicy.multi_run`); each partition "
        "still gets its own rows, stats and materialization. `auto`: "
        + ", ".join(f"{n} {cadence}" for cadence, n in BACKFILL_PARTITIONS_PER_RUN.items())
        + " (a quarter of days, a month of hours; see docs/performance.md). `1` makes one run per partition. A "
        "scheduled run is always one partition.",
        _partitions_per_run,
    ),
    Setting(
        "BATCH_PREDICT_LOCK_TIMEOUT_SECONDS",
        "lock_timeout_seconds",
        "300",
        f"a number from 0 to {MAX_LOCK_TIMEOUT_SECONDS}",
        "How long a run waits for another writer's lock before failing (and being retried).",
        _number(0, MAX_LOCK_TIMEOUT_SECONDS),
    ),
    Setting(
        "BATCH_PREDICT_DUCKDB_MEMORY_LIMIT",
        "duckdb_memory_limit",
        "512MB",
        "a size such as 512MB or 2GB",
        "DuckDB `memory_limit` for each connection.",
        _memory_setting,
    ),
    Setting(
        "BATCH_PREDICT_DUCKDB_THREADS",
        "duckdb_threads",
        "2",
        f"a whole number from 1 to {MAX_DUCKDB_THREADS}",
        "DuckDB `threads` for each connection.",
        _whole(1, MAX_DUCKDB_THREADS),
    ),
    Setting(
        "BATCH_PREDICT_MODEL_URI",
        "model_uri",
        "",
        "an MLflow model URI models:/NAME@ALIAS or models:/NAME/VERSION, or empty",
        "Load the model from MLflow instead of the local registry (needs the `mlflow` extra; MLflow's "
        "`MLFLOW_TRACKING_URI` says where its registry is). Empty: the local registry.",
        _model_uri,
    ),
    Setting(
        "BATCH_PREDICT_BACKFILL_MODEL",
        "backfill_model",
        "current",
        "one of " + "|".join(BACKFILL_MODELS),
        "Which version predicts a partition: `current` (the alias's version now) or `point_in_time` (the version "
        "the alias pointed at when the partition ended; not with BATCH_PREDICT_MODEL_URI or "
        "BATCH_PREDICT_ON_FAILURE=carry_over).",
        _backfill_model,
        BACKFILL_MODELS,
    ),
    Setting(
        "BATCH_PREDICT_LABELS",
        "labels",
        "data/labels",
        "a folder path",
        "Folder the label files (Parquet: id column and label column) land in.",
        _path_setting,
    ),
    Setting(
        "BATCH_PREDICT_LABEL_COLUMN",
        "label_column",
        "label",
        _COLUMN_ACCEPTED,
        "Column of the label files holding the true class: any name, written as it is.",
        _column,
    ),
    Setting(
        "BATCH_PREDICT_TRAIN_DAYS",
        "train_days",
        "14",
        "a whole number of at least 1",
        "Days of labelled history a candidate model is trained on.",
        _whole(1),
    ),
    Setting(
        "BATCH_PREDICT_HOLDOUT_DAYS",
        "holdout_days",
        "3",
        "a whole number of at least 1",
        "Newest labelled days on which the candidate and the champion are compared.",
        _whole(1),
    ),
    Setting(
        "BATCH_PREDICT_PROMOTION_METRIC",
        "promotion_metric",
        "accuracy",
        "one of " + "|".join(PROMOTION_METRICS),
        "Holdout metric that decides a promotion: `accuracy` (higher is better) or `log_loss` (lower is better).",
        _one_of(PROMOTION_METRICS),
        PROMOTION_METRICS,
    ),
    Setting(
        "BATCH_PREDICT_PROMOTION_MARGIN",
        "promotion_margin",
        "0.01",
        "a number of at least 0",
        "How much better than the champion the candidate must be on that metric to be promoted.",
        _number(0),
    ),
    Setting(
        "BATCH_PREDICT_RETRAIN_SCHEDULE",
        "retrain_schedule",
        "stopped",
        "one of " + "|".join(SCHEDULE_STATES),
        "Default status of the weekly `training_job_schedule`.",
        _one_of(SCHEDULE_STATES),
        SCHEDULE_STATES,
    ),
    Setting(
        "BATCH_PREDICT_DRIFT_ALPHA",
        "drift_alpha",
        "0.01",
        "a share between 0 and 1",
        "Chance that a drift check warns on a partition with no drift (shared across the distributions it judges).",
        _drift_alpha,
    ),
    Setting(
        "BATCH_PREDICT_DRIFT_PSI_FLOOR",
        "drift_psi_floor",
        "0.1",
        "a number of at least 0",
        "PSI below which a shift is never flagged, however many rows a partition has.",
        _number(0),
    ),
    Setting(
        "BATCH_PREDICT_STAGING_MAX_AGE_HOURS",
        "staging_max_age_hours",
        "48",
        f"a number of hours above 0, at most {MAX_HOURS}",
        "Staging folders and lock files of dead runs untouched this long, which no run holds, are removed by "
        "dead_run_sensor and by every batch-predict verb that runs (younger ones are resumed by the partition's "
        "next run).",
        _staging_max_age,
    ),
)

# Parse order: a setting after those it reads (the documented order keeps related settings together).
_PARSE_ORDER = ("warehouse", "model_uri", "on_failure", "features", "cadence", "timezone", "model_max_age_days")

DEFAULTS: Mapping[str, str] = {setting.name: setting.default for setting in SETTINGS}

# Read by `make demo-cluster` (batch_predict/cluster.py) from deploy/cluster.env, each overridden by the
# environment; the defaults shown are that file's values.
CLUSTER_SETTINGS: tuple[Documented, ...] = (
    Documented(
        "BATCH_PREDICT_CLUSTER_DIR",
        "data/cluster",
        "Folder of the local cluster: PostgreSQL's data (reused by the next run), the Dagster home, the servers' "
        "logs, demo records, labels and models. Relative to the project folder.",
    ),
    Documented(
        "BATCH_PREDICT_CLUSTER_WAREHOUSE",
        "{postgres}/batch_predict",
        "The warehouse the runs write: `{postgres}/NAME` for database NAME on the cluster's PostgreSQL server "
        "(created when missing), which any worker can reach; or a DuckDB file path (one machine only).",
    ),
    Documented("BATCH_PREDICT_CLUSTER_WORKERS", "2", "Celery run workers."),
    Documented(
        "BATCH_PREDICT_CLUSTER_WORKER_CONCURRENCY",
        "1",
        "Runs each worker executes at once; the queue launches at most WORKERS x WORKER_CONCURRENCY runs at a time.",
    ),
    Documented(
        "BATCH_PREDICT_CLUSTER_DAYS",
        "14",
        "Days of demo records (the newest complete days), each backfilled as one partition.",
    ),
    Documented("BATCH_PREDICT_CLUSTER_ROWS_PER_DAY", "2000", "Demo records per day."),
    Documented(
        "BATCH_PREDICT_CLUSTER_UI_PORT", "", "Port of the cluster's Dagster UI on 127.0.0.1; empty: a free port."
    ),
    Documented(
        "BATCH_PREDICT_CLUSTER_BACKFILL_TIMEOUT_SECONDS", "900", "How long `make demo-cluster` waits for its backfill."
    ),
)

# Read by Dagster itself from deploy/dagster.yaml and deploy/celery.yaml on every host of a real cluster; no defaults.
DAGSTER_INSTANCE_SETTINGS: tuple[Documented, ...] = (
    Documented(
        "DAGSTER_POSTGRES_HOSTNAME", "", "Host of the Dagster instance's PostgreSQL database (runs, events, schedules)."
    ),
    Documented("DAGSTER_POSTGRES_PORT", "5432", "Its port."),
    Documented("DAGSTER_POSTGRES_USER", "", "Its user."),
    Documented("DAGSTER_POSTGRES_PASSWORD", "", "Its password."),
    Documented("DAGSTER_POSTGRES_DB", "", "Its database name."),
    Documented(
        "DAGSTER_CELERY_BROKER_URL",
        "",
        "Celery's broker (Redis), the same for the daemon, the webserver and every worker, e.g. redis://HOST:6379/0.",
    ),
    Documented("DAGSTER_CELERY_BACKEND_URL", "", "Celery's result backend, e.g. redis://HOST:6379/1."),
    Documented(
        "DAGSTER_MAX_CONCURRENT_RUNS", "", "Runs in flight at once: the workers' slots (workers x --concurrency)."
    ),
)

# Variables the code reads that belong to other tools, so they are not settings of this application.
OTHER_VARIABLES: tuple[tuple[str, str], ...] = (
    (
        "DAGSTER_HOME",
        "Dagster's instance folder. The Makefile sets it to `dagster_home/`; `batch-predict` verbs that run jobs "
        "use `dagster_home/` when it is unset, so their runs show in the UI.",
    ),
    (
        "MLFLOW_TRACKING_URI",
        "MLflow's own variable: where its registry is, for BATCH_PREDICT_MODEL_URI (also part of the loaded-model "
        "cache key).",
    ),
    ("PGPASSWORD, PGPASSFILE and other PG*", "libpq's own variables, read by the PostgreSQL driver."),
    ("NO_UI", "A flag of `make demo` and `make demo-cluster`: stop before starting the UI."),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting of `SETTINGS` from `environ` (default: the process environment).

    Raises:
        SettingsError: naming the first variable with a bad value and what it accepts.
    """
    env = os.environ if environ is None else environ
    parsed: dict[str, Any] = {}
    by_field = {setting.field: setting for setting in SETTINGS}
    order = [by_field[field] for field in _PARSE_ORDER] + [s for s in SETTINGS if s.field not in _PARSE_ORDER]
    for setting in order:
        value = env.get(setting.name, "").strip() or setting.default
        parsed[setting.field] = setting.parse(value, setting.name, parsed)
    _check_columns_apart(parsed)
    return Settings(**parsed)


def _check_columns_apart(parsed: Mapping[str, Any]) -> None:
    """The id, time, feature and label columns are different columns (compared without case, as DuckDB does)."""
    roles = [
        ("BATCH_PREDICT_ID_COLUMN", parsed["id_column"]),
        ("BATCH_PREDICT_TIME_COLUMN", parsed["time_column"]),
        *(("BATCH_PREDICT_FEATURES", feature) for feature in parsed["features"]),
    ]
    seen: dict[str, str] = {}
    for setting, column in roles:
        other = seen.setdefault(column.casefold(), setting)
        if other != setting:
            raise SettingsError(
                f"{setting} and {other} both name the column {column!r}: the record id, the event time and each "
                "feature must be different columns. Set them to the columns of your source files."
            )
    if parsed["label_column"].casefold() == parsed["id_column"].casefold():
        raise SettingsError(
            f"BATCH_PREDICT_LABEL_COLUMN and BATCH_PREDICT_ID_COLUMN both name the column {parsed['label_column']!r}: "
            "a label file needs the record id and the label in two columns."
        )


ENV_EXAMPLE = Path(".env.example")
SETTINGS_DOC = Path("docs/settings.md")
REGENERATE = "`python -m batch_predict.settings --write` (or `make settings-docs`)"


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, width=100, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def env_example() -> str:
    """The text of `.env.example`: every variable, commented out at its default, with what it does."""
    lines = [
        f"# Generated from batch_predict/settings.py by {REGENERATE}; do not edit.",
        "# Copy to .env (dagster dev reads it, and it overrides the environment) or export these.",
        "# Every value shown is the default. Relative paths are taken from the directory you run in.",
    ]
    for setting in SETTINGS:
        lines += [
            "",
            *_comment(f"{setting.description} Accepts {setting.accepts}."),
            f"# {setting.name}={setting.default}",
        ]
    sections = (
        (
            "The local cluster of `make demo-cluster` (deploy/cluster.env holds these; the environment overrides them)",
            CLUSTER_SETTINGS,
        ),
        (
            "A real cluster: deploy/dagster.yaml and deploy/celery.yaml read these on every host (no defaults)",
            DAGSTER_INSTANCE_SETTINGS,
        ),
    )
    for title, variables in sections:
        lines += ["", f"# --- {title} ---"]
        for variable in variables:
            lines += ["", *_comment(variable.description), f"# {variable.name}={variable.default}"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(value: str) -> str:
    return f"`{value}`" if value else "(empty)"


def settings_doc() -> str:
    """The text of `docs/settings.md`: the tables of every variable, from the spec."""
    lines = [
        "# Settings",
        "",
        f"<!-- Generated from batch_predict/settings.py by {REGENERATE}; do not edit. -->",
        "",
        "Environment variables, read when the definitions load (each run loads them anew). Unset or blank means",
        "the default. A bad value fails at load with a message naming the variable and the values it accepts.",
        "`batch-predict` and every `dagster` command also read a `.env` file in the directory they start in (its",
        "values override the environment's): copy [`.env.example`](../.env.example). Relative paths are taken from",
        "the directory the process runs in (the repository root for `make demo` and `dagster dev`).",
        "",
        "| variable | default | accepts | meaning |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{s.name}` | {_code(s.default)} | {_cell(s.accepts)} | {_cell(s.description)} |" for s in SETTINGS]
    lines += [
        "",
        "## The local cluster",
        "",
        "Read by `make demo-cluster` (`batch_predict/cluster.py`) from `deploy/cluster.env`, each overridden by the",
        "environment; the defaults are that file's values.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{v.name}` | {_code(v.default)} | {_cell(v.description)} |" for v in CLUSTER_SETTINGS]
    lines += [
        "",
        "## A real cluster",
        "",
        "Read by Dagster from `deploy/dagster.yaml` and `deploy/celery.yaml` on every host (see",
        "[cluster.md](cluster.md)); they have no defaults.",
        "",
        "| variable | example | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{v.name}` | {_code(v.default)} | {_cell(v.description)} |" for v in DAGSTER_INSTANCE_SETTINGS]
    lines += [
        "",
        "## Other variables",
        "",
        "Read by the code but owned by other tools, so not settings of this application:",
        "",
    ]
    lines += [f"- `{name}`: {text}" for name, text in OTHER_VARIABLES]
    return "\n".join(lines) + "\n"


def generated_files(root: Path) -> dict[Path, str]:
    """Each generated file under `root` and the text the spec gives it."""
    return {root / ENV_EXAMPLE: env_example(), root / SETTINGS_DOC: settings_doc()}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m batch_predict.settings --write`: write `.env.example` and `docs/settings.md` under the current folder."""
    parser = argparse.ArgumentParser(prog="python -m batch_predict.settings", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="write the files (without it: list those that differ)")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated_files(Path.cwd()).items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'wrote' if args.write else 'differs from the spec:'} {path}")
    return 0 if args.write or not stale else 1


def _choice(value: str, name: str, allowed: tuple[str, ...]) -> str:
    if value.lower() not in allowed:
        raise SettingsError(_bad(name, value, "one of " + "|".join(allowed)))
    return value.lower()


def _bad(name: str, value: str, allowed: str) -> str:
    return f"{name}={value!r} is not valid: use {allowed} (or unset it for the default {DEFAULTS[name]!r})."


# libpq's connection keywords: a value that starts with one of them, or holds two key=value words, is its
# "host=… dbname=…" form (a folder named like `run=1/` is a path).
_LIBPQ_KEYWORDS = (
    "host|hostaddr|port|dbname|user|password|passfile|service|sslmode|sslpassword|connect_timeout|"
    "application_name|options|target_session_attrs|channel_binding|gssencmode|requiressl|krbsrvname"
)
# A value meant as a PostgreSQL URL whose "://" is mistyped (postgresql//…, postgresql:/…, postgresql:://…),
# a URL's user:password@ or user@host:port without its scheme, or libpq's "host=… dbname=…" form: taken as a
# file path, each would make a DuckDB file of that name. A file whose name looks like one is written ./name.
_URL_LIKE = re.compile(
    r"^\s*postgres(?:ql)?\s*(?://|:+\s*/|::)"
    r"|^[^/@\s:]+:[^@]*@"
    r"|^[^/@\s]+@[^/@\s]+:\d+(?:/|$)"
    rf"|^\s*(?:{_LIBPQ_KEYWORDS})\s*=|^\s*[a-z_]+\s*=\S*\s+[a-z_]+\s*=|(?:^|\s)(?:ssl)?password\s*=",
    re.IGNORECASE,
)


def _warehouse(value: str) -> str:
    """A PostgreSQL URL as given, or a DuckDB file path resolved; any other URL is an error."""
    if value.startswith(("postgresql://", "postgres://")):
        return _postgres_url(value)
    scheme = re.match(r"([a-z][a-z0-9+.-]*)://", value, re.IGNORECASE)
    if scheme and not scheme[1].lower().startswith("postgres"):
        raise SettingsError(
            _bad(
                "BATCH_PREDICT_WAREHOUSE",
                redact_url(value),
                "a DuckDB file path (data/warehouse.duckdb) or a PostgreSQL URL (postgresql://user@host:port/database); "
                f"the scheme {scheme[1]!r} is not supported",
            )
        )
    if _URL_LIKE.search(value) or "://" in value:
        raise SettingsError(
            _bad(
                "BATCH_PREDICT_WAREHOUSE",
                redact_url(value),
                "a PostgreSQL URL written postgresql://user@host:port/database, its scheme in lower case (this value "
                "looks like one with a mistyped or missing 'postgresql://', and as a file path it would make a "
                "DuckDB file of that name; to mean a file of that name, write it ./NAME or as an absolute path)",
            )
        )
    return str(_path(value, "BATCH_PREDICT_WAREHOUSE"))


_PERCENT_ENCODE = (
    "percent-encode a space, %, @, /, ? or # in the password (%20, %25, %40, %2F, %3F, %23) and an @ elsewhere, or "
    "leave the password out and put it in PGPASSWORD or ~/.pgpass"
)


def _postgres_url(value: str) -> str:
    """A PostgreSQL URL, checked as far as it can be without a server: one raw "@", before the host (a raw
    "/" in the password would end libpq's user part early, and its tail would be read as host, port or
    database), what libpq itself cannot read, ports that are not numbers (an IPv6 host without its brackets
    reads as one), and a URL that names no database."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    def refused(allowed: str) -> SettingsError:
        return SettingsError(_bad("BATCH_PREDICT_WAREHOUSE", redact_url(value), allowed))

    rest = value.partition("://")[2]
    if rest.count("@") > 1 or ("@" in rest and "/" in rest[: rest.index("@")]):
        raise refused(f"a PostgreSQL URL with one raw '@', the one before the host: {_PERCENT_ENCODE}")
    try:
        parts = {key: str(part) for key, part in conninfo_to_dict(value).items()}
    except (psycopg.Error, UnicodeError, ValueError) as error:
        # libpq quotes what it could not read, unescaped, and that may be the password: only its words before
        # the first quote are shown.
        words = (str(error).strip().splitlines() or [type(error).__name__])[0]
        reason = words.partition('"')[0].rstrip(" :")
        raise refused(f"a PostgreSQL URL libpq can read ({reason}): {_PERCENT_ENCODE}") from None
    for port in parts.get("port", "").split(","):
        if port and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
            raise refused(
                "a PostgreSQL URL postgresql://user@host:port/database with a port from 1 to 65535 for each host, an "
                f"IPv6 host in brackets (postgresql://user@[::1]:5432/database); {_PERCENT_ENCODE}"
            )
    # Without a database, libpq connects to the one named as the user (often `postgres`, the server's own).
    # What libpq itself reads (the process environment, a service file) can name it instead.
    named = parts.get("dbname") or parts.get("service")
    if not named and not os.environ.get("PGDATABASE") and not os.environ.get("PGSERVICE"):
        raise refused(
            "a PostgreSQL URL that names its database: postgresql://user@host:port/database (or set PGDATABASE, "
            "or name a service that does)"
        )
    return value


def default_staging(warehouse: str) -> Path:
    """Staging beside a DuckDB file; for a PostgreSQL warehouse, data/staging on this machine."""
    if "://" in warehouse:
        return _path("data/staging")
    return Path(warehouse).parent / "staging"


def _path(value: str, name: str = "") -> Path:
    # Relative paths are taken from the directory the process runs in (the repository
    # root for `make demo` and `dagster dev`), and fixed there for the whole process.
    try:
        return Path(value).expanduser().resolve()
    except RuntimeError as error:  # ~user of a user this machine does not have
        raise SettingsError(
            f"{name + '=' if name else ''}{value!r} is not a path this machine can resolve ({error}): write it in full."
        ) from None


# The settings that name one source column: the value is the name exactly as written.
_ONE_COLUMN_SETTINGS = ("BATCH_PREDICT_ID_COLUMN", "BATCH_PREDICT_TIME_COLUMN", "BATCH_PREDICT_LABEL_COLUMN")
# PostgreSQL keeps only the first 63 bytes of a name; a longer feature column would silently lose its tail.
MAX_COLUMN_NAME_BYTES = 63
# Names a feature cannot have: the other columns of the tables that store features (`inputs`,
# `training_set`) and of the rows the landing files are classified in. Compared without case,
# as DuckDB compares names.
RESERVED_FEATURE_NAMES = frozenset(
    {
        "partition_key", "record_id", "event_time", "source_file", "run_id", "loaded_at", "label", "split",
        "non_integer_record_id", "raw_event_time", "source_row", "unplaced", "in_window", "raw_values",
        "verdict", "stored", "copy_number", "kept_time", "kept_file", "outcome", "reason", "detail",
        # PostgreSQL's system columns, which no table column may be named
        "ctid", "xmin", "xmax", "cmin", "cmax", "tableoid",
    }
)  # fmt: skip
# Columns the landing reader adds to each source row: no source column (feature, id, time) may have them.
RESERVED_SOURCE_NAMES = frozenset({"__batch_predict_source_file", "file_row_number"})
_QUOTING = (
    "comma-separated names; write a name holding a comma, or starting with a double quote, in double quotes, "
    'with "" for a double quote inside ("a,b" or """x""")'
)


def _names(value: str, name: str) -> tuple[str, ...]:
    """Column names of a setting: any name a Parquet or CSV file can hold.

    A one-column setting (id, time, label) is the name as written. A list (features) is
    comma-separated; a name with a comma (or one that starts with `"`) is written in double
    quotes, `""` standing for a `"` inside. Names must differ in more than case (DuckDB
    ignores case); features, which become columns, must also fit PostgreSQL's 63 bytes and
    not take a column the tables use themselves.
    """
    if name in _ONE_COLUMN_SETTINGS:
        names: tuple[str, ...] = (value,)
    else:
        try:
            names = split_names(value)
        except ValueError as error:
            raise SettingsError(_bad(name, value, f"{_QUOTING} ({error})")) from None
    if not names:
        raise SettingsError(_bad(name, value, _QUOTING))
    problem = column_name_problem(names, features=name == "BATCH_PREDICT_FEATURES")
    if problem:
        raise SettingsError(f"{name}={value!r} is not valid: {problem}")
    return names


def split_names(value: str) -> tuple[str, ...]:
    """`a, "b,c", d` as (`a`, `b,c`, `d`): comma-separated names, a quoted one taken exactly as quoted.

    Raises:
        ValueError: a quote that is not closed, or text after a closing quote.
    """
    names: list[str] = []
    rest = value
    while rest.strip():
        rest = rest.lstrip()
        if rest.startswith('"'):
            match = re.match(r'"((?:[^"]|"")*)"\s*(?:,|$)', rest)
            if not match:
                raise ValueError(f"the quoted name at {rest[:40]!r} is not closed by a quote before a comma")
            names.append(match.group(1).replace('""', '"'))
            rest = rest[match.end() :]
        else:
            part, _, rest = rest.partition(",")
            if part.strip():
                names.append(part.strip())
    return tuple(names)


def quote_name(name: str) -> str:
    """A name as a list setting writes it: as it is, or in double quotes if it needs them."""
    needs_quotes = "," in name or name.startswith('"') or name != name.strip() or not name
    return '"' + name.replace('"', '""') + '"' if needs_quotes else name


def column_name_problem(names: tuple[str, ...], features: bool) -> str:
    """Why these column names cannot be used together, or "" when they can."""
    for column in names:
        if not column or "\x00" in column:
            return "A column name cannot be empty or hold a NUL character."
        if features and len(column.encode("utf-8")) > MAX_COLUMN_NAME_BYTES:
            return (
                f"The feature {column!r} is {len(column.encode('utf-8'))} bytes long; a feature name can have at "
                f"most {MAX_COLUMN_NAME_BYTES}, as the warehouse stores it as a column (PostgreSQL's limit, kept on "
                "DuckDB too so the same settings fit either warehouse). Rename the column in the source files."
            )
        if column.lower() in RESERVED_SOURCE_NAMES:
            return f"The name {column!r} is the column the landing reader adds to each row; rename the source column."
        if features and column.lower() in RESERVED_FEATURE_NAMES:
            return (
                f"The feature {column!r} would clash with the warehouse's own column {column.lower()!r} "
                "(of inputs, training_set or the landing checks); rename the source column."
            )
    seen: dict[str, str] = {}
    for column in names:
        if column.lower() in seen:
            other = seen[column.lower()]
            if other == column:
                return f"The name {column!r} is given twice: use names without repeats."
            return (
                f"The names {other!r} and {column!r} differ only in case, and DuckDB does not tell such names "
                "apart; rename one of the source columns."
            )
        seen[column.lower()] = column
    for column in names:
        if features and column.lower().startswith("raw__") and column.lower()[5:] in seen:
            return (
                f"The features {seen[column.lower()[5:]]!r} and {column!r} clash: the landing checks keep a "
                f"feature's raw value as raw__<feature>; rename one of the source columns."
            )
    return ""


def _alias(value: str) -> str:
    # The alias names a file in the registry: the registry's own rule, so no value reaches outside it.
    if not valid_name(value):
        raise SettingsError(_bad("BATCH_PREDICT_MODEL_ALIAS", value, f"one alias name of {NAME_RULE}"))
    return value


def _int(value: str, name: str, minimum: int, maximum: int | None = None) -> int:
    accepted = (
        f"a whole number of at least {minimum}" if maximum is None else f"a whole number from {minimum} to {maximum}"
    )
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(_bad(name, value, accepted)) from None
    if number < minimum or (maximum is not None and number > maximum):
        raise SettingsError(_bad(name, value, accepted))
    return number


def _float(value: str, name: str, minimum: float, maximum: float | None = None) -> float:
    accepted = f"a number of at least {minimum:g}" if maximum is None else f"a number from {minimum:g} to {maximum:g}"
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(_bad(name, value, accepted)) from None
    if not number >= minimum or number == float("inf") or (maximum is not None and number > maximum):  # NaN too
        raise SettingsError(_bad(name, value, accepted))
    return number


def _memory(value: str) -> str:
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, flags=re.IGNORECASE)
    if not match or float(match.group(1)) == 0:
        raise SettingsError(_bad("BATCH_PREDICT_DUCKDB_MEMORY_LIMIT", value, "a size such as 512MB or 2GB"))
    return value


def _start(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise SettingsError(
            _bad("BATCH_PREDICT_START", value, "an ISO date or date-time such as 2026-01-01 or 2026-01-01T06:00")
        ) from None


def _ranges(value: str, features: tuple[str, ...]) -> tuple[FeatureRange, ...]:
    """Parse `name=low:high,...` (inclusive bounds, either side may be left empty) into feature ranges."""
    accepted = (
        "comma-separated FEATURE=LOW:HIGH ranges of BATCH_PREDICT_FEATURES ("
        + ",".join(quote_name(f) for f in features)
        + "), bounds included, one side may be left empty: e.g. sepal_length=0:50,petal_width=:10; a feature "
        'name holding a comma (or starting with a double quote) is written in double quotes, "" for a quote '
        'inside: "a,b"=0:1'
    )

    def bad(problem: str) -> SettingsError:
        return SettingsError(
            f"BATCH_PREDICT_FEATURE_RANGES={value!r} is not valid: {problem}. Use {accepted} (or unset it for no ranges)."
        )

    ranges: dict[str, FeatureRange] = {}
    try:
        entries = split_range_entries(value)
    except ValueError as error:
        raise bad(str(error)) from None
    for entry, name, equals, bounds in entries:
        low_text, colon, high_text = (text.strip() for text in bounds.partition(":"))
        if not equals or not colon:
            raise bad(f"{entry!r} is not FEATURE=LOW:HIGH")
        if name not in features:
            raise bad(f"{name!r} is not one of BATCH_PREDICT_FEATURES")
        if name in ranges:
            raise bad(f"{name} is given more than once")
        low, high = (_bound(text, entry, bad) for text in (low_text, high_text))
        if low is None and high is None:
            raise bad(f"{entry!r} has neither a low nor a high bound")
        if low is not None and high is not None and low > high:
            raise bad(f"{entry!r} has its low bound above its high bound")
        ranges[name] = FeatureRange(name, low, high)
    return tuple(ranges[name] for name in features if name in ranges)


def split_range_entries(value: str) -> list[tuple[str, str, str, str]]:
    """The `FEATURE=LOW:HIGH` entries of a ranges setting as (entry, feature, "=" or "", bounds).

    The feature is everything before the entry's last `=` (bounds hold none), so an unquoted name
    may hold `=` and `:`; a name in double quotes may hold commas too, `""` standing for a `"`.

    Raises:
        ValueError: a quoted name that is not closed or not followed by `=`.
    """
    entries = []
    rest = value
    while rest.strip():
        rest = rest.lstrip()
        if rest.startswith('"'):
            match = re.match(r'"((?:[^"]|"")*)"\s*(=?)([^,]*)(?:,|$)', rest)
            if not match or (match.group(3).strip() and not match.group(2)):
                raise ValueError(f"the quoted name at {rest[:40]!r} is not closed by a quote before its '='")
            entry = rest[: match.end()].rstrip(",").strip()
            entries.append((entry, match.group(1).replace('""', '"'), match.group(2), match.group(3).strip()))
            rest = rest[match.end() :]
            continue
        entry, _, rest = rest.partition(",")
        entry = entry.strip()
        if entry:
            name, equals, bounds = entry.rpartition("=")
            if not equals:
                name, bounds = bounds, ""
            entries.append((entry, name.strip(), equals, bounds.strip()))
    return entries


def _bound(text: str, entry: str, bad: Callable[[str], SettingsError]) -> float | None:
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise bad(f"{text!r} in {entry!r} is not a number") from None
    if not math.isfinite(number):
        raise bad(f"{text!r} in {entry!r} is not a finite number")
    return number


if __name__ == "__main__":
    sys.exit(main())
