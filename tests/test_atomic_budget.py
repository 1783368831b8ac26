"""AtomicBudget: the in-process BudgetGuard, on asyncio and trio."""

from __future__ import annotations

import threading

import anyio
import pytest

from outlay import AtomicBudget, BudgetExceeded, BudgetGuard, BudgetStatistics

pytestmark = pytest.mark.anyio


async def test_implements_budget_guard() -> None:
    budget = AtomicBudget(5)
    assert isinstance(budget, BudgetGuard)
    assert await budget.try_reserve(3) is True
    assert await budget.try_reserve(3) is False  # soft denial: nothing taken
    assert budget.available == 2
    await budget.release(3)
    assert budget.available == 5


async def test_properties_and_utilization() -> None:
    budget = AtomicBudget(8)
    assert (budget.capacity, budget.available, budget.utilization) == (8, 8, 0.0)
    assert budget.try_reserve_nowait(6)
    assert budget.utilization == 0.75
    assert AtomicBudget(0).utilization == 0.0


async def test_release_never_exceeds_capacity() -> None:
    budget = AtomicBudget(4)
    assert budget.try_reserve_nowait(1)
    await budget.release(3)  # more than was held
    assert budget.available == 4


async def test_refill_restores_capacity_and_grants_waiters() -> None:
    budget = AtomicBudget(3)
    assert budget.try_reserve_nowait(3)
    got = anyio.Event()

    async def waiter() -> None:
        await budget.acquire(2)
        got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        budget.refill()
        await got.wait()
    assert budget.available == 1


async def test_zero_cost_is_free() -> None:
    budget = AtomicBudget(0)
    assert budget.try_reserve_nowait(0)
    await budget.acquire(0)
    assert budget.available == 0


@pytest.mark.parametrize(
    ("bad", "error"),
    [(True, TypeError), (1.0, TypeError), ("1", TypeError), (None, TypeError), (-1, ValueError)],
)
async def test_bad_amounts_raise_before_taking_anything(
    bad: object, error: type[Exception]
) -> None:
    budget = AtomicBudget(5)
    with pytest.raises(error):
        budget.try_reserve_nowait(bad)  # type: ignore[arg-type]
    with pytest.raises(error):
        await budget.try_reserve(bad)  # type: ignore[arg-type]
    with pytest.raises(error):
        await budget.acquire(bad)  # type: ignore[arg-type]
    with pytest.raises(error):
        await budget.release(bad)  # type: ignore[arg-type]
    assert budget.statistics() == BudgetStatistics(5, 5, 0, 0, 0, 0, 0)


@pytest.mark.parametrize(("bad", "error"), [(True, TypeError), (2.5, TypeError), (-3, ValueError)])
def test_bad_capacity_is_refused(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        AtomicBudget(bad)  # type: ignore[arg-type]


async def test_acquire_raises_at_once_when_cost_can_never_fit() -> None:
    budget = AtomicBudget(5, name="calls")
    with pytest.raises(BudgetExceeded) as info:
        await budget.acquire(6)
    assert (info.value.key, info.value.requested, info.value.available) == ("calls", 6, 5)
    assert budget.available == 5


async def test_acquire_waits_until_cost_fits() -> None:
    budget = AtomicBudget(3)
    assert budget.try_reserve_nowait(3)
    done = anyio.Event()

    async def waiter() -> None:
        await budget.acquire(2)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        await budget.release(1)
        await anyio.wait_all_tasks_blocked()
        assert not done.is_set()  # 1 available, 2 needed: still waiting
        assert budget.statistics().tasks_waiting == 1
        await budget.release(1)
        await done.wait()
    assert budget.available == 0


async def test_waiters_are_served_in_fifo_order_without_overtaking() -> None:
    budget = AtomicBudget(4)
    assert budget.try_reserve_nowait(4)
    order: list[str] = []

    async def waiter(name: str, cost: int) -> None:
        await budget.acquire(cost)
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "big", 3)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "small", 1)
        await anyio.wait_all_tasks_blocked()
        await budget.release(2)  # 2 available: "small" would fit but must not overtake "big"
        await anyio.wait_all_tasks_blocked()
        assert order == []
        assert not budget.try_reserve_nowait(1)  # nor may a nowait call overtake the queue
        await budget.release(1)  # 3 available: exactly enough for "big"
        await anyio.wait_all_tasks_blocked()
        assert order == ["big"]
        await budget.release(1)
    assert order == ["big", "small"]
    assert budget.available == 0


