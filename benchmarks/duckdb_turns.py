"""Several processes take turns at one DuckDB file, as parallel runs do, and the file is checked for damage.

Without --turns only `duckdb` is used, none of batch_predict: each writer process opens the file read-write for one
transaction shaped like a publish (delete and insert a partition's rows and its stats row, update the
stats row), closes it, then opens it read-only and reads the stats back; readers only read. Busy
loops starve the CPU, as a loaded machine does. A damaged file shows as "Could not read enough
bytes" (a block the file is too short to hold) or "Corrupt database file" (a block whose checksum
fails). Every committed transaction also appends its name to `turns_log`; one missing from it at the
end is a lost commit. Exit status 1 if any read met damage or any commit was lost.

    python benchmarks/duckdb_turns.py --seconds 80 --writers 4 --readers 0 --busy 3
    python benchmarks/duckdb_turns.py --turns     # each connection also takes its turn as batch_predict does

See docs/operations.md, "A damaged warehouse file".
"""

import argparse
import contextlib
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

TABLES = (
    "CREATE TABLE input_stats (partition_key VARCHAR PRIMARY KEY, source_rows BIGINT, run_id VARCHAR, "
    "loaded_at TIMESTAMPTZ)",
    "CREATE TABLE prediction_stats (partition_key VARCHAR PRIMARY KEY, valid_inputs BIGINT, rejected BIGINT, "
    "run_id VARCHAR, completed_at TIMESTAMPTZ, model_versions VARCHAR)",
    "CREATE TABLE predictions (partition_key VARCHAR, record_id VARCHAR, p DOUBLE, run_id VARCHAR)",
    "CREATE TABLE turns_log (run_id VARCHAR)",
)
DAMAGE = ("Could not read enough bytes", "Corrupt database file")


@contextlib.contextmanager
def turn(path: str, read_only: bool, take_turns: bool) -> Any:
    """With --turns, take a turn at the file as batch_predict does (`batch_predict.warehouse.turns`: an
    `flock` on `<file>.lock`, shared to read, exclusive to write) for the connection's whole life."""
    if not take_turns:
        yield
        return
    from batch_predict.warehouse import turns

    real = os.path.realpath(path)
    taken, held = turns.take(real, exclusive=not read_only)
    while not taken:
        time.sleep(random.uniform(0, 0.02))
        taken, held = turns.take(real, exclusive=not read_only)
    try:
        yield
    finally:
        turns.give_back(held)


def connect(path: str, read_only: bool) -> Any:
    """Open the file, waiting out other processes' locks with jittered backoff."""
    delay = 0.005
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.Error as error:
            if "Could not set lock" not in str(error):
                raise
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.2)


def write_turn(path: str, key: str, run: str, take_turns: bool) -> None:
    with turn(path, False, take_turns):
        con = connect(path, read_only=False)
        try:
            con.execute("BEGIN")
            con.execute("DELETE FROM input_stats WHERE partition_key = $k", {"k": key})
            con.execute("INSERT INTO input_stats VALUES ($k, 200, $r, now())", {"k": key, "r": run})
            con.execute("DELETE FROM predictions WHERE partition_key = $k", {"k": key})
            con.execute(
                "INSERT INTO predictions SELECT $k, 'r' || range, random(), $r FROM range(200)", {"k": key, "r": run}
            )
            con.execute("DELETE FROM prediction_stats WHERE partition_key = $k", {"k": key})
            con.execute(
                "INSERT INTO prediction_stats SELECT $k, 200, (SELECT max(source_rows) - 200 FROM input_stats "
                "WHERE partition_key = $k), $r, now(), NULL",
                {"k": key, "r": run},
            )
            con.execute("UPDATE prediction_stats SET model_versions = 'v1' WHERE partition_key = $k", {"k": key})
            con.execute("INSERT INTO turns_log VALUES ($r)", {"r": run})
            con.execute("COMMIT")
        finally:
            con.close()


def read_turn(path: str, take_turns: bool) -> None:
    with turn(path, True, take_turns):
        con = connect(path, read_only=True)
        try:
            con.execute("SELECT * FROM prediction_stats ORDER BY partition_key").fetchall()
            con.execute("SELECT * FROM input_stats").fetchall()
            con.execute("SELECT count(*), max(p) FROM predictions").fetchall()
        finally:
            con.close()


def worker(path: str, writes: bool, seed: int, seconds: float, out: Any, take_turns: bool) -> None:
    rnd = random.Random(seed)
    turns, damage, other, committed = 0, [], [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if writes:
                run = f"w{seed}-{turns}"
                write_turn(path, f"2026-03-{rnd.randrange(1, 41):02d}", run, take_turns)
                committed.append(run)
            read_turn(path, take_turns)
            turns += 1
        except duckdb.Error as error:
            (damage if any(text in str(error) for text in DAMAGE) else other).append(str(error).splitlines()[0])
            if len(damage) + len(other) > 5:
                break
    out.put((seed, writes, turns, damage, other, committed))


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=80)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--readers", type=int, default=0)
    parser.add_argument("--busy", type=int, default=3, help="busy-loop processes that starve the CPU")
    parser.add_argument("--folder", type=Path, default=None, help="where the file goes (default: a temp dir)")
    parser.add_argument(
        "--turns", action="store_true", help="take turns at the file as batch_predict does (an flock on <file>.lock)"
    )
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="duckdb_turns_"))
    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder / "turns.duckdb")
    with duckdb.connect(path) as con:
        for statement in TABLES:
            con.execute(statement)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    load = [ctx.Process(target=busy, args=(args.seconds + 5,)) for _ in range(args.busy)]
    roles = [True] * args.writers + [False] * args.readers
    workers = [
        ctx.Process(target=worker, args=(path, writes, i, args.seconds, out, args.turns))
        for i, writes in enumerate(roles)
    ]
    for process in load + workers:
        process.start()
    damaged = False
    committed: set[str] = set()
    for _ in workers:
        seed, writes, turns, damage, other, runs = out.get()
        committed.update(runs)
        damaged |= bool(damage)
        role = "writer" if writes else "reader"
        print(f"{role} {seed}: {turns} turns, {len(damage)} damaged reads, {len(other)} other errors")
        for line in (damage + other)[:3]:
            print(f"    {line}")
    for process in workers + load:
        process.join()
    try:
        read_turn(path, take_turns=False)
        print(f"the file at the end: reads in full ({path})")
        with duckdb.connect(path, read_only=True) as con:
            logged = {run for (run,) in con.execute("SELECT run_id FROM turns_log").fetchall()}
        lost = committed - logged
        print(f"committed transactions: {len(committed)}, lost: {len(lost)} {sorted(lost)[:5]}")
        damaged |= bool(lost)
    except duckdb.Error as error:
        damaged = True
        print(f"the file at the end: damaged ({str(error).splitlines()[0]}) ({path})")
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
