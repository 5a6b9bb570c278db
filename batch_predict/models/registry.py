"""The model registry: a folder with one immutable subfolder per version and alias files.

    models/
      v1/model.joblib       the artifact: a fitted scikit-learn estimator (joblib), or
      v2/model.onnx         an ONNX classifier run with onnxruntime
      v1/metadata.json      version, format, trained_at, features and dtypes, classes, metrics,
                            training window, sha256 checksum of the artifact
      v1/reference.json     training reference statistics for drift monitoring (optional)
      aliases/champion.json {"version": "v1", "updated_at": ..., "history": [...]}

A version folder is written under a temporary name and renamed into place, so a
reader never sees half a version, and two registrations never take the same number.
Loading verifies the checksum before unpickling: joblib artifacts run code when
loaded, so only register artifacts you trust.

Versions (`v1`, `v2`, ...), aliases and registered names are checked against strict patterns,
and every path the registry reads or writes must resolve (symbolic links followed) inside its
folder: a name such as `../../elsewhere/v9`, typed or planted in an alias file, is refused
before anything is read, loaded or written.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from batch_predict.models.checks import require_classifier, smoke_check
from batch_predict.models.names import VERSION_PATTERN, check_name, check_version, valid_name
from batch_predict.models.types import ONNX, SKLEARN_JOBLIB, LoadedModel, ModelError, ModelMetadata, as_fitted, sha256

ARTIFACTS = {SKLEARN_JOBLIB: "model.joblib", ONNX: "model.onnx"}
METADATA = "metadata.json"
REFERENCE = "reference.json"


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and VERSION_PATTERN.fullmatch(p.name)]
        return sorted(found, key=lambda name: int(name[1:]))

    def _inside(self, path: Path, what: str) -> Path:
        """`path` resolved, symbolic links followed, if it stays inside the registry folder; else a ModelError."""
        root = self.root.resolve()
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            raise ModelError(
                f"The {what} {path} resolves to {resolved}, outside the model registry {root}; it is not used. "
                "Keep every version and alias inside BATCH_PREDICT_MODELS (no symbolic links out of it)."
            )
        return resolved

    def _version_file(self, version: str, name: str) -> Path:
        check_version(version)
        return self._inside(self.root / version / name, f"file of model {version}")

    def _alias_file(self, alias: str) -> Path:
        check_name(alias, "alias")
        return self._inside(self.root / "aliases" / f"{alias}.json", f"file of alias {alias!r}")

    def metadata(self, version: str) -> ModelMetadata:
        path = self._version_file(version, METADATA)
        try:
            data = json.loads(path.read_text())
            return ModelMetadata(**data)
        except FileNotFoundError:
            raise ModelError(
                f"Model version {version!r} has no metadata at {path}. Known versions: "
                f"{', '.join(self.versions()) or 'none'}. Register the model again with `batch-predict model train-demo`."
            ) from None
        except (json.JSONDecodeError, TypeError) as error:
            raise ModelError(
                f"The metadata file {path} is not valid registry metadata ({error}). "
                "Register the model again; versions are never edited in place."
            ) from None

    def resolve(self, alias: str) -> str:
        """The version an alias points at."""
        path = self._alias_file(alias)
        if not self.root.is_dir():
            raise ModelError(
                f"No model registry at {self.root}. Train and register a model with "
                "`batch-predict model train-demo`, or set BATCH_PREDICT_MODELS to your registry folder."
            )
        try:
            version = json.loads(path.read_text())["version"]
        except FileNotFoundError:
            raise ModelError(
                f"The model registry {self.root} has no alias {alias!r} ({path} is missing). "
                f"Versions: {', '.join(self.versions()) or 'none'}. Point it at a version with "
                "`batch-predict model train-demo`, or set BATCH_PREDICT_MODEL_ALIAS."
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ModelError(
                f"The alias file {path} is unreadable ({error}); set the alias again: "
                f"`batch-predict model promote VERSION --alias {alias}` (versions: {', '.join(self.versions()) or 'none'})."
            ) from None
        if not isinstance(version, str) or VERSION_PATTERN.fullmatch(version) is None:
            raise ModelError(
                f"The alias file {path} points {alias!r} at {version!r}, which is not a version of this registry "
                f"(v1, v2, ...); it is not loaded. Point the alias again: `batch-predict model promote VERSION "
                f"--alias {alias}`."
            )
        return version

    def load(self, alias: str) -> LoadedModel:
        """Load the version `alias` points at, verifying the artifact's checksum first."""
        version = self.resolve(alias)
        return self.load_version(version)

    def load_version(self, version: str) -> LoadedModel:
        """Load one version, verifying the artifact's checksum first."""
        metadata = self.metadata(version)
        if metadata.format not in ARTIFACTS:
            raise ModelError(
                f"Model {version} has format {metadata.format!r}, which this app cannot load "
                f"(it loads {', '.join(ARTIFACTS)}). Upgrade batch_predict, or register the model in a known format."
            )
        path = self._version_file(version, ARTIFACTS[metadata.format])
        if not path.is_file():
            raise ModelError(
                f"The artifact of model {version} is missing: {path}. Restore it, or register "
                "a new model and point the alias at it (`batch-predict model train-demo`)."
            )
        actual = sha256(path)
        if actual != metadata.checksum:
            raise ModelError(
                f"The artifact {path} is corrupt or was changed: its sha256 is {actual}, the registry "
                f"recorded {metadata.checksum}. Restore the original file, or register a new model."
            )
        if metadata.format == ONNX:
            from batch_predict.models.onnx import OnnxClassifier

            return LoadedModel(metadata, OnnxClassifier(path, metadata.feature_names, metadata.classes), path)
        estimator = _load_joblib(
            path, "It may need other library versions than installed; register a model trained with this environment."
        )
        return LoadedModel(metadata=metadata, estimator=estimator, path=path)

    def reference(self, version: str) -> dict[str, Any] | None:
        """The training reference statistics saved with a version, if it has them."""
        path = self._version_file(version, REFERENCE)
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as error:
            raise ModelError(f"The reference statistics {path} are unreadable ({error}).") from None
        return data

    def register(
        self,
        estimator: Any,
        *,
        name: str,
        trained_at: datetime,
        features: list[dict[str, str]],
        metrics: dict[str, float],
        training_window: dict[str, str | None],
        reference: dict[str, Any] | None = None,
    ) -> ModelMetadata:
        """Store a fitted scikit-learn estimator (joblib) as a new version, or return the version that holds it.

        Registering the same bytes twice returns the existing version, which keeps
        `make demo` idempotent.
        """
        return self._store(
            lambda path: joblib.dump(estimator, path),
            SKLEARN_JOBLIB,
            name=name,
            trained_at=trained_at,
            features=features,
            classes=[str(label) for label in estimator.classes_],
            metrics=metrics,
            training_window=training_window,
            reference=reference,
        )

    def _store(
        self,
        write: Callable[[Path], object],
        format: str,
        *,
        name: str,
        trained_at: datetime,
        features: list[dict[str, str]],
        classes: list[str],
        metrics: dict[str, float],
        training_window: dict[str, str | None],
        reference: dict[str, Any] | None,
    ) -> ModelMetadata:
        """Write a version folder under a temporary name and rename it into place under the next free number."""
        check_name(name, "registered name")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        artifact = staging / ARTIFACTS[format]
        write(artifact)
        checksum = sha256(artifact)
        for version in self.versions():
            existing = self.metadata(version)
            if existing.checksum == checksum and existing.name == name:
                shutil.rmtree(staging)
                return existing
        if reference is not None:
            (staging / REFERENCE).write_text(json.dumps(reference) + "\n")
        while True:
            version = f"v{max((int(v[1:]) for v in self.versions()), default=0) + 1}"
            metadata = ModelMetadata(
                name=name,
                version=version,
                trained_at=trained_at.astimezone(UTC).isoformat(),
                features=features,
                classes=classes,
                checksum=checksum,
                metrics=metrics,
                training_window=training_window,
                format=format,
                registered_at=datetime.now(UTC).isoformat(),
            )
            (staging / METADATA).write_text(json.dumps(asdict(metadata), indent=2) + "\n")
            try:
                # rename() of a directory fails if the target exists, so a concurrent
                # registration that took this number makes us try the next one.
                os.rename(staging, self.root / version)
                return metadata
            except OSError:
                if not (self.root / version).exists():
                    raise

    def set_alias(
        self,
        alias: str,
        version: str,
        by: str | None = None,
        at: datetime | None = None,
        expected: str | None = None,
    ) -> None:
        """Point `alias` at `version`, keeping the alias's history (who pointed where, when).

        Setting an alias to the version it already points at changes nothing. `at` records
        a promotion that took effect earlier (to import a model's history for point-in-time
        backfills); it may not go back before the alias's last change, so the history stays
        a timeline, nor before the version was trained. With `expected`, the alias moves only
        if it still points at that version (a promotion decided on a comparison with it).
        """
        path = self._alias_file(alias)
        metadata = self.metadata(version)  # refuses unknown versions
        if metadata.format in ARTIFACTS:  # an alias never points at an artifact outside the registry
            self._version_file(version, ARTIFACTS[metadata.format])
        at = at.astimezone(UTC) if at is not None else None
        # Checked before the aliases folder and its lock are made, so a refused promotion writes nothing.
        if at is not None and at > datetime.now(UTC):
            raise ModelError(f"A promotion cannot be recorded in the future ({at.isoformat()}).")
        if not path.exists():
            _refuse_before_training(metadata, at or datetime.now(UTC))
        aliases = path.parent
        lock_path = self._inside(aliases / ".lock", "alias lock file")
        aliases.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two promotions never lose each other's history
            current = json.loads(path.read_text()) if path.exists() else {"history": []}
            if expected is not None and current.get("version") != expected:
                raise ModelError(
                    f"Alias {alias!r} moved to {current.get('version')} while {version} was compared with "
                    f"{expected}; it is left as it is. Compare again."
                )
            if current.get("version") == version:
                return
            when = at or datetime.now(UTC)  # taken under the lock, so the history stays in time order
            history = current.get("history", [])
            if history and when < datetime.fromisoformat(history[-1]["at"]):
                raise ModelError(
                    f"Alias {alias!r} last changed at {history[-1]['at']}; a promotion cannot be recorded "
                    f"before that ({when.isoformat()})."
                )
            _refuse_before_training(metadata, when)
            entry = {
                "version": version,
                "at": when.isoformat(),
                "by": by or _user(),
                "previous": current.get("version"),
            }
            payload = {"version": version, "updated_at": when.isoformat(), "history": [*history, entry]}
            handle, temporary = tempfile.mkstemp(dir=aliases, suffix=".tmp")
            with os.fdopen(handle, "w") as stream:
                json.dump(payload, stream, indent=2)
            os.replace(temporary, path)

    def version_at(self, alias: str, moment: datetime) -> str | None:
        """The version `alias` pointed at, at `moment` (None if it pointed nowhere yet)."""
        found = None
        for entry in self.alias_history(alias):
            if datetime.fromisoformat(str(entry["at"])) > moment:
                break
            found = str(entry["version"])
        return found

    def aliases(self) -> dict[str, str]:
        """Every alias and the version it points at."""
        folder = self.root / "aliases"
        if not folder.is_dir():
            return {}
        # A file whose name is no valid alias cannot be set or read through the registry: not an alias.
        return {path.stem: self.resolve(path.stem) for path in sorted(folder.glob("*.json")) if valid_name(path.stem)}

    def alias_history(self, alias: str) -> list[dict[str, str | None]]:
        path = self._alias_file(alias)
        if not path.exists():
            raise ModelError(f"The model registry {self.root} has no alias {alias!r}.")
        history: list[dict[str, str | None]] = json.loads(path.read_text()).get("history", [])
        return history

    def register_file(
        self,
        artifact: Path,
        *,
        name: str,
        trained_at: datetime,
        features: list[str] | None = None,
        classes: list[str] | None = None,
        reference_data: pd.DataFrame | None = None,
    ) -> ModelMetadata:
        """Validate an artifact (it loads, it fits the features, a smoke prediction works) and register it.

        A `.onnx` file is an ONNX classifier: it needs `features` (and `classes` when its
        labels are numbers), as ONNX does not carry them. Any other file is a joblib
        scikit-learn estimator, whose features and classes come from `feature_names_in_`
        and `classes_` unless given; given ones must agree with what the estimator says.
        With `reference_data` (training features), the model's reference statistics for
        drift monitoring are computed from it and saved with the version.
        """
        check_name(name, "registered name")
        if artifact.suffix.lower() == ".onnx":
            from batch_predict.models.onnx import OnnxClassifier

            if not features:
                raise ModelError(
                    f"{artifact} is an ONNX model, which does not name its features: give --features a,b,c "
                    "in the order of the model's input columns."
                )
            onnx_model = OnnxClassifier(artifact, features, classes)
            labels = [str(label) for label in onnx_model.classes_]
            smoke_check(onnx_model, features, labels, f"{artifact} (not registered)")
            reference = _reference(onnx_model, reference_data, features, labels)
            return self._store(
                lambda path: shutil.copyfile(artifact, path),
                ONNX,
                name=name,
                trained_at=trained_at,
                features=[{"name": feature, "dtype": "float64"} for feature in features],
                classes=labels,
                metrics={},
                training_window={},
                reference=reference,
            )
        estimator = _load_joblib(
            artifact, "Save a fitted scikit-learn estimator with joblib.dump (or an ONNX model as .onnx)."
        )
        known = [str(label) for label in estimator.classes_]
        if classes is not None and classes != known:
            raise ModelError(f"--classes {classes} do not match the model's classes {known}.")
        names = [str(n) for n in getattr(estimator, "feature_names_in_", [])] or features
        if not names:
            raise ModelError(
                f"{artifact} does not name its features (it was fitted without column names): give --features a,b,c."
            )
        if features is not None and features != names:
            raise ModelError(f"--features {features} do not match the model's features {names}.")
        smoke_check(estimator, names, known, f"{artifact} (not registered)")
        reference = _reference(estimator, reference_data, names, known)
        return self.register(
            estimator,
            name=name,
            trained_at=trained_at,
            features=[{"name": feature, "dtype": "float64"} for feature in names],
            metrics={},
            training_window={},
            reference=reference,
        )


