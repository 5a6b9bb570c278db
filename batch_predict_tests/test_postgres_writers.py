"""Many writers on one PostgreSQL warehouse, in real processes: exactly one copy of every record,
no waiting on another run's prediction work, duplicate ids settled the same way whatever the
timing, and a writer killed mid-publish leaves the old outcome whole."""

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from batch_predict.batch import predict_partition
from batch_predict.contract import FeatureContract
from batch_predict.demo import train_demo_model, write_landing
from batch_predict.models.registry import Registry
from batch_predict.models.types import LoadedModel
from batch_predict.servers import PostgresServer
from batch_predict.settings import IRIS_FEATURES, Settings
from batch_predict.warehouse import Source, Warehouse, WarehouseError

START = datetime(2026, 3, 1, tzinfo=UTC)
CONTRACT = FeatureContract("record_id", "event_time", IRIS_FEATURES)


def _window(day: int) -> tuple[str, datetime, datetime]:
    start = START + timedelta(days=day)
    return start.date().isoformat(), start, start + timedelta(days=1)


def _open(url: str, staging: Path) -> Warehouse:
    return Warehouse(url, CONTRACT, lock_timeout_seconds=60, staging_root=staging)


class _Paced:
    """Predicts like the model, taking at least `seconds` per batch; notes when its first batch began
    and its last ended."""

    def __init__(self, inner: Any, seconds: float, log: Path) -> None:
        self.inner, self.seconds, self.log = inner, seconds, log
        self.classes_ = inner.classes_

    def predict_proba(self, frame: Any) -> np.ndarray:
        begun = time.time()
        time.sleep(self.seconds)
        with self.log.open("a") as out:
            out.write(f"{begun} {time.time()}\n")
        return np.asarray(self.inner.predict_proba(frame))


def _writer(url: str, root: str, day: int, barrier: Any, pace: float) -> None:
    """One run on its own 'machine' (own staging folder): snapshot the partition, predict it, publish."""
    key, start, end = _window(day)
    warehouse = _open(url, Path(root) / f"staging-{os.getpid()}")
    loaded = Registry(Path(root) / "models").load("champion")
    if pace:
        log = Path(root) / f"predict-{os.getpid()}.log"
        loaded = LoadedModel(loaded.metadata, _Paced(loaded.estimator, pace, log), loaded.path)
    snapshot = (Source(Path(root) / "landing"), key, start, end, f"snap-{os.getpid()}")
    if pace:  # the snapshots done, all predict at once: any lock held across prediction would serialize them
        warehouse.snapshot_inputs(*snapshot)
        barrier.wait(timeout=120)
    else:  # the writers race on the snapshot and on the publish
        barrier.wait(timeout=120)
        warehouse.snapshot_inputs(*snapshot)
    predict_partition(warehouse, loaded, key, f"run-{os.getpid()}", chunk_size=100)


def _run_all(targets: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(targets))
    processes = [context.Process(target=target, args=(*args[:3], barrier, *args[3:])) for target, args in targets]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    codes = [process.exitcode for process in processes]
    assert codes == [0] * len(processes), f"writer exit codes {codes}"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_landing(tmp_path / "landing", START.date(), 4, 300, seed=3, files_per_day=2)
    train_demo_model(Registry(tmp_path / "models"), "champion")
    return tmp_path


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as con:
        return list(con.execute(sql).fetchall())


def test_four_writers_of_one_partition_leave_exactly_one_copy(postgres_url: str, project: Path) -> None:
    _open(postgres_url, project / "s").partition_status(1)  # the tables exist: the writers race on the replace
    _run_all([(_writer, (postgres_url, str(project), 0, 0.0)) for _ in range(4)])
    [(inputs, distinct_inputs)] = _rows(
        postgres_url, "SELECT count(*), count(DISTINCT record_id) FROM inputs WHERE partition_key = '2026-03-01'"
    )
    [(predictions, distinct)] = _rows(
        postgres_url, "SELECT count(*), count(DISTINCT record_id) FROM predictions WHERE partition_key = '2026-03-01'"
    )
    [(errors,)] = _rows(postgres_url, "SELECT count(*) FROM prediction_errors")
    [(source_rows, valid, rejected)] = _rows(
        postgres_url,
        "SELECT source_rows, valid_rows, rejected_rows FROM input_stats WHERE partition_key = '2026-03-01'",
    )
    assert inputs == distinct_inputs == valid
    assert predictions == distinct == valid and errors == 0
    assert source_rows == valid + rejected
    [(runs,)] = _rows(postgres_url, "SELECT count(DISTINCT run_id) FROM predictions")
    assert runs == 1  # the last publish replaced the partition as a whole
    status = _open(postgres_url, project / "s").partition_status(5)
    assert [row["every_input_predicted"] for row in status] == [True]


