"""The local PostgreSQL and Redis servers the cluster tests and `make demo-cluster` run on."""

import os
import signal
import socket
from pathlib import Path

import psycopg
import redis

from batch_predict.servers import HOST, PostgresServer, RedisServer, group_alive


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def test_postgres_keeps_what_a_transaction_committed(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(postgres_url) as con:
        con.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text)")
        with con.cursor() as cur:
            cur.executemany("INSERT INTO t VALUES (%s, %s)", [(1, "a"), (2, "b")])
    with psycopg.connect(postgres_url) as con:
        assert con.execute("SELECT id, name FROM t ORDER BY id").fetchall() == [(1, "a"), (2, "b")]


def test_each_test_gets_an_empty_database(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as con:
        tables = con.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)


def test_redis_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    client.set("key", "value")
    assert client.get("key") == b"value"
    client.close()


def test_stopped_servers_leave_no_process(tmp_path: Path) -> None:
    postgres = PostgresServer(tmp_path / "postgres", fast=True).start()
    cache = RedisServer(tmp_path / "redis").start()
    assert postgres.pid and cache.pid
    groups = {postgres.port: postgres.pid, cache.port: cache.pid}
    assert all(port_open(port) and group_alive(pgid) for port, pgid in groups.items())
    postgres.stop()
    cache.stop()
    assert not any(port_open(port) or group_alive(pgid) for port, pgid in groups.items())


def test_a_cluster_folder_is_reused_after_its_server_was_killed(tmp_path: Path) -> None:
    with PostgresServer(tmp_path / "postgres", fast=True) as first:
        url = first.create_database("kept")
        with psycopg.connect(url) as con:
            con.execute("CREATE TABLE t AS SELECT 42 AS answer")
    # A server whose owner was killed keeps running; the next start on the folder stops it first.
    left_running = PostgresServer(tmp_path / "postgres", fast=True).start()
    # A server killed outright leaves a stale postmaster.pid.
    killed = PostgresServer(tmp_path / "postgres", fast=True).start()
    assert left_running.pid and not group_alive(left_running.pid)
    assert killed.pid
    os.killpg(killed.pid, signal.SIGKILL)
    with PostgresServer(tmp_path / "postgres", fast=True) as again:
        assert again.create_database("kept", exist_ok=True) == again.url("kept")
        with psycopg.connect(again.url("kept")) as con:
            assert con.execute("SELECT answer FROM t").fetchone() == (42,)
    assert not group_alive(killed.pid)
