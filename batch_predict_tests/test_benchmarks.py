"""`make bench` keeps working as the warehouse changes: its quick sizes run the parts that build their own
warehouse tables (synthetic inputs and their stats rows, the PostgreSQL copy of them) and write their keys.
No figure is checked against a target here: speed is the benchmarks' business, not the tests'."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quick_bench_of_the_throughput_parts_runs_and_writes_their_keys(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--only", "lr,naive,postgres", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    for key in (
        "floor_ratio_lr",
        "naive_ratio_lr_100k",
        "naive_ratio_lr_1m",
        "naive_ratio_lr_10m",
        "pg_floor_ratio_lr",
    ):
        assert results[key] > 0, (key, results[key])
    assert "pg_floor_ratio_lr" in done.stdout  # the printed table has the PostgreSQL row
