"""Workers: pull (in process) and push (an orchestrator hands jobs to an endpoint over TCP)
share one model; a worker that loses its lease stops without settling; a cancelled worker
hands its job back. The clock of the memory store is driven by the test."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import anyio
import pytest
from structlog.testing import capture_logs

from outlay import (
    Artifact,
    Job,
    JobEndpoint,
    JobOutcome,
    JobQueue,
    LimitSpec,
    LimitUsage,
    LocalTransport,
    MemoryStore,
    Principals,
    TcpTransport,
    Transport,
    Window,
    Worker,
)
from outlay.jobs import ByUnitBudget

pytestmark = pytest.mark.anyio


class UsageBudget(ByUnitBudget, Protocol):
    """The by-unit budget object, as these tests use it."""

    async def usage(self) -> list[LimitUsage]: ...


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def queue_on(store: MemoryStore, **options: float) -> tuple[JobQueue, UsageBudget]:
    budget = Principals(store, template=[LimitSpec("usd", Window.month(), Decimal("10"))]
                        ).get("team:ml")
    return JobQueue(store, budget=budget, **options), budget  # type: ignore[arg-type]


async def run_jobs(transport: Transport, tmp_path: Path) -> list[Job]:
    """The same jobs through one transport: good, raising, bad artifact."""
    queue, _ = queue_on(MemoryStore(), max_attempts=2)
    data = tmp_path / "prompt.txt"
    data.write_text("hello")
    await queue.submit({"n": 1}, cost={"usd": Decimal("2")}, artifacts=[Artifact.from_file(data)])
    await queue.submit({"n": 2, "raise": True}, cost={"usd": Decimal("2")})
    await queue.submit({"n": 3}, cost={"usd": Decimal("2")}, artifacts=[
        Artifact("prompt", hashlib.sha256(b"tampered").hexdigest(), str(data))])
    await Worker(queue, ["default"], transport).run(until_idle=True)
    return await queue.jobs()


async def execute(job: Job) -> JobOutcome:
    if job.payload.get("raise"):
        raise RuntimeError("out of GPU memory")
    return JobOutcome({"echo": job.payload["n"]}, {"usd": Decimal("0.5")})


def summary(jobs: list[Job]) -> list[tuple[str, object, object, object, int]]:
    return [(job.state, job.result, job.actual, job.error, job.attempts) for job in jobs]


async def test_pull_and_push_share_one_model(tmp_path: Path) -> None:
    endpoint = JobEndpoint(execute)
    pulled = await run_jobs(LocalTransport(endpoint), tmp_path)
    async with anyio.create_task_group() as tg:
        port = await tg.start(endpoint.serve, "127.0.0.1", 0)
        pushed = await run_jobs(TcpTransport("127.0.0.1", port), tmp_path)
        tg.cancel_scope.cancel()
    good, raising, tampered = summary(pushed)
    assert good == ("completed", {"echo": 1}, {"usd": Decimal("0.5")}, None, 1)
    assert raising[0] == "failed"
    assert raising[4] == 2
    assert raising[3] == "RemoteJobError: RuntimeError: out of GPU memory"
    assert tampered[0] == "failed"
    assert tampered[4] == 1
    assert str(tampered[3]).startswith("artifact 'prompt': content hashes to")
    # pull records the same outcomes; only the error of a raising job names its transport
    pulled_summary = summary(pulled)
    assert pulled_summary[0] == good
    assert pulled_summary[2] == tampered
    assert pulled_summary[1][3] == "RuntimeError: out of GPU memory"


async def test_a_worker_that_loses_its_lease_stops_without_settling() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    queue, budget = queue_on(store, lease=10)
    job = await queue.submit("x", cost={"usd": Decimal("4")})
    started, stopped = anyio.Event(), anyio.Event()

    async def slow(job: Job) -> JobOutcome:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            stopped.set()
        raise AssertionError("unreachable")

    worker = Worker(queue, ["default"], LocalTransport(JobEndpoint(slow)), heartbeat=0.01)
    applied: list[bool] = []
    async with anyio.create_task_group() as tg:

        async def work() -> None:
            claim = await queue.claim(["default"])
            assert claim is not None
            applied.append(await worker.execute(claim))

        tg.start_soon(work)
        await started.wait()
        clock.now += 11  # the lease ends; recover runs before any heartbeat can renew it
        assert (await queue.recover()).requeued == 1
        with anyio.fail_after(5):
            await stopped.wait()  # the next heartbeat found the job gone and cancelled the run
    assert applied == [False]
    again = await queue.get(job.id)
    assert (again.state, again.attempts) == ("queued", 1)
    [usd] = await budget.usage()
    assert (usd.spent, usd.held) == (0, Decimal("4"))  # still held for the next attempt


async def test_a_cancelled_worker_hands_its_job_back_at_once() -> None:
    store = MemoryStore()
    queue, budget = queue_on(store)
    job = await queue.submit("x", cost={"usd": Decimal("4")})
    started = anyio.Event()

    async def slow(job: Job) -> JobOutcome:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    worker = Worker(queue, ["default"], LocalTransport(JobEndpoint(slow)))
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run_one)
        await started.wait()
        tg.cancel_scope.cancel()
    again = await queue.get(job.id)
    assert (again.state, again.error) == ("queued", "the worker was cancelled mid-job")
    [usd] = await budget.usage()
    assert usd.held == Decimal("4")


async def test_an_executor_must_return_a_job_outcome() -> None:
    queue, _ = queue_on(MemoryStore(), max_attempts=1)
    job = await queue.submit("x", cost={"usd": Decimal("1")})

    async def sloppy(job: Job) -> JobOutcome:
        return "done"  # type: ignore[return-value]

    await Worker(queue, ["default"], LocalTransport(JobEndpoint(sloppy))).run(until_idle=True)
    failed = await queue.get(job.id)
    assert failed.state == "failed"
    assert failed.error == "TypeError: the executor returned 'done', not a JobOutcome"


async def test_a_job_life_is_logged_as_events() -> None:
    queue, _ = queue_on(MemoryStore(), max_attempts=2)
    with capture_logs() as logs:
        job = await queue.submit({"n": 1}, cost={"usd": Decimal("2")})
        await Worker(queue, ["default"], LocalTransport(JobEndpoint(execute))).run(
            until_idle=True)
    events = [(e["event"], e.get("job")) for e in logs if e["event"].startswith("outlay.jobs")]
    assert events == [("outlay.jobs.submitted", job.id), ("outlay.jobs.claimed", job.id),
                      ("outlay.jobs.completed", job.id)]
    completed = next(e for e in logs if e["event"] == "outlay.jobs.completed")
    assert completed["actual"] == {"usd": Decimal("0.5")}


async def test_a_push_delivery_that_never_answers_times_out_and_is_retried() -> None:
    queue, budget = queue_on(MemoryStore(), max_attempts=2)
    job = await queue.submit("x", cost={"usd": Decimal("2")})
    calls = 0

    async def hangs(job: Job) -> JobOutcome:
        nonlocal calls
        calls += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with anyio.create_task_group() as tg:
        port = await tg.start(JobEndpoint(hangs).serve, "127.0.0.1", 0)
        transport = TcpTransport("127.0.0.1", port, timeout=0.2)
        with anyio.fail_after(10):
            await Worker(queue, ["default"], transport).run(until_idle=True)
        tg.cancel_scope.cancel()
    failed = await queue.get(job.id)
    assert (failed.state, failed.attempts, failed.error) == ("failed", 2, "TimeoutError")
    assert calls == 2
    [usd] = await budget.usage()
    assert (usd.spent, usd.held) == (0, 0)
