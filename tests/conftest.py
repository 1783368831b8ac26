"""Shared fixtures: every core test runs on asyncio and trio (anyio's pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from . import pgserver, rediscluster, redissentinel
from .loops import ASYNCIO, TRIO
from .redisserver import DEFAULT_PORT, HOST, RedisServer, answers, redis_binary, start_server


@pytest.fixture(params=[ASYNCIO, TRIO])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture(autouse=True)
def _unconfigured_structlog() -> Iterator[None]:
    """``capture_logs()`` leaves structlog marked configured; later tests would then see
    outlay's events on stdout. Every test starts and ends with structlog unconfigured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis: 127.0.0.1:6379 if it answers, else a ``redis-server`` we start and stop.

    Skips only when neither exists. Tests isolate themselves with their own key namespace.
    """
    pytest.importorskip("redis", reason="the redis driver is not installed (outlay[redis])")
    if answers(HOST, DEFAULT_PORT):
        yield RedisServer(HOST, DEFAULT_PORT)
        return
    if redis_binary() is None:
        pytest.skip("no Redis: nothing answers on 127.0.0.1:6379 and no redis-server binary "
                    "is on PATH (apt-get install redis-server)")
    server = start_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgserver.PostgresServer]:
    """A real PostgreSQL: 127.0.0.1:5432 if it answers (database ``test``), else one we start
    from the ``postgres`` binaries and stop. Skips only when neither exists. Tests isolate
    themselves in a schema of their own (``pgserver.fresh_schema``), dropped afterwards."""
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed "
                                           "(outlay[postgresql])")
    url = pgserver.default_url()
    if url is not None:
        yield pgserver.PostgresServer(url)
        return
    if pgserver.binaries() is None:
        pytest.skip("no PostgreSQL: nothing answers on 127.0.0.1:5432 and no initdb/pg_ctl "
                    "binaries are installed (apt-get install postgresql)")
    server = pgserver.start_server(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rediscluster.RedisCluster]:
    """A real Redis Cluster we start: three masters with a replica each on free loopback
    ports, stopped at the end of the session. Skips when the binaries are missing."""
    pytest.importorskip("redis", reason="the redis driver is not installed (outlay[redis])")
    if not rediscluster.binaries_present():
        pytest.skip("no redis-server/redis-cli binaries on PATH: cannot start a Redis Cluster "
                    "(apt-get install redis-server)")
    cluster = rediscluster.start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[redissentinel.SentinelDeployment]:
    """A real Sentinel deployment we start: a master, its replica and three sentinels on free
    loopback ports, with passwords, stopped at the end of the session. Skips when the
    binaries are missing."""
    pytest.importorskip("redis", reason="the redis driver is not installed (outlay[redis])")
    if not redissentinel.binaries_present():
        pytest.skip("no redis-server/redis-cli binaries on PATH: cannot start Redis Sentinel "
                    "(apt-get install redis-server)")
    deployment = redissentinel.start_sentinels(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        yield deployment
    finally:
        deployment.stop()