def test_four_writers_of_four_partitions_predict_at_the_same_time(postgres_url: str, project: Path) -> None:
    _run_all([(_writer, (postgres_url, str(project), day, 2.0)) for day in range(4)])
    spans = [
        tuple(float(x) for x in line.split())
        for log in project.glob("predict-*.log")
        for line in log.read_text().splitlines()
    ]
    by_process = [
        (
            min(float(line.split()[0]) for line in log.read_text().splitlines()),
            max(float(line.split()[1]) for line in log.read_text().splitlines()),
        )
        for log in project.glob("predict-*.log")
    ]
    assert len(by_process) == 4 and spans
    # Every process was predicting while every other one was: no lock is held across prediction work.
    assert max(begun for begun, _ in by_process) < min(ended for _, ended in by_process)
    rows = _rows(
        postgres_url,
        "SELECT i.partition_key, count(*), count(p.record_id) FROM inputs AS i LEFT JOIN predictions AS p "
        "USING (partition_key, record_id) GROUP BY 1 ORDER BY 1",
    )
    assert [key for key, _, _ in rows] == [_window(day)[0] for day in range(4)]
    assert all(inputs == predicted > 0 for _, inputs, predicted in rows)


def _snapshotter(url: str, root: str, day: int, barrier: Any) -> None:
    key, start, end = _window(day)
    warehouse = _open(url, Path(root) / "staging")
    barrier.wait(timeout=60)
    warehouse.snapshot_inputs(Source(Path(root) / "landing"), key, start, end, f"snap-{day}")


@pytest.mark.parametrize("order", ["together", "later-first", "earlier-first"])
def test_a_duplicate_id_in_two_partitions_snapshotted_at_once_is_kept_once(
    postgres_url: str, tmp_path: Path, order: str
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    features = {name: [1.0, 1.0] for name in IRIS_FEATURES}
    # Record "dup" is in both days' files; the copy of the first day is the earlier one and keeps the id.
    for day, ids in ((0, ["dup", "a"]), (1, ["dup", "b"])):
        times = [START + timedelta(days=day, hours=h) for h in (1, 2)]
        pd.DataFrame({"record_id": ids, "event_time": times, **features}).to_parquet(landing / f"day{day}.parquet")
    if order == "together":
        _run_all([(_snapshotter, (postgres_url, str(tmp_path), day)) for day in (0, 1)])
    else:
        for day in (1, 0) if order == "later-first" else (0, 1):
            _run_all([(_snapshotter, (postgres_url, str(tmp_path), day))])
    kept = _rows(postgres_url, "SELECT partition_key FROM inputs WHERE record_id = 'dup'")
    rejected = _rows(postgres_url, "SELECT partition_key, reason FROM rejected_inputs WHERE record_id = 'dup'")
    assert kept == [("2026-03-01",)]
    assert rejected == [("2026-03-02", "duplicate_record_id")]
    stats = _rows(postgres_url, "SELECT partition_key, valid_rows, rejected_rows FROM input_stats ORDER BY 1")
    assert stats == [("2026-03-01", 2, 0), ("2026-03-02", 1, 1)]


_PUBLISH = """
import sys
from pathlib import Path
from batch_predict.batch import predict_partition
from batch_predict.models.registry import Registry
from batch_predict_tests.test_postgres_writers import _open
url, root, alias, run_id = sys.argv[1:5]
warehouse = _open(url, Path(root) / "staging")
predict_partition(warehouse, Registry(Path(root) / "models").load(alias), "2026-03-01", run_id, chunk_size=100)
"""


def _publish(url: str, root: Path, alias: str, run_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _PUBLISH, url, str(root), alias, run_id], start_new_session=True)


