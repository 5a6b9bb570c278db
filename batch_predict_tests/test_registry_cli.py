"""`batch-predict model list | show | register | promote`, and alias history."""

import itertools
import json
import threading
from datetime import datetime
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from batch_predict.cli import main
from batch_predict.models.registry import Registry
from batch_predict.settings import IRIS_FEATURES, Settings


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("BATCH_PREDICT_MODELS", str(settings.models))
    return settings


def fitted(with_names: bool = True) -> LogisticRegression:
    x = np.random.default_rng(0).uniform(0.1, 7, size=(90, 4))
    y = np.array(["setosa", "versicolor", "virginica"] * 30)
    data = pd.DataFrame(x, columns=list(IRIS_FEATURES)) if with_names else x
    return LogisticRegression(max_iter=500).fit(data, y)


def test_register_promote_list_show(env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    joblib.dump(fitted(), tmp_path / "iris.joblib")
    assert main(["model", "register", str(tmp_path / "iris.joblib"), "--name", "iris-file"]) == 0
    assert "registered iris-file as v1" in capsys.readouterr().out
    assert main(["model", "promote", "v1", "--alias", "champion"]) == 0
    assert main(["model", "list"]) == 0
    out = capsys.readouterr().out
    assert "v1  iris-file" in out and "aliases champion" in out
    assert main(["model", "show", "v1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in shown["features"]] == list(IRIS_FEATURES)
    assert shown["classes"] == ["setosa", "versicolor", "virginica"]
    Registry(env.models).load("champion")


def test_a_model_without_feature_names_needs_features(
    env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    joblib.dump(fitted(with_names=False), tmp_path / "plain.joblib")
    assert main(["model", "register", str(tmp_path / "plain.joblib")]) == 2
    assert "give --features a,b,c" in capsys.readouterr().err
    features = ",".join(IRIS_FEATURES)
    assert main(["model", "register", str(tmp_path / "plain.joblib"), "--features", features]) == 0


@pytest.mark.parametrize(
    ("artifact", "message"),
    [
        (b"not a pickle", "Cannot load"),
        (None, "not a fitted classifier"),
    ],
)
def test_a_broken_artifact_is_refused(
    env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], artifact: bytes | None, message: str
) -> None:
    path = tmp_path / "broken.joblib"
    if artifact is None:
        joblib.dump(StandardScaler().fit(np.ones((3, 4))), path)
    else:
        path.write_bytes(artifact)
    assert main(["model", "register", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert Registry(env.models).versions() == []


def test_given_classes_must_match(env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    joblib.dump(fitted(), tmp_path / "iris.joblib")
    assert main(["model", "register", str(tmp_path / "iris.joblib"), "--classes", "a,b,c"]) == 2
    assert "do not match the model's classes" in capsys.readouterr().err


def test_promote_keeps_history_and_refuses_unknown_versions(env: Settings, tmp_path: Path) -> None:
    registry = Registry(env.models)
    for c in (0.5, 2.0):
        joblib.dump(
            LogisticRegression(C=c).fit(pd.DataFrame(np.eye(4) * 3 + 1, columns=list(IRIS_FEATURES)), list("abab")),
            tmp_path / f"m{c}.joblib",
        )
        assert main(["model", "register", str(tmp_path / f"m{c}.joblib")]) == 0
    assert main(["model", "promote", "v1"]) == 0
    assert main(["model", "promote", "v2"]) == 0
    assert main(["model", "promote", "v2"]) == 0  # no change, no history entry
    history = registry.alias_history("champion")
    assert [(h["previous"], h["version"]) for h in history] == [(None, "v1"), ("v1", "v2")]
    assert all(h["at"] and h["by"] for h in history)
    assert main(["model", "promote", "v9"]) == 2


def test_concurrent_promotions_keep_every_history_entry(env: Settings, registry: Registry, tmp_path: Path) -> None:
    joblib.dump(fitted(), tmp_path / "other.joblib")
    registry.register_file(tmp_path / "other.joblib", name="other", trained_at=datetime.now())
    threads = [
        threading.Thread(target=registry.set_alias, args=(f"alias{i % 3}", "v1" if i % 2 else "v2")) for i in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for alias in ("alias0", "alias1", "alias2"):
        history = registry.alias_history(alias)
        assert history[-1]["version"] == registry.resolve(alias)
        for before, after in itertools.pairwise(history):
            assert after["previous"] == before["version"]


def test_a_promotion_time_that_is_not_iso_is_named(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["model", "promote", "v1", "--alias", "champion", "--at", "notadate"])
    assert raised.value.code == 2
    assert "'notadate' is not an ISO time" in capsys.readouterr().err
