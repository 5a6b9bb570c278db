"""A whole Dagster cluster on this machine, as it would run on several: `make demo-cluster`.

PostgreSQL (the Dagster instance, and the warehouse when asked), Redis (Celery's broker and
result backend), Celery run workers, the daemon and the webserver, each on 127.0.0.1 and a free
port, each in its own process group, configured by the same `deploy/` files a real cluster uses.
The demo writes records, registers a model, backfills the newest partitions through the
webserver's GraphQL API (as the UI does), waits, and checks every partition's counts.

Settings come from `deploy/cluster.env`, overridden by the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

from celery import Celery

from batch_predict.servers import (
    HOST,
    ManagedProcess,
    PostgresServer,
    RedisServer,
    ServerError,
    free_port,
    kill_groups,
    process_start_time,
    stop_processes,
)

SETTINGS_FILE = Path("deploy") / "cluster.env"
INSTANCE_DATABASE = "dagster"
POSTGRES_PLACEHOLDER = "{postgres}"
# One queue for every run: deploy/dagster.yaml's default_queue.
QUEUE = "dagster"
TASK_ID_TAG = "dagster-celery/task_id"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
IN_PROGRESS_BACKFILL = ("REQUESTED", "CANCELING", "FAILING")
DONE_BACKFILL = ("COMPLETED", "COMPLETED_SUCCESS")

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


def backfill_variables(partitions: list[str], assets: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The variables of LAUNCH for an asset backfill of `partitions`, as the UI's *Materialize* dialog sends them."""
    return {
        "params": {
            "partitionNames": partitions,
            "assetSelection": [{"path": [name]} for name in assets],
            "fromFailure": False,
        }
    }


def range_backfill_variables(first: str, last: str, assets: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The variables of LAUNCH for an asset backfill of the partitions from `first` to `last`, as the UI's
    *Materialize all* dialog sends them (a range per asset, which the daemon splits by BackfillPolicy)."""
    selected = {"range": {"start": first, "end": last}}
    return {
        "params": {
            "partitionsByAssets": [{"assetKey": {"path": [name]}, "partitions": selected} for name in assets],
            "fromFailure": False,
        }
    }


BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status error { message } }
    ... on PythonError { message }
  }
}
"""
BACKFILL_RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status startTime endTime tags { key value } } }
  }
}
"""
PARTITION_KEYS = """
query Keys($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { partitionKeys } }
}
"""
CODE_LOADED = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"


class ClusterError(RuntimeError):
    """The cluster could not start, or a backfill did not finish; the message says what and where to look."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a settings file; `#` starts a comment line, blank lines are skipped."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ClusterError(f"{path}:{number}: expected KEY=VALUE, got {line!r}.")
        values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class ClusterSettings:
    """What `make demo-cluster` starts and where it keeps its files (deploy/cluster.env)."""

    root: Path
    folder: Path
    # A DuckDB file path, or `{postgres}/NAME` for database NAME on the cluster's PostgreSQL server.
    warehouse: str
    workers: int = 2
    concurrency: int = 1
    days: int = 14
    rows_per_day: int = 2000
    ui_port: int | None = None
    backfill_timeout_seconds: float = 900.0
    # Durability off (tests), for a server whose data is thrown away.
    fast_postgres: bool = False
    # Added to every process's environment (tests use it to activate a slow model).
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, environ: Mapping[str, str]) -> ClusterSettings:
        """deploy/cluster.env under `root`, each value overridden by the environment's."""
        values = read_env_file(root / SETTINGS_FILE) | {
            key: value for key, value in environ.items() if key.startswith("BATCH_PREDICT_CLUSTER_")
        }

        def number(name: str, default: int) -> int:
            raw = values.get(f"BATCH_PREDICT_CLUSTER_{name}", "") or str(default)
            try:
                parsed = int(raw)
            except ValueError:
                raise ClusterError(f"BATCH_PREDICT_CLUSTER_{name} must be a whole number, got {raw!r}.") from None
            if parsed < 0:
                raise ClusterError(f"BATCH_PREDICT_CLUSTER_{name} must not be negative, got {parsed}.")
            return parsed

        folder = Path(values.get("BATCH_PREDICT_CLUSTER_DIR") or "data/cluster")
        return cls(
            root=root,
            folder=folder if folder.is_absolute() else root / folder,
            warehouse=values.get("BATCH_PREDICT_CLUSTER_WAREHOUSE") or str(folder / "warehouse.duckdb"),
            workers=max(1, number("WORKERS", 2)),
            concurrency=max(1, number("WORKER_CONCURRENCY", 1)),
            days=max(1, number("DAYS", 14)),
            rows_per_day=max(1, number("ROWS_PER_DAY", 2000)),
            ui_port=number("UI_PORT", 0) or None,
            backfill_timeout_seconds=number("BACKFILL_TIMEOUT_SECONDS", 900),
        )


