import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from batch_predict.contract import FeatureContract
from batch_predict.demo import DEMO_MODEL_NAME, train_demo_model
from batch_predict.models.checks import verify_model
from batch_predict.models.registry import ARTIFACTS, METADATA, Registry
from batch_predict.models.types import SKLEARN_JOBLIB, ModelError
from batch_predict.settings import IRIS_FEATURES

ARTIFACT = ARTIFACTS[SKLEARN_JOBLIB]
CONTRACT = FeatureContract("record_id", "event_time", IRIS_FEATURES)


def test_train_demo_registers_a_version_with_full_metadata(registry: Registry) -> None:
    assert registry.versions() == ["v1"]
    assert registry.resolve("champion") == "v1"
    meta = registry.metadata("v1")
    assert meta.name == DEMO_MODEL_NAME
    assert meta.feature_names == list(IRIS_FEATURES)
    assert all(feature["dtype"] == "float64" for feature in meta.features)
    assert meta.classes == ["setosa", "versicolor", "virginica"]
    assert meta.metrics["holdout_accuracy"] > 0.9
    assert len(meta.checksum) == 64
    assert meta.training_window["source"] == "sklearn.datasets.load_iris"
    assert (registry.root / "v1" / ARTIFACT).is_file()


def test_training_again_reuses_the_same_version(registry: Registry) -> None:
    before = (registry.root / "aliases" / "champion.json").read_text()
    again = train_demo_model(registry, "champion")
    assert again.version == "v1"
    assert registry.versions() == ["v1"]
    assert (registry.root / "aliases" / "champion.json").read_text() == before


def test_load_gives_a_working_model(registry: Registry) -> None:
    loaded = registry.load("champion")
    verify_model(loaded, CONTRACT)
    assert loaded.metadata.version == "v1"


def test_missing_registry_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="No model registry at .*train-demo.*BATCH_PREDICT_MODELS"):
        Registry(tmp_path / "none").load("champion")


def test_unknown_alias_lists_versions(registry: Registry) -> None:
    with pytest.raises(ModelError, match="no alias 'challenger'.*Versions: v1"):
        registry.load("challenger")


def test_an_unreadable_alias_file_names_the_command_that_sets_it(registry: Registry) -> None:
    (registry.root / "aliases" / "champion.json").write_text("{not json")
    with pytest.raises(
        ModelError, match=r"unreadable .*`batch-predict model promote VERSION --alias champion` \(versions: v1\)"
    ):
        registry.load("champion")


def test_corrupt_artifact_is_refused_before_loading(registry: Registry) -> None:
    artifact = registry.root / "v1" / ARTIFACT
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError, match=f"{artifact}.*corrupt or was changed"):
        registry.load("champion")


def test_missing_artifact_names_the_path(registry: Registry) -> None:
    artifact = registry.root / "v1" / ARTIFACT
    artifact.unlink()
    with pytest.raises(ModelError, match=f"artifact of model v1 is missing: {artifact}"):
        registry.load("champion")


def test_an_unloadable_artifact_with_matching_checksum_is_a_clear_error(registry: Registry) -> None:
    from batch_predict.models.types import sha256

    artifact = registry.root / "v1" / ARTIFACT
    artifact.write_bytes(b"not a pickle")
    meta = json.loads((registry.root / "v1" / METADATA).read_text())
    meta["checksum"] = sha256(artifact)
    (registry.root / "v1" / METADATA).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="Cannot load the artifact"):
        registry.load("champion")


def test_a_model_with_other_features_is_refused(registry: Registry) -> None:
    other = FeatureContract("record_id", "event_time", ("a", "b", "c", "d"))
    with pytest.raises(ModelError, match="expects features .*BATCH_PREDICT_FEATURES"):
        verify_model(registry.load("champion"), other)


def test_names_that_print_alike_are_shown_by_code_point(tmp_path: Path) -> None:
    """A model trained on 'é' written as e + combining accent (NFD) against a contract with 'é' (NFC): the
    message must not show two lists that look the same."""
    import pandas as pd

    nfd, nfc = "e\u0301", "\u00e9"
    frame = pd.DataFrame({nfd: [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = LogisticRegression().fit(frame, ["x", "y", "x", "y"])
    registry = Registry(tmp_path / "models")
    features = [{"name": nfd, "dtype": "float64"}, {"name": "b", "dtype": "float64"}]
    registry.register(
        model, name="nfd", trained_at=datetime.now(UTC), features=features, metrics={}, training_window={}
    )
    contract = FeatureContract("record_id", "event_time", (nfc, "b"))
    with pytest.raises(ModelError) as raised:
        verify_model(registry.load_version("v1"), contract)
    assert "e\\u0301" in str(raised.value) and "\\xe9" in str(raised.value)
    assert "Unicode normalisation" in str(raised.value)


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path) -> None:
    import numpy as np

    registry = Registry(tmp_path / "models")
    x = np.random.default_rng(0).normal(size=(60, 4))
    y = np.array(["a", "b", "c"] * 20)
    results: list[str] = []

    def register(seed: int) -> None:
        model = LogisticRegression(C=1.0 + seed).fit(x, y)
        meta = registry.register(
            model,
            name="m",
            trained_at=datetime.now(UTC),
            features=[{"name": n, "dtype": "float64"} for n in IRIS_FEATURES],
            metrics={},
            training_window={},
        )
        results.append(meta.version)

    threads = [threading.Thread(target=register, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(registry.versions()) == sorted(f"v{i}" for i in range(1, 7))
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".staging")]
