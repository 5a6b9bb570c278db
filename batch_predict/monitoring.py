"""Drift of one prediction partition against the model's training reference and the previous partition.

Counting happens in DuckDB (bins of the reference's edges), judging in `drift`: feature
drift per feature (PSI, Bonferroni over the features), and prediction drift three ways:
predicted classes against the reference, the score distribution against the reference,
and predicted classes against the previous partition predicted by the same model (Bonferroni over the
three). The results are written to `prediction_drift` and returned for the UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batch_predict.contract import probability_column
from batch_predict.drift import (
    DriftResult,
    Reference,
    dense_counts,
    distribution_drift,
    drift_markdown,
    feature_drift,
    shares,
    threshold_cache,
)
from batch_predict.models.types import LoadedModel
from batch_predict.warehouse import PredictionCounts, Warehouse

FEATURE = "feature"
PREDICTION = "prediction"
# The valid rows of the partitions `range_drift` counts in one scan at most (unless one partition has more).
ROWS_PER_SCAN = 1_000_000


@dataclass(frozen=True)
class DriftReport:
    features: list[DriftResult]
    predictions: list[DriftResult]
    markdown: str

    @property
    def features_drifted(self) -> list[str]:
        return [r.name for r in self.features if r.drifted]

    @property
    def predictions_drifted(self) -> list[str]:
        return [r.name for r in self.predictions if r.drifted]

    def metadata(self) -> dict[str, Any]:
        return {
            "features_drifted": ", ".join(self.features_drifted) or "none",
            "predictions_drifted": ", ".join(self.predictions_drifted) or "none",
            "max_feature_psi": round(max((r.psi for r in self.features), default=0.0), 4),
        }


def range_drift(
    warehouse: Warehouse,
    model: LoadedModel,
    reference: Reference,
    valid_rows: Mapping[str, int],
    alpha: float,
    floor: float,
) -> dict[str, DriftReport]:
    """Compare partitions `model` predicted (`valid_rows`: each one's valid inputs, in order) with the
    reference and each with its predecessor; record and return the results. Consecutive partitions of
    up to ROWS_PER_SCAN valid rows are counted in one scan and recorded in one transaction.

    Each partition's predecessor is the newest earlier partition whose last run used the model's
    version, as right after the partition was published: measure the partitions of a run this way
    only once their runs no longer change each other's predictions (not with carried records).
    """
    reports: dict[str, DriftReport] = {}
    # A scan reads its partitions' rows at once: consecutive partitions of up to ROWS_PER_SCAN rows.
    group: list[str] = []
    rows = 0
    for key, size in valid_rows.items():
        if group and rows + size > ROWS_PER_SCAN:
            reports |= _measure_together(warehouse, model, reference, group, alpha, floor)
            group, rows = [], 0
        group.append(key)
        rows += size
    return reports | _measure_together(warehouse, model, reference, group, alpha, floor)


def _measure_together(
    warehouse: Warehouse,
    model: LoadedModel,
    reference: Reference,
    keys: list[str],
    alpha: float,
    floor: float,
) -> dict[str, DriftReport]:
    """`range_drift` for partitions counted in one scan."""
    features = [name for name in warehouse.contract.features if name in reference.features]
    bins = warehouse.feature_bin_counts_range(keys, {name: reference.features[name].edges for name in features})
    columns = [probability_column(label) for label in model.metadata.classes]
    counts = warehouse.prediction_counts_range(keys, columns, reference.score.edges, model.metadata.version)
    with threshold_cache(warehouse.staging_root.with_name(warehouse.staging_root.name + ".thresholds")):
        reports = {key: _report(model, reference, key, bins[key], counts[key], alpha, floor) for key in keys}
    warehouse.record_drift_range(
        {
            key: (
                model.metadata.version,
                [{"kind": FEATURE, **r.to_json()} for r in report.features]
                + [{"kind": PREDICTION, **r.to_json()} for r in report.predictions],
            )
            for key, report in reports.items()
        }
    )
    return reports


def _report(
    model: LoadedModel,
    reference: Reference,
    partition_key: str,
    bins: dict[str, dict[int, int]],
    counts: PredictionCounts,
    alpha: float,
    floor: float,
) -> DriftReport:
    """One partition's drift judged from its counts."""
    feature_results = feature_drift(
        reference,
        {name: dense_counts(bins[name], reference.features[name].bins) for name in bins},
        alpha=alpha,
        floor=floor,
    )
    score_counts = dense_counts(counts.score_bins, reference.score.bins)
    previous, previous_classes = counts.previous_partition, counts.previous_classes
    tests = 3 if previous_classes else 2
    prediction_results = [
        distribution_drift(
            "predicted class vs reference", reference.prediction, counts.classes, reference.rows, alpha, floor, tests
        ),
        distribution_drift(
            "score vs reference", reference.score.proportions, score_counts, reference.score.count, alpha, floor, tests
        ),
    ]
    if previous_classes:
        prediction_results.append(
            distribution_drift(
                f"predicted class vs {previous}",
                shares(previous_classes),
                counts.classes,
                sum(previous_classes.values()),
                alpha,
                floor,
                tests,
            )
        )
    return DriftReport(
        features=feature_results,
        predictions=prediction_results,
        markdown=drift_markdown(
            [*feature_results, *prediction_results],
            score_counts,
            reference.score.edges,
            reference.score,
            title=f"Drift of partition {partition_key} ({model.metadata.name} {model.metadata.version})",
        ),
    )
