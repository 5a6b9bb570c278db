"""What every model source hands the rest of the application: a loaded model and its metadata."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SKLEARN_JOBLIB = "sklearn-joblib"
ONNX = "onnx"


class ModelError(RuntimeError):
    """The registry, an alias or a model artifact cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: str
    trained_at: str
    features: list[dict[str, str]]
    classes: list[str]
    checksum: str
    metrics: dict[str, float] = field(default_factory=dict)
    training_window: dict[str, str | None] = field(default_factory=dict)
    format: str = SKLEARN_JOBLIB
    registered_at: str = ""

    @property
    def feature_names(self) -> list[str]:
        return [feature["name"] for feature in self.features]

    def age_days(self, now: datetime) -> float:
        """Days since the model was trained."""
        return (now - datetime.fromisoformat(self.trained_at)).total_seconds() / 86_400


@dataclass(frozen=True)
class LoadedModel:
    """A registered model loaded into memory: the prediction 'server' of one run."""

    metadata: ModelMetadata
    estimator: Any
    path: Path

    def predict_proba(self, features: Any) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(as_fitted(self.estimator, features)), dtype=np.float64)


def fitted_on_array(estimator: Any) -> bool:
    """Whether a scikit-learn model was fitted on a plain array (it has no feature names to check)."""
    return hasattr(estimator, "n_features_in_") and not hasattr(estimator, "feature_names_in_")


def as_fitted(estimator: Any, frame: Any) -> Any:
    """A scikit-learn model fitted on a plain array gets one (in the contract's column order), not a frame."""
    if isinstance(frame, pd.DataFrame) and fitted_on_array(estimator):
        return frame.to_numpy()
    return frame


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
