"""Runs whose process dies or is stopped: real `batch-predict` processes, SIGKILL, SIGINT and SIGTERM."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from batch_predict.definitions import build_definitions
from batch_predict.demo import train_demo_model, write_landing
from batch_predict.models.registry import Registry
from batch_predict.runs import HOST_TAG, PID_START_TAG, PID_TAG, RUN_TAG, sweep_dead_runs, worker_tags
from batch_predict.settings import load_settings
from batch_predict_tests.slow_model import SlowClassifier

REPO = Path(__file__).resolve().parents[1]
ROWS_PER_DAY = 200


class Project:
    """A project folder in a temp dir: settings, landing files of the 3 newest days, a slow champion, a DAGSTER_HOME."""

    def __init__(self, root: Path, fast_batches: int) -> None:
        self.root = root
        self.home = root / "dagster_home"
        self.home.mkdir()
        shutil.copy(REPO / "dagster_home" / "dagster.yaml", self.home / "dagster.yaml")
        self.busy_marker = root / "model_busy"
        self.settings_env = {
            "BATCH_PREDICT_WAREHOUSE": str(root / "warehouse.duckdb"),
            "BATCH_PREDICT_LANDING": str(root / "landing"),
            "BATCH_PREDICT_MODELS": str(root / "models"),
            "BATCH_PREDICT_LABELS": str(root / "labels"),
            "BATCH_PREDICT_START": "2026-03-01",
            # A run waiting for another's warehouse lock stays STARTED for the whole test.
            "BATCH_PREDICT_LOCK_TIMEOUT_SECONDS": "600",
        }
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BATCH_PREDICT_", "DAGSTER_"))},
            **self.settings_env,
            "DAGSTER_HOME": str(self.home),
            "PYTHONPATH": str(REPO),
            "SLOW_MODEL_ACTIVE": "1",
        }
        self.settings = load_settings(self.settings_env)
        today = datetime.now(UTC).date()
        write_landing(self.settings.landing, today - timedelta(days=3), 3, ROWS_PER_DAY, seed=7, files_per_day=1)
        registry = Registry(self.settings.models)
        demo = train_demo_model(registry, "champion")
        estimator = registry.load("champion").estimator
        metadata = registry.register(
            SlowClassifier(estimator, self.busy_marker, fast_batches=fast_batches),
            name="iris-slow",
            trained_at=datetime.now(UTC),
            features=[{"name": name, "dtype": "float64"} for name in self.settings.features],
            metrics=demo.metrics,
            training_window={"start": None, "end": None, "source": "test"},
        )
        registry.set_alias("champion", metadata.version)
        self.keys = (
            build_definitions(self.settings).resolve_job_def("predictions_job").partitions_def.get_partition_keys()
        )  # type: ignore[union-attr]

    def start(self, *args: str) -> subprocess.Popen[str]:
        """`batch-predict ARGS` as a real process in its own process group."""
        return subprocess.Popen(
            [sys.executable, "-m", "batch_predict.cli", *args],
            cwd=self.root,
            env=self.env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Every process a test starts; each process group is killed at the end, whatever happened."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def wait_for(what: str, condition: Callable[[], Any], limit: float = 240) -> Any:
    """Poll until `condition()` is truthy (its value is returned); fail naming `what` after `limit` seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def runs_of(instance: dg.DagsterInstance, job: str, *statuses: dg.DagsterRunStatus) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(job_name=job, statuses=list(statuses) or None)))


