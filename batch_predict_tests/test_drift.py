import json
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_iris
from sklearn.metrics import log_loss

from batch_predict.contract import FeatureContract
from batch_predict.drift import (
    DriftResult,
    Histogram,
    Reference,
    bin_counts,
    bin_index_sql,
    build_reference,
    dense_counts,
    distribution_drift,
    drift_markdown,
    feature_drift,
    large_sample_psi_threshold,
    psi,
    psi_threshold,
    realized_quality,
    shares,
)
from batch_predict.warehouse import Warehouse

from .conftest import BOTH_BACKENDS

FEATURES = ["f1", "f2", "f3", "f4"]
REFERENCE_ROWS = 5_000
TRIALS = 1_000
Sampler = Callable[[np.random.Generator, int], np.ndarray]


def normal(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.normal([0.0, 10.0, -3.0, 100.0], [1.0, 2.0, 0.5, 15.0], size=(rows, 4))


def lognormal(rng: np.random.Generator, rows: int) -> np.ndarray:
    """The exponential of `normal`'s draws: PSI over quantile bins ignores monotone transforms, so same rates."""
    return rng.lognormal([0.0, 1.0, -1.0, 2.0], [1.0, 0.5, 1.5, 0.25], size=(rows, 4))


@cache
def iris_species() -> list[tuple[np.ndarray, np.ndarray]]:
    iris = load_iris()
    groups = [iris.data[iris.target == k] for k in range(3)]
    return [(group.mean(axis=0), np.cov(group, rowvar=False)) for group in groups]


def iris_like(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Iris measurements, drawn around the three species' distributions and rounded to 0.1 cm as measured."""
    species = rng.integers(0, 3, size=rows)
    values = np.empty((rows, 4))
    for k, (mean, cov) in enumerate(iris_species()):
        chosen = species == k
        values[chosen] = rng.multivariate_normal(mean, cov, size=chosen.sum())
    return np.clip(values, 0.1, None).round(1)


def poisson(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Poisson counts, from mostly zeros to many values: few, unevenly filled bins."""
    return rng.poisson([0.3, 2.0, 5.0, 30.0], size=(rows, 4)).astype(np.float64)


SHAPES: dict[str, Sampler] = {"normal": normal, "lognormal": lognormal, "iris_rounded": iris_like, "poisson": poisson}


def reference_for(values: np.ndarray) -> Reference:
    frame = pd.DataFrame(values, columns=FEATURES)
    proba = np.tile([0.7, 0.2, 0.1], (len(frame), 1))
    return build_reference(frame, FEATURES, proba, ["a", "b", "c"])


def trial_counts(reference: Reference, samples: np.ndarray) -> list[dict[str, list[int]]]:
    """Bin counts per trial of samples shaped (trials, rows, features), in one vectorised pass per feature."""
    trials = samples.shape[0]
    per_feature = {}
    for j, name in enumerate(FEATURES):
        hist = reference.features[name]
        index = np.searchsorted(hist.edges, samples[:, :, j], side="left")
        flat = (np.arange(trials)[:, None] * hist.bins + index).ravel()
        per_feature[name] = np.bincount(flat, minlength=trials * hist.bins).reshape(trials, hist.bins)
    return [{name: counts[t].tolist() for name, counts in per_feature.items()} for t in range(trials)]


def alarm_rate(reference: Reference, samples: np.ndarray, feature: str | None = None) -> float:
    """Share of trials in which any feature (or the given one) is flagged."""
    alarms = 0
    for counts in trial_counts(reference, samples):
        results = feature_drift(reference, counts)
        alarms += any(r.drifted for r in results if feature is None or r.name == feature)
    return alarms / samples.shape[0]


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("rows", [100, 1_000, 10])
def test_same_distribution_rarely_warns(shape: str, rows: int) -> None:
    sample = SHAPES[shape]
    reference = reference_for(sample(np.random.default_rng(12_345), REFERENCE_ROWS))
    samples = np.stack([sample(np.random.default_rng(seed), rows) for seed in range(TRIALS)])
    rate = alarm_rate(reference, samples)
    print(f"false-alarm rate, {shape}, {rows} rows, 4 features: {rate:.3f}")
    assert rate <= 0.05


def test_a_fixed_psi_line_would_cry_wolf_on_small_partitions() -> None:
    """Why thresholds grow as partitions shrink: same-distribution 100-row samples often exceed PSI 0.1."""
    reference = reference_for(normal(np.random.default_rng(12_345), REFERENCE_ROWS))
    samples = normal(np.random.default_rng(1), TRIALS * 100).reshape(TRIALS, 100, 4)
    hist = reference.features["f1"]
    values = [psi(hist.proportions, counts["f1"], hist.count) for counts in trial_counts(reference, samples)]
    assert np.mean(np.array(values) > 0.1) > 0.2
    assert psi_threshold(hist.proportions, 100, hist.count, tests=4) > np.quantile(values, 0.99)


def shifted(rng: np.random.Generator, rows: int, sds: float) -> np.ndarray:
    """Normal features with feature f2 moved up by `sds` of its standard deviations."""
    values = normal(rng, rows)
    values[:, 1] += sds * 2.0
    return values


def test_a_one_sd_shift_is_flagged_at_500_rows() -> None:
    reference = reference_for(normal(np.random.default_rng(12_345), REFERENCE_ROWS))
    samples = np.stack([shifted(np.random.default_rng(seed), 500, 1.0) for seed in range(TRIALS)])
    rate = alarm_rate(reference, samples, feature="f2")
    print(f"detection rate, mean + 1 sd, 500 rows: {rate:.3f}")
    assert rate >= 0.95


def test_a_moderate_shift_is_flagged_with_many_rows_but_not_with_few() -> None:
    reference = reference_for(normal(np.random.default_rng(12_345), REFERENCE_ROWS))
    many = np.stack([shifted(np.random.default_rng(seed), 10_000, 0.5) for seed in range(50)])
    few = np.stack([shifted(np.random.default_rng(seed), 50, 0.5) for seed in range(TRIALS)])
    rate_many = alarm_rate(reference, many, feature="f2")
    rate_few = alarm_rate(reference, few, feature="f2")
    print(f"detection rate, mean + 0.5 sd: 10,000 rows {rate_many:.3f}, 50 rows {rate_few:.3f}")
    assert rate_many == 1.0
    assert rate_few < 0.5


def test_threshold_shrinks_with_rows_to_the_chi_square_limit_and_the_floor() -> None:
    uniform = [0.1] * 10
    thresholds = [psi_threshold(uniform, n, 5_000, floor=0.0) for n in (10, 100, 1_000, 10_000)]
    assert thresholds == sorted(thresholds, reverse=True)
    assert psi_threshold(uniform, 100_000, 5_000) == pytest.approx(0.1)
    simulated = psi_threshold(uniform, 20_000, 50_000, floor=0.0, tests=4)
    assert simulated == pytest.approx(large_sample_psi_threshold(20_000, 50_000, 10, tests=4), rel=0.1)
    assert psi_threshold(uniform, 0, 5_000) == pytest.approx(0.1)
    assert psi_threshold(uniform, 100, 5_000, tests=4) > psi_threshold(uniform, 100, 5_000, tests=1)
    # the reference's own noise counts too: a small training set needs a larger PSI
    assert psi_threshold(uniform, 1_000, 100) > psi_threshold(uniform, 1_000, 100_000)


def test_psi_smoothing_keeps_empty_bins_finite() -> None:
    assert psi([0.25, 0.25, 0.25, 0.25], [25, 25, 25, 25], 1_000) == pytest.approx(0.0, abs=1e-12)
    assert psi([0.5, 0.5, 0.0], [0, 0, 0], 100) == 0.0
    new_bin = psi([0.5, 0.5, 0.0], [30, 30, 40], 1_000)
    assert math.isfinite(new_bin) and new_bin > 1.0
    assert math.isfinite(psi([0.5, 0.5], [100, 0], 1_000))
    with pytest.raises(ValueError, match="bins"):
        psi([0.5, 0.5], [1, 2, 3], 100)


EDGE_CASES = [-1.5, 0.0, 1e-300, 0.30000000000000004, 2.0, 7.25, 1e6]


def test_bin_index_sql_matches_bin_counts() -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(0, 2, 2_000)
    edges = sorted({*np.quantile(data, np.linspace(0.05, 0.95, 12)).tolist(), *EDGE_CASES})
    probes = [
        *edges,
        *np.nextafter(edges, -np.inf).tolist(),
        *np.nextafter(edges, np.inf).tolist(),
        edges[0] - 1e9,
        edges[-1] + 1e9,
        -np.inf,
        np.inf,
    ]
    values = np.concatenate([data, probes])
    table = pa.table({"i": np.arange(len(values) + 2), "v": pa.array([*values, None, math.nan], pa.float64())})
    connection = duckdb.connect()
    connection.register("values_table", table)
    sql = f"SELECT {bin_index_sql('v', edges)} FROM values_table ORDER BY i"
    rows = [row[0] for row in connection.execute(sql).fetchall()]
    assert rows[-2:] == [None, None]  # NULL and NaN fall in no bin
    assert rows[:-2] == np.searchsorted(edges, values, side="left").tolist()
    grouped = connection.execute(
        f"SELECT bin, count(*) FROM (SELECT {bin_index_sql('v', edges)} AS bin FROM values_table) "
        "WHERE bin IS NOT NULL GROUP BY bin"
    ).fetchall()
    assert dense_counts(dict(grouped), len(edges) + 1) == bin_counts(values, edges)
    assert sum(bin_counts(np.array([*values, math.nan]), edges)) == len(values)


def test_bin_index_sql_on_integers_expressions_and_no_edges() -> None:
    connection = duckdb.connect()
    [(small, large, whole)] = connection.execute(
        f"SELECT {bin_index_sql('1 + 1', [2.0, 3.5])}, {bin_index_sql('CAST(7 AS INTEGER)', [2.0, 3.5])}, "
        f"{bin_index_sql('42', [])}"
    ).fetchall()
    assert (small, large, whole) == (0, 2, 0)
    assert bin_counts([1, 2, 3, 4], [2.0, 3.5]) == [2, 1, 1]
    with pytest.raises(ValueError, match="finite"):
        bin_index_sql("v", [math.inf])
    with pytest.raises(ValueError, match="outside"):
        dense_counts({3: 1}, 3)


def test_build_reference_edges_for_awkward_features() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "constant": np.full(300, 5.0),
            "three": rng.choice([1.0, 2.0, 3.0], 300),
            "binary": (rng.random(300) < 0.05).astype(float),
            "with_nan": np.where(rng.random(300) < 0.2, np.nan, rng.normal(size=300)),
            "continuous": rng.normal(size=300),
        }
    )
    proba = rng.dirichlet([1.0, 1.0], size=300)
    reference = build_reference(frame, list(frame.columns), proba, ["no", "yes"])
    constant = reference.features["constant"]
    assert constant.edges[0] < 5.0 < constant.edges[1] and constant.proportions == [0.0, 1.0, 0.0]
    assert bin_counts(np.array([4.9, 5.0, 5.1]), constant.edges) == [1, 1, 1]
    assert reference.features["three"].edges == [1.5, 2.5]
    assert reference.features["binary"].edges == [0.5]
    assert reference.features["with_nan"].count == frame["with_nan"].notna().sum()
    continuous = reference.features["continuous"]
    assert continuous.bins == 10 and max(continuous.proportions) - min(continuous.proportions) < 0.01
    for hist in reference.features.values():
        assert hist.edges == sorted(set(hist.edges)) and sum(hist.proportions) == pytest.approx(1.0)
    assert sum(reference.prediction.values()) == pytest.approx(1.0)
    assert reference.score.edges == [0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
    assert reference.rows == 300


def test_reference_json_round_trip() -> None:
    reference = reference_for(iris_like(np.random.default_rng(0), 500))
    restored = Reference.from_json(json.loads(json.dumps(reference.to_json())))
    assert restored == reference
    assert isinstance(restored.features["f1"], Histogram)


def test_prediction_drift_against_reference_and_previous_partition() -> None:
    reference = {"setosa": 0.33, "versicolor": 0.34, "virginica": 0.33}
    same = distribution_drift(
        "prediction vs reference", reference, {"setosa": 33, "versicolor": 35, "virginica": 32}, 105
    )
    assert not same.drifted and same.n == 100
    collapsed = distribution_drift("prediction vs reference", reference, {"virginica": 900, "versicolor": 100}, 105)
    assert collapsed.drifted
    previous = {"setosa": 130, "versicolor": 140, "virginica": 130}
    new_label = distribution_drift("prediction vs previous", shares(previous), {**previous, "unknown": 200}, 400)
    assert new_label.drifted and new_label.n_reference == 400
    score = distribution_drift("score vs reference", [0.2, 0.3, 0.5], [20, 30, 50], 1_000)
    assert score.psi < 1e-5 and not score.drifted  # only the reference's smoothing separates them
    with pytest.raises(TypeError):
        distribution_drift("mixed", reference, [1, 2, 3], 105)


def test_feature_drift_rejects_unknown_features_and_wrong_bins() -> None:
    reference = reference_for(normal(np.random.default_rng(0), 1_000))
    with pytest.raises(KeyError, match="nope"):
        feature_drift(reference, {"nope": [1, 2]})
    with pytest.raises(ValueError, match="bins"):
        feature_drift(reference, {"f1": [1, 2]})


CLASSES = ["setosa", "versicolor", "virginica"]


def test_realized_quality_known_cases() -> None:
    one_hot = np.eye(3)
    perfect = realized_quality(CLASSES, one_hot, CLASSES)
    assert perfect["accuracy"] == 1.0 and perfect["log_loss"] == pytest.approx(0.0, abs=1e-12) and perfect["n"] == 3
    wrong = ["versicolor", "virginica", "setosa"]
    all_wrong = realized_quality(wrong, one_hot, CLASSES)
    assert all_wrong["accuracy"] == 0.0
    assert all_wrong["log_loss"] == pytest.approx(log_loss(wrong, one_hot, labels=CLASSES))
    unknown = realized_quality(["setosa", "daisy"], np.array([[0.9, 0.05, 0.05], [0.2, 0.3, 0.5]]), CLASSES)
    assert unknown["accuracy"] == 0.5 and unknown["unknown_labels"] == 1
    assert unknown["log_loss"] == pytest.approx(-math.log(0.9))
    nothing = realized_quality([], np.empty((0, 3)), CLASSES)
    assert nothing["n"] == 0 and math.isnan(nothing["accuracy"]) and math.isnan(nothing["log_loss"])


def test_realized_log_loss_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    proba = rng.dirichlet([2.0, 1.0, 1.0], size=200)
    labels = np.asarray(CLASSES)[rng.integers(0, 3, size=200)].tolist()
    quality = realized_quality(labels, proba, CLASSES)
    assert quality["log_loss"] == pytest.approx(log_loss(labels, proba, labels=CLASSES))
    assert quality["accuracy"] == pytest.approx(np.mean(np.asarray(CLASSES)[proba.argmax(axis=1)] == labels))


def test_drift_markdown_report() -> None:
    results = [
        DriftResult("sepal_length", psi=0.0312, threshold=0.2541, n=400, n_reference=105, drifted=False),
        DriftResult("petal|width", psi=0.8123, threshold=0.2541, n=400, n_reference=105, drifted=True),
    ]
    score = Histogram(edges=[0.5, 0.9], proportions=[0.1, 0.3, 0.6], count=105)
    markdown = drift_markdown(results, [40, 160, 200], score.edges, score, title="2026-03-01")
    assert "### 2026-03-01" in markdown
    assert "| sepal_length | 0.0312 | 0.2541 | 400 | ok |" in markdown
    assert "| petal\\|width | 0.8123 | 0.2541 | 400 | ⚠️ drift |" in markdown
    assert "(0.5, 0.9]" in markdown and "> 0.9" in markdown and "≤ 0.5" in markdown
    assert "50.0%" in markdown and "60.0%" in markdown and "█" in markdown
    assert "reference (n=105)" in markdown
    assert "reference" not in drift_markdown(results, [0, 0, 0], score.edges)
    with pytest.raises(ValueError, match="score counts"):
        drift_markdown(results, [1, 2], score.edges)


@BOTH_BACKENDS
def test_feature_bin_counts_of_a_stored_partition_follow_bin_counts(warehouse_location: str) -> None:
    """The warehouse bins a partition's stored features as `bin_counts` does: right-closed, values on an
    edge in the lower bin, NULL and NaN in no bin, infinities in the outer bins, other partitions ignored."""
    warehouse = Warehouse(warehouse_location, FeatureContract("record_id", "event_time", ("a", "b")))
    edges = {"a": [0.0, 1.0, 2.5], "b": [-1.0, 1e-300]}
    a = [-5.0, 0.0, 0.0, 0.5, 1.0, 2.5, 2.5000001, math.inf, -math.inf, math.nan, None]
    b = [-1.0, -1.0000001, 1e-300, 2e-300, 0.0, -0.0, 7.0, None, math.nan, 3.0, -2.0]
    rows = [("p", f"r{i}", x, y) for i, (x, y) in enumerate(zip(a, b, strict=True))] + [("q", "other", 0.5, 0.5)]
    with warehouse.session() as session, session.transaction():
        for key, record, x, y in rows:
            session.execute(
                "INSERT INTO inputs (partition_key, record_id, a, b) VALUES ($k, $r, CAST($a AS DOUBLE PRECISION), "
                "CAST($b AS DOUBLE PRECISION))",
                {"k": key, "r": record, "a": x, "b": y},
            )
    counts = warehouse.feature_bin_counts("p", edges)
    for name, values in (("a", a), ("b", b)):
        expected = bin_counts(np.array([math.nan if v is None else v for v in values]), edges[name])
        assert dense_counts(counts[name], len(edges[name]) + 1) == expected, name
    assert warehouse.feature_bin_counts("p", {}) == {}


def test_simulated_thresholds_are_kept_for_later_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A threshold simulated once is read back from the folder, exactly, by a process that has not simulated
    it (its in-memory cache empty); an unreadable file is simulated and written again."""
    from batch_predict import drift as drift_module

    shares, folder = (0.5, 0.3, 0.2), tmp_path / "thresholds"
    drift_module._null_quantile.cache_clear()
    plain = psi_threshold(shares, 137, 1000, floor=0.0)
    drift_module._null_quantile.cache_clear()
    with drift_module.threshold_cache(folder):
        assert psi_threshold(shares, 137, 1000, floor=0.0) == plain
    [kept] = list(folder.iterdir())
    assert float(kept.read_text()) == plain
    simulated: list[int] = []
    simulate = drift_module._simulated_quantile
    monkeypatch.setattr(drift_module, "_simulated_quantile", lambda *args: (simulated.append(1), simulate(*args))[1])
    drift_module._null_quantile.cache_clear()  # as a new process
    with drift_module.threshold_cache(folder):
        assert psi_threshold(shares, 137, 1000, floor=0.0) == plain
    assert simulated == []
    kept.write_text("not a number")
    drift_module._null_quantile.cache_clear()
    with drift_module.threshold_cache(folder):
        assert psi_threshold(shares, 137, 1000, floor=0.0) == plain
    assert simulated == [1] and float(kept.read_text()) == plain
    kept.write_text("-1.0")  # a value no simulation gives is not trusted either
    drift_module._null_quantile.cache_clear()
    with drift_module.threshold_cache(folder):
        assert psi_threshold(shares, 137, 1000, floor=0.0) == plain
    assert simulated == [1, 1]
    drift_module._null_quantile.cache_clear()


def test_the_threshold_folder_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entering the cache removes the temporary files a killed writer left (older than an hour, not a live
    writer's), and past the limit the oldest written thresholds, down to half; the newest stay and are read back."""
    import os
    import time

    from batch_predict import drift as drift_module

    folder = tmp_path / "thresholds"
    folder.mkdir()
    now = time.time()
    for i in range(12):
        path = folder / f"{i:02d}.txt"
        path.write_text("0.5")
        os.utime(path, (now - 1000 + i, now - 1000 + i))  # 00 written first, 11 last
    old_tmp, live_tmp = folder / "a.txt.1.tmp", folder / "b.txt.2.tmp"
    for path, age in ((old_tmp, 7200), (live_tmp, 60)):
        path.write_text("0.")
        os.utime(path, (now - age, now - age))
    monkeypatch.setattr(drift_module, "KEPT_THRESHOLDS", 10)
    monkeypatch.setattr(drift_module, "_PRUNED", set())
    shares = (0.5, 0.3, 0.2)
    drift_module._null_quantile.cache_clear()
    with drift_module.threshold_cache(folder):
        value = psi_threshold(shares, 211, 1000, floor=0.0)
    names = sorted(path.name for path in folder.iterdir())
    written = {f"{i:02d}.txt" for i in range(12)}
    new = [name for name in names if name not in written and name.endswith(".txt")]
    assert [name for name in names if name in written] == [f"{i:02d}.txt" for i in range(7, 12)]
    assert live_tmp.name in names and old_tmp.name not in names
    assert len(new) == 1 and float((folder / new[0]).read_text()) == value
    # Bounded once a process: entering the cache again lists the folder no more.
    for i in range(20):
        (folder / f"more{i:02d}.txt").write_text("0.5")
    with drift_module.threshold_cache(folder):
        pass
    assert len(list(folder.iterdir())) == len(names) + 20
    names = sorted(path.name for path in folder.iterdir())
    assert drift_module.prune_thresholds(folder) == len(names) - 1 - 5  # all but the live temporary and 5
    names = sorted(path.name for path in folder.iterdir())
    # Under the limit nothing is removed; a folder that is not there is nothing to bound.
    assert drift_module.prune_thresholds(folder) == 0 and len(list(folder.iterdir())) == len(names)
    assert drift_module.prune_thresholds(tmp_path / "missing") == 0
    drift_module._null_quantile.cache_clear()


def test_the_threshold_folder_keeps_the_thresholds_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A threshold read back counts as used: bounding the folder removes the least recently used, not the
    first written. A long process bounds it again after it has stored half the limit."""
    import os
    import time

    from batch_predict import drift as drift_module

    folder = tmp_path / "thresholds"
    shares = (0.5, 0.3, 0.2)
    monkeypatch.setattr(drift_module, "_PRUNED", set())
    monkeypatch.setattr(drift_module, "_WRITTEN", {})
    drift_module._null_quantile.cache_clear()
    with drift_module.threshold_cache(folder):
        psi_threshold(shares, 211, 1000, floor=0.0)
    (in_use,) = folder.iterdir()
    now = time.time()
    os.utime(in_use, (now - 5000, now - 5000))  # written long ago
    for i in range(6):
        other = folder / f"other{i}.txt"
        other.write_text("0.5")
        os.utime(other, (now - 1000 + i, now - 1000 + i))  # written after it
    drift_module._null_quantile.cache_clear()  # a later process: read from the folder
    with drift_module.threshold_cache(folder):
        psi_threshold(shares, 211, 1000, floor=0.0)
    assert drift_module.prune_thresholds(folder, keep=4) == 5
    assert sorted(path.name for path in folder.iterdir()) == sorted([in_use.name, "other5.txt"])
    # A file this process may read but not touch (another user's) is used all the same, not simulated again.
    drift_module._null_quantile.cache_clear()

    def refused(*_: object) -> None:
        raise PermissionError("not the owner")

    def simulated(*_: object) -> float:
        raise AssertionError("a stored threshold was simulated again")

    with monkeypatch.context() as patched:
        patched.setattr(os, "utime", refused)
        patched.setattr(drift_module, "_simulated_quantile", simulated)
        with drift_module.threshold_cache(folder):
            psi_threshold(shares, 211, 1000, floor=0.0)

    monkeypatch.setattr(drift_module, "KEPT_THRESHOLDS", 6)
    drift_module._null_quantile.cache_clear()
    with drift_module.threshold_cache(folder):
        for n in range(300, 320):  # 20 thresholds stored by one process
            psi_threshold(shares, n, 1000, floor=0.0)
    assert len(list(folder.iterdir())) <= 6
    drift_module._null_quantile.cache_clear()
