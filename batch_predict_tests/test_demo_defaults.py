"""`make demo` looks right in the UI: partitions from its first data day, and a late deadline it explains."""

import json
import os
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from batch_predict.cli import main
from batch_predict.definitions import build_definitions
from batch_predict.partitions import build_partitions
from batch_predict.settings import DEFAULTS, Settings, load_settings
from batch_predict.verdicts import BACKFILLED, LATE, WHY_LATE

ROOT = Path(__file__).resolve().parents[1]
DEMO_DAYS = 30


def fake_commands(folder: Path, log: Path) -> Path:
    """`batch-predict` and `dagster` that record the BATCH_PREDICT_START they were started with, and exit 0.

    They stand in for the real programs (which `make demo` runs for minutes) so that what is tested
    is the Makefile: which start every command of the demo, `dagster dev` included, receives.
    """
    folder.mkdir()
    for name in ("batch-predict", "dagster"):
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "{name} start=$BATCH_PREDICT_START args=$*" >> "{log}"\n')
        script.chmod(0o755)
    return folder


def make_demo(tmp_path: Path, **env: str) -> list[str]:
    log = tmp_path / "commands.log"
    log.unlink(missing_ok=True)
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        fake_commands(bin_dir, log)
    stamp = tmp_path / "installed"
    stamp.touch()
    environ = {key: value for key, value in os.environ.items() if key not in ("BATCH_PREDICT_START", "NO_UI")}
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "demo", f"BIN={bin_dir}", f"STAMP={stamp}", "PORT=1"],
        env={**environ, **env},
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return log.read_text().splitlines()


def demo_first_days() -> set[str]:
    """The demo's first day as `make demo` computes it (two candidates, in case the test spans midnight UTC)."""
    today = datetime.now(UTC).date()
    return {f"{today - timedelta(days=DEMO_DAYS - 1 + extra)}" for extra in (0, 1)}


def test_make_demo_gives_every_command_and_the_ui_its_first_data_day(tmp_path: Path) -> None:
    before = demo_first_days()
    commands = make_demo(tmp_path)
    starts = {line.split()[1].removeprefix("start=") for line in commands}
    assert len(starts) == 1 and starts <= before | demo_first_days(), commands
    [start] = starts
    assert commands[0] == f"batch-predict start={start} args=demo-data --start {start} --days 30 --rows-per-day 2000"
    assert commands[-1].startswith(f"dagster start={start} args=dev -w workspace.yaml")
    assert len(commands) == 8


def test_a_start_in_the_environment_wins_and_the_data_stays_the_last_days(tmp_path: Path) -> None:
    commands = make_demo(tmp_path, BATCH_PREDICT_START="2026-10-01")
    assert all(" start=2026-10-01 " in line for line in commands), commands
    assert any(f"demo-data --start {day} --days 30" in commands[0] for day in demo_first_days())


def test_partitions_from_the_demo_start_are_its_data_days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = datetime.now(UTC).date() - timedelta(days=DEMO_DAYS - 1)
    monkeypatch.setenv("BATCH_PREDICT_LANDING", str(tmp_path / "landing"))
    assert main(["demo-data", "--start", f"{first}", "--days", f"{DEMO_DAYS}", "--rows-per-day", "5"]) == 0
    days = sorted(path.name for path in (tmp_path / "landing").iterdir())
    settings = load_settings({"BATCH_PREDICT_START": f"{first}", "BATCH_PREDICT_LANDING": str(tmp_path / "landing")})
    keys = build_partitions(settings).get_partition_keys()
    # Every complete day of the demo, and nothing before its first: today's partition has not closed yet.
    assert keys == days[:-1]
    assert keys[0] == f"{first}"
    # With the general default start the UI would show months of partitions without any data.
    default = build_partitions(load_settings({})).get_partition_keys()
    assert default[0] == DEFAULTS["BATCH_PREDICT_START"] and len(default) > len(keys)


@pytest.fixture
def demo_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment `make demo` gives its commands: the demo's first data day as the start."""
    first = datetime.now(UTC).date() - timedelta(days=3)
    env = {
        "BATCH_PREDICT_WAREHOUSE": settings.warehouse,
        "BATCH_PREDICT_LANDING": str(settings.landing),
        "BATCH_PREDICT_MODELS": str(settings.models),
        "BATCH_PREDICT_STAGING": str(settings.staging),
        "BATCH_PREDICT_START": f"{first}",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster_home").mkdir()
    return load_settings(env)


def test_the_demo_s_first_pass_explains_why_its_deadline_is_late(
    demo_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    first = demo_env.start.date()
    assert main(["demo-data", "--start", f"{first}", "--days", "4", "--rows-per-day", "100"]) == 0
    assert main(["model", "train-demo"]) == 0
    assert main(["materialize", "--last", "3"]) == 0
    capsys.readouterr()

    assert main(["status", "--json"]) == 0
    verdicts = {row["partition_key"]: row["deadline"] for row in json.loads(capsys.readouterr().out)}
    # Predicted now: the oldest once newer partitions were due too (a backfill).
    assert verdicts[f"{first}"] == BACKFILLED
    assert set(verdicts.values()) <= {BACKFILLED, LATE, "on_time"}
    assert main(["status"]) == 0
    [summary] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("deadline: ")]
    assert "backfilled" in summary and WHY_LATE in summary

    result = (
        build_definitions(demo_env)
        .resolve_job_def("monitoring_job")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral())
    )
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "newest_due_partition_on_time"]
    # The newest due partition was predicted after its deadline, by the demo: a warning that says why.
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["verdict"].value == LATE  # type: ignore[attr-defined]
    description = check.description or ""
    assert "late by definition" in description and "make demo" in description
    assert date.fromisoformat(check.metadata["partition_key"].value) > first  # type: ignore[attr-defined]
