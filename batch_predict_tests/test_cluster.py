"""Whole system on a cluster: the deploy/ configuration (instance in PostgreSQL, Celery run workers on
Redis, daemon, webserver) on loopback, started by the same code as `make demo-cluster`."""

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from batch_predict.cluster import Cluster, ClusterSettings, check_counts, tags
from batch_predict.demo import train_demo_model, write_landing
from batch_predict.models.registry import Registry
from batch_predict.runs import PID_TAG
from batch_predict.servers import group_alive
from batch_predict_tests.slow_model import SlowClassifier

from .conftest import FIRST_DAY

ROOT = Path(__file__).resolve().parents[1]
ROWS = 200
# 8 partitions backfilled together, then one more whose run is killed.
PARTITIONS = [f"{FIRST_DAY + timedelta(days=i):%Y-%m-%d}" for i in range(8)]
KILLED = f"{FIRST_DAY + timedelta(days=8):%Y-%m-%d}"
# How long the slow model stays busy in each run of KILLED: time to kill the first, short for its retry.
SLOW_SECONDS = 5.0

REPOSITORIES = """
{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } sensors { id name } } } } }
"""
LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
RUN_FAMILY = """
query Family($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/root_run_id", value: $id}]}) {
    ... on Runs { results { runId status startTime endTime tags { key value } } }
  }
}
"""
RUN = """
query Run($id: ID!) { runOrError(runId: $id) { ... on Run { runId status startTime endTime tags { key value } } } }
"""
STOP_SENSOR = """
mutation Stop($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}
"""
RUN_FAILURE = """
query Failure($id: ID!) {
  logsForRun(runId: $id) {
    ... on EventConnection { events { __typename ... on RunFailureEvent { message } } }
  }
}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster, with the warehouse on its PostgreSQL server; stopped by process group even if a test fails."""
    folder = tmp_path_factory.mktemp("cluster")
    settings = ClusterSettings(
        root=ROOT,
        folder=folder,
        warehouse="{postgres}/batch_predict",
        workers=2,
        fast_postgres=True,
        backfill_timeout_seconds=240,
        extra_env={
            "BATCH_PREDICT_START": f"{FIRST_DAY:%Y-%m-%d}",
            # The slow model is pickled from the tests' package, which the workers must import.
            "PYTHONPATH": str(ROOT),
            "SLOW_MODEL_ACTIVE": "1",
        },
    )
    write_landing(folder / "landing", FIRST_DAY, len(PARTITIONS) + 1, ROWS, seed=7, files_per_day=1)
    train_demo_model(Registry(folder / "models"))
    with Cluster(settings) as running:
        groups = [process.pid for process in running.processes]
        yield running
    assert not any(group_alive(pgid) for pgid in groups)