async def test_cancelling_the_head_waiter_lets_the_next_through() -> None:
    budget = AtomicBudget(4)
    assert budget.try_reserve_nowait(3)
    got_small = anyio.Event()
    big = anyio.CancelScope()

    async def big_waiter() -> None:
        with big:
            await budget.acquire(4)

    async def small() -> None:
        await budget.acquire(1)
        got_small.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(big_waiter)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(small)
        await anyio.wait_all_tasks_blocked()
        assert not got_small.is_set()  # 1 is free, but "small" queues behind "big"
        big.cancel()
        await got_small.wait()
    assert big.cancelled_caught
    assert budget.available == 0
    assert budget.statistics().tasks_waiting == 0


async def test_regression_waiter_cancelled_after_grant_hands_it_on() -> None:
    """Guards against losing a grant: a waiter granted units by ``release`` and cancelled
    before it runs must pass them to the next waiter (anyio ``test_acquire_cancelled``)."""
    budget = AtomicBudget(1)
    assert budget.try_reserve_nowait(1)
    first_scope = anyio.CancelScope()
    second_got = anyio.Event()
    first_outcome: list[str] = []

    async def first() -> None:
        with first_scope:
            async with budget.hold(1):
                first_outcome.append("held")
        if first_scope.cancelled_caught:
            first_outcome.append("cancelled")

    async def second() -> None:
        async with budget.hold(1):
            second_got.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        # One synchronous step: `first` is cancelled (its wake-up is scheduled but it has not
        # run, so it is still the head of the queue) and the release grants it the unit.
        first_scope.cancel()
        budget.release_nowait(1)
        with anyio.fail_after(5):  # a lost grant would leave `second` waiting forever
            await second_got.wait()
        # `first` never held the unit: its grant went on to `second`.
        assert budget.available == 0
        assert budget.statistics().tasks_waiting == 0
        tg.cancel_scope.cancel()
    assert first_outcome == ["cancelled"]
    assert budget.available == 1


async def test_regression_nowait_cannot_slip_between_release_and_woken_waiter() -> None:
    """Guards against a ``*_nowait`` call stealing units that a release meant for a waiter."""
    budget = AtomicBudget(1)
    assert budget.try_reserve_nowait(1)
    got = anyio.Event()

    async def waiter() -> None:
        await budget.acquire(1)
        got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        budget.release_nowait(1)
        # The waiter has not run yet, but the unit is already its own.
        assert budget.try_reserve_nowait(1) is False
        assert await budget.try_reserve(1) is False
        await got.wait()
    assert budget.available == 0


async def test_hold_releases_on_error_and_on_cancellation() -> None:
    budget = AtomicBudget(5)
    with pytest.raises(RuntimeError):
        async with budget.hold(3):
            assert budget.available == 2
            raise RuntimeError("tool failed")
    assert budget.available == 5
    with anyio.CancelScope() as scope:
        async with budget.hold(4):
            scope.cancel()
            await anyio.sleep_forever()
    assert budget.available == 5


async def test_release_from_a_worker_thread_wakes_the_waiter() -> None:
    budget = AtomicBudget(2)
    assert budget.try_reserve_nowait(2)
    got = anyio.Event()

    async def waiter() -> None:
        await budget.acquire(2)
        got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        await anyio.to_thread.run_sync(budget.release_nowait, 2)
        with anyio.fail_after(5):
            await got.wait()
    assert budget.available == 0


async def test_threads_and_tasks_share_one_budget_exactly() -> None:
    budget = AtomicBudget(50)
    holders = 0
    peak = 0
    guard = threading.Lock()

    def take_and_give(rounds: int) -> None:
        nonlocal holders, peak
        for _ in range(rounds):
            if budget.try_reserve_nowait(1):
                with guard:
                    holders += 1
                    peak = max(peak, holders)
                with guard:
                    holders -= 1
                budget.release_nowait(1)

    async def task() -> None:
        nonlocal holders, peak
        for _ in range(200):
            async with budget.hold(1):
                with guard:
                    holders += 1
                    peak = max(peak, holders)
                await anyio.lowlevel.checkpoint()
                with guard:
                    holders -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(anyio.to_thread.run_sync, take_and_give, 2000)
        for _ in range(60):
            tg.start_soon(task)
    assert peak <= 50
    stats = budget.statistics()
    assert stats.available == 50
    assert stats.tasks_waiting == 0
    assert stats.reserved == stats.released


async def test_statistics_is_a_frozen_snapshot() -> None:
    budget = AtomicBudget(10)
    assert budget.try_reserve_nowait(4)
    assert not budget.try_reserve_nowait(7)
    budget.release_nowait(1)
    stats = budget.statistics()
    assert stats == BudgetStatistics(capacity=10, available=7, held=3, tasks_waiting=0,
                                     reserved=1, denied=1, released=1)
    with pytest.raises(AttributeError):
        stats.available = 0  # type: ignore[misc]
