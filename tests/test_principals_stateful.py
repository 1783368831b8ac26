"""Property test: nested budgets keep their invariants under any sequence of operations.

Invariants checked after every step, for every limit of a tenant -> users -> agents tree:
``spent + held <= cap`` (commits here never overshoot), and a parent's spent and held are
exactly the sums over its children (only agents reserve), so no child spends past a parent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import anyio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from outlay import LimitSpec, MemoryStore, Principals, Reservation, Window

D = Decimal
NOW = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
cents = st.integers(min_value=0, max_value=400).map(lambda n: D(n) / 100)


class NestedBudgets(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryStore()
        budgets = Principals(self.store, clock=lambda: NOW, run_id="r")
        self.tenant = budgets.get("tenant:t", caps=[LimitSpec("usd", Window.month(), D("10"))])
        self.users = [self.tenant.child(f"user:u{n}", caps=[
            LimitSpec("usd", Window.month(), D("6"))]) for n in range(2)]
        self.agents = [user.child(f"agent:a{n}", caps=[LimitSpec("usd", Window.run(), D("4"))])
                       for user in self.users for n in range(2)]
        self.held: list[Reservation] = []

    @rule(agent=st.integers(0, 3), amount=cents)
    def reserve(self, agent: int, amount: Decimal) -> None:
        async def go() -> Reservation | None:
            return await self.agents[agent].try_reserve({"usd": amount})

        got = anyio.run(go)
        if got is not None:
            self.held.append(got)

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 1000), fraction=st.integers(0, 100))
    def commit(self, pick: int, fraction: int) -> None:
        held = self.held.pop(pick % len(self.held))
        actual = D(held.amounts["usd"]) * fraction / 100
        anyio.run(held.commit, {"usd": actual})

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 1000))
    def release(self, pick: int) -> None:
        anyio.run(self.held.pop(pick % len(self.held)).release)

    @invariant()
    def caps_hold_and_parents_sum_their_children(self) -> None:
        usage = {u.key: u for u in self.store.limits_nowait()}
        for limit in usage.values():
            assert limit.spent + limit.held <= limit.cap

        def figures(key: str) -> tuple[Decimal, Decimal]:
            limit = usage.get(key)
            return (D(0), D(0)) if limit is None else (D(limit.spent), D(limit.held))

        month = "usd/month:2026-11"
        user_figures = []
        for n, user in enumerate(self.users):
            agents = [figures(f"{a.path}/usd/run:r") for a in self.agents[2 * n:2 * n + 2]]
            mine = figures(f"{user.path}/{month}")
            assert mine == (sum(a[0] for a in agents), sum(a[1] for a in agents))
            user_figures.append(mine)
        assert figures(f"tenant:t/{month}") == (sum(u[0] for u in user_figures),
                                                sum(u[1] for u in user_figures))

    def teardown(self) -> None:
        for held in self.held:
            anyio.run(held.release)


TestNestedBudgets = NestedBudgets.TestCase
TestNestedBudgets.settings = settings(max_examples=20, stateful_step_count=20, deadline=None)