def kill_group(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_a_killed_materialize_run_is_failed_by_dead_run_sensor(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    project = Project(tmp_path, fast_batches=0)
    processes.append(project.start("materialize", "--last", "1"))
    with project.instance() as instance:
        wait_for("the model to be busy", project.busy_marker.exists)
        [run] = runs_of(instance, "predictions_job", dg.DagsterRunStatus.STARTED)
        assert run.tags[PID_TAG] == str(processes[0].pid)
        assert run.tags[HOST_TAG] and run.tags[PID_START_TAG]
        kill_group(processes[0])
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]

        sensor = build_definitions(project.settings).resolve_sensor_def("dead_run_sensor")
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.minimum_interval_seconds == 60
        with dg.build_sensor_context(instance=instance) as context:
            tick = sensor.evaluate_tick(context)
        assert run.run_id in (tick.skip_message or "")

        after = instance.get_run_by_id(run.run_id)
        assert after is not None and after.status == dg.DagsterRunStatus.FAILURE
        [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert f"The process that ran this run (PID {processes[0].pid} on " in (failure.message or "")
        assert "is gone" in (failure.message or "")
        # The model run before it ended normally and is left alone.
        assert [r.status for r in runs_of(instance, "model_job")] == [dg.DagsterRunStatus.SUCCESS]


def test_four_killed_runs_do_not_keep_a_fifth_from_starting(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    project = Project(tmp_path, fast_batches=0)
    # Four runs of one partition: one predicts (slowly), three wait for its warehouse or staging
    # lock; all four are STARTED, the instance's max_concurrent_runs.
    processes.extend(project.start("materialize", "--last", "1") for _ in range(4))
    with project.instance() as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4  # type: ignore[union-attr]
        wait_for("the model to be busy", project.busy_marker.exists)
        started = wait_for(
            "four STARTED prediction runs",
            lambda: (
                (found := runs_of(instance, "predictions_job", dg.DagsterRunStatus.STARTED))
                and len(found) == 4
                and found
            ),
        )
        for process in processes:
            kill_group(process)
        in_flight = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert {run.run_id for run in in_flight} == {run.run_id for run in started}

        launched = subprocess.run(
            [
                str(Path(sys.executable).parent / "dagster"),
                "job",
                "launch",
                "-m",
                "batch_predict.definitions",
                "-j",
                "monitoring_job",
            ],
            cwd=project.root,
            env=project.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        [queued] = runs_of(instance, "monitoring_job")
        assert queued.status == dg.DagsterRunStatus.QUEUED, launched.stderr

        sweep = subprocess.run(
            [sys.executable, "-m", "batch_predict.cli", "sweep"],
            cwd=project.root,
            env=project.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sweep.returncode == 0, sweep.stderr
        for run in started:
            assert f"run {run.run_id} (predictions_job) was STARTED but its process (PID " in sweep.stderr
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]

        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m", "batch_predict.definitions"],
            cwd=project.root,
            env=project.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(daemon)  # type: ignore[arg-type]
        fifth = wait_for(
            "the queued fifth run to be launched by the daemon",
            lambda: (run := instance.get_run_by_id(queued.run_id)) and run.status != dg.DagsterRunStatus.QUEUED and run,
        )
        assert fifth.status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS)
        # The daemon's run worker records itself too (the resource hook, not the CLI).
        tagged = wait_for(
            "the fifth run's worker tags",
            lambda: (run := instance.get_run_by_id(queued.run_id)) and PID_TAG in run.tags and run,
        )
        assert tagged.tags[PID_TAG] not in {str(p.pid) for p in processes}


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_cancels_the_run_in_flight_and_stops_the_loop(
    tmp_path: Path, processes: list[subprocess.Popen[str]], signum: signal.Signals, code: int
) -> None:
    project = Project(tmp_path, fast_batches=1)
    first, second, third = project.keys[-3:]
    process = project.start("materialize", "--last", "3")
    processes.append(process)
    wait_for("the second partition's model to be busy", project.busy_marker.exists)
    os.killpg(process.pid, signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code
    # One line from the command (Dagster's log-tailing child, in the same process group, may
    # print its own KeyboardInterrupt).
    summary = f"batch-predict: interrupted by {signum.name}: 1 of 3 partitions done, {second} canceled, 1 not started."
    assert [line for line in err.splitlines() if "interrupted by" in line] == [summary]
    with project.instance() as instance:
        by_partition = {run.tags.get("dagster/partition"): run.status for run in runs_of(instance, "predictions_job")}
        assert by_partition == {first: dg.DagsterRunStatus.SUCCESS, second: dg.DagsterRunStatus.CANCELED}
    with duckdb.connect(str(project.settings.warehouse), read_only=True) as con:
        counts = dict(con.execute("SELECT partition_key, count(*) FROM predictions GROUP BY ALL").fetchall())
    # The first partition is fully published; the canceled one has nothing (never half).
    assert counts == {first: con_inputs(project, first)}
    assert third not in counts


def con_inputs(project: Project, key: str) -> int:
    with duckdb.connect(str(project.settings.warehouse), read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM inputs WHERE partition_key = ?", [key]).fetchall()[0][0])


def test_old_staging_no_run_holds_is_removed_and_the_rest_kept(tmp_path: Path) -> None:
    import fcntl

    from batch_predict.batch import remove_stale_staging

    root = tmp_path / "staging"
    old = time.time() - 49 * 3600
    for name in ("2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"):
        (root / name / "chunks").mkdir(parents=True)
        (root / name / "chunks" / "part-0.parquet").write_bytes(b"staged")
        (root / f"{name}.lock").touch()
    (root / "2026-03-05.lock").touch()  # a lock file whose folder is gone
    for path in root.rglob("*"):
        if "2026-03-03" not in path.name and "2026-03-03" not in str(path.parent):
            os.utime(path, (old, old))
    # 2026-03-02: a run holds its lock (it is in flight), however old its files are.
    with (root / "2026-03-02.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        removed = remove_stale_staging(root, max_age_hours=48)
    assert removed == ["2026-03-01", "2026-03-04", "2026-03-05"]
    assert sorted(p.name for p in root.iterdir()) == ["2026-03-02", "2026-03-02.lock", "2026-03-03", "2026-03-03.lock"]
    # 2026-03-03 is young: its staged chunks stay for the partition's next run to resume.
    assert (root / "2026-03-03" / "chunks" / "part-0.parquet").read_bytes() == b"staged"


def test_the_sweep_verb_removes_old_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from batch_predict.cli import main

    project = Project(tmp_path, fast_batches=0)
    for name, value in {**project.settings_env, "DAGSTER_HOME": str(project.home)}.items():
        monkeypatch.setenv(name, value)
    stale = project.settings.staging / "2026-03-01"
    stale.mkdir(parents=True)
    old = time.time() - 49 * 3600
    os.utime(stale, (old, old))
    assert main(["sweep"]) == 0
    assert not stale.exists()
    assert "removed the staging of partition 2026-03-01" in capsys.readouterr().err


def test_an_in_process_run_records_its_worker(tmp_path: Path) -> None:
    """`dagster asset materialize` and the daemon's run workers record themselves through the `source` resource."""
    project = Project(tmp_path, fast_batches=10**6)
    with project.instance() as instance:
        result = build_definitions(project.settings).resolve_job_def("model_job").execute_in_process(instance=instance)
        run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags[PID_TAG] == str(os.getpid())
    assert run.tags[HOST_TAG] and run.tags[PID_START_TAG]
    assert run.tags[RUN_TAG] == run.run_id


def dead_worker_tags(run_id: str) -> dict[str, str]:
    """The worker tags of a process that has ended."""
    process = subprocess.Popen(["sleep", "60"])
    tags = worker_tags(run_id, pid=process.pid)
    process.kill()
    process.wait(timeout=30)
    assert tags[PID_START_TAG]
    return tags


def test_a_cli_run_killed_before_it_started_is_failed(tmp_path: Path) -> None:
    """`batch-predict` creates its in-process runs with their worker tags: a kill between the run's creation
    and its RUN_START leaves it NOT_STARTED, and the sweep fails it (it would show as in progress for good)."""
    with dg.DagsterInstance.ephemeral() as instance:
        dead = dg.DagsterRun(job_name="predictions_job", run_id="1" * 36, status=dg.DagsterRunStatus.NOT_STARTED)
        instance.add_run(dead.with_tags(dead_worker_tags(dead.run_id)))
        alive = dg.DagsterRun(job_name="predictions_job", run_id="2" * 36, status=dg.DagsterRunStatus.NOT_STARTED)
        instance.add_run(alive.with_tags(worker_tags(alive.run_id)))

        [swept] = sweep_dead_runs(instance)
        assert swept.run_id == dead.run_id
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        [failure] = instance.all_logs(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert "before the run started" in (failure.message or "")
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.NOT_STARTED  # type: ignore[union-attr]


def test_a_retry_is_not_failed_for_its_parents_dead_worker(tmp_path: Path) -> None:
    """Dagster's run retries copy the parent's tags, so a retry starting names the parent's (dead) worker until
    its own records itself: it is left alone. Tags of an earlier release, without the run's id, still count,
    unless the run has a parent."""
    with dg.DagsterInstance.ephemeral() as instance:
        parent_tags = dead_worker_tags("4" * 36)
        retry = dg.DagsterRun(job_name="predictions_job", run_id="5" * 36, status=dg.DagsterRunStatus.STARTING)
        instance.add_run(retry.with_tags({**parent_tags, "dagster/parent_run_id": "4" * 36}))
        earlier_tags = {k: v for k, v in parent_tags.items() if k != RUN_TAG}
        earlier = dg.DagsterRun(job_name="predictions_job", run_id="6" * 36, status=dg.DagsterRunStatus.STARTED)
        instance.add_run(earlier.with_tags(earlier_tags))
        # A retry of a run an earlier release tagged: its tags may be the parent's, so they are not its own.
        earlier_retry = dg.DagsterRun(
            job_name="predictions_job",
            run_id="7" * 36,
            status=dg.DagsterRunStatus.NOT_STARTED,
            parent_run_id=earlier.run_id,
            root_run_id=earlier.run_id,
        )
        instance.add_run(earlier_retry.with_tags(earlier_tags))

        assert [run.run_id for run in sweep_dead_runs(instance)] == [earlier.run_id]
        assert instance.get_run_by_id(retry.run_id).status == dg.DagsterRunStatus.STARTING  # type: ignore[union-attr]
        assert instance.get_run_by_id(earlier_retry.run_id).status == dg.DagsterRunStatus.NOT_STARTED  # type: ignore[union-attr]


BLOCKED_DEFINITIONS = """
import os
import time
from pathlib import Path

import dagster as dg


class Blocker(dg.ConfigurableResource):
    marker: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        Path(self.marker).write_text(str(os.getpid()))
        time.sleep(600)


@dg.asset
def blocked(blocker: Blocker) -> None:
    pass


defs = dg.Definitions(
    assets=[blocked], resources={"blocker": Blocker(marker=os.environ["BLOCKED_MARKER"])}, executor=dg.in_process_executor
)
"""


def test_a_run_killed_before_its_resources_start_is_failed_by_its_run_start_event(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """A `dagster asset materialize` killed between RUN_START and its resources' start has no worker tags."""
    from batch_predict.runs import run_storage_is_local, sweep_dead_runs

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    (tmp_path / "blocked.py").write_text(BLOCKED_DEFINITIONS)
    # Make the instance's SQLite storages before the child opens them: two processes creating them at
    # once can both try to create the same table.
    with dg.DagsterInstance.from_config(str(home)) as made:
        assert made.run_storage and made.event_log_storage and made.schedule_storage
    marker = tmp_path / "resources_starting"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")},
        "DAGSTER_HOME": str(home),
        "BLOCKED_MARKER": str(marker),
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-f",
            "blocked.py",
            "--select",
            "blocked",
        ],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    processes.append(process)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert run_storage_is_local(instance) and run_storage_is_local(dg.DagsterInstance.ephemeral())
        # A run not started yet (no RUN_START event) is left to run monitoring's start timeout.
        starting = dg.DagsterRun(job_name="blocked_job", run_id="0" * 36, status=dg.DagsterRunStatus.STARTING)
        instance.add_run(starting)
        wait_for("the run's resources to start", marker.exists)
        assert marker.read_text() == str(process.pid)
        [run] = runs_of(instance, "__ASSET_JOB", dg.DagsterRunStatus.STARTED)
        assert PID_TAG not in run.tags

        # Its RUN_START process is alive: the run is left alone.
        assert sweep_dead_runs(instance) == []
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]

        kill_group(process)
        [swept] = sweep_dead_runs(instance)
        assert (swept.run_id, swept.pid) == (run.run_id, str(process.pid))
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert f"The process that ran this run (PID {process.pid} on " in (failure.message or "")
        assert "identified by the run's RUN_START event" in (failure.message or "")
        assert instance.get_run_by_id(starting.run_id).status == dg.DagsterRunStatus.STARTING  # type: ignore[union-attr]
