"""Demo data and the demo model: iris measurements arriving as daily Parquet files.

Records are drawn around the real class distributions of the iris data that
scikit-learn ships, with a slow drift over time (versicolor petals grow, so an old
model confuses them with virginica more and more), and about 1% malformed records so
validation has real work. Each day is generated from its own seed, derived from the
run seed and the date, so a day's files are identical whatever window is generated.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from batch_predict.drift import build_reference
from batch_predict.models.registry import Registry
from batch_predict.models.types import ModelMetadata
from batch_predict.settings import IRIS_FEATURES

CLASSES = ("setosa", "versicolor", "virginica")
DRIFT_ANCHOR = date(2026, 1, 1)
# cm per day added to versicolor's petal length and width after DRIFT_ANCHOR
DRIFT_PER_DAY = np.array([0.0, 0.0, 0.0015, 0.0008])
MALFORMED_SHARE = 0.01
MALFORMED_KINDS = ("missing_feature", "nan_feature", "negative_value", "duplicate_record_id")
DEMO_MODEL_NAME = "iris-logreg"
# Labels (the true species) become known this many days after the records' day.
LABEL_DELAY_DAYS = 3


class FlakyClassifier:
    """A classifier that raises on some records, to see the rerun modes and the error ledger at work.

    A record fails when its `column` value is one of `poison_values`, or when a hash of
    its feature values falls in the first `fail_share` of buckets: the same record fails
    every time, as a record the model cannot handle does. Any batch holding such a
    record raises, so the prediction step has to isolate it.
    """

    def __init__(
        self,
        estimator: Any,
        fail_share: float = 0.0,
        poison_values: tuple[float, ...] = (),
        column: str = "sepal_length",
    ) -> None:
        self.estimator = estimator
        self.fail_share = fail_share
        self.poison_values = poison_values
        self.column = column
        self.classes_ = estimator.classes_

    def failing(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame.to_numpy(dtype=np.float64)
        buckets = (
            np.round(values * 100).astype(np.int64) * np.array([7919, 104729, 1299709, 15485863])[: values.shape[1]]
        ).sum(axis=1) % 10_000
        return (buckets < self.fail_share * 10_000) | frame[self.column].isin(self.poison_values).to_numpy()

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        failing = self.failing(frame)
        if failing.any():
            raise ValueError(f"{int(failing.sum())} record(s) in this batch cannot be scored (injected fault)")
        return np.asarray(self.estimator.predict_proba(frame))


@dataclass(frozen=True)
class DayFiles:
    day: date
    rows: int
    paths: list[Path]


def _iris_distributions() -> tuple[np.ndarray, np.ndarray]:
    iris = load_iris()
    means = np.stack([iris.data[iris.target == k].mean(axis=0) for k in range(3)])
    covs = np.stack([np.cov(iris.data[iris.target == k], rowvar=False) for k in range(3)])
    return means, covs


def generate_day(day: date, rows: int, seed: int = 7) -> pa.Table:
    """All records whose event time falls on `day` (UTC), sorted by event time."""
    return _generate(day, rows, seed)[0]


def generate_labels(day: date, rows: int, seed: int = 7) -> pa.Table:
    """The true species of `day`'s records, as they become known later: record_id, label, labelled_at."""
    table, species = _generate(day, rows, seed)
    labelled_at = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=LABEL_DELAY_DAYS)
    return pa.table(
        {
            "record_id": table.column("record_id"),
            "label": pa.array(np.asarray(CLASSES, dtype=object)[species], pa.string()),
            "labelled_at": pa.array([labelled_at] * table.num_rows, pa.timestamp("us", tz="UTC")),
        }
    )


