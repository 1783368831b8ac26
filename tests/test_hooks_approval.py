"""ApprovalHook, ApprovalQueue and the approval audit records, on asyncio and trio.

Interleavings are forced with ``ApprovalQueue.next_request()`` (the test plays the human),
events and ``anyio.wait_all_tasks_blocked()``; only the timeout tests wait, for a timeout
nobody answers.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from outlay import (
    ApprovalAuditSink,
    ApprovalDecision,
    ApprovalHook,
    ApprovalNotPending,
    ApprovalQueue,
    ApprovalRecord,
    ApprovalRequest,
    Approver,
    AtomicBudget,
    DispatchBudgetHook,
    DispatchTerminated,
    MemoryApprovalLog,
    ToolDispatcher,
    ToolInvocation,
    ToolInvocationResult,
)
from outlay.testing import FakeClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Ran:
    """Tools that record which calls ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def train(self, job: str) -> str:
        self.calls.append(job)
        return f"trained {job}"

    async def lookup(self, job: str) -> str:
        self.calls.append(job)
        return f"looked up {job}"


def job_cost(invocation: ToolInvocation) -> Decimal:
    return Decimal(str(invocation.arguments.get("usd", "0.10")))


@pytest.fixture
def ran() -> Ran:
    return Ran()


def make(ran: Ran, approver: Approver, **kwargs: Any) -> tuple[ToolDispatcher, MemoryApprovalLog]:
    log = MemoryApprovalLog()
    kwargs.setdefault("clock", FakeClock(T0, tick=1).utcnow)
    hook = ApprovalHook(approver, threshold=Decimal("1.00"), cost=job_cost, audit=log, **kwargs)
    return ToolDispatcher({"train": _kw(ran.train), "lookup": _kw(ran.lookup)}, [hook]), log


def _kw(fn: Any) -> Any:
    async def tool(job: str, usd: str = "0.10") -> str:
        result: str = await fn(job)
        return result
    return tool


def call(call_id: str, usd: str, tool: str = "train", principal: str | None = "alice"
         ) -> ToolInvocation:
    return ToolInvocation(call_id, tool, {"job": call_id, "usd": usd}, principal=principal)


class NeverAsked:
    async def request_approval(self, request: ApprovalRequest) -> ApprovalDecision:
        raise AssertionError("the approver was asked")


async def test_costs_at_or_below_the_threshold_continue_without_asking(ran: Ran) -> None:
    dispatcher, log = make(ran, NeverAsked())
    results = [await dispatcher.dispatch(call("c1", "0.50")),
               await dispatcher.dispatch(call("c2", "1.00"))]
    assert [r.output for r in results] == ["trained c1", "trained c2"]
    assert len(log) == 0


async def test_queue_approval_runs_the_tool_and_records_who_when_why(ran: Ran) -> None:
    queue = ApprovalQueue()
    dispatcher, log = make(ran, queue)
    result: list[ToolInvocationResult] = []

    async def agent() -> None:
        result.append(await dispatcher.dispatch(call("c1", "12.50")))

    with capture_logs() as events:
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent)
            request = await queue.next_request()
            assert queue.pending() == (request,)
            assert ran.calls == []  # waiting: the tool has not run
            assert request.cost == Decimal("12.50")
            assert request.threshold == Decimal("1.00")
            assert request.invocation.call_id == "c1"
            assert request.requested_at == T0
            assert request.expires_at == T0 + timedelta(seconds=300)
            queue.approve(request.request_id, who="bob@ops", why="quarterly retrain")
    assert result[0].output == "trained c1"
    assert ran.calls == ["c1"]
    assert queue.pending() == ()
    (record,) = log.records
    assert record == ApprovalRecord(
        request.request_id, "c1", "train", "alice", Decimal("12.50"), Decimal("1.00"), True,
        "bob@ops", "quarterly retrain", T0, T0 + timedelta(seconds=1), False)
    assert [e["event"] for e in events] == ["outlay.approval.requested",
                                             "outlay.approval.approved"]
    assert events[1]["who"] == "bob@ops"
    assert events[1]["why"] == "quarterly retrain"
    assert events[1]["decided_at"] == "2026-11-23T12:00:01+00:00"
    assert events[1]["cost"] == "12.50"
    assert events[1]["principal"] == "alice"
    assert "job" not in str(events)  # arguments are not logged


