"""Whole system: a real `dagster dev` (webserver, daemon, code server) receives a backfill like the UI's."""

import contextlib
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from batch_predict.cluster import LAUNCH, backfill_variables
from batch_predict.demo import train_demo_model, write_landing
from batch_predict.models.registry import Registry
from batch_predict.settings import BACKFILL_PARTITIONS_PER_RUN

from .conftest import FIRST_DAY

ROOT = Path(__file__).resolve().parents[1]
DAYS = 40
FIRST = [f"2026-03-0{day}" for day in range(1, 6)]
# 32 more days, backfilled with up to 4 runs in flight (dagster_home/dagster.yaml).
PARALLEL = [f"{FIRST_DAY + timedelta(days=5 + i):%Y-%m-%d}" for i in range(32)]
ROWS = 200
# The last 3 days, backfilled with every executable asset of the prediction graph selected, as *Materialize all* does.
WHOLE_GRAPH = [f"{FIRST_DAY + timedelta(days=DAYS - 3 + i):%Y-%m-%d}" for i in range(3)]

POLL = """
query Poll($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
}
"""
MODEL = """
{
  assetOrError(assetKey: {path: ["model"]}) {
    ... on Asset {
      assetMaterializations(limit: 1) { runId timestamp metadataEntries { label ... on TextMetadataEntry { text } } }
    }
  }
}
"""
GRAPH = """
{ assetNodes { assetKey { path } groupName isExecutable } }
"""
LATEST_BACKFILL = """
{ partitionBackfillsOrError(limit: 1) { ... on PartitionBackfills { results { status error { message } } } } }
"""
RUN_ASSETS = """
query Run($id: ID!) { runOrError(runId: $id) { ... on Run { assetSelection { path } } } }
"""
RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs {
      results { runId status startTime endTime stats { ... on RunStatsSnapshot { launchTime } } }
    }
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


