"""`make bench` keeps working as the warehouse changes: its quick sizes run the parts that build their own
warehouse tables (synthetic inputs and their stats rows, the PostgreSQL copy of them) and write their keys.
No figure is checked against a target here: speed is the benchmarks' business, not the tests'."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quick_bench_of_the_throughput_parts_runs_and_writes_their_keys(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    bench = subprocess.Popen(
        [sys.executable, "benchmarks/run.py", "--quick", "--only", "lr,naive,postgres", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = bench.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the bench stops the PostgreSQL server it started (in a session of its own).
        bench.terminate()
        try:
            bench.communicate(timeout=60)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(bench.pid, signal.SIGKILL)
        raise
    assert bench.returncode == 0, stderr[-3000:]
    results = json.loads(out.read_text())
    for key in (
        "floor_ratio_lr",
        "naive_ratio_lr_100k",
        "naive_ratio_lr_1m",
        "naive_ratio_lr_10m",
        "pg_floor_ratio_lr",
        "naive_floor_s_lr_100k",
    ):
        assert results[key] > 0, (key, results[key])
    assert "pg_floor_ratio_lr" in stdout  # the printed table has the PostgreSQL row