def test_a_writer_killed_mid_publish_leaves_the_old_outcome_and_the_rerun_completes(
    postgres_url: str, project: Path
) -> None:
    registry = Registry(project / "models")
    train_demo_model(registry, "challenger", seed=11)
    key, start, end = _window(0)
    warehouse = _open(postgres_url, project / "staging")
    warehouse.snapshot_inputs(Source(project / "landing"), key, start, end, "snap")
    assert _publish(postgres_url, project, "champion", "old").wait(timeout=120) == 0
    before = _rows(postgres_url, "SELECT record_id, prediction, model_version, run_id FROM predictions ORDER BY 1")
    old_version = registry.load("champion").metadata.version
    assert {row[2] for row in before} == {old_version}

    # Hold the partition's stats row: the next publish blocks on it at its end, after it has already
    # replaced the partition's predictions inside its transaction.
    with psycopg.connect(postgres_url) as holder:
        holder.execute("SELECT * FROM prediction_stats WHERE partition_key = %s FOR UPDATE", [key])
        writer = _publish(postgres_url, project, "challenger", "killed")
        deadline = time.monotonic() + 120
        while True:
            waiting = _rows(
                postgres_url,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%DELETE FROM prediction_stats%'",
            )[0][0]
            if waiting:
                break
            assert writer.poll() is None, "the publish ended before it reached the held row"
            assert time.monotonic() < deadline, "the publish never reached the held row"
            time.sleep(0.05)
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        holder.rollback()

    assert (
        _rows(postgres_url, "SELECT record_id, prediction, model_version, run_id FROM predictions ORDER BY 1") == before
    )
    assert _rows(postgres_url, "SELECT count(*) FROM predictions_history")[0][0] == 0
    assert _publish(postgres_url, project, "challenger", "rerun").wait(timeout=120) == 0
    # The rerun resumed the chunks the killed run had staged (they keep its run id) and published them.
    new_version = registry.load("challenger").metadata.version
    after = _rows(
        postgres_url,
        "SELECT count(*), count(DISTINCT record_id), min(model_version), max(model_version) FROM predictions",
    )
    assert after == [(len(before), len(before), new_version, new_version)]
    assert _rows(postgres_url, "SELECT run_id, every_input_predicted FROM prediction_stats") == [("rerun", True)]
    [(archived,)] = _rows(
        postgres_url, f"SELECT count(*) FROM predictions_history WHERE model_version = '{old_version}'"
    )
    assert archived == len(before)


def test_a_lock_wait_past_the_timeout_is_a_retryable_error_and_changes_nothing(
    postgres_url: str, project: Path
) -> None:
    from batch_predict.warehouse import WarehouseLockTimeout

    key, start, end = _window(0)
    source = Source(project / "landing")
    _open(postgres_url, project / "s").snapshot_inputs(source, key, start, end, "first")
    impatient = Warehouse(postgres_url, CONTRACT, lock_timeout_seconds=1, staging_root=project / "s")
    with psycopg.connect(postgres_url) as holder:  # another writer, in the middle of its short write
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended('batch_predict:all', 0))")
        started = time.monotonic()
        with pytest.raises(WarehouseLockTimeout, match="lock_timeout"):
            impatient.snapshot_inputs(source, key, start, end, "second")
        assert time.monotonic() - started < 30
    assert _rows(postgres_url, "SELECT DISTINCT run_id FROM inputs") == [("first",)]


@pytest.mark.parametrize(
    ("password", "query"), [("hunter2", ""), ("hunter2'q", ""), ("hunter2?q", ""), ("", "?password='hunter2'")]
)
def test_an_unreachable_server_is_a_retryable_error_naming_it_without_its_password(password: str, query: str) -> None:
    from batch_predict.warehouse import WarehouseUnavailable

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    userinfo = f"alice:{password}" if password else "alice"
    warehouse = Warehouse(f"postgresql://{userinfo}@127.0.0.1:{port}/db{query}", CONTRACT, lock_timeout_seconds=2)
    with pytest.raises(WarehouseUnavailable) as raised:
        warehouse.partition_status(1)
    assert f"@127.0.0.1:{port}/db" in str(raised.value), raised.value
    assert "hunter2" not in str(raised.value), raised.value


