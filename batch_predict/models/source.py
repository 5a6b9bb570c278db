"""One face for wherever models come from: the folder registry's alias, or an MLflow URI.

The assets, checks, sensors and the CLI ask a `ModelSource` which version predicts a
partition, load that version (checked against the feature contract) and read its reference
statistics; they never ask which kind of registry is behind it.

`backfill_model` says which version predicts a partition: the alias's current version
(`current`), or the version it pointed at when the partition ended (`point_in_time`, from the
alias history: reproducible backfills).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from batch_predict.contract import FeatureContract
from batch_predict.drift import Reference
from batch_predict.models.checks import verify_model
from batch_predict.models.registry import Registry
from batch_predict.models.types import LoadedModel, ModelError, ModelMetadata
from batch_predict.settings import Settings

CURRENT = "current"
POINT_IN_TIME = "point_in_time"


@dataclass(frozen=True)
class ModelSource:
    registry_path: Path
    alias: str
    backfill_model: str = CURRENT
    model_uri: str = ""  # an MLflow `models:/...` URI; empty: the folder registry's alias

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelSource:
        return cls(settings.models, settings.model_alias, settings.backfill_model, settings.model_uri)

    @property
    def registry(self) -> Registry:
        return Registry(self.registry_path)

    @property
    def uses_mlflow(self) -> bool:
        return bool(self.model_uri)

    def current_version(self) -> str:
        """The version the alias (or the MLflow URI) points at now."""
        if self.uses_mlflow:
            from batch_predict.models.mlflow_source import resolve_mlflow_version

            return resolve_mlflow_version(self.model_uri)[1]
        return self.registry.resolve(self.alias)

    def state_token(self) -> str:
        """Changes whenever the alias (or the MLflow URI's resolution) moves: when it last changed, or to what."""
        if self.uses_mlflow:
            return self.current_version()
        history = self.registry.alias_history(self.alias)
        return str(history[-1]["at"]) if history else self.current_version()

    def version_for(self, partition_end: datetime, current: str) -> str:
        """The version that should predict a partition ending at `partition_end`."""
        if self.backfill_model != POINT_IN_TIME:
            return current
        version = self.registry.version_at(self.alias, partition_end)
        if version is None:
            raise ModelError(
                f"BATCH_PREDICT_BACKFILL_MODEL=point_in_time: alias {self.alias!r} pointed at no version at "
                f"{partition_end.isoformat()}, the end of this partition (see `batch-predict model list`). Use "
                "BATCH_PREDICT_BACKFILL_MODEL=current for partitions older than the alias's history."
            )
        return version

    def load(self, version: str, contract: FeatureContract) -> LoadedModel:
        """Load one version and check it against the feature contract."""
        if self.uses_mlflow:
            loaded = _load_mlflow(self.model_uri, version, contract.features)
        else:
            loaded = self.registry.load_version(version)
        verify_model(loaded, contract)
        return loaded

    def reference(self, version: str) -> Reference | None:
        """The training reference statistics of a version (folder registry only), if it has them."""
        if self.uses_mlflow:
            return None
        data = self.registry.reference(version)
        return Reference.from_json(data) if data is not None else None

    def metadata(self, version: str, contract: FeatureContract) -> ModelMetadata:
        """A version's metadata: read from the folder registry, or from the loaded MLflow model."""
        if self.uses_mlflow:
            return self.load(version, contract).metadata
        return self.registry.metadata(version)


class RunModels:
    """The models of one run: each version loaded once, with its reference statistics, for all its
    partitions; the current version resolved once, so a promotion mid-run does not mix models."""

    def __init__(self, source: ModelSource, contract: FeatureContract) -> None:
        self.source = source
        self.contract = contract
        self.current = source.current_version()
        self._loaded: dict[str, LoadedModel] = {}
        self._references: dict[str, Reference | None] = {}

    def for_partition(self, partition_end: datetime) -> LoadedModel:
        return self.load(self.source.version_for(partition_end, self.current))

    def load(self, version: str) -> LoadedModel:
        if version not in self._loaded:
            self._loaded[version] = self.source.load(version, self.contract)
        return self._loaded[version]

    def reference(self, version: str) -> Reference | None:
        if version not in self._references:
            self._references[version] = self.source.reference(version)
        return self._references[version]


# MLflow model versions are immutable, so a process loads each one once: sensors and the hourly
# checks ask about the current version often, and each download from a remote artifact store
# would take time and leave a temporary copy behind.
_MLFLOW_LOADED: dict[tuple[str, str, str, tuple[str, ...]], LoadedModel] = {}
_MLFLOW_KEEP = 4


def _load_mlflow(uri: str, version: str, features: tuple[str, ...]) -> LoadedModel:
    from batch_predict.models.mlflow_source import load_mlflow_model, parse_mlflow_uri

    name = parse_mlflow_uri(uri).name
    key = (os.environ.get("MLFLOW_TRACKING_URI", ""), name, version, tuple(features))
    if key not in _MLFLOW_LOADED:
        while len(_MLFLOW_LOADED) >= _MLFLOW_KEEP:
            _MLFLOW_LOADED.pop(next(iter(_MLFLOW_LOADED)))
        _MLFLOW_LOADED[key] = load_mlflow_model(f"models:/{name}/{version}", features)
    return _MLFLOW_LOADED[key]
