"""Drift and quality statistics for monitoring prediction partitions, computed from bin counts.

At registration a model gets *reference statistics* (`Reference`): per feature a quantile
histogram of its training data, the share of each predicted class, and a histogram of the
top-class probability ("score"). Each partition's rows are then counted per bin in DuckDB
(`bin_index_sql`) and compared to the reference here, so nothing in this module needs a
partition's raw rows, and the reference is plain JSON that lives next to the model.

Bins are right-closed: with inner edges e0 < e1 < ... < e_last the bins are
(-inf, e0], (e0, e1], ..., (e_last, +inf), so a value's bin index is the number of edges
strictly below it. `bin_counts` (numpy) and `bin_index_sql` (DuckDB) both follow it;
NULL and NaN fall in no bin.

Drift is the population stability index, PSI = sum((a - e) * ln(a / e)) over bins, of
the partition's shares `a` against the reference shares `e`. It is judged against a
threshold that grows as the partition (or the reference) gets smaller: sampling noise
alone gives a 20-row partition a PSI far above the conventional 0.1, and a fixed 0.1
would warn about it every day. See `psi_threshold`.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2

DEFAULT_BINS = 10
# The score is the top-class probability, at least 1/classes; the finer steps near 1 separate
# confident predictions, where most of a good classifier's scores lie.
SCORE_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
# Pseudo-count per bin (Jeffreys' prior), so an empty bin gives a finite PSI; see `psi`.
PSEUDO_COUNT = 0.5
# The conventional "moderate shift" line: below it a shift is not worth a warning, however
# many rows make it statistically certain.
PSI_FLOOR = 0.1
ALPHA = 0.01


@dataclass(frozen=True)
class Histogram:
    """A reference distribution over right-closed bins: `len(edges) + 1` bins, `proportions` per bin."""

    edges: list[float]
    proportions: list[float]
    count: int

    @property
    def bins(self) -> int:
        return len(self.edges) + 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        return cls(
            edges=[float(e) for e in data["edges"]],
            proportions=[float(p) for p in data["proportions"]],
            count=int(data["count"]),
        )


@dataclass(frozen=True)
class Reference:
    """A model's training statistics, stored with the model as JSON and compared to every partition."""

    features: dict[str, Histogram]
    prediction: dict[str, float]
    score: Histogram
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "features": {name: hist.to_json() for name, hist in self.features.items()},
            "prediction": dict(self.prediction),
            "score": self.score.to_json(),
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reference:
        return cls(
            features={name: Histogram.from_json(hist) for name, hist in data["features"].items()},
            prediction={str(label): float(share) for label, share in data["prediction"].items()},
            score=Histogram.from_json(data["score"]),
            rows=int(data["rows"]),
        )


@dataclass(frozen=True)
class DriftResult:
    """One distribution compared to its reference: PSI, the threshold it was judged by, and the verdict."""

    name: str
    psi: float
    threshold: float
    n: int
    n_reference: int
    drifted: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def bin_counts(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> list[int]:
    """Rows per right-closed bin; NaN counts in no bin. The reference implementation of `bin_index_sql`."""
    array = np.asarray(values, dtype=np.float64).ravel()
    array = array[~np.isnan(array)]
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), array, side="left")
    return [int(c) for c in np.bincount(index, minlength=len(edges) + 1)]


def _sql_double(value: float) -> str:
    """A DOUBLE literal that parses back to exactly `value` (a bare `5.1` would be a DECIMAL in DuckDB)."""
    if not math.isfinite(value):
        raise ValueError(f"Bin edges must be finite, got {value}.")
    return f"CAST('{float(value)!r}' AS DOUBLE)"


def bin_index_sql(column_sql: str, edges: Sequence[float]) -> str:
    """A DuckDB expression for the 0-based right-closed bin of `column_sql`; NULL for NULL and NaN.

    `GROUP BY` it and `dense_counts` the result to get the counts `psi` takes. DuckDB sorts NaN
    above every number, so NaN is excluded explicitly rather than landing in the last bin.
    """
    value = f"CAST(({column_sql}) AS DOUBLE)"
    whens = "".join(f" WHEN {value} <= {_sql_double(edge)} THEN {i}" for i, edge in enumerate(edges))
    return f"(CASE WHEN {value} IS NULL OR isnan({value}) THEN NULL{whens} ELSE {len(edges)} END)"


