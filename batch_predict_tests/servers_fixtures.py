"""Real PostgreSQL and Redis servers for the tests that need them, started once per test session.

A test that asks for one of these fixtures fails, with the server's reason, when the server cannot
start: it is never skipped, so a machine without the servers cannot pass by running less.
"""

import itertools
from collections.abc import Iterator

import pytest

from batch_predict.servers import PostgresServer, RedisServer, ServerError

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, without durability (test data is thrown away)."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"), fast=True)
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
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Redis server for the session (no persistence): redis://127.0.0.1:PORT/0."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except ServerError as error:
        pytest.fail(f"The Redis test server could not start: {error}", pytrace=False)
    try:
        yield server.url()
    finally:
        server.stop()
