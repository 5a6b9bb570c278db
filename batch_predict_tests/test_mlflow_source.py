"""The MLflow registry loader against a real MLflow store: a sqlite database and artifacts in a temp dir.

No server and no network: MLflow's telemetry is off, and pip requirements are given, never inferred.
The store is built once per module (importing MLflow and logging models take seconds).
"""

import os
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from batch_predict.contract import FeatureContract
from batch_predict.demo import write_landing
from batch_predict.models.mlflow_source import (
    directory_sha256,
    is_mlflow_uri,
    load_mlflow_model,
    parse_mlflow_uri,
    resolve_mlflow_version,
)
from batch_predict.models.types import ModelError
from batch_predict.partitions import build_partitions, partition_end
from batch_predict.resources import ModelRegistryResource, build_resources
from batch_predict.settings import Settings, SettingsError, load_settings
from batch_predict.staleness import StalePartition, find_stale_partitions
from batch_predict.warehouse import Warehouse
from batch_predict_tests.conftest import DAYS, FIRST_DAY, ROWS_PER_DAY, recorded_models, run_assets, run_model_job

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
OFFLINE = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
}

# Two known, harmless warnings, matched by message so that any other warning still shows:
# SQLAlchemy 2.1 deprecates a loader option MLflow's store configures, and MLflow asks for
# an input example when the test models are logged.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    pytest.mark.filterwarnings("ignore:.*An input example was not provided when logging the model"),
]


@dataclass(frozen=True)
class Store:
    uri: str
    rows: pd.DataFrame
    v1: Pipeline
    v2: Pipeline
    v1_started_at: int


def iris() -> tuple[pd.DataFrame, np.ndarray]:
    data = load_iris()
    frame = pd.DataFrame(data.data, columns=FEATURES)
    return frame, np.asarray(CLASSES, dtype=object)[data.target]