@pytest.mark.parametrize("location", ["mysql://u@h/db", "s3://bucket/warehouse.duckdb", "sqlite:///x.db"])
def test_a_warehouse_url_of_another_database_names_the_supported_ones(location: str) -> None:
    from batch_predict.settings import SettingsError, load_settings
    from batch_predict.warehouse import WarehouseError

    with pytest.raises(SettingsError, match="postgresql://user@host:port/database"):
        load_settings({"BATCH_PREDICT_WAREHOUSE": location})
    with pytest.raises(WarehouseError, match="DuckDB file path .* or a PostgreSQL URL"):
        Warehouse(location, CONTRACT)


@pytest.mark.parametrize("port", ["abc", "99999"])
def test_a_warehouse_url_with_a_bad_port_fails_at_load(port: str) -> None:
    from batch_predict.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="with a port from 1 to 65535") as raised:
        load_settings({"BATCH_PREDICT_WAREHOUSE": f"postgresql://alice:Hunter2Secret@127.0.0.1:{port}/db"})
    assert "Hunter2Secret" not in str(raised.value)


@pytest.mark.parametrize(
    "location",
    ["postgresql://alice:Hunter2Secret@[::1:5432/db", "postgresql://alice:Hunter2Secret@127.0.0.1:1/db?nosuch=1"],
)
def test_a_malformed_warehouse_url_is_a_clear_error_without_its_password(location: str) -> None:
    from batch_predict.warehouse import WarehouseError

    with pytest.raises(WarehouseError) as raised:
        Warehouse(location, CONTRACT, lock_timeout_seconds=2).partition_status(1)
    assert "Hunter2Secret" not in str(raised.value) and raised.value.__cause__ is None
    assert "BATCH_PREDICT_WAREHOUSE" in str(raised.value)


