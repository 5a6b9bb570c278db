"""Whose turn it is at a DuckDB file: an `flock` on `<file>.lock`, held for a connection's whole life.

DuckDB's own cross-process exclusion is an `fcntl` lock on the file. On DuckDB 2.0.1, processes
that take turns at one file under a starved CPU were measured to lose committed transactions and
to leave blocks zeroed or cut short (`benchmarks/duckdb_turns.py`; docs/operations.md, "A damaged
warehouse file"). The same processes, each also holding an `flock` on a file beside the warehouse
for as long as its connection is open (shared to read, exclusive to write), lost nothing. So every
connection this project opens on a DuckDB file takes its turn here first, and DuckDB's lock stays
as a second line (it still keeps out a DuckDB process that does not take turns, a notebook say).

An `flock` belongs to an open file description, not to a process: no other descriptor of the same
file that this process closes lets it go. A forked child shares its parent's descriptions, so it
closes its copies at once (`os.register_at_fork`): a child that outlives its parent must not keep
the parent's turn. Within one process, the connections to one file share one turn, counted: DuckDB
shares one database between them, and refuses a second one in the other mode. Each connection
gives back its own `Ticket` once, so a count never ends another connection's turn.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path


class TurnUnavailable(OSError):
    """The lock file exists, or must be made, and this process cannot open it."""


@dataclass(eq=False)
class Turn:
    """One process's turn at one file, shared by its connections (`count`)."""

    path: str
    fd: int
    count: int = 0
    exclusive: bool = False


@dataclass(eq=False)
class Ticket:
    """One connection's share of its process's turn: given back once."""

    turn: Turn
    given_back: bool = False


_turns: dict[str, Turn] = {}
_guard = threading.Lock()


def _forget_after_fork() -> None:
    """In a forked child: close the parent's lock file descriptors (the parent's turns stay the parent's)."""
    global _guard
    _guard = threading.Lock()  # another thread may have held it at the fork
    for turn in _turns.values():
        with suppress(OSError):
            os.close(turn.fd)
    _turns.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def sidecar(path: str) -> str:
    """The file whose `flock` gives the turn at `path`."""
    return path + ".lock"


def take(path: str, exclusive: bool) -> tuple[bool, Ticket | None]:
    """Take a turn at the DuckDB file `path` (a real path) without waiting: (taken, the ticket to give back).

    Not taken: another process has the file in a mode that excludes this one, or this process holds
    a shared turn and asks for an exclusive one (its reader lets go first: upgrading an `flock` lets
    go of it before taking the new one). Taken with no turn: a reader in a folder it cannot write,
    with no lock file in it (no writer can be there either). Raises `TurnUnavailable` when the lock
    file cannot be opened otherwise.
    """
    with _guard:
        turn = _turns.get(path)
        if turn is not None and turn.count:
            if exclusive and not turn.exclusive:
                return False, None
            turn.count += 1
            return True, Ticket(turn)
        while True:
            if turn is None:
                fd = _open(path, exclusive)
                if fd is None:
                    return True, None
                turn = _turns[path] = Turn(path, fd)
            try:
                fcntl.flock(turn.fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                return False, None
            if _current(path, turn.fd):
                turn.count, turn.exclusive = 1, exclusive
                return True, Ticket(turn)
            # The lock file was deleted or replaced: a lock on the old one keeps no one out. Take the new one.
            _turns.pop(path)
            os.close(turn.fd)
            turn = None


def _open(path: str, exclusive: bool) -> int | None:
    """A descriptor of the lock file, made if missing and readable by all (a read-only descriptor is
    enough for an `flock`); None for a reader where it is missing and cannot be made."""
    lock = sidecar(path)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        try:
            return os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not exclusive:
                return None
            raise TurnUnavailable(f"cannot make the lock file {lock}: is its folder writable?") from None
        except OSError as error:
            raise TurnUnavailable(f"cannot open the lock file {lock} ({error.strerror}): {_owner(lock)}") from error
    with suppress(OSError):  # a umask of 077 would keep other users' runs from taking turns
        found = os.fstat(fd)
        if found.st_uid == os.getuid() and found.st_mode & 0o444 != 0o444:
            os.fchmod(fd, stat.S_IMODE(found.st_mode) | 0o444)
    return fd


def _owner(lock: str) -> str:
    try:
        found = os.stat(lock)
    except OSError:
        return "make it readable by every user that runs batch_predict"
    return (
        f"it belongs to uid {found.st_uid} with mode {stat.filemode(found.st_mode)}; make it readable by every "
        f"user that runs batch_predict (chmod a+r {lock})"
    )


def _current(path: str, fd: int) -> bool:
    """Whether `fd` is still the file at the lock file's path."""
    try:
        found, held = os.stat(sidecar(path)), os.fstat(fd)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


def give_back(ticket: Ticket | None) -> None:
    """End one connection's share of the turn (once); the last one of this process lets the file go."""
    if ticket is None or ticket.given_back:
        return
    ticket.given_back = True
    turn = ticket.turn
    with _guard:
        if _turns.get(turn.path) is not turn or not turn.count:
            return  # a turn of the parent, in a forked child
        turn.count -= 1
        if not turn.count:
            fcntl.flock(turn.fd, fcntl.LOCK_UN)


def held(path: str) -> int:
    """How many connections of this process hold a turn at `path`."""
    with _guard:
        turn = _turns.get(path)
        return turn.count if turn is not None else 0


def holders(path: str) -> list[int]:
    """The PIDs that hold an `flock` on the lock file of `path` (from /proc/locks; empty where unknown).

    An `flock` is listed under the PID that took it; a forked child that shares it is not listed."""
    try:
        found = os.stat(sidecar(path))
        locks = Path("/proc/locks").read_text()
    except OSError:
        return []
    device = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    pids = set()
    for line in locks.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 08:01:1234567 0 EOF" (a waiter's line starts "1: -> FLOCK").
        if "->" not in fields and len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            pids.add(int(fields[4]))
    return sorted(pids - {os.getpid()})
