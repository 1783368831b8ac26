"""RedisStore beyond the shared behaviour suite: exact money, one round trip per operation,
lost scripts and restarts, cancellation, failing closed (or open), many processes.

Tests that pause, flush or restart a server use one this module starts itself
(``own_redis``), never the shared one on 6379.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from outlay import (
    Amount,
    ConfigurationError,
    FailOpenStore,
    KeyedBudget,
    Reservation,
    ReservationError,
    SpendEvent,
    StoreError,
    StoreUnavailable,
    UnknownLimit,
    store_from_url,
)

from .redisserver import RedisServer, free_port, redis_binary, start_server
from .storekit import REDIS_TEST_DB, drop_namespace, redis_store_at

redis = pytest.importorskip("redis", reason="the redis driver is not installed (outlay[redis])")

from redis.crc import key_slot  # noqa: E402 - after the importorskip

from outlay.stores._redis import MAX_UNITS, RedisStore  # noqa: E402

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "src" / "outlay" / "stores" / "_redis_lua"


@pytest.fixture
def anyio_backend() -> str:
    """RedisStore runs on redis.asyncio, which speaks asyncio only (see
    ``test_trio_is_refused_clearly``)."""
    return "asyncio"


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A persistent redis-server of our own, which tests may pause, flush and restart."""
    if redis_binary() is None:
        pytest.skip("no redis-server binary on PATH: cannot start a server to restart")
    server = start_server(tmp_path_factory.mktemp("own-redis"), persist=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    async with redis_store_at(redis_server) as opened:
        yield opened


@pytest.fixture
async def own_store(own_redis: RedisServer) -> AsyncIterator[RedisStore]:
    async with redis_store_at(own_redis) as opened:
        yield opened


async def raw(store: RedisStore, *command: Any) -> Any:
    return await store.client.execute_command(*command)


# -- import, construction, URLs ------------------------------------------------------------


def test_import_outlay_never_imports_redis() -> None:
    code = ("import sys, outlay, outlay.stores; outlay.KeyedBudget(); "
            "outlay.store_from_url('memory://'); "
            "assert 'redis' not in sys.modules, sorted(m for m in sys.modules if 'redis' in m); "
            "outlay.stores.RedisStore; assert 'redis' in sys.modules")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_missing_driver_is_a_configuration_error() -> None:
    code = ("import sys; sys.modules['redis'] = None\n"
            "from outlay import ConfigurationError, store_from_url\n"
            "try:\n    store_from_url('redis://127.0.0.1:6379/0')\n"
            "except ConfigurationError as exc:\n    assert 'outlay[redis]' in str(exc), exc\n"
            "else:\n    raise SystemExit('no error')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


async def test_store_from_url_reads_own_options(redis_server: RedisServer) -> None:
    store = store_from_url(f"{redis_server.url(REDIS_TEST_DB)}?namespace=t-{uuid.uuid4().hex}"
                           "&decimal_places=2&fail_open=false&health_check_interval=30")
    assert isinstance(store, RedisStore)
    assert store.decimal_places == 2
    try:
        await store.set_limit("usd", Decimal("1.25"))
        assert (await store.usage("usd")).cap == Decimal("1.25")
        with pytest.raises(ValueError, match="more than 2 decimal places"):
            await store.reserve("r1", {"usd": Decimal("0.001")}, lease=60)
    finally:
        await drop_namespace(store)
        await store.aclose()


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        RedisStore.from_url("redis://127.0.0.1:1/0?decimal_places=many")
    with pytest.raises(ConfigurationError) as info:
        RedisStore.from_url("redis://user:s3cret@127.0.0.1:1/0?fail_open=perhaps")
    assert "s3cret" not in str(info.value)
    assert "user:***@127.0.0.1:1" in str(info.value)
    with pytest.raises(ConfigurationError):
        RedisStore.from_url("redis://127.0.0.1:1/0", namespace="a{b}")
    with pytest.raises(ConfigurationError):
        RedisStore.from_url("redis://127.0.0.1:1/0", decimal_places=16)
    with pytest.raises(TypeError):
        RedisStore(object())  # type: ignore[arg-type]


async def test_a_users_own_client_is_left_open(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis(host=redis_server.host, port=redis_server.port,
                                 db=REDIS_TEST_DB, decode_responses=True)
    store = RedisStore(client, namespace=f"t-{uuid.uuid4().hex}")
    try:
        await store.set_limit("calls", 3)
        assert (await store.reserve("r1", {"calls": 2}, lease=60)).admitted
        assert (await store.usage("calls")).held == 2  # decoded replies work too
        await store.aclose()
        assert await client.ping()
    finally:
        await drop_namespace(store)
        await client.aclose()


def test_trio_callers_go_through_a_bridge_thread(redis_server: RedisServer) -> None:
    """From trio the store runs redis.asyncio on its own loop thread; a trio caller cancelled
    mid-call leaves nothing held (KeyedBudget releases, the bridge finishes the script)."""
    namespace = f"trio-{uuid.uuid4().hex[:8]}"

    async def use() -> None:
        store = RedisStore.from_url(redis_server.url(REDIS_TEST_DB), namespace=namespace)
        budget = KeyedBudget(store)
        try:
            await budget.set_limit("calls", 10)
            async with budget.reserve({"calls": 4}) as held:
                await held.commit({"calls": 3})
            with anyio.CancelScope() as scope:
                scope.cancel()
                await budget.try_reserve({"calls": 5})
            admitted: list[Reservation] = []

            async def one() -> None:
                reservation = await budget.try_reserve({"calls": 1})
                if reservation is not None:
                    admitted.append(reservation)

            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(one)
            usage = await store.usage("calls")
            assert (len(admitted), usage.spent, usage.held) == (7, 3, 7)
            assert [u.key for u in await store.limits()] == ["calls"]
            for reservation in admitted:
                await reservation.release()
            assert (await store.usage("calls")).held == 0
        finally:
            await drop_namespace(store)
            await store.aclose()
        assert store._bridge is None

    anyio.run(use, backend="trio")


# -- exact amounts ---------------------------------------------------------------------------


async def test_money_stays_exact_over_many_tiny_commits(store: RedisStore) -> None:
    await store.set_limit("usd", Decimal("0.000000300"))
    for n in range(300):
        assert (await store.reserve(f"r{n}", {"usd": Decimal("1E-9")}, lease=60)).admitted
        await store.commit(f"r{n}")
    usage = await store.usage("usd")
    assert usage.spent == Decimal("0.0000003")  # as floats, 300 x 1e-9 != 3e-7
    assert usage.available == 0
    assert not (await store.reserve("one-more", {"usd": Decimal("1E-9")}, lease=60)).admitted


async def test_too_precise_or_too_large_amounts_are_refused_before_anything(
    store: RedisStore,
) -> None:
    await store.set_limit("usd", Decimal("5"))
    await store.set_limit("calls", MAX_UNITS)
    with pytest.raises(ValueError, match="more than 9 decimal places"):
        await store.reserve("r1", {"usd": Decimal("0.0000000001")}, lease=60)
    with pytest.raises(ValueError, match="too large"):
        await store.reserve("r2", {"calls": MAX_UNITS + 1}, lease=60)
    with pytest.raises(ValueError, match="too large"):
        await store.set_limit("big", Decimal(MAX_UNITS))
    with pytest.raises(ValueError, match="too large"):  # fine as units, too big as money
        await store.reserve("r3", {"usd": 10**8}, lease=60)
    assert (await store.usage("usd")).held == 0
    # Right at the edge everything is still exact (2**53 - 1 is odd: a double would round).
    assert (await store.reserve("r4", {"calls": MAX_UNITS - 1}, lease=60)).admitted
    assert (await store.reserve("r5", {"calls": 1}, lease=60)).admitted
    assert not (await store.reserve("r6", {"calls": 1}, lease=60)).admitted
    assert (await store.usage("calls")).held == MAX_UNITS


async def test_int_amounts_count_on_money_limits(store: RedisStore) -> None:
    await store.set_limit("usd", Decimal("2.5"))
    assert (await store.reserve("r1", {"usd": 2}, lease=60)).admitted
    await store.commit("r1", {"usd": Decimal("1.75")})
    assert (await store.usage("usd")).available == Decimal("0.75")


async def test_unit_cannot_change_and_places_must_match(store: RedisStore) -> None:
    await store.set_limit("usd", Decimal("1"))
    with pytest.raises(TypeError, match="cannot change unit"):
        await store.set_limit("usd", 5)
    other = RedisStore(store.client, namespace=store.namespace, decimal_places=4)
    with pytest.raises(ConfigurationError, match="9 decimal places"):
        await other.reserve("r1", {"usd": Decimal("0.5")}, lease=60)


async def test_commit_validates_actual_before_counting(store: RedisStore) -> None:
    await store.set_limit("calls", 5)
    await store.reserve("r1", {"calls": 2}, lease=60)
    with pytest.raises(ValueError, match="does not hold"):
        await store.commit("r1", {"other": 1})
    with pytest.raises(TypeError):
        await store.commit("r1", {"calls": Decimal("0.5")})
    usage = await store.usage("calls")
    assert (usage.spent, usage.held) == (0, 2)
    assert await store.commit("r1", {"calls": 1})


# -- keys, expiry, listing -------------------------------------------------------------------


async def test_every_key_shares_the_namespace_hash_tag(store: RedisStore) -> None:
    await store.set_limit("tenant:{acme}/usd", Decimal(5))
    await store.reserve("r1", {"tenant:{acme}/usd": Decimal(1), "run/calls": 1}, lease=60,
                        defaults={"run/calls": 3})
    keys = [k async for k in store.client.scan_iter(match="{" + store.namespace + "}:*")]
    assert len(keys) == 5  # 2 limits x (hash + holds) + the reservation
    assert len({key_slot(k) for k in keys}) == 1  # one Redis Cluster slot, whatever the keys


async def test_period_limits_expire_a_little_after_their_period(store: RedisStore) -> None:
    now = time.time()
    end = now + 3600
    key = "usd/hour:x"
    await store.reserve("r1", {key: Decimal("0.5")}, lease=60, defaults={key: Decimal(1)},
                        expire_at={key: end})
    grace = 86_400
    ttl = await raw(store, "PTTL", "{" + store.namespace + "}:l:" + key) / 1000
    assert end + grace - now - 5 < ttl <= end + grace - now + 1
    # A period already over still outlives the hold on it.
    await store.reserve("r2", {"old": 1}, lease=60, defaults={"old": 5},
                        expire_at={"old": now - 10})
    assert (await store.usage("old")).held == 1
    # Resetting spend keeps the period expiry: the limit is still forgotten on time.
    await store.commit("r1")
    await store.reset_spend(key)
    assert (await store.usage(key)).spent == 0
    after = await raw(store, "PTTL", "{" + store.namespace + "}:l:" + key) / 1000
    assert ttl - 5 < after <= ttl


async def test_held_reservations_counts_only_its_own_namespace(
    redis_server: RedisServer,
) -> None:
    base = f"outlay-test-{uuid.uuid4().hex[:12]}"
    stores = [RedisStore.from_url(redis_server.url(REDIS_TEST_DB), namespace=name)
              for name in (base + "*", base + "-b")]  # "*" is literal, not a glob
    try:
        starred, other = stores
        await other.set_limit("calls", 5)
        await other.reserve("r1", {"calls": 1}, lease=60)
        assert (await starred.held_reservations(), await other.held_reservations()) == (0, 1)
        await starred.set_limit("calls", 5)
        for n in range(3):
            await starred.reserve(f"s{n}", {"calls": 1}, lease=60)
        assert (await starred.held_reservations(), await other.held_reservations()) == (3, 1)
    finally:
        for opened in stores:
            await drop_namespace(opened)
            await opened.aclose()


async def test_limits_lists_by_prefix_sorted(store: RedisStore) -> None:
    for key in ("t/b", "t/a", "t*/x", "u/a"):
        await store.set_limit(key, 5)
    await store.reserve("r1", {"t/a": 2}, lease=60)
    listed = await store.limits("t/")
    assert [(u.key, u.held) for u in listed] == [("t/a", 2), ("t/b", 0)]
    assert [u.key for u in await store.limits("t*")] == ["t*/x"]  # glob characters are literal
    assert [u.key for u in await store.limits()] == ["t*/x", "t/a", "t/b", "u/a"]
    assert await store.limits("nothing") == []


# -- leases ------------------------------------------------------------------------------------


async def test_a_retried_reserve_after_expiry_is_refused(store: RedisStore) -> None:
    await store.set_limit("calls", 5)
    await store.reserve("r1", {"calls": 1}, lease=0.02)
    await anyio.sleep(0.1)
    with pytest.raises(ReservationError):
        await store.reserve("r1", {"calls": 1}, lease=60)
    assert await store.release("r1") is False  # expired: released nothing, but it has ended
    assert await store.commit("r1") is False  # ... so a late commit counts nothing
    assert (await store.usage("calls")).spent == 0


async def test_a_release_overtaking_its_reserve_wins(store: RedisStore) -> None:
    """Guards an orphaned hold: a caller cancelled mid-reserve releases its id on a new
    connection, and that release may reach Redis before the reserve it cancels."""
    await store.set_limit("calls", 5)
    assert await store.release("late") is False
    with pytest.raises(ReservationError):
        await store.reserve("late", {"calls": 5}, lease=60)
    assert (await store.usage("calls")).held == 0


async def test_ended_ids_are_forgotten_after_retain(redis_server: RedisServer) -> None:
    async with redis_store_at(redis_server, retain=0.05) as store:
        await store.set_limit("calls", 5)
        await store.reserve("r1", {"calls": 1}, lease=0.01)
        await store.commit("r1")
        await anyio.sleep(0.2)
        with pytest.raises(ReservationError, match="unknown"):
            await store.commit("r1")


async def test_abandoned_reservation_is_released_by_a_task(store: RedisStore) -> None:
    budget = KeyedBudget(store)
    await budget.set_limit("calls", 3)
    handles = [await budget.try_reserve({"calls": 3})]
    with pytest.warns(ResourceWarning):
        handles.clear()  # the last reference: collected at once
    with anyio.fail_after(5):
        while (await store.usage("calls")).held:  # noqa: ASYNC110 - polls the server
            await anyio.sleep(0.01)


# -- one round trip, scripts lost, restarts --------------------------------------------------


async def run_every_operation(store: RedisStore, tag: str) -> None:
    await store.reserve(f"{tag}1", {"calls": 1, "more": 1}, lease=60, defaults={"more": 5})
    await store.extend(f"{tag}1", 60)
    await store.commit(f"{tag}1", {"calls": 1})
    await store.reserve(f"{tag}2", {"calls": 1}, lease=60)
    await store.release(f"{tag}2")
    await store.usage("calls")
    await store.reset_spend("more")


async def test_every_operation_is_one_round_trip(
    own_redis: RedisServer, own_store: RedisStore
) -> None:
    await own_store.set_limit("calls", 100)
    await run_every_operation(own_store, "warm")  # connects and caches every script
    checker = redis.asyncio.Redis(port=own_redis.port)
    try:
        await checker.config_resetstat()
        await run_every_operation(own_store, "r")
        info = await checker.info("commandstats")
    finally:
        await checker.aclose()
    calls = {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in info.items()}
    calls.pop("config|resetstat", None)
    assert calls.pop("evalsha") == 7
    # Redis 7.0 also counts the commands scripts run inside the server; none else was sent.
    lua = " ".join(p.read_text() for p in SCRIPTS.glob("*.lua")).lower()
    assert calls
    assert all(f"'{name}'" in lua for name in calls), calls


async def test_lost_scripts_are_reloaded_transparently(own_store: RedisStore) -> None:
    await own_store.set_limit("calls", 5)
    await raw(own_store, "SCRIPT", "FLUSH")
    assert (await own_store.reserve("r1", {"calls": 2}, lease=60)).admitted
    await raw(own_store, "SCRIPT", "FLUSH")
    assert await own_store.commit("r1") is True
    await raw(own_store, "SCRIPT", "FLUSH")
    assert (await own_store.usage("calls")).spent == 2
    assert (await own_store.reserve("r2", {"calls": 1}, lease=60)).admitted  # cached again
    await raw(own_store, "SCRIPT", "FLUSH")
    assert (await own_store.reset_spend("calls")).spent == 2
    await raw(own_store, "SCRIPT", "FLUSH")
    assert await own_store.held_reservations() == 1
    assert (await own_store.usage("calls")).spent == 0


async def test_a_server_restart_between_operations_is_survived(
    own_redis: RedisServer, own_store: RedisStore
) -> None:
    budget = KeyedBudget(own_store)
    await budget.set_limit("usd", Decimal("1.00"))
    held = await budget.reserve({"usd": Decimal("0.40")})
    await anyio.to_thread.run_sync(own_redis.stop)
    try:
        with pytest.raises(StoreUnavailable):  # fails closed while the server is down
            await budget.try_reserve({"usd": Decimal("0.10")})
    finally:
        await anyio.to_thread.run_sync(own_redis.start)
    await held.commit({"usd": Decimal("0.30")})  # data came back, scripts did not
    usage = await budget.usage("usd")
    assert (usage.spent, usage.held) == (Decimal("0.30"), 0)
    rest = await budget.try_reserve({"usd": Decimal("0.70")})
    assert rest is not None
    await rest.release()


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelled_mid_script_leaves_store_consistent_and_usable(
    own_redis: RedisServer, own_store: RedisStore
) -> None:
    """Guards a caller cancelled while its script waits at the server: the hold must not leak
    (KeyedBudget releases it, shielded) and the client must not read the stale reply later."""
    budget = KeyedBudget(own_store)
    await budget.set_limit("calls", 5)
    pauser = redis.asyncio.Redis(port=own_redis.port)
    results: list[object] = []
    caller = anyio.CancelScope()

    async def reserve() -> None:
        with caller:
            results.append(await budget.try_reserve({"calls": 5}))

    try:
        await pauser.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
        async with anyio.create_task_group() as tg:
            tg.start_soon(reserve)
            await anyio.wait_all_tasks_blocked()
            await anyio.sleep(0.05)  # the script is at the paused server, not answered
            caller.cancel()
            await anyio.sleep(0.05)  # the shielded release is waiting at the server too
            assert caller.cancel_called
            assert not results
            await pauser.execute_command("CLIENT", "UNPAUSE")
    finally:
        await pauser.execute_command("CLIENT", "UNPAUSE")
        await pauser.aclose()
    assert results == []
    usage = await own_store.usage("calls")
    assert (usage.spent, usage.held) == (0, 0)
    async with budget.reserve({"calls": 5}) as again:  # the connection pool still works
        await again.commit()
    assert (await own_store.usage("calls")).spent == 5


async def test_many_cancelled_callers_never_leak(store: RedisStore) -> None:
    budget = KeyedBudget(store)
    await budget.set_limit("calls", 1000)
    committed = 0

    async def one(n: int) -> None:
        nonlocal committed
        with anyio.move_on_after(0.0003 * (n % 7)):
            # Cancelled inside reserve: KeyedBudget releases the id; inside the body: async with
            # releases; inside commit: it is shielded and completes.
            async with budget.reserve({"calls": 1}) as reservation:
                await anyio.lowlevel.checkpoint()
                await reservation.commit()
                committed += 1

    async with anyio.create_task_group() as tg:
        for n in range(200):
            tg.start_soon(one, n)
    usage = await store.usage("calls")
    assert (usage.spent, usage.held) == (committed, 0)


# -- failing closed, or open on request ------------------------------------------------------


async def test_unreachable_redis_fails_closed() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    budget = KeyedBudget(store)
    try:
        with pytest.raises(StoreUnavailable) as info:
            await budget.try_reserve({"calls": 1})
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        with pytest.raises(StoreUnavailable):
            await store.usage("calls")
    finally:
        await store.aclose()


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
async def test_every_call_on_an_unreachable_server_is_store_unavailable(scheme: str) -> None:
    """Every call, the listings and the event log included, fails closed with
    ``StoreUnavailable`` from a server or cluster that does not answer, never with the
    driver's own exception (the cluster client raises its own, outside ``RedisError``)."""
    store = RedisStore.from_url(f"{scheme}://127.0.0.1:{free_port()}")
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "usage": lambda: store.usage("calls"),
        "limits": lambda: store.limits(),
        "held_reservations": lambda: store.held_reservations(),
        "holds": lambda: store.holds(),
        "events": lambda: store.events(),
        "append_events": lambda: store.append_events(
            [SpendEvent(at=0.0, kind="reserved", rid="r1", amounts={"calls": 1})], keep=10),
        "reserve": lambda: store.reserve("r1", {"calls": 1}, lease=60),
    }
    try:
        for name, call in calls.items():
            with pytest.raises(StoreUnavailable):
                await call()
                pytest.fail(f"{name} did not fail")
    finally:
        await store.aclose()


async def test_fail_open_admits_and_logs_loudly() -> None:
    store = store_from_url(f"redis://127.0.0.1:{free_port()}/0?fail_open=true")
    assert isinstance(store, FailOpenStore)
    assert isinstance(store.inner, RedisStore)
    budget = KeyedBudget(store)
    try:
        with capture_logs() as logs:
            reservation = await budget.try_reserve({"calls": 1})
            assert reservation is not None
            await reservation.commit()
        failed = [e for e in logs if e["event"] == "outlay.store.failed_open"]
        assert [e["operation"] for e in failed] == ["reserve", "commit"]
        assert all(e["log_level"] == "warning" for e in failed)
        with pytest.raises(StoreUnavailable):  # reads are never faked
            await store.usage("calls")
    finally:
        await store.aclose()


async def test_a_failing_server_is_a_store_error(store: RedisStore) -> None:
    key = "{" + store.namespace + "}:l:broken"
    await raw(store, "SET", key, "not a hash")
    with pytest.raises(StoreError) as info:
        await store.reserve("r1", {"broken": 1}, lease=60)
    assert not isinstance(info.value, StoreUnavailable)
    assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)


async def test_unknown_limit_and_unknown_reservation(store: RedisStore) -> None:
    with pytest.raises(UnknownLimit):
        await store.usage("never")
    with pytest.raises(TypeError):
        await store.limits(1)  # type: ignore[arg-type]
    with pytest.raises(ReservationError):
        await store.commit("never")
    assert await store.extend("never", 5) is False


# -- many processes --------------------------------------------------------------------------


def spawn(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    return subprocess.Popen([sys.executable, "-m", "tests.redisworker", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
async def test_many_processes_one_budget_with_cancellation_and_a_killed_worker(
    redis_server: RedisServer,
) -> None:
    async with redis_store_at(redis_server) as store:
        await check_fleet(store, redis_server.url(REDIS_TEST_DB))


async def check_fleet(store: RedisStore, url: str) -> None:
    """Three worker processes (cancelling some callers) and one SIGKILLed holder share the
    budget of ``store``'s namespace at ``url``: never over the caps, nothing lost."""
    budget = KeyedBudget(store)
    calls_cap, usd_cap = 100, Decimal("10.00")
    await budget.set_limit("calls", calls_cap)
    await budget.set_limit("usd", usd_cap)

    hog = spawn([url, store.namespace, "hog"])
    assert hog.stdout is not None
    line = await anyio.to_thread.run_sync(hog.stdout.readline)
    assert line.startswith("HELD"), hog.stderr.read() if hog.stderr else line
    os.kill(hog.pid, signal.SIGKILL)  # dies holding 5 calls and 1.00 USD
    hog.communicate(timeout=10)
    assert (await budget.usage("calls")).held == 5

    workers = [spawn([url, store.namespace, str(n), "10", "12", str(n)]) for n in range(3)]
    running = True

    async def watch() -> None:  # spent + held <= cap at every snapshot
        while running:
            for key, cap in (("calls", calls_cap), ("usd", usd_cap)):
                usage = await store.usage(key)
                assert usage.spent + usage.held <= cap, usage
            await anyio.sleep(0.002)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        outputs = [await anyio.to_thread.run_sync(w.communicate) for w in workers]
        running = False
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    tallies = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(int(t["refused"]) for t in tallies) > 0  # the budget really ran out
    assert sum(int(t["cancelled"]) for t in tallies) > 0  # and callers were cancelled

    with anyio.fail_after(10):  # the killed worker's lease (1 s, server clock) ends
        while (await store.usage("calls")).held:  # noqa: ASYNC110 - polls the server
            await anyio.sleep(0.05)
    calls, usd = await store.usage("calls"), await store.usage("usd")
    assert calls.spent == sum(int(t["calls"]) for t in tallies)
    assert usd.spent == sum(Decimal(t["usd"]) for t in tallies)
    assert (calls.held, usd.held) == (0, 0)
    assert calls.available == calls_cap - calls.spent  # nothing is lost
    assert usd.available == usd_cap - usd.spent
    # A worker's own limit is made by its first admitted reserve: one refused every time
    # (started late, the budget gone) has none, and nothing spent.
    own = {usage.key: usage.spent for usage in await store.limits("worker/")}
    for n, tally in enumerate(tallies):
        assert own.get(f"worker/{n}", 0) == int(tally["worker"])


# -- the docs page runs ------------------------------------------------------------------------


def test_docs_recipe_runs(redis_server: RedisServer) -> None:
    page = (ROOT / "docs" / "redis.md").read_text()
    blocks = page.split("```python\n")[1:]
    recipe, own_client = (block.split("```", 1)[0] for block in blocks[:2])
    compile(own_client, "docs/redis.md", "exec")
    namespace = f"docs-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
           "REDIS_URL": redis_server.url(REDIS_TEST_DB)}
    code = recipe.replace("namespace=acme", f"namespace={namespace}")
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
        assert "{'usd': Decimal('19.9863')}" in done.stdout, done.stdout
    finally:
        import redis as sync_redis

        client = sync_redis.Redis(host=redis_server.host, port=redis_server.port,
                                  db=REDIS_TEST_DB)
        keys = list(client.scan_iter(match="{" + namespace + "}:*"))
        if keys:
            client.delete(*keys)
        client.close()


async def test_fail_open_admission_settles_once_redis_is_back(
    own_redis: RedisServer, own_store: RedisStore
) -> None:
    """Guards commit raising "unknown reservation" for work admitted during an outage."""
    store = FailOpenStore(RedisStore(own_store.client, namespace=own_store.namespace))
    budget = KeyedBudget(store)
    await budget.set_limit("usd", Decimal("1.00"))
    await budget.set_limit("calls", 10)
    await anyio.to_thread.run_sync(own_redis.stop)
    try:
        with capture_logs() as logs:
            during = await budget.try_reserve({"usd": Decimal("0.40"), "calls": 1})
            dropped = await budget.try_reserve({"calls": 1})
            assert during is not None
            assert dropped is not None
            await dropped.release()
        failed = [e["operation"] for e in logs if e["event"] == "outlay.store.failed_open"]
        assert failed == ["reserve", "reserve", "release"]
    finally:
        await anyio.to_thread.run_sync(own_redis.start)
    await during.extend(60)  # not held at the server, but admitted: no error
    with pytest.raises(ValueError, match="does not hold"):
        await store.commit(during.id, {"tokens": 5})
    await during.commit({"usd": Decimal("0.25")})  # calls settles at its admitted 1
    usage = await budget.usage("usd")
    assert (usage.spent, usage.held) == (Decimal("0.25"), 0)
    assert (await budget.usage("calls")).spent == 1
    assert await store.commit(during.id) is False  # a retry counts once


# -- the same answers as the reference store --------------------------------------------------


async def outcome(call: Any) -> object:
    try:
        return await call
    except (TypeError, ValueError, UnknownLimit, ReservationError) as exc:
        return type(exc)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_redis_answers_like_the_memory_store(store: RedisStore, seed: int) -> None:
    """Differential test: a seeded random mix of every operation, applied to both stores,
    must give the same answers and the same usage after every step (leases long enough never
    to expire)."""
    import random

    from outlay import MemoryStore

    rng = random.Random(seed)
    memory = MemoryStore()
    units: dict[str, Amount] = {"t/a": 50, "t/b": 20, "usd/a": Decimal("3.5"),
                                "usd/b": Decimal("1.25")}
    for key, cap in units.items():
        for one in (memory, store):
            await one.set_limit(key, cap)
    keys = [*units, "new/int", "new/usd"]
    rids: list[str] = []
    seen: set[object] = set()

    def amount(key: str) -> Any:
        if rng.random() < 0.05:
            return Decimal("0.5")  # wrong unit on int limits
        if key.startswith("usd") or key == "new/usd":
            return Decimal(rng.randint(0, 90)) / 100
        return rng.randint(0, 9)

    for _ in range(150):
        op = rng.choice(["reserve"] * 4 + ["commit", "commit", "release", "extend", "cap"])
        if op == "reserve" or not rids:
            rid = rng.choice(rids) if rids and rng.random() < 0.1 else uuid.uuid4().hex
            chosen = rng.sample(keys, rng.randint(1, 3))
            amounts = {key: amount(key) for key in chosen}
            defaults: dict[str, Amount] | None = (
                {"new/int": 30, "new/usd": Decimal(2)} if rng.random() < 0.7 else None)
            results = [await outcome(one.reserve(rid, amounts, lease=600, defaults=defaults))
                       for one in (memory, store)]
            rids.append(rid)
        elif op == "commit":
            rid = rng.choice(rids)
            actual = ({key: amount(key) for key in rng.sample(keys, rng.randint(0, 2))}
                      if rng.random() < 0.7 else None)
            results = [await outcome(one.commit(rid, actual)) for one in (memory, store)]
        elif op == "release":
            # Only ids the store has seen: RedisStore remembers an unknown id it is asked to
            # release (see test_a_release_overtaking_its_reserve_wins), MemoryStore does not.
            known = [r for r in rids if r in memory._holds or r in memory._ended]
            if not known:
                continue
            rid = rng.choice(known)
            results = [await outcome(one.release(rid)) for one in (memory, store)]
        elif op == "extend":
            rid = rng.choice(rids)
            results = [await outcome(one.extend(rid, 600)) for one in (memory, store)]
        else:
            key = rng.choice(list(units))
            cap = amount(key) * 10
            results = [await outcome(one.set_limit(key, cap)) for one in (memory, store)]
        assert results[0] == results[1], (op, results)
        seen.add(getattr(results[0], "admitted", results[0]) if op == "reserve" else
                 results[0] if isinstance(results[0], type) else None)
        for key in keys:
            assert await outcome(memory.usage(key)) == await outcome(store.usage(key)), key
    # The mix reached admissions, refusals, bad units and misused ids.
    assert {True, False, TypeError, ReservationError} <= seen, seen


async def test_another_process_can_end_a_reservation(store: RedisStore) -> None:
    """The store that ends a reservation need not be the one that made it (a retry from a
    restarted worker): the script finds the limits in the reservation itself."""
    other = RedisStore(store.client, namespace=store.namespace)
    await store.set_limit("calls", 5)
    await store.reserve("r1", {"calls": 2, "more": 1}, lease=60, defaults={"more": 3})
    await store.reserve("r2", {"calls": 2}, lease=60)
    assert await other.extend("r1", 60) is True
    assert await other.commit("r1", {"calls": 1}) is True
    assert await other.release("r2") is True
    assert await store.commit("r1") is False
    calls, more = await store.usage("calls"), await store.usage("more")
    assert (calls.spent, calls.held, more.spent, more.held) == (1, 0, 1, 0)


# -- data written by an earlier outlay (layout 1: h:<rid> fields, bare-rid members) --------


async def server_ms(store: RedisStore) -> int:
    seconds, micros = await raw(store, "TIME")
    return int(seconds) * 1000 + int(micros) // 1000


async def hold_as_layout_1(store: RedisStore, rid: str, amounts: dict[str, int], *,
                           lease_ms: int, cap: int = 10, spent: int = 0) -> None:
    """Write ``rid``'s hold on int limits exactly as outlay's layout-1 ``reserve.lua`` did:
    the amount in the limit's field ``h:<rid>``, the bare rid as the holds-set member, no
    ``v`` or ``x`` field."""
    p = "{" + store.namespace + "}:"
    now = await server_ms(store)
    record: list[Any] = ["st", "held", "exp", now + lease_ms, "at", now, "n", len(amounts)]
    for i, (key, amount) in enumerate(amounts.items(), 1):
        lk = p + "l:" + key
        if not await raw(store, "EXISTS", lk):
            await raw(store, "HSET", lk, "cap", cap, "spent", spent, "held", 0, "u", "i",
                      "p", 0, "t", now)
        await raw(store, "HINCRBY", lk, "held", amount)
        await raw(store, "HSET", lk, "h:" + rid, amount, "t", now)
        await raw(store, "ZADD", p + "z:" + key, now + lease_ms, rid)
        record += [f"k{i}", key, f"a{i}", amount, f"u{i}", "i"]
    await raw(store, "HSET", p + "r:" + rid, *record)
    await raw(store, "PEXPIRE", p + "r:" + rid, lease_ms + 86_400_000)


async def layout(store: RedisStore, key: str) -> tuple[dict[str, str], list[str]]:
    """A limit's hash fields and its holds-set members that are holds (scored by a lease
    expiry, not +inf), as text."""
    p = "{" + store.namespace + "}:"
    fields = await raw(store, "HGETALL", p + "l:" + key)
    pairs = fields.items() if isinstance(fields, dict) else zip(fields[::2], fields[1::2],
                                                               strict=True)
    members = await raw(store, "ZRANGE", p + "z:" + key, "-inf", "(+inf", "BYSCORE")
    return ({k.decode(): v.decode() for k, v in pairs}, [m.decode() for m in members])


async def test_holds_written_by_layout_1_are_ended_and_counted_once(store: RedisStore) -> None:
    """Holds a live Redis got from the earlier layout (amount in ``h:<rid>``) commit, release
    and extend through this one, and the first script to touch a limit migrates it."""
    await hold_as_layout_1(store, "old-a", {"calls": 3, "tools": 1}, lease_ms=60_000)
    await hold_as_layout_1(store, "old-b", {"calls": 2}, lease_ms=60_000)
    await hold_as_layout_1(store, "12:x", {"calls": 1}, lease_ms=60_000)  # looks like a member
    calls = await store.usage("calls")
    assert (calls.cap, calls.spent, calls.held) == (10, 0, 6)
    fields, members = await layout(store, "calls")
    assert fields["v"] == "2"
    assert not any(name.startswith("h:") for name in fields)
    assert sorted(members) == ["1:12:x", "2:old-b", "3:old-a"]
    assert await store.held_reservations() == 3
    assert {h.rid for h in await store.holds()} == {"old-a", "old-b", "12:x"}
    # Not admitted past the old holds: 6 held of 10.
    assert not (await store.reserve("new", {"calls": 5}, lease=60)).admitted
    assert await store.extend("old-a", 120) is True
    assert await store.commit("old-a", {"calls": 4}) is True
    assert await store.commit("old-a") is False  # once
    assert await store.release("old-b") is True
    assert await store.release("12:x") is True
    calls, tools = await store.usage("calls"), await store.usage("tools")
    assert (calls.spent, calls.held, tools.spent, tools.held) == (4, 0, 1, 0)
    assert (await layout(store, "calls"))[1] == []
    assert (await store.reserve("new", {"calls": 6}, lease=60)).admitted


async def test_expired_layout_1_holds_stop_counting(store: RedisStore) -> None:
    await hold_as_layout_1(store, "gone", {"calls": 7}, lease_ms=1)
    await hold_as_layout_1(store, "live", {"calls": 2}, lease_ms=60_000)
    await anyio.sleep(0.01)  # past the 1 ms lease on the server's clock
    assert (await store.reserve("r1", {"calls": 8}, lease=60)).admitted  # 7 gone, 2 live
    assert (await store.usage("calls")).held == 10
    assert await store.commit("gone") is True  # a late commit still records its spend
    calls = await store.usage("calls")
    assert (calls.spent, calls.held) == (7, 10)


async def test_a_layout_1_period_limit_keeps_its_expiry(store: RedisStore) -> None:
    """The migration records the key's expiry (field ``x``), which later reserves move only
    later, as before."""
    p = "{" + store.namespace + "}:"
    await hold_as_layout_1(store, "old", {"usd/day:x": 1}, lease_ms=60_000)
    await raw(store, "PEXPIRE", p + "l:usd/day:x", 7_200_000)
    await raw(store, "PEXPIRE", p + "z:usd/day:x", 7_200_000)
    assert await store.commit("old") is True
    fields, _ = await layout(store, "usd/day:x")
    ttl = await raw(store, "PTTL", p + "l:usd/day:x")
    assert 7_100_000 < ttl <= 7_200_000
    assert abs(int(fields["x"]) - (await server_ms(store) + ttl)) < 1000
    # A reserve without expire_at on a limit that expires makes it outlive the hold.
    await store.reserve("r1", {"usd/day:x": 1}, lease=86_400 * 2)
    ttl = await raw(store, "PTTL", p + "l:usd/day:x")
    assert ttl > 86_400_000 * 3 - 10_000
    assert await raw(store, "PTTL", p + "z:usd/day:x") > 86_400_000 * 3 - 10_000


async def test_a_layout_1_hold_added_after_migration_is_pruned_by_its_field(
    store: RedisStore,
) -> None:
    """A fleet still running the earlier version adds bare-rid holds to a migrated limit;
    expired, they are dropped by their ``h:<rid>`` amount (never a script error)."""
    await store.set_limit("calls", 10)
    await hold_as_layout_1(store, "laggard", {"calls": 4}, lease_ms=1)
    await anyio.sleep(0.01)
    calls = await store.usage("calls")
    assert calls.held == 0
    assert (await store.reserve("r1", {"calls": 10}, lease=60)).admitted


# -- reservations written by an earlier outlay as hashes (limits and holds as today) ------


async def hold_as_hash(store: RedisStore, rid: str, amounts: dict[str, Amount], *,
                       lease_ms: int) -> None:
    """Write ``rid``'s hold on existing limits exactly as outlay's ``reserve.lua`` did before
    a reservation was one string: the hold in the limit (layout 2: ``held``, ``t``, member
    ``<amount>:<rid>``), the reservation a hash with ``st exp at n k<i> a<i> u<i>``, expiring
    its lease plus ``retain`` from now."""
    p = "{" + store.namespace + "}:"
    now = await server_ms(store)
    record: list[Any] = ["st", "held", "exp", now + lease_ms, "at", now, "n", len(amounts)]
    for i, (key, amount) in enumerate(amounts.items(), 1):
        unit, places = (v.decode() for v in await raw(store, "HMGET", p + "l:" + key, "u", "p"))
        scaled = int(amount) if unit == "i" else int(Decimal(amount).scaleb(int(places)))
        await raw(store, "HINCRBY", p + "l:" + key, "held", scaled)
        await raw(store, "HSET", p + "l:" + key, "t", now)
        await raw(store, "ZADD", p + "z:" + key, now + lease_ms, f"{scaled}:{rid}")
        record += [f"k{i}", key, f"a{i}", scaled, f"u{i}", unit]
    await raw(store, "HSET", p + "r:" + rid, *record)
    await raw(store, "PEXPIRE", p + "r:" + rid, lease_ms + int(store._retain_ms))


async def record_of(store: RedisStore, rid: str) -> tuple[str, int]:
    """The type of ``rid``'s reservation key and its time to live (ms)."""
    rk = "{" + store.namespace + "}:r:" + rid
    return (await raw(store, "TYPE", rk)).decode(), await raw(store, "PTTL", rk)


async def test_reservation_hashes_of_the_earlier_version_end_once(store: RedisStore) -> None:
    """Holds whose reservation is a hash (as the previous version wrote them) are counted,
    listed, retried, extended, committed and released exactly once by this version, which
    writes the reservation as its string when it next changes it."""
    await store.set_limit("calls", 10)
    await store.set_limit("usd", Decimal("1"))
    await hold_as_hash(store, "a", {"calls": 3, "usd": Decimal("0.25")}, lease_ms=60_000)
    await hold_as_hash(store, "b", {"calls": 2}, lease_ms=60_000)
    await hold_as_hash(store, "c", {"calls": 1}, lease_ms=60_000)
    await hold_as_hash(store, "d", {"usd": Decimal("0.5")}, lease_ms=60_000)
    await store.reserve("new", {"calls": 1}, lease=60)
    assert (await record_of(store, "a"))[0] == "hash"
    assert (await record_of(store, "new"))[0] == "string"
    assert await store.held_reservations() == 5
    holds = {h.rid: h for h in await store.holds()}
    assert {rid: h.amounts for rid, h in holds.items()} == {
        "a": {"calls": 3, "usd": Decimal("0.25")}, "b": {"calls": 2}, "c": {"calls": 1},
        "d": {"usd": Decimal("0.5")}, "new": {"calls": 1}}
    assert all(59 < h.lease_left <= 60 and h.age is not None and 0 <= h.age < 5
               for h in holds.values())
    assert [h.rid for h in await store.holds("usd")] in (["a", "d"], ["d", "a"])
    assert (await store.reserve("a", {"calls": 3, "usd": Decimal("0.25")}, lease=60)).admitted
    calls, usd = await store.usage("calls"), await store.usage("usd")
    assert (calls.held, usd.held) == (7, Decimal("0.75"))  # the retry took nothing more
    # 7 held of 10: room for 3, not 4.
    assert not (await store.reserve("r4", {"calls": 4}, lease=60)).admitted

    assert await store.extend("b", 120) is True
    kind, ttl = await record_of(store, "b")
    assert kind == "string"
    assert ttl > 120_000 + int(store._retain_ms) - 5_000
    assert {h.rid: h.lease_left for h in await store.holds()}["b"] > 115
    assert await store.commit("a", {"usd": Decimal("0.2")}) is True
    assert await store.commit("a") is False  # once
    kind, ttl = await record_of(store, "a")
    assert kind == "string"
    assert int(store._retain_ms) - 5_000 < ttl <= int(store._retain_ms)
    assert await store.commit("b") is True  # held since its extend in the new form
    assert await store.release("c") is True
    assert await store.release("c") is False
    assert await store.extend("c", 60) is False
    assert await store.release("d") is True
    assert await store.commit("d") is False
    calls, usd = await store.usage("calls"), await store.usage("usd")
    assert (calls.spent, calls.held, usd.spent, usd.held) == (5, 1, Decimal("0.2"), 0)
    p = "{" + store.namespace + "}:"
    assert (await layout(store, "calls"))[1] == ["1:new"]
    assert await raw(store, "EXISTS", p + "z:usd") == 0  # no hold left: the set is gone
    assert await store.held_reservations() == 1
    with pytest.raises(ReservationError, match="already ended"):
        await store.reserve("a", {"calls": 1}, lease=60)


async def test_ended_reservation_hashes_of_the_earlier_version_stay_ended(
    store: RedisStore,
) -> None:
    """A reservation hash the previous version committed (every field, ``st`` committed) or
    remembered as released before it was reserved (only ``st``): never held again, never
    counted, and left to expire when it would have (nothing rewrites it)."""
    await store.set_limit("calls", 10)
    p = "{" + store.namespace + "}:"
    retain = int(store._retain_ms)
    await raw(store, "HSET", p + "r:done", "st", "committed", "exp", 1, "at", 1, "n", 1,
              "k1", "calls", "a1", 3, "u1", "i")
    await raw(store, "PEXPIRE", p + "r:done", retain)
    await raw(store, "HSET", p + "r:early", "st", "released")
    await raw(store, "PEXPIRE", p + "r:early", 1_000_000)
    for rid in ("done", "early"):
        with pytest.raises(ReservationError, match="already ended"):
            await store.reserve(rid, {"calls": 1}, lease=60)
        assert await store.commit(rid) is False
        assert await store.release(rid) is False
        assert await store.extend(rid, 60) is False
    assert await store.held_reservations() == 0
    assert await store.holds() == []
    calls = await store.usage("calls")
    assert (calls.spent, calls.held) == (0, 0)
    kind, ttl = await record_of(store, "early")
    assert kind == "hash"
    assert 990_000 < ttl <= 1_000_000


async def test_an_expired_reservation_hash_of_the_earlier_version_counts_once(
    store: RedisStore,
) -> None:
    """An old-form hold whose lease ended is dropped from ``held`` once (by the next reserve),
    is not extended, listed or counted, and a late commit still records its spend once."""
    await store.set_limit("calls", 10)
    await hold_as_hash(store, "gone", {"calls": 7}, lease_ms=1)
    await hold_as_hash(store, "live", {"calls": 2}, lease_ms=60_000)
    await anyio.sleep(0.01)  # past the 1 ms lease on the server's clock
    assert await store.held_reservations() == 1
    assert [h.rid for h in await store.holds()] == ["live"]
    assert await store.extend("gone", 60) is False  # not revived
    assert (await store.reserve("r1", {"calls": 8}, lease=60)).admitted  # 7 gone, 2 live
    assert (await store.usage("calls")).held == 10
    assert await store.commit("gone") is True
    assert await store.commit("gone") is False
    assert await store.release("gone") is False
    calls = await store.usage("calls")
    assert (calls.spent, calls.held) == (7, 10)


async def test_a_reservation_record_keeps_any_limit_name_exactly(store: RedisStore) -> None:
    """The packed record carries names byte for byte: ones with separators, quotes, NUL,
    non-ASCII text and names that look like numbers come back from ``holds()`` and are
    matched by a commit's actual amounts."""
    names = ["a:b", 'q"\\x', "nul\x00byte", "épée/日本", "12", " ", "k1"]
    for name in names:
        await store.set_limit(name, 100)
    await store.reserve("r", {name: i + 1 for i, name in enumerate(names)}, lease=60)
    (hold,) = await store.holds()
    assert hold.amounts == {name: i + 1 for i, name in enumerate(names)}
    assert await store.commit("r", {"nul\x00byte": 0, "épée/日本": 50}) is True
    spent = {name: (await store.usage(name)).spent for name in names}
    assert spent == {**{name: i + 1 for i, name in enumerate(names)},
                     "nul\x00byte": 0, "épée/日本": 50}
    await store.reserve("s", {"a:b": 1}, lease=60)
    with pytest.raises(ValueError, match="does not hold"):
        await store.commit("s", {"a": 1})  # a prefix of a held name is not that name


async def test_a_forgotten_limits_holds_set_counts_for_nothing(store: RedisStore) -> None:
    """Holds left in a holds set whose limit is gone (dropped, expired) must not be taken off
    the new limit's held: that would admit past the cap."""
    p = "{" + store.namespace + "}:"
    for key in ("calls", "made"):
        await raw(store, "ZADD", p + "z:" + key, 1, "5:ghost")  # long expired
    assert (await store.reserve("r1", {"calls": 10}, lease=60, defaults={"calls": 10})).admitted
    await store.set_limit("made", 10)
    assert (await store.reserve("r2", {"made": 10}, lease=60)).admitted
    for key in ("calls", "made"):
        assert not (await store.reserve(f"r3-{key}", {key: 5}, lease=60)).admitted
        assert (await store.usage(key)).held == 10


async def test_holds_sets_stay_in_the_skiplist_encoding(store: RedisStore) -> None:
    """A reserve keeps its limits' holds sets in Redis's skiplist encoding (one member that is
    no hold, scored +inf, longer than a listpack takes), a set an earlier version left as a
    listpack included; that member never counts (not as held, not as a hold of ``holds()``),
    and a set left without holds is deleted, that member with it."""
    p = "{" + store.namespace + "}:"
    await store.set_limit("old", 10)
    await hold_as_hash(store, "h1", {"old": 2}, lease_ms=60_000)  # an earlier version's hold
    # Redis 7 calls the compact encoding listpack, earlier versions ziplist.
    assert await raw(store, "OBJECT", "ENCODING", p + "z:old") in (b"listpack", b"ziplist")
    assert (await store.reserve("r1", {"old": 3, "new": 4}, lease=60,
                                defaults={"new": 10})).admitted
    for key in ("old", "new"):
        assert await raw(store, "OBJECT", "ENCODING", p + "z:" + key) == b"skiplist"
    assert (await store.usage("old")).held == 5
    assert (await store.usage("new")).held == 4
    assert {h.rid for h in await store.holds()} == {"h1", "r1"}
    assert not (await store.reserve("r2", {"old": 6}, lease=60)).admitted  # 5 of 10 held
    assert await store.commit("h1") is True
    assert await store.release("r1") is True
    for key in ("old", "new"):
        assert (await store.usage(key)).held == 0
        assert await raw(store, "EXISTS", p + "z:" + key) == 0
    # A zero hold keeps its set (held 0 is not "no hold"); its end deletes it.
    assert (await store.reserve("r3", {"old": 8, "new": 0}, lease=60)).admitted
    assert (await layout(store, "new"))[1] == ["0:r3"]
    assert not (await store.reserve("r4", {"old": 1}, lease=60)).admitted  # 2 + 8 = cap
    assert await store.commit("r3", {"old": 0}) is True
    assert await raw(store, "EXISTS", p + "z:old", p + "z:new") == 0
    assert (await store.usage("old")).spent == 2
    assert await store.drop_idle_limit("new", idle=0) is True
    assert await raw(store, "EXISTS", p + "l:new") == 0
