"""``dispatch_batch``: admission in order, both batch policies, every exit path."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from outlay import (
    AtomicBudget,
    DispatchBudgetHook,
    DispatchTerminated,
    ToolDispatcher,
    ToolInvocation,
    UnknownTool,
)
from outlay.testing import Gate, RecordingHook, methods

from .hookkit import terminate

pytestmark = pytest.mark.anyio

Ledger = list[tuple[str, str, str, Any]]


def gated(*keys: str) -> list[ToolInvocation]:
    return [ToolInvocation(f"id-{k}", "gate", {"key": k}) for k in keys]


async def test_admit_what_fits_skips_the_calls_beyond_the_budget_in_order() -> None:
    budget = AtomicBudget(2)
    ran: list[str] = []

    async def tool(key: str) -> str:
        ran.append(key)
        return key

    dispatcher = ToolDispatcher({"gate": tool}, [DispatchBudgetHook(budget, 1, mode="in_flight")])
    results = await dispatcher.dispatch_batch(gated("a", "b", "c"))
    assert [r.invocation.call_id for r in results] == ["id-a", "id-b", "id-c"]
    assert [r.skipped for r in results] == [False, False, True]
    assert results[2].is_error
    assert results[2].reason is not None
    assert "cannot reserve 1: cap 2, spent 0, held 2 in flight" in results[2].reason
    assert sorted(ran) == ["a", "b"]
    assert budget.available == 2


async def test_all_or_nothing_runs_no_tool_when_one_call_does_not_fit() -> None:
    budget = AtomicBudget(2)
    ran: list[str] = []
    ledger: Ledger = []

    async def tool(key: str) -> str:
        ran.append(key)
        return key

    dispatcher = ToolDispatcher({"gate": tool}, [RecordingHook("log", ledger),
                                                 DispatchBudgetHook(budget, 1, mode="in_flight")],
                                batch_policy="all_or_nothing")
    with capture_logs() as logs:
        results = await dispatcher.dispatch_batch(gated("a", "b", "c"))
    assert ran == []
    assert all(r.skipped and r.is_error for r in results)
    refused = [e for e in logs if e["event"] == "outlay.hooks.batch_refused"]
    assert [(e["calls"], e["call_id"]) for e in refused] == [(3, "id-c")]
    assert results[0].reason is not None
    assert results[0].reason.startswith("batch refused (all_or_nothing): call id-c (gate)")
    assert budget.available == 2
    # Every call's hooks were told through after_invocation, so the holds came back.
    assert sorted(cid for _, m, cid, _ in ledger if m == "after") == ["id-a", "id-b", "id-c"]


async def test_the_policy_can_be_chosen_per_batch() -> None:
    budget = AtomicBudget(2)

    async def tool(key: str) -> str:
        return key

    dispatcher = ToolDispatcher({"gate": tool}, [DispatchBudgetHook(budget, 1, mode="in_flight")])
    refused = await dispatcher.dispatch_batch(gated("a", "b", "c"), policy="all_or_nothing")
    assert all(r.skipped for r in refused)
    fits = await dispatcher.dispatch_batch(gated("a", "b"), policy="all_or_nothing")
    assert [r.output for r in fits] == ["a", "b"]
    with pytest.raises(ValueError, match="batch policy"):
        await dispatcher.dispatch_batch(gated("a"), policy="some")  # type: ignore[arg-type]


async def test_befores_run_in_order_then_tools_run_concurrently() -> None:
    ledger: Ledger = []
    gate = Gate()
    budget = AtomicBudget(10)
    dispatcher = ToolDispatcher({"gate": gate}, [RecordingHook("r", ledger),
                                                 DispatchBudgetHook(budget, 3, mode="in_flight")])
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch_batch, gated("a", "b", "c"))
        await anyio.wait_all_tasks_blocked()
        # All admitted before any tool started; all three tools are running at once.
        assert [cid for _, m, cid, _ in ledger] == ["id-a", "id-b", "id-c"]
        assert sorted(gate.started) == ["a", "b", "c"]
        assert budget.available == 1
        for key in ("c", "a", "b"):
            gate.event(key).set()
            await anyio.wait_all_tasks_blocked()
    assert budget.available == 10
    assert [cid for _, m, cid, _ in ledger if m == "after"] == ["id-c", "id-a", "id-b"]


async def test_cancelling_a_batch_mid_flight_ends_every_hold() -> None:
    ledger: Ledger = []
    gate = Gate()
    budget = AtomicBudget(10)
    dispatcher = ToolDispatcher({"gate": gate}, [RecordingHook("r", ledger),
                                                 DispatchBudgetHook(budget, 3, mode="in_flight")])
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch_batch, gated("a", "b", "c"))
        await anyio.wait_all_tasks_blocked()
        gate.event("b").set()  # one finishes normally first
        await anyio.wait_all_tasks_blocked()
        assert budget.available == 4
        tg.cancel_scope.cancel()
    assert budget.available == 10
    assert sorted(m for _, m, _, _ in ledger) == ["after", "before", "before", "before",
                                                   "error", "error"]


async def test_cancelling_during_the_admission_phase_ends_every_hold() -> None:
    budget = AtomicBudget(10)
    gate = Gate()
    waiting = anyio.Event()

    class SlowForB(RecordingHook):
        async def before_invocation(self, invocation: ToolInvocation) -> Any:
            if invocation.call_id == "id-b":
                waiting.set()
                await anyio.sleep_forever()
            return await super().before_invocation(invocation)

    ledger: Ledger = []
    dispatcher = ToolDispatcher({"gate": gate}, [DispatchBudgetHook(budget, 3, mode="in_flight"),
                                                 SlowForB("s", ledger)])
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch_batch, gated("a", "b", "c"))
        await waiting.wait()
        await anyio.wait_all_tasks_blocked()
        assert budget.available == 4  # a and b hold; c was not reached
        tg.cancel_scope.cancel()
    assert gate.started == []
    assert budget.available == 10
    assert methods(ledger) == ["s.before", "s.error"]


async def test_a_tool_error_cancels_the_batch_and_raises_itself() -> None:
    budget = AtomicBudget(10)
    ledger: Ledger = []
    gate = Gate()

    async def tool(key: str) -> str:
        if key == "bad":
            raise RuntimeError("bad tool")
        return await gate(key)

    dispatcher = ToolDispatcher({"gate": tool}, [RecordingHook("r", ledger),
                                                 DispatchBudgetHook(budget, 2, mode="in_flight")])
    # "bad" raises on its first step, before the other tasks have started on asyncio: they are
    # cancelled before running any code of their own, and must be unwound all the same.
    with pytest.raises(RuntimeError, match="bad tool"):
        await dispatcher.dispatch_batch(gated("bad", "x", "y"))
    assert budget.available == 10
    errors = {cid: detail for _, m, cid, detail in ledger if m == "error"}
    cancelled = anyio.get_cancelled_exc_class().__name__
    assert errors["id-bad"] == "RuntimeError"
    assert set(errors) == {"id-bad", "id-x", "id-y"}
    assert {errors["id-x"], errors["id-y"]} <= {cancelled, "RuntimeError"}


async def test_a_tool_error_while_siblings_run_cancels_them_and_releases() -> None:
    budget = AtomicBudget(10)
    gate = Gate()

    async def tool(key: str) -> str:
        if key == "bad":
            await gate("bad")
            raise RuntimeError("bad tool")
        return await gate(key)

    dispatcher = ToolDispatcher({"gate": tool}, [DispatchBudgetHook(budget, 2, mode="in_flight")])
    raised: list[BaseException] = []

    async def run() -> None:
        try:
            await dispatcher.dispatch_batch(gated("x", "bad", "y"))
        except RuntimeError as exc:
            raised.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        assert sorted(gate.started) == ["bad", "x", "y"]
        assert budget.available == 4
        gate.event("bad").set()
    assert [str(e) for e in raised] == ["bad tool"]  # raised as itself, not in a group
    assert budget.available == 10
    assert gate.finished == ["bad"]


async def test_terminate_in_the_admission_phase_unwinds_the_admitted_calls() -> None:
    budget = AtomicBudget(10)
    ledger: Ledger = []
    ran: list[str] = []

    async def tool(key: str) -> str:
        ran.append(key)
        return key

    class StopAtC(RecordingHook):
        async def before_invocation(self, invocation: ToolInvocation) -> Any:
            if invocation.call_id == "id-c":
                return terminate("c is forbidden")
            return await super().before_invocation(invocation)

    dispatcher = ToolDispatcher({"gate": tool}, [DispatchBudgetHook(budget, 2, mode="in_flight"),
                                                 StopAtC("s", ledger)])
    with pytest.raises(DispatchTerminated, match="c is forbidden"):
        await dispatcher.dispatch_batch(gated("a", "b", "c", "d"))
    assert ran == []
    assert budget.available == 10
    # The admitted calls and the terminating hook itself get on_error; d was never reached.
    assert [cid for _, m, cid, _ in ledger if m == "error"] == ["id-a", "id-b", "id-c"]


async def test_a_bad_call_raises_before_any_hook_runs_with_errors_raise() -> None:
    budget = AtomicBudget(10)
    dispatcher = ToolDispatcher({"gate": Gate()}, [DispatchBudgetHook(budget, 2, mode="in_flight")])
    with pytest.raises(UnknownTool):
        await dispatcher.dispatch_batch([*gated("a"), ToolInvocation("z", "nope", {})])
    assert budget.statistics().reserved == 0


async def test_bad_calls_become_error_results_in_place_with_errors_result() -> None:
    budget = AtomicBudget(10)

    async def tool(key: str) -> str:
        return key

    dispatcher = ToolDispatcher({"gate": tool}, [DispatchBudgetHook(budget, 2, mode="in_flight")],
                                errors="result")
    with capture_logs() as logs:
        results = await dispatcher.dispatch_batch(
            [*gated("a"), ToolInvocation("z", "nope", {}), *gated("b")])
    invalid = [e for e in logs if e["event"] == "outlay.hooks.invalid_call"]
    assert [(e["call_id"], e["tool"]) for e in invalid] == [("z", "nope")]
    assert [r.output for r in results][0::2] == ["a", "b"]
    assert results[1].is_error
    assert budget.statistics().reserved == 2
    assert budget.available == 10


async def test_an_empty_batch_returns_no_results() -> None:
    assert await ToolDispatcher({"gate": Gate()}).dispatch_batch([]) == []


async def test_a_failing_after_of_a_skipped_call_stops_the_batch_before_tools_start() -> None:
    budget = AtomicBudget(1)
    ran: list[str] = []
    ledger: Ledger = []

    async def tool(key: str) -> str:
        ran.append(key)
        return key

    class FailsOnSkip(RecordingHook):
        async def after_invocation(self, invocation: ToolInvocation, result: Any,
                                   state: Any) -> None:
            await super().after_invocation(invocation, result, state)
            if result.skipped:
                raise RuntimeError("audit store down")

    # "a" is admitted, "b" does not fit and is skipped; b's after fails before a's tool runs.
    dispatcher = ToolDispatcher({"gate": tool}, [FailsOnSkip("f", ledger),
                                                 DispatchBudgetHook(budget, 1, mode="in_flight")])
    with pytest.raises(RuntimeError, match="audit store down"):
        await dispatcher.dispatch_batch(gated("a", "b"))
    assert ran == []
    assert budget.available == 1
    assert [(cid, m) for _, m, cid, _ in ledger] == [
        ("id-a", "before"), ("id-b", "before"), ("id-b", "after"), ("id-a", "error")]


async def test_cancelling_a_batch_of_one_ends_its_hold() -> None:
    budget = AtomicBudget(3)
    gate = Gate()
    dispatcher = ToolDispatcher({"gate": gate}, [DispatchBudgetHook(budget, 2, mode="in_flight")])
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch_batch, gated("a"))
        await anyio.wait_all_tasks_blocked()
        assert budget.available == 1
        tg.cancel_scope.cancel()
    assert budget.available == 3
