"""Labels arrive late: realized quality per partition, training that promotes only a better model, drift checks."""

import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_iris

from batch_predict.contract import FeatureContract
from batch_predict.definitions import build_definitions
from batch_predict.demo import CLASSES, train_demo_model, write_labels, write_landing
from batch_predict.drift import realized_quality
from batch_predict.models.registry import Registry
from batch_predict.settings import IRIS_FEATURES, Settings
from batch_predict.training import CANDIDATE_NAME, TrainingError, beats, train_and_promote
from batch_predict.warehouse import Warehouse
from batch_predict_tests.conftest import BOTH_BACKENDS, recorded_models, run_assets, run_model_job, stored_rows

FIRST = date(2026, 9, 1)
DAYS = 10


@pytest.fixture
def drifted(make_settings: Callable[..., Settings]) -> Settings:
    """Ten days of September records (versicolor petals have grown since January) and their labels."""
    settings = make_settings(start="2026-09-01", train_days="6", holdout_days="3")
    write_landing(settings.landing, FIRST, DAYS, 300, seed=7, files_per_day=1)
    write_labels(settings.labels, FIRST, DAYS, 300, today=FIRST + timedelta(days=DAYS + 3))
    train_demo_model(Registry(settings.models), "champion")
    instance = dg.DagsterInstance.ephemeral()
    job = build_definitions(settings).resolve_job_def("predictions_job")
    for offset in range(DAYS):
        assert job.execute_in_process(partition_key=f"{FIRST + timedelta(days=offset)}", instance=instance).success
    return settings


def train(settings: Settings) -> dg.ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def("training_job")
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def test_realized_quality_is_written_back_per_partition(drifted: Settings) -> None:
    assert train(drifted).success
    warehouse = Warehouse(drifted.warehouse, FeatureContract.from_settings(drifted))
    quality = {row["partition_key"]: row for row in warehouse.prediction_quality() if row["model_version"] == "v1"}
    assert sorted(quality) == [f"{FIRST + timedelta(days=d)}" for d in range(DAYS)]
    with warehouse.connect(read_only=True) as con:
        frame = con.execute(
            """SELECT p.*, l.label FROM predictions p JOIN labels l USING (record_id)
               WHERE p.partition_key = '2026-09-04' AND p.model_version = 'v1'"""
        ).df()
        [(inputs,)] = con.execute("SELECT count(*) FROM inputs WHERE partition_key = '2026-09-04'").fetchall()
    expected = realized_quality(list(frame["label"]), frame[[f"proba_{c}" for c in CLASSES]].to_numpy(), CLASSES)
    row = quality["2026-09-04"]
    assert row["labelled"] == inputs == len(frame)
    assert row["accuracy"] == pytest.approx(expected["accuracy"])
    assert row["log_loss"] == pytest.approx(expected["log_loss"])
    assert 0.8 < row["accuracy"] < 1


def test_training_promotes_a_better_model_once(drifted: Settings) -> None:
    registry = Registry(drifted.models)
    result = train(drifted)
    assert result.success
    [materialization] = result.asset_materializations_for_node("trained_model")
    meta = {key: value.value for key, value in materialization.metadata.items()}
    assert meta["promoted"] is True, meta["decision"]
    assert meta["candidate_metrics"]["accuracy"] >= meta["champion_metrics"]["accuracy"] + 0.01
    assert registry.aliases() == {"challenger": "v2", "champion": "v2"}
    candidate = registry.metadata("v2")
    assert (
        candidate.name == CANDIDATE_NAME
        and candidate.metrics["holdout_accuracy"] == meta["candidate_metrics"]["accuracy"]
    )
    assert registry.reference("v2") is not None
    assert [entry["by"] for entry in registry.alias_history("champion")][-1] == "training"
    # training_job cannot select the model asset (the registry holds it); model_job records the new champion.
    assert "model" not in {e.asset_key.to_user_string() for e in result.all_events if e.asset_key}
    [model] = recorded_models(run_model_job(drifted))
    assert model.metadata["model_version"].value == "v2"

    again = train(drifted)
    assert again.success
    [materialization] = again.asset_materializations_for_node("trained_model")
    assert materialization.metadata["promoted"].value is False
    assert "already is the champion" in str(materialization.metadata["decision"].value)
    assert registry.versions() == ["v1", "v2"]


def test_a_candidate_that_is_not_better_by_the_margin_stays_challenger(drifted: Settings) -> None:
    result = train(dataclasses.replace(drifted, promotion_margin=0.5))
    assert result.success
    registry = Registry(drifted.models)
    assert registry.aliases() == {"challenger": "v2", "champion": "v1"}
    [materialization] = result.asset_materializations_for_node("trained_model")
    assert "not 0.5 or more higher" in str(materialization.metadata["decision"].value)


