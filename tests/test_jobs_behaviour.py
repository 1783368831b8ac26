"""One behavioural suite for jobs, run against every store in ``storekit.STORE_FACTORIES``
(memory, a real SQLite file, a real Redis namespace and cluster, a real PostgreSQL schema), on
asyncio and trio.

Leases here are real time on each store's own clock (monotonic, wall clock, Redis ``TIME``), so
a test that needs a lease to end waits until the store says it has ended (``recover`` reports
it), never a fixed sleep.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import anyio
import pytest

from outlay import (
    ApprovalHook,
    ApprovalQueue,
    Artifact,
    BudgetExceeded,
    ConfigurationError,
    Job,
    JobEndpoint,
    JobOutcome,
    JobQueue,
    JobRejected,
    LimitSpec,
    LimitUsage,
    LocalTransport,
    MemoryStore,
    Principals,
    Store,
    UnknownJob,
    Window,
    Worker,
    job_cost,
)
from outlay.jobs import ByUnitBudget
from outlay.jobs._store import job_store_for

from .storekit import STORE_FACTORIES

pytestmark = pytest.mark.anyio


class UsageBudget(ByUnitBudget, Protocol):
    """The by-unit budget object, as these tests use it."""

    async def usage(self) -> list[LimitUsage]: ...

CAP = Decimal("10")


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_FACTORIES[request.param](tmp_path, request) as opened:
        yield opened


def budget_on(store: Store) -> UsageBudget:
    principals = Principals(store, template=[LimitSpec("usd", Window.month(), CAP),
                                             LimitSpec("gpu_seconds", Window.month(), 3600)])
    return principals.get("team:ml")


async def usage(budget: UsageBudget) -> dict[str, tuple[object, object]]:
    return {u.key.split("/")[1]: (u.spent, u.held) for u in await budget.usage()}


async def wait_recovered(queue: JobQueue, *, requeued: int = 0, failed: int = 0) -> None:
    """Run ``recover`` until the store reports the expected recoveries (leases run on the
    store's clock, so only the store can say when one has ended)."""
    seen_requeued = seen_failed = 0
    with anyio.fail_after(10):
        while seen_requeued < requeued or seen_failed < failed:
            report = await queue.recover()
            seen_requeued += report.requeued
            seen_failed += report.failed
            await anyio.sleep(0.01)
    assert (seen_requeued, seen_failed) == (requeued, failed)


async def test_submit_holds_the_worst_case_at_once_and_refuses_past_the_cap(
        store: Store) -> None:
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget)
    for n in range(2):
        job = await queue.submit({"n": n}, cost={"usd": Decimal("4"), "gpu_seconds": 600},
                                 lane="gpu")
        assert job.state == "queued"
        assert job.holding
    assert await usage(budget) == {"usd": (0, Decimal("8")), "gpu_seconds": (0, 1200)}
    with pytest.raises(BudgetExceeded) as refused:
        await queue.submit({"n": 2}, cost={"usd": Decimal("4")}, lane="gpu")
    assert refused.value.requested == Decimal("4")
    assert len(await queue.jobs()) == 2  # the refused job was never stored
    assert await usage(budget) == {"usd": (0, Decimal("8")), "gpu_seconds": (0, 1200)}


async def test_bad_input_raises_before_anything_is_held(store: Store) -> None:
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget)
    with pytest.raises(TypeError, match="never float"):
        await queue.submit({}, cost={"usd": 0.5})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="JSON data"):
        await queue.submit({"x": object()}, cost={"usd": Decimal("1")})
    with pytest.raises(ValueError, match="lane"):
        await queue.submit({}, cost={"usd": Decimal("1")}, lane="no spaces")
    with pytest.raises(TypeError, match="non-empty mapping"):
        await queue.submit({}, cost={})
    assert await queue.jobs() == []
    assert await usage(budget) == {"usd": (0, 0), "gpu_seconds": (0, 0)}
    with pytest.raises(UnknownJob):
        await queue.get("nope")