def _refusing_urls(server: PostgresServer, url: str) -> dict[str, str]:
    """URLs the server refuses: a database and a role that do not exist, and a wrong password (a role
    that logs in with scram-sha-256, added for the test)."""
    with psycopg.connect(server.url(), autocommit=True) as con:
        if not con.execute("SELECT 1 FROM pg_roles WHERE rolname = 'pwcheck'").fetchone():
            con.execute("CREATE ROLE pwcheck LOGIN PASSWORD 'RightPassword'")
            con.execute("CREATE ROLE cannotlogin NOLOGIN")
            hba = server.data / "pg_hba.conf"
            hba.write_text("host all pwcheck 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            con.execute("SELECT pg_reload_conf()")
    base = f"127.0.0.1:{server.port}"
    database = url.rsplit("/", 1)[1]
    return {
        "missing database": f"postgresql://postgres@{base}/nosuchdb",
        "missing role": f"postgresql://nosuchrole@{base}/{database}",
        "wrong password": f"postgresql://pwcheck:Hunter2Secret@{base}/{database}",
        # masked in the server's words, this password would make them "authentication *** for user"
        "wrong password that reads failed": f"postgresql://pwcheck:failed@{base}/{database}",
        "role that cannot log in": f"postgresql://cannotlogin@{base}/{database}",
        # masked in the server's words, this password would hide the role it names
        "wrong password that is the role's name": f"postgresql://pwcheck:pwcheck@{base}/{database}",
    }


_NAMED = {"missing database": "nosuchdb", "missing role": "nosuchrole", "role that cannot log in": "cannotlogin"}


@pytest.mark.parametrize(
    "case",
    [
        "missing database",
        "missing role",
        "wrong password",
        "wrong password that reads failed",
        "role that cannot log in",
        "wrong password that is the role's name",
    ],
)
def test_a_refused_connection_is_not_retried_and_says_what_to_check(
    case: str, postgres_server: PostgresServer, postgres_url: str
) -> None:
    """A wrong password, or a user or database that does not exist, fails at once: no retry can fix it."""
    from batch_predict.warehouse import WarehouseLockTimeout

    url = _refusing_urls(postgres_server, postgres_url)[case]
    with pytest.raises(WarehouseError) as raised:
        Warehouse(url, CONTRACT, lock_timeout_seconds=2).partition_status(1)
    message = str(raised.value)
    assert not isinstance(raised.value, WarehouseLockTimeout), message
    assert "refused the connection" in message and "BATCH_PREDICT_WAREHOUSE" in message, message
    assert "Hunter2Secret" not in message
    assert f'"{_NAMED.get(case, "pwcheck")}"' in message, message  # the server's words name who or what


def test_materialize_against_a_refusing_warehouse_is_one_line(
    postgres_server: PostgresServer,
    postgres_url: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`batch-predict materialize` checks the server before it starts any run; with a server that takes it,
    it runs."""
    from batch_predict.cli import main

    from .conftest import use_settings_in_environment

    use_settings_in_environment(settings, monkeypatch)
    home = Path(settings.warehouse).parent / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("BATCH_PREDICT_WAREHOUSE", _refusing_urls(postgres_server, postgres_url)["missing database"])
    assert main(["materialize", "--last", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused the connection" in err, err
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("BATCH_PREDICT_WAREHOUSE", f"postgresql://alice@127.0.0.1:{port}/db")
    assert main(["materialize", "--last", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Cannot reach the warehouse" in err and "no run was started" in err, err
    assert "tries again" not in err, err
    assert not (home / "storage").exists()  # no run was started
    monkeypatch.setenv("BATCH_PREDICT_WAREHOUSE", postgres_url)
    assert main(["demo-data", "--days", "2", "--rows-per-day", "100"]) == 0
    assert main(["model", "train-demo"]) == 0
    assert main(["materialize", "--last", "1"]) == 0
    assert _rows(postgres_url, "SELECT count(*) > 0 FROM predictions") == [(True,)]


@pytest.mark.parametrize(
    "location",
    [
        "postgresql//alice:Hunter2Secret@127.0.0.1:5432/wh",
        "postgresql:/alice:Hunter2Secret@127.0.0.1:5432/wh",
        "alice:Hunter2Secret@127.0.0.1:5432/wh",
        "host=127.0.0.1 password=Hunter2Secret dbname=wh",
        # passwords of every shape libpq and a typo allow: quoted, with spaces, "@", "/" or ":" in them
        "host=h user=alice password='Hunter2 Secret' dbname=wh",
        'user=alice password="Hunter2Secret"',
        "host=h password = Hunter2Secret dbname=wh",
        "password=Hunter2Secret host=h dbname=wh",
        "postgresql//alice:Hunter2/Secret@h/wh",
        "postgresql//alice:Hunter2 Secret@h/wh",
        "alice:Hunter2:Secret@h:5432/wh",
        "postgresql:/alice:Hunter2@Secret@h/wh",
        "alice:Hunter2Secret@h/wh",
        "alice:Hunter2@Secret@h:5432/wh",
        "alice:Hunter2 Secret@h:5432/wh",
        "postgresql:://alice:Hunter2Secret@h/wh",
        "postgresql ://alice:Hunter2Secret@h/wh",
        "postgresql:alice:Hunter2Secret@h/wh",
        "postgresql//h/wh?password=Hunter2 Secret",
        "host=h password=Hunter2\\ Secret dbname=wh",
        "host=h sslpassword='Hunter2 Secret'",
        "connect_timeout=5 password=Hunter2Secret host=h",
        "options=-c password=Hunter2Secret",
    ],
)
def test_a_mistyped_postgresql_url_is_not_taken_for_a_file_path(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL whose "://" is mistyped would otherwise become a DuckDB file named after it, password and all."""
    from batch_predict.settings import SettingsError, load_settings

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="looks like one with a mistyped or missing 'postgresql://'") as raised:
        load_settings({"BATCH_PREDICT_WAREHOUSE": location})
    assert "Hunter2" not in str(raised.value) and "Secret" not in str(raised.value), raised.value
    assert list(tmp_path.iterdir()) == []
    # File paths that only start alike, and a name that looks like a URL written as the message says.
    for path in (
        "postgres.duckdb",
        "data/postgresql/wh.duckdb",
        "postgres/wh.duckdb",
        "postgres:archive.duckdb",
        "run=1/wh.duckdb",
        "./a@h:5432/wh.duckdb",
    ):
        assert load_settings({"BATCH_PREDICT_WAREHOUSE": path}).warehouse == str((tmp_path / path).resolve())


@pytest.mark.parametrize(
    "location",
    [
        "postgresql://alice:Hunter2/Secret@h/wh",
        "postgresql://alice:1234/Hunter2Secret@h/wh",  # libpq would take alice:1234 for the host and port
        "postgresql://alice:Hunter2 Secret@h/wh",
        "postgresql://h/wh?password=Hunter2 Secret",
        "postgresql://alice:Hunter2Secret@[::1/wh",
        "postgresql://alice:Hunter2@Secret@h/db",  # libpq would take Secret@h for the host
        "postgresql://alice:1234/Hunter2Secret@h",  # ... host alice, port 1234, database Hunter2Secret@h
        "postgresql://alice:/Hunter2Secret@h?sslmode=require",
        'postgresql://alice:Hunter2"Secret@[::1/db',  # libpq quotes what it cannot read, unescaped
        'postgresql://alice:Hunter2 "Secret@h/db',
        'postgresql://alice:Hunter2"Secret%zz@h/db',
        "postgresql://alice:Hunter2%ffSecret@h/db",  # not UTF-8 once decoded
        "mysql://alice:Hunter2Secret@h/db",
    ],
)
def test_a_warehouse_url_that_libpq_would_misread_fails_at_load_without_its_password(location: str) -> None:
    """A raw "/" or space in the password would be read as the end of the host or of the URL."""
    from batch_predict.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="BATCH_PREDICT_WAREHOUSE") as raised:
        load_settings({"BATCH_PREDICT_WAREHOUSE": location})
    assert "Hunter2" not in str(raised.value) and "Secret" not in str(raised.value), raised.value


