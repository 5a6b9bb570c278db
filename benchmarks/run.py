"""The benchmark suite behind `make bench`: throughput, peak memory and backfill time.

Every figure is measured in this one process run together with its baseline, so the
ratios hold on a noisy machine. Prints a table and writes benchmarks/results.json.

    python benchmarks/run.py [--rows 1000000] [--big-rows 10000000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

FEATURES = tuple(f"f{i}" for i in range(16))
warnings.filterwarnings("ignore", message="X does not have valid feature names")
PARTITION = "2026-01-01"
HERE = Path(__file__).resolve().parent


def env_for(root: Path, **extra: str) -> dict[str, str]:
    return {
        "BATCH_PREDICT_WAREHOUSE": str(root / "warehouse.duckdb"),
        "BATCH_PREDICT_LANDING": str(root / "landing"),
        "BATCH_PREDICT_LABELS": str(root / "labels"),
        "BATCH_PREDICT_MODELS": str(root / "models"),
        "BATCH_PREDICT_START": "2025-01-01",
        "BATCH_PREDICT_FEATURES": ",".join(FEATURES),
        "BATCH_PREDICT_NONNEGATIVE_FEATURES": "none",
        **extra,
    }


def fill_inputs(root: Path, rows: int, days: list[str]) -> None:
    """Synthetic valid inputs (16 float features) for the given partitions, rows each, written by SQL."""
    from batch_predict.contract import FeatureContract
    from batch_predict.warehouse import Warehouse

    warehouse = Warehouse(root / "warehouse.duckdb", FeatureContract("record_id", "event_time", FEATURES))
    features = ", ".join(f"random() * 4 - 2 AS {name}" for name in FEATURES)
    with warehouse.connect() as con:
        con.execute("SELECT setseed(0.42)")
        for day in days:
            con.execute(
                f"""
                INSERT INTO inputs BY NAME
                SELECT $day AS partition_key, $day || '-' || i AS record_id,
                       CAST($day AS TIMESTAMPTZ) + INTERVAL (i % 86400) SECOND AS event_time,
                       {features}, 'synthetic' AS source_file, 'bench' AS run_id, now() AS loaded_at
                FROM range($rows) t(i)
                """,
                {"day": day, "rows": rows},
            )
            con.execute(
                "INSERT INTO input_stats VALUES ($day, CAST($day AS TIMESTAMPTZ), CAST($day AS TIMESTAMPTZ) + "
                "INTERVAL 1 DAY, $rows, $rows, 0, '{}', 'bench', now())",
                {"day": day, "rows": rows},
            )


def copy_inputs_to(root: Path, url: str, days: list[str]) -> None:
    """Copy the DuckDB warehouse's inputs and stats of `days` into the PostgreSQL warehouse at `url`."""
    from batch_predict.contract import FeatureContract
    from batch_predict.warehouse import Warehouse

    warehouse = Warehouse(url, FeatureContract("record_id", "event_time", FEATURES))
    with warehouse.session() as session, session.transaction():
        session.engine.execute(f"ATTACH '{root / 'warehouse.duckdb'}' AS bench (READ_ONLY)")
        for table in ("inputs", "input_stats"):
            session.engine.execute(
                f"CREATE OR REPLACE TEMP TABLE src_{table} AS SELECT * FROM bench.{table} "
                "WHERE list_contains($days, partition_key)",
                {"days": days},
            )
            session.share(f"src_{table}")
            session.execute(f"DELETE FROM {table} WHERE partition_key IN (SELECT partition_key FROM src_{table})")
            session.execute(f"INSERT INTO {table} SELECT * FROM src_{table}")
        session.engine.execute("DETACH bench")