def make_project(folder: Path, days: int = DAYS, **settings: str) -> tuple[dict[str, str], Path]:
    """A project in `folder` with this repository's instance settings, `days` of landed records and a
    registered champion; the environment `dagster dev` runs it with (plus `settings`), and the warehouse
    file it writes."""
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    warehouse = folder / "warehouse.duckdb"
    write_landing(folder / "landing", FIRST_DAY, days, ROWS)
    train_demo_model(Registry(folder / "models"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_PREDICT_")} | {
        "DAGSTER_HOME": str(home),
        "BATCH_PREDICT_WAREHOUSE": str(warehouse),
        "BATCH_PREDICT_LANDING": str(folder / "landing"),
        "BATCH_PREDICT_MODELS": str(folder / "models"),
        "BATCH_PREDICT_START": "2026-03-01",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **settings,
    }
    return env, warehouse


@contextlib.contextmanager
def running_dagster_dev(folder: Path, env: dict[str, str]) -> Iterator[int]:
    """`dagster dev` on 127.0.0.1 and a free port, in its own process group, until the code location
    has loaded; yields the port, and stops the whole group on the way out. Its log: folder/dagster-dev.log."""
    port = free_port()
    log_path = folder / "dagster-dev.log"
    with log_path.open("wb") as log:
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
                assert process.poll() is None, log_path.read_text()[-3000:]
                try:
                    data = graphql(port, "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }")
                    if data["repositoriesOrError"].get("nodes"):
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "dagster dev did not load the code location in 120 s"
                time.sleep(1)
            yield port
        finally:
            stop(process)


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    tmp_path = tmp_path_factory.mktemp("dagster_dev")
    # One partition per run: these tests are about many runs at once (4 in flight, DuckDB's lock).
    env, warehouse = make_project(tmp_path, BATCH_PREDICT_MAX_PARTITIONS_PER_RUN="1")
    with running_dagster_dev(tmp_path, env) as port:
        yield port, warehouse


def backfill(
    port: int, partitions: list[str], timeout: float, assets: tuple[str, ...] = ("inputs", "predictions")
) -> tuple[str, list[dict[str, Any]], float]:
    """Launch an asset backfill as the UI's dialog does and wait for it; return status, runs, seconds."""
    started = time.monotonic()
    launched = graphql(port, LAUNCH, backfill_variables(partitions, assets))["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    status, runs = wait_for_backfill(port, launched["backfillId"], timeout)
    return status, runs, time.monotonic() - started


def wait_for_backfill(port: int, backfill_id: str, timeout: float) -> tuple[str, list[dict[str, Any]]]:
    """Poll the backfill until it is no longer in progress; its status and runs."""
    started = time.monotonic()
    status = "REQUESTED"
    while status in ("REQUESTED", "CANCELING", "FAILING"):
        assert time.monotonic() - started < timeout, f"backfill still {status} after {timeout} s"
        time.sleep(2)
        status = graphql(port, POLL, {"id": backfill_id})["partitionBackfillOrError"]["status"]
    runs = graphql(port, RUNS, {"id": backfill_id})["runsOrError"]["results"]
    return status, runs


def assert_partitions_written(warehouse: Path, partitions: list[str]) -> None:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            """
            SELECT s.partition_key, s.source_rows, s.valid_rows, s.rejected_rows, p.succeeded, p.failed,
                   (SELECT count(*) FROM predictions x WHERE x.partition_key = s.partition_key),
                   (SELECT count(DISTINCT record_id) FROM predictions x WHERE x.partition_key = s.partition_key)
            FROM input_stats s JOIN prediction_stats p USING (partition_key)
            WHERE list_contains($keys, s.partition_key) ORDER BY 1
            """,
            {"keys": partitions},
        ).fetchall()
    assert [row[0] for row in rows] == partitions
    for _, source_rows, valid, rejected, succeeded, failed, stored, distinct in rows:
        assert source_rows == ROWS == valid + rejected
        assert succeeded == stored == distinct == valid
        assert failed == 0


def most_in_flight(runs: list[dict[str, Any]]) -> int:
    """The most runs launched (holding a slot of the run queue) and not yet finished at once."""
    edges = sorted([(run["stats"]["launchTime"], 1) for run in runs] + [(run["endTime"], -1) for run in runs])
    in_flight = peak = 0
    for _, step in edges:
        in_flight += step
        peak = max(peak, in_flight)
    return peak


@pytest.mark.system
def test_a_backfill_launched_like_the_ui_writes_every_partition(dagster_dev: tuple[int, Path]) -> None:
    port, warehouse = dagster_dev
    status, runs, _ = backfill(port, FIRST, timeout=420)
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
    assert runs and all(run["status"] == "SUCCESS" for run in runs), runs
    assert_partitions_written(warehouse, FIRST)


@pytest.mark.system
def test_a_parallel_backfill_never_fails_on_duckdb_locks(dagster_dev: tuple[int, Path]) -> None:
    port, warehouse = dagster_dev
    status, runs, seconds = backfill(port, PARALLEL, timeout=900)
    failed = [run for run in runs if run["status"] != "SUCCESS"]
    assert status in ("COMPLETED", "COMPLETED_SUCCESS") and not failed, (status, failed)
    assert len(runs) == len(PARALLEL)
    peak = most_in_flight(runs)
    assert peak >= 4, f"at most {peak} runs were in flight"
    assert_partitions_written(warehouse, PARALLEL)
    durations = sorted(run["endTime"] - run["startTime"] for run in runs)
    span = max(run["endTime"] for run in runs) - min(run["startTime"] for run in runs)
    print(
        f"parallel backfill: {len(runs)} runs, peak {peak} in flight, {seconds:.0f} s, runs span {span:.0f} s, median run {durations[len(durations) // 2]:.1f} s"
    )


def latest_model(port: int) -> dict[str, str] | None:
    """The run and text metadata of the model asset's latest materialization, if it has one."""
    found = graphql(port, MODEL)["assetOrError"].get("assetMaterializations") or []
    if not found:
        return None
    entries = {entry["label"]: entry.get("text") for entry in found[0]["metadataEntries"]}
    return {
        "run_id": found[0]["runId"],
        "timestamp": found[0]["timestamp"],
        **{k: v for k, v in entries.items() if v is not None},
    }


@pytest.mark.system
def test_a_backfill_of_the_whole_graph_predicts_with_an_unchanged_champion(dagster_dev: tuple[int, Path]) -> None:
    port, warehouse = dagster_dev
    # champion_sensor (on by default) records the model soon after start; from then on it is unchanged.
    deadline = time.monotonic() + 180
    while (before := latest_model(port)) is None:
        assert time.monotonic() < deadline, "champion_sensor did not record the model in 180 s"
        time.sleep(2)
    nodes = graphql(port, GRAPH)["assetNodes"]
    graph = {node["assetKey"]["path"][-1]: node for node in nodes if node["groupName"] == "batch_predict"}
    assert set(graph) == {"inputs", "model", "predictions"}
    executable = tuple(name for name, node in graph.items() if node["isExecutable"])
    assert sorted(executable) == ["inputs", "predictions"]  # the registry holds the model

    # Naming the model anyway (the UI does not): Dagster fails the backfill, naming the model, at its
    # first step; at most a run of inputs started before that, and nothing was predicted.
    status, runs, _ = backfill(port, WHOLE_GRAPH[:1], timeout=240, assets=tuple(graph))
    [failed] = graphql(port, LATEST_BACKFILL)["partitionBackfillsOrError"]["results"]
    assert status == failed["status"] == "FAILED", (status, failed, runs)
    assert "AssetKey(['model'])" in failed["error"]["message"]
    ran = [graphql(port, RUN_ASSETS, {"id": run["runId"]})["runOrError"]["assetSelection"] for run in runs]
    assert all(selection == [{"path": ["inputs"]}] for selection in ran), ran

    status, runs, _ = backfill(port, WHOLE_GRAPH, timeout=420, assets=executable)
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
    assert runs and all(run["status"] == "SUCCESS" for run in runs), runs
    assert_partitions_written(warehouse, WHOLE_GRAPH)
    # The model was not recorded again: its freshness still counts from when it arrived.
    assert latest_model(port) == before


RUN_MATERIALIZATIONS = """
query Run($id: ID!) {
  runOrError(runId: $id) {
    ... on Run { tags { key value } assetMaterializations { assetKey { path } partition } }
  }
}
"""
LATEST_BACKFILL_ID = "{ partitionBackfillsOrError(limit: 1) { ... on PartitionBackfills { results { id } } } }"
# With the default BATCH_PREDICT_MAX_PARTITIONS_PER_RUN (PER_RUN daily partitions per run): PER_RUN + 3
# days from the UI are a run of PER_RUN and a run of 3; the next 5 days queued by `batch-predict backfill`
# are one run.
PER_RUN = BACKFILL_PARTITIONS_PER_RUN["daily"]
FROM_THE_UI = [f"{FIRST_DAY + timedelta(days=i):%Y-%m-%d}" for i in range(PER_RUN + 3)]
BATCH_PREDICT = str(Path(sys.executable).parent / "batch-predict")
FROM_THE_SHELL = [f"{FIRST_DAY + timedelta(days=i):%Y-%m-%d}" for i in range(PER_RUN + 3, PER_RUN + 8)]


def partitions_by_run(port: int, runs: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """Each run's range tags and the partitions of its own `predictions` materializations, by range start."""
    found = []
    for run in runs:
        data = graphql(port, RUN_MATERIALIZATIONS, {"id": run["runId"]})["runOrError"]
        tags = {tag["key"]: tag["value"] for tag in data["tags"]}
        predicted = [m["partition"] for m in data["assetMaterializations"] if m["assetKey"]["path"] == ["predictions"]]
        found.append(
            (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"], sorted(predicted))
        )
    return sorted(found)


@pytest.mark.system
def test_a_backfill_with_the_default_policy_runs_ranges_and_materializes_each_partition(tmp_path: Path) -> None:
    # BATCH_PREDICT_MAX_PARTITIONS_PER_RUN unset: the default
    env, warehouse = make_project(tmp_path, days=len(FROM_THE_UI) + len(FROM_THE_SHELL))
    with running_dagster_dev(tmp_path, env) as port:
        status, runs, _ = backfill(port, FROM_THE_UI, timeout=600)
        assert status == "COMPLETED_SUCCESS" and all(run["status"] == "SUCCESS" for run in runs), (status, runs)
        assert partitions_by_run(port, runs) == [
            (FROM_THE_UI[0], FROM_THE_UI[PER_RUN - 1], FROM_THE_UI[:PER_RUN]),
            (FROM_THE_UI[PER_RUN], FROM_THE_UI[-1], FROM_THE_UI[PER_RUN:]),
        ]

        queued = subprocess.run(
            [BATCH_PREDICT, "backfill", "--from", FROM_THE_SHELL[0], "--to", FROM_THE_SHELL[-1]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert queued.returncode == 0, queued.stderr
        assert f"queued: {len(FROM_THE_SHELL)} daily partitions of inputs and predictions" in queued.stdout
        assert f"up to {PER_RUN} per run, so 1 run(s)" in queued.stdout
        [latest] = graphql(port, LATEST_BACKFILL_ID)["partitionBackfillsOrError"]["results"]
        assert latest["id"] in queued.stdout
        status, runs = wait_for_backfill(port, latest["id"], timeout=600)
        assert status == "COMPLETED_SUCCESS" and all(run["status"] == "SUCCESS" for run in runs), (status, runs)
        assert partitions_by_run(port, runs) == [(FROM_THE_SHELL[0], FROM_THE_SHELL[-1], FROM_THE_SHELL)]
    assert_partitions_written(warehouse, FROM_THE_UI + FROM_THE_SHELL)


def test_the_schedule_asks_for_one_partition_while_backfills_run_ranges(tmp_path: Path) -> None:
    """The BackfillPolicy applies to backfills only: the schedule's tick still requests one partition."""
    import dagster as dg

    from batch_predict.definitions import build_definitions
    from batch_predict.settings import load_settings

    env, _ = make_project(tmp_path)
    settings = load_settings(env)
    assert settings.max_partitions_per_run == PER_RUN == 92
    definitions = build_definitions(settings)
    predictions = definitions.resolve_assets_def("predictions")
    assert predictions.backfill_policy == dg.BackfillPolicy.multi_run(PER_RUN)
    schedule = definitions.resolve_schedule_def("predictions_job_schedule")
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 20, 0, 15, tzinfo=UTC)) as context:
        [request] = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == "2026-03-19"
    assert not {"dagster/asset_partition_range_start", "dagster/asset_partition_range_end"} & set(request.tags)


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        ("2026-02-05", "2026-03-02", "'2026-02-05' is not a daily partition key (the partitions: 2026-03-01 to "),
        ("2026-03-01", "2026-3-2", "'2026-3-2' is not a daily partition key"),
        ("2026-03-05", "2026-03-01", "--from 2026-03-05 is after --to 2026-03-01."),
    ],
)
def test_batch_predict_backfill_names_a_bad_range_and_queues_nothing(
    first: str,
    last: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from batch_predict.cli import main

    monkeypatch.setenv("BATCH_PREDICT_START", "2026-03-01")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert main(["backfill", "--from", first, "--to", last]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no instance was opened, nothing queued
