"""KeyedBudget and Reservation: the one primitive, over the in-memory store."""

from __future__ import annotations

import gc
from decimal import Decimal

import anyio
import pytest

from outlay import (
    BudgetExceeded,
    ConfigurationError,
    KeyedBudget,
    MemoryStore,
    ReservationError,
    UnknownLimit,
    store_from_url,
)
from outlay.testing import FakeClock

pytestmark = pytest.mark.anyio


async def make_budget() -> KeyedBudget:
    budget = KeyedBudget()
    await budget.set_limit("run/usd", Decimal("1.00"))
    await budget.set_limit("run/tokens", 1000)
    await budget.set_limit("day/usd", Decimal("0.50"))
    return budget


async def test_reservation_over_several_limits_is_all_or_nothing() -> None:
    budget = await make_budget()
    first = await budget.try_reserve({"run/usd": Decimal("0.40"), "day/usd": Decimal("0.40"),
                                      "run/tokens": 100})
    assert first is not None
    # run/usd has room for 0.40 more, day/usd does not: nothing is taken anywhere.
    assert await budget.try_reserve({"run/usd": Decimal("0.40"), "day/usd": Decimal("0.40"),
                                     "run/tokens": 100}) is None
    assert (await budget.usage("run/usd")).held == Decimal("0.40")
    assert (await budget.usage("run/tokens")).held == 100
    await first.release()
    assert (await budget.usage("day/usd")).held == 0


async def test_commit_records_actual_above_or_below_hold() -> None:
    budget = await make_budget()
    async with budget.reserve({"run/usd": Decimal("0.10"), "run/tokens": 100}) as r:
        await r.commit({"run/usd": Decimal("0.13"), "run/tokens": 80})
    assert r.state == "committed"
    usage = await budget.usage("run/usd")
    assert (usage.spent, usage.held) == (Decimal("0.13"), 0)
    assert (await budget.usage("run/tokens")).spent == 80


async def test_ending_twice_raises_and_counts_once() -> None:
    budget = await make_budget()
    r = await budget.reserve({"run/tokens": 10})
    await r.commit()
    with pytest.raises(ReservationError):
        await r.commit()
    with pytest.raises(ReservationError):
        await r.release()
    assert (await budget.usage("run/tokens")).spent == 10


async def test_concurrent_endings_of_one_handle_count_once() -> None:
    budget = await make_budget()
    r = await budget.reserve({"run/tokens": 10})
    errors: list[BaseException] = []

    async def end(how: str) -> None:
        try:
            await (r.commit() if how == "commit" else r.release())
        except ReservationError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(end, "commit")
        tg.start_soon(end, "release")
        tg.start_soon(end, "commit")
    assert len(errors) == 2
    usage = await budget.usage("run/tokens")
    assert usage.held == 0
    assert usage.spent in (0, 10)
    assert (usage.spent == 10) == (r.state == "committed")


async def test_refused_reserve_raises_with_a_legible_reason() -> None:
    budget = await make_budget()
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve({"run/usd": Decimal("0.20"), "day/usd": Decimal("0.60")})
    assert info.value.key == "day/usd"
    assert info.value.requested == Decimal("0.60")
    assert info.value.available == Decimal("0.50")
    assert "day/usd" in str(info.value)
    assert "cap $0.50" in str(info.value)
    assert (await budget.usage("run/usd")).held == 0


@pytest.mark.parametrize(
    ("amounts", "error"),
    [
        ({"run/usd": 0.1}, TypeError),
        ({"run/usd": Decimal("-0.1")}, ValueError),
        ({"run/usd": Decimal("NaN")}, ValueError),
        ({"run/tokens": Decimal("1")}, TypeError),
        ({"run/tokens": True}, TypeError),
        ({}, TypeError),
        ({"": 1}, TypeError),
    ],
)
async def test_bad_amounts_take_nothing(amounts: dict[str, object], error: type[Exception]) -> None:
    budget = await make_budget()
    with pytest.raises(error):
        await budget.reserve(amounts)  # type: ignore[arg-type]
    for key in ("run/usd", "run/tokens", "day/usd"):
        assert (await budget.usage(key)).held == 0