def transfer(url: str, rows: int) -> dict[str, float]:
    """Arrow rows into a PostgreSQL temp table and on into a table, one transaction: binary COPY encoded from
    Arrow (what the warehouse uses) against ADBC's bulk ingest; and the way back, COPY text against ADBC."""
    import adbc_driver_postgresql.dbapi as adbc
    import psycopg

    from batch_predict.warehouse import pgcopy

    rng = np.random.default_rng(1)
    table = pa.table(
        {
            "partition_key": pa.array([PARTITION] * rows),
            "record_id": pa.array([f"{PARTITION}-{i}" for i in range(rows)]),
            "prediction": pa.array(np.array(["a", "b", "c"])[rng.integers(0, 3, rows)]),
            "model_version": pa.array(["v1"] * rows),
            "predicted_at": pa.array([datetime.now(UTC)] * rows, pa.timestamp("us", tz="UTC")),
            **{f"p{i}": pa.array(rng.random(rows)) for i in range(3)},
        }
    )
    columns = ", ".join(f"{field.name} {pgcopy.column_type(field.type)}" for field in table.schema)
    with psycopg.connect(url) as con:
        con.execute(f"CREATE TABLE IF NOT EXISTS transfer_target ({columns})")
        con.commit()

    def binary_copy() -> None:
        with psycopg.connect(url) as con:
            con.execute(f"CREATE TEMP TABLE t ({columns})")
            with con.cursor().copy("COPY t FROM STDIN (FORMAT binary)") as copy:
                copy.write(pgcopy.HEADER)
                for batch in table.to_batches(65_536):
                    copy.write(pgcopy.encode(batch))
                copy.write(pgcopy.TRAILER)
            con.execute("INSERT INTO transfer_target SELECT * FROM t")
            con.commit()

    def adbc_ingest() -> None:
        with adbc.connect(url) as con, con.cursor() as cursor:
            cursor.adbc_ingest("t", table, mode="create", temporary=True)
            cursor.execute("INSERT INTO transfer_target SELECT * FROM t")
            con.commit()

    def timed(work: Any) -> float:
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - started)
        return best

    from batch_predict.contract import FeatureContract
    from batch_predict.warehouse import Warehouse

    def read_copy() -> None:
        with Warehouse(url, FeatureContract("record_id", "event_time", FEATURES)).session(read_only=True) as session:
            session.fetch_into_engine("back", "SELECT * FROM transfer_target")

    def read_adbc() -> None:
        with adbc.connect(url) as con, con.cursor() as cursor:
            cursor.execute("SELECT * FROM transfer_target")
            cursor.fetch_arrow_table()

    results = {"pg_ingest_s_binary_copy": timed(binary_copy), "pg_ingest_s_adbc": timed(adbc_ingest)}
    with psycopg.connect(url) as con:
        con.execute("TRUNCATE transfer_target")
        con.commit()
    binary_copy()
    results.update({"pg_read_s_copy_text": timed(read_copy), "pg_read_s_adbc": timed(read_adbc)})
    return results


WRITER_CHILD = """
import sys, time
import dagster as dg
from batch_predict.definitions import build_definitions
from batch_predict.settings import load_settings
job = build_definitions(load_settings()).resolve_implicit_global_asset_job_def()
result = job.execute_in_process(asset_selection=[dg.AssetKey("predictions")], partition_key=sys.argv[1],
                                instance=dg.DagsterInstance.ephemeral())
assert result.success
"""


def postgres(rows: int, writer_rows: int, chunk: int, duckdb_step_s: float) -> dict[str, float]:
    """The PostgreSQL backend: one run's throughput against DuckDB's on the same partition, and 4 runs
    writing 4 partitions at once against the same 4 runs one after the other."""
    from batch_predict.servers import PostgresServer

    days = [f"{date(2026, 1, 2) + timedelta(days=i):%Y-%m-%d}" for i in range(4)]
    with tempfile.TemporaryDirectory(dir=HERE.parent / "data") as tmp:
        root = Path(tmp)
        server = PostgresServer(root / "postgres")
        server.start()
        try:
            url = server.create_database("bench")
            register(root, "lr")
            fill_inputs(root, rows, [PARTITION])
            fill_inputs(root, writer_rows, days)
            copy_inputs_to(root, url, [PARTITION, *days])
            extra = {"BATCH_PREDICT_WAREHOUSE": url, "BATCH_PREDICT_STAGING": str(root / "staging")}
            ours(root, chunk, **extra)  # warm: the first run of a fresh database makes its tables' statistics
            step_s, _, _ = ours(root, chunk, **extra)
            env = os.environ | env_for(root, BATCH_PREDICT_CHUNK_SIZE=str(chunk), **extra)

            def writers(keys: list[str], together: bool) -> float:
                started = time.perf_counter()
                if together:
                    children = [subprocess.Popen([sys.executable, "-c", WRITER_CHILD, key], env=env) for key in keys]
                    codes = [child.wait() for child in children]
                else:
                    codes = [
                        subprocess.run([sys.executable, "-c", WRITER_CHILD, key], env=env).returncode for key in keys
                    ]
                assert codes == [0] * len(keys), codes
                return time.perf_counter() - started

            one_by_one = writers(days, together=False)
            together = writers(days, together=True)
            moved = transfer(url, rows)
        finally:
            server.stop()
    return {
        "pg_step_s_lr": step_s,
        "pg_vs_duckdb_ratio": duckdb_step_s / step_s,
        "pg_4_writers_sequential_s": one_by_one,
        "pg_4_writers_concurrent_s": together,
        "pg_4_writers_speedup": one_by_one / together,
        "pg_writer_rows": writer_rows,
        **moved,
    }