def dense_counts(counts: Mapping[int, int], bins: int) -> list[int]:
    """Counts per bin index (as a `GROUP BY` returns them, empty bins missing) as a list of `bins`."""
    dense = [0] * bins
    for index, count in counts.items():
        if not 0 <= index < bins:
            raise ValueError(f"Bin index {index} is outside 0..{bins - 1}.")
        dense[index] += int(count)
    return dense


def _quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner edges of about `bins` equally filled bins, halfway between neighbouring distinct values.

    Placing edges between distinct training values (rather than on them) keeps a rounded or
    discrete feature's bins independent of how a value exactly on an edge is compared, and ties
    collapse to one edge, so a feature with 3 distinct values gets 3 bins. A constant feature gets
    a narrow bin around its value, so any other value in a partition shows as drift.
    """
    distinct = np.unique(values)
    if len(distinct) == 0:
        return []
    if len(distinct) == 1:
        constant = float(distinct[0])
        margin = 1e-9 * max(1.0, abs(constant))
        return [constant - margin, constant + margin]
    quantiles = np.quantile(values, np.arange(1, bins) / bins)
    below = np.clip(np.searchsorted(distinct, quantiles, side="right") - 1, 0, len(distinct) - 2)
    pairs = sorted({(float(distinct[i]), float(distinct[i + 1])) for i in below})
    return [_between(low, high) for low, high in pairs]


def _between(low: float, high: float) -> float:
    """The midpoint of two values, rounded to the fewest decimals that keep it strictly between them.

    Readable edges (2.85, not 2.8499999999999996) in the stored JSON and the Markdown report.
    """
    middle = low / 2 + high / 2
    for decimals in range(16):
        rounded = round(middle, decimals)
        if low < rounded < high:
            return rounded
    return middle


def histogram(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> Histogram:
    """The share of the non-NaN `values` in each bin of `edges`."""
    counts = bin_counts(values, edges)
    total = sum(counts)
    proportions = [c / total for c in counts] if total else [1 / len(counts)] * len(counts)
    return Histogram(edges=[float(e) for e in edges], proportions=proportions, count=total)


def default_score_edges(classes: int, edges: Sequence[float] = SCORE_EDGES) -> list[float]:
    """The score edges above 1/classes: a top-class probability is never below it, so lower bins stay empty."""
    return [float(e) for e in edges if e > 1 / classes]


def build_reference(
    frame: pd.DataFrame,
    features: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    bins: int = DEFAULT_BINS,
    score_bin_edges: Sequence[float] | None = None,
) -> Reference:
    """The reference statistics of a model: its training features and its predictions on them.

    `proba` is the model's `predict_proba` on `frame` (columns in `classes` order). Feature bins
    are quantiles of the training data (NaN ignored); score bins are fixed, `default_score_edges` unless
    given, so partitions of different models read alike.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (len(frame), len(classes)):
        raise ValueError(f"proba has shape {proba.shape}; expected ({len(frame)}, {len(classes)}).")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}.")
    histograms = {}
    for name in features:
        values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        values = values[~np.isnan(values)]
        histograms[name] = histogram(values, _quantile_edges(values, bins))
    predicted = np.bincount(proba.argmax(axis=1), minlength=len(classes)) if len(frame) else np.zeros(len(classes))
    shares = predicted / max(len(frame), 1)
    edges = default_score_edges(len(classes)) if score_bin_edges is None else list(score_bin_edges)
    return Reference(
        features=histograms,
        prediction={str(label): float(share) for label, share in zip(classes, shares, strict=True)},
        score=histogram(proba.max(axis=1) if len(frame) else np.array([]), edges),
        rows=len(frame),
    )


