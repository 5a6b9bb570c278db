"""The batch training side: train a candidate on labelled history, compare it with the champion, promote or not.

The candidate is a scikit-learn pipeline (standard scaling + logistic regression) fitted
on the `train` split of the training set; it and the current champion are scored on the
same `holdout` split, and the candidate becomes champion only if it beats the champion by
the promotion margin on the promotion metric (accuracy: higher is better; log_loss: lower).
Either way the candidate is registered, with its training reference statistics, and the
`challenger` alias points at it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from batch_predict.drift import build_reference, realized_quality
from batch_predict.models.registry import Registry
from batch_predict.models.types import LoadedModel, ModelError, ModelMetadata, as_fitted

CANDIDATE_NAME = "logreg-from-labels"
CHALLENGER = "challenger"
# At least this many labelled rows in each split, and two classes to learn from.
MIN_TRAIN_ROWS = 30
MIN_HOLDOUT_ROWS = 10


class TrainingError(RuntimeError):
    """There is not enough labelled data to train or to judge a candidate; the message says what is missing."""


@dataclass(frozen=True)
class TrainingOutcome:
    candidate: ModelMetadata
    candidate_metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    promoted: bool
    reason: str


def fit_candidate(train: pd.DataFrame, features: Sequence[str], seed: int = 0) -> Pipeline:
    """Fit the candidate pipeline on the training rows (features and `label`)."""
    pipeline = Pipeline(
        [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=2000, random_state=seed))]
    )
    pipeline.fit(train[list(features)], train["label"].astype(str))
    return pipeline


def evaluate(model: Any, holdout: pd.DataFrame, features: Sequence[str]) -> dict[str, float]:
    """Accuracy and log-loss of a model (anything with `predict_proba` and `classes_`) on the holdout rows.

    Rows the model raises on (the prediction step would put them in the error ledger) count as
    wrong, with the worst log-loss a prediction can have: a model that fails on records is not
    better for it. `failed_rows` says how many there were.
    """
    classes = [str(c) for c in model.classes_]
    labels = holdout["label"].astype(str).to_numpy()
    frame = holdout[list(features)]
    proba = np.full((len(frame), len(classes)), np.nan)
    _score_safely(model, frame, proba, 0)
    ok = ~np.isnan(proba).any(axis=1)
    quality = realized_quality(list(labels[ok]), proba[ok], classes)
    n, scored = len(frame), int(ok.sum())
    failed_known = int(np.isin(labels[~ok], classes).sum())
    scored_known = scored - int(quality["unknown_labels"])
    worst = -math.log(np.finfo(np.float64).eps)
    log_losses = (quality["log_loss"] if scored_known else 0.0) * scored_known + worst * failed_known
    return {
        "n": float(n),
        "unknown_labels": quality["unknown_labels"] + float(np.isin(labels[~ok], classes, invert=True).sum()),
        "failed_rows": float(n - scored),
        "accuracy": quality["accuracy"] * scored / n if scored else (0.0 if n else math.nan),
        "log_loss": log_losses / (scored_known + failed_known) if scored_known + failed_known else math.nan,
    }


def _score_safely(model: Any, frame: pd.DataFrame, out: np.ndarray, offset: int) -> None:
    """Fill `out` with the model's probabilities, isolating the rows it raises on by bisection (left NaN)."""
    if frame.empty:
        return
    try:
        out[offset : offset + len(frame)] = model.predict_proba(as_fitted(model, frame))
    except Exception:  # any exception of the model is a property of these rows
        if len(frame) == 1:
            return
        middle = len(frame) // 2
        _score_safely(model, frame.iloc[:middle], out, offset)
        _score_safely(model, frame.iloc[middle:], out, offset + middle)


def beats(candidate: dict[str, float], champion: dict[str, float], metric: str, margin: float) -> bool:
    """Whether the candidate is better than the champion by at least `margin` on `metric`."""
    if math.isnan(candidate[metric]):
        return False
    if math.isnan(champion[metric]):
        return True
    if metric == "log_loss":
        return candidate[metric] <= champion[metric] - margin
    return candidate[metric] >= champion[metric] + margin


def train_and_promote(
    registry: Registry,
    training_set: pd.DataFrame,
    features: Sequence[str],
    *,
    alias: str,
    metric: str,
    margin: float,
    window: dict[str, str | None],
    seed: int = 0,
) -> TrainingOutcome:
    """Train a candidate on the `train` split, register it, and promote it to `alias` if it beats the champion."""
    train = training_set[training_set["split"] == "train"]
    holdout = training_set[training_set["split"] == "holdout"]
    if len(train) < MIN_TRAIN_ROWS or train["label"].nunique() < 2:
        raise TrainingError(
            f"The training split of the training set has {len(train)} labelled "
            f"rows and {train['label'].nunique()} class(es); at least {MIN_TRAIN_ROWS} rows of 2 classes are needed. "
            "Wait for more labels, materialize the `inputs` partitions of the labelled days, or raise "
            "BATCH_PREDICT_TRAIN_DAYS."
        )
    if len(holdout) < MIN_HOLDOUT_ROWS:
        raise TrainingError(
            f"The holdout split of the training set has {len(holdout)} labelled "
            f"rows; at least {MIN_HOLDOUT_ROWS} are needed to compare models. Raise BATCH_PREDICT_HOLDOUT_DAYS."
        )
    pipeline = fit_candidate(train, features, seed)
    candidate_metrics = evaluate(pipeline, holdout, features)
    reference = build_reference(
        train, features, pipeline.predict_proba(train[list(features)]), [str(c) for c in pipeline.classes_]
    )
    candidate = registry.register(
        pipeline,
        name=CANDIDATE_NAME,
        trained_at=datetime.now(UTC),
        features=[{"name": name, "dtype": "float64"} for name in features],
        metrics={f"holdout_{k}": v for k, v in candidate_metrics.items()} | {"train_rows": float(len(train))},
        training_window=window,
        reference=reference.to_json(),
    )
    registry.set_alias(CHALLENGER, candidate.version, by="training")
    champion = _champion(registry, alias)
    if champion is None:
        registry.set_alias(alias, candidate.version, by="training")
        return TrainingOutcome(candidate, candidate_metrics, None, None, True, f"there was no {alias}")
    if champion.metadata.version == candidate.version:
        return TrainingOutcome(
            candidate, candidate_metrics, candidate.version, candidate_metrics, False, f"it already is the {alias}"
        )
    champion_metrics = evaluate(champion.estimator, holdout, features)
    promoted = beats(candidate_metrics, champion_metrics, metric, margin)
    direction = "lower" if metric == "log_loss" else "higher"
    reason = (
        f"holdout {metric} {candidate_metrics[metric]:.4f} vs {champion.metadata.version}'s "
        f"{champion_metrics[metric]:.4f}: {'' if promoted else 'not '}{margin:g} or more {direction}"
    )
    if promoted:
        registry.set_alias(alias, candidate.version, by="training", expected=champion.metadata.version)
    return TrainingOutcome(candidate, candidate_metrics, champion.metadata.version, champion_metrics, promoted, reason)


def _champion(registry: Registry, alias: str) -> LoadedModel | None:
    try:
        registry.resolve(alias)
    except ModelError:
        return None
    return registry.load(alias)
