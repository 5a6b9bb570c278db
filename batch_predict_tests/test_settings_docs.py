"""The settings spec is the one source: the committed docs match it, and every variable the code reads is in it."""

import dataclasses
import re
from pathlib import Path

import pytest

from batch_predict.cluster import SETTINGS_FILE, read_env_file
from batch_predict.settings import (
    CLUSTER_SETTINGS,
    DAGSTER_INSTANCE_SETTINGS,
    DEFAULTS,
    OTHER_VARIABLES,
    REGENERATE,
    SETTINGS,
    OnFailure,
    Settings,
    generated_files,
    load_settings,
    main,
)

ROOT = Path(__file__).resolve().parents[1]
CODE = [*sorted((ROOT / "batch_predict").rglob("*.py")), ROOT / "Makefile", *sorted((ROOT / "deploy").rglob("*.*"))]


@pytest.mark.parametrize("path", list(generated_files(ROOT)), ids=lambda path: path.name)
def test_the_committed_file_is_what_the_spec_generates(path: Path) -> None:
    expected = generated_files(ROOT)[path]
    assert path.exists() and path.read_text() == expected, (
        f"{path.relative_to(ROOT)} differs from the settings spec in batch_predict/settings.py; regenerate it with "
        f"{REGENERATE} and commit it."
    )


def test_write_regenerates_the_files_and_check_mode_reports_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([]) == 1
    assert main(["--write"]) == 0
    assert main([]) == 0
    assert (tmp_path / ".env.example").read_text() == (ROOT / ".env.example").read_text()
    assert (tmp_path / "docs" / "settings.md").read_text() == (ROOT / "docs" / "settings.md").read_text()


def test_every_settings_field_comes_from_one_variable() -> None:
    fields = [setting.field for setting in SETTINGS]
    assert sorted(fields) == sorted(field.name for field in dataclasses.fields(Settings))
    assert len({setting.name for setting in SETTINGS}) == len(SETTINGS)
    assert all(setting.name.startswith("BATCH_PREDICT_") for setting in SETTINGS)


def test_every_setting_is_in_both_generated_files() -> None:
    example, doc = generated_files(ROOT).values()
    for setting in SETTINGS:
        assert f"# {setting.name}={setting.default}\n" in example
        assert f"| `{setting.name}` |" in doc
        assert setting.accepts.replace("|", "\\|") in doc


def test_choices_are_the_values_the_parser_accepts() -> None:
    for setting in SETTINGS:
        for choice in setting.choices:
            env = {setting.name: choice.upper()}
            if setting.name == "BATCH_PREDICT_BACKFILL_MODEL" and choice == "point_in_time":
                env["BATCH_PREDICT_ON_FAILURE"] = "retry_all"
            assert getattr(load_settings(env), setting.field) == choice


def test_the_rerun_modes_are_one_enum_that_compares_as_its_strings() -> None:
    assert next(s for s in SETTINGS if s.name == "BATCH_PREDICT_ON_FAILURE").choices == tuple(OnFailure)
    mode = load_settings({"BATCH_PREDICT_ON_FAILURE": "Carry_Over"}).on_failure
    assert mode is OnFailure.CARRY_OVER
    assert mode == "carry_over" and f"{mode}" == "carry_over"
    assert DEFAULTS["BATCH_PREDICT_ON_FAILURE"] == OnFailure.RETRY_ALL


def test_every_batch_predict_variable_named_anywhere_is_documented() -> None:
    documented = {s.name for s in SETTINGS} | {v.name for v in CLUSTER_SETTINGS}
    named = set()
    for path in CODE:
        named |= set(re.findall(r"BATCH_PREDICT_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    # cluster.py selects the cluster's variables by this prefix.
    assert named - documented <= {"BATCH_PREDICT_CLUSTER"}, sorted(named - documented)


def test_every_environment_read_outside_settings_is_documented_as_another_tools() -> None:
    """Settings are read only through the spec; the other variables the code reads belong to other tools."""
    reads = set()
    for path in (ROOT / "batch_predict").rglob("*.py"):
        if path.name == "settings.py":
            continue
        reads |= set(
            re.findall(r"(?:environ\.get|getenv|environ\[)\(?\s*[\"']([A-Z_][A-Z0-9_]*)[\"']", path.read_text())
        )
    others = {name for names, _ in OTHER_VARIABLES for name in re.findall(r"[A-Z_]{3,}", names)}
    assert reads - others <= {"PATH"}, sorted(reads - others)


def test_the_cluster_variables_are_deploy_cluster_env_s() -> None:
    values = read_env_file(ROOT / SETTINGS_FILE)
    assert values == {variable.name: variable.default for variable in CLUSTER_SETTINGS}


def test_the_real_cluster_variables_are_those_deploy_reads() -> None:
    deploy = (ROOT / "deploy" / "dagster.yaml").read_text() + (ROOT / "deploy" / "celery.yaml").read_text()
    assert set(re.findall(r"env: (DAGSTER_[A-Z_]+)", deploy)) == {v.name for v in DAGSTER_INSTANCE_SETTINGS}
