"""The hook chain around one invocation: order, actions, state, errors, cancellation."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from outlay import (
    AtomicBudget,
    Continue,
    DispatchBudgetHook,
    DispatchTerminated,
    InvalidToolArguments,
    Skip,
    ToolDispatcher,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
    UnknownTool,
)
from outlay.testing import Gate, RecordingHook, methods

from .hookkit import skip, terminate

pytestmark = pytest.mark.anyio

Ledger = list[tuple[str, str, str, Any]]


async def echo(text: str) -> str:
    return text


def call(call_id: str = "c1", text: str = "hi") -> ToolInvocation:
    return ToolInvocation(call_id, "echo", {"text": text})


async def test_hooks_run_as_an_onion() -> None:
    ledger: Ledger = []
    hooks = [RecordingHook(n, ledger) for n in "abc"]
    result = await ToolDispatcher({"echo": echo}, hooks).dispatch(call())
    assert result.output == "hi"
    assert not result.skipped
    assert methods(ledger) == ["a.before", "b.before", "c.before", "c.after", "b.after",
                               "a.after"]


async def test_after_sees_the_state_its_own_before_returned() -> None:
    ledger: Ledger = []
    await ToolDispatcher({"echo": echo}, [RecordingHook("a", ledger), RecordingHook("b", ledger)]
                         ).dispatch(call("x"))
    states = {(name, state) for name, method, _, state in ledger if method == "after"}
    assert states == {("a", "a:x"), ("b", "b:x")}


async def test_skip_stops_the_chain_and_every_hook_that_ran_sees_after() -> None:
    ledger: Ledger = []
    ran = False

    async def tool(text: str) -> str:
        nonlocal ran
        ran = True
        return text

    hooks = [RecordingHook("a", ledger), RecordingHook("b", ledger, skip("cached")),
             RecordingHook("c", ledger)]
    result = await ToolDispatcher({"echo": tool}, hooks).dispatch(call())
    assert not ran
    assert result.skipped
    assert result.reason == "cached"
    assert result.output == "skipped: cached"
    assert methods(ledger) == ["a.before", "b.before", "b.after", "a.after"]
    # The skipping hook's own state is None: it has nothing to end.
    assert ledger[2][3] is None


async def test_terminate_raises_and_calls_on_error_on_hooks_that_ran() -> None:
    ledger: Ledger = []
    hooks = [RecordingHook("a", ledger), RecordingHook("b", ledger, terminate("over budget")),
             RecordingHook("c", ledger)]
    with pytest.raises(DispatchTerminated) as info:
        await ToolDispatcher({"echo": echo}, hooks).dispatch(call())
    assert info.value.reason == "over budget"
    assert info.value.invocation == call()
    assert methods(ledger) == ["a.before", "b.before", "b.error", "a.error"]


async def test_tool_error_reaches_on_error_in_reverse_and_propagates() -> None:
    ledger: Ledger = []

    async def broken(text: str) -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await ToolDispatcher({"echo": broken},
                             [RecordingHook("a", ledger), RecordingHook("b", ledger)]
                             ).dispatch(call())
    assert methods(ledger) == ["a.before", "b.before", "b.error", "a.error"]
    assert {detail for _, m, _, detail in ledger if m == "error"} == {"RuntimeError"}


async def test_errors_result_turns_a_tool_exception_into_an_error_result() -> None:
    ledger: Ledger = []

    async def broken(text: str) -> str:
        raise RuntimeError("boom")

    result = await ToolDispatcher({"echo": broken}, [RecordingHook("a", ledger)], errors="result"
                                  ).dispatch(call())
    assert result.is_error
    assert not result.skipped
    assert isinstance(result.error, RuntimeError)
    assert result.output == "error: RuntimeError: boom"
    assert methods(ledger) == ["a.before", "a.after"]


class BeforeFails(ToolDispatchHook):
    async def before_invocation(self, invocation: ToolInvocation) -> Continue:
        raise ValueError("hook broke")

    async def on_invocation_error(self, invocation: ToolInvocation, error: BaseException,
                                  state: Any) -> None:
        raise AssertionError("a hook whose before raised must not get on_error")


async def test_a_before_that_raises_unwinds_the_hooks_before_it_and_releases() -> None:
    ledger: Ledger = []
    budget = AtomicBudget(5)
    hooks = [RecordingHook("a", ledger), DispatchBudgetHook(budget, 2, mode="in_flight"),
             BeforeFails()]
    with pytest.raises(ValueError, match="hook broke"):
        await ToolDispatcher({"echo": echo}, hooks).dispatch(call())
    assert methods(ledger) == ["a.before", "a.error"]
    assert budget.available == 5


class AfterFails(ToolDispatchHook):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def after_invocation(self, invocation: ToolInvocation, result: ToolInvocationResult,
                               state: Any) -> None:
        raise self.error


async def test_a_failing_after_still_lets_outer_hooks_end_their_holds() -> None:
    ledger: Ledger = []
    budget = AtomicBudget(5)
    hooks = [RecordingHook("a", ledger), DispatchBudgetHook(budget, 2, mode="in_flight"),
             AfterFails(RuntimeError("after broke"))]
    with pytest.raises(RuntimeError, match="after broke"):
        await ToolDispatcher({"echo": echo}, hooks).dispatch(call())
    # The outer hooks got their after (the tool did run), not on_error.
    assert methods(ledger) == ["a.before", "a.after"]
    assert budget.available == 5


async def test_the_first_after_failure_is_raised_and_later_ones_are_logged() -> None:
    hooks = [AfterFails(RuntimeError("second")), AfterFails(KeyError("first"))]
    with capture_logs() as logs, pytest.raises(KeyError, match="first"):
        await ToolDispatcher({"echo": echo}, hooks).dispatch(call())
    failed = [e for e in logs if e["event"] == "outlay.hooks.hook_failed"]
    assert [(e["method"], e["error"]) for e in failed] == [("after_invocation", "second")]


class OnErrorFails(ToolDispatchHook):
    async def on_invocation_error(self, invocation: ToolInvocation, error: BaseException,
                                  state: Any) -> None:
        raise RuntimeError("on_error broke")


async def test_a_failing_on_error_is_logged_and_the_original_error_propagates() -> None:
    budget = AtomicBudget(3)

    async def broken(text: str) -> str:
        raise LookupError("tool broke")

    hooks = [DispatchBudgetHook(budget, 1, mode="in_flight"), OnErrorFails()]
    with capture_logs() as logs, pytest.raises(LookupError, match="tool broke"):
        await ToolDispatcher({"echo": broken}, hooks).dispatch(call())
    assert budget.available == 3  # the budget hook, outside the failing one, still released
    failed = [e for e in logs if e["event"] == "outlay.hooks.hook_failed"]
    assert len(failed) == 1
    assert failed[0]["hook"] == "OnErrorFails"
    assert failed[0]["method"] == "on_invocation_error"
    assert failed[0]["error"] == "on_error broke"


async def test_a_before_returning_something_else_is_a_type_error_and_unwinds() -> None:
    class Bad(ToolDispatchHook):
        async def before_invocation(self, invocation: ToolInvocation) -> Any:
            return True

    budget = AtomicBudget(3)
    with pytest.raises(TypeError, match="expected Continue, Skip or Terminate"):
        await ToolDispatcher({"echo": echo}, [DispatchBudgetHook(budget, 1,
                                                                 mode="in_flight"), Bad()]
                             ).dispatch(call())
    assert budget.available == 3


async def test_a_hook_may_implement_only_some_methods() -> None:
    seen: list[str] = []

    class OnlyAfter(ToolDispatchHook):
        async def after_invocation(self, invocation: ToolInvocation,
                                   result: ToolInvocationResult, state: Any) -> None:
            seen.append(result.output)

    class Duck:  # not a subclass at all: only the method it has is used
        async def before_invocation(self, invocation: ToolInvocation) -> Skip:
            return Skip("from duck", "duck")

    assert (await ToolDispatcher({"echo": echo}, [OnlyAfter()]).dispatch(call())).output == "hi"
    result = await ToolDispatcher({"echo": echo}, [OnlyAfter(), Duck()]).dispatch(call())  # type: ignore[list-item]
    assert result.output == "from duck"
    assert seen == ["hi", "from duck"]
    with pytest.raises(TypeError, match="implements none"):
        ToolDispatcher({"echo": echo}, [object()])  # type: ignore[list-item]


async def test_unknown_tool_raises_before_any_hook_runs() -> None:
    ledger: Ledger = []
    budget = AtomicBudget(3)
    dispatcher = ToolDispatcher({"echo": echo}, [RecordingHook("a", ledger),
                                                 DispatchBudgetHook(budget, 1, mode="in_flight")])
    with pytest.raises(UnknownTool, match="unknown tool 'nope'; known tools: echo") as info:
        await dispatcher.dispatch(ToolInvocation("c1", "nope", {}))
    assert info.value.invocation is not None
    assert info.value.invocation.tool_name == "nope"
    assert ledger == []
    assert budget.statistics().reserved == 0


@pytest.mark.parametrize(
    ("invocation", "message"),
    [
        (ToolInvocation("c1", "echo", {}), "missing text"),
        (ToolInvocation("c1", "echo", {"text": "x", "extra": 1}), "unexpected extra"),
        (ToolInvocation("c1", "echo", {}, raw_arguments="{oops",
                        argument_error="invalid JSON"), "malformed arguments.*invalid JSON"),
        (ToolInvocation("c1", "echo", ["x"]), "must be an object"),  # type: ignore[arg-type]
    ],
)
async def test_bad_arguments_raise_before_any_hook_runs(invocation: ToolInvocation,
                                                        message: str) -> None:
    budget = AtomicBudget(3)
    dispatcher = ToolDispatcher({"echo": echo}, [DispatchBudgetHook(budget, 1, mode="in_flight")])
    with pytest.raises(InvalidToolArguments, match=message):
        await dispatcher.dispatch(invocation)
    assert budget.statistics().reserved == 0


async def test_errors_result_answers_bad_calls_with_an_error_result() -> None:
    budget = AtomicBudget(3)
    dispatcher = ToolDispatcher({"echo": echo}, [DispatchBudgetHook(budget, 1, mode="in_flight")],
                                errors="result")
    unknown = await dispatcher.dispatch(ToolInvocation("c1", "nope", {}))
    assert unknown.is_error
    assert unknown.skipped
    assert isinstance(unknown.error, UnknownTool)
    assert unknown.output.startswith("error: unknown tool 'nope'")
    bad = await dispatcher.dispatch(ToolInvocation("c2", "echo", {}))
    assert isinstance(bad.error, InvalidToolArguments)
    assert budget.statistics().reserved == 0


async def test_tools_with_var_keyword_accept_any_arguments() -> None:
    def anything(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    result = await ToolDispatcher([anything]).dispatch(
        ToolInvocation("c1", "anything", {"a": 1}))
    assert result.output == {"a": 1}


async def test_sync_tools_run_in_a_worker_thread() -> None:
    def where(text: str) -> int:
        return threading.get_ident()

    result = await ToolDispatcher({"where": where}).dispatch(
        ToolInvocation("c1", "where", {"text": "x"}))
    assert result.output != threading.get_ident()


async def test_cancelling_the_dispatch_while_the_tool_runs_ends_every_hold() -> None:
    ledger: Ledger = []
    budget = AtomicBudget(5)
    gate = Gate()
    dispatcher = ToolDispatcher({"gate": gate}, [RecordingHook("a", ledger),
                                                 DispatchBudgetHook(budget, 2, mode="in_flight")])
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch, ToolInvocation("c1", "gate", {"key": "k"}))
        await anyio.wait_all_tasks_blocked()
        assert gate.started == ["k"]
        assert budget.available == 3
        tg.cancel_scope.cancel()
    assert budget.available == 5
    assert methods(ledger) == ["a.before", "a.error"]
    assert ledger[-1][3] == anyio.get_cancelled_exc_class().__name__


async def test_cancelling_during_a_before_releases_what_earlier_hooks_reserved() -> None:
    budget = AtomicBudget(5)
    release = anyio.Event()

    class SlowApproval(ToolDispatchHook):
        async def before_invocation(self, invocation: ToolInvocation) -> Continue:
            await release.wait()
            return Continue()

    hook = DispatchBudgetHook(budget, 2, mode="in_flight")
    dispatcher = ToolDispatcher({"echo": echo}, [hook, SlowApproval()])
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch, call())
        await anyio.wait_all_tasks_blocked()
        assert budget.available == 3
        tg.cancel_scope.cancel()
    assert budget.available == 5


async def test_cancelling_during_an_after_still_runs_the_outer_afters() -> None:
    budget = AtomicBudget(5)
    ledger: Ledger = []

    class SlowAfter(ToolDispatchHook):
        async def after_invocation(self, invocation: ToolInvocation,
                                   result: ToolInvocationResult, state: Any) -> None:
            await anyio.sleep_forever()

    dispatcher = ToolDispatcher({"echo": echo}, [RecordingHook("a", ledger),
                                                 DispatchBudgetHook(budget, 2, mode="in_flight"),
                                                 SlowAfter()])
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch, call())
        await anyio.wait_all_tasks_blocked()
        assert budget.available == 3
        tg.cancel_scope.cancel()
    assert budget.available == 5
    assert methods(ledger) == ["a.before", "a.after"]


async def test_concurrent_invocations_end_exactly_their_own_holds() -> None:
    # Regression guard: a hook that keeps one shared counter and "releases one" after each call
    # would release the wrong amount here, where calls of cost 1, 2 and 4 finish out of order.
    budget = AtomicBudget(10)
    gate = Gate()
    costs = {"one": 1, "two": 2, "four": 4}
    ledger: Ledger = []
    dispatcher = ToolDispatcher(
        {"gate": gate},
        [RecordingHook("r", ledger),
         DispatchBudgetHook(budget, lambda inv: costs[inv.arguments["key"]], mode="in_flight")])
    async with anyio.create_task_group() as tg:
        for key in costs:
            tg.start_soon(dispatcher.dispatch, ToolInvocation(f"id-{key}", "gate", {"key": key}))
        await anyio.wait_all_tasks_blocked()
        assert budget.available == 3
        for key, expected in (("four", 7), ("one", 8), ("two", 10)):
            gate.event(key).set()
            await anyio.wait_all_tasks_blocked()
            assert budget.available == expected
    afters = {(cid, state) for _, m, cid, state in ledger if m == "after"}
    assert afters == {(f"id-{k}", f"r:id-{k}") for k in costs}


async def test_a_tool_may_terminate_the_run_even_with_errors_result() -> None:
    budget = AtomicBudget(3)

    async def stop(text: str) -> str:
        raise DispatchTerminated("the tool says stop")

    dispatcher = ToolDispatcher({"echo": stop}, [DispatchBudgetHook(budget, 1)],
                                errors="result")
    with pytest.raises(DispatchTerminated, match="the tool says stop"):
        await dispatcher.dispatch(call())
    assert budget.available == 3


async def test_cancelling_while_a_sync_tool_runs_waits_for_the_thread() -> None:
    budget = AtomicBudget(3)
    started = threading.Event()
    finish = threading.Event()

    def slow(text: str) -> str:
        started.set()
        finish.wait(10)
        return text

    dispatcher = ToolDispatcher({"echo": slow}, [DispatchBudgetHook(budget, 2, mode="in_flight")])
    scope = anyio.CancelScope()
    outcome: list[Any] = []

    async def run() -> None:
        with scope:
            outcome.append((await dispatcher.dispatch(call("c1", "done"))).output)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.to_thread.run_sync(started.wait, 10)
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert budget.available == 1  # the tool still runs in its thread: still held
        assert outcome == []
        finish.set()
    # The thread ran its course; the call settled through the hooks' after (or on_error, if
    # the cancellation is delivered at a later checkpoint). Either way nothing stays held.
    assert outcome in ([], ["done"])
    assert budget.available == 3
