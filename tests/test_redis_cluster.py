"""RedisStore on a real Redis Cluster (three masters with a replica each, started by the tests):
URLs, how keys sit in slots, many processes, and a master killed mid-run.

The behaviour suite runs on the cluster too (``storekit``'s ``redis-cluster`` factory)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from functools import partial

import pytest

from outlay import ConfigurationError, StoreUnavailable, store_from_url

from .failover import run_through_failover
from .rediscluster import RedisCluster, binaries_present, cli, start_cluster
from .storekit import drop_namespace, redis_store_at
from .test_redis import check_fleet

redis = pytest.importorskip("redis", reason="the redis driver is not installed (outlay[redis])")

from redis.asyncio import RedisCluster as ClusterClient  # noqa: E402 - after the importorskip
from redis.crc import key_slot  # noqa: E402

from outlay.stores._redis import RedisStore  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """The multi-process and failover checks are about the cluster, not the caller's loop (the
    behaviour suite covers trio on the cluster)."""
    return "asyncio"


@pytest.fixture
async def store(redis_cluster: RedisCluster) -> AsyncIterator[RedisStore]:
    async with redis_store_at(redis_cluster) as opened:
        yield opened


@pytest.fixture(scope="module")
def doomed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A cluster of this module's own, for the test that kills one of its masters."""
    if not binaries_present():
        pytest.skip("no redis-server/redis-cli binaries on PATH: cannot start a Redis Cluster")
    cluster = start_cluster(tmp_path_factory.mktemp("doomed-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_cluster_urls_open_a_cluster_client(redis_cluster: RedisCluster) -> None:
    store = store_from_url(f"{redis_cluster.url()}?namespace=url-{uuid.uuid4().hex[:8]}")
    try:
        assert isinstance(store, RedisStore)
        assert isinstance(store.client, ClusterClient)
        await store.set_limit("calls", 3)
        assert (await store.usage("calls")).cap == 3
        await store.client.delete(f"{{{store.namespace}}}:l:calls")
    finally:
        await store.aclose()
    with pytest.raises(ConfigurationError):  # a cluster has database 0 only
        RedisStore.from_url(f"{redis_cluster.url()}/3")


async def test_a_namespace_lives_in_one_slot_on_one_master(
    store: RedisStore, redis_cluster: RedisCluster
) -> None:
    await store.set_limit("tenant:a/usd/month:2030-01", Decimal("5"))
    await store.set_limit("tenant:b/calls", 10)
    await store.reserve("r1", {"tenant:a/usd/month:2030-01": Decimal("1"), "tenant:b/calls": 2},
                        lease=60, expire_at={"tenant:a/usd/month:2030-01": 1_900_000_000})
    await store.reserve("r2", {"tenant:b/calls": 1}, lease=60)
    await store.commit("r2")
    slot = key_slot(store.namespace.encode())
    owner = redis_cluster.master_of(slot)
    prefix = "{" + store.namespace + "}:"
    found: dict[int, list[str]] = {}
    for port in redis_cluster.ports:
        if "role:master" not in cli(port, "info", "replication"):
            continue
        keys = [k for k in cli(port, "--scan", "--pattern", prefix.replace("{", "\\{")
                               .replace("}", "\\}") + "*").split() if k]
        if keys:
            found[port] = keys
    assert list(found) == [owner]  # every key on the one master that serves the tag's slot
    assert {key_slot(k.encode()) for k in found[owner]} == {slot}
    assert len(found[owner]) >= 5  # limits, their hold sets, reservations


@pytest.mark.slow
async def test_many_processes_one_budget_on_a_cluster(redis_cluster: RedisCluster) -> None:
    async with redis_store_at(redis_cluster) as store:
        await check_fleet(store, redis_cluster.url())


@pytest.mark.slow
async def test_a_master_killed_mid_run_fails_over_to_its_replica(
    doomed_cluster: RedisCluster,
) -> None:
    """The master of the namespace's slot is SIGKILLed mid-run (``failover`` says what the
    application sees and what is kept); namespaces on other masters are not involved."""
    async with redis_store_at(doomed_cluster) as store:
        slot = key_slot(store.namespace.encode())
        await run_through_failover(store, replicate=partial(doomed_cluster.replicate, slot),
                                   kill=partial(doomed_cluster.kill_master, slot))


async def test_a_store_closed_while_its_slot_map_is_stale_closes_every_connection(
    redis_cluster: RedisCluster,
) -> None:
    """After a connection error the cluster client marks its slot map stale, and its own
    ``aclose`` then closes nothing. Here the master of the namespace's slot stops answering
    (``CLIENT PAUSE``, a hung node): the call fails as ``StoreUnavailable``, the map stays
    stale, and closing the store must still close every connection it opened."""
    store = RedisStore.from_url(f"{redis_cluster.url()}?socket_timeout=0.25",
                                namespace=f"stale-{uuid.uuid4().hex[:8]}")
    try:
        await store.set_limit("calls", 3)
        master = redis_cluster.master_of(key_slot(store.namespace.encode()))
        client = store.client
        assert isinstance(client, ClusterClient)
        cli(master, "client", "pause", "5000")  # the call gives up in about 1 s
        try:
            with pytest.raises(StoreUnavailable):
                await store.usage("calls")
            assert client._initialize  # redis-py's "slot map is stale" flag
            manager = client.nodes_manager
            nodes = [*manager.nodes_cache.values(), *manager.startup_nodes.values()]
            opened = [c for node in nodes for c in node._connections if c.is_connected]
            assert opened
            await store.aclose()
            assert [c for c in opened if c.is_connected] == []
        finally:
            cli(master, "client", "unpause")
    finally:
        await drop_namespace(store)
        await store.aclose()