@pytest.mark.parametrize("on_rejected", ["skip", "terminate"])
async def test_rejection_skips_with_the_reason_or_terminates(ran: Ran, on_rejected: str) -> None:
    queue = ApprovalQueue()
    dispatcher, log = make(ran, queue, on_rejected=on_rejected)
    outcome: list[object] = []

    async def agent() -> None:
        try:
            outcome.append(await dispatcher.dispatch(call("c1", "5")))
        except DispatchTerminated as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(agent)
        request = await queue.next_request()
        queue.reject(request.request_id, who="carol", why="too expensive this month")
    assert ran.calls == []
    reason = "approval rejected by carol: too expensive this month; tool 'train' was not run"
    if on_rejected == "skip":
        assert isinstance(outcome[0], ToolInvocationResult)
        assert outcome[0].skipped
        assert outcome[0].is_error
        assert outcome[0].reason == reason
    else:
        assert isinstance(outcome[0], DispatchTerminated)
        assert outcome[0].reason == reason
    assert [r.approved for r in log.records] == [False]


async def test_concurrent_requests_get_their_own_decisions_in_any_order(ran: Ran) -> None:
    queue = ApprovalQueue()
    dispatcher, log = make(ran, queue)
    results: dict[str, ToolInvocationResult] = {}

    async def agent(call_id: str) -> None:
        results[call_id] = await dispatcher.dispatch(call(call_id, "9"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(agent, "c1")
        first = await queue.next_request()
        tg.start_soon(agent, "c2")
        second = await queue.next_request()
        assert [r.invocation.call_id for r in queue.pending()] == ["c1", "c2"]
        queue.approve(second.request_id, who="bob", why="ok for c2")
        await anyio.wait_all_tasks_blocked()
        assert ran.calls == ["c2"]  # c2 ran while c1 still waits
        assert queue.pending() == (first,)
        queue.reject(first.request_id, who="bob", why="not c1")
    assert results["c1"].skipped
    assert not results["c2"].skipped
    assert [(r.call_id, r.approved) for r in log.records] == [("c2", True), ("c1", False)]


async def test_timeout_rejects_as_outlay_and_withdraws_the_request(ran: Ran) -> None:
    queue = ApprovalQueue()
    dispatcher, log = make(ran, queue, timeout=0.01)
    with capture_logs() as events:
        result = await dispatcher.dispatch(call("c1", "3"))
    assert result.skipped
    assert ran.calls == []
    assert result.reason == ("approval rejected by outlay: no approval decision within 0.01 s; "
                             "tool 'train' was not run")
    (record,) = log.records
    assert record.timed_out
    assert not record.approved
    assert record.who == "outlay"
    assert queue.pending() == ()
    assert len(queue) == 0
    with pytest.raises(ApprovalNotPending):
        queue.approve(record.request_id, who="bob", why="too late")
    assert events[-1]["event"] == "outlay.approval.rejected"
    assert events[-1]["timed_out"]


async def test_next_request_never_hands_out_a_withdrawn_request(ran: Ran) -> None:
    queue = ApprovalQueue()
    dispatcher, _ = make(ran, queue, timeout=0.01)
    await dispatcher.dispatch(call("c1", "3"))  # times out unseen
    got: list[ApprovalRequest] = []

    async def human() -> None:
        got.append(await queue.next_request())

    async with anyio.create_task_group() as tg:
        tg.start_soon(human)
        await anyio.wait_all_tasks_blocked()
        assert got == []  # the withdrawn request was not handed out
        tg.cancel_scope.cancel()


async def test_cancellation_while_waiting_leaves_nothing_pending(ran: Ran) -> None:
    queue = ApprovalQueue()
    dispatcher, log = make(ran, queue)
    with capture_logs() as events:
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher.dispatch, call("c1", "3"))
            request = await queue.next_request()
            tg.cancel_scope.cancel()
    assert queue.pending() == ()
    assert len(queue) == 0
    with pytest.raises(ApprovalNotPending, match=request.request_id):
        queue.approve(request.request_id, who="bob", why="approved after the run ended")
    assert len(log) == 0
    assert ran.calls == []
    assert [e["event"] for e in events] == ["outlay.approval.requested",
                                             "outlay.approval.cancelled"]


async def test_decision_and_cancellation_in_the_same_instant_leave_nothing_dangling(
        ran: Ran) -> None:
    """Regression guard: a decision delivered in the same step as a cancellation must neither
    stay pending nor vanish silently: either the hook recorded it, or the queue reported it
    as dropped."""
    queue = ApprovalQueue()
    dispatcher, log = make(ran, queue)
    with capture_logs() as events:
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher.dispatch, call("c1", "3"))
            request = await queue.next_request()
            queue.approve(request.request_id, who="bob", why="go")
            tg.cancel_scope.cancel()  # no checkpoint between the decision and the cancel
    assert queue.pending() == ()
    assert ran.calls == []
    dropped = [e for e in events if e["event"] == "outlay.approval.decision_dropped"]
    assert (len(log) == 1) != (len(dropped) == 1)
    if dropped:
        assert dropped[0]["who"] == "bob"
        assert dropped[0]["approved"] is True
    else:
        assert log.records[0].who == "bob"


