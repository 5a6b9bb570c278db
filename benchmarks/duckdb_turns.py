"""Several processes take turns at one DuckDB file, as parallel runs do, and the file is checked for damage.

Only `duckdb` is used, none of batch_predict: each writer process opens the file read-write for one
transaction shaped like a publish (delete and insert a partition's rows and its stats row, update the
stats row), closes it, then opens it read-only and reads the stats back; readers only read. Busy
loops starve the CPU, as a loaded machine does. A damaged file shows as "Could not read enough
bytes" (a block the file is too short to hold) or "Corrupt database file" (a block whose checksum
fails). Exit status 1 if any read met damage.

    python benchmarks/duckdb_turns.py --seconds 80 --writers 4 --readers 0 --busy 3

See docs/operations.md, "A damaged warehouse file".
"""

import argparse
import contextlib
import fcntl
import multiprocessing as mp
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
)
DAMAGE = ("Could not read enough bytes", "Corrupt database file")


@contextlib.contextmanager
def turn(path: str, read_only: bool, flock: bool) -> Any:
    """With --flock, hold a `flock` on `<file>.turn` (shared to read, exclusive to write) for the
    connection's whole life: an exclusion that does not rest on DuckDB's own `fcntl` locks."""
    if not flock:
        yield
        return
    with open(path + ".turn", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if read_only else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def write_turn(path: str, key: str, run: str, flock: bool) -> None:
    with turn(path, False, flock):
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
            con.execute("COMMIT")
        finally:
            con.close()


def read_turn(path: str, flock: bool) -> None:
    with turn(path, True, flock):
        con = connect(path, read_only=True)
        try:
            con.execute("SELECT * FROM prediction_stats ORDER BY partition_key").fetchall()
            con.execute("SELECT * FROM input_stats").fetchall()
            con.execute("SELECT count(*), max(p) FROM predictions").fetchall()
        finally:
            con.close()


def worker(path: str, writes: bool, seed: int, seconds: float, out: Any, flock: bool) -> None:
    rnd = random.Random(seed)
    turns, damage, other = 0, [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if writes:
                write_turn(path, f"2026-03-{rnd.randrange(1, 41):02d}", f"w{seed}-{turns}", flock)
            read_turn(path, flock)
            turns += 1
        except duckdb.Error as error:
            (damage if any(text in str(error) for text in DAMAGE) else other).append(str(error).splitlines()[0])
            if len(damage) + len(other) > 5:
                break
    out.put((seed, writes, turns, damage, other))


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
    parser.add_argument("--flock", action="store_true", help="also hold a flock on <file>.turn around every connection")
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
        ctx.Process(target=worker, args=(path, writes, i, args.seconds, out, args.flock))
        for i, writes in enumerate(roles)
    ]
    for process in load + workers:
        process.start()
    damaged = False
    for _ in workers:
        seed, writes, turns, damage, other = out.get()
        damaged |= bool(damage)
        role = "writer" if writes else "reader"
        print(f"{role} {seed}: {turns} turns, {len(damage)} damaged reads, {len(other)} other errors")
        for line in (damage + other)[:3]:
            print(f"    {line}")
    for process in workers + load:
        process.join()
    try:
        read_turn(path, flock=False)
        print(f"the file at the end: reads in full ({path})")
    except duckdb.Error as error:
        damaged = True
        print(f"the file at the end: damaged ({str(error).splitlines()[0]}) ({path})")
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
