"""Load a classifier from an MLflow model registry instead of the local folder registry.

A model is named by a registry URI:

    models:/NAME@ALIAS     the version an alias points at (e.g. models:/churn@champion)
    models:/NAME/VERSION   one version number (e.g. models:/churn/3)
    models:/NAME/latest    the highest version number

Stages (models:/NAME/Production) are deprecated in MLflow and refused: use an alias.

Which store: `tracking_uri` if given, for both tracking and the registry, through an
`MlflowClient` of its own (no global MLflow state is changed); otherwise MLflow's own
settings (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI). MLflow 3 refuses its old file store
(./mlruns) by default; use a database such as `sqlite:////abs/path/mlflow.db` or a tracking
server. A `sqlite:///` URI naming a missing file is an error here, because MLflow would
otherwise create an empty store there and report every model as unknown.

How it loads: the resolved version's artifacts are downloaded with MLflow (a store on the
local disk is read in place, a remote one goes to a temporary directory) and
`LoadedModel.path` is that directory. A model with the `sklearn` flavour is loaded as the
fitted estimator, which must have `predict_proba` and `classes_`. Any other model is loaded
with the `python_function` flavour, and its `predict` must return class probabilities: a
DataFrame with one column per class (the columns name the classes), or a 2-D array when the
classes are listed in the model's metadata (`log_model(..., metadata={"classes": [...]})`).
A pyfunc model makes one smoke prediction on load, to check that and to learn the classes.

What it records: the registered name and version number, `format` "mlflow-sklearn" or
"mlflow-pyfunc", `trained_at` the source run's start time (else the version's creation
time), `registered_at` the version's creation time, `metrics` the source run's metrics,
`training_window` {"source": "models:/NAME/VERSION"}, and `checksum` a sha256 over the
downloaded directory (sorted relative paths and file contents), so the same version always
has the same checksum and a new version a different one. Features come from the input
signature, else the estimator's `feature_names_in_`, else the features asked for; a
signature or estimator that names other features than asked for is refused.

Failures that a retry cannot fix (MLflow not installed, a bad URI, an unknown model, alias
or version, a model that gives no probabilities) raise `ModelError` saying what to do.
Errors that may pass (a tracking server that is down or overloaded, a dropped connection)
are raised as they are, so that the run's step retries still apply.

Store URIs often carry credentials (`http://user:secret@host:5000`, `?token=...`), and MLflow
repeats them in its own errors: every error leaves this module with them masked (`redact`),
in its message and in the errors it was caused by.

Loading deserializes the model (skops, pickle or cloudpickle), which can run code: load
only models you trust. MLflow's MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false is respected.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import pandas as pd

from batch_predict.models.checks import require_classifier, smoke_frame
from batch_predict.models.types import LoadedModel, ModelError, ModelMetadata, sha256
from batch_predict.redaction import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

SCHEME = "models:/"
INSTALL = "pip install 'batch_predict[mlflow]'"
FORMAT_SKLEARN = "mlflow-sklearn"
FORMAT_PYFUNC = "mlflow-pyfunc"

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))$")
_STAGES = {"none", "staging", "production", "archived"}
# MLflow error codes of conditions that can pass: these are raised as they are, so step retries apply.
_TRANSIENT = {
    "INTERNAL_ERROR",
    "TEMPORARILY_UNAVAILABLE",
    "IO_ERROR",
    "SERVICE_UNDER_MAINTENANCE",
    "WORKSPACE_TEMPORARILY_UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "CANCELLED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "REQUEST_LIMIT_EXCEEDED",
    "COULD_NOT_ACQUIRE_LOCK",
}
_EXAMPLES = "models:/NAME@ALIAS (e.g. models:/churn@champion), models:/NAME/VERSION (e.g. models:/churn/3)"


@dataclass(frozen=True)
class ModelReference:
    """A parsed `models:/` URI: a registered model name and either an alias or a version ("latest" allowed)."""

    name: str
    alias: str | None = None
    version: str | None = None


def is_mlflow_uri(uri: str) -> bool:
    """True for an MLflow registry URI (`models:/...`), which this module loads instead of the folder registry."""
    return uri.strip().startswith(SCHEME)


def parse_mlflow_uri(uri: str) -> ModelReference:
    """Split a `models:/` URI, refusing forms this loader does not resolve, with the forms it does."""
    text = uri.strip()
    if "?" in text or "#" in text:
        raise ModelError(
            f"The MLflow model URI {redact(uri)!r} has a query string or fragment, which a models:/ URI does not "
            f"take. Write {_EXAMPLES}; credentials belong in the tracking URI or MLflow's environment variables."
        )
    match = _URI.match(text)
    if match is None:
        raise ModelError(
            f"Cannot read the MLflow model URI {redact(uri)!r}. Write {_EXAMPLES} or models:/NAME/latest; "
            "sub-paths and Databricks profile URIs (models://...) are not supported."
        )
    name, alias, version = match["name"], match["alias"], match["version"]
    if alias is not None:
        return ModelReference(name=name, alias=alias)
    if version.isascii() and version.isdigit() and int(version) > 0:
        return ModelReference(name=name, version=str(int(version)))
    if version == "latest":
        return ModelReference(name=name, version="latest")
    if version.lower() in _STAGES:
        raise ModelError(
            f"{redact(uri)!r} names the stage {version!r}; MLflow has deprecated stages. Point an alias at the "
            f"version (MlflowClient().set_registered_model_alias({name!r}, 'champion', VERSION)) and use "
            f"models:/{name}@champion."
        )
    raise ModelError(f"{redact(uri)!r} has version {version!r}, which is not a number. Write {_EXAMPLES}.")


def resolve_mlflow_version(uri: str, tracking_uri: str | None = None) -> tuple[str, str]:
    """The registered name and version number a URI points at now, without downloading the model.

    Cheap enough to ask on every monitoring tick: one or two registry look-ups.
    """
    with _credentials_masked():
        reference = parse_mlflow_uri(uri)
        client, where = _client(uri, tracking_uri)
        found = _model_version(client, reference, uri, where)
        return str(found.name), str(found.version)


def load_mlflow_model(uri: str, features: Sequence[str], tracking_uri: str | None = None) -> LoadedModel:
    """Resolve `uri` to one registered version, download it and load it as a classifier with its metadata."""
    with _credentials_masked():
        return _load_mlflow_model(uri, features, tracking_uri)


def _load_mlflow_model(uri: str, features: Sequence[str], tracking_uri: str | None) -> LoadedModel:
    reference = parse_mlflow_uri(uri)
    client, where = _client(uri, tracking_uri)
    found = _model_version(client, reference, uri, where)
    name, version = str(found.name), str(found.version)
    source = f"models:/{name}/{version}"
    path = _download(client, name, version, tracking_uri, source)
    estimator, feature_specs, model_format = _load_classifier(path, features, source)
    checksum = directory_sha256(path)
    run = _source_run(client, found.run_id)
    created = _iso(found.creation_timestamp)
    trained = _iso(run.info.start_time) if run is not None and run.info.start_time else created
    if not trained:
        raise ModelError(f"The registry {where} reports no creation time for {source}; it cannot be dated.")
    metadata = ModelMetadata(
        name=name,
        version=version,
        trained_at=trained,
        features=feature_specs,
        classes=[str(label) for label in estimator.classes_],
        checksum=checksum,
        metrics={key: float(value) for key, value in (run.data.metrics if run is not None else {}).items()},
        training_window={"source": source},
        format=model_format,
        registered_at=created,
    )
    return LoadedModel(metadata=metadata, estimator=estimator, path=path)


@contextmanager
def _credentials_masked() -> Iterator[None]:
    """Re-raise an error whose text, or that of an error it was caused by, holds a credential, with it masked.

    The masked error has no cause chain (Dagster records the whole chain with a step failure).
    A ModelError stays one; any other error becomes an MlflowException of the same code, so an
    error that may pass stays one that step retries apply to.
    """
    try:
        yield
    except Exception as error:
        if not _holds_credentials(error):
            raise
        if isinstance(error, ModelError):
            raise ModelError(redact(str(error))) from None
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, ErrorCode

        if isinstance(error, MlflowException):
            raise MlflowException(redact(error.message), error_code=ErrorCode.Value(error.error_code)) from None
        raise MlflowException(f"{type(error).__name__}: {redact(str(error))}", error_code=INTERNAL_ERROR) from None


def _holds_credentials(error: BaseException) -> bool:
    """Whether the error, or any error it was caused by or raised while handling, shows a credential."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if redact(str(current)) != str(current):
            return True
        pending += [current.__cause__, current.__context__]
    return False


