"""Drift of one prediction partition against the model's training reference and the previous partition.

Counting happens in DuckDB (bins of the reference's edges), judging in `drift`: feature
drift per feature (PSI, Bonferroni over the features), and prediction drift three ways:
predicted classes against the reference, the score distribution against the reference,
and predicted classes against the previous partition predicted by the same model (Bonferroni over the
three). The results are written to `prediction_drift` and returned for the UI.
"""

from __future__ import annotations

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
)
from batch_predict.models.types import LoadedModel
from batch_predict.warehouse import Warehouse

FEATURE = "feature"
PREDICTION = "prediction"


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


def partition_drift(
    warehouse: Warehouse,
    model: LoadedModel,
    reference: Reference,
    partition_key: str,
    alpha: float,
    floor: float,
) -> DriftReport:
    """Compare one partition with the reference (and its predecessor), record and return the results."""
    features = [name for name in warehouse.contract.features if name in reference.features]
    bins = warehouse.feature_bin_counts(partition_key, {name: reference.features[name].edges for name in features})
    feature_results = feature_drift(
        reference,
        {name: dense_counts(bins[name], reference.features[name].bins) for name in features},
        alpha=alpha,
        floor=floor,
    )
    columns = [probability_column(label) for label in model.metadata.classes]
    counts = warehouse.prediction_counts(partition_key, columns, reference.score.edges, model.metadata.version)
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
    report = DriftReport(
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
    warehouse.record_drift(
        partition_key,
        model.metadata.version,
        [{"kind": FEATURE, **r.to_json()} for r in feature_results]
        + [{"kind": PREDICTION, **r.to_json()} for r in prediction_results],
    )
    return report
