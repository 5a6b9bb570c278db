"""Real PostgreSQL and Redis servers for the tests that need them, started once per test session.

A test that asks for one of these fixtures fails, with the server's reason, when the server cannot
start: it is never skipped, so a machine without the servers cannot pass by running less.
"""

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_predict.servers import PostgresServer, RedisServer, ServerError

_databases = itertools.count(1)


@contextlib.contextmanager
def _own_folder(name: str) -> Iterator[Path]:
    """A folder of the session's own, outside pytest's numbered temp folders: a second pytest session
    started meanwhile deletes the oldest of those, and with it a running server's data."""
    folder = Path(tempfile.mkdtemp(prefix=f"batch_predict_{name}_"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, without durability (test data is thrown away)."""
    with _own_folder("postgres") as folder:
        server = PostgresServer(folder, fast=True)
        try:
            server.start()
        except ServerError as error:
            pytest.fail(f"The PostgreSQL test server could not start: {error}", pytrace=False)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database of its own for this test; dropped afterwards."""
    name = f"test_{next(_databases)}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One Redis server for the session (no persistence): redis://127.0.0.1:PORT/0."""
    with _own_folder("redis") as folder:
        server = RedisServer(folder)
        try:
            server.start()
        except ServerError as error:
            pytest.fail(f"The Redis test server could not start: {error}", pytrace=False)
        try:
            yield server.url()
        finally:
            server.stop()
