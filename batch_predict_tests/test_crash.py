"""A process killed with SIGKILL while it writes leaves the partition as it was or complete."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from batch_predict.batch import predict_partition
from batch_predict.definitions import build_definitions
from batch_predict.demo import write_landing
from batch_predict.models.registry import Registry
from batch_predict.settings import Settings
from batch_predict.warehouse import Source, Warehouse

DAY = datetime(2026, 3, 1, tzinfo=UTC)
ROWS = 200_000

CHILD = """
import sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from batch_predict.contract import FeatureContract
from batch_predict.models.registry import Registry
from batch_predict.settings import load_settings
from batch_predict.warehouse import Source, Warehouse
from batch_predict.batch import predict_partition

phase, run_id = sys.argv[1], sys.argv[2]
settings = load_settings()
warehouse = Warehouse(settings.warehouse, FeatureContract.from_settings(settings))
print("WRITING", flush=True)
if phase == "inputs":
    start = datetime(2026, 3, 1, tzinfo=UTC)
    warehouse.snapshot_inputs(Source(settings.landing), "2026-03-01", start, start + timedelta(days=1), run_id)
else:
    predict_partition(warehouse, Registry(settings.models).load("champion"), "2026-03-01", run_id, 65536)
print("DONE", flush=True)
"""


def state(path: Path) -> dict[str, Any]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            table: con.execute(
                f"SELECT count(*), list(DISTINCT run_id ORDER BY run_id) FROM {table} WHERE partition_key = '2026-03-01'"
            ).fetchall()[0]
            for table in ("inputs", "rejected_inputs", "input_stats", "predictions", "prediction_stats")
        }


@pytest.fixture
def big_partition(settings: Settings, registry: Registry) -> Settings:
    write_landing(settings.landing, date(2026, 3, 1), 1, ROWS, files_per_day=2)
    warehouse = Warehouse(settings.warehouse, _contract(settings))
    warehouse.snapshot_inputs(Source(settings.landing), "2026-03-01", DAY, DAY + timedelta(days=1), "old")
    predict_partition(warehouse, registry.load("champion"), "2026-03-01", "old", 65536)
    return settings


def _contract(settings: Settings) -> Any:
    from batch_predict.contract import FeatureContract

    return FeatureContract.from_settings(settings)


def kill_while_writing(settings: Settings, phase: str, run_id: str, delay: float | None) -> float:
    """Run the write in a child process, SIGKILL it `delay` seconds in; return the seconds it was given."""
    env = os.environ | {
        "BATCH_PREDICT_WAREHOUSE": str(settings.warehouse),
        "BATCH_PREDICT_LANDING": str(settings.landing),
        "BATCH_PREDICT_MODELS": str(settings.models),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, phase, run_id], env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "WRITING"
    started = time.monotonic()
    if delay is None:
        assert child.stdout.readline().strip() == "DONE"
    else:
        time.sleep(delay)
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it may end between the poll and the kill
                os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    return time.monotonic() - started


TABLES = {"inputs": ("inputs", "rejected_inputs", "input_stats"), "predictions": ("predictions", "prediction_stats")}


@pytest.mark.parametrize("phase", ["inputs", "predictions"])
def test_sigkill_while_writing_leaves_old_or_complete(big_partition: Settings, phase: str) -> None:
    # How long an undisturbed write takes, then kills spread over that time.
    duration = kill_while_writing(big_partition, phase, "calibration", None)
    stats_table = "input_stats" if phase == "inputs" else "prediction_stats"
    completed = []
    for trial, fraction in enumerate((0.1, 0.3, 0.5, 0.65, 0.8, 0.9, 0.95, 1.0)):
        before = state(big_partition.warehouse)
        run_id = f"trial-{trial}"
        kill_while_writing(big_partition, phase, run_id, duration * fraction)
        after = state(big_partition.warehouse)
        if after[stats_table][1] == before[stats_table][1]:
            assert after == before, f"changed without completing after a kill at {fraction:.0%}"
            completed.append(False)
            continue
        # Complete: every table of the write is this trial's (predictions may hold chunks that
        # a killed trial staged and this one resumed), and no row was lost or doubled.
        assert after[stats_table][1] == [run_id]
        for table in TABLES[phase]:
            assert after[table][0] == before[table][0], f"{table} lost or doubled rows: {after}"
        if phase == "inputs":
            assert all(after[table][1] == [run_id] for table in TABLES[phase])
        completed.append(True)
    assert not all(completed), "no kill landed before the commit; the test proved nothing"
    assert state(big_partition.warehouse)["predictions"][0] == state(big_partition.warehouse)["inputs"][0]


def test_the_next_run_repairs_a_killed_partition(big_partition: Settings) -> None:
    kill_while_writing(big_partition, "predictions", "killed", 0.3)
    job = build_definitions(big_partition).resolve_job_def("predictions_job")
    assert job.execute_in_process(partition_key="2026-03-01", instance=dg.DagsterInstance.ephemeral()).success
    after = state(big_partition.warehouse)
    assert after["predictions"][0] == after["inputs"][0]
    assert len(after["predictions"][1]) == 1 and after["predictions"][1][0] not in ("old", "killed")
