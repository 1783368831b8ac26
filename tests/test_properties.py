"""Property-based tests: the accounting invariants hold for any sequence of operations."""

from __future__ import annotations

import gc
import warnings
from decimal import Decimal

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from outlay import AtomicBudget, AtomicTokenBudget, MemoryStore, ReservationError, TokenReservation
from outlay.testing import FakeClock

CAPS: dict[str, int | Decimal] = {"calls": 10, "usd": Decimal("1.00")}


amounts_st = st.fixed_dictionaries(
    {},
    optional={
        "calls": st.integers(0, 6),
        "usd": st.decimals(min_value=0, max_value=Decimal("0.70"), places=2),
    },
).filter(bool)


class StoreMachine(RuleBasedStateMachine):
    """MemoryStore against a model: holds, leases on a fake clock, commits, releases."""

    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = MemoryStore(clock=self.clock)
        for key, cap in CAPS.items():
            self.store.set_limit_nowait(key, cap)
        self.spent: dict[str, int | Decimal] = {"calls": 0, "usd": Decimal(0)}
        self.holds: dict[str, tuple[dict[str, int | Decimal], float]] = {}
        self.expired: dict[str, dict[str, int | Decimal]] = {}
        self.counter = 0

    def _expire(self) -> None:
        for rid, (amounts, expires_at) in list(self.holds.items()):
            if expires_at <= self.clock.now:
                del self.holds[rid]
                self.expired[rid] = amounts

    def _held(self, key: str) -> int | Decimal:
        total: int | Decimal = 0 if key == "calls" else Decimal(0)
        for amounts, _ in self.holds.values():
            total += amounts.get(key, 0)
        return total

    @rule(target=reservations, amounts=amounts_st, lease=st.integers(1, 20))
    def reserve(self, amounts: dict[str, int | Decimal], lease: int) -> str:
        self._expire()
        self.counter += 1
        rid = f"r{self.counter}"
        fits = all(self.spent[k] + self._held(k) + v <= CAPS[k] for k, v in amounts.items())
        admission = self.store.reserve_nowait(rid, amounts, lease=lease)
        assert admission.admitted == fits
        if fits:
            self.holds[rid] = (dict(amounts), self.clock.now + lease)
        return rid

    @rule(rid=consumes(reservations), scale=st.sampled_from(["none", "under", "over"]))
    def commit(self, rid: str, scale: str) -> None:
        self._expire()
        amounts = self.holds.pop(rid, (None, 0.0))[0] or self.expired.pop(rid, None)
        if amounts is None:  # refused, or already ended
            with pytest.raises(ReservationError):
                self.store.commit_nowait(rid)
            return
        factor = {"none": None, "under": Decimal("0.5"), "over": 2}[scale]
        actual = None if factor is None else {
            k: (v * 2 if factor == 2 else (v // 2 if isinstance(v, int) else v * factor))
            for k, v in amounts.items()
        }
        assert self.store.commit_nowait(rid, actual) is True
        for key, value in (actual or amounts).items():
            self.spent[key] += value

    @rule(rid=consumes(reservations))
    def release(self, rid: str) -> None:
        self._expire()
        was_held = self.holds.pop(rid, None) is not None
        self.expired.pop(rid, None)
        assert self.store.release_nowait(rid) is was_held

    @rule(seconds=st.integers(1, 15))
    def advance_clock(self, seconds: int) -> None:
        self.clock.now += seconds

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data(), lease=st.integers(1, 20))
    def extend(self, data: st.DataObject, lease: int) -> None:
        self._expire()
        if not self.holds:
            return
        rid = data.draw(st.sampled_from(sorted(self.holds)))
        assert self.store.extend_nowait(rid, lease)
        self.holds[rid] = (self.holds[rid][0], self.clock.now + lease)

    @invariant()
    def matches_model(self) -> None:
        self._expire()
        for key, cap in CAPS.items():
            usage = self.store.usage_nowait(key)
            assert usage.spent == self.spent[key]
            assert usage.held == self._held(key)
            # Admissions never over-commit: holds fit into what spend left when they were made.
            assert usage.held <= cap
            assert usage.available == max(cap - usage.spent - usage.held, 0)

    def teardown(self) -> None:
        for rid in list(self.holds):
            self.store.release_nowait(rid)
        for key in CAPS:
            assert self.store.usage_nowait(key).held == 0
        assert self.store.held_reservations_nowait() == 0


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=75, stateful_step_count=30, deadline=None)


class AtomicBudgetMachine(RuleBasedStateMachine):
    """AtomicBudget's non-waiting surface against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.budget = AtomicBudget(12)
        self.available = 12
        self.held: list[int] = []

    @rule(cost=st.integers(0, 8))
    def try_reserve(self, cost: int) -> None:
        admitted = self.budget.try_reserve_nowait(cost)
        assert admitted == (cost <= self.available)
        if admitted:
            self.available -= cost
            self.held.append(cost)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        cost = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        self.budget.release_nowait(cost)
        self.available += cost

    @invariant()
    def counts_match(self) -> None:
        stats = self.budget.statistics()
        assert stats.available == self.available == 12 - sum(self.held)
        assert 0 <= stats.available <= stats.capacity


TestAtomicBudgetMachine = AtomicBudgetMachine.TestCase
TestAtomicBudgetMachine.settings = settings(max_examples=50, stateful_step_count=30,
                                           deadline=None)

token_op = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 400)),
    st.tuples(st.just("record"), st.integers(0, 50), st.integers(0, 300), st.integers(0, 300)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("cancel"), st.integers(0, 400)),
    st.tuples(st.just("drop"), st.integers(0, 50)),
)


@pytest.mark.anyio
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(token_op, max_size=30))
async def test_token_budget_accounts_for_everything(
    anyio_backend: str, ops: list[tuple[object, ...]]
) -> None:
    capacity = 1000
    budget = AtomicTokenBudget(capacity)
    open_: list[TokenReservation] = []
    consumed = 0
    for op in ops:
        held = sum(r.estimate for r in open_)
        if op[0] == "reserve":
            estimate = int(op[1])  # type: ignore[call-overload]
            reservation = await budget.try_reserve_tokens(estimate)
            # Admitted exactly when spent + held + estimate fits the capacity.
            assert (reservation is not None) == (consumed + held + estimate <= capacity)
            if reservation is not None:
                open_.append(reservation)
        elif op[0] == "cancel":
            estimate = int(op[1])  # type: ignore[call-overload]
            with anyio.CancelScope() as scope:
                async with budget.reserve_tokens(estimate) if (
                    consumed + held + estimate <= capacity
                ) else _nothing():
                    scope.cancel()
                    await anyio.sleep_forever()
        elif open_:
            reservation = open_.pop(int(op[1]) % len(open_))  # type: ignore[call-overload]
            if op[0] == "record":
                prompt, completion = int(op[2]), int(op[3])  # type: ignore[call-overload]
                await budget.record_usage(reservation, prompt, completion)
                consumed += prompt + completion
                with pytest.raises(ReservationError):
                    await budget.record_usage(reservation, prompt, completion)
            elif op[0] == "release":
                await reservation.release()
            else:  # drop: garbage-collected without being ended
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    del reservation
                    gc.collect()
                assert any(issubclass(w.category, ResourceWarning) for w in caught)
        assert budget.held == sum(r.estimate for r in open_)
        assert await budget.tokens_consumed() == consumed
        assert budget.available == max(capacity - consumed - budget.held, 0)
    for reservation in open_:
        await reservation.release()
    assert budget.held == 0
    assert await budget.tokens_consumed() == consumed


class _nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None
