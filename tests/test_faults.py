"""Regression tests for the failures fault injection found (issue 17), one scenario each.

Each test forces its scenario on real parts (a real Redis, in its own namespace; real SQLite
files; a loopback proxy that holds back requests or drops replies) and names the item of
issue 17 it guards in its docstring.
"""

from __future__ import annotations

import asyncio
import decimal
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from outlay import AtomicBudget, Budget, Store, StoreUnavailable
from outlay.stores import MemoryStore, SQLiteStore
from outlay.stores._redis import _SCRIPTS, MAX_UNITS, RedisStore

from .netproxy import Proxy
from .redisserver import RedisServer
from .storekit import REDIS_TEST_DB, STORE_FACTORIES, redis_store_at

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_FACTORIES[request.param](tmp_path, request) as opened:
        yield opened


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    async with redis_store_at(redis_server, period_grace=1) as opened:
        yield opened


async def raw(store: RedisStore, *command: str | int) -> object:
    """Run one Redis command on the store's own client (on its bridge loop under trio)."""

    async def run() -> object:
        return await store.client.execute_command(*command)

    return await store._call(run)


# -- 1-6: spend lost or counted wrong --------------------------------------------------------


async def test_commit_with_unknown_outcome_is_never_released(
    redis_server: RedisServer, redis_store: RedisStore
) -> None:
    """Item 1: every attempt of a commit is delayed past the client's timeout, so ``commit``
    raises ``StoreUnavailable``; ``async with`` must not then release the hold, because the
    delayed commit reaches Redis afterwards and must still count."""
    with Proxy(redis_server.host, redis_server.port) as proxy:
        url = (f"redis://127.0.0.1:{proxy.port}/{REDIS_TEST_DB}?socket_timeout=0.3"
               "&socket_connect_timeout=2")
        slow = RedisStore.from_url(url, namespace=redis_store.namespace)
        try:
            budget = Budget(slow)
            await budget.set_limit("usd", Decimal("10"))
            commit_sha = _SCRIPTS["commit"].sha.encode()
            with pytest.raises(StoreUnavailable):
                async with budget.reserve({"usd": Decimal("1")}) as reservation:
                    proxy.hold_when(lambda chunk: commit_sha in chunk)
                    await reservation.commit({"usd": Decimal("2")})
            proxy.hold_when(None)
            assert reservation.state == "held"  # neither committed nor released, as far as known
            assert proxy.flush() >= 1  # the delayed commits reach Redis now
        finally:
            await slow.aclose()
    usage = await redis_store.usage("usd")
    assert (usage.spent, usage.held) == (Decimal("2"), 0)


async def test_a_shorter_hold_does_not_cut_a_period_limits_expiry(
    redis_store: RedisStore,
) -> None:
    """Item 2: a reserve with a short lease must not move a period limit's expiry in under a
    live hold with a longer lease (the limit would vanish and its spend restart from zero)."""
    budget = Budget(redis_store)
    period_end = {"usd/day": time.time()}  # the period is ending now
    defaults = {"usd/day": Decimal("10")}
    long = await budget.reserve({"usd/day": Decimal("1")}, lease=600, defaults=defaults,
                                expire_at=period_end)
    short = await budget.reserve({"usd/day": Decimal("1")}, lease=1, defaults=defaults,
                                 expire_at=period_end)
    ttl = await raw(redis_store, "PTTL", redis_store._key("l", "usd/day"))
    assert isinstance(ttl, int)
    assert ttl > 590_000  # outlives the long hold, not just the short one
    await short.release()
    await long.commit()
    assert (await budget.usage("usd/day")).spent == Decimal("1")


async def test_a_bad_expire_at_takes_nothing_on_redis(redis_store: RedisStore) -> None:
    """Item 3 (first half): an out-of-range ``expire_at`` is refused before anything is
    written; no hold of 1 is left on the first limit without a reservation record."""
    await redis_store.set_limit("calls", 5)
    with pytest.raises(ValueError, match="expire_at"):
        await redis_store.reserve("r1", {"calls": 1, "day": 1}, lease=60,
                                  defaults={"day": 5}, expire_at={"day": 1e17})
    assert (await redis_store.usage("calls")).held == 0
    assert await raw(redis_store, "EXISTS", redis_store._key("r", "r1")) == 0


async def test_a_commit_that_overflows_a_limit_adds_nothing_anywhere(
    redis_store: RedisStore,
) -> None:
    """Item 3 (second half): a commit whose second limit cannot take the spend (its counter
    would overflow) must not have added spend to the first, nor add it again on retry."""
    await redis_store.set_limit("a", 100)
    await redis_store.set_limit("b", MAX_UNITS)
    assert (await redis_store.reserve("r1", {"a": 1, "b": 0}, lease=60)).admitted
    await raw(redis_store, "HSET", redis_store._key("l", "b"), "spent", str(2**63 - 1))
    for _ in range(2):  # the commit, then its retry
        with pytest.raises(ValueError, match="cannot count"):
            await redis_store.commit("r1", {"a": 1, "b": 1})
    usage = await redis_store.usage("a")
    assert (usage.spent, usage.held) == (0, 1)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_commit_that_raises_changes_nothing(kind: str, tmp_path: Path) -> None:
    """Item 4: a commit that raises (an amount too large to count) must not have subtracted
    the hold already; the release that follows gives it back once, and the cap holds."""
    store: Store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "o.db")
    budget = Budget(store)
    try:
        await budget.set_limit("usd", Decimal("10"))
        with pytest.raises(ValueError, match="too large"):
            async with budget.reserve({"usd": Decimal("1")}) as reservation:
                await reservation.commit({"usd": Decimal("1E+9999999")})
        usage = await budget.usage("usd")
        assert (usage.spent, usage.held) == (0, 0)
        assert await budget.try_reserve({"usd": Decimal("10.5")}) is None
    finally:
        await store.aclose()


async def test_admission_ignores_the_callers_decimal_context(store: Store) -> None:
    """Item 5: under ``decimal.localcontext(prec=4)`` 999.99 is recorded as 999.99 (not 1000),
    no phantom hold is left, and the 0.01 that remains is all that can still be admitted."""
    budget = Budget(store)
    await budget.set_limit("usd", Decimal("1000"))
    with decimal.localcontext() as context:
        context.prec = 4
        async with budget.reserve({"usd": Decimal("999.99")}) as reservation:
            await reservation.commit()
        usage = await budget.usage("usd")
        assert (usage.spent, usage.held) == (Decimal("999.99"), 0)
        assert usage.available == Decimal("0.01")
        assert await budget.try_reserve({"usd": Decimal("0.02")}) is None
        last = await budget.try_reserve({"usd": Decimal("0.01")})
        assert last is not None
        await last.release()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_native_cancel_right_after_an_uncontended_grant_gives_it_back() -> None:
    """Item 6: ``Task.cancel()`` landing on the shielded checkpoint right after an uncontended
    grant (anyio #398: a native cancel passes it) must give the unit back."""
    budget = AtomicBudget(1)
    task = asyncio.get_running_loop().create_task(budget.reserve(1))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.available == 1
    assert budget.statistics().reserved == 0
