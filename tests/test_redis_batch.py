"""RedisStore group commit: operations that arrive while round trips are in flight share one
``batch`` script, each with its own outcome.

How the queued operations are shared out between the round trips (``RedisStore._drain``)
depends on which frees first; the tests that count round trips allow for that.

Every interleaving is forced, never timed: ``CLIENT PAUSE WRITE`` on a server of this module's
own holds the scripts in flight at the server while the test queues more behind them, and a
TCP proxy (``netproxy``) holds, drops or cuts a batch on its way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from outlay import KeyedBudget, StoreError, StoreUnavailable
from outlay.stores import Admission

from .loops import ASYNCIO, UVLOOP
from .netproxy import Proxy
from .rediscluster import RedisCluster
from .redisserver import RedisServer, redis_binary, start_server
from .storekit import REDIS_TEST_DB, redis_store_at
from .test_redis import hold_as_hash, hold_as_layout_1, layout, record_of

redis = pytest.importorskip("redis", reason="the redis driver is not installed (outlay[redis])")

from redis.crc import key_slot  # noqa: E402 - after the importorskip

import outlay.stores._redis as redis_module  # noqa: E402
from outlay.stores._redis import _SCRIPTS, PIPELINE, RedisStore, _frame  # noqa: E402

pytestmark = pytest.mark.anyio

BATCH_SHA = _SCRIPTS["batch"].sha.encode()

Call = Callable[[], Awaitable[Any]]


@pytest.fixture(params=[ASYNCIO, UVLOOP])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """asyncio and uvloop here; ``test_trio_callers_share_round_trips_through_the_bridge``
    runs trio."""
    return request.param


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server of this module's own, which the tests pause and count commands on."""
    if redis_binary() is None:
        pytest.skip("no redis-server binary on PATH: cannot start a server to pause")
    server = start_server(tmp_path_factory.mktemp("batch-redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store(own_redis: RedisServer) -> AsyncIterator[RedisStore]:
    async with redis_store_at(own_redis) as opened:
        yield opened


@asynccontextmanager
async def admin(port: int, db: int = REDIS_TEST_DB) -> AsyncIterator[Any]:
    """A client of our own on the stores' database (pausing is server-wide)."""
    client = redis.asyncio.Redis(port=port, db=db)
    try:
        yield client
    finally:
        await client.execute_command("CLIENT", "UNPAUSE")
        await client.aclose()


async def load_scripts(client: Any) -> None:
    """So that no NOSCRIPT answer adds a round trip (or is the reply a proxy drops)."""
    for name in ("reserve", "commit", "release", "extend", "batch"):
        await client.script_load(_SCRIPTS[name].source)


async def reset_counts(client: Any) -> None:
    """Load the scripts and zero the command counters."""
    await load_scripts(client)
    await client.config_resetstat()


async def script_calls(client: Any) -> int:
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
               for name in ("evalsha", "eval"))


def outcome_of(results: list[Any], i: int, call: Call
               ) -> Callable[[], Coroutine[Any, Any, None]]:
    async def run() -> None:
        try:
            results[i] = await call()
        except Exception as exc:
            results[i] = exc

    return run


async def queue_behind_paused(store: RedisStore, admin_client: Any, tg: anyio.abc.TaskGroup,
                              lanes: list[Call], queued: list[Call]) -> list[Any]:
    """Pause the server, start ``lanes`` (the round trips in flight, held at the server), then
    ``queued`` behind them; returns the list their outcomes will fill (lanes first). The
    caller unpauses."""
    assert len(lanes) == PIPELINE
    results: list[Any] = [None] * (len(lanes) + len(queued))
    await load_scripts(admin_client)
    await admin_client.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    for i, call in enumerate(lanes):
        tg.start_soon(outcome_of(results, i, call))
        await settle()
    group = store._groups.get()
    assert (group.in_flight, group.queue) == (PIPELINE, [])
    for i, call in enumerate(queued, len(lanes)):
        tg.start_soon(outcome_of(results, i, call))
    await settle()
    # Nothing of them sent (both round trips are busy): all queued but those already failed.
    assert len(group.queue) == results[len(lanes):].count(None)
    return results


async def settle() -> None:
    """Every task blocked, and the store's scheduled drain (a loop callback) run."""
    await anyio.wait_all_tasks_blocked()
    await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


def reserve(store: RedisStore, rid: str, amounts: dict[str, Any]) -> Call:
    return lambda: store.reserve(rid, amounts, lease=60)


async def test_operations_queued_behind_round_trips_in_flight_share_one(
    own_redis: RedisServer, store: RedisStore
) -> None:
    await store.set_limit("calls", 100)
    async with admin(own_redis.port) as client:
        await reset_counts(client)
        async with anyio.create_task_group() as tg:
            results = await queue_behind_paused(
                store, client, tg, [reserve(store, f"lane{i}", {"calls": 1}) for i in range(2)],
                [reserve(store, f"q{i}", {"calls": 1}) for i in range(5)])
            await client.execute_command("CLIENT", "UNPAUSE")
        # Two lanes, then the five queued in at most three (3 + 2, or 3 + 1 + 1 when both
        # round trips are free at once and the last two are shared out between them).
        assert 3 <= await script_calls(client) <= 5
    assert results == [Admission(True)] * 7
    assert (await store.usage("calls")).held == 7
    assert await store.held_reservations() == 7


async def test_a_lone_operation_goes_at_once_as_its_own_script(
    own_redis: RedisServer, store: RedisStore
) -> None:
    """A lone caller is never queued and never uses the batch script."""
    await store.set_limit("calls", 10)
    async with admin(own_redis.port) as client:
        await client.script_flush()
        for i in range(3):
            assert (await store.reserve(f"r{i}", {"calls": 1}, lease=60)).admitted
            assert await store.commit(f"r{i}")
            assert store._groups.get().queue == []
        assert await client.script_exists(_SCRIPTS["batch"].sha) == [False]
        assert await client.script_exists(_SCRIPTS["reserve"].sha) == [True]
    assert (await store.usage("calls")).spent == 3


async def test_refused_and_invalid_operations_in_a_batch_take_nothing_the_rest_apply(
    own_redis: RedisServer, store: RedisStore
) -> None:
    await store.set_limit("calls", 10)
    await store.set_limit("usd", Decimal("1"))
    for rid in ("p1", "p2"):
        assert (await store.reserve(rid, {"calls": 1}, lease=60)).admitted
    async with admin(own_redis.port) as client:
        await client.set(store._key("l", "broken"), "not a limit")  # a Redis error (WRONGTYPE)
        async with anyio.create_task_group() as tg:
            results = await queue_behind_paused(
                store, client, tg, [reserve(store, "a", {"calls": 1}),
                                    reserve(store, "b", {"calls": 1})],
                [reserve(store, "c", {"calls": 1, "usd": Decimal("0.5")}),
                 reserve(store, "d", {"calls": 1, "usd": Decimal("0.6")}),  # refused: 0.5 left
                 reserve(store, "e", {"calls": Decimal("1")}),  # wrong unit
                 lambda: store.commit("p1", {"usd": Decimal("1")}),  # a limit p1 does not hold
                 reserve(store, "f", {"calls": 1, "broken": 1}),
                 lambda: store.commit("p2", {"calls": 1}),
                 lambda: store.extend("p1", 120)])
            await client.execute_command("CLIENT", "UNPAUSE")
        for rid in "def":
            assert not await client.exists(store._key("r", rid)), rid
    a, b, c, d, e, foreign, broken, committed, extended = results
    assert [a, b, c] == [Admission(True)] * 3
    assert (d.admitted, d.refused and d.refused.key, d.requested) == (False, "usd",
                                                                       Decimal("0.6"))
    assert isinstance(e, TypeError)
    assert "whole units" in str(e)
    assert isinstance(foreign, ValueError)
    assert "does not hold" in str(foreign)
    assert isinstance(broken, StoreError)
    assert "WRONGTYPE" in str(broken)
    assert (committed, extended) == (True, True)
    calls, usd = await store.usage("calls"), await store.usage("usd")
    assert (calls.held, calls.spent) == (4, 1)  # p1, a, b, c held; p2 spent
    assert (usd.held, usd.spent) == (Decimal("0.5"), 0)
    assert await store.commit("p1")  # the refused commit left p1 held, whole
    assert (await store.usage("calls")).spent == 2


async def test_a_queued_operation_cancelled_is_never_sent(
    own_redis: RedisServer, store: RedisStore
) -> None:
    await store.set_limit("calls", 10)
    scope = anyio.CancelScope()

    async def cancelled() -> Any:
        with scope:
            return await store.reserve("gone", {"calls": 1}, lease=60)
        return "cancelled"

    async with admin(own_redis.port) as client, anyio.create_task_group() as tg:
        results = await queue_behind_paused(
            store, client, tg, [reserve(store, f"lane{i}", {"calls": 1}) for i in range(2)],
            [cancelled, reserve(store, "kept", {"calls": 1})])
        scope.cancel()
        await settle()
        assert results[2] == "cancelled"
        await client.execute_command("CLIENT", "UNPAUSE")
    assert results[3] == Admission(True)
    async with admin(own_redis.port) as client:
        assert not await client.exists(store._key("r", "gone"))
    assert (await store.usage("calls")).held == 3


async def test_a_caller_cancelled_in_a_batch_in_flight_harms_no_other_and_leaks_nothing(
    own_redis: RedisServer,
) -> None:
    """The batch is held in the proxy (in flight) when one of its callers is cancelled: the
    others still get their outcomes, and KeyedBudget's release of the cancelled one leaves
    nothing held, whichever reaches the server first."""
    with Proxy(own_redis.host, own_redis.port) as proxy:
        async with redis_store_at(_at(proxy)) as store, admin(own_redis.port) as client:
            budget = KeyedBudget(store)
            await budget.set_limit("calls", 10)
            scope = anyio.CancelScope()

            async def cancelled() -> Any:
                with scope:
                    return await budget.try_reserve({"calls": 1})
                return "cancelled"

            async with anyio.create_task_group() as tg:
                results = await queue_behind_paused(
                    store, client, tg, [reserve(store, f"lane{i}", {"calls": 1})
                                        for i in range(2)],
                    [reserve(store, "c", {"calls": 1}), cancelled,
                     *(reserve(store, rid, {"calls": 1}) for rid in "efg")])
                proxy.hold_when(lambda chunk: BATCH_SHA in chunk)
                await client.execute_command("CLIENT", "UNPAUSE")
                await _until(lambda: proxy.held() == 2)  # both batches are in flight
                scope.cancel()
                await settle()  # the cancelled one waits for KeyedBudget's shielded release
                assert results[2:] == [None] * 5  # ...and the others for their batches
                assert proxy.flush() == 2
            assert results[2:] == [Admission(True), "cancelled", *[Admission(True)] * 3]
            assert (await store.usage("calls")).held == 6  # never the cancelled one
            sound = await budget.try_reserve({"calls": 1})  # the connections are sound
            assert sound is not None
            await sound.release()


async def test_lost_replies_fail_every_operation_of_the_batch_and_retries_count_once(
    own_redis: RedisServer,
) -> None:
    """As for a lone operation: the batches ran but no reply came, so each of their callers
    gets StoreUnavailable and cannot know; retried by id, each is admitted once, never twice.
    (Timeout 1.5 s: the batches are held in the proxy for far less than that.)"""
    with Proxy(own_redis.host, own_redis.port) as proxy:
        async with redis_store_at(_at(proxy, "?socket_timeout=1.5")) as store, \
                admin(own_redis.port) as client:
            await store.set_limit("calls", 100)
            rids = ["c", "d", "e", "f", "g"]
            async with anyio.create_task_group() as tg:
                results = await queue_behind_paused(
                    store, client, tg, [reserve(store, f"lane{i}", {"calls": 1})
                                        for i in range(2)],
                    [reserve(store, rid, {"calls": 1}) for rid in rids])
                proxy.hold_when(lambda chunk: BATCH_SHA in chunk)
                await client.execute_command("CLIENT", "UNPAUSE")
                await _until(lambda: proxy.held() == 2)  # both batches in flight, held
                proxy.drop_replies = True
                assert await anyio.to_thread.run_sync(proxy.flush) == 2  # they run, unanswered
            assert results[:2] == [Admission(True)] * 2
            assert all(isinstance(result, StoreUnavailable) for result in results[2:]), results
            proxy.drop_replies = False
            assert (await store.usage("calls")).held == 7  # they ran
            again: list[Any] = [None] * 5
            async with anyio.create_task_group() as tg:
                for i, rid in enumerate(rids):
                    tg.start_soon(outcome_of(again, i, reserve(store, rid, {"calls": 1})))
            assert again == [Admission(True)] * 5
            assert (await store.usage("calls")).held == 7


async def test_a_connection_cut_under_a_batch_fails_exactly_its_operations(
    own_redis: RedisServer, store: RedisStore
) -> None:
    """The batches never reach the server: their callers get StoreUnavailable and nothing of
    them ran; the two round trips before them are unharmed."""
    await store.set_limit("calls", 10)
    with Proxy(own_redis.host, own_redis.port) as proxy:
        cut = RedisStore.from_url(_at(proxy).url(), namespace=store.namespace)
        try:
            async with admin(own_redis.port) as client, anyio.create_task_group() as tg:
                results = await queue_behind_paused(
                    cut, client, tg, [reserve(cut, f"lane{i}", {"calls": 1}) for i in range(2)],
                    [reserve(cut, rid, {"calls": 1}) for rid in "cdefg"])
                proxy.hold_when(lambda chunk: BATCH_SHA in chunk)
                await client.execute_command("CLIENT", "UNPAUSE")
                await _until(lambda: proxy.held() == 2)
                proxy.close()  # every connection cut, and no new one accepted
        finally:
            await cut.aclose()
    assert results[:2] == [Admission(True)] * 2
    assert all(isinstance(result, StoreUnavailable) for result in results[2:]), results
    assert (await store.usage("calls")).held == 2
    for rid in "cdefg":
        assert (await store.reserve(rid, {"calls": 1}, lease=60)).admitted
    assert (await store.usage("calls")).held == 7


async def test_an_id_the_client_cannot_encode_fails_alone_in_a_batch(
    own_redis: RedisServer, store: RedisStore
) -> None:
    """Hostile input in one queued operation does not fail the batch it would have joined;
    ids with control and non-ASCII characters travel through the batch's JSON intact."""
    await store.set_limit("calls", 10)
    odd = "id\x00\x01\"\\\n\u00e9\U0001f600"
    async with admin(own_redis.port) as client, anyio.create_task_group() as tg:
        results = await queue_behind_paused(
            store, client, tg, [reserve(store, f"lane{i}", {"calls": 1}) for i in range(2)],
            [reserve(store, odd, {"calls": 1}), reserve(store, "bad\ud800", {"calls": 1}),
             reserve(store, "x", {"calls": 1}), reserve(store, "y", {"calls": 1})])
        await client.execute_command("CLIENT", "UNPAUSE")
    assert isinstance(results[3], UnicodeEncodeError)
    assert results[2] == results[4] == results[5] == Admission(True)
    assert [hold.amounts for hold in await store.holds() if hold.rid == odd] == [{"calls": 1}]
    assert await store.commit(odd)
    assert (await store.usage("calls")).spent == 1


def test_trio_callers_share_round_trips_through_the_bridge(own_redis: RedisServer) -> None:
    """From trio the operations queue on the bridge's loop and share round trips there."""
    client = redis.Redis(port=own_redis.port)

    async def use() -> None:
        async with redis_store_at(own_redis) as store:
            await store.set_limit("calls", 100)
            for name in ("reserve", "batch"):
                client.script_load(_SCRIPTS[name].source)
            client.config_resetstat()
            client.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
            results: list[Any] = [None] * 7
            try:
                async with anyio.create_task_group() as tg:
                    for i in range(7):
                        tg.start_soon(outcome_of(results, i,
                                                 reserve(store, f"t{i}", {"calls": 1})))
                    await _until(lambda: _bridge_waiting(store) == (PIPELINE, 7))
                    client.execute_command("CLIENT", "UNPAUSE")
            finally:
                client.execute_command("CLIENT", "UNPAUSE")
            assert results == [Admission(True)] * 7
            stats = client.info("commandstats")
            assert stats["cmdstat_evalsha"]["calls"] <= 4  # 7 reserves: 2 lanes + 2 batches
            assert (await store.usage("calls")).held == 7

    try:
        anyio.run(use, backend="trio")
    finally:
        client.close()


async def test_a_cluster_batch_runs_on_the_master_of_the_namespace_slot(
    redis_cluster: RedisCluster,
) -> None:
    async with redis_store_at(redis_cluster) as store:
        await store.set_limit("calls", 100)
        for rid in ("p0", "p1"):
            assert (await store.reserve(rid, {"calls": 1}, lease=60)).admitted
        master = redis_cluster.master_of(key_slot(store._key("l", "calls").encode()))
        async with admin(master, db=0) as client:
            await reset_counts(client)
            async with anyio.create_task_group() as tg:
                results = await queue_behind_paused(
                    store, client, tg,
                    [reserve(store, f"lane{i}", {"calls": 1}) for i in range(2)],
                    [reserve(store, f"q{i}", {"calls": 1}) for i in range(5)]
                    + [lambda: store.commit("p0"), lambda: store.release("p1")])
                await client.execute_command("CLIENT", "UNPAUSE")
            assert 3 <= await script_calls(client) <= 6  # 2 lanes, then 7 queued in batches
        assert results == [Admission(True)] * 7 + [True, True]
        usage = await store.usage("calls")
        assert (usage.held, usage.spent) == (7, 1)


# -- each limit read and written once per batch ---------------------------------------------


async def one_batch(store: RedisStore, admin_client: Any, monkeypatch: pytest.MonkeyPatch,
                    calls: list[Call]) -> tuple[list[Any], dict[str, int]]:
    """Run ``calls`` in one ``batch`` script, in order: with one round trip allowed, they queue
    behind a lone reserve (on a limit of its own) held at the paused server, and go together
    when it returns. Returns their outcomes and the commands the server ran meanwhile (the
    lone reserve's and the batch's)."""
    monkeypatch.setattr(redis_module, "PIPELINE", 1)
    await store.set_limit("lane", 10)
    await reset_counts(admin_client)
    results: list[Any] = [None] * len(calls)
    lone: list[Any] = [None]
    async with anyio.create_task_group() as tg:
        await admin_client.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
        tg.start_soon(outcome_of(lone, 0, reserve(store, "lane", {"lane": 1})))
        await settle()
        for i, call in enumerate(calls):
            tg.start_soon(outcome_of(results, i, call))
        await settle()
        assert len(store._groups.get().queue) == len(calls)
        await admin_client.execute_command("CLIENT", "UNPAUSE")
    assert lone[0].admitted, lone[0]  # the lone reserve went through (an error would be here)
    stats = await admin_client.info("commandstats")
    counts = {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}
    assert counts.get("evalsha", 0) == 2  # the lone reserve, then one batch
    return results, counts


def commit(store: RedisStore, rid: str, actual: dict[str, Any] | None = None) -> Call:
    return lambda: store.commit(rid, actual)


async def test_a_batch_reads_and_writes_each_limit_once_and_decides_on_the_figures_before(
    own_redis: RedisServer, store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve reserves and commits of the same two limits in one batch: each decision sees
    every change before it in the batch, the figures come out exact, and each limit's hash is
    read once and written once (the lone reserve reads and writes its own limit once)."""
    await store.set_limit("calls", 10)
    await store.set_limit("usd", Decimal("1"))
    calls: list[Call] = []
    for i in range(6):
        calls += [reserve(store, f"q{i}", {"calls": 1, "usd": Decimal("0.3")}),
                  commit(store, f"q{i}", {"usd": Decimal("0.1")})]
    calls += [reserve(store, "big", {"usd": Decimal("0.41")}),  # 0.40 left: refused
              reserve(store, "fits", {"calls": 4, "usd": Decimal("0.4")}),
              reserve(store, "over", {"calls": 1})]  # 6 spent + 4 held of 10: refused
    async with admin(own_redis.port) as client:
        results, counts = await one_batch(store, client, monkeypatch, calls)
    assert results[:12] == [Admission(True), True] * 6
    big, fits, over = results[12:]
    assert big.refused is not None
    assert over.refused is not None
    assert (big.refused.key, big.refused.spent, big.refused.held) == ("usd", Decimal("0.6"), 0)
    assert (over.refused.key, over.refused.spent, over.refused.held) == ("calls", 6, 4)
    assert fits == Admission(True)
    calls_usage, usd = await store.usage("calls"), await store.usage("usd")
    assert (calls_usage.spent, calls_usage.held) == (6, 4)
    assert (usd.spent, usd.held) == (Decimal("0.6"), Decimal("0.4"))
    assert counts["hmget"] == 1 + 2  # lane; calls and usd once each
    # Limits: lane, calls, usd, one HSET each. Reservations: one SET each for lane, 6
    # reserves, 6 commits and fits (its record and its expiry in one), and one GET for each of
    # the 16 operations (a reserve first looks for its id, a commit reads its reservation).
    assert counts["hset"] == 3
    assert counts["set"] == 14
    assert counts["get"] == 16
    assert "pexpire" not in counts
    assert "hgetall" not in counts


async def test_an_operation_that_raises_midway_in_a_batch_leaves_the_limits_as_alone(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Operation 2 raises after it took a hold off "calls" (Redis kept that write), operation
    3 before its first write; 1, 4 and 5 change "calls" around them. The figures are exactly
    those of the same calls one by one, each its own script: every change that reached Redis
    reaches the limit's hash, none of a failed check does."""
    figures = []
    for batched in (False, True):
        async with redis_store_at(own_redis) as store, admin(own_redis.port) as client:
            await store.set_limit("calls", 10)
            await store.set_limit("gone", 5)
            assert (await store.reserve("p", {"calls": 1, "gone": 1}, lease=60)).admitted
            # The limit "gone" is gone and its holds-set key is not a set: p's commit raises
            # WRONGTYPE after its write to "calls".
            await client.delete(store._key("l", "gone"), store._key("z", "gone"))
            await client.set(store._key("z", "gone"), "not a set")
            await client.set(store._key("l", "broken"), "not a limit")
            calls = [reserve(store, "a", {"calls": 2}), commit(store, "p"),
                     reserve(store, "c", {"calls": 1, "broken": 1}),
                     reserve(store, "b", {"calls": 3}), commit(store, "a", {"calls": 1})]
            if batched:
                results, _ = await one_batch(store, client, monkeypatch, calls)
            else:
                results = [None] * len(calls)
                for i, call in enumerate(calls):
                    await outcome_of(results, i, call)()
            a, p, c, b, a_done = results
            assert (a, b, a_done) == (Admission(True), Admission(True), True)
            for error in (p, c):
                assert isinstance(error, StoreError)
                assert "WRONGTYPE" in str(error)
            assert not await client.exists(store._key("r", "c"))
            usage = await store.usage("calls")
            figures.append((usage.spent, usage.held, (await layout(store, "calls"))[1]))
    assert figures[0] == figures[1] == (2, 3, ["3:b"])


async def test_a_batch_mixing_limits_writes_each_back_with_its_own_figures_and_expiry(
    own_redis: RedisServer, store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limits each operation names differently, one created from its default and one period
    limit whose expiry moves later twice in the batch: each is written back once with its own
    figures, and the period limit's hash and holds set expire at the latest due, recorded in
    x."""
    await store.set_limit("a", 10)
    await store.set_limit("b", 10)
    assert (await store.reserve("old", {"a": 1, "b": 1}, lease=60)).admitted
    day = 86_400
    async with admin(own_redis.port) as client:
        now = int((await client.time())[0])
        results, counts = await one_batch(store, client, monkeypatch, [
            reserve(store, "r1", {"a": 2}),
            lambda: store.reserve("r2", {"b": 3, "new": 4, "period": 1}, lease=60,
                                  defaults={"new": 5, "period": 9},
                                  expire_at={"period": now + day}),
            lambda: store.reserve("r3", {"a": 1, "period": 2}, lease=60,
                                  expire_at={"period": now + 2 * day}),
            commit(store, "old", {"a": 1, "b": 0}),
            lambda: store.release("r1"),
            lambda: store.extend("r2", 120),
            reserve(store, "r4", {"new": 2}),  # 4 held of 5: refused
        ])
        assert results[:6] == [Admission(True)] * 3 + [True] * 3
        assert results[6].refused is not None
        assert results[6].refused.key == "new"
        figures = {key: await store.usage(key) for key in ("a", "b", "new", "period")}
        assert {key: (u.cap, u.spent, u.held) for key, u in figures.items()} == {
            "a": (10, 1, 1), "b": (10, 0, 3), "new": (5, 0, 4), "period": (9, 0, 3)}
        fields, members = await layout(store, "period")
        assert sorted(members) == ["1:r2", "2:r3"]
        due = (now + 2 * day) * 1000 + int(store._grace_ms)
        assert int(fields["x"]) == due
        for kind in ("l", "z"):
            assert await client.execute_command("PEXPIRETIME", store._key(kind, "period")) == due
        for key in ("a", "b", "new"):
            assert "x" not in (await layout(store, key))[0]
            assert await client.pttl(store._key("l", key)) == -1
    assert counts["hmget"] == 1 + 4  # lane; a, b, new (its absence) and period once each


async def test_a_batch_whose_write_back_raises_fails_every_operation_in_it(
    own_redis: RedisServer, store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis error in the batch's write-back is an error of the whole script (injected here:
    the write-back cannot fail on a namespace the scripts wrote): every operation in it fails,
    none is answered as if it had taken effect."""
    await store.set_limit("calls", 10)
    source = _SCRIPTS["batch"].source
    assert source.count("flush()\nreturn replies") == 1
    failing = source.replace("flush()\nreturn replies", "error('write-back failed')")
    monkeypatch.setitem(redis_module._SCRIPTS, "batch", redis_module._Script(
        "batch", failing, hashlib.sha1(failing.encode(), usedforsecurity=False).hexdigest()))
    async with admin(own_redis.port) as client:
        results, _ = await one_batch(store, client, monkeypatch, [
            reserve(store, f"r{i}", {"calls": 1}) for i in range(4)])
    for result in results:
        assert isinstance(result, StoreError)
        assert "write-back failed" in str(result)


async def test_a_batch_migrates_layout_1_limits_on_first_touch(
    own_redis: RedisServer, store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holds written by the earlier layout, one of them expired: the batch's first operation
    on the limit migrates it and drops the expired hold once; the rest decide on that."""
    await hold_as_layout_1(store, "old-a", {"calls": 3}, lease_ms=60_000)
    await hold_as_layout_1(store, "old-b", {"calls": 2}, lease_ms=60_000)
    await hold_as_layout_1(store, "gone", {"calls": 4}, lease_ms=1)
    await anyio.sleep(0.01)  # past the 1 ms lease on the server's clock
    async with admin(own_redis.port) as client:
        results, _ = await one_batch(store, client, monkeypatch, [
            commit(store, "old-a", {"calls": 4}), lambda: store.release("old-b"),
            reserve(store, "n1", {"calls": 6}), commit(store, "old-a"),
            reserve(store, "n2", {"calls": 1})])
    assert results[:4] == [True, True, Admission(True), False]
    refused = results[4].refused
    assert refused is not None
    assert (refused.spent, refused.held) == (4, 6)
    fields, members = await layout(store, "calls")
    assert (fields["v"], fields["spent"], fields["held"], members) == ("2", "4", "6", ["6:n1"])
    assert not any(name.startswith("h:") for name in fields)
    assert await store.commit("gone") is True  # a late commit still records its spend
    assert (await store.usage("calls")).spent == 8


async def test_a_batch_ends_reservation_hashes_of_the_earlier_version_once(
    own_redis: RedisServer, store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reservations the previous version wrote as hashes, in one batch with new ones: each is
    retried, extended, committed or released once, exactly as alone."""
    await store.set_limit("calls", 10)
    for rid in ("h1", "h2", "h3", "h4"):
        await hold_as_hash(store, rid, {"calls": 2}, lease_ms=60_000)
    async with admin(own_redis.port) as client:
        results, _ = await one_batch(store, client, monkeypatch, [
            commit(store, "h1", {"calls": 1}), lambda: store.release("h2"),
            lambda: store.extend("h3", 120), reserve(store, "h4", {"calls": 2}),
            reserve(store, "n1", {"calls": 3}), commit(store, "h1"),
            lambda: store.release("h2"), commit(store, "h3"),
            reserve(store, "n2", {"calls": 2})])  # 1 spent + 2 (h4) + 3 (n1) held: 4 left
    assert results == [True, True, True, Admission(True), Admission(True), False, False, True,
                       Admission(True)]
    calls = await store.usage("calls")
    assert (calls.spent, calls.held) == (3, 7)
    assert sorted((await layout(store, "calls"))[1]) == ["2:h4", "2:n2", "3:n1"]
    assert {rid: (await record_of(store, rid))[0] for rid in ("h1", "h2", "h3", "h4")} == {
        "h1": "string", "h2": "string", "h3": "string",
        "h4": "hash"}  # its retry wrote nothing
    assert await store.held_reservations() == 4  # h4, n1, n2 and the lane's


def _at(proxy: Proxy, query: str = "") -> Any:
    """A stand-in server for ``redis_store_at``: the proxy's address."""

    class Through:
        @staticmethod
        def url(db: int = REDIS_TEST_DB) -> str:
            return f"redis://127.0.0.1:{proxy.port}/{db}{query}"

    return Through()


def _bridge_waiting(store: RedisStore) -> tuple[int, int]:
    """(round trips in flight, operations in them or queued) on the bridge's loop."""
    bound = store._groups._bound  # the group of the loop last used: the bridge's
    if bound is None:
        return (0, 0)
    group = bound[1]
    return (group.in_flight, group.carrying + len(group.queue))


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (up to 10 s) for a condition another thread (the proxy's, the bridge's) makes
    true."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - another thread makes it true
            await anyio.sleep(0.005)


@given(st.lists(st.text(), max_size=8))
def test_an_operation_is_framed_as_json_writes_it(args: list[str]) -> None:
    """Arguments framed without escaping (the common case) or quoted one by one: either way
    the very text ``json`` writes, so the batch script decodes exactly what was sent."""
    framed = _frame("reserve", args)
    assert framed == json.dumps(["reserve", args], ensure_ascii=False, separators=(",", ":"))
