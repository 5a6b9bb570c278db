"""Whose turn it is at a DuckDB file: an `flock` on `<file>.lock`, held for a connection's whole life.

DuckDB's own cross-process exclusion is an `fcntl` lock on the file. On DuckDB 2.0.1, processes
that take turns at one file under a starved CPU were measured to lose committed transactions and
to leave blocks zeroed or cut short (`benchmarks/duckdb_turns.py`; docs/operations.md, "A damaged
warehouse file"). The same processes, each also holding an `flock` on a file beside the warehouse
for as long as its connection is open (shared to read, exclusive to write), lost nothing. So every
connection this project opens on a DuckDB file takes its turn here first, and DuckDB's lock stays
as a second line (it still keeps out a DuckDB process that does not take turns, a notebook say).

An `flock` belongs to an open file description, not to a process: no other descriptor of the same
file that this process closes lets it go, and it cannot be inherited by accident across a fork
(a forked child opens its own). Within one process, the connections to one file share one turn,
counted: DuckDB shares one database between them, and refuses a second one in the other mode.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import suppress
from dataclasses import dataclass


@dataclass
class _Turn:
    pid: int  # the process that opened `fd` (a forked child opens its own)
    fd: int
    count: int = 0  # connections of this process that hold the turn
    exclusive: bool = False


_turns: dict[str, _Turn] = {}
_guard = threading.Lock()


def sidecar(path: str) -> str:
    """The file whose `flock` gives the turn at `path`."""
    return path + ".lock"


def take(path: str, exclusive: bool) -> bool:
    """Take a turn at the DuckDB file `path` (a real path) without waiting: True if taken.

    False means another process has the file in a mode that excludes this one, or this process
    holds a shared turn and asks for an exclusive one (its reader lets go first: upgrading an
    `flock` lets go of it before taking the new one). A folder where the lock file cannot be
    made gives no turn to take, and True: DuckDB's own lock is all there is there.
    """
    with _guard:
        turn = _turns.get(path)
        if turn is not None and turn.pid != os.getpid():
            # A forked child's copy of its parent's descriptor: closing it leaves the parent's lock be.
            _turns.pop(path)
            with suppress(OSError):
                os.close(turn.fd)
            turn = None
        if turn is not None and turn.count:
            if exclusive and not turn.exclusive:
                return False
            turn.count += 1
            return True
        while True:
            if turn is None:
                fd = _open(path)
                if fd is None:
                    return True
                turn = _turns[path] = _Turn(os.getpid(), fd)
            try:
                fcntl.flock(turn.fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if _current(path, turn.fd):
                turn.count, turn.exclusive = 1, exclusive
                return True
            # The lock file was deleted or replaced: a lock on the old one keeps no one out. Take the new one.
            _turns.pop(path)
            os.close(turn.fd)
            turn = None


def _open(path: str) -> int | None:
    """A descriptor of the lock file (made if missing); None if the folder allows neither."""
    try:
        return os.open(sidecar(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        with suppress(OSError):
            return os.open(sidecar(path), os.O_RDONLY | os.O_CLOEXEC)
    return None


def _current(path: str, fd: int) -> bool:
    """Whether `fd` is still the file at the lock file's path."""
    try:
        found, held = os.stat(sidecar(path)), os.fstat(fd)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


def give_back(path: str) -> None:
    """End one connection's turn at `path`; the last one of this process lets the file go."""
    with _guard:
        turn = _turns.get(path)
        if turn is None or turn.pid != os.getpid() or not turn.count:
            return
        turn.count -= 1
        if not turn.count:
            fcntl.flock(turn.fd, fcntl.LOCK_UN)


def held(path: str) -> int:
    """How many connections of this process hold a turn at `path` (for tests)."""
    with _guard:
        turn = _turns.get(path)
        return turn.count if turn is not None and turn.pid == os.getpid() else 0
