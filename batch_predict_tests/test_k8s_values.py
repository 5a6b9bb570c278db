"""The Kubernetes deployment's Helm values: they load, use only keys Dagster's chart documents, with the
types its schema gives, and set only settings the app reads, with values it accepts.

The chart cannot be fetched in CI, so the documented keys come from deploy/k8s/chart-schema-keys.json,
a key list derived once from the chart's values.schema.json (its `_source` says which and how).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from batch_predict.settings import DEFAULTS, load_settings

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "k8s" / "values.yaml"
KEYS = ROOT / "deploy" / "k8s" / "chart-schema-keys.json"
DOCKERFILE = ROOT / "deploy" / "k8s" / "Dockerfile"
INSTANCE = ROOT / "dagster_home" / "dagster.yaml"

USER_DEPLOYMENT = ("dagster-user-deployments", "deployments", 0)
K8S_LAUNCHER = ("runLauncher", "config", "k8sRunLauncher")
# Variables the values may set that are not the app's settings: read by libraries the app uses.
OTHER_ENV = {"MLFLOW_TRACKING_URI", "OMP_NUM_THREADS"}
# Settings that name folders every code server and run pod must see at the same path.
SHARED_PATHS = ("BATCH_PREDICT_LANDING", "BATCH_PREDICT_LABELS", "BATCH_PREDICT_MODELS")


@dataclass(frozen=True)
class ChartKeys:
    """The chart's documented value paths ('a.b', 'a.list[]') with their JSON types and enums."""

    types: dict[str, set[str]]
    enums: dict[str, list[Any]]
    free_form: set[str]
    unexpanded: set[str]


def load_keys(path: Path = KEYS) -> ChartKeys:
    raw = json.loads(path.read_text())
    return ChartKeys(
        types={key: set(types.split("|")) for key, types in raw["keys"].items()},
        enums=raw["enums"],
        free_form=set(raw["free_form"]),
        unexpanded=set(raw["unexpanded"]),
    )


def load_values(path: Path = VALUES) -> dict[str, Any]:
    values = yaml.safe_load(path.read_text())
    assert isinstance(values, dict), f"{path} is not a YAML mapping"
    return values


def json_type(value: object) -> str:
    """The JSON Schema type of a YAML value (a bool is not an integer)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def problems(values: dict[str, Any], keys: ChartKeys) -> list[str]:
    """Every key path in `values` the chart does not document, and every value of the wrong type or enum."""
    found: list[str] = []
    for key, value in values.items():
        _check(value, str(key), keys, found)
    return found


def _check(value: object, path: str, keys: ChartKeys, found: list[str]) -> None:
    if path in keys.unexpanded:
        found.append(f"{path}: a chart section deploy/k8s/chart-schema-keys.json does not expand; derive its keys")
        return
    allowed = keys.types.get(path)
    if allowed is None:
        found.append(f"{path}: not a key the chart documents")
        return
    kind = json_type(value)
    if kind not in allowed and not (kind == "integer" and "number" in allowed):
        found.append(f"{path}: {kind} {value!r}, but the chart's schema allows {'|'.join(sorted(allowed))}")
        return
    if path in keys.enums and value not in keys.enums[path]:
        found.append(f"{path}: {value!r} is not one of {keys.enums[path]}")
        return
    if path in keys.free_form:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            _check(child, f"{path}.{key}", keys, found)
    elif isinstance(value, list):
        for item in value:
            _check(item, f"{path}[]", keys, found)


def dig(values: dict[str, Any], *path: str | int) -> Any:
    node: Any = values
    for step in path:
        node = node[step]
    return node


def key_path(*steps: str | int) -> str:
    """The key list's name for a place in the values: dotted keys, '[]' for a list's items."""
    path = ""
    for step in steps:
        path = f"{path}[]" if isinstance(step, int) else f"{path}.{step}" if path else step
    return path


def env_entries(values: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, name, entry) for every environment variable the values set, in any `env` list or map."""

    def walk(node: object, path: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        if isinstance(node, dict):
            for key, child in node.items():
                where = f"{path}.{key}" if path else str(key)
                if key == "env" and isinstance(child, list):
                    yield from ((where, str(entry.get("name")), entry) for entry in child)
                elif key == "env" and isinstance(child, dict):
                    yield from ((where, str(name), {"name": name, "value": text}) for name, text in child.items())
                elif key == "envVars" and isinstance(child, list):
                    yield from ((where, str(entry).split("=", 1)[0], {"name": str(entry)}) for entry in child)
                else:
                    yield from walk(child, where)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, f"{path}[]")

    return walk(values, "")