def _smoothed(
    expected: np.ndarray | Sequence[float],
    actual_counts: np.ndarray | Sequence[int],
    n_reference: int,
    pseudo_count: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference and partition shares with no zeros, the partition's shrunk towards the reference's.

    The last axis is the bins; leading axes (simulated samples) broadcast.
    """
    shares = np.asarray(expected, dtype=np.float64)
    counts = np.asarray(actual_counts, dtype=np.float64)
    if shares.ndim == 0 or shares.shape[-1] == 0 or counts.shape[-1:] != shares.shape[-1:]:
        raise ValueError(f"expected has {shares.shape[-1:]} bins but actual_counts has {counts.shape[-1:]}.")
    if (counts < 0).any() or (shares < 0).any():
        raise ValueError("Shares and counts must not be negative.")
    bins = shares.shape[-1]
    total = shares.sum(axis=-1, keepdims=True)
    shares = np.where(total > 0, shares / np.where(total > 0, total, 1.0), 1 / bins)
    prior = pseudo_count * bins
    reference = (shares * n_reference + pseudo_count) / (n_reference + prior)
    partition = (counts + prior * reference) / (counts.sum(axis=-1, keepdims=True) + prior)
    return reference, partition


def _psi(
    expected: np.ndarray | Sequence[float],
    actual_counts: np.ndarray | Sequence[int],
    n_reference: int,
    pseudo_count: float,
) -> np.ndarray:
    reference, partition = _smoothed(expected, actual_counts, n_reference, pseudo_count)
    return np.asarray(np.sum((partition - reference) * np.log(partition / reference), axis=-1))


def psi(
    expected: Sequence[float], actual_counts: Sequence[int], n_reference: int, pseudo_count: float = PSEUDO_COUNT
) -> float:
    """Population stability index of a partition's bin counts against reference shares.

    Smoothing, so that empty bins give a finite PSI: the reference shares, from `n_reference`
    rows, get `pseudo_count` extra rows per bin (Jeffreys' prior; this matters where the
    reference has an empty bin, such as a class it never predicted). The partition's counts get
    `pseudo_count * bins` extra rows spread in the smoothed reference shares: smoothing towards
    the reference rather than towards uniform shares adds no bias when nothing drifted. A small
    partition's PSI shrinks by up to n / (n + pseudo_count * bins); `psi_threshold` simulates this
    same statistic, so the shrinking is accounted for. An empty partition has PSI 0.
    """
    return float(_psi(expected, actual_counts, n_reference, pseudo_count))


def large_sample_psi_threshold(n: int, n_reference: int, bins: int, alpha: float = ALPHA, tests: int = 1) -> float:
    """The chi-square approximation that `psi_threshold` approaches when every bin expects many rows.

    PSI is the Jeffreys divergence, which for two samples of one distribution is about
    chi-square(bins - 1) * (1/n + 1/n_reference). Where some bin expects only a few rows its upper
    tail is much heavier than that (several times the false warnings at alpha / tests = 0.0025, and
    more for skewed or discrete bins), which is why `psi_threshold` simulates instead.
    """
    quantile = float(chi2.ppf(1 - alpha / max(tests, 1), max(bins - 1, 1)))
    return quantile * (1 / n + 1 / n_reference)


_SIMULATION_SEED = 20_240_601
# Raise when the simulation's code changes what it returns: thresholds kept on disk are then simulated anew.
_SIMULATION_VERSION = 1
_TAIL_DRAWS = 50  # simulated PSIs expected beyond the quantile, for a stable estimate
_MIN_DRAWS = 20_000
_MAX_DRAWS = 200_000
_CHUNK = 25_000


# The folder where simulated thresholds are kept across processes, while `threshold_cache` is in effect.
_THRESHOLD_FOLDER: ContextVar[Path | None] = ContextVar("threshold_folder", default=None)
# Thresholds kept at most (one per distribution and partition size: an hourly year of partitions of
# varying sizes makes tens of thousands); past it, the least recently used are removed down to half.
KEPT_THRESHOLDS = 20_000
# A temporary file older than this was left by a process killed between its write and its rename.
_STALE_TEMPORARY_SECONDS = 3600
_PRUNED: set[Path] = set()  # the folders this process has bounded already
_WRITTEN: dict[Path, int] = {}  # thresholds this process has stored in each folder since it bounded it


@contextmanager
def threshold_cache(folder: Path) -> Iterator[None]:
    """Keep the thresholds `psi_threshold` simulates in `folder` (one small file each) and read them back from
    there, also in later processes: each run of a backfill is a new process, and a range of small
    partitions needs dozens of simulations of about 10 ms (one per distribution and partition size).
    A threshold is a pure function of its inputs (the simulation is seeded), so a stored one is exact.
    The folder is kept bounded (`prune_thresholds`) the first time a process enters the cache on it (a
    run in carry-over mode enters it once a partition, and listing a full folder takes about 10 ms), and
    again after every `KEPT_THRESHOLDS // 2` this process stores there."""
    if folder not in _PRUNED:
        _PRUNED.add(folder)
        prune_thresholds(folder)
    token = _THRESHOLD_FOLDER.set(folder)
    try:
        yield
    finally:
        _THRESHOLD_FOLDER.reset(token)


def prune_thresholds(folder: Path, keep: int | None = None) -> int:
    """Remove the temporary files of killed writers, and past `keep` (default `KEPT_THRESHOLDS`) thresholds
    the least recently used (written or read), down to half of it; return how many files went. A threshold
    removed while another process reads it is simulated again there: removal costs time, never a wrong
    threshold."""
    keep = KEPT_THRESHOLDS if keep is None else keep
    try:
        entries = list(os.scandir(folder))
    except OSError:  # not there yet, or unreadable: nothing to bound
        return 0
    stale_before = time.time() - _STALE_TEMPORARY_SECONDS
    removed, kept = 0, []
    for entry in entries:
        try:
            if entry.name.endswith(".tmp"):
                if entry.stat().st_mtime < stale_before:
                    os.unlink(entry.path)
                    removed += 1
            elif entry.name.endswith(".txt"):
                kept.append(entry)
        except OSError:  # gone meanwhile (another process pruned it), or not ours to remove
            continue
    if len(kept) <= keep:
        return removed

    def written(entry: os.DirEntry[str]) -> float:
        try:
            return entry.stat().st_mtime
        except OSError:
            return 0.0

    for entry in sorted(kept, key=written)[: len(kept) - keep // 2]:
        try:
            os.unlink(entry.path)
            removed += 1
        except OSError:
            continue
    return removed


@lru_cache(maxsize=2048)
def _null_quantile(shares: tuple[float, ...], n: int, n_reference: int, level: float, pseudo_count: float) -> float:
    """`_simulated_quantile`, from this process's memory, else the threshold folder, else simulated (and stored)."""
    folder = _THRESHOLD_FOLDER.get()
    if folder is None:
        return _simulated_quantile(shares, n, n_reference, level, pseudo_count)
    # Every input of the simulation names the file: its arguments, its constants, the version of its
    # code and numpy's (whose random streams may change between releases).
    inputs = (
        shares,
        n,
        n_reference,
        level,
        pseudo_count,
        (_SIMULATION_VERSION, _SIMULATION_SEED, _TAIL_DRAWS, _MIN_DRAWS, _MAX_DRAWS, _CHUNK, np.__version__),
    )
    path = folder / (hashlib.sha256(repr(inputs).encode()).hexdigest() + ".txt")
    try:
        stored = float(path.read_text())
    except (OSError, ValueError):  # not there yet, unreadable, or removed meanwhile: simulate it again
        stored = math.nan
    if math.isfinite(stored) and stored >= 0:
        with suppress(OSError):  # a file of another user, a read-only folder: used all the same
            os.utime(path)  # its time is its last use: the least used go first when the folder is bounded
        return stored
    value = _simulated_quantile(shares, n, n_reference, level, pseudo_count)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary.write_text(repr(value))  # repr of a float reads back as the same float
        os.replace(temporary, path)
    except OSError:
        return value  # a threshold that cannot be kept costs only the time to simulate it again
    _WRITTEN[folder] = _WRITTEN.get(folder, 0) + 1
    if _WRITTEN[folder] >= KEPT_THRESHOLDS // 2:  # a long process (a year's range in one run) bounds it again
        _WRITTEN[folder] = 0
        prune_thresholds(folder)
    return value


def _simulated_quantile(
    shares: tuple[float, ...], n: int, n_reference: int, level: float, pseudo_count: float
) -> float:
    """The `level` quantile of PSI between two samples (n and n_reference rows) of the smoothed reference shares.

    Both samples are drawn, as the reference's own sampling noise adds to the partition's. Drawing
    from the smoothed shares gives bins empty in a small reference a chance to fill. Seeded, so a
    threshold is reproducible.
    """
    truth, _ = _smoothed(shares, np.zeros(len(shares)), n_reference, pseudo_count)
    truth = truth / truth.sum()
    draws = min(_MAX_DRAWS, max(_MIN_DRAWS, math.ceil(_TAIL_DRAWS / (1 - level))))
    rng = np.random.default_rng(_SIMULATION_SEED)
    values = []
    for start in range(0, draws, _CHUNK):
        size = min(_CHUNK, draws - start)
        reference_counts = rng.multinomial(n_reference, truth, size=size)
        partition_counts = rng.multinomial(n, truth, size=size)
        values.append(_psi(reference_counts, partition_counts, n_reference, pseudo_count))
    return float(np.quantile(np.concatenate(values), level, method="higher"))


def psi_threshold(
    expected: Sequence[float],
    n: int,
    n_reference: int,
    floor: float = PSI_FLOOR,
    alpha: float = ALPHA,
    tests: int = 1,
    pseudo_count: float = PSEUDO_COUNT,
) -> float:
    """The PSI above which `n` rows are unlikely (`alpha`, shared by `tests` features) to be sampling noise.

    The threshold is the (1 - alpha/tests) quantile of the PSI between two samples of the
    reference distribution, one of `n` rows and one of `n_reference`, found by seeded simulation
    of exactly the statistic `psi` computes (smoothing included). Bonferroni over the features
    judged together keeps the chance of any false warning per partition under `alpha`. It shrinks
    like chi-square(bins - 1) * (1/n + 1/n_reference) as both samples grow
    (`large_sample_psi_threshold`), but where a bin expects few rows the PSI's tail is far heavier
    than that approximation says. It never drops below `floor`: with enough rows any shift is
    significant, but only a material one deserves a warning.
    """
    if n <= 0:
        return floor
    shares = tuple(float(s) for s in expected)
    level = 1 - alpha / max(tests, 1)
    return max(floor, _null_quantile(shares, _coarse(int(n)), int(n_reference), level, pseudo_count))


def _coarse(n: int) -> int:
    """`n` rounded down to two significant digits (from 100 on), so partitions of similar size share
    one cached simulation. Rounding down errs towards a higher threshold: fewer rows, more noise."""
    if n < 100:
        return n
    unit = 10 ** (len(str(n)) - 2)
    return n // unit * unit


def judge(
    name: str,
    expected: Sequence[float],
    actual_counts: Sequence[int],
    n_reference: int,
    alpha: float = ALPHA,
    floor: float = PSI_FLOOR,
    tests: int = 1,
) -> DriftResult:
    """PSI of one distribution against its reference, with its sample-size-aware threshold."""
    n = int(sum(actual_counts))
    value = psi(expected, actual_counts, n_reference)
    threshold = psi_threshold(expected, n, n_reference, floor=floor, alpha=alpha, tests=tests)
    return DriftResult(
        name=name, psi=value, threshold=threshold, n=n, n_reference=n_reference, drifted=value > threshold
    )


def feature_drift(
    reference: Reference, counts: Mapping[str, Sequence[int]], alpha: float = ALPHA, floor: float = PSI_FLOOR
) -> list[DriftResult]:
    """PSI per feature of a partition's bin counts; `alpha` is the chance of any false warning across them."""
    unknown = sorted(set(counts) - set(reference.features))
    if unknown:
        raise KeyError(f"No reference statistics for features {unknown}; known: {sorted(reference.features)}.")
    results = []
    for name, feature_counts in counts.items():
        hist = reference.features[name]
        if len(feature_counts) != hist.bins:
            raise ValueError(f"Feature {name!r} has {len(feature_counts)} counts but its reference {hist.bins} bins.")
        results.append(judge(name, hist.proportions, feature_counts, hist.count, alpha, floor, tests=len(counts)))
    return results


def distribution_drift(
    name: str,
    expected: Mapping[str, float] | Sequence[float],
    actual_counts: Mapping[str, int] | Sequence[int],
    n_reference: int,
    alpha: float = ALPHA,
    floor: float = PSI_FLOOR,
    tests: int = 1,
) -> DriftResult:
    """PSI of predicted classes (mappings by label) or score bins (sequences) against a reference.

    For the training reference pass `reference.prediction` and `reference.rows` (or
    `reference.score.proportions` and `reference.score.count`); against the previous partition pass
    its `shares(counts)` and its row count. Labels on only one side count as 0 on the other.
    """
    if isinstance(expected, Mapping) != isinstance(actual_counts, Mapping):
        raise TypeError("Pass expected and actual_counts both as mappings by label or both as sequences.")
    if isinstance(expected, Mapping) and isinstance(actual_counts, Mapping):
        labels = list(expected) + [label for label in actual_counts if label not in expected]
        shares_list = [float(expected.get(label, 0.0)) for label in labels]
        counts_list = [int(actual_counts.get(label, 0)) for label in labels]
        return judge(name, shares_list, counts_list, n_reference, alpha, floor, tests)
    assert not isinstance(expected, Mapping) and not isinstance(actual_counts, Mapping)
    return judge(name, expected, actual_counts, n_reference, alpha, floor, tests)


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Counts by label as shares, to use a previous partition as the reference."""
    total = sum(counts.values())
    return {label: (count / total if total else 0.0) for label, count in counts.items()}


def realized_quality(y_true: Sequence[Any], proba: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Accuracy and log-loss of the predictions for the rows whose labels have arrived.

    Pass only labelled rows. A label the model does not know counts as wrong for accuracy and
    is left out of log-loss (the model gave it probability 0, and one such row would swamp the
    mean), and is reported as `unknown_labels`. Probabilities are clipped to [eps, 1 - eps] as in
    scikit-learn's `log_loss`. A value that is not defined (no rows) is NaN.
    """
    proba = np.asarray(proba, dtype=np.float64)
    n = len(y_true)
    if proba.shape != (n, len(classes)):
        raise ValueError(f"proba has shape {proba.shape}; expected ({n}, {len(classes)}).")
    position = {str(label): i for i, label in enumerate(classes)}
    index = np.array([position.get(str(label), -1) for label in y_true], dtype=np.int64)
    known = index >= 0
    predicted = proba.argmax(axis=1) if n else np.array([], dtype=np.int64)
    eps = np.finfo(np.float64).eps
    true_proba = np.clip(proba[np.flatnonzero(known), index[known]], eps, 1 - eps)
    return {
        "n": float(n),
        "unknown_labels": float(n - known.sum()),
        "accuracy": float(np.mean(predicted == index)) if n else math.nan,
        "log_loss": float(-np.mean(np.log(true_proba))) if known.any() else math.nan,
    }


_BLOCKS = " ▏▎▍▌▋▊▉█"


def _bar(share: float, width: int) -> str:
    """A bar of `share * width` character cells in eighth blocks, padded to `width`."""
    eighths = round(max(0.0, min(share, 1.0)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (_BLOCKS[part] if part else "")).ljust(width)


def _bin_labels(edges: Sequence[float]) -> list[str]:
    if not edges:
        return ["all"]
    labels = [f"≤ {edges[0]:g}"]
    labels += [f"({low:g}, {high:g}]" for low, high in pairwise(edges)]
    return [*labels, f"> {edges[-1]:g}"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def drift_markdown(
    results: Sequence[DriftResult],
    score_counts: Sequence[int],
    score_edges: Sequence[float],
    reference_score: Histogram | None = None,
    title: str = "",
    width: int = 30,
) -> str:
    """A Markdown report for Dagster's metadata viewer: PSI per distribution, and the score histogram.

    The histogram is text (eighth-block bars in a code block, which keeps columns aligned),
    so it needs no image rendering and reads the same in a terminal.
    """
    lines = [f"### {title}", ""] if title else []
    lines += ["| distribution | PSI | threshold | rows | status |", "|---|---:|---:|---:|---|"]
    for r in results:
        status = "⚠️ drift" if r.drifted else "ok"
        lines.append(f"| {_cell(r.name)} | {r.psi:.4f} | {r.threshold:.4f} | {r.n} | {status} |")
    total = sum(score_counts)
    labels = _bin_labels(score_edges)
    if len(labels) != len(score_counts):
        raise ValueError(f"{len(score_counts)} score counts for {len(labels)} bins of edges {list(score_edges)}.")
    label_width = max(len(label) for label in labels)
    header = f"{'score':<{label_width}}  {'partition (n=' + str(total) + ')':<{width + 7}}"
    if reference_score is not None:
        header += f"  reference (n={reference_score.count})"
    chart = [header.rstrip()]
    for i, label in enumerate(labels):
        share = score_counts[i] / total if total else 0.0
        row = f"{label:<{label_width}}  {_bar(share, width)} {share:6.1%}"
        if reference_score is not None:
            ref = reference_score.proportions[i]
            row += f"  {_bar(ref, width)} {ref:6.1%}"
        chart.append(row.rstrip())
    return "\n".join([*lines, "", "Score (top-class probability) distribution:", "", "```", *chart, "```", ""])
