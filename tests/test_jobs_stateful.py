"""Property test: jobs keep the budget exact under any sequence of submits, claims, heartbeats,
completions (fresh and stale), failures, lease expiries and recoveries.

Invariants after every step (memory store, a clock the test moves):
- ``held`` is exactly the worst cases of the jobs whose hold is open (queued, leased,
  settling), and ``spent`` exactly the actual costs of the completed jobs;
- ``spent + held <= cap`` (actual costs never exceed the worst case here);
- a job completes at most once, never runs past ``max_attempts``, and a failed job has
  used all its attempts or failed for good on purpose.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal

import anyio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from outlay import BudgetExceeded, Claim, JobQueue, LimitSpec, MemoryStore, Principals, Window

CAP = Decimal("10")
LEASE = 10.0
cents = st.integers(min_value=1, max_value=400).map(lambda n: Decimal(n) / 100)


class Jobs(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.store = MemoryStore(clock=lambda: self.now)
        self.budget = Principals(self.store, template=[LimitSpec("usd", Window.month(), CAP)]
                                 ).get("team:t")
        self.queue = JobQueue(self.store, budget=self.budget, lease=LEASE, hold_grace=1000,
                              max_attempts=2)
        self.claims: list[Claim] = []
        self.latest: dict[str, str] = {}  # job id -> token of its newest claim
        self.completions: dict[str, int] = {}
        self.failed_on_purpose: set[str] = set()

    @rule(worst=cents)
    def submit(self, worst: Decimal) -> None:
        async def go() -> None:
            with contextlib.suppress(BudgetExceeded):  # refused: nothing stored or held
                await self.queue.submit({}, cost={"usd": worst})

        anyio.run(go)

    @rule()
    def claim(self) -> None:
        claim = anyio.run(self.queue.claim, ["default"])
        if claim is not None:
            self.claims.append(claim)
            self.latest[claim.job.id] = claim.token

    def holds_lease(self, claim: Claim) -> bool:
        """Whether ``claim`` should still be honoured: the job is leased, to this claim."""
        job = anyio.run(self.queue.get, claim.job.id)
        return job.state == "leased" and self.latest[job.id] == claim.token

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 1000), fraction=st.integers(0, 100))
    def complete(self, pick: int, fraction: int) -> None:
        claim = self.claims[pick % len(self.claims)]
        actual = Decimal(claim.job.cost["usd"]) * fraction / 100
        expected = self.holds_lease(claim)
        applied = anyio.run(claim.complete, None, {"usd": actual})
        assert applied == expected  # a stale completion is refused, a live one applied
        if applied:
            self.completions[claim.job.id] = self.completions.get(claim.job.id, 0) + 1

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 1000), retry=st.booleans())
    def fail(self, pick: int, retry: bool) -> None:
        claim = self.claims[pick % len(self.claims)]

        async def go() -> bool:
            return await claim.fail("boom", retry=retry)

        expected = self.holds_lease(claim)
        applied = anyio.run(go)
        assert applied == expected
        if applied and not retry:
            self.failed_on_purpose.add(claim.job.id)

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 1000))
    def heartbeat(self, pick: int) -> None:
        claim = self.claims[pick % len(self.claims)]
        expected = self.holds_lease(claim)
        assert anyio.run(claim.heartbeat) == expected

    @rule(seconds=st.sampled_from([1.0, 5.0, 11.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def recover(self) -> None:
        anyio.run(self.queue.recover)

    @invariant()
    def the_budget_follows_the_jobs(self) -> None:
        jobs = anyio.run(self.queue.jobs)
        limits = self.store.limits_nowait()
        usd = limits[0] if limits else None
        held = sum((job.cost["usd"] for job in jobs if job.holding), Decimal(0))
        spent = sum((job.actual["usd"] for job in jobs
                     if job.state == "completed" and job.actual), Decimal(0))
        if usd is None:
            assert held == spent == 0
            return
        assert (usd.held, usd.spent) == (held, spent)
        assert usd.spent + usd.held <= CAP
        for job in jobs:
            assert self.completions.get(job.id, 0) == (1 if job.state == "completed" else 0)
            assert job.attempts <= job.max_attempts
            assert job.state != "settling"  # settling never outlives a step here
            if job.state == "failed":
                assert job.attempts == job.max_attempts or job.id in self.failed_on_purpose


TestJobs = Jobs.TestCase
TestJobs.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