async def test_claims_are_fifo_over_the_lanes_a_worker_serves(store: Store) -> None:
    queue = JobQueue(store, budget=budget_on(store))
    first = await queue.submit("a", cost={"usd": Decimal("1")}, lane="gpu")
    await queue.submit("b", cost={"usd": Decimal("1")}, lane="cpu")
    third = await queue.submit("c", cost={"usd": Decimal("1")}, lane="gpu")
    assert await queue.claim(["tpu"]) is None
    one = await queue.claim(["gpu"])
    two = await queue.claim(["gpu", "tpu"])
    assert one is not None
    assert two is not None
    assert (one.job.id, two.job.id) == (first.id, third.id)
    assert one.job.state == "leased"
    assert one.job.attempts == 1
    assert await queue.claim(["gpu"]) is None
    last = await queue.claim(["cpu", "gpu"])
    assert last is not None
    assert last.job.payload == "b"


async def test_two_workers_never_claim_the_same_job(store: Store) -> None:
    queue = JobQueue(store, budget=budget_on(store))
    for n in range(8):
        await queue.submit(n, cost={"usd": Decimal("1")}, lane="gpu")
    claimed: list[str] = []

    async def claimer() -> None:
        while (claim := await queue.claim(["gpu"])) is not None:
            claimed.append(claim.job.id)

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(claimer)
    assert len(claimed) == 8
    assert len(set(claimed)) == 8


async def test_complete_settles_the_hold_at_the_actual_cost(store: Store) -> None:
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget)
    job = await queue.submit({"model": "m"}, cost={"usd": Decimal("4"), "gpu_seconds": 600})
    claim = await queue.claim(["default"])
    assert claim is not None
    with pytest.raises(ValueError, match="not held for"):
        await claim.complete({}, {"tokens": 5})
    with pytest.raises(TypeError, match="whole units"):
        await claim.complete({}, {"gpu_seconds": Decimal("1.5")})
    assert (await queue.get(job.id)).state == "leased"  # bad input changed nothing
    assert await claim.complete({"loss": 0.25}, {"usd": Decimal("1.25")}) is True
    done = await queue.get(job.id)
    assert done.state == "completed"
    assert not done.holding
    assert done.result == {"loss": 0.25}
    assert done.actual == {"usd": Decimal("1.25"), "gpu_seconds": 600}  # unreported: worst case
    assert await usage(budget) == {"usd": (Decimal("1.25"), 0), "gpu_seconds": (600, 0)}
    assert await claim.complete({}, {"usd": Decimal("1")}) is False  # ended once
    assert await store.held_reservations() == 0


async def test_a_stale_complete_after_recovery_is_rejected(store: Store) -> None:
    """Regression: a worker whose lease was recovered must not clobber the re-run's result
    or settle the hold twice."""
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget, max_attempts=3)
    job = await queue.submit("x", cost={"usd": Decimal("4")})
    stale = await queue.claim(["default"], lease=0.05)
    assert stale is not None
    await wait_recovered(queue, requeued=1)
    assert (await queue.get(job.id)).error == "lease expired on attempt 1 of 3"
    fresh = await queue.claim(["default"])
    assert fresh is not None
    assert fresh.job.attempts == 2
    assert await stale.complete("stale", {"usd": Decimal("3")}) is False
    assert await stale.fail("stale error") is False
    assert await stale.heartbeat() is False
    assert (await queue.get(job.id)).state == "leased"
    assert await fresh.complete("fresh", {"usd": Decimal("2")}) is True
    done = await queue.get(job.id)
    assert (done.state, done.result, done.attempts) == ("completed", "fresh", 2)
    assert await usage(budget) == {"usd": (Decimal("2"), 0), "gpu_seconds": (0, 0)}