def _generate(day: date, rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng([seed, day.toordinal()])
    means, covs = _iris_distributions()
    species = rng.integers(0, 3, size=rows)
    values = np.empty((rows, 4))
    drift = DRIFT_PER_DAY * max((day - DRIFT_ANCHOR).days, 0)
    for k in range(3):
        chosen = species == k
        values[chosen] = rng.multivariate_normal(means[k], covs[k], size=int(chosen.sum()))
        if CLASSES[k] == "versicolor":
            values[chosen] += drift
    # Real measurements are positive; clip the Gaussian tails (malformed rows come next).
    values = np.clip(values, 0.1, None).round(2)
    seconds = np.sort(rng.uniform(0, 86_400, size=rows))
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    times = [start + timedelta(seconds=float(s)) for s in seconds]
    ids = np.array([f"{day:%Y%m%d}-{i:06d}" for i in range(rows)], dtype=object)
    columns: dict[str, list[float | None]] = {name: list(values[:, j]) for j, name in enumerate(IRIS_FEATURES)}

    n_bad = round(rows * MALFORMED_SHARE)
    bad_rows = rng.choice(rows, size=n_bad, replace=False) if rows > 1 else np.array([], dtype=int)
    for n, row in enumerate(bad_rows):
        kind = MALFORMED_KINDS[n % len(MALFORMED_KINDS)]
        feature = IRIS_FEATURES[int(rng.integers(0, 4))]
        if kind == "missing_feature":
            columns[feature][row] = None
        elif kind == "nan_feature":
            columns[feature][row] = float("nan")
        elif kind == "negative_value":
            columns[feature][row] = -abs(float(columns[feature][row] or 1.0))
        else:  # a second delivery of an earlier record of the same day
            ids[row] = ids[(row - 1) % rows] if row else ids[1]
    table = pa.table(
        {
            "record_id": pa.array(ids, pa.string()),
            "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
            **{name: pa.array(columns[name], pa.float64(), from_pandas=False) for name in IRIS_FEATURES},
        }
    )
    return table, species


def write_landing(
    landing: Path, start: date, days: int, rows_per_day: int, seed: int = 7, files_per_day: int = 4
) -> list[DayFiles]:
    """Write `days` days of records from `start`, each day as `files_per_day` arrival files.

    `landing/YYYY-MM-DD/events-HHMM.parquet`, one file per slice of the day. Files are
    written to a temporary name and renamed, so a reader never sees half a file.
    """
    written = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        table = generate_day(day, rows_per_day, seed)
        folder = landing / f"{day:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        times = table.column("event_time")
        minutes = pc.add(pc.multiply(pc.hour(times), 60), pc.minute(times))
        paths = []
        for part in range(files_per_day):
            lo, hi = part * 1440 // files_per_day, (part + 1) * 1440 // files_per_day
            in_slice = pc.and_(pc.greater_equal(minutes, lo), pc.less(minutes, hi))
            path = folder / f"events-{hi // 60:02d}{hi % 60:02d}.parquet"
            handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
            os.close(handle)
            pq.write_table(table.filter(in_slice), temporary)
            os.replace(temporary, path)
            paths.append(path)
        written.append(DayFiles(day, rows_per_day, paths))
    return written


def write_labels(labels: Path, start: date, days: int, rows_per_day: int, today: date, seed: int = 7) -> list[Path]:
    """Write the labels of the days from `start` that have arrived by `today` (LABEL_DELAY_DAYS after each day).

    `labels/<arrival day>/labels-<record day>.parquet`, written to a temporary name and renamed.
    """
    written = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        arrival = day + timedelta(days=LABEL_DELAY_DAYS)
        if arrival > today:
            break
        folder = labels / f"{arrival:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"labels-{day:%Y-%m-%d}.parquet"
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(handle)
        pq.write_table(generate_labels(day, rows_per_day, seed), temporary)
        os.replace(temporary, path)
        written.append(path)
    return written


def train_demo_model(
    registry: Registry,
    alias: str = "champion",
    seed: int = 0,
    fail_share: float = 0.0,
    trained_at: datetime | None = None,
) -> ModelMetadata:
    """Train a scaler + logistic regression pipeline on the bundled iris data and make it `alias`.

    The same seed and library versions give the same bytes, so a rerun finds the
    version already registered and changes nothing. With `fail_share`, the pipeline is
    wrapped in a `FlakyClassifier` that fails on about that share of records.
    """
    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns=dict(zip(iris.feature_names, IRIS_FEATURES, strict=True)))
    x = frame[list(IRIS_FEATURES)]
    y = np.asarray(CLASSES, dtype=object)[frame["target"].to_numpy()]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    pipeline = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))])
    pipeline.fit(x_train, y_train)
    model: Any = FlakyClassifier(pipeline, fail_share=fail_share) if fail_share else pipeline
    metadata = registry.register(
        model,
        name=DEMO_MODEL_NAME + ("-flaky" if fail_share else ""),
        trained_at=trained_at or datetime.now(UTC),
        features=[{"name": name, "dtype": "float64"} for name in IRIS_FEATURES],
        metrics={"holdout_accuracy": float(pipeline.score(x_test, y_test))},
        training_window={"start": None, "end": None, "source": "sklearn.datasets.load_iris"},
        reference=build_reference(x_train, IRIS_FEATURES, pipeline.predict_proba(x_train), CLASSES).to_json(),
    )
    registry.set_alias(alias, metadata.version)
    return metadata
