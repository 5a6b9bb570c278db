"""Local PostgreSQL and Redis servers for the tests and the cluster demo, on 127.0.0.1 and free ports.

Both use the Debian packages (`postgresql`, `redis-server`) and install them with apt when they are
missing and we are root, so that a fresh CI machine needs no setup step of its own; so does the
headless Chromium (`chromium`) that the UI test drives. Each server runs
in its own process group and is stopped by PID and process group, never by name: several people's
servers share the machine.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

import psycopg
import redis
from psycopg import sql

HOST = "127.0.0.1"
POSTGRES_USER = "postgres"
# Linux limits a Unix socket path (with the `.s.PGSQL.<port>` name) to 107 bytes.
SOCKET_PATH_LIMIT = 90
# Test-only settings: a crash may lose or corrupt the cluster, which a test throws away anyway.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
LOG_TAIL_CHARS = 3000


class ServerError(RuntimeError):
    """A local server could not be installed, started or stopped; the message says what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def is_root() -> bool:
    return os.geteuid() == 0


def log_size(path: Path) -> int:
    """Where the log ends now: the servers append to their logs, and a failure reads only what follows."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_tail(path: Path, since: int = 0) -> str:
    """The end of a server log after byte `since`, for error messages; empty when the server wrote none."""
    try:
        with path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return ""


def apt_install(package: str) -> None:
    """Install a Debian package with apt-get; only root can, anyone else gets the command to run."""
    if not is_root():
        raise ServerError(
            f"The Debian package {package!r} is not installed and only root can install it: "
            f"run `sudo apt-get update && sudo apt-get install -y {package}`."
        )
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    # Another process may hold apt's lock for a while (a parallel install); wait for it.
    wait = ["-o", "DPkg::Lock::Timeout=300"]
    for command in (
        ["apt-get", *wait, "update"],
        ["apt-get", *wait, "install", "-y", "--no-install-recommends", package],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServerError(
                f"Installing {package!r} failed: `{' '.join(command)}` exited {done.returncode}.\n"
                f"{(done.stdout + done.stderr)[-LOG_TAIL_CHARS:]}"
            )


def process_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (an exited server nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself hold spaces or parentheses.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def group_alive(pgid: int) -> bool:
    """Whether any live process remains in the process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def kill_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `timeout` seconds."""
    kill_groups([pgid], timeout)


def kill_groups(pgids: list[int], timeout: float = 30.0) -> None:
    """SIGTERM every process group at once, then SIGKILL what is left after `timeout` seconds.

    All at once, so that servers that take seconds to shut down (Celery's warm shutdown) do so
    side by side.
    """
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        for pgid in pgids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while (left := [pgid for pgid in pgids if group_alive(pgid)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not left:
            return
        pgids = left
    raise ServerError(f"Process groups {pgids} are still alive after SIGKILL.")


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot), to tell it from a later one with its PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


class ManagedProcess:
    """A long-running command in a process group of its own, its output appended to a log file.

    Stopped by process group, so that what it started (Dagster's code servers, Celery's pool
    processes) stops with it.
    """

    def __init__(self, name: str, command: list[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log = log
        self.since = log_size(log)
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                command, env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started = process_start_time(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self) -> str:
        """What the process wrote to its log since it started (the end of it)."""
        return log_tail(self.log, self.since)

    def check(self) -> None:
        """Raise, with the log's tail, if the process has exited."""
        code = self.popen.poll()
        if code is not None:
            raise ServerError(f"{self.name} exited with code {code}. Log {self.log}:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        stop_processes([self], timeout)


def stop_processes(processes: list[ManagedProcess], timeout: float = 30.0) -> None:
    """Stop the processes' groups side by side (SIGTERM, then SIGKILL after `timeout`) and reap them."""
    kill_groups([process.pid for process in processes if group_alive(process.pid)], timeout)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=10)


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL `bin` folder with initdb, pg_ctl and postgres; installed when missing."""
    for attempt in range(2):
        found = sorted(
            (
                folder
                for folder in Path("/usr/lib/postgresql").glob("*/bin")
                if all((folder / name).exists() for name in ("initdb", "pg_ctl", "postgres"))
            ),
            key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0,
        )
        if found:
            return found[-1]
        if attempt == 0:
            apt_install("postgresql")
    raise ServerError("apt-get installed `postgresql` but no /usr/lib/postgresql/*/bin holds initdb, pg_ctl, postgres.")


def redis_server_bin() -> Path:
    """Debian's `redis-server`, installed when missing."""
    for attempt in range(2):
        found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
        if found:
            return Path(found)
        if attempt == 0:
            apt_install("redis-server")
    raise ServerError("apt-get installed `redis-server` but no redis-server is on PATH or in /usr/bin.")


def chromium_bin() -> Path:
    """Debian's Chromium browser binary, installed when missing.

    The binary itself rather than the `/usr/bin/chromium` wrapper script, which adds flags of its own
    (extensions, GPU rasterization) from /etc/chromium.d; the UI test passes the flags it needs.
    """
    binary = Path("/usr/lib/chromium/chromium")
    for attempt in range(2):
        if binary.exists():
            return binary
        if attempt == 0:
            apt_install("chromium")
    raise ServerError(f"apt-get installed `chromium` but {binary} is not there.")


def make_reachable(folder: Path, user: str) -> None:
    """Let `user` reach `folder`: add search permission (not read) to each ancestor that lacks it.

    Needed as root, where the server runs as the `postgres` user while the folder may sit below a
    root-only directory, such as pytest's /tmp/pytest-of-root (mode 0700).
    """
    uid = pwd.getpwnam(user).pw_uid
    for parent in reversed(folder.resolve().parents):
        status = parent.stat()
        if status.st_uid != uid and not status.st_mode & 0o001:
            parent.chmod(status.st_mode | 0o001)


class PostgresServer:
    """A PostgreSQL cluster in `folder` (data, socket and log), served on 127.0.0.1 and a free port.

    An initialised cluster already in `folder` is reused (its databases survive), so a demo can run
    twice; a server left running by a killed earlier owner of the folder is stopped first. `fast`
    turns off durability for tests. As root the server runs as the `postgres` OS user, as
    PostgreSQL refuses to run as root.
    """

    def __init__(self, folder: Path, *, fast: bool = False, port: int | None = None) -> None:
        self.folder = folder.resolve()
        self.fast = fast
        self.port = port or 0
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.socket_dir = self.folder / "socket"
        self.bin = Path()
        self.pid: int | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def url(self, database: str = "postgres") -> str:
        """The libpq URL of `database` on this server, as the postgres superuser (trust auth, loopback only)."""
        if not self.port:
            raise ServerError("The PostgreSQL server has not been started.")
        return f"postgresql://{POSTGRES_USER}@{HOST}:{self.port}/{database}"

    def start(self) -> Self:
        """Initialise the cluster if the folder has none, then start the server and wait until it accepts connections."""
        self.bin = postgres_bin()
        self.folder.mkdir(parents=True, exist_ok=True)
        if is_root():
            make_reachable(self.folder, POSTGRES_USER)
            self._chown()
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        self._stop_leftover()
        for attempt in range(3):
            self.port = self.port if attempt == 0 and self.port else free_port()
            since = log_size(self.log)
            if self._pg_ctl_start():
                break
            # Another process took the free port between our probe and the server's bind: try another.
            if not re.search(r"could not bind|in use", log_tail(self.log, since)):
                self._fail("did not start", since)
        else:
            self._fail("found no free port in 3 attempts", since)
        self.pid = self._postmaster_pid()
        return self

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        """Create an empty database and return its URL; with `exist_ok`, an existing one is kept as it is."""
        with psycopg.connect(self.url(), autocommit=True) as con:
            exists = con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists and not exist_ok:
                raise ServerError(f"Database {name!r} already exists on {self.url()}.")
            if not exists:
                con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, closing any connection still open to it."""
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Fast shutdown with pg_ctl (rolls back open transactions); then SIGTERM/SIGKILL the process group if alive."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        if process_alive(pid):
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"])
        if group_alive(pid) and self._runs_here(pid):
            kill_group(pid)

    def _runs_here(self, pid: int) -> bool:
        """Whether `pid` is the postmaster of this folder: a PID (and so a process group id) that was this
        server's may by now belong to another process, another server's postmaster even, on a busy machine.
        The postmaster works in its data folder."""
        try:
            return Path(os.readlink(f"/proc/{pid}/cwd")).resolve() == self.data.resolve()
        except OSError:
            return False

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a server command, as the postgres OS user when we are root."""
        if is_root():
            command = ["runuser", "-u", POSTGRES_USER, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, start_new_session=True)

    def _chown(self) -> None:
        """Hand the folder to the postgres OS user, which the server and initdb run as."""
        account = pwd.getpwnam(POSTGRES_USER)
        for path in [self.folder, *self.folder.rglob("*")]:
            if path.lstat().st_uid != account.pw_uid:
                os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)

    def _initdb(self) -> None:
        if self.data.exists():
            # A half-initialised folder from an initdb that was killed: start over.
            shutil.rmtree(self.data)
        done = self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "--no-sync",
                "-U",
                POSTGRES_USER,
                "-E",
                "UTF8",
            ]
        )
        if done.returncode != 0:
            raise ServerError(
                f"initdb failed for {self.data} (exit {done.returncode}); the folder must be writable by the "
                f"{'postgres OS user' if is_root() else 'current user'}.\n{(done.stdout + done.stderr)[-LOG_TAIL_CHARS:]}"
            )

    def _postmaster_pid(self) -> int | None:
        """The PID in postmaster.pid (the postmaster leads its own process group), if the file is there."""
        try:
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
        return int(first) if first.strip().isdigit() else None

    def _stop_leftover(self) -> None:
        """Stop a server a killed earlier owner left running on this folder, or drop its stale postmaster.pid."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            command = []
        if (
            process_alive(pid)
            and command
            and Path(command[0].decode()).name in ("postgres", "postmaster")
            and self._runs_here(pid)
        ):
            self.pid = pid
            self.stop()
        else:
            # PostgreSQL itself checks whether the PID is alive, but in a container the PID may now
            # belong to an unrelated process, and then it would refuse to start.
            (self.data / "postmaster.pid").unlink(missing_ok=True)

    def _socket_dir(self) -> Path:
        """The socket folder inside the cluster folder, or a short temp one when that path is too long for a socket."""
        if len(str(self.socket_dir)) <= SOCKET_PATH_LIMIT:
            self.socket_dir.mkdir(exist_ok=True)
            folder = self.socket_dir
        else:
            folder = Path(tempfile.mkdtemp(prefix="pg-socket-"))
        if is_root():
            account = pwd.getpwnam(POSTGRES_USER)
            os.chown(folder, account.pw_uid, account.pw_gid)
        return folder

    def _pg_ctl_start(self) -> bool:
        """Start the server with pg_ctl (which puts it in its own session) and wait; whether it came up."""
        options = ["-c", f"listen_addresses={HOST}", "-p", str(self.port), "-k", str(self._socket_dir())]
        for setting in FAST_SETTINGS if self.fast else ():
            options += ["-c", setting]
        if is_root() and self.log.exists():
            account = pwd.getpwnam(POSTGRES_USER)
            os.chown(self.log, account.pw_uid, account.pw_gid)
        done = self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                " ".join(options),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        return done.returncode == 0

    def _fail(self, what: str, since: int) -> NoReturn:
        """Stop whatever half-started and raise with the log's tail."""
        pid = self._postmaster_pid()
        if pid is not None and group_alive(pid) and self._runs_here(pid):
            kill_group(pid)
        raise ServerError(
            f"PostgreSQL {what} (data {self.data}, port {self.port}). Log {self.log}:\n{log_tail(self.log, since)}\n"
            "Check that the folder is writable by the server's user and that no other server uses it."
        )


