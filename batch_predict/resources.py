"""Dagster resources: thin configurable wrappers that hand the domain objects to assets."""

import os
from pathlib import Path
from typing import Any

import dagster as dg

from batch_predict.contract import FeatureContract
from batch_predict.models.source import ModelSource
from batch_predict.partition_run import BatchSettings
from batch_predict.redaction import redact
from batch_predict.settings import FeatureRange, Settings
from batch_predict.warehouse import Source, Warehouse, shown_warehouse


class SourceResource(dg.ConfigurableResource):
    """Where source records land and which columns they carry (the feature contract)."""

    landing: str
    glob: str
    id_column: str
    time_column: str
    features: list[str]
    nonnegative_features: list[str]
    max_rejected_share: float
    # Plausibility ranges per feature (inclusive); a feature missing from a dict has no bound on that side.
    feature_minimums: dict[str, float]
    feature_maximums: dict[str, float]
    max_shrink_share: float = 0.5

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every asset and check of this code location uses this resource, so every run worker
        # records itself here: the sweep of dead runs (batch_predict.runs) needs its PID. With
        # the in-process executor (definitions.py) this is the run's own process.
        from batch_predict.runs import record_worker

        record_worker(context.instance, context.run.run_id if context.run else None)

    def source(self) -> Source:
        return Source(root=Path(self.landing), glob=self.glob)

    def contract(self) -> FeatureContract:
        return FeatureContract(
            id_column=self.id_column,
            time_column=self.time_column,
            features=tuple(self.features),
            nonnegative=tuple(self.nonnegative_features),
            ranges=tuple(
                FeatureRange(name, self.feature_minimums.get(name), self.feature_maximums.get(name))
                for name in self.features
                if name in self.feature_minimums or name in self.feature_maximums
            ),
        )


class WarehouseResource(dg.ConfigurableResource):
    """Where inputs, rejected inputs, predictions and their stats live: a DuckDB file or a PostgreSQL URL."""

    path: str
    lock_timeout_seconds: float
    memory_limit: str
    threads: int
    # Where runs stage their work on the machine that runs them ("" = the warehouse's default).
    staging: str = ""

    def open(self, contract: FeatureContract) -> Warehouse:
        return Warehouse(
            self.path,
            contract,
            self.lock_timeout_seconds,
            self.memory_limit,
            self.threads,
            staging_root=Path(self.staging) if self.staging else None,
        )


class ModelRegistryResource(dg.ConfigurableResource):
    """Where models come from: the folder registry's alias, or an MLflow URI; and the model-age limits.

    `backfill_model` says which version predicts a partition: the alias's current version
    (`current`) or the one it pointed at when the partition ended (`point_in_time`).
    """

    path: str
    alias: str
    max_age_days: float
    hard_max_age_days: float
    backfill_model: str = "current"
    model_uri: str = ""

    def models(self) -> ModelSource:
        return ModelSource(Path(self.path), self.alias, self.backfill_model, self.model_uri)


class BatchResource(dg.ConfigurableResource):
    """Run-time knobs of the batch: chunk size, deadline, how failed records are rerun, drift and failure thresholds."""

    chunk_size: int
    deadline_hours: float
    on_failure: str
    max_attempts: int
    drift_alpha: float = 0.01
    drift_psi_floor: float = 0.1
    # More than this share of a partition's worked records failing fails the run (1.0: never).
    max_failed_share: float = 0.1

    def settings(self) -> BatchSettings:
        return BatchSettings(
            chunk_size=self.chunk_size,
            on_failure=self.on_failure,
            max_attempts=self.max_attempts,
            drift_alpha=self.drift_alpha,
            drift_psi_floor=self.drift_psi_floor,
            max_failed_share=self.max_failed_share,
        )


class TrainingResource(dg.ConfigurableResource):
    """Where labels arrive, and how a candidate is trained and judged against the champion."""

    labels: str
    label_column: str
    train_days: int
    holdout_days: int
    promotion_metric: str
    promotion_margin: float

    def source(self) -> Source:
        return Source(root=Path(self.labels), glob="**/*.parquet")


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "source": SourceResource(
            landing=str(settings.landing),
            glob=settings.source_glob,
            id_column=settings.id_column,
            time_column=settings.time_column,
            features=list(settings.features),
            nonnegative_features=list(settings.nonnegative_features),
            max_rejected_share=settings.max_rejected_share,
            feature_minimums={r.feature: r.low for r in settings.feature_ranges if r.low is not None},
            feature_maximums={r.feature: r.high for r in settings.feature_ranges if r.high is not None},
            max_shrink_share=settings.max_shrink_share,
        ),
        "warehouse": WarehouseResource(
            path=_secret_free(settings.warehouse, "BATCH_PREDICT_WAREHOUSE"),
            staging=str(settings.staging),
            lock_timeout_seconds=settings.lock_timeout_seconds,
            memory_limit=settings.duckdb_memory_limit,
            threads=settings.duckdb_threads,
        ),
        "model_registry": ModelRegistryResource(
            path=str(settings.models),
            alias=settings.model_alias,
            max_age_days=settings.model_max_age_days,
            hard_max_age_days=settings.model_hard_max_age_days,
            backfill_model=settings.backfill_model,
            model_uri=settings.model_uri,
        ),
        "batch": BatchResource(
            chunk_size=settings.chunk_size,
            deadline_hours=settings.deadline_hours,
            on_failure=settings.on_failure,
            max_attempts=settings.max_attempts,
            drift_alpha=settings.drift_alpha,
            drift_psi_floor=settings.drift_psi_floor,
            max_failed_share=settings.max_failed_share,
        ),
        "training": TrainingResource(
            labels=str(settings.labels),
            label_column=settings.label_column,
            train_days=settings.train_days,
            holdout_days=settings.holdout_days,
            promotion_metric=settings.promotion_metric,
            promotion_margin=settings.promotion_margin,
        ),
    }


def _secret_free(value: str, name: str) -> Any:
    """The value, or, if it carries a password and comes from the environment, a reference to the
    variable: the UI shows resource config, and the run worker reads the variable itself."""
    if (redact(value) != value or shown_warehouse(value) != value) and os.environ.get(name, "").strip() == value:
        return dg.EnvVar(name)
    return value