class BlockingSink:
    """An audit sink that waits for ``release`` before it stores (a slow database)."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.records: list[ApprovalRecord] = []

    async def record(self, record: ApprovalRecord) -> None:
        self.entered.set()
        await self.release.wait()
        self.records.append(record)


async def test_the_audit_record_is_written_even_if_cancelled_while_recording(ran: Ran) -> None:
    queue = ApprovalQueue()
    sink = BlockingSink()
    assert isinstance(sink, ApprovalAuditSink)
    hook = ApprovalHook(queue, threshold=1, cost=5, audit=sink, clock=FakeClock(T0, tick=1).utcnow)
    dispatcher = ToolDispatcher({"train": _kw(ran.train)}, [hook])
    scope = anyio.CancelScope()
    cancelled: list[bool] = []

    async def agent() -> None:
        with scope:
            await dispatcher.dispatch(call("c1", "5"))
        cancelled.append(scope.cancelled_caught)

    async with anyio.create_task_group() as tg:
        tg.start_soon(agent)
        request = await queue.next_request()
        queue.approve(request.request_id, who="bob", why="go")
        await sink.entered.wait()
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert sink.records == []  # still writing, shielded
        sink.release.set()
    assert cancelled == [True]
    assert ran.calls == []  # the cancellation landed before the tool started
    assert [r.who for r in sink.records] == ["bob"]


class FailingSink:
    async def record(self, record: ApprovalRecord) -> None:
        raise OSError("audit database is down")


async def test_a_failing_audit_sink_propagates_and_the_tool_does_not_run(ran: Ran) -> None:
    class Yes:
        async def request_approval(self, request: ApprovalRequest) -> ApprovalDecision:
            return ApprovalDecision.approve("policy-bot", "under the monthly cap")

    hook = ApprovalHook(Yes(), threshold=1, cost=5, audit=FailingSink())
    dispatcher = ToolDispatcher({"train": _kw(ran.train)}, [hook])
    with pytest.raises(OSError, match="audit database is down"):
        await dispatcher.dispatch(call("c1", "5"))
    assert ran.calls == []


async def test_a_failing_approver_propagates_and_is_logged(ran: Ran) -> None:
    class Broken:
        async def request_approval(self, request: ApprovalRequest) -> ApprovalDecision:
            raise ConnectionError("approval service unreachable")

    hook = ApprovalHook(Broken(), threshold=1, cost=5)
    dispatcher = ToolDispatcher({"train": _kw(ran.train)}, [hook])
    with capture_logs() as events, pytest.raises(ConnectionError):
        await dispatcher.dispatch(call("c1", "5"))
    assert ran.calls == []
    assert events[-1]["event"] == "outlay.approval.failed"
    assert events[-1]["error_type"] == "ConnectionError"
    assert events[-1]["log_level"] == "warning"


async def test_custom_approver_timestamp_is_kept_and_checked(ran: Ran) -> None:
    decided = datetime(2026, 11, 23, 13, 0, tzinfo=timezone(timedelta(hours=1)))

    class Policy:
        async def request_approval(self, request: ApprovalRequest) -> ApprovalDecision:
            approved = request.invocation.principal == "alice"
            return ApprovalDecision(approved, "policy-bot", "principal allow-list",
                                    decided_at=decided)

    dispatcher, log = make(ran, Policy())
    assert not (await dispatcher.dispatch(call("c1", "5"))).skipped
    assert (await dispatcher.dispatch(call("c2", "5", principal="mallory"))).skipped
    assert [r.decided_at for r in log.records] == [decided, decided]
    assert [r.approved for r in log.records] == [True, False]


async def test_an_approver_returning_something_else_is_a_type_error(ran: Ran) -> None:
    class Sloppy:
        async def request_approval(self, request: ApprovalRequest) -> Any:
            return True

    dispatcher, log = make(ran, Sloppy())
    with pytest.raises(TypeError, match="not an ApprovalDecision"):
        await dispatcher.dispatch(call("c1", "5"))
    assert ran.calls == []
    assert len(log) == 0


async def test_a_naive_clock_is_refused_before_asking(ran: Ran) -> None:
    dispatcher, _ = make(ran, NeverAsked(), clock=lambda: datetime(2026, 11, 23, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        await dispatcher.dispatch(call("c1", "5"))
    assert ran.calls == []


async def test_bad_costs_are_refused_before_asking(ran: Ran) -> None:
    hook = ApprovalHook(NeverAsked(), threshold=Decimal(1), cost=lambda inv: 2.5)  # type: ignore[arg-type,return-value]
    dispatcher = ToolDispatcher({"train": _kw(ran.train)}, [hook])
    with pytest.raises(TypeError, match="never float"):
        await dispatcher.dispatch(call("c1", "5"))
    with pytest.raises(TypeError, match="never float"):
        ApprovalHook(NeverAsked(), threshold=1.0, cost=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        ApprovalHook(NeverAsked(), threshold=1, cost=-1)


async def test_a_rejected_call_releases_the_budget_held_before_it(ran: Ran) -> None:
    budget = AtomicBudget(10)
    queue = ApprovalQueue()
    hooks = [DispatchBudgetHook(budget, 4, mode="in_flight"),
             ApprovalHook(queue, threshold=1, cost=5, clock=FakeClock(T0, tick=1).utcnow)]
    dispatcher = ToolDispatcher({"train": _kw(ran.train)}, hooks)
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch, call("c1", "5"))
        request = await queue.next_request()
        assert budget.available == 6  # held while waiting for the human
        queue.reject(request.request_id, who="bob", why="no")
    assert budget.available == 10


async def test_batch_approvals_are_asked_one_after_another(ran: Ran) -> None:
    queue = ApprovalQueue()
    dispatcher, log = make(ran, queue)
    results: list[ToolInvocationResult] = []

    async def agent() -> None:
        results.extend(await dispatcher.dispatch_batch(
            [call("c1", "5"), call("c2", "0.5"), call("c3", "5")]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(agent)
        first = await queue.next_request()
        await anyio.wait_all_tasks_blocked()
        assert len(queue) == 1  # c3 is asked only after c1 is decided
        queue.approve(first.request_id, who="bob", why="c1 ok")
        second = await queue.next_request()
        assert second.invocation.call_id == "c3"
        queue.reject(second.request_id, who="bob", why="c3 not ok")
    assert [r.skipped for r in results] == [False, False, True]
    assert [r.call_id for r in log.records] == ["c1", "c3"]


def test_decisions_and_records_refuse_empty_who_and_why() -> None:
    for who, why in [("", "x"), ("  ", "x"), ("bob", ""), ("bob", "\n")]:
        with pytest.raises(ValueError, match="must not be empty"):
            ApprovalDecision.approve(who, why)
    with pytest.raises(TypeError, match="who must be a str"):
        ApprovalDecision.reject(None, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="approved must be a bool"):
        ApprovalDecision(1, "bob", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        ApprovalDecision.approve("bob", "x", decided_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="must not be empty"):
        ApprovalRecord("r1", "c1", "train", None, 5, 1, True, "", "x", T0, T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        ApprovalRecord("r1", "c1", "train", None, 5, 1, True, "bob", "x", T0,
                       datetime(2026, 1, 1))


def test_records_are_immutable() -> None:
    record = ApprovalRecord("r1", "c1", "train", None, 5, 1, True, "bob", "x", T0, T0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.who = "mallory"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ApprovalDecision.approve("bob", "x").approved = False  # type: ignore[misc]


async def test_an_empty_who_leaves_the_request_pending(ran: Ran) -> None:
    queue = ApprovalQueue()
    dispatcher, log = make(ran, queue)
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch, call("c1", "5"))
        request = await queue.next_request()
        with pytest.raises(ValueError, match="who must not be empty"):
            queue.approve(request.request_id, who=" ", why="fine")
        assert queue.get(request.request_id) is request
        queue.approve(request.request_id, who="bob", why="fine")
    assert [r.who for r in log.records] == ["bob"]


async def test_queue_refuses_unknown_ids_duplicates_and_non_decisions() -> None:
    queue = ApprovalQueue()
    with pytest.raises(ApprovalNotPending):
        queue.reject("nope", who="bob", why="x")
    with pytest.raises(ApprovalNotPending):
        queue.get("nope")
    request = ApprovalRequest("r1", call("c1", "5"), 5, 1, T0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.request_approval, request)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(ValueError, match="already pending"):
            await queue.request_approval(request)
        with pytest.raises(TypeError, match="ApprovalDecision"):
            queue.decide("r1", True)  # type: ignore[arg-type]
        assert repr(queue) == "<ApprovalQueue pending=1>"
        queue.decide("r1", ApprovalDecision.approve("bob", "x"))
    assert len(queue) == 0


def test_hook_arguments_are_checked() -> None:
    queue = ApprovalQueue()
    with pytest.raises(TypeError, match="request_approval"):
        ApprovalHook(object(), threshold=1, cost=2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="record"):
        ApprovalHook(queue, threshold=1, cost=2, audit=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_rejected"):
        ApprovalHook(queue, threshold=1, cost=2, on_rejected="ask")  # type: ignore[arg-type]
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="timeout"):
            ApprovalHook(queue, threshold=1, cost=2, timeout=bad)
    with pytest.raises(TypeError, match="timeout"):
        ApprovalHook(queue, threshold=1, cost=2, timeout="5")  # type: ignore[arg-type]
    hook = ApprovalHook(queue, threshold=Decimal("2.50"), cost=2, timeout=None)
    assert hook.threshold == Decimal("2.50")
    assert repr(hook) == "<ApprovalHook threshold=2.50 approver=ApprovalQueue>"
