"""Store factories for the behavioural suite (``test_store_behaviour.py``).

Each factory opens a fresh, empty store on real infrastructure (a real SQLite file, a real Redis
server, a real PostgreSQL schema) and closes it afterwards. A store that cannot run here calls
``pytest.skip`` with the reason. Add a store by adding a factory to ``STORE_FACTORIES``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from outlay import MemoryStore, Store
from outlay.stores import SQLiteStore

from .pgserver import PostgresServer, drop_schema, fresh_schema
from .rediscluster import RedisCluster
from .redissentinel import SentinelDeployment
from .redisserver import RedisServer

if TYPE_CHECKING:
    from outlay.stores._postgres import PostgresStore
    from outlay.stores._redis import RedisStore

#: The Redis database the tests use; each test also gets its own key namespace.
REDIS_TEST_DB = 9


@asynccontextmanager
async def memory_store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    store = MemoryStore()
    yield store
    await store.aclose()


async def drop_namespace(store: RedisStore) -> None:
    """Delete every key of ``store``'s namespace (glob characters in it are literal)."""
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", "{" + store.namespace + "}:") + "*"

    async def drop() -> None:
        keys = [key async for key in store.client.scan_iter(match=pattern, count=1000)]
        if keys:
            await store.client.delete(*keys)

    await store._call(drop)  # on the store's trio bridge when called from trio


async def drop_namespace_at(url: str) -> None:
    """``drop_namespace`` for the store a Redis URL opens (its ``namespace`` query, if any)."""
    from outlay.stores._redis import RedisStore

    store = RedisStore.from_url(url)
    try:
        await drop_namespace(store)
    finally:
        await store.aclose()


@asynccontextmanager
async def redis_store_at(server: RedisServer | RedisCluster | SentinelDeployment,
                         **options: object) -> AsyncIterator[RedisStore]:
    """A ``RedisStore`` on ``server`` (or a cluster, or the master behind sentinels) in a fresh
    namespace, deleted afterwards."""
    from outlay.stores._redis import RedisStore

    namespace = f"outlay-test-{uuid.uuid4().hex[:12]}"
    url = server.url() if isinstance(server, RedisCluster) else server.url(REDIS_TEST_DB)
    store = RedisStore.from_url(url, namespace=namespace, **options)
    try:
        yield store
    finally:
        try:
            await drop_namespace(store)
        finally:
            await store.aclose()


@asynccontextmanager
async def redis_store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    server: RedisServer = request.getfixturevalue("redis_server")
    async with redis_store_at(server) as store:
        yield store


@asynccontextmanager
async def redis_cluster_store(tmp_path: Path,
                              request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    async with redis_store_at(cluster) as store:
        yield store


@asynccontextmanager
async def redis_sentinel_store(tmp_path: Path,
                               request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    deployment: SentinelDeployment = request.getfixturevalue("redis_sentinel")
    async with redis_store_at(deployment) as store:
        yield store


@asynccontextmanager
async def sqlite_store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    store = SQLiteStore(tmp_path / "outlay.db")
    try:
        yield store
    finally:
        await store.aclose()


@asynccontextmanager
async def postgres_store_at(server: PostgresServer, **options: object
                            ) -> AsyncIterator[PostgresStore]:
    """A ``PostgresStore`` on ``server`` in a fresh schema, dropped afterwards."""
    from outlay.stores._postgres import PostgresStore

    schema = fresh_schema()
    store = PostgresStore.from_url(server.schema_url(schema), **options)
    try:
        yield store
    finally:
        try:
            await store.aclose()
        finally:
            drop_schema(server.url, schema)


@asynccontextmanager
async def postgres_store(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    async with postgres_store_at(server) as store:
        yield store


StoreFactory = Callable[[Path, pytest.FixtureRequest], AbstractAsyncContextManager[Store]]

STORE_FACTORIES: dict[str, StoreFactory] = {
    "memory": memory_store,
    "postgres": postgres_store,
    "redis": redis_store,
    "redis-cluster": redis_cluster_store,
    "redis-sentinel": redis_sentinel_store,
    "sqlite": sqlite_store,
}