def _load_classifier(path: Path, features: Sequence[str], source: str) -> tuple[Any, list[dict[str, str]], str]:
    """The model as a classifier, its features with dtypes, and its format: sklearn flavour first, else pyfunc."""
    model = _read_mlmodel(path, source)
    names, dtypes = _signature_features(model, features, source)
    if "sklearn" in model.flavors:
        estimator = _load_sklearn(path, source)
        names = names or _estimator_features(estimator, features, source)
        model_format = FORMAT_SKLEARN
    elif "python_function" in model.flavors:
        names = names or list(features)
        estimator = _load_pyfunc(path, model, names, dtypes, source)
        model_format = FORMAT_PYFUNC
    else:
        raise ModelError(
            f"{source} has the flavours {sorted(model.flavors)}, none of which loads here. Log the model "
            "with mlflow.sklearn.log_model, or as a pyfunc model whose predict returns class probabilities."
        )
    return estimator, [{"name": name, "dtype": dtypes.get(name, "float64")} for name in names], model_format


def directory_sha256(root: Path) -> str:
    """A sha256 over a directory: every file's relative path and contents, in sorted order.

    Independent of where the directory was downloaded to, so one version always hashes the same.
    """
    files = sorted((path.relative_to(root).as_posix(), path) for path in root.rglob("*") if path.is_file())
    digest = hashlib.sha256()
    for relative, path in files:
        digest.update(f"{relative}\0{sha256(path)}\n".encode())
    return digest.hexdigest()


