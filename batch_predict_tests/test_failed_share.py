"""BATCH_PREDICT_MAX_FAILED_SHARE: a partition whose records mostly fail is published, and its run fails."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

from batch_predict.demo import IRIS_FEATURES, train_demo_model
from batch_predict.models.registry import Registry
from batch_predict.settings import Settings

from .conftest import run_assets

DAY, NEXT_DAY = "2026-03-01", "2026-03-02"
RANGE = {"dagster/asset_partition_range_start": DAY, "dagster/asset_partition_range_end": NEXT_DAY}


class FailsOn:
    """Raises on any batch holding one of the given feature rows (a record the model cannot handle)."""

    def __init__(self, estimator: Any, rows: set[tuple[float, ...]]) -> None:
        self.estimator = estimator
        self.rows = rows
        self.classes_ = estimator.classes_

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if any(tuple(row) in self.rows for row in frame.itertuples(index=False)):
            raise ValueError("feature values outside what the model supports")
        return np.asarray(self.estimator.predict_proba(frame))


def feature_rows(settings: Settings, day: str) -> set[tuple[float, ...]]:
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        rows = con.execute(
            f"SELECT {', '.join(IRIS_FEATURES)} FROM inputs WHERE partition_key = $p", {"p": day}
        ).fetchall()
    return {tuple(row) for row in rows}


def promote_failing_on(settings: Settings, registry: Registry, days: list[str]) -> None:
    """Make champion a model that raises on every record of `days` (and on no other)."""
    clean = registry.load_version(registry.resolve("champion"))
    rows = set().union(*(feature_rows(settings, day) for day in days))
    metadata = registry.register(
        FailsOn(clean.estimator, rows),
        name="iris-fails",
        trained_at=datetime.now(UTC),
        features=[{"name": name, "dtype": "float64"} for name in IRIS_FEATURES],
        metrics={},
        training_window={"start": None, "end": None, "source": "test"},
    )
    registry.set_alias("champion", metadata.version)


def ledger(settings: Settings, day: str) -> tuple[int, int, int, int]:
    """Valid inputs, predictions, error rows and prediction_stats.failed of a partition."""
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        [row] = con.execute(
            """
            SELECT (SELECT count(*) FROM inputs WHERE partition_key = $p),
                   (SELECT count(*) FROM predictions WHERE partition_key = $p),
                   (SELECT count(*) FROM prediction_errors WHERE partition_key = $p),
                   (SELECT failed FROM prediction_stats WHERE partition_key = $p)
            """,
            {"p": day},
        ).fetchall()
    return row


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "predictions"
    data = failure.step_failure_data
    return data.user_failure_data.description if data.user_failure_data else str(data.error)  # type: ignore[return-value]


def no_prediction_errors(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == "no_prediction_errors")


def test_a_model_failing_on_every_record_fails_the_run_and_keeps_the_ledger(
    settings: Settings, landing: Any, registry: Registry
) -> None:
    assert run_assets(settings, ["inputs"], DAY).success
    promote_failing_on(settings, registry, [DAY])
    result = run_assets(settings, ["predictions"], DAY, raise_on_error=False)
    assert not result.success
    valid, predicted, errors, failed = ledger(settings, DAY)
    assert valid > 0 and (predicted, errors, failed) == (0, valid, valid)  # published: nothing lost
    message = failure_message(result)
    assert f"Partition {DAY}: {valid} of {valid} worked records (100.0%) failed prediction" in message
    assert "BATCH_PREDICT_MAX_FAILED_SHARE=0.1" in message
    assert f"most common error (on {valid} records): ValueError: feature values outside" in message
    check = no_prediction_errors(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert DAY in (check.description or "")
    assert [m.partition for m in result.asset_materializations_for_node("predictions")] == [DAY]
    # Not retried (BATCH_PREDICT_STEP_RETRIES=3 applies to I/O and lock errors only).
    assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []


def test_a_few_failed_records_only_warn(settings: Settings, landing: Any) -> None:
    train_demo_model(Registry(settings.models), fail_share=0.05)
    result = run_assets(settings, ["inputs", "predictions"], DAY, raise_on_error=False)
    assert result.success
    valid, predicted, errors, _ = ledger(settings, DAY)
    assert 0 < errors <= 0.1 * valid and predicted + errors == valid
    check = no_prediction_errors(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN


def test_a_share_of_one_turns_the_limit_off(make_settings: Any, landing: Any, registry: Registry) -> None:
    settings = make_settings(max_failed_share="1.0")
    assert run_assets(settings, ["inputs"], DAY).success
    promote_failing_on(settings, registry, [DAY])
    result = run_assets(settings, ["predictions"], DAY, raise_on_error=False)
    assert result.success
    valid, _, errors, _ = ledger(settings, DAY)
    assert errors == valid
    check = no_prediction_errors(result)
    assert check.severity == dg.AssetCheckSeverity.WARN and check.metadata["max_failed_share"].value == 1.0


def test_a_range_run_judges_each_partition(make_settings: Any, landing: Any, registry: Registry) -> None:
    settings = make_settings(max_partitions_per_run="10")
    assert run_assets(settings, ["inputs"], tags=RANGE).success
    promote_failing_on(settings, registry, [DAY])
    result = run_assets(settings, ["predictions"], tags=RANGE, raise_on_error=False)
    assert not result.success
    valid, _, errors, _ = ledger(settings, DAY)
    assert errors == valid
    next_valid, next_predicted, next_errors, _ = ledger(settings, NEXT_DAY)
    assert (next_predicted, next_errors) == (next_valid, 0)
    message = failure_message(result)
    assert f"Partition {DAY}:" in message and NEXT_DAY not in message
    check = no_prediction_errors(result)
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["over_max_failed_share"].value == DAY