def query(warehouse: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on the warehouse, a DuckDB file or a PostgreSQL database."""
    if warehouse.startswith("postgresql://"):
        with psycopg.connect(warehouse) as con:
            return con.execute(sql).fetchall()  # type: ignore[arg-type]
    with duckdb.connect(warehouse, read_only=True) as con:
        return con.execute(sql).fetchall()


def predictions_by_partition(warehouse: str) -> dict[str, tuple[int, int, int]]:
    """Per partition: valid inputs, inputs with a prediction, prediction rows."""
    rows = query(
        warehouse,
        """
        SELECT i.partition_key, count(*), count(p.record_id),
               (SELECT count(*) FROM predictions q WHERE q.partition_key = i.partition_key)
        FROM inputs i LEFT JOIN predictions p ON p.partition_key = i.partition_key AND p.record_id = i.record_id
        GROUP BY i.partition_key
        """,
    )
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def worker_groups(cluster: Cluster) -> dict[int, str]:
    return {worker.pid: worker.name for worker in cluster.workers}


@pytest.mark.system
def test_a_backfill_runs_on_both_celery_workers_and_predicts_every_valid_input(cluster: Cluster) -> None:
    result = cluster.backfill(PARTITIONS)
    assert result.status in ("COMPLETED", "COMPLETED_SUCCESS"), result
    assert len(result.runs) == len(PARTITIONS)
    assert all(run["status"] == "SUCCESS" for run in result.runs), result.runs
    # Which worker ran each run: from the worker's log (it received the run's Celery task), and from
    # the process group of the PID the run recorded as its worker.
    by_log = [cluster.worker_of(run) for run in result.runs]
    by_pid = [worker_groups(cluster).get(os.getpgid(int(tags(run)[PID_TAG]))) for run in result.runs]
    assert by_log == by_pid
    assert set(by_log) == {"w1", "w2"}, by_log

    status = cluster.status(len(PARTITIONS))
    assert check_counts(status, result, PARTITIONS) == []
    found = predictions_by_partition(cluster.warehouse)
    assert sorted(found) == PARTITIONS
    for key in PARTITIONS:
        valid, predicted, stored = found[key]
        assert 0 < valid == predicted == stored, (key, found[key])
    print(
        f"cluster backfill: {len(result.runs)} runs in {result.seconds:.0f} s, "
        f"w1 {by_log.count('w1')}, w2 {by_log.count('w2')}"
    )


def promote_slow_model(cluster: Cluster, busy_marker: Path) -> None:
    """Make the champion a model that stays busy SLOW_SECONDS in each run's prediction."""
    registry = Registry(cluster.folder / "models")
    demo = registry.load("champion")
    metadata = registry.register(
        SlowClassifier(demo.estimator, busy_marker, fast_batches=0, seconds=SLOW_SECONDS),
        name="iris-slow",
        trained_at=datetime.now(UTC),
        features=demo.metadata.features,
        metrics=demo.metadata.metrics,
        training_window={"start": None, "end": None, "source": "test"},
    )
    registry.set_alias("champion", metadata.version)


def stop_sensor(cluster: Cluster, name: str) -> None:
    nodes = cluster.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
    [sensor] = [sensor for node in nodes for sensor in node["sensors"] if sensor["name"] == name]
    stopped = cluster.graphql(STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
    assert stopped["__typename"] == "StopSensorMutationResult", stopped


def launch_run(cluster: Cluster, job: str, partition: str) -> str:
    """Launch one run of a job's partition as the UI's Launchpad does (through the run queue, no backfill tick)."""
    [node] = cluster.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
    selector = {"repositoryLocationName": node["location"]["name"], "repositoryName": node["name"], "jobName": job}
    params = {"selector": selector, "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]}}
    launched = cluster.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id: str = launched["run"]["runId"]
    return run_id


@pytest.mark.system
def test_a_run_whose_worker_process_is_killed_is_failed_by_run_monitoring_and_retried(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Only run monitoring (the Celery launcher's health check) may notice the dead run here.
    stop_sensor(cluster, "dead_run_sensor")
    busy = tmp_path / "model_busy"
    promote_slow_model(cluster, busy)
    started = time.monotonic()
    first_id = launch_run(cluster, "predictions_job", KILLED)
    while not busy.exists():
        cluster.check()
        first = cluster.graphql(RUN, {"id": first_id})["runOrError"]
        assert not first["endTime"], f"the run ended before its model was busy: {first}; logs in {cluster.logs}"
        assert time.monotonic() - started < 120, "the slow model never started predicting"
        time.sleep(0.2)
    first = cluster.graphql(RUN, {"id": first_id})["runOrError"]
    pid = int(tags(first)[PID_TAG])
    killed_worker = worker_groups(cluster)[os.getpgid(pid)]
    os.kill(pid, signal.SIGKILL)  # the Celery pool process executing the run, as the OOM killer would

    while True:
        cluster.check()
        family = cluster.graphql(RUN_FAMILY, {"id": first_id})["runsOrError"]["results"]
        retries = [run for run in family if tags(run).get("dagster/parent_run_id") == first_id]
        if retries and all(run["endTime"] for run in retries):
            break
        assert time.monotonic() - started < 150, f"no finished retry after 150 s: {family}; logs in {cluster.logs}"
        time.sleep(1)
    seconds = time.monotonic() - started
    assert cluster.graphql(RUN, {"id": first_id})["runOrError"]["status"] == "FAILURE"
    events = cluster.graphql(RUN_FAILURE, {"id": first_id})["logsForRun"]["events"]
    failures = [event["message"] for event in events if event["__typename"] == "RunFailureEvent"]
    assert any("Detected run worker status FAILED" in message for message in failures), failures
    [retry] = retries
    assert retry["status"] == "SUCCESS", retry
    [row] = [row for row in cluster.status(len(PARTITIONS) + 1) if row["partition_key"] == KILLED]
    assert row["source_rows"] == row["rejected"] + row["predictions"] and row["failed"] == 0, row
    valid, predicted, stored = predictions_by_partition(cluster.warehouse)[KILLED]
    assert 0 < valid == predicted == stored
    print(
        f"killed run on {killed_worker} failed by run monitoring and retried on {cluster.worker_of(retry)}: "
        f"{seconds:.0f} s from launch to the retry's end"
    )
