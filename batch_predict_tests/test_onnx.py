"""ONNX models: register a file with its features and classes, make it champion, predict a partition."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from batch_predict.cli import main
from batch_predict.models.onnx import OnnxClassifier
from batch_predict.models.registry import Registry
from batch_predict.models.types import ModelError
from batch_predict.settings import IRIS_FEATURES, Settings
from batch_predict.warehouse import Warehouse
from batch_predict_tests.conftest import run_assets, run_model_job

CLASSES = ["setosa", "versicolor", "virginica"]
FEATURES = ",".join(IRIS_FEATURES)


# SVC(probability=True) is deprecated in scikit-learn 1.9, but it is what the reference sample exported.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def iris_svc(path: Path, zipmap: bool = True) -> Pipeline:
    """An iris SVC with integer labels 0-2 and one float input [N, 4], like the batch pattern's reference sample."""
    x, y = load_iris(return_X_y=True)
    svc = make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(x.astype(np.float32), y)
    onx = to_onnx(
        svc,
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(svc.steps[-1][1]): {"zipmap": zipmap}},
    )
    path.write_bytes(onx.SerializeToString())
    return svc


def test_onnx_probabilities_match_the_original_model(tmp_path: Path) -> None:
    x = pd.DataFrame(load_iris().data[::7], columns=list(IRIS_FEATURES))
    for zipmap in (True, False):
        path = tmp_path / f"iris-{zipmap}.onnx"
        original = iris_svc(path, zipmap=zipmap)
        onnx_model = OnnxClassifier(path, list(IRIS_FEATURES), CLASSES)
        assert list(onnx_model.classes_) == CLASSES
        got = onnx_model.predict_proba(x)
        assert got.shape == (len(x), 3)
        assert np.allclose(got, original.predict_proba(x.to_numpy(np.float32)), atol=1e-4)


def test_register_onnx_needs_features_and_classes(settings: Settings, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BATCH_PREDICT_MODELS", str(settings.models))
    path = tmp_path / "iris_svc.onnx"
    iris_svc(path)
    assert main(["model", "register", str(path)]) == 2
    assert "give --features" in capsys.readouterr().err
    assert main(["model", "register", str(path), "--features", FEATURES]) == 2
    assert "give --classes with 3 names" in capsys.readouterr().err
    assert main(["model", "register", str(path), "--features", "a,b", "--classes", ",".join(CLASSES)]) == 2
    assert "2 features were given" in capsys.readouterr().err
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert main(["model", "register", str(broken), "--features", FEATURES]) == 2
    assert "Cannot load" in capsys.readouterr().err
    assert Registry(settings.models).versions() == []


def test_onnx_champion_predicts_a_partition_with_its_version_on_every_row(
    settings: Settings, landing: Path, warehouse: Warehouse, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("BATCH_PREDICT_MODELS", str(settings.models))
    path = tmp_path / "iris_svc.onnx"
    iris_svc(path)
    assert main(["model", "register", str(path), "--features", FEATURES, "--classes", ",".join(CLASSES)]) == 0
    assert main(["model", "promote", "v1", "--alias", "champion"]) == 0
    meta = Registry(settings.models).metadata("v1")
    assert (meta.format, meta.classes) == ("onnx", CLASSES)

    assert run_model_job(settings).success
    result = run_assets(settings, ["inputs", "predictions"], "2026-03-02")
    assert result.success
    with warehouse.connect(read_only=True) as con:
        rows = con.execute(
            """SELECT count(*), count(DISTINCT model_version), any_value(model_version), any_value(model_name),
                      max(abs(proba_setosa + proba_versicolor + proba_virginica - 1))
               FROM predictions WHERE partition_key = '2026-03-02'"""
        ).fetchone()
        inputs = con.execute("SELECT count(*) FROM inputs WHERE partition_key = '2026-03-02'").fetchone()
    assert rows is not None and inputs is not None
    count, versions, version, name, worst = rows
    assert (count, versions, version, name) == (inputs[0], 1, "v1", "iris_svc")
    assert worst < 1e-4


def test_a_changed_onnx_file_is_refused_at_load(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "iris_svc.onnx"
    iris_svc(path)
    registry = Registry(settings.models)
    meta = registry.register_file(
        path, name="svc", trained_at=pd.Timestamp("2026-03-01", tz="UTC"), features=list(IRIS_FEATURES), classes=CLASSES
    )
    registry.set_alias("champion", meta.version)
    assert registry.load("champion").predict_proba(
        pd.DataFrame([[5.1, 3.5, 1.4, 0.2]], columns=IRIS_FEATURES)
    ).shape == (
        1,
        3,
    )
    (settings.models / meta.version / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="corrupt or was changed"):
        registry.load("champion")