@pytest.mark.parametrize(
    "location",
    [
        "postgresql://h1:5432,h2:5433/wh",  # several hosts, tried in turn
        "postgresql://alice@127.0.0.1:5432/?service=wh",  # a service file names the database
        "postgresql://alice:p%40ss@[::1]:5432/wh",  # IPv6, a percent-encoded password
        "postgresql://alice@[fe80::1%25eth0]:5432/wh",
        "postgresql:///wh?host=/var/run/postgresql",  # a Unix socket
        "postgres://alice@h/wh",
        "postgresql://alice:ab?c@h/wh",  # libpq reads the password up to the "@"
    ],
)
def test_a_valid_postgresql_url_is_taken_as_it_is(location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from batch_predict.settings import load_settings

    monkeypatch.delenv("PGDATABASE", raising=False)
    monkeypatch.delenv("PGSERVICE", raising=False)
    assert load_settings({"BATCH_PREDICT_WAREHOUSE": location}).warehouse == location


def test_a_postgresql_url_without_its_database_fails_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq would connect to the database named as the user, often the server's own `postgres`."""
    from batch_predict.settings import SettingsError, load_settings

    monkeypatch.delenv("PGDATABASE", raising=False)
    for location in ("postgresql://alice@127.0.0.1:5432", "postgresql://alice@127.0.0.1:5432/"):
        with pytest.raises(SettingsError, match="names its database"):
            load_settings({"BATCH_PREDICT_WAREHOUSE": location})
    assert load_settings({"BATCH_PREDICT_WAREHOUSE": "postgresql://alice@h:5432/?dbname=wh"}).warehouse.endswith("wh")
    monkeypatch.setenv("PGDATABASE", "wh")
    assert load_settings({"BATCH_PREDICT_WAREHOUSE": "postgresql://alice@h:5432"}).warehouse
    monkeypatch.delenv("PGDATABASE")
    monkeypatch.setenv("PGSERVICE", "wh")  # a service of the service file may name it
    assert load_settings({"BATCH_PREDICT_WAREHOUSE": "postgresql://alice@h:5432"}).warehouse
