"""The benchmark suite behind `make bench`: throughput, peak memory and backfill time.

Every figure is measured in this one process run together with its baseline, so the
ratios hold on a noisy machine. Prints a table and writes benchmarks/results.json.

    python benchmarks/run.py [--rows 1000000] [--big-rows 10000000] [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
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
                "INSERT INTO input_stats BY NAME SELECT $day AS partition_key, CAST($day AS TIMESTAMPTZ) AS "
                "window_start, CAST($day AS TIMESTAMPTZ) + INTERVAL 1 DAY AS window_end, $rows AS source_rows, "
                "$rows AS valid_rows, 0 AS rejected_rows, '{}' AS rejected_by_reason, 'bench' AS run_id, "
                "now() AS loaded_at",
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


def postgres(rows: int, writer_rows: int, chunk: int) -> dict[str, float]:
    """The PostgreSQL backend: one run's throughput against the floor's and DuckDB's on the same partition,
    and 4 runs writing 4 partitions at once against the same 4 runs one after the other."""
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
            model = train("lr")
            floor_s = floor(root, model, chunk)
            duckdb_step_s, _, _ = ours(root, chunk)
            ours(root, chunk, **extra)  # warm: the first run of a fresh database makes its tables' statistics
            pg_floor(url, model)  # warm, as ours
            # In turn, medians of 3: the server's own work (its checkpoints, autovacuum) varies between runs.
            pg_floors, steps = [], []
            for _ in range(3):
                pg_floors.append(pg_floor(url, model))
                steps.append(ours(root, chunk, **extra)[0])
            pg_floor_s, step_s = statistics.median(pg_floors), statistics.median(steps)
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
        "pg_floor_s_lr": pg_floor_s,
        "pg_floor_ratio_lr": pg_floor_s / step_s,
        "pg_step_vs_duckdb_floor_ratio_lr": floor_s / step_s,
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


def floor(root: Path, model: Any, chunk: int, partition: str = PARTITION) -> float:
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
            f"SELECT record_id, {columns} FROM inputs WHERE partition_key = $p", params={"p": partition}
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


def pg_floor(url: str, model: Any, partition: str = PARTITION) -> float:
    """The bare work on PostgreSQL: an ADBC record-batch read (batches as the driver sizes them), predict_proba, binary COPY (the warehouse's
    encoder) into a table indexed by partition and record as `predictions` is, one transaction."""
    import adbc_driver_postgresql.dbapi as adbc
    import psycopg

    from batch_predict.warehouse import pgcopy

    text = 'text COLLATE "C"'
    columns = ", ".join(f"{name} double precision" for name in ("p0", "p1", "p2"))
    started = time.perf_counter()
    with adbc.connect(url) as reading, reading.cursor() as cursor, psycopg.connect(url) as writing:
        writing.execute("DROP TABLE IF EXISTS floor_out")
        writing.execute(
            f"CREATE TABLE floor_out (partition_key {text}, record_id {text}, prediction {text}, {columns})"
        )
        writing.execute("CREATE INDEX ON floor_out (partition_key, record_id)")
        cursor.execute(f"SELECT record_id, {', '.join(FEATURES)} FROM inputs WHERE partition_key = '{partition}'")
        with writing.cursor().copy("COPY floor_out FROM STDIN (FORMAT binary)") as copy:
            copy.write(pgcopy.HEADER)
            for batch in cursor.fetch_record_batch():
                features = np.column_stack([batch.column(name).to_numpy() for name in FEATURES])
                proba = model.predict_proba(features)
                out = pa.record_batch(
                    {
                        "partition_key": pa.repeat(pa.scalar(partition), batch.num_rows),
                        "record_id": batch.column("record_id"),
                        "prediction": pa.array(model.classes_[proba.argmax(axis=1)]),
                        **{f"p{i}": proba[:, i] for i in range(3)},
                    }
                )
                copy.write(pgcopy.encode(out))
            copy.write(pgcopy.TRAILER)
        writing.commit()
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


def naive_ratio(rows: int, chunk: int, repeats: int) -> dict[str, float]:
    """The naive pandas way's seconds over our asset step's, on the same rows, in this process: the median
    of `repeats` measurements of each, taken in turn (one of each varies by 2-3x on a shared machine).
    The floor (the bare work, outside Dagster) is measured in the same turns: what neither way can undercut."""
    with tempfile.TemporaryDirectory(dir=HERE.parent / "data") as tmp:
        root = Path(tmp)
        register(root, "lr")
        fill_inputs(root, rows, [PARTITION])
        model = train("lr")
        naive_runs, step_runs, floor_runs = [], [], []
        for _ in range(repeats):  # each run after the first replaces the last one's output, as a rerun does
            naive_runs.append(naive_pandas(root, model))
            step_runs.append(ours(root, chunk)[0])
            floor_runs.append(floor(root, model, chunk))
    naive_s, step_s = statistics.median(naive_runs), statistics.median(step_runs)
    return {
        "naive_s": naive_s,
        "ours_step_s": step_s,
        "floor_s": statistics.median(floor_runs),
        "ratio": naive_s / step_s,
        "repeats": repeats,
    }


SMALL_PARTITION_ROWS = 300


def overhead(partitions: int, singles: int, chunk: int, profile: Path | None) -> dict[str, float]:
    """Our own cost per small partition: wall time minus the floor's time for the same rows.

    Inside a range: one in-process run over `partitions` daily partitions of 300 rows, minus the
    floor summed over them, per partition. As its own run: single-partition in-process runs after a
    warm-up, their mean wall time minus the floor's mean. Dagster's own floor: the same runs of an
    asset that does nothing. With `profile`, cProfile summaries of both are written there.
    """
    import dagster as dg

    from batch_predict.definitions import build_definitions
    from batch_predict.partitions import build_partitions
    from batch_predict.settings import load_settings

    keys = [f"{date(2025, 1, 1) + timedelta(days=i):%Y-%m-%d}" for i in range(partitions)]
    with tempfile.TemporaryDirectory(dir=HERE.parent / "data") as tmp:
        root = Path(tmp)
        register(root, "lr")
        fill_inputs(root, SMALL_PARTITION_ROWS, keys)
        model = train("lr")
        floors = {key: floor(root, model, chunk, key) for key in keys}
        settings = load_settings(env_for(root, BATCH_PREDICT_CHUNK_SIZE=str(chunk)))
        job = build_definitions(settings).resolve_implicit_global_asset_job_def()
        selection = [dg.AssetKey("predictions")]

        def one(key: str) -> float:
            instance = dg.DagsterInstance.ephemeral()
            started = time.perf_counter()
            assert job.execute_in_process(asset_selection=selection, partition_key=key, instance=instance).success
            return time.perf_counter() - started

        def whole_range() -> float:
            instance = dg.DagsterInstance.ephemeral()
            tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
            started = time.perf_counter()
            assert job.execute_in_process(asset_selection=selection, tags=tags, instance=instance).success
            return time.perf_counter() - started

        one(keys[0])  # warm-up: imports, the model's first load, the tables' first statistics
        single_keys = keys[1 : 1 + singles]
        run_walls = [one(key) for key in single_keys]
        range_wall = whole_range()
        if profile:  # again, profiled: cProfile slows what it watches, so the times above are without it
            profile_calls(lambda: [one(key) for key in single_keys], profile / "overhead_run.txt")
            profile_calls(whole_range, profile / "overhead_range.txt")
        bare = dagster_floor(build_partitions(settings), keys, singles)
    run_floor = sum(floors[key] for key in single_keys) / len(single_keys)
    return {
        "overhead_ms_per_partition_range": (range_wall - sum(floors.values())) / partitions * 1000,
        "overhead_ms_per_partition_run": (sum(run_walls) / len(run_walls) - run_floor) * 1000,
        "overhead_range_wall_s": range_wall,
        "overhead_run_wall_s": sum(run_walls) / len(run_walls),
        "overhead_floor_ms_per_partition": sum(floors.values()) / partitions * 1000,
        "overhead_partitions": partitions,
        "overhead_single_runs": len(run_walls),
        "overhead_rows_per_partition": SMALL_PARTITION_ROWS,
        **bare,
    }


def dagster_floor(partitions_def: Any, keys: list[str], singles: int) -> dict[str, float]:
    """Dagster's own cost per partition: in-process runs of a partitioned asset that does nothing."""
    import dagster as dg

    # Unannotated: this module's annotations are strings, which Dagster cannot resolve for a local import.
    @dg.asset(partitions_def=partitions_def, backfill_policy=dg.BackfillPolicy.multi_run(len(keys)))
    def nothing(context):  # type: ignore[no-untyped-def]
        for key in context.partition_keys:
            context.add_asset_metadata({"rows": 0}, partition_key=key)
        return dg.MaterializeResult()

    job = dg.Definitions(assets=[nothing]).resolve_implicit_global_asset_job_def()

    def timed(**kwargs: Any) -> float:
        instance = dg.DagsterInstance.ephemeral()
        started = time.perf_counter()
        assert job.execute_in_process(instance=instance, **kwargs).success
        return time.perf_counter() - started

    timed(partition_key=keys[0])
    runs = [timed(partition_key=key) for key in keys[1 : 1 + singles]]
    whole = timed(tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
    return {
        "dagster_floor_ms_per_partition_run": sum(runs) / len(runs) * 1000,
        "dagster_floor_ms_per_partition_range": whole / len(keys) * 1000,
    }


def profile_calls(work: Any, path: Path) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    work()
    profiler.disable()
    write_profile(profiler, path)


def write_profile(profiler: cProfile.Profile, path: Path | None) -> None:
    """The 60 costliest calls by cumulative time, as pstats prints them."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
    progress(f"profile written to {path}")


BACKFILL_STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status error { message } } }
}
"""
BACKFILL_RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status creationTime startTime endTime } }
  }
}
"""
ASSETS = ("inputs", "predictions")
DAGSTER = str(Path(sys.executable).parent / "dagster")
LOADED = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"


def graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        payload: dict[str, Any] = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


def write_clean_landing(landing: Path, first: date, days: int, rows_per_day: int) -> None:
    """`days` days of valid records with the default (iris) features, one Parquet file a day, the
    records spread evenly over the day, so every hour holds rows_per_day / 24 of them."""
    from batch_predict.settings import IRIS_FEATURES

    rng = np.random.default_rng(3)
    offsets = np.arange(rows_per_day, dtype=np.int64) * (86_400_000_000 // rows_per_day)
    for i in range(days):
        day = first + timedelta(days=i)
        start = np.datetime64(f"{day:%Y-%m-%d}T00:00:00", "us")
        table = pa.table(
            {
                "record_id": pa.array([f"{day:%Y%m%d}-{n:06d}" for n in range(rows_per_day)]),
                "event_time": pa.array(start + offsets, pa.timestamp("us", tz="UTC")),
                **{name: pa.array(rng.uniform(0.5, 7.0, rows_per_day).round(2)) for name in IRIS_FEATURES},
            }
        )
        folder = landing / f"{day:%Y-%m-%d}"
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "events.parquet")


def ui_backfill(
    partitions: int, rows: int, cadence: str, postgres_warehouse: bool, timeout: float, per_run: str = ""
) -> dict[str, Any]:
    """A backfill of `inputs` and `predictions` over `partitions` partitions, launched as the UI's
    *Materialize all* dialog does (GraphQL launchPartitionBackfill) on a real `dagster dev` with default
    settings: from the launch to the last `predictions` materialization, and its components."""
    from batch_predict.demo import train_demo_model
    from batch_predict.models.registry import Registry
    from batch_predict.partitions import build_partitions
    from batch_predict.servers import ManagedProcess, PostgresServer, free_port, stop_processes
    from batch_predict.settings import load_settings

    per_day = 24 if cadence == "hourly" else 1
    days = -(-partitions // per_day)
    with tempfile.TemporaryDirectory(dir=HERE.parent / "data") as tmp:
        root = Path(tmp)
        home = root / "dagster_home"
        home.mkdir()
        shutil.copy(HERE.parent / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
        write_clean_landing(root / "landing", date(2025, 1, 1), days, rows * per_day)
        train_demo_model(Registry(root / "models"))
        server = PostgresServer(root / "postgres") if postgres_warehouse else None
        warehouse = server.start().create_database("bench") if server else str(root / "warehouse.duckdb")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_PREDICT_")} | {
                "DAGSTER_HOME": str(home),
                "BATCH_PREDICT_WAREHOUSE": warehouse,
                "BATCH_PREDICT_STAGING": str(root / "staging"),
                "BATCH_PREDICT_LANDING": str(root / "landing"),
                "BATCH_PREDICT_MODELS": str(root / "models"),
                "BATCH_PREDICT_START": "2025-01-01",
                "BATCH_PREDICT_CADENCE": cadence,
                "BATCH_PREDICT_MAX_PARTITIONS_PER_RUN": per_run,  # empty: the default
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            settings = load_settings(env)
            keys = build_partitions(settings).get_partition_keys()[:partitions]
            port = free_port()
            dev = ManagedProcess(
                "dagster dev",
                [DAGSTER, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                env=env,
                cwd=HERE.parent,
                log=root / "dagster-dev.log",
            )
            try:
                wait_until_loaded(dev, port)
                launched_at, backfill_id = launch(port, keys)
                status = wait_for(dev, port, backfill_id, timeout)
                runs = graphql(port, BACKFILL_RUNS, {"id": backfill_id})["runsOrError"]["results"]
            finally:
                stop_processes([dev])
            assert status == "COMPLETED_SUCCESS", (status, dev.tail())
            assert runs and all(run["status"] == "SUCCESS" for run in runs), runs
            last = last_materializations(home, {run["runId"] for run in runs})
            steps = step_seconds(home, [run["runId"] for run in runs])
            assert sorted(last) == sorted(keys), f"{len(set(keys) - set(last))} partitions have no materialization"
            counts = outcome_counts(warehouse)
            wrong = {key: counts.get(key) for key in keys if counts.get(key) != rows}
            assert not wrong, f"partitions without {rows} predictions: {dict(list(wrong.items())[:5])}"
        finally:
            if server:
                server.stop()
    first_start = min(run["startTime"] for run in runs)
    done = max(last.values())
    return {
        "s": done - launched_at,
        "pickup_s": min(run["creationTime"] for run in runs) - launched_at,
        "first_start_s": first_start - launched_at,
        "first_start_to_last_s": done - first_start,
        "runs": len(runs),
        "run_s_mean": sum(run["endTime"] - run["startTime"] for run in runs) / len(runs),
        **{f"{step}_step_s_per_partition": seconds / partitions for step, seconds in steps.items()},
        "partitions": partitions,
        "rows_per_partition": rows,
        "partitions_per_run": settings.max_partitions_per_run,
    }


def year_in_process(days: int, rows: int, partitions: int, profile: Path | None) -> dict[str, Any]:
    """What a UI backfill's runs do, without the daemon: a year of landing files as `ui` writes them, and one
    in-process range run of `inputs` and `predictions` over its first `partitions` partitions; the seconds
    per partition of each step (with `profile`, a cProfile summary of the run)."""
    import dagster as dg

    from batch_predict.definitions import build_definitions
    from batch_predict.demo import train_demo_model
    from batch_predict.models.registry import Registry
    from batch_predict.settings import load_settings
    from batch_predict.warehouse.landing import RACY_SECONDS

    with tempfile.TemporaryDirectory(dir=HERE.parent / "data") as tmp:
        root = Path(tmp)
        write_clean_landing(root / "landing", date(2025, 1, 1), days, rows)
        train_demo_model(Registry(root / "models"))
        # Landing files are written long before their backfill; one written in the last RACY_SECONDS is
        # read again by every snapshot (it may still change), which is not what a backfill sees.
        time.sleep(RACY_SECONDS)
        env = {
            "BATCH_PREDICT_WAREHOUSE": str(root / "warehouse.duckdb"),
            "BATCH_PREDICT_LANDING": str(root / "landing"),
            "BATCH_PREDICT_MODELS": str(root / "models"),
            "BATCH_PREDICT_START": "2025-01-01",
        }
        job = build_definitions(load_settings(env)).resolve_implicit_global_asset_job_def()
        keys = [f"{date(2025, 1, 1) + timedelta(days=i):%Y-%m-%d}" for i in range(partitions)]
        tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
        selection = [dg.AssetKey("inputs"), dg.AssetKey("predictions")]
        instance = dg.DagsterInstance.ephemeral()
        result = job.execute_in_process(asset_selection=selection, tags=tags, instance=instance)
        assert result.success
        steps = {step.step_key: step.end_time - step.start_time for step in instance.get_run_step_stats(result.run_id)}
        if profile:  # again, profiled (cProfile slows what it watches): the same partitions, replaced
            profile_calls(
                lambda: job.execute_in_process(asset_selection=selection, tags=tags, instance=instance),
                profile / "year_in_process.txt",
            )
        counts = outcome_counts(str(root / "warehouse.duckdb"))
    assert counts == dict.fromkeys(keys, rows), counts
    return {
        "year_in_process_inputs_s_per_partition": steps["inputs"] / partitions,
        "year_in_process_predictions_s_per_partition": steps["predictions"] / partitions,
        "year_in_process_partitions": partitions,
        "year_in_process_landing_days": days,
        "year_in_process_rows_per_partition": rows,
    }


def wait_until_loaded(dev: Any, port: int) -> None:
    deadline = time.monotonic() + 180
    while True:
        dev.check()
        try:
            if graphql(port, LOADED)["repositoriesOrError"].get("nodes"):
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "dagster dev did not load the code location in 180 s"
        time.sleep(1)


def launch(port: int, keys: list[str]) -> tuple[float, str]:
    """Launch the asset backfill as the UI's dialog does; (the wall-clock time of the launch, its id)."""
    from batch_predict.cluster import LAUNCH, range_backfill_variables

    launched_at = time.time()
    launched = graphql(port, LAUNCH, range_backfill_variables(keys[0], keys[-1], ASSETS))["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched_at, str(launched["backfillId"])


def wait_for(dev: Any, port: int, backfill_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        dev.check()
        found = graphql(port, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if found["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            return str(found["status"])
        assert time.monotonic() < deadline, f"backfill still {found['status']} after {timeout} s"
        time.sleep(2)


def last_materializations(home: Path, run_ids: set[str]) -> dict[str, float]:
    """Each partition's newest `predictions` materialization made by one of `run_ids`, from the event log."""
    import dagster as dg

    found: dict[str, float] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        cursor = None
        while True:
            page = instance.fetch_materializations(dg.AssetKey("predictions"), limit=1000, cursor=cursor)
            for record in page.records:
                if record.run_id in run_ids and record.partition_key is not None:
                    found[record.partition_key] = max(found.get(record.partition_key, 0.0), record.timestamp)
            if not page.has_more:
                return found
            cursor = page.cursor


def step_seconds(home: Path, run_ids: list[str]) -> dict[str, float]:
    """The time the runs spent in each asset step, summed over the runs."""
    import dagster as dg

    total: dict[str, float] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run_id in run_ids:
            for step in instance.get_run_step_stats(run_id):
                if step.start_time is not None and step.end_time is not None:
                    total[step.step_key] = total.get(step.step_key, 0.0) + step.end_time - step.start_time
    return total


def outcome_counts(warehouse: str) -> dict[str, int]:
    """Rows in `predictions` by partition, in the DuckDB file or the PostgreSQL database."""
    query = "SELECT partition_key, count(*) FROM predictions GROUP BY partition_key"
    if warehouse.startswith("postgresql"):
        import psycopg

        with psycopg.connect(warehouse) as con:
            return {key: count for key, count in con.execute(query).fetchall()}
    with duckdb.connect(warehouse, read_only=True) as con:
        return {key: count for key, count in con.execute(query).fetchall()}


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


PARTS = ("lr", "hgb", "naive", "postgres", "memory", "backfill", "overhead", "year", "ui", "ui_hourly", "pg_ui")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ",".join(PARTS))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--naive-rows", default="100000,1000000,10000000", help="the three sizes of naive_ratio_lr_*")
    parser.add_argument("--chunk", type=int, default=65_536)
    parser.add_argument("--memory-limit", default="256MB")
    parser.add_argument("--per-row", type=int, default=2_000)
    parser.add_argument("--backfill-days", type=int, default=365)
    parser.add_argument("--backfill-rows", type=int, default=10_000)
    parser.add_argument("--backfill-sample", type=int, default=20)
    parser.add_argument("--backfill-per-run", type=int, default=73)
    parser.add_argument("--overhead-partitions", type=int, default=100)
    parser.add_argument("--overhead-runs", type=int, default=10)
    parser.add_argument(
        "--profile-overhead",
        action="store_true",
        help="write cProfile summaries of overhead and year to benchmarks/profiles/",
    )
    parser.add_argument("--ui-days", type=int, default=365)
    parser.add_argument("--ui-per-run", default="", help="BATCH_PREDICT_MAX_PARTITIONS_PER_RUN (default: its default)")
    parser.add_argument(
        "--year-partitions",
        type=int,
        default=31,
        help="partitions of the in-process year run (31: a month, as the figures before the default of 92)",
    )
    parser.add_argument("--ui-rows", type=int, default=10_000)
    parser.add_argument("--hourly-partitions", type=int, default=8_760)
    parser.add_argument("--hourly-rows", type=int, default=100)
    parser.add_argument("--writer-rows", type=int, default=250_000)
    parser.add_argument("--quick", action="store_true", help="every part at small sizes, to check that the suite runs")
    parser.add_argument("--out", help="default benchmarks/results.json (results.quick.json with --quick)")
    parser.add_argument("--fill", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-memory", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.only.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; the parts are {','.join(PARTS)}")
    if args.quick:
        args.rows, args.big_rows, args.per_row, args.writer_rows = 50_000, 200_000, 200, 20_000
        args.naive_rows = "10000,50000,200000"
        args.backfill_days, args.backfill_rows, args.backfill_sample, args.backfill_per_run = 20, 1_000, 4, 10
        args.overhead_partitions, args.overhead_runs = 10, 3
        args.ui_days, args.ui_rows, args.hourly_partitions, args.hourly_rows = 10, 1_000, 48, 100
        args.year_partitions = 3
    args.out = Path(args.out or HERE / ("results.quick.json" if args.quick else "results.json"))
    return args


def main() -> None:
    # Stopped with SIGTERM (a background job ignores SIGINT), still stop the servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    if args.fill:
        fill_inputs(Path(args.fill[0]), int(args.fill[1]), [PARTITION])
        return
    if args.child_memory:
        child_memory(int(args.child_memory[0]), int(args.child_memory[1]), args.child_memory[2])
        return
    (HERE.parent / "data").mkdir(exist_ok=True)
    # A run of some parts keeps the other parts' figures of the last run.
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    for part in args.only.split(","):
        progress(part)
        results.update(PART_RUNNERS[part](args))
    results["machine"] = machine()
    results = {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def throughput(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """The floor and our asset step on the same partition; for LR also the naive ways."""
    results: dict[str, Any] = {"rows": args.rows, "chunk_size": args.chunk}
    with tempfile.TemporaryDirectory(dir=HERE.parent / "data") as tmp:
        root = Path(tmp)
        register(root, kind)
        fill_inputs(root, args.rows, [PARTITION])
        model = train(kind)
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
            naive_s = naive_pandas(root, model)
            row_s = per_row(root, model, args.per_row)
            results["rows_per_s_naive_pandas_lr"] = args.rows / naive_s
            results["rows_per_s_per_row_commit_lr"] = args.per_row / row_s
            results["per_row_commit_rows"] = args.per_row
    return results


def naive(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, rows in zip(("100k", "1m", "10m"), (int(n) for n in args.naive_rows.split(",")), strict=True):
        progress(f"naive against ours, {rows:,} rows")
        # Three of each at 10M rows (a minute each way), five below.
        measured = naive_ratio(rows, args.chunk, 3 if rows >= 10_000_000 else 5)
        results[f"naive_ratio_lr_{name}"] = measured["ratio"]
        results[f"naive_s_lr_{name}"] = measured["naive_s"]
        results[f"naive_ours_step_s_lr_{name}"] = measured["ours_step_s"]
        results[f"naive_floor_s_lr_{name}"] = measured["floor_s"]
        results[f"naive_rows_{name}"] = rows
        results[f"naive_repeats_{name}"] = measured["repeats"]
    return results


def memory(args: argparse.Namespace) -> dict[str, Any]:
    small = measure_memory(args.rows, args.chunk, args.memory_limit)
    big = measure_memory(args.big_rows, args.chunk, args.memory_limit)
    return {
        "big_rows": args.big_rows,
        "peak_rss_mb_1m": small["peak_rss_mb"],
        "peak_rss_mb_10m": big["peak_rss_mb"],
        "rss_before_run_mb": small["before_run_mb"],
        "peak_rss_ratio_10m_1m": big["peak_rss_mb"] / small["peak_rss_mb"],
        "duckdb_memory_limit": args.memory_limit,
    }


def ranges(args: argparse.Namespace) -> dict[str, Any]:
    fill = backfill(args.backfill_days, args.backfill_rows, args.backfill_sample, args.backfill_per_run)
    return {
        **{f"backfill_{key}": value for key, value in fill.items()},
        "backfill_speedup": fill["one_run_per_partition_s_extrapolated"] / fill["ranges_s"],
        "backfill_days": args.backfill_days,
        "backfill_rows_per_partition": args.backfill_rows,
        "backfill_sample": args.backfill_sample,
    }


def from_the_ui(
    prefix: str, partitions: int, rows: int, cadence: str, on_postgres: bool, per_run: str
) -> dict[str, Any]:
    measured = ui_backfill(partitions, rows, cadence, on_postgres, max(1800.0, partitions * 2.0), per_run)
    return {prefix if key == "s" else f"{prefix}_{key}": value for key, value in measured.items()}


PART_RUNNERS: dict[str, Any] = {
    "lr": lambda args: throughput("lr", args),
    "hgb": lambda args: throughput("hgb", args),
    "naive": naive,
    "postgres": lambda args: postgres(args.rows, args.writer_rows, args.chunk),
    "memory": memory,
    "backfill": ranges,
    "overhead": lambda args: overhead(
        args.overhead_partitions, args.overhead_runs, args.chunk, HERE / "profiles" if args.profile_overhead else None
    ),
    "year": lambda args: year_in_process(
        args.ui_days, args.ui_rows, args.year_partitions, HERE / "profiles" if args.profile_overhead else None
    ),
    "ui": lambda args: from_the_ui("year_backfill_ui_s", args.ui_days, args.ui_rows, "daily", False, args.ui_per_run),
    "ui_hourly": lambda args: from_the_ui(
        "year_backfill_hourly_s", args.hourly_partitions, args.hourly_rows, "hourly", False, args.ui_per_run
    ),
    "pg_ui": lambda args: from_the_ui(
        "pg_year_backfill_ui_s", args.ui_days, args.ui_rows, "daily", True, args.ui_per_run
    ),
}

# (label, value, note, the keys it needs): a row shows when its keys were measured.
Row = tuple[str, str, str]


def table(r: dict[str, Any]) -> str:
    rows: list[Row] = []

    def row(needs: tuple[str, ...], make: Any) -> None:
        if all(key in r for key in needs):
            rows.append(make())

    row(("rows_per_s_floor_lr",), lambda: ("floor, LogisticRegression", f"{r['rows_per_s_floor_lr']:,.0f} rows/s", ""))
    row(
        ("floor_ratio_lr",),
        lambda: (
            "ours (asset step), LogisticRegression",
            f"{r['rows_per_s_lr']:,.0f} rows/s",
            f"floor_ratio_lr {r['floor_ratio_lr']:.2f} (target >= 0.7)",
        ),
    )
    row(
        ("floor_ratio_run_lr",),
        lambda: (
            "ours (whole run), LogisticRegression",
            f"{r['rows'] / r['ours_run_s_lr']:,.0f} rows/s",
            f"{r['floor_ratio_run_lr']:.2f} of floor",
        ),
    )
    row(
        ("rows_per_s_floor_hgb",),
        lambda: ("floor, HistGradientBoosting", f"{r['rows_per_s_floor_hgb']:,.0f} rows/s", ""),
    )
    row(
        ("floor_ratio_hgb",),
        lambda: (
            "ours (asset step), HistGradientBoosting",
            f"{r['rows_per_s_hgb']:,.0f} rows/s",
            f"floor_ratio_hgb {r['floor_ratio_hgb']:.2f} (target >= 0.9)",
        ),
    )
    row(
        ("floor_ratio_run_hgb",),
        lambda: (
            "ours (whole run), HistGradientBoosting",
            f"{r['rows'] / r['ours_run_s_hgb']:,.0f} rows/s",
            f"{r['floor_ratio_run_hgb']:.2f} of floor",
        ),
    )
    row(
        ("rows_per_s_naive_pandas_lr", "rows_per_s_lr"),
        lambda: (
            "naive: all into pandas, predict, insert (LR)",
            f"{r['rows_per_s_naive_pandas_lr']:,.0f} rows/s",
            f"{r['rows_per_s_naive_pandas_lr'] / r['rows_per_s_lr']:.2f} of ours",
        ),
    )
    for size in ("100k", "1m", "10m"):
        row(
            (f"naive_ratio_lr_{size}",),
            lambda size=size: (
                f"naive pandas / ours (LR), {r[f'naive_rows_{size}']:,} rows",
                f"{r[f'naive_s_lr_{size}']:.2f} s / {r[f'naive_ours_step_s_lr_{size}']:.2f} s",
                f"naive_ratio_lr_{size} {r[f'naive_ratio_lr_{size}']:.2f} (target >= 1.0)"
                + (f"; medians of {r[f'naive_repeats_{size}']}" if f"naive_repeats_{size}" in r else "")
                + (f"; the floor {r[f'naive_floor_s_lr_{size}']:.2f} s" if f"naive_floor_s_lr_{size}" in r else ""),
            ),
        )
    row(
        ("rows_per_s_per_row_commit_lr", "rows_per_s_lr"),
        lambda: (
            f"naive: per-row predict + commit (LR, {r['per_row_commit_rows']} rows)",
            f"{r['rows_per_s_per_row_commit_lr']:,.0f} rows/s",
            f"{r['rows_per_s_per_row_commit_lr'] / r['rows_per_s_lr']:.5f} of ours",
        ),
    )
    row(
        ("peak_rss_mb_1m",),
        lambda: (
            f"peak RSS, prediction run, {r['rows']:,} rows",
            f"{r['peak_rss_mb_1m']:,.0f} MB",
            f"DuckDB memory_limit {r['duckdb_memory_limit']}",
        ),
    )
    row(
        ("peak_rss_mb_10m",),
        lambda: (
            f"peak RSS, prediction run, {r['big_rows']:,} rows",
            f"{r['peak_rss_mb_10m']:,.0f} MB",
            f"{r['peak_rss_ratio_10m_1m']:.2f}x the smaller (target <= 1.25x, <= 1024 MB)",
        ),
    )
    row(
        ("overhead_ms_per_partition_range",),
        lambda: (
            f"overhead per {r['overhead_rows_per_partition']}-row partition, in a range of {r['overhead_partitions']}",
            f"{r['overhead_ms_per_partition_range']:,.0f} ms",
            f"overhead_ms_per_partition_range (target <= 50; Dagster alone "
            f"{r['dagster_floor_ms_per_partition_range']:.0f} ms)",
        ),
    )
    row(
        ("overhead_ms_per_partition_run",),
        lambda: (
            f"overhead per {r['overhead_rows_per_partition']}-row partition, its own in-process run",
            f"{r['overhead_ms_per_partition_run']:,.0f} ms",
            f"overhead_ms_per_partition_run (target <= 300; Dagster alone "
            f"{r['dagster_floor_ms_per_partition_run']:.0f} ms)",
        ),
    )
    row(
        ("backfill_one_run_per_partition_s_extrapolated",),
        lambda: (
            f"backfill {r['backfill_days']} x {r['backfill_rows_per_partition']:,} rows, one run per partition",
            f"{r['backfill_one_run_per_partition_s_extrapolated']:,.0f} s",
            f"extrapolated from {r['backfill_sample']} runs ({r['backfill_one_run_per_partition_s_per_run']:.2f} s each)",
        ),
    )
    row(
        ("backfill_ranges_s",),
        lambda: (
            f"backfill, ranges ({r['backfill_runs_with_ranges']} runs)",
            f"{r['backfill_ranges_s']:,.0f} s",
            f"{r['backfill_speedup']:.1f}x faster (target >= 10x)",
        ),
    )
    row(
        ("year_in_process_inputs_s_per_partition",),
        lambda: (
            f"{r['year_in_process_landing_days']} days of landing files, a range run of "
            f"{r['year_in_process_partitions']} x {r['year_in_process_rows_per_partition']:,} rows",
            f"{r['year_in_process_inputs_s_per_partition'] + r['year_in_process_predictions_s_per_partition']:.2f} s",
            f"per partition, in-process: inputs {r['year_in_process_inputs_s_per_partition']:.2f} s, predictions "
            f"{r['year_in_process_predictions_s_per_partition']:.2f} s",
        ),
    )
    for prefix, target in (
        ("year_backfill_ui_s", 60),
        ("year_backfill_hourly_s", 600),
        ("pg_year_backfill_ui_s", 60),
    ):
        row((prefix,), lambda prefix=prefix, target=target: ui_row(r, prefix, target))
    row(
        ("pg_floor_ratio_lr", "pg_step_vs_duckdb_floor_ratio_lr"),
        lambda: (
            "PostgreSQL warehouse, asset step (LR)",
            f"{r['rows'] / r['pg_step_s_lr']:,.0f} rows/s",
            f"pg_floor_ratio_lr {r['pg_floor_ratio_lr']:.2f} of the PostgreSQL floor (target >= 0.7); "
            f"{r['pg_step_vs_duckdb_floor_ratio_lr']:.2f} of DuckDB's floor, {r['pg_vs_duckdb_ratio']:.2f} of our DuckDB step",
        ),
    )
    row(
        ("pg_4_writers_concurrent_s",),
        lambda: (
            f"PostgreSQL, 4 runs on 4 partitions x {r['pg_writer_rows']:,} rows at once",
            f"{r['pg_4_writers_concurrent_s']:,.1f} s",
            f"{r['pg_4_writers_speedup']:.2f}x one after the other ({r['pg_4_writers_sequential_s']:,.1f} s)",
        ),
    )
    row(
        ("pg_ingest_s_binary_copy",),
        lambda: (
            f"into PostgreSQL, {r['rows']:,} rows: binary COPY from Arrow / ADBC ingest",
            f"{r['pg_ingest_s_binary_copy']:.1f} s / {r['pg_ingest_s_adbc']:.1f} s",
            f"back: COPY text {r['pg_read_s_copy_text']:.1f} s / ADBC {r['pg_read_s_adbc']:.1f} s",
        ),
    )
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{name.ljust(width)}  {value:>18}  {note}" for name, value, note in rows]
    m = r["machine"]
    head = (
        f"machine: {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, dagster {m['dagster']}, "
        f"duckdb {m['duckdb']}, scikit-learn {m['scikit_learn']}, pyarrow {m['pyarrow']} ({m['date']})"
    )
    return head + "\n" + "\n".join(lines)


def ui_row(r: dict[str, Any], prefix: str, target: float) -> Row:
    """A backfill from the UI: launch to the last materialization, and where the time went."""
    where = "PostgreSQL, " if prefix.startswith("pg_") else ""
    return (
        f"{where}UI backfill {r[f'{prefix}_partitions']:,} x {r[f'{prefix}_rows_per_partition']:,} rows, "
        f"{r[f'{prefix}_runs']} runs of <= {r[f'{prefix}_partitions_per_run']}",
        f"{r[prefix]:,.0f} s",
        f"{prefix} (target <= {target}): pickup {r[f'{prefix}_pickup_s']:.0f} s, first run start "
        f"{r[f'{prefix}_first_start_s']:.0f} s, then {r[f'{prefix}_first_start_to_last_s']:.0f} s; per partition "
        f"inputs {r.get(f'{prefix}_inputs_step_s_per_partition', 0):.2f} s, predictions "
        f"{r.get(f'{prefix}_predictions_step_s_per_partition', 0):.2f} s (step time, runs overlap)",
    )


if __name__ == "__main__":
    main()
