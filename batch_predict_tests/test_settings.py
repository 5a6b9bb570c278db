from datetime import datetime
from pathlib import Path

import pytest

from batch_predict.settings import DEFAULTS, IRIS_FEATURES, SettingsError, load_settings


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert settings.cadence == "daily"
    assert settings.timezone == "UTC"
    assert Path(settings.warehouse).name == "warehouse.duckdb"
    assert settings.staging == Path(settings.warehouse).parent / "staging"
    assert settings.landing.parts[-2:] == ("data", "landing")
    assert settings.models.parts[-2:] == ("data", "models")
    assert settings.model_max_age_days == 30
    assert settings.deadline_hours == 6
    assert settings.start == datetime(2026, 1, 1)
    assert settings.features == IRIS_FEATURES


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("BATCH_PREDICT_CADENCE", "yearly", "hourly|daily|weekly|monthly"),
        ("BATCH_PREDICT_TIMEZONE", "Mars/Olympus", "IANA time zone"),
        ("BATCH_PREDICT_START", "yesterday", "ISO date"),
        ("BATCH_PREDICT_MODEL_MAX_AGE_DAYS", "-1", "a number from 0 to 36500"),
        ("BATCH_PREDICT_MODEL_MAX_AGE_DAYS", "1e9", "a number from 0 to 36500"),
        ("BATCH_PREDICT_DEADLINE_HOURS", "soon", "a number from 0 to 876000"),
        ("BATCH_PREDICT_STAGING_MAX_AGE_HOURS", "1e308", "a number from 0 to 876000"),
        ("BATCH_PREDICT_LOCK_TIMEOUT_SECONDS", "1e12", "a number from 0 to 86400"),
        ("BATCH_PREDICT_DUCKDB_THREADS", "100000", "a whole number from 1 to 256"),
        ("BATCH_PREDICT_DUCKDB_MEMORY_LIMIT", "0MB", "a size such as 512MB"),
        ("BATCH_PREDICT_DUCKDB_MEMORY_LIMIT", "\u0665\u0661\u0662MB", "a size such as 512MB"),
        ("BATCH_PREDICT_CHUNK_SIZE", "0", "a whole number of at least 1"),
        ("BATCH_PREDICT_FEATURES", "a,a", "without repeats"),
        ("BATCH_PREDICT_NONNEGATIVE_FEATURES", "height", "subset of BATCH_PREDICT_FEATURES"),
        ("BATCH_PREDICT_SCHEDULE_DELAY_MINUTES", "90", "from 0 to 59 for hourly"),
        ("BATCH_PREDICT_DUCKDB_MEMORY_LIMIT", "lots", "a size such as 512MB"),
        ("BATCH_PREDICT_ON_FAILURE", "sometimes", "retry_all|retry_failed|carry_over"),
        ("BATCH_PREDICT_MAX_REJECTED_SHARE", "2", "a share from 0 to 1"),
        ("BATCH_PREDICT_MAX_FAILED_SHARE", "1.5", "a share from 0 to 1"),
        ("BATCH_PREDICT_MAX_FAILED_SHARE", "-0.1", "a number of at least 0"),
    ],
)
def test_bad_value_names_variable_and_allowed_values(name: str, value: str, allowed: str) -> None:
    env = {name: value}
    if name == "BATCH_PREDICT_SCHEDULE_DELAY_MINUTES":
        env["BATCH_PREDICT_CADENCE"] = "hourly"
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    message = str(raised.value)
    assert name in message
    assert repr(value) in message
    assert allowed in message


def test_every_setting_is_documented() -> None:
    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "settings.md").read_text()
    example = (root / ".env.example").read_text()
    for name in DEFAULTS:
        assert name in doc, f"{name} missing from docs/settings.md"
        assert name in example, f"{name} missing from .env.example"


def test_nonnegative_rule_can_be_switched_off() -> None:
    assert load_settings({"BATCH_PREDICT_NONNEGATIVE_FEATURES": "none"}).nonnegative_features == ()


def test_feature_ranges_are_parsed_with_open_sides() -> None:
    from batch_predict.settings import FeatureRange

    assert load_settings({}).feature_ranges == ()
    ranges = load_settings({"BATCH_PREDICT_FEATURE_RANGES": "petal_width=:10, sepal_length=0:5e1,sepal_width=-1.5:"})
    # In the order of BATCH_PREDICT_FEATURES, whatever order they were given in.
    assert ranges.feature_ranges == (
        FeatureRange("sepal_length", 0.0, 50.0),
        FeatureRange("sepal_width", -1.5, None),
        FeatureRange("petal_width", None, 10.0),
    )
    assert [str(r) for r in ranges.feature_ranges] == ["0:50", "-1.5:", ":10"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("height=0:1", "'height' is not one of BATCH_PREDICT_FEATURES"),
        ("sepal_length=0:lots", "'lots' in 'sepal_length=0:lots' is not a number"),
        ("sepal_length=0:inf", "is not a finite number"),
        ("sepal_length=5:1", "has its low bound above its high bound"),
        ("sepal_length=0:1,sepal_length=0:2", "sepal_length is given more than once"),
        ("sepal_length=0-50", "is not FEATURE=LOW:HIGH"),
        ("sepal_length=:", "has neither a low nor a high bound"),
    ],
)
def test_bad_feature_ranges_name_the_variable_and_the_form(value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"BATCH_PREDICT_FEATURE_RANGES": value})
    message = str(raised.value)
    assert message.startswith(f"BATCH_PREDICT_FEATURE_RANGES={value!r} is not valid")
    assert problem in message
    assert "FEATURE=LOW:HIGH" in message and "sepal_length,sepal_width,petal_length,petal_width" in message


