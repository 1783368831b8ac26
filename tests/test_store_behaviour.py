"""One behavioural suite, run against every store in ``storekit.STORE_FACTORIES``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from outlay import BudgetExceeded, KeyedBudget, ReservationError, Store, UnknownLimit

from .loops import every_loop  # noqa: F401 - anyio_backend: asyncio, trio and uvloop
from .storekit import STORE_FACTORIES

#: A real lease on the store's own clock (Redis and PostgreSQL: the server's), long enough that
#: a loaded machine still reads and writes within it (0.05 s failed there), and how long to wait
#: for it to be over.
SHORT_LEASE = 0.4
PAST_LEASE = 0.6

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_FACTORIES[request.param](tmp_path, request) as opened:
        yield opened


def rid() -> str:
    return uuid.uuid4().hex


async def test_reserve_commit_and_usage(store: Store) -> None:
    await store.set_limit("calls", 10)
    admission = await store.reserve("r1", {"calls": 4}, lease=60)
    assert admission.admitted
    usage = await store.usage("calls")
    assert (usage.cap, usage.spent, usage.held, usage.available) == (10, 0, 4, 6)
    assert await store.commit("r1", {"calls": 3}) is True
    usage = await store.usage("calls")
    assert (usage.spent, usage.held, usage.available) == (3, 0, 7)


async def test_refusal_names_the_limit_and_takes_nothing(store: Store) -> None:
    await store.set_limit("a", 10)
    await store.set_limit("b", 5)
    assert (await store.reserve("r1", {"a": 3, "b": 3}, lease=60)).admitted
    refused = await store.reserve("r2", {"a": 3, "b": 3}, lease=60)
    assert not refused.admitted
    assert refused.refused is not None
    assert refused.refused.key == "b"
    assert refused.requested == 3
    assert (await store.usage("a")).held == 3  # all-or-nothing: "a" had room, took nothing
    assert (await store.usage("b")).held == 3


async def test_money_is_exact_decimal(store: Store) -> None:
    await store.set_limit("usd", Decimal("0.30"))
    for n in range(3):
        assert (await store.reserve(f"r{n}", {"usd": Decimal("0.10")}, lease=60)).admitted
    assert not (await store.reserve("r4", {"usd": Decimal("0.01")}, lease=60)).admitted
    for n in range(3):
        await store.commit(f"r{n}", {"usd": Decimal("0.1")})
    usage = await store.usage("usd")
    assert usage.spent == Decimal("0.30")
    assert usage.available == 0


async def test_overshoot_is_recorded_and_available_floors_at_zero(store: Store) -> None:
    await store.set_limit("tokens", 100)
    assert (await store.reserve("r1", {"tokens": 80}, lease=60)).admitted
    await store.commit("r1", {"tokens": 130})
    usage = await store.usage("tokens")
    assert (usage.spent, usage.held, usage.available) == (130, 0, 0)


async def test_commit_without_actual_settles_at_hold(store: Store) -> None:
    await store.set_limit("t", 10)
    await store.set_limit("u", Decimal(1))
    await store.reserve("r1", {"t": 4, "u": Decimal("0.5")}, lease=60)
    await store.commit("r1", {"t": 2})  # "u" left out: settles at its held amount
    assert (await store.usage("t")).spent == 2
    assert (await store.usage("u")).spent == Decimal("0.5")


async def test_endings_are_idempotent_by_id(store: Store) -> None:
    await store.set_limit("calls", 10)
    await store.reserve("r1", {"calls": 4}, lease=60)
    assert await store.commit("r1", {"calls": 4}) is True
    assert await store.commit("r1", {"calls": 4}) is False  # a retried commit counts once
    assert await store.release("r1") is False
    assert (await store.usage("calls")).spent == 4
    await store.reserve("r2", {"calls": 2}, lease=60)
    assert await store.release("r2") is True
    assert await store.release("r2") is False
    assert (await store.usage("calls")).held == 0


async def test_retried_reserve_is_admitted_once(store: Store) -> None:
    await store.set_limit("calls", 5)
    assert (await store.reserve("r1", {"calls": 4}, lease=60)).admitted
    assert (await store.reserve("r1", {"calls": 4}, lease=60)).admitted
    assert (await store.usage("calls")).held == 4


async def test_reserving_an_ended_id_is_refused(store: Store) -> None:
    await store.set_limit("calls", 5)
    await store.reserve("r1", {"calls": 1}, lease=60)
    await store.commit("r1")
    with pytest.raises(ReservationError):
        await store.reserve("r1", {"calls": 1}, lease=60)


async def test_commit_of_unknown_id_raises(store: Store) -> None:
    with pytest.raises(ReservationError):
        await store.commit("never-reserved")


async def test_unknown_limit_raises_and_defaults_create_it(store: Store) -> None:
    with pytest.raises(UnknownLimit):
        await store.reserve("r1", {"nope": 1}, lease=60)
    with pytest.raises(UnknownLimit):
        await store.usage("nope")
    admission = await store.reserve("r2", {"usd/month:2026-11": Decimal("1")}, lease=60,
                                    defaults={"usd/month:2026-11": Decimal("5")})
    assert admission.admitted
    usage = await store.usage("usd/month:2026-11")
    assert (usage.cap, usage.held) == (Decimal("5"), Decimal("1"))


async def test_refused_reservation_does_not_create_limits(store: Store) -> None:
    await store.set_limit("a", 1)
    refused = await store.reserve("r1", {"fresh": 1, "a": 2}, lease=60, defaults={"fresh": 5})
    assert not refused.admitted
    with pytest.raises(UnknownLimit):
        await store.usage("fresh")


async def test_decimal_amount_on_integer_limit_is_refused(store: Store) -> None:
    await store.set_limit("calls", 5)
    with pytest.raises(TypeError):
        await store.reserve("r1", {"calls": Decimal("1.5")}, lease=60)
    assert (await store.usage("calls")).held == 0


async def test_expired_hold_stops_counting_and_late_commit_still_counts(store: Store) -> None:
    await store.set_limit("calls", 5)
    assert (await store.reserve("r1", {"calls": 5}, lease=SHORT_LEASE)).admitted
    assert not (await store.reserve("r2", {"calls": 1}, lease=60)).admitted
    await anyio.sleep(PAST_LEASE)
    assert (await store.usage("calls")).held == 0
    assert (await store.reserve("r3", {"calls": 1}, lease=60)).admitted
    assert await store.extend("r1", 60) is False  # an expired hold is not revived
    assert await store.commit("r1", {"calls": 2}) is True  # the spend still counts
    usage = await store.usage("calls")
    assert (usage.spent, usage.held) == (2, 1)


async def test_extend_keeps_a_hold_alive(store: Store) -> None:
    await store.set_limit("calls", 5)
    await store.reserve("r1", {"calls": 5}, lease=SHORT_LEASE)
    assert await store.extend("r1", 60) is True
    await anyio.sleep(PAST_LEASE)
    assert (await store.usage("calls")).held == 5


async def test_budget_over_store_refuses_with_reason(store: Store) -> None:
    budget = KeyedBudget(store)
    await budget.set_limit("run/usd", Decimal("1.00"))
    async with budget.reserve({"run/usd": Decimal("0.75")}) as held:
        with pytest.raises(BudgetExceeded) as info:
            await budget.reserve({"run/usd": Decimal("0.50")})
        assert info.value.key == "run/usd"
        assert info.value.available == Decimal("0.25")
        assert info.value.requested == Decimal("0.50")
        # the refusing limit as the store saw it
        assert (info.value.cap, info.value.spent, info.value.held) == (
            Decimal("1.00"), 0, Decimal("0.75"))
        assert "run/usd" in info.value.reason
        await held.commit({"run/usd": Decimal("0.60")})
    assert (await budget.usage("run/usd")).available == Decimal("0.40")


async def test_concurrent_reservations_never_over_admit(store: Store) -> None:
    await store.set_limit("calls", 7)
    admitted: list[str] = []

    async def one(n: int) -> None:
        if (await store.reserve(f"c{n}", {"calls": 1}, lease=60)).admitted:
            admitted.append(f"c{n}")

    async with anyio.create_task_group() as tg:
        for n in range(40):
            tg.start_soon(one, n)
    assert len(admitted) == 7
    assert (await store.usage("calls")).held == 7


async def test_limits_lists_by_prefix_sorted_with_live_holds(store: Store) -> None:
    assert await store.limits() == []
    await store.set_limit("tenant:b/usd/month:2026-11", Decimal("5"))
    await store.set_limit("tenant:a/tokens/day:2026-11-23", 100)
    await store.set_limit("other", 1)
    await store.reserve("r1", {"tenant:a/tokens/day:2026-11-23": 30}, lease=60)
    await store.reserve("r2", {"tenant:b/usd/month:2026-11": Decimal("2")}, lease=60)
    await store.commit("r2", {"tenant:b/usd/month:2026-11": Decimal("1.5")})
    listed = await store.limits("tenant:")
    assert [u.key for u in listed] == ["tenant:a/tokens/day:2026-11-23",
                                       "tenant:b/usd/month:2026-11"]
    assert (listed[0].cap, listed[0].spent, listed[0].held) == (100, 0, 30)
    assert (listed[1].cap, listed[1].spent, listed[1].held) == (
        Decimal("5"), Decimal("1.5"), Decimal("0"))
    assert [u.key for u in await store.limits()] == [
        "other", "tenant:a/tokens/day:2026-11-23", "tenant:b/usd/month:2026-11"]
    assert await store.limits("nothing-here") == []


async def test_limits_do_not_count_expired_holds(store: Store) -> None:
    await store.set_limit("calls", 5)
    assert (await store.reserve("r1", {"calls": 5}, lease=SHORT_LEASE)).admitted
    assert [u.held for u in await store.limits()] == [5]
    await anyio.sleep(PAST_LEASE)
    assert [(u.key, u.held, u.available) for u in await store.limits()] == [("calls", 0, 5)]


async def test_reset_spend_zeroes_spend_and_keeps_cap_and_holds(store: Store) -> None:
    await store.set_limit("usd", Decimal("10"))
    await store.set_limit("calls", 5)
    await store.reserve("a", {"usd": Decimal("4"), "calls": 2}, lease=60)
    await store.commit("a", {"usd": Decimal("4.125")})
    await store.reserve("b", {"usd": Decimal("3")}, lease=60)
    before = await store.reset_spend("usd")
    assert (before.key, before.cap, before.spent, before.held) == (
        "usd", Decimal("10"), Decimal("4.125"), Decimal("3"))
    after = await store.usage("usd")
    assert (after.cap, after.spent, after.held) == (Decimal("10"), 0, Decimal("3"))
    assert isinstance(after.spent, Decimal)
    assert (await store.usage("calls")).spent == 2  # other limits keep their spend
    assert await store.commit("b") is True  # the live hold still settles normally
    assert (await store.usage("usd")).spent == Decimal("3")
    before = await store.reset_spend("calls")
    assert (before.cap, before.spent, before.held) == (5, 2, 0)
    after = await store.usage("calls")
    assert (after.spent, after.available) == (0, 5)
    assert type(after.spent) is int
    with pytest.raises(UnknownLimit):
        await store.reset_spend("nope")


async def test_reset_spend_does_not_count_expired_holds(store: Store) -> None:
    await store.set_limit("calls", 5)
    await store.reserve("r1", {"calls": 2}, lease=60)
    await store.commit("r1")
    assert (await store.reserve("r2", {"calls": 3}, lease=SHORT_LEASE)).admitted
    await anyio.sleep(PAST_LEASE)
    before = await store.reset_spend("calls")
    assert (before.spent, before.held) == (2, 0)
    assert (await store.reserve("r3", {"calls": 5}, lease=60)).admitted  # all room is back


async def test_held_reservations_counts_live_holds(store: Store) -> None:
    assert await store.held_reservations() == 0
    await store.set_limit("a", 10)
    await store.set_limit("b", 10)
    await store.reserve("r1", {"a": 1, "b": 1}, lease=60)  # one reservation over two limits
    await store.reserve("r2", {"a": 1}, lease=60)
    await store.reserve("r3", {"b": 1}, lease=60)
    assert not (await store.reserve("r4", {"a": 9}, lease=60)).admitted  # refused: no hold
    await store.release("never-reserved")  # an id remembered as released holds nothing
    assert await store.held_reservations() == 3
    await store.commit("r1")
    await store.release("r2")
    assert await store.held_reservations() == 1
    await store.reserve("short", {"a": 1}, lease=SHORT_LEASE)
    assert await store.held_reservations() == 2
    await anyio.sleep(PAST_LEASE)
    assert await store.held_reservations() == 1  # an expired hold is not held
    await store.release("r3")
    assert await store.held_reservations() == 0