class PyfuncClassifier:
    """An MLflow pyfunc model whose `predict` returns class probabilities, seen as a classifier.

    Gives `predict_proba` and `classes_`, so it scores like a scikit-learn estimator.
    """

    def __init__(self, model: Any, classes: Sequence[str]) -> None:
        self.model = model
        self.classes_ = np.asarray([str(label) for label in classes], dtype=object)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return _probabilities(self.model.predict(frame), [str(label) for label in self.classes_])


def _probabilities(output: Any, classes: list[str]) -> np.ndarray:
    """The model's output as an (n, classes) float array, with DataFrame columns put in class order."""
    if isinstance(output, pd.DataFrame):
        columns = {str(column): column for column in output.columns}
        if sorted(columns) != sorted(classes):
            raise ValueError(f"the model returned columns {list(columns)}, expected one per class {classes}")
        output = output[[columns[label] for label in classes]]
    proba = np.asarray(output, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ValueError(
            f"the model returned an array of shape {proba.shape}, expected (rows, {len(classes)}) class "
            "probabilities; a model that returns labels has no probabilities to record"
        )
    return proba


def _require_mlflow(uri: str) -> None:
    """MLflow is an optional extra: say how to install it rather than fail on an import."""
    try:
        import mlflow  # noqa: F401
    except ImportError as error:
        raise ModelError(
            f"Loading {redact(uri)} needs MLflow, which is not installed ({error}). Install it with `{INSTALL}`, "
            "or use the folder registry."
        ) from error


def _client(uri: str, tracking_uri: str | None) -> tuple[MlflowClient, str]:
    """A client of the given store (or MLflow's configured one), and the store's URI for messages."""
    _require_mlflow(uri)
    import mlflow
    from mlflow.exceptions import MlflowException

    registry_uri = tracking_uri or mlflow.get_registry_uri()
    for store in {tracking_uri or mlflow.get_tracking_uri(), registry_uri}:
        _require_database(store, configured=tracking_uri is not None)
    where = redact(registry_uri)
    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except ImportError as error:  # the tracking store is built here
        raise _missing_driver(where, error) from error
    except MlflowException as error:
        _raise_if_transient(error)
        raise ModelError(
            f"Cannot use the MLflow registry {where}: {redact(error.message.strip())} Set the tracking URI "
            "(MLFLOW_TRACKING_URI) to your MLflow server or database."
        ) from error
    except Exception as error:
        _raise_if_unreachable_database(where, error)
        raise
    return client, where


def _raise_if_unreachable_database(where: str, error: Exception) -> None:
    """A database store that refuses the connection may come back: an MlflowException (retried) naming it."""
    if type(error).__name__ != "OperationalError" or isinstance(error, ModelError):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    first = redact(str(getattr(error, "orig", None) or error).strip().splitlines()[0])
    raise MlflowException(
        f"Cannot reach the MLflow store {where} ({first}). Check that its database server is up; the step is retried.",
        error_code=TEMPORARILY_UNAVAILABLE,
    ) from None


def _missing_driver(where: str, error: ImportError) -> ModelError:
    """A database store needs its driver, which MLflow does not install."""
    return ModelError(
        f"The MLflow store {where} needs the Python package {error.name!r}, which is not installed: install the "
        "database driver for it (e.g. `pip install 'psycopg[binary]'` for PostgreSQL, pymysql for MySQL)."
    )


def _require_database(store: str, configured: bool) -> None:
    """Refuse a sqlite URI naming a missing file: MLflow would create an empty store there, hiding a typo."""
    if not store.startswith("sqlite:///"):
        return
    path = unquote(store[len("sqlite:///") :].split("?", 1)[0])
    if path in ("", ":memory:") or Path(path).is_file():
        return
    origin = "the tracking URI given" if configured else "MLFLOW_TRACKING_URI or MLflow's default when it is unset"
    raise ModelError(
        f"No MLflow database at {Path(path).absolute()} ({redact(store)}, from {origin}). Point the tracking URI at "
        "your MLflow store, e.g. sqlite:////abs/path/mlflow.db or http://mlflow-server:5000."
    )


def _raise_if_transient(error: MlflowException) -> None:
    if error.error_code in _TRANSIENT:
        raise error


def _model_version(client: MlflowClient, reference: ModelReference, uri: str, where: str) -> ModelVersion:
    """The version an alias, number or "latest" points at, with the registry's contents in the error if none."""
    from mlflow.exceptions import MlflowException

    registered = _registered_model(client, reference.name, uri, where)
    try:
        if reference.alias is not None:
            found = client.get_model_version_by_alias(reference.name, reference.alias)
        elif reference.version == "latest":
            found = _latest(registered.latest_versions or [], reference.name, where)
        else:
            found = client.get_model_version(reference.name, str(reference.version))
    except MlflowException as error:
        _raise_if_transient(error)
        raise ModelError(_missing_version(client, registered, reference, uri, where)) from error
    if found.status not in (None, "", "READY"):
        raise ModelError(
            f"{redact(uri)} resolves to version {found.version} of {found.name!r}, whose registration is "
            f"{found.status} ({found.status_message or 'no message'}). Register the model again, or point "
            "the URI at a version that is READY."
        )
    return found


def _registered_model(client: MlflowClient, name: str, uri: str, where: str) -> RegisteredModel:
    """The registered model, which also tells a missing model apart from a store that cannot be used."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except ImportError as error:  # the registry store is built on first use
        raise _missing_driver(where, error) from error
    except MlflowException as error:
        _raise_if_transient(error)
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise ModelError(
                f"Cannot use the MLflow registry {where} to resolve {redact(uri)}: {redact(error.message.strip())} Set the "
                "tracking URI (MLFLOW_TRACKING_URI) to your MLflow server or database."
            ) from error
        try:
            known = sorted(str(model.name) for model in client.search_registered_models(max_results=20))
        except MlflowException:
            known = []
        raise ModelError(
            f"The MLflow registry {where} has no registered model {name!r} (from {redact(uri)}). Registered models: "
            f"{', '.join(known) or 'none'}. Fix the name, or register the model "
            "(mlflow.register_model or log_model(..., registered_model_name=...))."
        ) from error
    except Exception as error:
        _raise_if_unreachable_database(where, error)
        raise


def _latest(versions: list[ModelVersion], name: str, where: str) -> ModelVersion:
    if not versions:
        raise ModelError(f"Registered model {name!r} in {where} has no versions yet; register one first.")
    return max(versions, key=lambda found: int(found.version))


def _missing_version(
    client: MlflowClient,
    registered: RegisteredModel,
    reference: ModelReference,
    uri: str,
    where: str,
) -> str:
    """Explain a failed look-up with the aliases or versions the model does have, so the fix is evident."""
    name = reference.name
    if reference.alias is not None:
        aliases = registered.aliases or {}
        listed = ", ".join(f"{alias} -> {version}" for alias, version in sorted(aliases.items())) or "none"
        return (
            f"Registered model {name!r} in {where} has no alias {reference.alias!r} (from {redact(uri)}). Its aliases: "
            f"{listed}. Set it with MlflowClient().set_registered_model_alias({name!r}, {reference.alias!r}, VERSION)."
        )
    versions = _version_numbers(client, name)
    return (
        f"Registered model {name!r} in {where} has no version {reference.version} (from {redact(uri)}). Its versions: "
        f"{', '.join(versions) or 'none'}. Point the URI at one of them, or at an alias (models:/{name}@ALIAS)."
    )


def _version_numbers(client: MlflowClient, name: str) -> list[str]:
    from mlflow.exceptions import MlflowException

    if "'" in name:
        return []
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    return [str(number) for number in sorted(int(version.version) for version in found)]


def _download(client: MlflowClient, name: str, version: str, tracking_uri: str | None, source: str) -> Path:
    """The version's files on the local disk: a local store is read in place, a remote one is downloaded."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        location = client.get_model_version_download_uri(name, version)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=location, tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
    except MlflowException as error:
        _raise_if_transient(error)
        raise ModelError(
            f"Cannot download the files of {source} ({redact(error.message.strip())}). Check that its artifacts still exist "
            "and that this machine can read the artifact store."
        ) from error
    path = Path(local)
    if not (path / "MLmodel").is_file():
        raise ModelError(
            f"{source} was downloaded to {path}, which has no MLmodel file: it is not an MLflow model. "
            "Register a model logged with mlflow.<flavour>.log_model."
        )
    return path


def _read_mlmodel(path: Path, source: str) -> Model:
    from mlflow.models import Model

    try:
        return Model.load(str(path / "MLmodel"))
    except Exception as error:  # a malformed YAML file or schema can raise anything
        raise ModelError(
            f"The MLmodel file of {source} ({path}) is unreadable: {type(error).__name__}: {error}"
        ) from error


def _source_run(client: MlflowClient, run_id: str | None) -> Run | None:
    """The run that logged the model, for its start time and metrics; None when it is unknown or deleted."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        _raise_if_transient(error)
        return None


def _signature_features(model: Model, features: Sequence[str], source: str) -> tuple[list[str], dict[str, str]]:
    """The input signature's column names and dtypes, refused unless they are the features asked for."""
    from mlflow.types import DataType

    signature = model.signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return [], {}
    specs = signature.inputs.inputs
    names = [str(spec.name) for spec in specs]
    _require_features(names, features, source, "input signature")
    dtypes = {
        str(spec.name): str(np.dtype(spec.type.to_numpy())) if isinstance(spec.type, DataType) else str(spec.type)
        for spec in specs
    }
    return names, dtypes


def _estimator_features(estimator: Any, features: Sequence[str], source: str) -> list[str]:
    names = [str(name) for name in getattr(estimator, "feature_names_in_", [])]
    if not names:
        return list(features)
    _require_features(names, features, source, "estimator (feature_names_in_)")
    return names


def _require_features(names: list[str], features: Sequence[str], source: str, origin: str) -> None:
    if names != list(features):
        raise ModelError(
            f"{source} expects the features {names} (from its {origin}), but this app gives {list(features)}. "
            "Register a model trained on these features, or set BATCH_PREDICT_FEATURES to the model's."
        )


def _load_sklearn(path: Path, source: str) -> Any:
    """The fitted scikit-learn estimator, which must be a classifier that gives class probabilities."""
    import mlflow.sklearn

    try:
        estimator = mlflow.sklearn.load_model(str(path))
    except Exception as error:  # deserializing can fail with almost any exception type
        raise ModelError(_load_failure(source, path, error)) from error
    return require_classifier(estimator, source)


def _load_pyfunc(path: Path, model: Model, features: list[str], dtypes: dict[str, str], source: str) -> Any:
    """The pyfunc model as a classifier; one smoke prediction checks its output and finds the classes."""
    import mlflow.pyfunc

    try:
        loaded = mlflow.pyfunc.load_model(str(path))
    except Exception as error:  # deserializing can fail with almost any exception type
        raise ModelError(_load_failure(source, path, error)) from error
    try:
        output = loaded.predict(smoke_frame(features, dtypes))
    except Exception as error:  # the model can raise anything
        raise ModelError(
            f"{source} failed a smoke prediction on one row of its features {features} "
            f"({type(error).__name__}: {error})."
        ) from error
    declared = (model.metadata or {}).get("classes")
    if declared:
        classes = [str(label) for label in declared]
    elif isinstance(output, pd.DataFrame):
        classes = [str(column) for column in output.columns]
    else:
        raise ModelError(
            f"{source} is a pyfunc model whose predict returns a {type(output).__name__}, which does not name "
            "the classes. Return a DataFrame with one probability column per class, or log the model with "
            "metadata={'classes': [...]}."
        )
    if len(classes) < 2:
        raise ModelError(
            f"{source} is a pyfunc model whose predict returns the single column {classes}: that is a label or a "
            "score, not the probabilities of two or more classes. Return one probability column per class."
        )
    try:
        _probabilities(output, classes)
    except ValueError as error:
        raise ModelError(f"{source} does not predict class probabilities: {error}.") from error
    return PyfuncClassifier(loaded, classes)


def _load_failure(source: str, path: Path, error: Exception) -> str:
    fix = "It may need other library versions than installed; register a model logged with this environment."
    if isinstance(error, ModuleNotFoundError):
        fix = (
            f"It needs the Python package {error.name!r}: install it (`{INSTALL}` brings skops, the format "
            "mlflow.sklearn saves in by default)."
        )
    return f"Cannot load {source} from {path} ({type(error).__name__}: {error}). {fix}"


def _iso(milliseconds: int | None) -> str:
    """An MLflow timestamp (ms since the epoch) as ISO 8601 in UTC, like datetime.now(UTC).isoformat()."""
    if not milliseconds:
        return ""
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat()