def pyfunc_model(estimator: Any, output: str) -> Any:
    """A pyfunc model whose predict gives a probability "frame" (classes as columns), an "array", or "labels"."""
    from mlflow.pyfunc import PythonModel

    class WrappedModel(PythonModel):
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
            rows = model_input[FEATURES]
            if output == "labels":
                return pd.DataFrame({"prediction": estimator.predict(rows)})
            proba = estimator.predict_proba(rows)
            return pd.DataFrame(proba, columns=list(estimator.classes_)) if output == "frame" else proba

    return WrappedModel()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Versions 1 and 2 of `iris` (alias champion -> 1), and models that are not plain classifiers."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in OFFLINE.items():
            patch.setenv(key, value)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        import mlflow
        import mlflow.pyfunc
        import mlflow.sklearn
        from mlflow.models import infer_signature

        X, y = iris()
        v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
        v2 = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=500)).fit(X, y)
        svc = LinearSVC().fit(X, y)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment("iris", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_tracking_uri(uri)
        try:

            def log(flavour: Any, registered: str, model: Any, **kwargs: Any) -> int:
                with mlflow.start_run(experiment_id=experiment) as run:
                    mlflow.log_metric("holdout_accuracy", float((v1.predict(X) == y).mean()))
                    flavour.log_model(
                        model,
                        name="model",
                        registered_model_name=registered,
                        pip_requirements=["scikit-learn"],
                        **kwargs,
                    )
                return int(run.info.start_time)

            signature = infer_signature(X, v1.predict_proba(X))
            started = log(mlflow.sklearn, "iris", v1, signature=signature)
            log(mlflow.sklearn, "iris", v2, signature=signature)
            log(mlflow.sklearn, "iris-svc", svc, signature=infer_signature(X, svc.predict(X)))
            frame_signature = infer_signature(X, pd.DataFrame(v1.predict_proba(X), columns=CLASSES))
            pyfunc = mlflow.pyfunc
            log(pyfunc, "iris-pyfunc", None, python_model=pyfunc_model(v1, "frame"), signature=frame_signature)
            log(pyfunc, "iris-array", None, python_model=pyfunc_model(v1, "array"), metadata={"classes": CLASSES})
            log(pyfunc, "iris-unnamed", None, python_model=pyfunc_model(v1, "array"), signature=signature)
            log(pyfunc, "iris-labels", None, python_model=pyfunc_model(v1, "labels"))
            client.set_registered_model_alias("iris", "champion", "1")
        finally:
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        yield Store(uri=uri, rows=X.iloc[[0, 60, 120, 149]].reset_index(drop=True), v1=v1, v2=v2, v1_started_at=started)


@pytest.fixture(autouse=True)
def elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """MLflow's own configuration points at no store, so a test passes only if the loader uses the URI it is given."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'not-here.db'}")


def test_is_mlflow_uri() -> None:
    assert is_mlflow_uri("models:/iris@champion")
    assert is_mlflow_uri("models:/iris/3")
    assert not is_mlflow_uri("champion")
    assert not is_mlflow_uri("runs:/abc/model")
    assert not is_mlflow_uri("")


def test_parse_mlflow_uri() -> None:
    assert parse_mlflow_uri("models:/iris@champion").alias == "champion"
    assert parse_mlflow_uri("models:/iris/03").version == "3"
    assert parse_mlflow_uri("models:/iris/latest").version == "latest"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/", "Cannot read the MLflow model URI"),
        ("models:/iris", "Cannot read the MLflow model URI"),
        ("models:/iris@champion/model.pkl", "sub-paths"),
        ("models://profile@databricks/iris/1", "Databricks profile"),
        ("models:/iris/v2", "not a number"),
        ("models:/iris/0", "not a number"),
        ("models:/iris/Production", "deprecated stages.*models:/iris@champion"),
    ],
)
def test_bad_uris_are_refused_before_touching_a_store(uri: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        load_mlflow_model(uri, FEATURES)


def test_load_by_alias(store: Store) -> None:
    loaded = load_mlflow_model("models:/iris@champion", FEATURES, tracking_uri=store.uri)

    meta = loaded.metadata
    assert (meta.name, meta.version, meta.format) == ("iris", "1", "mlflow-sklearn")
    assert meta.features == [{"name": name, "dtype": "float64"} for name in FEATURES]
    assert meta.classes == CLASSES
    assert meta.training_window == {"source": "models:/iris/1"}
    assert set(meta.metrics) == {"holdout_accuracy"}
    assert meta.trained_at == datetime.fromtimestamp(store.v1_started_at / 1000, UTC).isoformat()
    assert datetime.fromisoformat(meta.registered_at).utcoffset() is not None
    assert datetime.fromisoformat(meta.trained_at) <= datetime.fromisoformat(meta.registered_at)
    assert meta.checksum == directory_sha256(loaded.path)
    assert (loaded.path / "MLmodel").is_file()
    assert list(loaded.estimator.classes_) == CLASSES
    np.testing.assert_allclose(loaded.predict_proba(store.rows), store.v1.predict_proba(store.rows))


def test_load_by_version_gives_the_same_model_and_checksum(store: Store) -> None:
    by_alias = load_mlflow_model("models:/iris@champion", FEATURES, tracking_uri=store.uri)
    first = load_mlflow_model("models:/iris/1", FEATURES, tracking_uri=store.uri)
    again = load_mlflow_model("models:/iris/1", FEATURES, tracking_uri=store.uri)

    assert first.metadata == again.metadata == by_alias.metadata
    np.testing.assert_allclose(first.predict_proba(store.rows), store.v1.predict_proba(store.rows))


def test_latest_is_the_highest_version(store: Store) -> None:
    assert resolve_mlflow_version("models:/iris/latest", tracking_uri=store.uri) == ("iris", "2")


def test_moving_an_alias_moves_the_model(store: Store) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    client.set_registered_model_alias("iris", "candidate", "1")
    try:
        assert resolve_mlflow_version("models:/iris@candidate", tracking_uri=store.uri) == ("iris", "1")
        before = load_mlflow_model("models:/iris@candidate", FEATURES, tracking_uri=store.uri)

        client.set_registered_model_alias("iris", "candidate", "2")

        assert resolve_mlflow_version("models:/iris@candidate", tracking_uri=store.uri) == ("iris", "2")
        after = load_mlflow_model("models:/iris@candidate", FEATURES, tracking_uri=store.uri)
    finally:
        client.delete_registered_model_alias("iris", "candidate")
    assert (before.metadata.version, after.metadata.version) == ("1", "2")
    assert after.metadata.training_window == {"source": "models:/iris/2"}
    assert after.metadata.checksum != before.metadata.checksum
    np.testing.assert_allclose(after.predict_proba(store.rows), store.v2.predict_proba(store.rows))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/iris@nope", r"no alias 'nope'.*Its aliases: champion -> 1\. Set it with"),
        ("models:/nope@champion", r"no registered model 'nope'.*Registered models: iris, .*Fix the name"),
        ("models:/nope/1", r"no registered model 'nope'"),
        ("models:/iris/99", r"no version 99.*Its versions: 1, 2\."),
    ],
)
def test_unknown_models_aliases_and_versions(store: Store, uri: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_mlflow_version(uri, tracking_uri=store.uri)
    with pytest.raises(ModelError, match=message):
        load_mlflow_model(uri, FEATURES, tracking_uri=store.uri)


def test_features_must_match_the_signature(store: Store) -> None:
    asked = ["sepal_length", "sepal_width", "petal_length", "petal_area"]
    with pytest.raises(
        ModelError, match=r"expects the features \[.*'petal_width'\] \(from its input signature\).*'petal_area'"
    ):
        load_mlflow_model("models:/iris/1", asked, tracking_uri=store.uri)


def test_a_classifier_without_probabilities_is_refused(store: Store) -> None:
    with pytest.raises(ModelError, match="LinearSVC, not a fitted classifier with predict_proba"):
        load_mlflow_model("models:/iris-svc/1", FEATURES, tracking_uri=store.uri)


def test_pyfunc_returning_a_frame_names_its_classes(store: Store) -> None:
    loaded = load_mlflow_model("models:/iris-pyfunc/1", FEATURES, tracking_uri=store.uri)

    assert (loaded.metadata.format, loaded.metadata.classes) == ("mlflow-pyfunc", CLASSES)
    assert loaded.metadata.feature_names == FEATURES
    np.testing.assert_allclose(loaded.predict_proba(store.rows), store.v1.predict_proba(store.rows))


def test_pyfunc_returning_an_array_takes_its_classes_from_metadata(store: Store) -> None:
    loaded = load_mlflow_model("models:/iris-array/1", FEATURES, tracking_uri=store.uri)

    assert loaded.metadata.classes == CLASSES
    np.testing.assert_allclose(loaded.predict_proba(store.rows), store.v1.predict_proba(store.rows))


def test_pyfunc_returning_an_array_without_classes_is_refused(store: Store) -> None:
    with pytest.raises(ModelError, match=r"returns a ndarray, which does not name the classes.*metadata=\{'classes'"):
        load_mlflow_model("models:/iris-unnamed/1", FEATURES, tracking_uri=store.uri)


def test_pyfunc_returning_labels_is_refused(store: Store) -> None:
    with pytest.raises(ModelError, match=r"single column \['prediction'\].*not the probabilities"):
        load_mlflow_model("models:/iris-labels/1", FEATURES, tracking_uri=store.uri)


def test_mlflow_configuration_applies_without_a_tracking_uri(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)

    assert resolve_mlflow_version("models:/iris@champion") == ("iris", "1")


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    database = tmp_path / "typo.db"
    with pytest.raises(ModelError, match="No MLflow database at .*typo.db"):
        load_mlflow_model("models:/iris@champion", FEATURES, tracking_uri=f"sqlite:///{database}")
    with pytest.raises(ModelError, match="No MLflow database at .*not-here.db.*MLFLOW_TRACKING_URI"):
        resolve_mlflow_version("models:/iris@champion")
    assert not database.exists()


def test_the_file_store_is_refused_with_mlflows_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="Cannot use the MLflow registry .*maintenance"):
        resolve_mlflow_version("models:/iris@champion", tracking_uri=(tmp_path / "mlruns").as_uri())


def test_the_file_store_round_trips_when_mlflow_allows_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's plain file store (./mlruns), which MLflow 3 serves only with MLFLOW_ALLOW_FILE_STORE=true."""
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(name, uri)
    monkeypatch.chdir(tmp_path)  # MLflow's defaults (./mlflow.db, ./mlruns) land in the temp dir, if anywhere
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    frame = pd.DataFrame(load_iris().data, columns=FEATURES)
    labels = np.asarray(CLASSES, dtype=object)[load_iris().target]
    model = LogisticRegression(max_iter=500).fit(frame, labels)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model, name="model", registered_model_name="iris-files", pip_requirements=["scikit-learn"]
        )
    client.set_registered_model_alias("iris-files", "champion", "1")
    loaded = load_mlflow_model("models:/iris-files@champion", FEATURES, tracking_uri=uri)
    assert (loaded.metadata.name, loaded.metadata.version) == ("iris-files", "1")
    assert np.allclose(loaded.predict_proba(frame.head(5)), model.predict_proba(frame.head(5)))


