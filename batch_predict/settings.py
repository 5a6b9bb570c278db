"""Every setting of the application, read from environment variables with documented defaults.

Settings are parsed and validated in one place so that a bad value fails when the
definitions load, with a message naming the variable and the values it accepts.
"""

from __future__ import annotations

import math
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from batch_predict.redaction import redact
from batch_predict.registry import NAME_RULE, valid_name

CADENCES = ("hourly", "daily", "weekly", "monthly")
ON_FAILURE_MODES = ("retry_all", "retry_failed", "carry_over")
BACKFILL_MODELS = ("current", "point_in_time")
PROMOTION_METRICS = ("accuracy", "log_loss")
SCHEDULE_STATES = ("stopped", "running")
IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")

# The schedule fires this many minutes after a partition ends (to let late data land);
# the delay is expressed as the tick's minute and hour, so it must stay under an hour
# for hourly partitions and under a day otherwise.
_MAX_DELAY_MINUTES = {"hourly": 59, "daily": 24 * 60 - 1, "weekly": 24 * 60 - 1, "monthly": 24 * 60 - 1}

DEFAULTS: Mapping[str, str] = {
    "BATCH_PREDICT_WAREHOUSE": "data/warehouse.duckdb",
    "BATCH_PREDICT_LANDING": "data/landing",
    "BATCH_PREDICT_SOURCE_GLOB": "**/*.parquet",
    "BATCH_PREDICT_MODELS": "data/models",
    "BATCH_PREDICT_MODEL_ALIAS": "champion",
    "BATCH_PREDICT_CADENCE": "daily",
    "BATCH_PREDICT_START": "2026-01-01",
    "BATCH_PREDICT_TIMEZONE": "UTC",
    "BATCH_PREDICT_MODEL_MAX_AGE_DAYS": "30",
    "BATCH_PREDICT_DEADLINE_HOURS": "6",
    "BATCH_PREDICT_SCHEDULE_DELAY_MINUTES": "15",
    "BATCH_PREDICT_CHUNK_SIZE": "65536",
    "BATCH_PREDICT_ID_COLUMN": "record_id",
    "BATCH_PREDICT_TIME_COLUMN": "event_time",
    "BATCH_PREDICT_FEATURES": ",".join(IRIS_FEATURES),
    "BATCH_PREDICT_NONNEGATIVE_FEATURES": ",".join(IRIS_FEATURES),
    "BATCH_PREDICT_ON_FAILURE": "retry_all",
    "BATCH_PREDICT_MAX_ATTEMPTS": "3",
    "BATCH_PREDICT_MAX_REJECTED_SHARE": "0.5",
    "BATCH_PREDICT_MAX_SHRINK_SHARE": "0.5",
    "BATCH_PREDICT_STEP_RETRIES": "3",
    "BATCH_PREDICT_MAX_PARTITIONS_PER_RUN": "1",
    "BATCH_PREDICT_LOCK_TIMEOUT_SECONDS": "300",
    "BATCH_PREDICT_DUCKDB_MEMORY_LIMIT": "512MB",
    "BATCH_PREDICT_DUCKDB_THREADS": "2",
    "BATCH_PREDICT_MODEL_URI": "",
    "BATCH_PREDICT_BACKFILL_MODEL": "current",
    "BATCH_PREDICT_MODEL_HARD_MAX_AGE_DAYS": "90",
    "BATCH_PREDICT_LABELS": "data/labels",
    "BATCH_PREDICT_LABEL_COLUMN": "label",
    "BATCH_PREDICT_TRAIN_DAYS": "14",
    "BATCH_PREDICT_HOLDOUT_DAYS": "3",
    "BATCH_PREDICT_PROMOTION_METRIC": "accuracy",
    "BATCH_PREDICT_PROMOTION_MARGIN": "0.01",
    "BATCH_PREDICT_RETRAIN_SCHEDULE": "stopped",
    "BATCH_PREDICT_DRIFT_ALPHA": "0.01",
    "BATCH_PREDICT_DRIFT_PSI_FLOOR": "0.1",
    "BATCH_PREDICT_FEATURE_RANGES": "",
    "BATCH_PREDICT_MAX_FAILED_SHARE": "0.1",
    "BATCH_PREDICT_STAGING_MAX_AGE_HOURS": "48",
    "BATCH_PREDICT_STAGING": "",
}
# The source glob's extension chooses DuckDB's reader (warehouse.READERS).
SOURCE_EXTENSIONS = (".parquet", ".csv", ".json", ".jsonl")


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
    on_failure: str
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


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting from `environ` (default: the process environment).

    Raises:
        SettingsError: naming the first variable with a bad value and what it accepts.
    """
    env = os.environ if environ is None else environ

    def raw(name: str) -> str:
        value = env.get(name, "").strip()
        return value if value else DEFAULTS[name]

    cadence = raw("BATCH_PREDICT_CADENCE").lower()
    if cadence not in CADENCES:
        raise SettingsError(_bad("BATCH_PREDICT_CADENCE", cadence, "one of " + "|".join(CADENCES)))

    on_failure = raw("BATCH_PREDICT_ON_FAILURE").lower()
    if on_failure not in ON_FAILURE_MODES:
        raise SettingsError(_bad("BATCH_PREDICT_ON_FAILURE", on_failure, "one of " + "|".join(ON_FAILURE_MODES)))
    max_rejected_share = _float(raw("BATCH_PREDICT_MAX_REJECTED_SHARE"), "BATCH_PREDICT_MAX_REJECTED_SHARE", 0)
    if max_rejected_share > 1:
        raise SettingsError(
            _bad("BATCH_PREDICT_MAX_REJECTED_SHARE", raw("BATCH_PREDICT_MAX_REJECTED_SHARE"), "a share from 0 to 1")
        )
    max_shrink_share = _float(raw("BATCH_PREDICT_MAX_SHRINK_SHARE"), "BATCH_PREDICT_MAX_SHRINK_SHARE", 0)
    if max_shrink_share > 1:
        raise SettingsError(
            _bad("BATCH_PREDICT_MAX_SHRINK_SHARE", raw("BATCH_PREDICT_MAX_SHRINK_SHARE"), "a share from 0 to 1")
        )

    features = _names(raw("BATCH_PREDICT_FEATURES"), "BATCH_PREDICT_FEATURES")
    listed = raw("BATCH_PREDICT_NONNEGATIVE_FEATURES")
    nonnegative = () if listed.lower() == "none" else _names(listed, "BATCH_PREDICT_NONNEGATIVE_FEATURES")
    unknown = sorted(set(nonnegative) - set(features))
    if unknown:
        raise SettingsError(
            _bad(
                "BATCH_PREDICT_NONNEGATIVE_FEATURES",
                ",".join(unknown),
                "a comma-separated subset of BATCH_PREDICT_FEATURES (" + ",".join(features) + ")",
            )
        )

    timezone = raw("BATCH_PREDICT_TIMEZONE")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            _bad("BATCH_PREDICT_TIMEZONE", timezone, "an IANA time zone name such as UTC or Europe/Berlin")
        ) from None

    delay = _int(raw("BATCH_PREDICT_SCHEDULE_DELAY_MINUTES"), "BATCH_PREDICT_SCHEDULE_DELAY_MINUTES", 0)
    if delay > _MAX_DELAY_MINUTES[cadence]:
        raise SettingsError(
            _bad(
                "BATCH_PREDICT_SCHEDULE_DELAY_MINUTES",
                str(delay),
                f"a whole number of minutes from 0 to {_MAX_DELAY_MINUTES[cadence]} for {cadence} partitions",
            )
        )

    choices = {
        name: _choice(raw(name), name, allowed)
        for name, allowed in (
            ("BATCH_PREDICT_BACKFILL_MODEL", BACKFILL_MODELS),
            ("BATCH_PREDICT_PROMOTION_METRIC", PROMOTION_METRICS),
            ("BATCH_PREDICT_RETRAIN_SCHEDULE", SCHEDULE_STATES),
        )
    }
    model_uri = env.get("BATCH_PREDICT_MODEL_URI", "").strip()
    # No query string either: a models:/ URI takes none, and one with a token would show as resource config.
    if model_uri and (not model_uri.startswith("models:/") or "?" in model_uri or "#" in model_uri):
        raise SettingsError(
            _bad(
                "BATCH_PREDICT_MODEL_URI",
                redact(model_uri),
                "an MLflow model URI models:/NAME@ALIAS or models:/NAME/VERSION",
            )
        )
    if model_uri and choices["BATCH_PREDICT_BACKFILL_MODEL"] == "point_in_time":
        raise SettingsError(
            "BATCH_PREDICT_BACKFILL_MODEL='point_in_time' needs the local registry's alias history; with "
            "BATCH_PREDICT_MODEL_URI (MLflow) set, use 'current'."
        )
    if on_failure == "carry_over" and choices["BATCH_PREDICT_BACKFILL_MODEL"] == "point_in_time":
        raise SettingsError(
            "BATCH_PREDICT_ON_FAILURE='carry_over' predicts an earlier partition's failed records with a later "
            "partition's model, which BATCH_PREDICT_BACKFILL_MODEL='point_in_time' rules out. Use retry_all or "
            "retry_failed with point_in_time, or current with carry_over."
        )
    max_age = _float(raw("BATCH_PREDICT_MODEL_MAX_AGE_DAYS"), "BATCH_PREDICT_MODEL_MAX_AGE_DAYS", 0)
    hard_max_age = _float(raw("BATCH_PREDICT_MODEL_HARD_MAX_AGE_DAYS"), "BATCH_PREDICT_MODEL_HARD_MAX_AGE_DAYS", 0)
    if hard_max_age < max_age:
        raise SettingsError(
            _bad(
                "BATCH_PREDICT_MODEL_HARD_MAX_AGE_DAYS",
                raw("BATCH_PREDICT_MODEL_HARD_MAX_AGE_DAYS"),
                f"a number of days at least BATCH_PREDICT_MODEL_MAX_AGE_DAYS ({max_age:g})",
            )
        )
    drift_alpha = _float(raw("BATCH_PREDICT_DRIFT_ALPHA"), "BATCH_PREDICT_DRIFT_ALPHA", 0)
    if not 0 < drift_alpha < 1:
        raise SettingsError(
            _bad("BATCH_PREDICT_DRIFT_ALPHA", raw("BATCH_PREDICT_DRIFT_ALPHA"), "a share between 0 and 1")
        )

    max_failed_share = _float(raw("BATCH_PREDICT_MAX_FAILED_SHARE"), "BATCH_PREDICT_MAX_FAILED_SHARE", 0)
    if max_failed_share > 1:
        raise SettingsError(
            _bad("BATCH_PREDICT_MAX_FAILED_SHARE", raw("BATCH_PREDICT_MAX_FAILED_SHARE"), "a share from 0 to 1")
        )
    start = _start(raw("BATCH_PREDICT_START"))
    start_at = start if start.tzinfo else start.replace(tzinfo=zoneinfo.ZoneInfo(timezone))
    if start_at > datetime.now(UTC):
        raise SettingsError(
            f"BATCH_PREDICT_START={raw('BATCH_PREDICT_START')!r} is in the future ({timezone}): no partition exists "
            "until then, so nothing would be snapshotted, predicted or scheduled. Set it to the first day of your "
            f"source records (or unset it for the default {DEFAULTS['BATCH_PREDICT_START']!r})."
        )
    source_glob = raw("BATCH_PREDICT_SOURCE_GLOB")
    if Path(source_glob).suffix.lower() not in SOURCE_EXTENSIONS:
        raise SettingsError(
            _bad("BATCH_PREDICT_SOURCE_GLOB", source_glob, "a glob ending in " + ", ".join(SOURCE_EXTENSIONS))
            + " The extension chooses the reader."
        )
    staging_max_age = _float(raw("BATCH_PREDICT_STAGING_MAX_AGE_HOURS"), "BATCH_PREDICT_STAGING_MAX_AGE_HOURS", 0)
    if staging_max_age == 0:
        raise SettingsError(
            _bad(
                "BATCH_PREDICT_STAGING_MAX_AGE_HOURS", "0", "a number of hours above 0 (0 would remove resumable work)"
            )
        )

    warehouse = _warehouse(raw("BATCH_PREDICT_WAREHOUSE"))
    return Settings(
        warehouse=warehouse,
        landing=_path(raw("BATCH_PREDICT_LANDING")),
        source_glob=source_glob,
        models=_path(raw("BATCH_PREDICT_MODELS")),
        model_alias=_alias(raw("BATCH_PREDICT_MODEL_ALIAS")),
        cadence=cadence,
        start=start,
        timezone=timezone,
        model_max_age_days=max_age,
        deadline_hours=_float(raw("BATCH_PREDICT_DEADLINE_HOURS"), "BATCH_PREDICT_DEADLINE_HOURS", 0),
        schedule_delay_minutes=delay,
        chunk_size=_int(raw("BATCH_PREDICT_CHUNK_SIZE"), "BATCH_PREDICT_CHUNK_SIZE", 1),
        id_column=_names(raw("BATCH_PREDICT_ID_COLUMN"), "BATCH_PREDICT_ID_COLUMN")[0],
        time_column=_names(raw("BATCH_PREDICT_TIME_COLUMN"), "BATCH_PREDICT_TIME_COLUMN")[0],
        features=features,
        nonnegative_features=nonnegative,
        on_failure=on_failure,
        max_attempts=_int(raw("BATCH_PREDICT_MAX_ATTEMPTS"), "BATCH_PREDICT_MAX_ATTEMPTS", 1),
        max_rejected_share=max_rejected_share,
        step_retries=_int(raw("BATCH_PREDICT_STEP_RETRIES"), "BATCH_PREDICT_STEP_RETRIES", 0),
        max_partitions_per_run=_int(
            raw("BATCH_PREDICT_MAX_PARTITIONS_PER_RUN"), "BATCH_PREDICT_MAX_PARTITIONS_PER_RUN", 1
        ),
        lock_timeout_seconds=_float(raw("BATCH_PREDICT_LOCK_TIMEOUT_SECONDS"), "BATCH_PREDICT_LOCK_TIMEOUT_SECONDS", 0),
        duckdb_memory_limit=_memory(raw("BATCH_PREDICT_DUCKDB_MEMORY_LIMIT")),
        duckdb_threads=_int(raw("BATCH_PREDICT_DUCKDB_THREADS"), "BATCH_PREDICT_DUCKDB_THREADS", 1),
        model_uri=model_uri,
        backfill_model=choices["BATCH_PREDICT_BACKFILL_MODEL"],
        model_hard_max_age_days=hard_max_age,
        labels=_path(raw("BATCH_PREDICT_LABELS")),
        label_column=_names(raw("BATCH_PREDICT_LABEL_COLUMN"), "BATCH_PREDICT_LABEL_COLUMN")[0],
        train_days=_int(raw("BATCH_PREDICT_TRAIN_DAYS"), "BATCH_PREDICT_TRAIN_DAYS", 1),
        holdout_days=_int(raw("BATCH_PREDICT_HOLDOUT_DAYS"), "BATCH_PREDICT_HOLDOUT_DAYS", 1),
        promotion_metric=choices["BATCH_PREDICT_PROMOTION_METRIC"],
        promotion_margin=_float(raw("BATCH_PREDICT_PROMOTION_MARGIN"), "BATCH_PREDICT_PROMOTION_MARGIN", 0),
        retrain_schedule=choices["BATCH_PREDICT_RETRAIN_SCHEDULE"],
        drift_alpha=drift_alpha,
        drift_psi_floor=_float(raw("BATCH_PREDICT_DRIFT_PSI_FLOOR"), "BATCH_PREDICT_DRIFT_PSI_FLOOR", 0),
        feature_ranges=_ranges(raw("BATCH_PREDICT_FEATURE_RANGES"), features),
        max_failed_share=max_failed_share,
        max_shrink_share=max_shrink_share,
        staging_max_age_hours=staging_max_age,
        staging=_path(raw("BATCH_PREDICT_STAGING")) if raw("BATCH_PREDICT_STAGING") else default_staging(warehouse),
    )


def _choice(value: str, name: str, allowed: tuple[str, ...]) -> str:
    if value.lower() not in allowed:
        raise SettingsError(_bad(name, value, "one of " + "|".join(allowed)))
    return value.lower()


def _bad(name: str, value: str, allowed: str) -> str:
    return f"{name}={value!r} is not valid: use {allowed} (or unset it for the default {DEFAULTS[name]!r})."


def _warehouse(value: str) -> str:
    """A PostgreSQL URL as given, or a DuckDB file path resolved; any other URL is an error."""
    scheme, separator, _ = value.partition("://")
    if not separator:
        return str(_path(value))
    if value.startswith(("postgresql://", "postgres://")):
        return value
    raise SettingsError(
        _bad(
            "BATCH_PREDICT_WAREHOUSE",
            redact(value),
            "a DuckDB file path (data/warehouse.duckdb) or a PostgreSQL URL (postgresql://user@host:port/database); "
            f"the scheme {scheme!r} is not supported",
        )
    )


def default_staging(warehouse: str) -> Path:
    """Staging beside a DuckDB file; for a PostgreSQL warehouse, data/staging on this machine."""
    if "://" in warehouse:
        return _path("data/staging")
    return Path(warehouse).parent / "staging"


def _path(value: str) -> Path:
    # Relative paths are taken from the directory the process runs in (the repository
    # root for `make demo` and `dagster dev`), and fixed there for the whole process.
    return Path(value).expanduser().resolve()


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


def _int(value: str, name: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(_bad(name, value, f"a whole number of at least {minimum}")) from None
    if number < minimum:
        raise SettingsError(_bad(name, value, f"a whole number of at least {minimum}"))
    return number


def _float(value: str, name: str, minimum: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(_bad(name, value, f"a number of at least {minimum:g}")) from None
    if not number >= minimum or number == float("inf"):  # also rejects NaN
        raise SettingsError(_bad(name, value, f"a number of at least {minimum:g}"))
    return number


def _memory(value: str) -> str:
    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, flags=re.IGNORECASE):
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