def train(kind: str) -> Any:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(20_000, len(FEATURES)))
    y = np.array(["a", "b", "c"])[(x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)]
    model = LogisticRegression(max_iter=300) if kind == "lr" else HistGradientBoostingClassifier(max_iter=100)
    import pandas as pd

    return model.fit(pd.DataFrame(x, columns=list(FEATURES)), y)


def register(root: Path, kind: str) -> None:
    from batch_predict.models.registry import Registry

    registry = Registry(root / "models")
    meta = registry.register(
        train(kind),
        name=f"bench-{kind}",
        trained_at=datetime.now(UTC),
        features=[{"name": name, "dtype": "float64"} for name in FEATURES],
        metrics={},
        training_window={},
    )
    registry.set_alias("champion", meta.version)


def floor(root: Path, model: Any, chunk: int) -> float:
    """The bare work: DuckDB record-batch read, predict_proba, Arrow append into DuckDB."""
    columns = ", ".join(FEATURES)
    started = time.perf_counter()
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.execute(
            "CREATE OR REPLACE TABLE floor_out (record_id VARCHAR, prediction VARCHAR, "
            + ", ".join(f"p{i} DOUBLE" for i in range(3))
            + ")"
        )
        reader = con.sql(
            f"SELECT record_id, {columns} FROM inputs WHERE partition_key = $p", params={"p": PARTITION}
        ).to_arrow_reader(chunk)
        writer = duckdb.connect(str(root / "warehouse.duckdb"))  # same database, second cursor
        for batch in reader:
            features = np.column_stack([batch.column(name).to_numpy() for name in FEATURES])
            proba = model.predict_proba(features)
            out = pa.table(
                {
                    "record_id": batch.column("record_id"),
                    "prediction": pa.array(model.classes_[proba.argmax(axis=1)]),
                    **{f"p{i}": proba[:, i] for i in range(3)},
                }
            )
            writer.from_arrow(out).insert_into("floor_out")
        writer.close()
    return time.perf_counter() - started


def naive_pandas(root: Path, model: Any) -> float:
    """The common first attempt: everything into pandas, predict, insert."""
    started = time.perf_counter()
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        frame = con.execute("SELECT * FROM inputs WHERE partition_key = ?", [PARTITION]).df()
        proba = model.predict_proba(frame[list(FEATURES)].to_numpy())
        out = frame[["record_id"]].copy()
        out["prediction"] = model.classes_[proba.argmax(axis=1)]
        for i in range(3):
            out[f"p{i}"] = proba[:, i]
        con.execute("CREATE OR REPLACE TABLE naive_out AS SELECT * FROM out")
    return time.perf_counter() - started


def per_row(root: Path, model: Any, rows: int) -> float:
    """The reference sample's shape: select the rows, predict each, write and commit each one."""
    started = time.perf_counter()
    with duckdb.connect(str(root / "warehouse.duckdb")) as con:
        con.execute("CREATE OR REPLACE TABLE row_out (record_id VARCHAR, prediction VARCHAR)")
        records = con.execute(
            f"SELECT record_id, {', '.join(FEATURES)} FROM inputs WHERE partition_key = ? LIMIT ?", [PARTITION, rows]
        ).fetchall()
        for record in records:
            label = model.predict(np.asarray([record[1:]], dtype=np.float64))[0]
            con.execute("BEGIN")
            con.execute("INSERT INTO row_out VALUES (?, ?)", [record[0], str(label)])
            con.execute("COMMIT")
    return time.perf_counter() - started


