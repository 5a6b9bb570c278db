"""Dagster resources: thin configurable wrappers that hand the domain objects to assets."""

from pathlib import Path

import dagster as dg

from batch_predict.contract import FeatureContract
from batch_predict.registry import Registry
from batch_predict.settings import Settings
from batch_predict.warehouse import Source, Warehouse


class SourceResource(dg.ConfigurableResource):
    """Where source records land and which columns they carry (the feature contract)."""

    landing: str
    glob: str
    id_column: str
    time_column: str
    features: list[str]
    nonnegative_features: list[str]
    max_rejected_share: float

    def source(self) -> Source:
        return Source(root=Path(self.landing), glob=self.glob)

    def contract(self) -> FeatureContract:
        return FeatureContract(
            id_column=self.id_column,
            time_column=self.time_column,
            features=tuple(self.features),
            nonnegative=tuple(self.nonnegative_features),
        )


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file that holds inputs, rejected inputs, predictions and their stats."""

    path: str
    lock_timeout_seconds: float
    memory_limit: str
    threads: int

    def open(self, contract: FeatureContract) -> Warehouse:
        return Warehouse(Path(self.path), contract, self.lock_timeout_seconds, self.memory_limit, self.threads)


class ModelRegistryResource(dg.ConfigurableResource):
    """The model registry folder and the alias whose version runs predictions."""

    path: str
    alias: str
    max_age_days: float

    def registry(self) -> Registry:
        return Registry(Path(self.path))


class BatchResource(dg.ConfigurableResource):
    """Run-time knobs of the batch: chunk size, deadline, and how failed records are rerun."""

    chunk_size: int
    deadline_hours: float
    on_failure: str
    max_attempts: int


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
        ),
        "warehouse": WarehouseResource(
            path=str(settings.warehouse),
            lock_timeout_seconds=settings.lock_timeout_seconds,
            memory_limit=settings.duckdb_memory_limit,
            threads=settings.duckdb_threads,
        ),
        "model_registry": ModelRegistryResource(
            path=str(settings.models), alias=settings.model_alias, max_age_days=settings.model_max_age_days
        ),
        "batch": BatchResource(
            chunk_size=settings.chunk_size,
            deadline_hours=settings.deadline_hours,
            on_failure=settings.on_failure,
            max_attempts=settings.max_attempts,
        ),
    }
