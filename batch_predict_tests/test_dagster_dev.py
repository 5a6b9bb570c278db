"""Whole system: a real `dagster dev` (webserver, daemon, code server) receives a backfill like the UI's."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from batch_predict.demo import train_demo_model, write_landing
from batch_predict.registry import Registry

from .conftest import FIRST_DAY

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = [f"2026-03-0{day}" for day in range(1, 6)]
ROWS = 300

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""
POLL = """
query Poll($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
}
"""
RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status } }
  }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload: dict[str, Any] = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the whole process group: webserver, daemon and code servers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    warehouse = tmp_path / "warehouse.duckdb"
    write_landing(tmp_path / "landing", FIRST_DAY, len(PARTITIONS), ROWS)
    train_demo_model(Registry(tmp_path / "models"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_PREDICT_")} | {
        "DAGSTER_HOME": str(home),
        "BATCH_PREDICT_WAREHOUSE": str(warehouse),
        "BATCH_PREDICT_LANDING": str(tmp_path / "landing"),
        "BATCH_PREDICT_MODELS": str(tmp_path / "models"),
        "BATCH_PREDICT_START": "2026-03-01",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = (tmp_path / "dagster-dev.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
            try:
                data = graphql(port, "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }")
                if data["repositoriesOrError"].get("nodes"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dagster dev did not load the code location in 120 s"
            time.sleep(1)
        yield port, warehouse
    finally:
        stop(process)
        log.close()


@pytest.mark.system
def test_a_backfill_launched_like_the_ui_writes_every_partition(dagster_dev: tuple[int, Path]) -> None:
    port, warehouse = dagster_dev
    launched = graphql(
        port,
        LAUNCH,
        {
            "params": {
                "partitionNames": PARTITIONS,
                "assetSelection": [{"path": ["inputs"]}, {"path": ["predictions"]}],
                "fromFailure": False,
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    deadline = time.monotonic() + 420
    status = "REQUESTED"
    while status in ("REQUESTED", "CANCELING", "FAILING"):
        assert time.monotonic() < deadline, f"backfill still {status} after 420 s"
        time.sleep(2)
        status = graphql(port, POLL, {"id": backfill_id})["partitionBackfillOrError"]["status"]
    runs = graphql(port, RUNS, {"id": backfill_id})["runsOrError"]["results"]
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
    assert runs and all(run["status"] == "SUCCESS" for run in runs), runs

    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            """
            SELECT s.partition_key, s.source_rows, s.valid_rows, s.rejected_rows, p.succeeded,
                   (SELECT count(*) FROM predictions x WHERE x.partition_key = s.partition_key)
            FROM input_stats s JOIN prediction_stats p USING (partition_key) ORDER BY 1
            """
        ).fetchall()
    assert [row[0] for row in rows] == PARTITIONS
    for _, source_rows, valid, rejected, predicted, stored in rows:
        assert source_rows == ROWS == valid + rejected
        assert predicted == stored == valid