def ours(root: Path, chunk: int, **extra: str) -> tuple[float, float, float]:
    """The predictions asset through an in-process run: (step seconds, run seconds, rows/s of the step)."""
    import dagster as dg

    from batch_predict.definitions import build_definitions
    from batch_predict.settings import load_settings

    settings = load_settings(env_for(root, BATCH_PREDICT_CHUNK_SIZE=str(chunk), **extra))
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    result = job.execute_in_process(
        asset_selection=[dg.AssetKey("predictions")], partition_key=PARTITION, instance=instance
    )
    run_seconds = time.perf_counter() - started
    events = {
        entry.dagster_event.event_type_value: entry.timestamp
        for entry in instance.all_logs(result.run_id)
        if entry.dagster_event is not None and entry.dagster_event.step_key == "predictions"
    }
    step_seconds = events["STEP_SUCCESS"] - events["STEP_START"]
    [materialization] = result.asset_materializations_for_node("predictions")
    rows = materialization.metadata["dagster/row_count"].value
    assert isinstance(rows, int)
    return step_seconds, run_seconds, rows / step_seconds


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) in MB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def child_memory(rows: int, chunk: int, memory_limit: str) -> None:
    """In a fresh process: fill a warehouse, then report the peak RSS of a prediction run over it."""
    # A forked child starts with its parent's peak (Linux keeps it across exec): reset it
    # to this process's own current size first.
    Path("/proc/self/clear_refs").write_text("5")
    with tempfile.TemporaryDirectory(dir=HERE.parent / "data") as tmp:
        root = Path(tmp)
        register(root, "lr")
        filler = subprocess.run(
            [sys.executable, __file__, "--fill", str(root), str(rows)], check=True, capture_output=True, text=True
        )
        assert filler.returncode == 0
        baseline = peak_rss_mb()
        _, _, rate = ours(root, chunk, BATCH_PREDICT_DUCKDB_MEMORY_LIMIT=memory_limit)
        peak = peak_rss_mb()
    print(json.dumps({"peak_rss_mb": round(peak, 1), "before_run_mb": round(baseline, 1), "rows_per_s": rate}))