def env_problems(values: dict[str, Any]) -> list[str]:
    """Variables the app does not read, and names set twice."""
    found, seen = [], set()
    for where, name, _ in env_entries(values):
        if name in seen:
            found.append(f"{where}: {name} is set twice")
        seen.add(name)
        if name.startswith("BATCH_PREDICT_") and name not in DEFAULTS:
            found.append(f"{where}: {name} is not a setting batch_predict reads (batch_predict/settings.py DEFAULTS)")
        elif not name.startswith("BATCH_PREDICT_") and name not in OTHER_ENV:
            found.append(f"{where}: {name} is neither a batch_predict setting nor one of {sorted(OTHER_ENV)}")
    return found


def literal_env(values: dict[str, Any]) -> dict[str, str]:
    return {name: str(entry["value"]) for _, name, entry in env_entries(values) if "value" in entry}


def test_values_load_as_yaml() -> None:
    values = load_values()
    assert {"dagster-user-deployments", "runLauncher", "dagsterDaemon", "postgresql"} <= set(values)


def test_every_key_is_one_the_chart_documents_with_the_right_type() -> None:
    assert problems(load_values(), load_keys()) == []


@pytest.mark.parametrize(
    ("parent", "key", "misspelled"),
    [
        (K8S_LAUNCHER, "volumeMounts", "volumeMount"),
        (USER_DEPLOYMENT, "includeConfigInLaunchedRuns", "includeConfigInLaunchedRun"),
        (("postgresql",), "postgresqlScheme", "postgresqlSchema"),
        ((), "dagsterDaemon", "dagsterDeamon"),
    ],
)
def test_a_misspelled_key_is_reported(parent: tuple[str | int, ...], key: str, misspelled: str) -> None:
    values = copy.deepcopy(load_values())
    node = dig(values, *parent)
    node[misspelled] = node.pop(key)
    assert problems(values, load_keys()) == [f"{key_path(*parent, misspelled)}: not a key the chart documents"]


@pytest.mark.parametrize(
    ("parent", "key", "value", "reported"),
    [
        (("concurrency", "runs"), "maxConcurrentRuns", "8", "string '8', but the chart's schema allows integer|null"),
        (("dagsterDaemon", "runMonitoring"), "enabled", "true", "string 'true', but the chart's schema allows boolean"),
        (("runLauncher",), "type", "K8sRunLaucher", "'K8sRunLaucher' is not one of"),
        ((), "ingress", {"enabled": True}, "a chart section deploy/k8s/chart-schema-keys.json does not expand"),
    ],
)
def test_a_wrong_value_or_an_unexpanded_section_is_reported(
    parent: tuple[str, ...], key: str, value: object, reported: str
) -> None:
    values = copy.deepcopy(load_values())
    dig(values, *parent)[key] = value
    found = problems(values, load_keys())
    assert len(found) == 1 and found[0].startswith(f"{key_path(*parent, key)}: {reported}"), found


def test_a_key_under_a_kubernetes_object_is_passed_through() -> None:
    """Volumes, resources and pod specs are Kubernetes objects the chart does not describe: any key passes."""
    values = copy.deepcopy(load_values())
    dig(values, *K8S_LAUNCHER, "volumes")[0]["emptyDir"]["medium"] = "Memory"
    dig(values, *K8S_LAUNCHER, "runK8sConfig", "podSpecConfig")["priorityClassName"] = "batch"
    assert problems(values, load_keys()) == []


def test_the_key_list_is_for_the_chart_of_the_pinned_dagster() -> None:
    """The chart and dagster are released together; when dagster moves, re-derive the key list."""
    source = json.loads(KEYS.read_text())["_source"]
    assert source["chart_version"] == importlib.metadata.version("dagster")
    assert "values.schema.json" in source["schema"] and re.search(r"\b[0-9a-f]{40}\b", source["schema"])


def test_every_environment_variable_is_a_setting_the_app_reads() -> None:
    assert env_problems(load_values()) == []