async def test_past_max_attempts_a_job_fails_with_its_error_and_releases_its_hold(
        store: Store) -> None:
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget, max_attempts=2)
    job = await queue.submit("poison", cost={"usd": Decimal("4")})
    for attempt in (1, 2):
        claim = await queue.claim(["default"], lease=0.05)
        assert claim is not None
        assert claim.job.attempts == attempt
        if attempt == 1:
            await wait_recovered(queue, requeued=1)
        else:
            await wait_recovered(queue, failed=1)
    failed = await queue.get(job.id)
    assert failed.state == "failed"
    assert not failed.holding
    assert failed.error == "lease expired on attempt 2 of 2"
    assert await queue.claim(["default"]) is None
    assert await usage(budget) == {"usd": (0, 0), "gpu_seconds": (0, 0)}
    assert await store.held_reservations() == 0


async def test_fail_retries_while_attempts_are_left_then_gives_the_hold_back(
        store: Store) -> None:
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget, max_attempts=3)
    job = await queue.submit("x", cost={"usd": Decimal("4")})
    claim = await queue.claim(["default"])
    assert claim is not None
    assert await claim.fail("RuntimeError: flaky") is True
    again = await queue.get(job.id)
    assert (again.state, again.error, again.attempts) == ("queued", "RuntimeError: flaky", 1)
    assert await usage(budget) == {"usd": (0, Decimal("4")), "gpu_seconds": (0, 0)}
    claim = await queue.claim(["default"])
    assert claim is not None
    assert await claim.fail("ValueError: bad input", retry=False) is True
    gone = await queue.get(job.id)
    assert (gone.state, gone.error, gone.attempts) == ("failed", "ValueError: bad input", 2)
    assert await usage(budget) == {"usd": (0, 0), "gpu_seconds": (0, 0)}


async def test_heartbeat_extends_the_job_lease_and_the_hold_lease(store: Store) -> None:
    """Without a heartbeat both leases would end inside the wait below: the job would be
    recovered and the hold would stop counting."""
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget, lease=0.8, hold_grace=0.8)
    job = await queue.submit("x", cost={"usd": Decimal("4")})
    claim = await queue.claim(["default"])
    assert claim is not None
    with anyio.move_on_after(2.0):  # past lease + grace (1.6 s)
        while True:
            assert await claim.heartbeat() is True
            assert (await queue.recover()).requeued == 0
            await anyio.sleep(0.05)
    assert (await queue.get(job.id)).state == "leased"
    assert await usage(budget) == {"usd": (0, Decimal("4")), "gpu_seconds": (0, 0)}
    assert await claim.complete("ok", {"usd": Decimal("1")})


async def test_a_half_settled_job_is_finished_by_recover(store: Store) -> None:
    """A worker that dies after recording its result but before the hold was committed: the
    result and actual cost are in the record, so recovery settles exactly that, once."""
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget, lease=0.05)
    job = await queue.submit("x", cost={"usd": Decimal("4")})
    claim = await queue.claim(["default"], lease=30)
    assert claim is not None
    jobs = job_store_for(store)
    assert await jobs.finish(job.id, claim.token, result='"done"', actual='{"usd":"1.5"}',
                             lease=0.05)
    assert (await queue.get(job.id)).state == "settling"
    with anyio.fail_after(10):
        while True:  # until the settling lease (0.05 s, store clock) has ended
            if (await queue.recover()).settled:
                break
            await anyio.sleep(0.01)
    done = await queue.get(job.id)
    assert (done.state, done.result) == ("completed", "done")
    assert await usage(budget) == {"usd": (Decimal("1.5"), 0), "gpu_seconds": (0, 0)}
    assert (await queue.recover()).settled == 0  # settled once