def measure_memory(rows: int, chunk: int, memory_limit: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child-memory", str(rows), str(chunk), memory_limit],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


BACKFILL_CHILD = """
import sys, time, json
import dagster as dg
from batch_predict.definitions import build_definitions
from batch_predict.settings import load_settings
keys = sys.argv[1].split(",")
job = build_definitions(load_settings()).resolve_implicit_global_asset_job_def()
with dg.DagsterInstance.get() as instance:
    if len(keys) == 1:
        result = job.execute_in_process(asset_selection=[dg.AssetKey("predictions")], partition_key=keys[0],
                                        instance=instance)
    else:
        result = job.execute_in_process(asset_selection=[dg.AssetKey("predictions")], instance=instance,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
assert result.success
"""


def backfill(days: int, rows: int, sample: int, per_run: int) -> dict[str, float]:
    """One run per partition (a sample, extrapolated) versus ranges of `per_run` partitions.

    Each run is a fresh process with a persistent (SQLite) Dagster instance, as a run
    worker is: from launch to done, without the daemon's own loop.
    """
    keys = [f"{date(2025, 1, 1) + timedelta(days=i):%Y-%m-%d}" for i in range(days)]
    with tempfile.TemporaryDirectory(dir=HERE.parent / "data") as tmp:
        root = Path(tmp)
        (root / "home").mkdir()
        env = (
            os.environ
            | env_for(root, BATCH_PREDICT_MAX_PARTITIONS_PER_RUN=str(per_run))
            | {"DAGSTER_HOME": str(root / "home")}
        )
        register(root, "lr")
        fill_inputs(root, rows, keys)

        def launch(batch: list[str]) -> None:
            subprocess.run([sys.executable, "-c", BACKFILL_CHILD, ",".join(batch)], env=env, check=True)

        started = time.perf_counter()
        for key in keys[:sample]:
            launch([key])
        per_partition = (time.perf_counter() - started) / sample
        started = time.perf_counter()
        for first in range(0, days, per_run):
            launch(keys[first : first + per_run])
        ranges = time.perf_counter() - started
        with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
            written = con.execute("SELECT count(*), count(DISTINCT partition_key) FROM predictions").fetchall()[0]
        assert written == (days * rows, days), written
    return {
        "one_run_per_partition_s_extrapolated": per_partition * days,
        "one_run_per_partition_s_per_run": per_partition,
        "ranges_s": ranges,
        "runs_with_ranges": -(-days // per_run),
    }


def machine() -> dict[str, Any]:
    import dagster
    import pandas
    import sklearn

    memory_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "dagster": dagster.__version__,
        "duckdb": duckdb.__version__,
        "scikit_learn": sklearn.__version__,
        "pyarrow": pa.__version__,
        "pandas": pandas.__version__,
        "numpy": np.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def progress(label: str) -> None:
    print(f"... {label}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=65_536)
    parser.add_argument("--memory-limit", default="256MB")
    parser.add_argument("--per-row", type=int, default=2_000)
    parser.add_argument("--backfill-days", type=int, default=365)
    parser.add_argument("--backfill-rows", type=int, default=10_000)
    parser.add_argument("--backfill-sample", type=int, default=20)
    parser.add_argument("--backfill-per-run", type=int, default=73)
    parser.add_argument("--writer-rows", type=int, default=250_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that the suite runs")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--fill", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-memory", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill:
        fill_inputs(Path(args.fill[0]), int(args.fill[1]), [PARTITION])
        return
    if args.child_memory:
        child_memory(int(args.child_memory[0]), int(args.child_memory[1]), args.child_memory[2])
        return
    if args.quick:
        args.rows, args.big_rows, args.per_row, args.writer_rows = 50_000, 200_000, 200, 20_000
        args.backfill_days, args.backfill_rows, args.backfill_sample, args.backfill_per_run = 20, 1_000, 4, 10

    (HERE.parent / "data").mkdir(exist_ok=True)
    results: dict[str, Any] = {"rows": args.rows, "big_rows": args.big_rows, "chunk_size": args.chunk}
    for kind in ("lr", "hgb"):
        with tempfile.TemporaryDirectory(dir=HERE.parent / "data") as tmp:
            root = Path(tmp)
            register(root, kind)
            fill_inputs(root, args.rows, [PARTITION])
            model = train(kind)
            progress(f"floor and ours, {kind}")
            floor_s = floor(root, model, args.chunk)
            step_s, run_s, _ = ours(root, args.chunk)
            results[f"floor_s_{kind}"] = floor_s
            results[f"ours_step_s_{kind}"] = step_s
            results[f"ours_run_s_{kind}"] = run_s
            results[f"rows_per_s_floor_{kind}"] = args.rows / floor_s
            results[f"rows_per_s_{kind}"] = args.rows / step_s
            results[f"floor_ratio_{kind}"] = floor_s / step_s
            results[f"floor_ratio_run_{kind}"] = floor_s / run_s
            if kind == "lr":
                progress("naive")
                naive_s = naive_pandas(root, model)
                row_s = per_row(root, model, args.per_row)
                results["rows_per_s_naive_pandas_lr"] = args.rows / naive_s
                results["rows_per_s_per_row_commit_lr"] = args.per_row / row_s
                results["per_row_commit_rows"] = args.per_row
    progress("postgres")
    results.update(postgres(args.rows, args.writer_rows, args.chunk, results["ours_step_s_lr"]))
    progress("peak memory")
    small = measure_memory(args.rows, args.chunk, args.memory_limit)
    big = measure_memory(args.big_rows, args.chunk, args.memory_limit)
    results["peak_rss_mb_1m"] = small["peak_rss_mb"]
    results["peak_rss_mb_10m"] = big["peak_rss_mb"]
    results["rss_before_run_mb"] = small["before_run_mb"]
    results["peak_rss_ratio_10m_1m"] = big["peak_rss_mb"] / small["peak_rss_mb"]
    results["duckdb_memory_limit"] = args.memory_limit
    progress("backfill")
    fill = backfill(args.backfill_days, args.backfill_rows, args.backfill_sample, args.backfill_per_run)
    results.update({f"backfill_{key}": value for key, value in fill.items()})
    results["backfill_speedup"] = fill["one_run_per_partition_s_extrapolated"] / fill["ranges_s"]
    results["backfill_days"] = args.backfill_days
    results["backfill_rows_per_partition"] = args.backfill_rows
    results["backfill_sample"] = args.backfill_sample
    results["machine"] = machine()
    results = {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def table(r: dict[str, Any]) -> str:
    m = r["machine"]
    rows = [
        ("floor, LogisticRegression", f"{r['rows_per_s_floor_lr']:,.0f} rows/s", ""),
        (
            "ours (asset step), LogisticRegression",
            f"{r['rows_per_s_lr']:,.0f} rows/s",
            f"{r['floor_ratio_lr']:.2f} of floor (target >= 0.7)",
        ),
        (
            "ours (whole run), LogisticRegression",
            f"{r['rows'] / r['ours_run_s_lr']:,.0f} rows/s",
            f"{r['floor_ratio_run_lr']:.2f} of floor",
        ),
        ("floor, HistGradientBoosting", f"{r['rows_per_s_floor_hgb']:,.0f} rows/s", ""),
        (
            "ours (asset step), HistGradientBoosting",
            f"{r['rows_per_s_hgb']:,.0f} rows/s",
            f"{r['floor_ratio_hgb']:.2f} of floor (target >= 0.9)",
        ),
        (
            "ours (whole run), HistGradientBoosting",
            f"{r['rows'] / r['ours_run_s_hgb']:,.0f} rows/s",
            f"{r['floor_ratio_run_hgb']:.2f} of floor",
        ),
        (
            "naive: all into pandas, predict, insert (LR)",
            f"{r['rows_per_s_naive_pandas_lr']:,.0f} rows/s",
            f"{r['rows_per_s_naive_pandas_lr'] / r['rows_per_s_lr']:.2f} of ours",
        ),
        (
            f"naive: per-row predict + commit (LR, {r['per_row_commit_rows']} rows)",
            f"{r['rows_per_s_per_row_commit_lr']:,.0f} rows/s",
            f"{r['rows_per_s_per_row_commit_lr'] / r['rows_per_s_lr']:.5f} of ours",
        ),
        (
            f"peak RSS, prediction run, {r['rows']:,} rows",
            f"{r['peak_rss_mb_1m']:,.0f} MB",
            f"DuckDB memory_limit {r['duckdb_memory_limit']}",
        ),
        (
            f"peak RSS, prediction run, {r['big_rows']:,} rows",
            f"{r['peak_rss_mb_10m']:,.0f} MB",
            f"{r['peak_rss_ratio_10m_1m']:.2f}x the smaller (target <= 1.25x, <= 1024 MB)",
        ),
        (
            f"backfill {r['backfill_days']} x {r['backfill_rows_per_partition']:,} rows, one run per partition",
            f"{r['backfill_one_run_per_partition_s_extrapolated']:,.0f} s",
            f"extrapolated from {r['backfill_sample']} runs ({r['backfill_one_run_per_partition_s_per_run']:.2f} s each)",
        ),
        (
            f"backfill, ranges ({r['backfill_runs_with_ranges']} runs)",
            f"{r['backfill_ranges_s']:,.0f} s",
            f"{r['backfill_speedup']:.1f}x faster (target >= 10x)",
        ),
    ]
    rows += [
        (
            "PostgreSQL warehouse, asset step (LR)",
            f"{r['rows'] / r['pg_step_s_lr']:,.0f} rows/s",
            f"{r['pg_vs_duckdb_ratio']:.2f} of DuckDB's (target >= 0.4)",
        ),
        (
            f"PostgreSQL, 4 runs on 4 partitions x {r['pg_writer_rows']:,} rows at once",
            f"{r['pg_4_writers_concurrent_s']:,.1f} s",
            f"{r['pg_4_writers_speedup']:.2f}x one after the other ({r['pg_4_writers_sequential_s']:,.1f} s)",
        ),
    ]
    rows.append(
        (
            f"into PostgreSQL, {r['rows']:,} rows: binary COPY from Arrow / ADBC ingest",
            f"{r['pg_ingest_s_binary_copy']:.1f} s / {r['pg_ingest_s_adbc']:.1f} s",
            f"back: COPY text {r['pg_read_s_copy_text']:.1f} s / ADBC {r['pg_read_s_adbc']:.1f} s",
        )
    )
    width = max(len(row[0]) for row in rows)
    lines = [f"{name.ljust(width)}  {value:>18}  {note}" for name, value, note in rows]
    head = (
        f"machine: {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, dagster {m['dagster']}, "
        f"duckdb {m['duckdb']}, scikit-learn {m['scikit_learn']}, pyarrow {m['pyarrow']} ({m['date']})"
    )
    return head + "\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
