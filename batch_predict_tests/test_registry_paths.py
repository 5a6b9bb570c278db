"""Hostile versions, aliases, names and planted files never take the registry outside BATCH_PREDICT_MODELS.

The registry lives three folders deep in the test's temp dir, and next to it, outside, sits a
complete version folder `outside/v9` whose artifact is a valid checksum-matching pickle that
makes a folder when it is unpickled: reaching it by any path would show as that folder.
Every refused command must exit 2 with a one-line message and leave the whole temp dir as it was.
"""

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import joblib
import pytest

from batch_predict.cli import main
from batch_predict.demo import train_demo_model
from batch_predict.models.registry import ARTIFACTS, METADATA, Registry
from batch_predict.models.types import SKLEARN_JOBLIB, ModelError, sha256
from batch_predict.settings import Settings, SettingsError, load_settings
from batch_predict_tests.conftest import run_model_job

ARTIFACT = ARTIFACTS[SKLEARN_JOBLIB]
NAME_RULE = r"1 to 128 ASCII letters, digits, '\.', '_' or '-'"


class Trap:
    """Unpickling this makes the folder `marker`: proof that an artifact was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return os.mkdir, (str(self.marker),)


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.models = tmp_path / "deep" / "er" / "models"
        self.outside = tmp_path / "outside"
        self.marker = tmp_path / "unpickled"
        self.registry = Registry(self.models)
        train_demo_model(self.registry, "champion")  # v1, alias champion
        planted = self.outside / "v9"
        planted.mkdir(parents=True)
        joblib.dump(Trap(self.marker), planted / ARTIFACT)
        metadata = json.loads((self.models / "v1" / METADATA).read_text())
        metadata.update(version="v9", checksum=sha256(planted / ARTIFACT))
        (planted / METADATA).write_text(json.dumps(metadata))
        (self.outside / "champion.json").write_text(json.dumps({"version": "v1", "history": []}))

    def snapshot(self) -> dict[str, bytes | None]:
        """Every path under the temp dir (the registry and around it), with file contents; symlinks as their target."""
        found: dict[str, bytes | None] = {}
        for path in sorted(self.tmp.rglob("*")):
            key = str(path.relative_to(self.tmp))
            if path.is_symlink():
                found[key] = os.readlink(path).encode()
            elif path.is_file():
                found[key] = path.read_bytes()
            else:
                found[key] = None
        return found


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    made = World(tmp_path)
    monkeypatch.setenv("BATCH_PREDICT_MODELS", str(made.models))
    monkeypatch.chdir(tmp_path)
    return made


def refused(world: World, argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> None:
    """`batch-predict ARGV` exits 2 with one line matching the pattern `message`, and changes nothing anywhere."""
    capsys.readouterr()
    before = world.snapshot()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("batch-predict: "), err
    assert re.search(message, err), err
    assert world.snapshot() == before
    assert not world.marker.exists()


# Typed values: parent steps, absolute paths, separators, empty, and one that names the planted version.
HOSTILE = ["..", "../../x", "../../../outside/v9", "/etc/passwd", "a/b", "a\\b", "", "v1/../v1", ".hidden", "v1\n"]


@pytest.mark.parametrize("version", [*HOSTILE, "OUTSIDE"])
def test_show_and_promote_refuse_a_version_that_is_no_version_name(
    world: World, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    version = str(world.outside / "v9") if version == "OUTSIDE" else version
    refused(world, ["model", "show", version], capsys, "is not a model version: versions are named v1, v2")
    refused(world, ["model", "promote", version], capsys, "is not a model version")
    refused(world, ["model", "promote", version, "--at", "2026-01-01"], capsys, "is not a model version")
    assert world.registry.resolve("champion") == "v1"


@pytest.mark.parametrize("alias", [*HOSTILE, "../../../outside/champion", "a..b", "-x", "x" * 129, "champïon"])
def test_promote_refuses_an_alias_that_could_name_another_file(
    world: World, capsys: pytest.CaptureFixture[str], alias: str
) -> None:
    refused(
        world, ["model", "promote", "v1", f"--alias={alias}"], capsys, f"The alias .* is not allowed: use {NAME_RULE}"
    )


@pytest.mark.parametrize("name", ["../../x", "/abs", "a/b", "a\\b", "..", "a..b", " x", "x" * 129])
def test_register_refuses_a_name_outside_the_rule(world: World, capsys: pytest.CaptureFixture[str], name: str) -> None:
    artifact = world.models / "v1" / ARTIFACT
    refused(
        world,
        ["model", "register", str(artifact), "--name", name],
        capsys,
        f"The registered name .* is not allowed: use {NAME_RULE}.* Give one with --name NAME",
    )


def test_register_refuses_a_file_name_that_is_no_registered_name(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = tmp_path / "my model.joblib"
    artifact.write_bytes((world.models / "v1" / ARTIFACT).read_bytes())
    refused(world, ["model", "register", str(artifact)], capsys, "'my model' is not allowed.*--name NAME")
    assert main(["model", "register", str(artifact), "--name", "my-model.2"]) == 0


@pytest.mark.parametrize("alias", ["../x", "a/b", "a..b", "champïon", "champion,challenger", "-x", ".x"])
def test_train_demo_refuses_a_model_alias_setting_outside_the_rule(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, alias: str
) -> None:
    monkeypatch.setenv("BATCH_PREDICT_MODEL_ALIAS", alias)
    refused(world, ["model", "train-demo"], capsys, "BATCH_PREDICT_MODEL_ALIAS=.* is not valid: use one alias name of")
    refused(world, ["model", "train-demo", "--keep-alias"], capsys, "BATCH_PREDICT_MODEL_ALIAS=")


def test_the_model_alias_setting_follows_the_registry_rule() -> None:
    assert load_settings({"BATCH_PREDICT_MODEL_ALIAS": "champion-2.prod_eu"}).model_alias == "champion-2.prod_eu"
    for alias in ("champïon", "x,y", "_x", "a..b", "a/b"):
        with pytest.raises(SettingsError, match="BATCH_PREDICT_MODEL_ALIAS"):
            load_settings({"BATCH_PREDICT_MODEL_ALIAS": alias})


def test_an_alias_with_dots_and_dashes_works_from_promote_to_load(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "promote", "v1", "--alias", "prod-eu.2"]) == 0
    assert world.registry.load("prod-eu.2").metadata.version == "v1"
    assert (world.models / "aliases" / "prod-eu.2.json").is_file()


def test_a_refused_at_writes_nothing(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promotion refused for its time leaves no aliases folder or lock behind in a registry that had none."""
    fresh = tmp_path / "fresh"
    artifact = world.models / "v1" / ARTIFACT
    monkeypatch.setenv("BATCH_PREDICT_MODELS", str(fresh))
    assert main(["model", "register", str(artifact), "--name", "iris", "--trained-at", "2026-02-01"]) == 0
    refused(world, ["model", "promote", "v1", "--at", "2999-01-01"], capsys, "cannot be recorded in the future")
    refused(world, ["model", "promote", "v1", "--at", "2026-01-01"], capsys, "cannot have been promoted before")
    assert not (fresh / "aliases").exists()