def test_errors_that_may_pass_are_raised_as_they_are(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    def unavailable(self: Any, name: str) -> Any:
        raise MlflowException("the tracking server is restarting", error_code=TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(MlflowClient, "get_registered_model", unavailable)
    with pytest.raises(MlflowException, match="restarting") as raised:
        resolve_mlflow_version("models:/iris@champion", tracking_uri=store.uri)
    assert not isinstance(raised.value, ModelError)


def test_without_mlflow_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ModelError, match=r"pip install 'batch_predict\[mlflow\]'"):
        load_mlflow_model("models:/iris@champion", FEATURES)


# -- the app end to end with BATCH_PREDICT_MODEL_URI: the assets load the model from MLflow --------------

DAY = "2026-03-02"
PROBABILITIES = " + ".join(f"proba_{label}" for label in CLASSES)


def mlflow_app(make_settings: Callable[..., Settings], uri: str) -> tuple[Settings, Warehouse]:
    """Settings that take the model from `uri` (the local folder registry stays empty), with landed data."""
    settings = make_settings(model_uri=uri)
    write_landing(settings.landing, FIRST_DAY, DAYS, ROWS_PER_DAY, seed=7, files_per_day=3)
    warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings), lock_timeout_seconds=30)
    return settings, warehouse


def partition_summary(warehouse: Warehouse, table: str = "predictions") -> dict[tuple[str, str], int]:
    """Rows of DAY in `table`, counted per (model_name, model_version)."""
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            f"SELECT model_name, model_version, count(*) FROM {table} WHERE partition_key = ? GROUP BY ALL",
            [DAY],
        ).fetchall()
    return {(name, version): count for name, version, count in rows}


