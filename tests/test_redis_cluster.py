"""RedisStore on a real Redis Cluster (three masters with a replica each, started by the tests):
URLs, how keys sit in slots, many processes, and a master killed mid-run.

The behaviour suite runs on the cluster too (``storekit``'s ``redis-cluster`` factory)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import anyio
import pytest

from outlay import (
    Budget,
    ConfigurationError,
    Reservation,
    ReservationError,
    StoreUnavailable,
    store_from_url,
)

from .rediscluster import RedisCluster, binaries_present, cli, start_cluster
from .storekit import redis_store_at
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
    """What an application sees when the master holding its namespace dies: operations raise
    ``StoreUnavailable`` (budgets fail closed) until the replica takes over, then succeed again
    on the same store, with no restart. What was replicated before the crash is kept: spend,
    live holds and the memory of ended ids."""
    async with redis_store_at(doomed_cluster) as store:
        budget = Budget(store)
        await budget.set_limit("usd", Decimal("10"))
        await budget.set_limit("stream", 1_000_000)
        for _ in range(3):
            async with budget.reserve({"usd": Decimal("1.25")}) as spent:
                await spent.commit()
        held = await budget.reserve({"usd": Decimal("2")}, lease=600)
        released = await budget.reserve({"usd": Decimal("0.5")})
        await released.release()
        ended = released.id
        slot = key_slot(store.namespace.encode())
        await anyio.to_thread.run_sync(doomed_cluster.replicate, slot)  # WAIT 1: on the replica

        outcomes = {"ok": 0, "unavailable": 0, "ok_after": 0}
        failed_over = anyio.Event()
        stop = anyio.Event()

        unsettled: list[Reservation] = []  # commits whose outcome is unknown

        async def stream() -> None:  # an application working through the failover
            while not stop.is_set():
                try:
                    reservation = await budget.try_reserve({"stream": 1})
                except StoreUnavailable:
                    outcomes["unavailable"] += 1
                    await anyio.sleep(0.02)
                    continue
                assert reservation is not None
                try:
                    await reservation.commit()
                except StoreUnavailable:
                    outcomes["unavailable"] += 1
                    unsettled.append(reservation)  # retried later, never released
                    continue
                outcomes["ok_after" if failed_over.is_set() else "ok"] += 1
                if outcomes["ok_after"] >= 20:
                    stop.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream)
            with anyio.fail_after(60):
                while outcomes["ok"] < 20:  # noqa: ASYNC110 - until the stream runs
                    await anyio.sleep(0.01)
                old, new = await anyio.to_thread.run_sync(doomed_cluster.kill_master, slot)
                failed_over.set()
                await stop.wait()
        assert new != old
        assert outcomes["unavailable"] > 0  # the failover window, seen as StoreUnavailable
        assert outcomes["ok_after"] >= 20  # and the same store works again afterwards

        usd = await store.usage("usd")  # what was replicated before the crash is kept
        assert (usd.spent, usd.held) == (Decimal("3.75"), Decimal("2"))
        assert await store.release(ended) is False  # ended ids are still remembered
        await held.commit({"usd": Decimal("1.5")})  # a hold from before the crash settles
        usd = await store.usage("usd")
        assert (usd.spent, usd.held) == (Decimal("5.25"), Decimal("0"))
        # The stream: a commit that failed is retried once the replica serves (idempotent by
        # id: it counts once). What the old master acknowledged but had not replicated may be
        # lost (replication is asynchronous), a hold included; the call in flight at the crash
        # may have run without an answer (a hold then waits for its lease).
        settled = 0
        for reservation in unsettled:
            try:
                await reservation.commit()
                settled += 1
            except ReservationError:  # its hold was never replicated: nothing to settle
                await reservation.release()
        stream_usage = await store.usage("stream")
        assert outcomes["ok_after"] + settled <= stream_usage.spent
        assert stream_usage.spent <= outcomes["ok"] + outcomes["ok_after"] + len(unsettled)
        assert stream_usage.held <= 1
