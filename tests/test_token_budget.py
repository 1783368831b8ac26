"""AtomicTokenBudget: hold an estimate, reconcile against reported usage."""

from __future__ import annotations

import gc

import anyio
import pytest

from outlay import (
    AtomicTokenBudget,
    BudgetExceeded,
    ReservationError,
    TokenBudget,
    TokenReservation,
)

pytestmark = pytest.mark.anyio


async def test_implements_token_budget() -> None:
    assert isinstance(AtomicTokenBudget(10), TokenBudget)


async def test_over_estimate_is_refunded() -> None:
    budget = AtomicTokenBudget(1000)
    reservation = await budget.try_reserve_tokens(600)
    assert reservation is not None
    assert reservation.estimate == 600
    assert budget.available == 400
    await budget.record_usage(reservation, prompt=200, completion=150)
    assert await budget.tokens_consumed() == 350
    assert budget.available == 650
    assert budget.held == 0


async def test_overage_is_debited_but_never_below_zero() -> None:
    budget = AtomicTokenBudget(1000)
    first = await budget.try_reserve_tokens(500)
    second = await budget.try_reserve_tokens(400)
    assert first is not None
    assert second is not None
    await budget.record_usage(first, prompt=500, completion=300)  # 300 over its estimate
    assert budget.available == 0  # 1000 - 800 spent - 400 held < 0 -> floored
    await budget.record_usage(second, prompt=100, completion=0)
    assert await budget.tokens_consumed() == 900
    assert budget.available == 100
    third = await budget.try_reserve_tokens(100)
    assert third is not None
    await budget.record_usage(third, prompt=400, completion=400)
    assert await budget.tokens_consumed() == 1700  # the whole actual counts
    assert budget.available == 0
    assert await budget.try_reserve_tokens(1) is None


async def test_denied_when_estimate_does_not_fit() -> None:
    budget = AtomicTokenBudget(100)
    held = await budget.try_reserve_tokens(80)
    assert held is not None
    assert await budget.try_reserve_tokens(21) is None
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve_tokens(21)
    assert info.value.requested == 21
    assert info.value.available == 20
    await held.release()


async def test_recording_twice_raises_and_counts_once() -> None:
    budget = AtomicTokenBudget(100)
    reservation = await budget.try_reserve_tokens(10)
    assert reservation is not None
    await budget.record_usage(reservation, 5, 5)
    with pytest.raises(ReservationError):
        await budget.record_usage(reservation, 5, 5)
    with pytest.raises(ReservationError):
        await reservation.release()
    assert await budget.tokens_consumed() == 10


async def test_reservation_from_another_budget_is_refused() -> None:
    ours, theirs = AtomicTokenBudget(100), AtomicTokenBudget(100)
    foreign = await theirs.try_reserve_tokens(10)
    assert foreign is not None
    with pytest.raises(ReservationError):
        await ours.record_usage(foreign, 5, 5)
    assert await ours.tokens_consumed() == 0
    assert theirs.held == 10  # untouched, still recordable by its owner
    await theirs.record_usage(foreign, 1, 1)
    assert await theirs.tokens_consumed() == 2


@pytest.mark.parametrize(("prompt", "completion", "error"),
                         [(-1, 0, ValueError), (1.5, 0, TypeError), (0, True, TypeError)])
async def test_bad_usage_is_refused_and_reservation_stays_open(
    prompt: object, completion: object, error: type[Exception]
) -> None:
    budget = AtomicTokenBudget(100)
    reservation = await budget.try_reserve_tokens(10)
    assert reservation is not None
    with pytest.raises(error):
        await budget.record_usage(reservation, prompt, completion)  # type: ignore[arg-type]
    assert not reservation.ended
    await budget.record_usage(reservation, 3, 4)
    assert await budget.tokens_consumed() == 7


@pytest.mark.parametrize(("bad", "error"), [(-5, ValueError), (2.0, TypeError), (False, TypeError)])
async def test_bad_estimate_takes_nothing(bad: object, error: type[Exception]) -> None:
    budget = AtomicTokenBudget(100)
    with pytest.raises(error):
        await budget.try_reserve_tokens(bad)  # type: ignore[arg-type]
    assert budget.available == 100


async def test_async_with_refunds_unless_recorded() -> None:
    budget = AtomicTokenBudget(100)
    with pytest.raises(RuntimeError):
        async with budget.reserve_tokens(40) as reservation:
            assert budget.held == 40
            raise RuntimeError("model call failed")
    assert reservation.state == "released"
    assert budget.available == 100
    async with budget.reserve_tokens(40) as reservation:
        await budget.record_usage(reservation, 10, 20)
    assert (budget.available, await budget.tokens_consumed()) == (70, 30)
    maybe = await budget.try_reserve_tokens(10)
    assert maybe is not None
    async with maybe:  # a reservation is itself an async context manager
        pass
    assert budget.available == 70


async def test_async_with_refunds_on_cancellation() -> None:
    budget = AtomicTokenBudget(100)
    with anyio.CancelScope() as scope:
        async with budget.reserve_tokens(60):
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert budget.available == 100


async def test_garbage_collected_reservation_refunds_with_resource_warning() -> None:
    budget = AtomicTokenBudget(100)
    reservation = await budget.try_reserve_tokens(30)
    assert isinstance(reservation, TokenReservation)
    assert budget.available == 70
    with pytest.warns(ResourceWarning, match="garbage-collected"):
        del reservation
        gc.collect()
    assert budget.available == 100
    assert await budget.tokens_consumed() == 0