# -- planted files: what the registry reads must not lead it outside ---------------------------------------

TAMPERED = ["../../../outside/v9", "OUTSIDE", "v1/../../../../outside/v9", "v9/../v1", "", None, 9]


@pytest.mark.parametrize("version", TAMPERED)
def test_an_alias_file_pointing_outside_is_refused_and_nothing_is_unpickled(
    world: World, capsys: pytest.CaptureFixture[str], version: object
) -> None:
    version = str(world.outside / "v9") if version == "OUTSIDE" else version
    alias_file = world.models / "aliases" / "champion.json"
    alias_file.write_text(json.dumps({"version": version, "history": [{"version": version, "at": "2026-01-01"}]}))
    with pytest.raises(ModelError, match=r"points 'champion' at .*not a version of this registry.*model promote"):
        world.registry.load("champion")
    assert not world.marker.exists()
    refused(world, ["model", "list"], capsys, "not a version of this registry")


def test_the_model_asset_refuses_an_alias_file_pointing_outside(
    world: World, make_settings: Callable[..., Settings]
) -> None:
    (world.models / "aliases" / "champion.json").write_text(json.dumps({"version": "../../../outside/v9"}))
    settings = make_settings(models=str(world.models))

    result = run_model_job(settings, raise_on_error=False)

    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_failure_data is not None
    assert failure.step_failure_data.user_failure_data is not None
    assert "not a version of this registry" in str(failure.step_failure_data.user_failure_data.description)
    assert not world.marker.exists()


def test_point_in_time_history_pointing_outside_is_refused(world: World) -> None:
    with pytest.raises(ModelError, match="is not a model version"):
        world.registry.load_version("../../../outside/v9")
    assert not world.marker.exists()


def link_version(world: World) -> None:
    (world.models / "v2").symlink_to(world.outside / "v9", target_is_directory=True)


def link_artifact(world: World) -> None:
    (world.models / "v2").mkdir()
    (world.models / "v2" / ARTIFACT).symlink_to(world.outside / "v9" / ARTIFACT)
    (world.models / "v2" / METADATA).write_bytes((world.outside / "v9" / METADATA).read_bytes())


def link_alias_file(world: World) -> None:
    champion = world.models / "aliases" / "champion.json"
    champion.unlink()
    champion.symlink_to(world.outside / "champion.json")


@pytest.mark.parametrize("plant", [link_version, link_artifact])
def test_a_version_linked_outside_is_refused_before_loading(
    world: World, capsys: pytest.CaptureFixture[str], plant: Callable[[World], None]
) -> None:
    plant(world)
    with pytest.raises(ModelError, match=r"resolves to .*outside the model registry"):
        world.registry.load_version("v2")
    assert not world.marker.exists()
    if plant is link_version:
        refused(world, ["model", "show", "v2"], capsys, "outside the model registry")
    refused(world, ["model", "promote", "v2", "--alias", "next"], capsys, "outside the model registry")


def test_an_alias_file_linked_outside_is_refused(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    link_alias_file(world)
    with pytest.raises(ModelError, match="outside the model registry"):
        world.registry.resolve("champion")
    refused(world, ["model", "promote", "v1"], capsys, "outside the model registry")
    assert (world.outside / "champion.json").read_text() == json.dumps({"version": "v1", "history": []})


def test_an_aliases_folder_linked_outside_is_refused(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    aliases = world.models / "aliases"
    for path in aliases.iterdir():
        path.unlink()
    aliases.rmdir()
    aliases.symlink_to(world.outside, target_is_directory=True)
    refused(world, ["model", "promote", "v1", "--alias", "next"], capsys, "outside the model registry")
    assert not (world.outside / ".lock").exists() and not (world.outside / "next.json").exists()