def test_promotion_compares_in_the_metric_s_direction() -> None:
    better = {"accuracy": 0.95, "log_loss": 0.20}
    worse = {"accuracy": 0.90, "log_loss": 0.30}
    assert beats(better, worse, "accuracy", 0.01) and not beats(worse, better, "accuracy", 0.01)
    assert beats(better, worse, "log_loss", 0.05) and not beats(worse, better, "log_loss", 0.05)
    assert not beats(better, worse, "log_loss", 0.2)  # better, but not by the margin


def test_too_few_labels_fail_with_a_clear_message(settings: Settings) -> None:
    frame = pd.DataFrame(
        {**{name: [1.0] * 5 for name in IRIS_FEATURES}, "label": ["setosa"] * 5, "split": ["train"] * 5}
    )
    with pytest.raises(TrainingError, match="at least 30 rows of 2 classes"):
        train_and_promote(
            Registry(settings.models), frame, IRIS_FEATURES, alias="champion", metric="accuracy", margin=0, window={}
        )


def write_day(landing: Path, day: date, frame: pd.DataFrame) -> None:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    table = pa.table(
        {
            "record_id": [f"{day}-{i}" for i in range(len(frame))],
            "event_time": pa.array(
                [start + timedelta(seconds=30 * i) for i in range(len(frame))], pa.timestamp("us", tz="UTC")
            ),
            **{name: frame[name].to_numpy(dtype=np.float64) for name in IRIS_FEATURES},
        }
    )
    (landing / f"{day}").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, landing / f"{day}" / "records.parquet")


@BOTH_BACKENDS
def test_feature_drift_warns_on_a_real_shift_only(settings: Settings, registry: Registry) -> None:
    iris = load_iris(as_frame=True).frame.rename(
        columns=dict(zip(load_iris().feature_names, IRIS_FEATURES, strict=True))
    )
    rng = np.random.default_rng(3)
    same = iris.iloc[rng.integers(0, len(iris), 300)].reset_index(drop=True)
    shifted = same.assign(petal_length=same["petal_length"] * 1.6)
    write_day(settings.landing, date(2026, 3, 1), same)
    write_day(settings.landing, date(2026, 3, 2), shifted)

    checks = {}
    for day in ("2026-03-01", "2026-03-02"):
        result = run_assets(settings, ["inputs", "predictions"], day)
        assert result.success
        checks[day] = {e.check_name: e for e in result.get_asset_check_evaluations()}
        [materialization] = result.asset_materializations_for_node("predictions")
        report = str(materialization.metadata["drift_report"].value)
        assert "| petal_length |" in report and "Score (top-class probability) distribution" in report
    assert "| predicted class vs 2026-03-01 |" in report
    assert checks["2026-03-01"]["no_feature_drift"].passed
    warned = checks["2026-03-02"]["no_feature_drift"]
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert "petal_length" in (warned.description or "")
    assert checks["2026-03-02"]["no_prediction_drift"].severity == dg.AssetCheckSeverity.WARN
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings))
    rows = stored_rows(
        warehouse,
        "SELECT partition_key, name, drifted FROM prediction_drift WHERE kind = 'feature' "
        "ORDER BY partition_key, name, drifted",
    )
    assert [(p, n) for p, n, drifted in rows if drifted] == [("2026-03-02", "petal_length")]
    assert len(rows) == 8


@BOTH_BACKENDS
def test_feature_bins_counted_in_duckdb_match_numpy(settings: Settings, landing: Path, registry: Registry) -> None:
    from batch_predict.drift import Reference, bin_counts, dense_counts

    assert run_assets(settings, ["inputs"], "2026-03-02").success
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings))
    data = registry.reference("v1")
    assert data is not None
    reference = Reference.from_json(data)
    edges = {name: reference.features[name].edges for name in IRIS_FEATURES}
    counted = warehouse.feature_bin_counts("2026-03-02", edges)
    frame = pd.DataFrame(warehouse.query("SELECT * FROM inputs WHERE partition_key = '2026-03-02'"))
    for name in IRIS_FEATURES:
        assert dense_counts(counted[name], len(edges[name]) + 1) == bin_counts(frame[name].to_numpy(), edges[name])