class RedisServer:
    """A throwaway Redis server (no persistence) on 127.0.0.1 and a free port, in its own process group."""

    def __init__(self, folder: Path, *, port: int | None = None) -> None:
        self.folder = folder.resolve()
        self.port = port or 0
        self.log = self.folder / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def url(self, db: int = 0) -> str:
        if not self.port:
            raise ServerError("The Redis server has not been started.")
        return f"redis://{HOST}:{self.port}/{db}"

    def start(self) -> Self:
        """Start redis-server and wait until it answers PING."""
        binary = redis_server_bin()
        self.folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = self.port if attempt == 0 and self.port else free_port()
            since = log_size(self.log)
            if self._start_once(binary):
                return self
            if not re.search(r"in use|Could not create server TCP", log_tail(self.log, since)):
                break
        raise ServerError(
            f"redis-server did not start on {HOST}:{self.port}. Log {self.log}:\n{log_tail(self.log, since)}\n"
            "Check that `redis-server --version` works (Debian package `redis-server`)."
        )

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after a timeout; reap it."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if group_alive(process.pid):
            kill_group(process.pid, timeout=10)
        process.wait(timeout=10)

    def _start_once(self, binary: Path) -> bool:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    "--bind",
                    HOST,
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.folder),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            with contextlib.suppress(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                if client.ping():
                    client.close()
                    return True
            time.sleep(0.05)
        self.stop()
        return False


def main() -> int:
    """`python -m batch_predict.servers`: install PostgreSQL, Redis and Chromium when missing, and say where they are."""
    try:
        print(f"PostgreSQL: {postgres_bin()}")
        print(f"Redis: {redis_server_bin()}")
        print(f"Chromium: {chromium_bin()}")
    except ServerError as error:
        print(f"batch_predict.servers: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