def valid_inputs(warehouse: Warehouse) -> int:
    with warehouse.connect(read_only=True) as con:
        [(count,)] = con.execute("SELECT count(*) FROM inputs WHERE partition_key = ?", [DAY]).fetchall()
    return int(count)


def stale(settings: Settings, warehouse: Warehouse) -> tuple[str, list[StalePartition]]:
    resource = build_resources(settings)["model_registry"]
    assert isinstance(resource, ModelRegistryResource)
    found = find_stale_partitions(warehouse, resource.models(), partition_end(build_partitions(settings)))
    assert found.undecided == {}
    return found.current, found.stale


def test_the_assets_predict_with_the_mlflow_model(
    store: Store, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    settings, warehouse = mlflow_app(make_settings, "models:/iris@champion")

    recorded = run_model_job(settings)
    result = run_assets(settings, ["inputs", "predictions"], DAY)

    assert recorded.success and result.success
    assert not settings.models.exists()  # nothing came from the folder registry
    [model] = recorded_models(recorded)
    assert model.metadata["model_name"].value == "iris"
    assert model.metadata["model_version"].value == "1"
    assert model.metadata["training_window"].value == {"source": "models:/iris/1"}
    assert model.metadata["classes"].value == ", ".join(CLASSES)
    checksum = load_mlflow_model("models:/iris/1", FEATURES, tracking_uri=store.uri).metadata.checksum
    assert model.metadata["checksum"].value == checksum
    assert model.tags is not None and model.tags["dagster/data_version"] == checksum

    valid = valid_inputs(warehouse)
    assert 0 < valid <= ROWS_PER_DAY
    assert partition_summary(warehouse) == {("iris", "1"): valid}
    with warehouse.connect(read_only=True) as con:
        [(worst, predicted)] = con.execute(
            f"SELECT max(abs({PROBABILITIES} - 1)), list(DISTINCT prediction ORDER BY prediction) "
            "FROM predictions WHERE partition_key = ?",
            [DAY],
        ).fetchall()
    assert worst < 1e-9
    assert set(predicted) <= set(CLASSES)
    [predictions] = result.asset_materializations_for_node("predictions")
    assert predictions.metadata["model_name"].value == "iris"
    assert predictions.metadata["model_version"].value == "1"
    assert predictions.metadata["model_checksum"].value == checksum
    assert predictions.metadata["dagster/row_count"].value == valid
    checks = {check.check_name: check.passed for check in result.get_asset_check_evaluations()}
    assert checks["every_input_predicted"] and checks["no_prediction_errors"]
    assert stale(settings, warehouse) == ("1", [])


def test_moving_the_mlflow_alias_makes_the_partition_stale_until_it_is_predicted_again(
    store: Store, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    # A registered model of this test's own (copies of iris 1 and 2), so moving its alias disturbs no other test.
    name = "iris-moving"
    client = MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
    first = str(client.copy_model_version("models:/iris/1", name).version)
    second = str(client.copy_model_version("models:/iris/2", name).version)
    client.set_registered_model_alias(name, "champion", first)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    settings, warehouse = mlflow_app(make_settings, f"models:/{name}@champion")

    assert run_model_job(settings).success
    assert run_assets(settings, ["inputs", "predictions"], DAY).success
    valid = valid_inputs(warehouse)
    assert partition_summary(warehouse) == {(name, first): valid}
    assert stale(settings, warehouse) == (first, [])

    client.set_registered_model_alias(name, "champion", second)

    assert stale(settings, warehouse) == (second, [StalePartition(DAY, made_by=[first], wanted=second)])
    result = run_assets(settings, ["predictions"], DAY)
    assert result.success
    [predictions] = result.asset_materializations_for_node("predictions")
    assert (predictions.metadata["model_name"].value, predictions.metadata["model_version"].value) == (name, second)
    assert stale(settings, warehouse) == (second, [])
    assert partition_summary(warehouse) == {(name, second): valid}
    assert partition_summary(warehouse, "predictions_history") == {(name, first): valid}
    with warehouse.connect(read_only=True) as con:
        [(differing,)] = con.execute(
            "SELECT count(*) FROM predictions p JOIN predictions_history h USING (partition_key, record_id) "
            "WHERE p.partition_key = ? AND p.proba_setosa IS DISTINCT FROM h.proba_setosa",
            [DAY],
        ).fetchall()
    assert differing > 0  # the re-prediction really used the other model


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"BATCH_PREDICT_MODEL_URI": "models:/x@y", "BATCH_PREDICT_BACKFILL_MODEL": "point_in_time"},
            r"BATCH_PREDICT_BACKFILL_MODEL='point_in_time'.*BATCH_PREDICT_MODEL_URI.*use 'current'",
        ),
        ({"BATCH_PREDICT_MODEL_URI": "runs:/abc/model"}, r"BATCH_PREDICT_MODEL_URI='runs:/abc/model' is not valid"),
        ({"BATCH_PREDICT_MODEL_URI": "champion"}, r"BATCH_PREDICT_MODEL_URI='champion' is not valid.*models:/"),
        ({"BATCH_PREDICT_MODEL_URI": "models:/x"}, r"'models:/x' is not valid.*models:/NAME@ALIAS"),
    ],
)
def test_settings_refuse_what_an_mlflow_uri_cannot_do(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(overrides)


def test_settings_accept_an_mlflow_uri_with_current_backfills() -> None:
    settings = load_settings({"BATCH_PREDICT_MODEL_URI": " models:/x@y ", "BATCH_PREDICT_BACKFILL_MODEL": "current"})
    assert (settings.model_uri, settings.backfill_model) == ("models:/x@y", "current")


# -- credentials in store URIs: masked in every error, Dagster event and CLI line ---------------------

SECRET = "s3cret-Pa55"


@pytest.fixture
def closed_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A loopback port bound but not listening, so connections are refused for the whole test; MLflow tries once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def full_text(error: BaseException) -> str:
    """Everything an error can show: its message and traceback, and those of the errors it was caused by."""
    return "".join(traceback.format_exception(error))


# Each store URI, and what its masked form must still show.
STORES = [
    ("http://alice:{secret}@127.0.0.1:{port}", "http://alice:***@127.0.0.1:{port}"),
    ("http://alice:{secret}@127.0.0.1:{port}/mlflow?x=1", "http://alice:***@127.0.0.1:{port}/mlflow"),
    ("http://127.0.0.1:{port}/?token={secret}", "http://127.0.0.1:{port}/?token=***"),
    ("postgresql://alice:{secret}@127.0.0.1:{port}/mlflow", "postgresql://alice:***@127.0.0.1:{port}/mlflow"),
]


@pytest.mark.parametrize(("template", "shown"), STORES)
@pytest.mark.parametrize("configured", ["argument", "environment"])
def test_a_password_in_the_tracking_uri_appears_in_no_error(
    closed_port: int, monkeypatch: pytest.MonkeyPatch, template: str, shown: str, configured: str
) -> None:
    uri = template.format(secret=SECRET, port=closed_port)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # MLflow retries a database it cannot reach for minutes (doubling sleeps); once shows the same error.
    monkeypatch.setattr("mlflow.store.db.utils.MAX_RETRY_COUNT", 1)
    tracking_uri = uri if configured == "argument" else None
    for call in (
        lambda: resolve_mlflow_version("models:/iris@champion", tracking_uri=tracking_uri),
        lambda: load_mlflow_model("models:/iris/1", FEATURES, tracking_uri=tracking_uri),
    ):
        with pytest.raises(Exception) as raised:  # which one depends on the store: see below
            call()
        text = full_text(raised.value)
        assert SECRET not in text
        assert shown.format(port=closed_port) in text, text
        if uri.startswith("http"):
            # A server that does not answer may come back: the error stays one that step retries apply to.
            from mlflow.exceptions import MlflowException

            assert isinstance(raised.value, MlflowException) and not isinstance(raised.value, ModelError)


def test_a_sqlite_store_is_shown_whole_and_its_query_secrets_masked(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as raised:
        resolve_mlflow_version("models:/no-such-model@champion", tracking_uri=store.uri)
    assert f"The MLflow registry {store.uri} has no registered model 'no-such-model'" in str(raised.value)

    missing = f"sqlite:///{tmp_path / 'none.db'}?password={SECRET}"
    with pytest.raises(ModelError) as raised:
        resolve_mlflow_version("models:/iris@champion", tracking_uri=missing)
    assert SECRET not in full_text(raised.value)
    assert f"sqlite:///{tmp_path / 'none.db'}?password=***" in str(raised.value)


def test_a_model_uri_with_a_query_string_is_refused_masked() -> None:
    with pytest.raises(ModelError, match=r"models:/iris@champion\?token=\*\*\*'.*query string") as raised:
        parse_mlflow_uri(f"models:/iris@champion?token={SECRET}")
    assert SECRET not in full_text(raised.value)
    with pytest.raises(SettingsError) as refused:
        load_settings({"BATCH_PREDICT_MODEL_URI": f"https://alice:{SECRET}@host:5000/models/iris"})
    assert SECRET not in str(refused.value) and "https://alice:***@host:5000" in str(refused.value)
    with pytest.raises(SettingsError) as refused:
        load_settings({"BATCH_PREDICT_MODEL_URI": f"models:/iris@champion?token={SECRET}"})
    assert SECRET not in str(refused.value) and "models:/iris@champion?token=***" in str(refused.value)


def test_the_model_asset_records_no_password_when_the_server_is_down(
    closed_port: int, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}@127.0.0.1:{closed_port}")
    settings = make_settings(model_uri="models:/iris@champion", step_retries="0")
    instance = dg.DagsterInstance.ephemeral()

    result = run_model_job(settings, instance=instance, raise_on_error=False)

    assert not result.success
    recorded = "\n".join(repr(record) for record in instance.all_logs(result.run_id))
    assert "STEP_FAILURE" in recorded
    assert SECRET not in recorded
    assert f"alice:***@127.0.0.1:{closed_port}" in recorded


@pytest.mark.parametrize(
    ("template", "shown", "exit_code"),
    [
        ("http://alice:{secret}@127.0.0.1:{port}", "http://alice:***@127.0.0.1:{port}", 1),
        ("sqlite:///{tmp}/none.db?password={secret}", "sqlite:///{tmp}/none.db?password=***", 2),
    ],
)
def test_the_cli_prints_no_password(
    closed_port: int, tmp_path: Path, template: str, shown: str, exit_code: int
) -> None:
    """A real `batch-predict` process whose MLflow store cannot be used: the output names the store, masked."""
    env = {
        **os.environ,
        **OFFLINE,
        "MLFLOW_TRACKING_URI": template.format(secret=SECRET, port=closed_port, tmp=tmp_path),
        "BATCH_PREDICT_MODEL_URI": "models:/iris@champion",
        "BATCH_PREDICT_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "BATCH_PREDICT_MODELS": str(tmp_path / "models"),
        "BATCH_PREDICT_LANDING": str(tmp_path / "landing"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "batch_predict.cli", "repredict", "--dry-run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == exit_code, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert shown.format(port=closed_port, tmp=tmp_path) in done.stderr, done.stderr
