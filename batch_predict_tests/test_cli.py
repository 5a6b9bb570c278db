import json
from pathlib import Path

import pytest

from batch_predict.cli import main
from batch_predict.settings import Settings

from .conftest import use_settings_in_environment


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    use_settings_in_environment(settings, monkeypatch)
    monkeypatch.setenv("DAGSTER_HOME", str(Path(settings.warehouse).parent / "dagster_home"))
    (Path(settings.warehouse).parent / "dagster_home").mkdir()
    return settings


def test_demo_train_materialize_status(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    # The default start makes the days end today, so the newest complete partitions have records.
    assert main(["demo-data", "--days", "3", "--rows-per-day", "200"]) == 0
    assert len(list(env.landing.glob("*/*.parquet"))) == 12
    assert main(["model", "train-demo"]) == 0
    assert "champion -> iris-logreg v1" in capsys.readouterr().out
    assert main(["materialize", "--last", "2"]) == 0
    capsys.readouterr()
    assert main(["status", "--last", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    newest_two = [row["partition_key"] for row in rows]
    assert len(newest_two) == 2 and newest_two == sorted(newest_two, reverse=True)
    for row in rows:
        assert {"partition_key", "source_rows", "inputs", "rejected", "predictions", "model_version"} <= set(row)
        assert row["predictions"] == row["inputs"] > 150
        assert row["source_rows"] == row["inputs"] + row["rejected"]
        assert row["model_version"] == "v1"
        assert row["every_input_predicted"] is True
    assert main(["status"]) == 0
    champion, *table = capsys.readouterr().out.splitlines()
    assert champion.startswith("champion: iris-logreg v1 (sklearn-joblib), trained ")
    assert "0.0 days ago, within the 30-day limit" in champion
    # Today's records wait for today's partition.
    unplaced, *table = table
    assert unplaced == "unplaced: 200 records (future_event_time: 200)"
    assert table[0].split()[:5] == ["partition", "source", "inputs", "rejected", "predicted"]
    # The two partitions were predicted now, after their deadlines (unless run before 06:00 UTC):
    # a line after the table says why they count as late.
    rows_shown = [line for line in table if not line.startswith("deadline: ")]
    assert len(rows_shown) == 3
    assert main(["model", "train-demo", "--age-days", "45", "--fail-share", "0.001"]) == 0
    assert main(["status"]) == 0
    champion = capsys.readouterr().out.splitlines()[1]
    assert "45.0 days ago, past BATCH_PREDICT_MODEL_MAX_AGE_DAYS=30 (warn)" in champion


def test_status_without_a_warehouse_says_what_to_do(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 2
    assert "No warehouse at" in capsys.readouterr().err


def test_a_bad_setting_is_reported_not_raised(
    env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BATCH_PREDICT_CHUNK_SIZE", "many")
    assert main(["status"]) == 2
    assert "BATCH_PREDICT_CHUNK_SIZE='many' is not valid" in capsys.readouterr().err


def test_demo_data_is_repeatable(env: Settings, tmp_path: Path) -> None:
    args = ["demo-data", "--start", "2026-03-01", "--days", "1", "--rows-per-day", "50"]
    assert main(args) == 0
    first = {p: p.read_bytes() for p in env.landing.rglob("*.parquet")}
    assert main(args) == 0
    assert {p: p.read_bytes() for p in env.landing.rglob("*.parquet")} == first


@pytest.mark.parametrize(
    "args",
    [
        ["materialize", "--last", "0"],
        ["materialize", "--last", "-3"],
        ["status", "--last", "-1"],
        ["status", "--last", "many"],
        ["errors", "--limit", "0"],
    ],
)
def test_counts_below_one_are_a_one_line_error(
    args: list[str], env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(args)
    assert raised.value.code == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"batch-predict {args[0]}: argument --")
    assert "give 1 or more" in line
    assert "Traceback" not in captured.err and captured.out == ""


def test_materialize_refuses_a_shrunken_partition_until_allow_shrink(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Landing files moved away (a retention job): the rerun writes nothing, `--allow-shrink` replaces it."""
    import shutil

    import duckdb

    def stored() -> list[tuple[str, int, int]]:
        with duckdb.connect(str(env.warehouse), read_only=True) as con:
            return con.execute(
                "SELECT partition_key, (SELECT count(*) FROM inputs i WHERE i.partition_key = s.partition_key), "
                "(SELECT count(*) FROM predictions p WHERE p.partition_key = s.partition_key) "
                "FROM input_stats s ORDER BY 1"
            ).fetchall()

    assert main(["demo-data", "--days", "3", "--rows-per-day", "100"]) == 0
    assert main(["model", "train-demo"]) == 0
    assert main(["materialize", "--last", "2"]) == 0
    before = stored()
    newest = before[-1][0]
    inputs, predictions = before[-1][1:]
    assert inputs == predictions > 90
    shutil.rmtree(env.landing / newest)
    capsys.readouterr()

    assert main(["materialize", "--last", "2"]) == 1
    assert f"partition {newest}: FAILED" in capsys.readouterr().out
    assert stored() == before

    assert main(["materialize", "--last", "2", "--allow-shrink"]) == 0
    assert stored() == [*before[:-1], (newest, 0, 0)]
    with duckdb.connect(str(env.warehouse), read_only=True) as con:
        [(archived,)] = con.execute(
            "SELECT count(*) FROM predictions_history WHERE partition_key = ?", [newest]
        ).fetchall()
    assert archived == predictions


def test_without_dagster_home_the_project_home_is_used(
    env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dagster as dg

    project = tmp_path / "project"
    project.mkdir()
    (project / "workspace.yaml").write_text("load_from: []\n")
    monkeypatch.chdir(project)
    monkeypatch.delenv("DAGSTER_HOME")
    assert main(["demo-data", "--days", "2", "--rows-per-day", "50"]) == 0
    assert main(["model", "train-demo"]) == 0
    capsys.readouterr()
    assert main(["materialize", "--last", "1"]) == 0
    err = capsys.readouterr().err
    assert f"batch-predict: DAGSTER_HOME is not set; using {project / 'dagster_home'} (the project's)" in err
    with dg.DagsterInstance.from_config(str(project / "dagster_home")) as instance:
        assert {run.job_name for run in instance.get_runs()} == {"model_job", "predictions_job", "monitoring_job"}


def test_without_dagster_home_outside_a_project_is_one_clear_line(
    env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME")
    assert main(["materialize", "--last", "1"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("batch-predict: DAGSTER_HOME is not set and ")
    assert "no workspace.yaml" in line and "export DAGSTER_HOME=" in line


def test_repredict_since_must_be_a_date(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("notadate", "2026-13-45", "0"):
        with pytest.raises(SystemExit) as raised:
            main(["repredict", "--since", bad, "--dry-run"])
        assert raised.value.code == 2
        [line] = capsys.readouterr().err.splitlines()
        assert "is not an ISO date or date-time such as 2026-03-01" in line


def test_materialize_before_the_first_partition_closed_says_so(
    env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    monkeypatch.setenv("BATCH_PREDICT_START", datetime.now(UTC).date().isoformat())
    assert main(["materialize", "--last", "1"]) == 0
    err = capsys.readouterr().err
    assert "no complete partition yet: the first daily partition starts at" in err
    assert "Nothing was run" in err


def test_status_survives_an_unreachable_model_source(env: Settings, tmp_path: Path) -> None:
    """An MLflow server that does not answer: status still shows the partitions and says why there is no champion."""
    import os
    import socket
    import subprocess
    import sys

    from batch_predict.contract import FeatureContract
    from batch_predict.warehouse import Warehouse

    with Warehouse(env.warehouse, FeatureContract.from_settings(env)).connect():
        pass  # an empty warehouse
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = sock.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "batch_predict.cli", "status"],
            env={
                **os.environ,
                "MLFLOW_TRACKING_URI": f"http://alice:s3cret@127.0.0.1:{port}",
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "BATCH_PREDICT_MODEL_URI": "models:/iris@champion",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("champion: none (")
    assert f"alice:***@127.0.0.1:{port}" in done.stdout
    assert "s3cret" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_a_closed_pipe_ends_the_output_quietly(env: Settings) -> None:
    """`batch-predict status | head -1`: the reader goes away before the output is written."""
    import subprocess
    import sys

    from batch_predict.contract import FeatureContract
    from batch_predict.warehouse import Warehouse

    with Warehouse(env.warehouse, FeatureContract.from_settings(env)).connect():
        pass
    process = subprocess.Popen(
        [sys.executable, "-m", "batch_predict.cli", "status", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the command has written anything
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_output_into_a_pipe_is_written_line_by_line(tmp_path: Path) -> None:
    """A `batch-predict` killed after printing a line (a long `materialize` killed part-way) has still
    written that line into a pipe or a file, where Python would otherwise hold it in a block buffer."""
    import os
    import subprocess
    import sys

    child = (
        "import os, signal\n"
        "from batch_predict.cli import main\n"
        "main(['demo-data', '--days', '1', '--rows-per-day', '5', '--start', '2026-03-01'])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child],
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
            "BATCH_PREDICT_LANDING": str(tmp_path / "landing"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9
    assert done.stdout.startswith("wrote 1 days x 5 records"), (done.stdout, done.stderr[-2000:])


def test_the_folders_dotenv_is_read_as_dagster_reads_it(
    env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`batch-predict` takes a `.env` in the folder it starts in over the environment, as every `dagster`
    command there does, for the command only; an unreadable one is a one-line error."""
    import os

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / ".env").write_text(f"BATCH_PREDICT_WAREHOUSE={folder / 'from-dotenv.duckdb'}\n")
    monkeypatch.setenv("BATCH_PREDICT_WAREHOUSE", str(tmp_path / "from-environment.duckdb"))
    monkeypatch.chdir(folder)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert f"No warehouse at {folder / 'from-dotenv.duckdb'}" in err, err
    assert os.environ["BATCH_PREDICT_WAREHOUSE"] == str(tmp_path / "from-environment.duckdb")
    (folder / ".env").write_bytes(b"BATCH_PREDICT_WAREHOUSE=\xff\xfe\n")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert f"Cannot read {folder / '.env'}" in err and "Traceback" not in err, err
    for content in (b"BATCH_PREDICT_WAREHOUSE=/tmp/a\x00b\n", b"'A=B'=x\n"):  # no environment takes them
        (folder / ".env").write_bytes(b"BATCH_PREDICT_CADENCE=hourly\n" + content)
        assert main(["status"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"Cannot use {folder / '.env'}" in err, err
        assert "BATCH_PREDICT_CADENCE" not in os.environ  # what was set before the bad line is taken back