@dataclass(frozen=True)
class BackfillResult:
    backfill_id: str
    status: str
    runs: list[dict[str, Any]]
    seconds: float

    def latest_run_by_partition(self, partitions: list[str]) -> dict[str, dict[str, Any]]:
        """Each partition's newest run (a retried run's retry, not the failed original).

        An asset backfill's run names its partitions as a range (one partition, or up to
        BATCH_PREDICT_MAX_PARTITIONS_PER_RUN of them); a job's run names its one partition.
        """
        latest: dict[str, dict[str, Any]] = {}
        for run in sorted(self.runs, key=lambda run: run["startTime"] or 0):
            found = tags(run)
            first = found.get(RANGE_START_TAG, found.get(PARTITION_TAG))
            last = found.get(RANGE_END_TAG, first)
            if first is None or last is None:
                continue
            for key in partitions:
                if first <= key <= last:
                    latest[key] = run
        return latest


def tags(run: Mapping[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run.get("tags", [])}


class Cluster:
    """The servers and Dagster processes of a local cluster; a context manager that stops them all."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.folder = settings.folder
        self.logs = self.folder / "logs"
        self.home = self.folder / "dagster_home"
        self.bin = Path(sys.executable).parent
        self.postgres = PostgresServer(self.folder / "postgres", fast=settings.fast_postgres)
        self.redis = RedisServer(self.folder / "redis")
        self.workers: list[ManagedProcess] = []
        self.daemon: ManagedProcess | None = None
        self.webserver: ManagedProcess | None = None
        self.ui_port = 0
        self.env: dict[str, str] = {}
        self.warehouse = ""

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.webserver, self.daemon, *self.workers) if p is not None]

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.ui_port}"

    def start(self) -> Self:
        """Start everything and wait until the webserver has loaded the code and every worker answers."""
        for folder in (self.folder, self.logs, self.home):
            folder.mkdir(parents=True, exist_ok=True)
        self._stop_leftovers()
        self.postgres.start()
        self.redis.start()
        self._record_pids()
        instance_url = self.postgres.create_database(INSTANCE_DATABASE, exist_ok=True)
        self.warehouse = self._warehouse()
        shutil.copy(self.settings.root / "deploy" / "dagster.yaml", self.home / "dagster.yaml")
        # dagster-celery writes a fresh config module here at each worker start and never removes them.
        shutil.rmtree(self.home / "dagster_celery", ignore_errors=True)
        self.env = self._environment()
        self._run(["dagster", "instance", "migrate"], f"creating the Dagster instance's tables in {instance_url}")
        self.ui_port = self.settings.ui_port or free_port()
        for number in range(1, self.settings.workers + 1):
            self.workers.append(self._start_worker(f"w{number}"))
        self.daemon = self._start("daemon", ["dagster-daemon", "run", "-w", "workspace.yaml"])
        self.webserver = self._start(
            "webserver",
            ["dagster-webserver", "-w", "workspace.yaml", "-h", HOST, "-p", str(self.ui_port)],
        )
        self._record_pids()
        self._wait_until_ready()
        return self

    def stop(self) -> None:
        """Stop the Dagster processes (their whole process groups), then Redis and PostgreSQL."""
        stop_processes(self.processes)
        self.workers, self.daemon, self.webserver = [], None, None
        self.redis.stop()
        self.postgres.stop()
        (self.folder / "pids.json").unlink(missing_ok=True)

    def check(self) -> None:
        """Raise, with the process's log, if a process of the cluster has exited."""
        for process in self.processes:
            process.check()

    def batch_predict(self, *args: str, capture: bool = False) -> str:
        """Run `batch-predict ARGS` against the cluster's warehouse and folders; its output if captured."""
        done = subprocess.run(
            [str(self.bin / "batch-predict"), *args],
            cwd=self.settings.root,
            env=self.env,
            capture_output=capture,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(f"`batch-predict {' '.join(args)}` exited {done.returncode}.\n{done.stderr or ''}")
        return done.stdout or ""

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Ask the webserver's GraphQL API, as the UI does."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.ui_url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload: dict[str, Any] = json.loads(response.read())
        if payload.get("errors"):
            raise ClusterError(f"GraphQL error: {payload['errors']}")
        data: dict[str, Any] = payload["data"]
        return data

    def partition_keys(self, asset: str = "predictions") -> list[str]:
        """The asset's partition keys as the webserver has them, oldest first."""
        node = self.graphql(PARTITION_KEYS, {"path": [asset]})["assetNodeOrError"]
        return list(node.get("partitionKeys") or [])

    def launch_backfill(self, partitions: list[str], assets: tuple[str, ...] = ("inputs", "predictions")) -> str:
        """Launch an asset backfill as the UI's *Materialize* dialog does; its id."""
        launched = self.graphql(LAUNCH, backfill_variables(partitions, assets))["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise ClusterError(f"The backfill was not launched: {launched}")
        backfill_id: str = launched["backfillId"]
        return backfill_id

    def backfill(
        self, partitions: list[str], assets: tuple[str, ...] = ("inputs", "predictions"), timeout: float | None = None
    ) -> BackfillResult:
        """Launch an asset backfill as the UI does, and wait for it and its runs."""
        started = time.monotonic()
        return self.wait_for_backfill(self.launch_backfill(partitions, assets), started, timeout)

    def status(self, last: int) -> list[dict[str, Any]]:
        """`batch-predict status --last N --json`: the newest partitions' counts, read from the warehouse."""
        rows: list[dict[str, Any]] = json.loads(
            self.batch_predict("status", "--last", str(last), "--json", capture=True)
        )
        return rows

    def wait_for_backfill(self, backfill_id: str, started: float, timeout: float | None = None) -> BackfillResult:
        """Poll until the backfill is no longer in progress and none of its runs is; fail if a process died."""
        timeout = timeout or self.settings.backfill_timeout_seconds
        status = "REQUESTED"
        while True:
            self.check()
            found = self.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            status = found.get("status", found["__typename"])
            runs = self.backfill_runs(backfill_id)
            if status not in IN_PROGRESS_BACKFILL and all(run["endTime"] for run in runs):
                return BackfillResult(backfill_id, status, runs, time.monotonic() - started)
            if time.monotonic() - started > timeout:
                raise ClusterError(
                    f"Backfill {backfill_id} still {status} after {timeout:.0f} s; logs in {self.logs}.\n"
                    + "\n".join(f"{run['runId']}: {run['status']}" for run in runs)
                )
            time.sleep(1)

    def backfill_runs(self, backfill_id: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.graphql(BACKFILL_RUNS, {"id": backfill_id})["runsOrError"]["results"]
        return runs

    def worker_of(self, run: Mapping[str, Any]) -> str | None:
        """The name of the worker that received the run's Celery task, from the workers' logs."""
        task_id = tags(run).get(TASK_ID_TAG)
        if not task_id:
            return None
        needle = f"[{task_id}] received"
        for worker in self.workers:
            if needle in worker.log.read_text(errors="replace"):
                return worker.name
        return None

    def _warehouse(self) -> str:
        """The warehouse the runs write: a DuckDB path, or a database on the cluster's server (created when missing)."""
        configured = self.settings.warehouse
        if not configured.startswith(POSTGRES_PLACEHOLDER):
            path = Path(configured)
            return str(path if path.is_absolute() else self.settings.root / path)
        database = configured.removeprefix(POSTGRES_PLACEHOLDER).strip("/") or "batch_predict"
        return self.postgres.create_database(database, exist_ok=True)

    def _environment(self) -> dict[str, str]:
        """The environment of every process: deploy/dagster.yaml's variables and the app's folders."""
        data = self.folder
        return {
            # One partition per run, so the demo's backfill spreads over the workers; the environment wins.
            "BATCH_PREDICT_MAX_PARTITIONS_PER_RUN": "1",
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_POSTGRES_HOSTNAME": HOST,
            "DAGSTER_POSTGRES_PORT": str(self.postgres.port),
            "DAGSTER_POSTGRES_USER": "postgres",
            "DAGSTER_POSTGRES_PASSWORD": "",
            "DAGSTER_POSTGRES_DB": INSTANCE_DATABASE,
            "DAGSTER_CELERY_BROKER_URL": self.redis.url(0),
            "DAGSTER_CELERY_BACKEND_URL": self.redis.url(1),
            "DAGSTER_MAX_CONCURRENT_RUNS": str(self.settings.workers * self.settings.concurrency),
            "BATCH_PREDICT_WAREHOUSE": self.warehouse,
            "BATCH_PREDICT_LANDING": str(data / "landing"),
            "BATCH_PREDICT_LABELS": str(data / "labels"),
            "BATCH_PREDICT_MODELS": str(data / "models"),
            # Local to each worker's machine (here, one machine: each run's partition folder is locked).
            "BATCH_PREDICT_STAGING": str(data / "staging"),
            **self.settings.extra_env,
        }

    def _run(self, command: list[str], what: str) -> None:
        done = subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            cwd=self.settings.root,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(f"Failed {what}: `{' '.join(command)}` exited {done.returncode}.\n{done.stderr[-3000:]}")

    def _start(self, name: str, command: list[str]) -> ManagedProcess:
        return ManagedProcess(
            name,
            [str(self.bin / command[0]), *command[1:]],
            env=self.env,
            cwd=self.settings.root,
            log=self.logs / f"{name}.log",
        )

    def _start_worker(self, name: str) -> ManagedProcess:
        return self._start(
            name,
            [
                "dagster-celery",
                "worker",
                "start",
                "-A",
                "dagster_celery.app",
                "-y",
                str(self.settings.root / "deploy" / "celery.yaml"),
                "-q",
                QUEUE,
                "--name",
                name,
                "--",
                "--concurrency",
                str(self.settings.concurrency),
            ],
        )

    def _wait_until_ready(self, timeout: float = 180.0) -> None:
        """Until the webserver serves the code location and every worker answers a ping through the broker."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                if self.graphql(CODE_LOADED)["repositoriesOrError"].get("nodes"):
                    break
            except (OSError, urllib.error.URLError, ClusterError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"The webserver did not load the code location in {timeout:.0f} s; see {self.logs}.")
            time.sleep(1)
        app = Celery(broker=self.env["DAGSTER_CELERY_BROKER_URL"])
        expected = {worker.name for worker in self.workers}
        try:
            while True:
                self.check()
                answered = {name.partition("@")[0] for reply in app.control.ping(timeout=1.0) for name in reply}
                if expected <= answered:
                    return
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(expected - answered))
                    raise ClusterError(f"Celery workers {missing} did not answer in {timeout:.0f} s; see {self.logs}.")
        finally:
            app.close()

    def _record_pids(self) -> None:
        """Note each process group, so that a later start can stop what a killed runner left behind."""
        groups = {process.name: [process.pid, process.started] for process in self.processes}
        if self.redis.pid is not None:
            groups["redis"] = [self.redis.pid, process_start_time(self.redis.pid)]
        (self.folder / "pids.json").write_text(json.dumps(groups))

    def _stop_leftovers(self) -> None:
        """Stop the process groups a killed earlier runner left running on this folder (PostgreSQL stops its own)."""
        recorded = self.folder / "pids.json"
        if not recorded.exists():
            return
        groups = json.loads(recorded.read_text())
        alive = [pid for pid, started in groups.values() if started and process_start_time(pid) == started]
        if alive:
            print(f"stopping {len(alive)} process groups left running by an earlier cluster in {self.folder}")
            kill_groups(alive)
        recorded.unlink()


def check_counts(status: list[dict[str, Any]], result: BackfillResult, partitions: list[str]) -> list[str]:
    """What does not add up: a partition missing, counts that do not sum, a partition whose newest run failed."""
    problems = []
    by_key = {row["partition_key"]: row for row in status}
    latest = result.latest_run_by_partition(partitions)
    for key in partitions:
        row = by_key.get(key)
        if row is None:
            problems.append(f"{key}: not in the warehouse")
            continue
        worked = row["rejected"] + row["predictions"] + row["failed"]
        if row["source_rows"] != worked:
            problems.append(
                f"{key}: {row['source_rows']} source rows but {row['rejected']} rejected + "
                f"{row['predictions']} predicted + {row['failed']} failed = {worked}"
            )
        run = latest.get(key)
        if run is None or run["status"] != "SUCCESS":
            problems.append(f"{key}: its run is {run['status'] if run else 'missing'}")
    if result.status not in DONE_BACKFILL:
        problems.append(f"backfill {result.backfill_id} ended {result.status}")
    return problems


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def write_demo_inputs(cluster: Cluster, days: int, rows_per_day: int) -> None:
    """The newest `days` complete days of demo records and their labels, and the demo model as champion."""
    first = datetime.now(UTC).date() - timedelta(days=days)
    written = cluster.batch_predict(
        "demo-data", "--start", f"{first}", "--days", f"{days}", "--rows-per-day", f"{rows_per_day}", capture=True
    )
    print(written.rstrip())
    print(cluster.batch_predict("model", "train-demo", "--keep-alias", capture=True).rstrip())


def runs_by_worker(cluster: Cluster, result: BackfillResult) -> str:
    """`w1: 7, w2: 7`: how many of the backfill's runs each worker executed."""
    counts: dict[str, int] = {}
    for run in result.runs:
        worker = cluster.worker_of(run) or "unknown"
        counts[worker] = counts.get(worker, 0) + 1
    return ", ".join(f"{name}: {n}" for name, n in sorted(counts.items()))


def keep_ui_up(cluster: Cluster) -> None:
    """Until Ctrl-C (or SIGTERM), or until a process of the cluster exits."""
    print(f"Dagster UI on {cluster.ui_url} (Ctrl-C stops the cluster)")
    try:
        while True:
            cluster.check()
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping the cluster")


def demo(settings: ClusterSettings, keep_ui: bool) -> int:
    """Start the cluster, backfill the demo's partitions, print their status; 0 if every count adds up."""
    begun = time.monotonic()
    with Cluster(settings) as cluster:
        print(f"cluster up in {time.monotonic() - begun:.0f} s: Dagster UI {cluster.ui_url}")
        print(f"  instance   {cluster.postgres.url(INSTANCE_DATABASE)}")
        print(f"  warehouse  {cluster.warehouse}")
        print(f"  broker     {cluster.redis.url(0)}")
        print(f"  workers    {', '.join(w.name for w in cluster.workers)}; logs in {cluster.logs}")
        write_demo_inputs(cluster, settings.days, settings.rows_per_day)
        partitions = cluster.partition_keys()[-settings.days :]
        print(f"backfilling {len(partitions)} partitions ({partitions[0]} .. {partitions[-1]}) of inputs, predictions")
        result = cluster.backfill(partitions)
        print(
            f"backfill {result.backfill_id}: {result.status} in {result.seconds:.0f} s, "
            f"{len(result.runs)} runs ({runs_by_worker(cluster, result)})"
        )
        print(cluster.batch_predict("status", "--last", str(settings.days), capture=True).rstrip())
        problems = check_counts(cluster.status(settings.days), result, partitions)
        for problem in problems:
            print(f"does not add up: {problem}", file=sys.stderr)
        if not problems:
            print(
                f"every partition adds up (source = rejected + predicted + failed), all {len(partitions)} runs succeeded"
            )
        if keep_ui:
            keep_ui_up(cluster)
    print(f"stopped everything the cluster started ({time.monotonic() - begun:.0f} s in all)")
    return 1 if problems else 0


def main() -> int:
    """`python -m batch_predict.cluster`, from the project folder (`make demo-cluster`)."""
    root = Path.cwd()
    if not (root / SETTINGS_FILE).exists() or not (root / "workspace.yaml").exists():
        print(f"batch_predict.cluster: run it from the project folder (no {SETTINGS_FILE} here)", file=sys.stderr)
        return 2
    # Ctrl-C and SIGTERM both stop the cluster; a shell's background job starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        settings = ClusterSettings.load(root, os.environ)
        return demo(settings, keep_ui=not os.environ.get("NO_UI"))
    except KeyboardInterrupt:
        print("stopped the cluster", file=sys.stderr)
        return 130
    except (ClusterError, ServerError) as error:
        print(f"batch_predict.cluster: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