def _refuse_before_training(metadata: ModelMetadata, when: datetime) -> None:
    if when < datetime.fromisoformat(metadata.trained_at):
        raise ModelError(
            f"{metadata.version} was trained at {metadata.trained_at}; it cannot have been promoted before that "
            f"({when.isoformat()})."
        )


def _reference(
    estimator: Any, data: pd.DataFrame | None, features: list[str], classes: list[str]
) -> dict[str, Any] | None:
    """Reference statistics of a model on its training features, or None without them."""
    if data is None:
        return None
    from batch_predict.drift import build_reference

    missing = [name for name in features if name not in data.columns]
    if missing:
        raise ModelError(f"The reference data has no column(s) {', '.join(missing)}; it needs the model's features.")
    frame = data[features].astype("float64").dropna()
    if frame.empty:
        raise ModelError("The reference data has no complete rows of the model's features.")
    proba = np.asarray(estimator.predict_proba(as_fitted(estimator, frame)), dtype=np.float64)
    return build_reference(frame, features, proba, classes).to_json()


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in this environment
        return "unknown"


def _load_joblib(path: Path, fix: str) -> Any:
    """Unpickle a joblib artifact and make sure it is a fitted classifier with class probabilities."""
    try:
        estimator = joblib.load(path)
    except Exception as error:  # unpickling can fail with almost any exception type
        raise ModelError(f"Cannot load the artifact {path} ({type(error).__name__}: {error}). {fix}") from error
    return require_classifier(estimator, f"The artifact {path}")