def test_a_misspelled_setting_is_reported() -> None:
    values = copy.deepcopy(load_values())
    dig(values, *USER_DEPLOYMENT, "env").append({"name": "BATCH_PREDICT_LANDNG", "value": "/mnt/x"})
    dig(values, *K8S_LAUNCHER)["envVars"] = ["BATCH_PREDICT_CADENCE=hourly"]
    found = env_problems(values)
    assert any("BATCH_PREDICT_LANDNG is not a setting batch_predict reads" in line for line in found), found
    assert any("BATCH_PREDICT_CADENCE is set twice" in line for line in found), found


def test_the_settings_given_are_values_the_app_accepts() -> None:
    given = literal_env(load_values())
    settings = load_settings(given)
    for name in SHARED_PATHS:
        assert Path(given[name]).is_absolute(), f"{name} must be the same absolute path in every pod"
    assert str(settings.landing) == given["BATCH_PREDICT_LANDING"]


def test_a_backfill_of_a_year_of_days_fills_the_run_pods() -> None:
    """The ranges are sized to the run limit: a year of days makes as many runs as run pods may run at once."""
    values = load_values()
    settings = load_settings(literal_env(values))
    assert settings.cadence == "daily"
    per_run = settings.max_partitions_per_run
    assert isinstance(per_run, int)
    assert -(-365 // per_run) == values["concurrency"]["runs"]["maxConcurrentRuns"]


def test_the_warehouse_url_comes_from_a_secret() -> None:
    entries = {name: entry for _, name, entry in env_entries(load_values())}
    assert "value" not in entries["BATCH_PREDICT_WAREHOUSE"]
    assert entries["BATCH_PREDICT_WAREHOUSE"]["valueFrom"]["secretKeyRef"]["name"]


def test_shared_folders_are_on_the_shared_volume_and_staging_on_the_run_pod() -> None:
    """Landing, labels and models sit on a ReadWriteMany claim mounted in the code server and its run pods;
    staging is an emptyDir of the run pod, at the staging folder under the image's working directory."""
    values = load_values()
    deployment = dig(values, *USER_DEPLOYMENT)
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    claims = {volume["name"] for volume in deployment["volumes"] if "persistentVolumeClaim" in volume}
    shared_mounts = [mount["mountPath"] for mount in deployment["volumeMounts"] if mount["name"] in claims]
    given = literal_env(values)
    for name in SHARED_PATHS:
        assert any(given[name].startswith(mount.rstrip("/") + "/") for mount in shared_mounts), name

    launcher = dig(values, *K8S_LAUNCHER)
    local = {volume["name"] for volume in launcher["volumes"] if "emptyDir" in volume}
    staging = [mount["mountPath"] for mount in launcher["volumeMounts"] if mount["name"] in local]
    workdir = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert staging == [f"{workdir[-1]}/data/staging"]
    grpc_args = deployment["dagsterApiGrpcArgs"]
    assert grpc_args[grpc_args.index("--working-directory") + 1] == workdir[-1]
    assert grpc_args[grpc_args.index("--module-name") + 1] == "batch_predict.definitions"


def test_run_retries_and_monitoring_match_the_local_instance() -> None:
    """Same retry and monitoring policy as dagster_home/dagster.yaml; only the start timeout is longer
    (a run pod may wait for a node and an image pull)."""
    instance = yaml.safe_load(INSTANCE.read_text())
    daemon = load_values()["dagsterDaemon"]
    retries, monitoring = daemon["runRetries"], daemon["runMonitoring"]
    assert {
        "enabled": retries["enabled"],
        "max_retries": retries["maxRetries"],
        "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
    } == instance["run_retries"]
    local = instance["run_monitoring"]
    assert monitoring["enabled"] is local["enabled"] is True
    assert monitoring["cancelTimeoutSeconds"] == local["cancel_timeout_seconds"]
    assert monitoring["maxRuntimeSeconds"] == local["max_runtime_seconds"]
    assert monitoring["pollIntervalSeconds"] == local["poll_interval_seconds"]
    assert monitoring["startTimeoutSeconds"] >= local["start_timeout_seconds"]


def test_the_run_limit_is_set_once_on_a_queued_coordinator() -> None:
    """The chart asks for the limit in concurrency.runs or in the queued coordinator's config, not both."""
    values = load_values()
    coordinator = dig(values, "dagsterDaemon", "runCoordinator")
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    assert "maxConcurrentRuns" not in coordinator["config"]["queuedRunCoordinator"]
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] >= 1