def test_a_champion_that_fails_on_records_is_judged_not_crashed(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(start="2026-09-01", train_days="6", holdout_days="3")
    write_landing(settings.landing, FIRST, DAYS, 300, seed=7, files_per_day=1)
    write_labels(settings.labels, FIRST, DAYS, 300, today=FIRST + timedelta(days=DAYS + 3))
    train_demo_model(Registry(settings.models), "champion", fail_share=0.05)
    instance = dg.DagsterInstance.ephemeral()
    job = build_definitions(settings).resolve_job_def("predictions_job")
    for offset in range(DAYS):
        assert job.execute_in_process(partition_key=f"{FIRST + timedelta(days=offset)}", instance=instance).success
    result = train(settings)
    assert result.success
    [materialization] = result.asset_materializations_for_node("trained_model")
    champion = materialization.metadata["champion_metrics"].value
    assert champion["failed_rows"] > 0
    assert materialization.metadata["promoted"].value is True


def test_model_train_says_why_it_cannot_train(settings: Settings, registry: Registry, monkeypatch, capsys) -> None:
    from batch_predict.cli import main

    for name, value in {"WAREHOUSE": settings.warehouse, "MODELS": settings.models, "LABELS": settings.labels}.items():
        monkeypatch.setenv(f"BATCH_PREDICT_{name}", str(value))
    home = Path(settings.warehouse).parent / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["model", "train"]) == 1
    err = capsys.readouterr().err
    assert "The labels folder" in err and "BATCH_PREDICT_LABELS" in err


def test_model_train_records_the_promoted_model(
    drifted: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from batch_predict.cli import main

    env = {"WAREHOUSE": drifted.warehouse, "MODELS": drifted.models, "LABELS": drifted.labels}
    env |= {"LANDING": drifted.landing, "START": "2026-09-01", "TRAIN_DAYS": 6, "HOLDOUT_DAYS": 3}
    for name, value in env.items():
        monkeypatch.setenv(f"BATCH_PREDICT_{name}", str(value))
    home = Path(drifted.warehouse).parent / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["model", "train"]) == 0
    assert "candidate v2: " in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("model"))
        assert event is not None and event.asset_materialization is not None
        assert event.asset_materialization.metadata["model_version"].value == "v2"


def test_labels_numeric_newest_and_unknown(settings: Settings, landing: Path, registry: Registry) -> None:
    """Float labels read as their integers; a newer file's label wins, but not a NULL one; unknown labels
    count as wrong and stay out of log-loss."""
    assert run_assets(settings, ["inputs", "predictions"], "2026-03-01").success
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings))
    with warehouse.connect(read_only=True) as con:
        frame = con.execute("SELECT * FROM predictions WHERE partition_key = '2026-03-01' ORDER BY record_id").df()
    ids = list(frame["record_id"])
    truth = ["setosa" if i % 3 else "unheard_of" for i in range(len(ids))]
    folder = settings.labels / "2026-03-04"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"record_id": ids, "label": ["versicolor"] * len(ids)}), folder / "a-old.parquet")
    pq.write_table(pa.table({"record_id": ids, "label": truth}), folder / "b-new.parquet")
    pq.write_table(pa.table({"record_id": ids[:5], "label": pa.nulls(5, pa.string())}), folder / "c-empty.parquet")
    stats = warehouse.load_labels(settings_source(settings), "label")
    assert (stats.rows, stats.kept, stats.incomplete, stats.superseded) == (2 * len(ids) + 5, len(ids), 5, len(ids))
    [row] = [r for r in warehouse.prediction_quality() if r["partition_key"] == "2026-03-01"]
    expected = realized_quality(truth, frame[[f"proba_{c}" for c in CLASSES]].to_numpy(), CLASSES)
    assert row["unknown_labels"] == expected["unknown_labels"] > 0
    assert row["accuracy"] == pytest.approx(expected["accuracy"])
    assert row["log_loss"] == pytest.approx(expected["log_loss"])

    numeric = Warehouse(Path(settings.warehouse).with_name("numeric.duckdb"), warehouse.contract)
    other = settings.labels.parent / "numeric-labels"
    other.mkdir()
    pq.write_table(pa.table({"record_id": ["a", "b", "c"], "label": [1.0, None, 2.0]}), other / "l.parquet")
    numeric.load_labels(settings_source(settings, other), "label")
    with numeric.connect(read_only=True) as con:
        assert con.execute("SELECT record_id, label FROM labels ORDER BY 1").fetchall() == [("a", "1"), ("c", "2")]


def settings_source(settings: Settings, root: Path | None = None):
    from batch_predict.warehouse import Source

    return Source(root or settings.labels, "**/*.parquet")


def test_a_broken_reference_warns_without_failing_the_partition(
    settings: Settings, landing: Path, registry: Registry
) -> None:
    (registry.root / "v1" / "reference.json").write_text('{"features": {}}')
    result = run_assets(settings, ["inputs", "predictions"], "2026-03-01")
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["every_input_predicted"].passed
    warned = checks["no_feature_drift"]
    assert not warned.passed and warned.severity == dg.AssetCheckSeverity.WARN
    assert "Could not measure 2026-03-01" in (warned.description or "")