async def test_approvals_hold_at_once_so_a_burst_cannot_queue_past_the_cap(
        store: Store) -> None:
    budget = budget_on(store)
    approvals = ApprovalQueue()
    gate = ApprovalHook(approvals, threshold=Decimal("1"), cost=job_cost("usd"))
    queue = JobQueue(store, budget=budget, approval=gate)
    results: list[object] = []

    async def submit(n: int) -> None:
        try:
            results.append(await queue.submit({"n": n}, cost={"usd": Decimal("4")}))
        except (BudgetExceeded, JobRejected) as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(submit, n)
        for _ in range(4):
            request = await approvals.next_request()
            assert request.cost == Decimal("4")
            if request.invocation.arguments["n"] == 3:
                approvals.reject(request.request_id, who="reviewer", why="too big")
            else:
                approvals.approve(request.request_id, who="reviewer", why="ok")
    queued = [r for r in results if isinstance(r, Job)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    rejected = [r for r in results if isinstance(r, JobRejected)]
    assert (len(queued), len(refused), len(rejected)) == (2, 1, 1)
    assert all(job.approved_by == "reviewer" for job in queued)
    assert "approval rejected by reviewer: too big" in rejected[0].reason
    assert await usage(budget) == {"usd": (0, Decimal("8")), "gpu_seconds": (0, 0)}
    assert len(await queue.jobs()) == 2


async def test_a_job_whose_artifact_fails_its_hash_never_reaches_the_executor(
        store: Store, tmp_path: Path) -> None:
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"good weights")
    good = await queue.submit("good", cost={"usd": Decimal("2")},
                              artifacts=[Artifact.from_file(weights)])
    bad = await queue.submit("bad", cost={"usd": Decimal("2")}, artifacts=[
        Artifact("weights", hashlib.sha256(b"other weights").hexdigest(), str(weights))])
    ran: list[str] = []

    async def execute(job: Job) -> JobOutcome:
        ran.append(job.payload)
        return JobOutcome("ok", {"usd": Decimal("1")})

    worker = Worker(queue, ["default"], LocalTransport(JobEndpoint(execute)))
    assert await worker.run(until_idle=True) == 2
    assert ran == ["good"]
    assert (await queue.get(good.id)).state == "completed"
    failed = await queue.get(bad.id)
    assert failed.state == "failed"
    assert failed.attempts == 1
    assert failed.error is not None
    assert "artifact 'weights': content hashes to" in failed.error
    assert await usage(budget) == {"usd": (Decimal("1"), 0), "gpu_seconds": (0, 0)}


async def test_a_job_that_keeps_raising_fails_after_its_attempts(store: Store) -> None:
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget, max_attempts=3)
    job = await queue.submit("boom", cost={"usd": Decimal("2")})
    calls = 0

    async def execute(job: Job) -> JobOutcome:
        nonlocal calls
        calls += 1
        raise RuntimeError(f"boom {calls}")

    worker = Worker(queue, ["default"], LocalTransport(JobEndpoint(execute)))
    assert await worker.run(until_idle=True) == 3
    failed = await queue.get(job.id)
    assert (failed.state, failed.attempts, failed.error) == ("failed", 3, "RuntimeError: boom 3")
    assert calls == 3
    assert await store.held_reservations() == 0


async def test_a_budget_on_another_store_is_refused(store: Store) -> None:
    elsewhere = budget_on(MemoryStore())
    queue = JobQueue(store, budget=elsewhere)
    with pytest.raises(ConfigurationError, match="another store"):
        await queue.submit("x", cost={"usd": Decimal("1")})
    assert await queue.jobs() == []
    assert await usage(elsewhere) == {"usd": (0, 0), "gpu_seconds": (0, 0)}


async def test_a_job_whose_hold_lapsed_while_queued_fails_instead_of_running(
        store: Store) -> None:
    budget = budget_on(store)
    queue = JobQueue(store, budget=budget, hold_grace=0.05)
    job = await queue.submit("x", cost={"usd": Decimal("4")})
    with anyio.fail_after(10):
        while True:  # until the hold's lease (0.05 s, store clock) has ended
            if (await usage(budget))["usd"] == (0, 0):
                break
            await anyio.sleep(0.01)
    assert await queue.claim(["default"]) is None  # never handed out to run unbudgeted
    failed = await queue.get(job.id)
    assert (failed.state, failed.error) == ("failed", "its budget hold lapsed before it ran")
    assert await usage(budget) == {"usd": (0, 0), "gpu_seconds": (0, 0)}
