"""The one smoke check and the one "is it a classifier" check every model passes, whatever its source.

A model is refused when it is loaded or registered, before it predicts a record: a model
that cannot give sane class probabilities for one row of ones would fail every record.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from batch_predict.contract import FeatureContract, probability_column
from batch_predict.models.types import LoadedModel, ModelError, as_fitted


def require_classifier(estimator: Any, what: str) -> Any:
    """`estimator`, if it is a fitted classifier that gives class probabilities; else a ModelError."""
    if not hasattr(estimator, "predict_proba") or not hasattr(estimator, "classes_"):
        raise ModelError(
            f"{what} holds a {type(estimator).__name__}, not a fitted classifier with predict_proba and "
            "classes_. Register a classifier that gives class probabilities (e.g. SVC(probability=True) "
            "instead of LinearSVC)."
        )
    return estimator


def smoke_frame(features: Sequence[str], dtypes: dict[str, str] | None = None) -> pd.DataFrame:
    """One row of ones, one column per feature in the given order."""
    return pd.DataFrame({name: np.ones(1, dtype=(dtypes or {}).get(name, "float64")) for name in features})


def smoke_check(estimator: Any, features: Sequence[str], classes: Sequence[str], what: str) -> None:
    """Refuse a model that cannot predict sane probabilities (one per class, summing to 1) for one row of ones."""
    try:
        proba = np.asarray(estimator.predict_proba(as_fitted(estimator, smoke_frame(features))), dtype=np.float64)
    except Exception as error:  # the estimator can raise anything: report it as a broken model
        raise ModelError(
            f"{what} failed a smoke prediction on one row of its {len(features)} features "
            f"({type(error).__name__}: {error})."
        ) from error
    if proba.shape != (1, len(classes)) or not np.isclose(proba.sum(), 1.0, atol=1e-4):
        raise ModelError(
            f"{what} returned probabilities of shape {proba.shape} summing to {proba.sum():.4f} for one row; "
            f"expected (1, {len(classes)}) summing to 1."
        )


def verify_model(model: LoadedModel, contract: FeatureContract) -> None:
    """Fail unless the model takes exactly the contract's features (in its order), its classes have
    distinct probability columns, and it passes the smoke check."""
    meta = model.metadata
    features = list(contract.features)
    if meta.feature_names != features:
        expected, given = str(meta.feature_names), str(features)
        if expected == given or _normalized(meta.feature_names) == _normalized(features):
            # Names that print alike but differ (Unicode normalisation, look-alike characters): show the code points.
            expected, given = ascii(meta.feature_names), ascii(features)
        raise ModelError(
            f"Model {meta.name} {meta.version} expects features {expected}, but the source "
            f"contract (BATCH_PREDICT_FEATURES) gives {given}. Register a model trained "
            "on these features, or set BATCH_PREDICT_FEATURES to the model's (names must match character for "
            "character, Unicode normalisation included)."
        )
    columns = [probability_column(label) for label in meta.classes]
    if len(set(columns)) != len(columns):
        raise ModelError(f"Model {meta.version} has class labels {meta.classes} that map to the same column names.")
    smoke_check(model.estimator, features, meta.classes, f"Model {meta.version} ({model.path})")


def _normalized(names: Sequence[str]) -> list[str]:
    return [unicodedata.normalize("NFC", name) for name in names]