def test_a_start_in_the_future_fails_at_load() -> None:
    with pytest.raises(
        SettingsError, match=r"BATCH_PREDICT_START='2999-01-01' is in the future .*no partition exists until then"
    ):
        load_settings({"BATCH_PREDICT_START": "2999-01-01"})
    assert load_settings({"BATCH_PREDICT_START": "2020-01-01"}).start == datetime(2020, 1, 1)


@pytest.mark.parametrize("glob", ["**/*.txt", "**/*", "landing/*.parquet.gz"])
def test_a_source_glob_with_an_unknown_extension_fails_at_load(glob: str) -> None:
    with pytest.raises(
        SettingsError, match=r"BATCH_PREDICT_SOURCE_GLOB=.* a glob ending in \.parquet, \.csv, \.json, \.jsonl"
    ):
        load_settings({"BATCH_PREDICT_SOURCE_GLOB": glob})


@pytest.mark.parametrize("glob", ["**/*.parquet", "*.CSV", "in/*.json", "in/*.jsonl"])
def test_known_source_extensions_load(glob: str) -> None:
    assert load_settings({"BATCH_PREDICT_SOURCE_GLOB": glob}).source_glob == glob


def test_staging_max_age_defaults_to_48_hours_and_must_be_positive() -> None:
    assert load_settings({}).staging_max_age_hours == 48
    assert load_settings({"BATCH_PREDICT_STAGING_MAX_AGE_HOURS": "1.5"}).staging_max_age_hours == 1.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SettingsError, match="BATCH_PREDICT_STAGING_MAX_AGE_HOURS"):
            load_settings({"BATCH_PREDICT_STAGING_MAX_AGE_HOURS": bad})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BATCH_PREDICT_ID_COLUMN": "sepal_length"}, "BATCH_PREDICT_FEATURES and BATCH_PREDICT_ID_COLUMN both name"),
        ({"BATCH_PREDICT_TIME_COLUMN": "Record_ID"}, "BATCH_PREDICT_TIME_COLUMN and BATCH_PREDICT_ID_COLUMN both name"),
        (
            {"BATCH_PREDICT_LABEL_COLUMN": "record_id"},
            "BATCH_PREDICT_LABEL_COLUMN and BATCH_PREDICT_ID_COLUMN both name",
        ),
        ({"BATCH_PREDICT_FEATURES": "ctid,b", "BATCH_PREDICT_NONNEGATIVE_FEATURES": "none"}, "'ctid'"),
        ({"BATCH_PREDICT_FEATURES": "a,TableOid", "BATCH_PREDICT_NONNEGATIVE_FEATURES": "none"}, "'TableOid'"),
    ],
)
def test_columns_that_would_clash_fail_at_load(env: dict[str, str], message: str) -> None:
    """One column in two roles, or a feature named like a PostgreSQL system column, is refused before any run."""
    with pytest.raises(SettingsError, match=message):
        load_settings(env)


@pytest.mark.parametrize(("cadence", "per_run"), [("hourly", 744), ("daily", 92), ("weekly", 13), ("monthly", 12)])
def test_auto_ranges_are_a_month_of_hours_a_quarter_of_days_weeks_and_a_year_of_months(
    cadence: str, per_run: int
) -> None:
    """The sizes docs/performance.md measured and documents: a backfill's runs, whatever the cadence."""
    for value in (None, "auto", "AUTO"):
        env = {"BATCH_PREDICT_CADENCE": cadence}
        if value is not None:
            env["BATCH_PREDICT_MAX_PARTITIONS_PER_RUN"] = value
        assert load_settings(env).max_partitions_per_run == per_run
    assert load_settings(env | {"BATCH_PREDICT_MAX_PARTITIONS_PER_RUN": "7"}).max_partitions_per_run == 7


@pytest.mark.parametrize("name", ["BATCH_PREDICT_WAREHOUSE", "BATCH_PREDICT_LANDING", "BATCH_PREDICT_STAGING"])
def test_a_path_of_a_user_this_machine_does_not_have_fails_at_load(name: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}='~nosuchuser12/x' is not a path this machine can resolve"):
        load_settings({name: "~nosuchuser12/x"})
