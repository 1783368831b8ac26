"""The hooks that ship: DispatchBudgetHook, ToolCallLimitHook, DispatchLoggingHook."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

from outlay import (
    AtomicBudget,
    Budget,
    DispatchBudgetHook,
    DispatchLoggingHook,
    DispatchTerminated,
    LimitSpec,
    Principals,
    ToolCallLimitHook,
    ToolDispatcher,
    ToolDispatchHook,
    ToolInvocation,
    Window,
)
from outlay.testing import Gate, RecordingHook

from .hookkit import skip, terminate

pytestmark = pytest.mark.anyio


async def echo(text: str = "") -> str:
    return text


async def broken(text: str = "") -> str:
    raise RuntimeError("boom")


def call(n: int = 1, tool: str = "echo") -> ToolInvocation:
    return ToolInvocation(f"c{n}", tool, {})


async def test_release_mode_caps_cost_in_flight() -> None:
    budget = AtomicBudget(4)
    gate = Gate()
    dispatcher = ToolDispatcher({"gate": gate}, [DispatchBudgetHook(budget, 2, mode="in_flight")])
    async with anyio.create_task_group() as tg:
        for key in "ab":
            tg.start_soon(dispatcher.dispatch, ToolInvocation(key, "gate", {"key": key}))
        await anyio.wait_all_tasks_blocked()
        third = await dispatcher.dispatch(ToolInvocation("c", "gate", {"key": "c"}))
        assert third.skipped  # two in flight hold all 4 units
        gate.event("a").set()
        gate.event("b").set()
    assert budget.available == 4
    gate.event("c").set()
    assert not (await dispatcher.dispatch(ToolInvocation("c", "gate", {"key": "c"}))).skipped


async def test_commit_mode_caps_cumulative_spend() -> None:
    budget = AtomicBudget(3)
    dispatcher = ToolDispatcher({"echo": echo}, [DispatchBudgetHook(budget, 1)])
    results = [await dispatcher.dispatch(call(n)) for n in range(4)]
    assert [r.skipped for r in results] == [False, False, False, True]
    assert budget.available == 0


async def test_commit_mode_does_not_charge_skips_errors_or_terminations() -> None:
    budget = AtomicBudget(3)
    hook = DispatchBudgetHook(budget, 1)
    await ToolDispatcher({"echo": echo}, [hook, RecordingHook("s", [], skip())]).dispatch(call())
    with pytest.raises(DispatchTerminated):
        await ToolDispatcher({"echo": echo}, [hook, RecordingHook("t", [], terminate())]
                             ).dispatch(call())
    with pytest.raises(RuntimeError):
        await ToolDispatcher({"echo": broken}, [hook]).dispatch(call())
    result = await ToolDispatcher({"echo": broken}, [hook], errors="result").dispatch(call())
    assert result.is_error
    assert budget.available == 3


async def test_charge_failures_commits_failed_calls_but_not_terminations() -> None:
    budget = AtomicBudget(5)
    hook = DispatchBudgetHook(budget, 1, charge_failures=True)
    with pytest.raises(RuntimeError):
        await ToolDispatcher({"echo": broken}, [hook]).dispatch(call())
    assert budget.available == 4
    await ToolDispatcher({"echo": broken}, [hook], errors="result").dispatch(call())
    assert budget.available == 3
    with pytest.raises(DispatchTerminated):
        await ToolDispatcher({"echo": echo}, [hook, RecordingHook("t", [], terminate())]
                             ).dispatch(call())
    assert budget.available == 3
    with pytest.raises(ValueError, match="needs mode='charge'"):
        DispatchBudgetHook(budget, 1, charge_failures=True, mode="in_flight")


async def test_on_denied_terminate_stops_the_run() -> None:
    budget = AtomicBudget(0, name="run")
    dispatcher = ToolDispatcher({"echo": echo},
                                [DispatchBudgetHook(budget, 1, on_denied="terminate",
                                                    mode="in_flight")])
    with pytest.raises(DispatchTerminated,
                       match=r"run: cannot reserve 1: no cap is set"):
        await dispatcher.dispatch(call())


async def test_a_cost_function_prices_each_invocation() -> None:
    budget = AtomicBudget(10)
    prices = {"cheap": 1, "dear": 8}
    hook = DispatchBudgetHook(budget, lambda inv: prices[inv.tool_name])
    dispatcher = ToolDispatcher({"cheap": echo, "dear": echo}, [hook])
    await dispatcher.dispatch(call(1, "dear"))
    await dispatcher.dispatch(call(2, "cheap"))
    assert budget.available == 1
    assert (await dispatcher.dispatch(call(3, "dear"))).skipped


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
async def test_a_bad_cost_raises_before_anything_is_taken(bad: Any) -> None:
    budget = AtomicBudget(10)
    with pytest.raises((TypeError, ValueError)):
        DispatchBudgetHook(budget, bad,
                           mode="in_flight")
    dispatcher = ToolDispatcher({"echo": echo}, [DispatchBudgetHook(budget, lambda _: bad,
                                                                    mode="in_flight")])
    with pytest.raises((TypeError, ValueError)):
        await dispatcher.dispatch(call())
    assert budget.statistics().reserved == 0


async def test_a_budget_reserves_money_and_calls_all_or_nothing() -> None:
    budget = Budget(usd=Decimal("0.05"), tool_calls=10)
    hook = DispatchBudgetHook(budget, {"usd": Decimal("0.02"), "tool_calls": 1})
    dispatcher = ToolDispatcher({"echo": echo}, [hook])
    results = [await dispatcher.dispatch(call(n)) for n in range(3)]
    assert [r.skipped for r in results] == [False, False, True]
    assert results[2].reason is not None
    assert results[2].reason.startswith("budget:default: cannot reserve $0.02 in this run: cap "
                                        "$0.05, spent $0.04, held $0 in flight")
    assert await budget.remaining() == {"usd": Decimal("0.01"), "tool_calls": 8}


async def test_a_budget_counts_tool_calls_by_default_and_charges_them() -> None:
    """Regression guard: the hook used to default to releasing every hold, so a budget of 20
    let 100 of 100 sequential calls through."""
    budget = Budget(tool_calls=20)
    dispatcher = ToolDispatcher({"echo": echo}, [DispatchBudgetHook(budget)])
    results = [await dispatcher.dispatch(call(n)) for n in range(100)]
    assert sum(not r.skipped for r in results) == 20
    guard = AtomicBudget(20)
    dispatcher = ToolDispatcher({"echo": echo}, [DispatchBudgetHook(guard)])
    results = [await dispatcher.dispatch(call(n)) for n in range(100)]
    assert sum(not r.skipped for r in results) == 20


async def test_a_budget_in_flight_gives_everything_back_even_on_cancel() -> None:
    budget = Budget(usd=Decimal("1"))
    gate = Gate()
    dispatcher = ToolDispatcher({"gate": gate}, [DispatchBudgetHook(
        budget, {"usd": Decimal("0.4")}, mode="in_flight")])
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch, ToolInvocation("a", "gate", {"key": "a"}))
        await anyio.wait_all_tasks_blocked()
        assert await budget.remaining() == {"usd": Decimal("0.6")}
        tg.cancel_scope.cancel()
    [usage] = await budget.usage()
    assert (usage.spent, usage.held) == (0, 0)


async def test_a_budget_needs_a_mapping_cost() -> None:
    with pytest.raises(TypeError, match="mapping of unit -> amount"):
        DispatchBudgetHook(Budget(tool_calls=1), 1)
    hook = DispatchBudgetHook(Budget(tool_calls=1), lambda inv: 1)
    with pytest.raises(TypeError, match="mapping of unit -> amount"):
        await ToolDispatcher({"echo": echo}, [hook]).dispatch(call())
    with pytest.raises(TypeError, match="Budget, Principals or a BudgetGuard"):
        DispatchBudgetHook(object(), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'charge' or 'in_flight'"):
        DispatchBudgetHook(AtomicBudget(1), mode="release")  # type: ignore[arg-type]


class RemoteGuard:
    """A BudgetGuard whose calls yield to the loop, as one over the network would."""

    def __init__(self, capacity: int) -> None:
        self.available = capacity

    async def try_reserve(self, cost: int) -> bool:
        await anyio.lowlevel.checkpoint()
        if cost > self.available:
            return False
        self.available -= cost
        return True

    async def release(self, cost: int) -> None:
        await anyio.lowlevel.checkpoint()
        self.available += cost


async def test_any_budget_guard_works_and_its_release_survives_cancellation() -> None:
    guard = RemoteGuard(3)
    release_after = anyio.Event()

    class Blocks(ToolDispatchHook):
        async def after_invocation(self, *args: Any) -> None:
            await release_after.wait()

    dispatcher = ToolDispatcher({"echo": echo}, [DispatchBudgetHook(guard, 2,
                                                                    mode="in_flight"), Blocks()])
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.dispatch, call())
        await anyio.wait_all_tasks_blocked()
        assert guard.available == 1
        tg.cancel_scope.cancel()
    assert guard.available == 3


async def test_call_limits_per_tool_and_in_total() -> None:
    limits = ToolCallLimitHook({"web_search": 2}, total=3)
    dispatcher = ToolDispatcher({"web_search": echo, "echo": echo}, [limits])
    outcomes = [(await dispatcher.dispatch(call(n, tool))).skipped
                for n, tool in enumerate(["web_search", "web_search", "web_search", "echo",
                                          "echo"])]
    assert outcomes == [False, False, True, False, True]
    assert limits.remaining("web_search") == 0
    assert limits.remaining() == 0
    assert limits.remaining("echo") == 0
    limits.reset()
    assert limits.remaining("web_search") == 2
    assert limits.remaining() == 3


async def test_call_limits_count_attempts_not_skips_terminations_or_cancels() -> None:
    limits = ToolCallLimitHook({"echo": 5})
    with pytest.raises(RuntimeError):
        await ToolDispatcher({"echo": broken}, [limits]).dispatch(call())
    assert limits.remaining("echo") == 4  # a failed call was attempted: it counts
    await ToolDispatcher({"echo": echo}, [limits, RecordingHook("s", [], skip())]).dispatch(call())
    with pytest.raises(DispatchTerminated):
        await ToolDispatcher({"echo": echo}, [limits, RecordingHook("t", [], terminate())]
                             ).dispatch(call())
    assert limits.remaining("echo") == 4
    assert limits.remaining() is None
    assert limits.remaining("other") is None


async def test_call_limit_reasons_and_terminate() -> None:
    limits = ToolCallLimitHook({"echo": 0})
    result = await ToolDispatcher({"echo": echo}, [limits]).dispatch(call())
    assert result.reason == "the limit of 0 calls to 'echo' is reached; tool 'echo' was not run"
    strict = ToolCallLimitHook(total=0, on_exceeded="terminate")
    with pytest.raises(DispatchTerminated, match="the run's limit of 0 tool calls"):
        await ToolDispatcher({"echo": echo}, [strict]).dispatch(call())
    with pytest.raises(ValueError, match="give per_tool"):
        ToolCallLimitHook()


async def test_logging_hook_emits_one_event_per_start_and_end() -> None:
    budget = AtomicBudget(1)
    dispatcher = ToolDispatcher({"echo": echo, "broken": broken},
                                [DispatchLoggingHook(include_arguments=True),
                                 DispatchBudgetHook(budget, 1)],
                                errors="result")
    with capture_logs() as logs:
        await dispatcher.dispatch(ToolInvocation("c1", "echo", {"text": "hi"}, principal="u1"))
        await dispatcher.dispatch(ToolInvocation("c2", "echo", {}))
    events = [(e["event"], e["call_id"]) for e in logs if e["event"].startswith("outlay.hooks")]
    assert events == [("outlay.hooks.started", "c1"), ("outlay.hooks.finished", "c1"),
                      ("outlay.hooks.started", "c2"), ("outlay.hooks.skipped", "c2")]
    started = next(e for e in logs if e["event"] == "outlay.hooks.started")
    assert started["arguments"] == {"text": "hi"}
    assert started["principal"] == "u1"
    assert started["tool"] == "echo"


async def test_logging_hook_reports_failures_terminations_and_cancellations() -> None:
    gate = Gate()
    log = DispatchLoggingHook()
    with capture_logs() as logs:
        with pytest.raises(RuntimeError):
            await ToolDispatcher({"echo": broken}, [log]).dispatch(call(1))
        await ToolDispatcher({"echo": broken}, [log], errors="result").dispatch(call(2))
        with pytest.raises(DispatchTerminated):
            await ToolDispatcher({"echo": echo}, [log, RecordingHook("t", [], terminate("no"))]
                                 ).dispatch(call(3))
        async with anyio.create_task_group() as tg:
            tg.start_soon(ToolDispatcher({"gate": gate}, [log]).dispatch,
                          ToolInvocation("c4", "gate", {"key": "k"}))
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    ends = [(e["event"], e["log_level"]) for e in logs if e["event"] != "outlay.hooks.started"]
    assert ends == [("outlay.hooks.failed", "warning"), ("outlay.hooks.failed", "warning"),
                    ("outlay.hooks.terminated", "warning"), ("outlay.hooks.cancelled", "info")]
    assert logs[1]["error_type"] == "RuntimeError"
    assert logs[5]["reason"] == "no"


async def test_logging_hook_uses_a_given_logger_and_never_raises() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    class Logger:
        def info(self, event: str, **fields: Any) -> None:
            seen.append((event, fields))
            if event == "outlay.hooks.finished":
                raise OSError("disk full")

    result = await ToolDispatcher({"echo": echo}, [DispatchLoggingHook(Logger())]).dispatch(
        call())
    assert result.output == ""
    assert [e for e, _ in seen] == ["outlay.hooks.started", "outlay.hooks.finished"]
    assert isinstance(seen[1][1]["duration_ms"], float)


async def test_without_structlog_configured_the_logging_hook_is_silent(
        capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()
    await ToolDispatcher({"echo": echo}, [DispatchLoggingHook()]).dispatch(call())
    assert capsys.readouterr().out == ""


async def test_principals_give_each_invocation_its_principal_budget() -> None:
    principals = Principals(template=[LimitSpec("tool_calls", Window.run(), 2)])
    dispatcher = ToolDispatcher({"echo": echo}, [DispatchBudgetHook(principals)])
    outcomes = [(await dispatcher.dispatch(ToolInvocation(f"c{n}", "echo", {}, principal=who))
                 ).skipped for n, who in enumerate(["user:ann", "user:ann", "user:bob",
                                                    "user:ann"])]
    assert outcomes == [False, False, False, True]
    assert await principals.get("user:ann").remaining() == {"tool_calls": 0}
    assert await principals.get("user:bob").remaining() == {"tool_calls": 1}
    with pytest.raises(ValueError, match="names no principal"):
        await dispatcher.dispatch(call())


async def test_a_refused_budget_takes_nothing_from_any_unit() -> None:
    budget = Budget(usd=Decimal("1"), tool_calls=5)
    hook = DispatchBudgetHook(budget, {"usd": Decimal("2"), "tool_calls": 1})
    result = await ToolDispatcher({"echo": echo}, [hook]).dispatch(call())
    assert result.skipped
    assert await budget.remaining() == {"usd": Decimal("1"), "tool_calls": 5}
