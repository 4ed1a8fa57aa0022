"""PostgreSQL, Redis and HAProxy for the tests, started by the tests themselves.

One PostgreSQL and one Redis per test session (``server/local_cluster.py`` starts them on
loopback ports in temporary directories, PostgreSQL as an unprivileged user when the
tests run as root, without fsync: tests kill servers, never the database), stopped at the
session's end. Each test that asks for ``database_url`` gets a database of its own, with
the schema ``log-monitor-server migrate`` makes.

``BACKENDS`` and the ``backend`` fixture parametrize a server test over SQLite and
PostgreSQL: ``server_database(backend)`` is None for SQLite, a fresh database's URL for
PostgreSQL, ready to give ``ServerProcess(database=...)``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from server.local_cluster import LocalPostgres, LocalRedis, migrate_database

BACKENDS = ("sqlite", "postgresql")

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[LocalPostgres]:
    engine = LocalPostgres(durable=False)
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def redis_engine() -> Iterator[LocalRedis]:
    engine = LocalRedis()
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


def new_database(engine: LocalPostgres) -> str:
    """A new, migrated database; its URL."""
    url = engine.create_database(f"test_{os.getpid()}_{next(_numbers)}")
    migrate_database(url)
    return url


@pytest.fixture
def database_url(postgres_engine: LocalPostgres) -> str:
    return new_database(postgres_engine)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


async def signing_secret(data_dir: Path, database: str | None) -> bytes:
    """The secret a server signs tokens with: the data dir's file, or PostgreSQL's row."""
    if database is None:
        return (data_dir / "secret.key").read_bytes()
    connection = await asyncpg.connect(database)
    try:
        return bytes(await connection.fetchval("SELECT secret FROM server_secret"))
    finally:
        await connection.close()


@pytest.fixture
def server_database(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None on SQLite; on PostgreSQL, a fresh database (the engine starts only when a
    test asks for it)."""
    if backend == "sqlite":
        return None
    engine: LocalPostgres = request.getfixturevalue("postgres_engine")
    return new_database(engine)
