"""Stress: many tasks, a few threads and random cancellation on one budget."""

from __future__ import annotations

import random
import threading

import anyio
import pytest

from outlay import AtomicBudget, AtomicTokenBudget

pytestmark = pytest.mark.anyio


async def test_atomic_budget_under_tasks_threads_and_cancellation() -> None:
    capacity = 20
    budget = AtomicBudget(capacity)
    rng = random.Random(20261123)
    in_use = 0
    peak = 0
    guard = threading.Lock()

    def enter(cost: int) -> None:
        nonlocal in_use, peak
        with guard:
            in_use += cost
            peak = max(peak, in_use)

    def leave(cost: int) -> None:
        nonlocal in_use
        with guard:
            in_use -= cost

    def thread_worker(seed: int) -> None:
        local = random.Random(seed)
        for _ in range(3000):
            cost = local.randint(1, 5)
            if budget.try_reserve_nowait(cost):
                enter(cost)
                leave(cost)
                budget.release_nowait(cost)

    async def task_worker(cost: int, cancel_after: int | None) -> None:
        with anyio.CancelScope() as scope:
            if cancel_after == 0:
                scope.cancel()  # cancelled before it even queues
            async with budget.hold(cost):
                enter(cost)
                try:
                    for step in range(3):
                        if cancel_after is not None and step == cancel_after:
                            scope.cancel()
                        await anyio.lowlevel.checkpoint()
                finally:
                    leave(cost)

    async def canceller(scopes: list[anyio.CancelScope]) -> None:
        # Cancels waiting tasks at random points, while they are queued or just granted.
        for scope in scopes:
            await anyio.lowlevel.checkpoint()
            scope.cancel()

    async with anyio.create_task_group() as tg:
        for seed in range(3):
            tg.start_soon(anyio.to_thread.run_sync, thread_worker, seed)
        victims: list[anyio.CancelScope] = []
        for _ in range(600):
            cost = rng.randint(1, capacity)
            roll = rng.random()
            if roll < 0.2:
                scope = anyio.CancelScope()
                victims.append(scope)

                async def cancellable(cost: int = cost, scope: anyio.CancelScope = scope) -> None:
                    with scope:
                        await task_worker(cost, None)

                tg.start_soon(cancellable)
            else:
                tg.start_soon(task_worker, cost, rng.choice([None, None, 0, 1, 2]))
        tg.start_soon(canceller, victims)
    assert peak <= capacity
    stats = budget.statistics()
    assert stats.available == capacity
    assert stats.tasks_waiting == 0
    assert in_use == 0


async def test_token_budget_under_tasks_threads_and_cancellation() -> None:
    capacity = 50_000
    budget = AtomicTokenBudget(capacity)
    rng = random.Random(7)
    recorded = 0
    guard = threading.Lock()

    def record_in_thread(estimate: int, actual: int) -> None:
        nonlocal recorded
        reservation = budget.try_reserve_tokens_nowait(estimate)
        if reservation is None:
            return
        anyio.from_thread.run(budget.record_usage, reservation, actual, 0)
        with guard:
            recorded += actual

    async def call_model(estimate: int, actual: int, cancel: bool) -> None:
        nonlocal recorded
        with anyio.CancelScope() as scope:
            reservation = await budget.try_reserve_tokens(estimate)
            if reservation is None:
                return
            async with reservation:
                if cancel:
                    scope.cancel()
                await anyio.lowlevel.checkpoint()
                await budget.record_usage(reservation, actual // 2, actual - actual // 2)
                with guard:
                    recorded += actual

    async with anyio.create_task_group() as tg:
        for _ in range(400):
            estimate = rng.randint(50, 400)
            actual = rng.randint(0, 500)
            if rng.random() < 0.1:
                tg.start_soon(anyio.to_thread.run_sync, record_in_thread, estimate, actual)
            else:
                tg.start_soon(call_model, estimate, actual, rng.random() < 0.25)
    assert budget.held == 0
    assert await budget.tokens_consumed() == recorded
    assert budget.available == max(capacity - recorded, 0)