async def test_bad_caps_and_leases_are_refused() -> None:
    budget = KeyedBudget()
    with pytest.raises(TypeError):
        await budget.set_limit("usd", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        await budget.set_limit("usd", Decimal("-1"))
    with pytest.raises(ValueError, match="lease"):
        KeyedBudget(lease=0)
    await budget.set_limit("calls", 1)
    with pytest.raises(TypeError, match="unit"):
        await budget.set_limit("calls", Decimal("1.5"))
    with pytest.raises(UnknownLimit):
        await budget.reserve({"nope": 1})


async def test_async_with_releases_on_error_and_cancellation() -> None:
    budget = await make_budget()
    with pytest.raises(RuntimeError):
        async with budget.reserve({"run/tokens": 500}):
            raise RuntimeError("boom")
    with anyio.CancelScope() as scope:
        async with budget.reserve({"run/tokens": 500}):
            scope.cancel()
            await anyio.sleep_forever()
    assert (await budget.usage("run/tokens")).held == 0


async def test_garbage_collected_handle_is_released_with_warning() -> None:
    budget = await make_budget()
    r = await budget.reserve({"run/tokens": 300})
    with pytest.warns(ResourceWarning):
        del r
        gc.collect()
    assert (await budget.usage("run/tokens")).held == 0


async def test_lease_expiry_extend_and_late_commit_on_a_fake_clock() -> None:
    clock = FakeClock()
    budget = KeyedBudget(MemoryStore(clock=clock), lease=10)
    await budget.set_limit("calls", 3)
    r = await budget.reserve({"calls": 3})
    clock.now += 9
    await r.extend(10)
    clock.now += 9
    assert (await budget.usage("calls")).held == 3  # extended: still held at t+18
    clock.now += 2
    assert (await budget.usage("calls")).held == 0  # expired at t+19
    with pytest.raises(ReservationError, match="not held"):
        await r.extend(10)
    await r.commit({"calls": 1})  # a late commit still records the spend
    usage = await budget.usage("calls")
    assert (usage.spent, usage.held) == (1, 0)


async def test_cancelled_reserve_leaves_nothing_held() -> None:
    """A task cancelled while the store answers must not leak the hold the store admitted."""

    class SlowStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.admitted = anyio.Event()

        async def reserve(self, rid, amounts, *, lease, defaults=None, expire_at=None):  # type: ignore[no-untyped-def]
            admission = self.reserve_nowait(rid, amounts, lease=lease, defaults=defaults)
            self.admitted.set()
            await anyio.sleep_forever()  # the reply never arrives
            return admission

    store = SlowStore()
    budget = KeyedBudget(store)
    await budget.set_limit("calls", 5)
    async def reserve() -> None:
        await budget.reserve({"calls": 5})

    async with anyio.create_task_group() as tg:
        tg.start_soon(reserve)
        await store.admitted.wait()
        assert (await budget.usage("calls")).held == 5
        tg.cancel_scope.cancel()
    assert (await budget.usage("calls")).held == 0


async def test_ended_ids_are_remembered_boundedly(monkeypatch: pytest.MonkeyPatch) -> None:
    from outlay.stores import _memory

    monkeypatch.setattr(_memory, "ENDED_MEMORY", 3)
    store = MemoryStore()
    await store.set_limit("calls", 100)
    for n in range(5):
        await store.reserve(f"r{n}", {"calls": 1}, lease=60)
        await store.commit(f"r{n}")
    assert await store.commit("r4") is False  # remembered: a retry counts once
    with pytest.raises(ReservationError, match="unknown"):
        await store.commit("r0")  # forgotten after ENDED_MEMORY newer endings
    assert (await store.usage("calls")).spent == 5


async def test_store_from_url() -> None:
    assert isinstance(store_from_url("memory://"), MemoryStore)
    with pytest.raises(ConfigurationError, match="memory://"):
        store_from_url("mysql://db")
    with pytest.raises(ConfigurationError):
        store_from_url("memory")
    with pytest.raises(TypeError):
        KeyedBudget(store=42)  # type: ignore[arg-type]
