"""Property: whatever mix of outcomes a batch meets, every hold ends and every hook that ran
ends exactly once."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outlay import (
    AtomicBudget,
    Continue,
    DispatchBudgetHook,
    Skip,
    Terminate,
    ToolDispatcher,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
)

MODES = ["ok", "tool_error", "skip", "terminate", "before_raises", "after_raises"]


class Chaos(ToolDispatchHook):
    """Acts as the call's ``mode`` says when the call names this hook; records its endings."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.returned: list[str] = []
        self.ended: list[str] = []

    def acts(self, invocation: ToolInvocation) -> str | None:
        return invocation.arguments["mode"] if invocation.arguments["where"] == self.name else None

    async def before_invocation(self, invocation: ToolInvocation) -> Any:
        await anyio.lowlevel.checkpoint()
        mode = self.acts(invocation)
        if mode == "before_raises":
            raise ValueError("before")
        self.returned.append(invocation.call_id)
        if mode == "skip":
            return Skip("skipped", "chaos")
        if mode == "terminate":
            return Terminate("chaos")
        return Continue()

    async def after_invocation(self, invocation: ToolInvocation, result: ToolInvocationResult,
                               state: Any) -> None:
        self.ended.append(invocation.call_id)
        if self.acts(invocation) == "after_raises":
            raise KeyError("after")

    async def on_invocation_error(self, invocation: ToolInvocation, error: BaseException,
                                  state: Any) -> None:
        self.ended.append(invocation.call_id)


calls_strategy = st.lists(
    st.tuples(st.sampled_from(MODES), st.sampled_from(["outer", "inner"]),
              st.integers(1, 3)),
    min_size=1, max_size=6)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None)
@given(calls=calls_strategy, capacity=st.integers(0, 8),
       policy=st.sampled_from(["admit_what_fits", "all_or_nothing"]),
       errors=st.sampled_from(["raise", "result"]), mode=st.sampled_from(["in_flight", "charge"]),
       single=st.booleans())
def test_every_exit_path_leaves_the_budget_whole(
    backend: str, calls: list[tuple[str, str, int]], capacity: int, policy: Any, errors: Any,
    mode: Any, single: bool,
) -> None:
    budget = AtomicBudget(capacity)
    outer, inner = Chaos("outer"), Chaos("inner")
    completed: list[int] = []

    async def tool(mode: str, where: str, cost: int) -> str:
        await anyio.lowlevel.checkpoint()
        if mode == "tool_error":
            raise RuntimeError("tool")
        completed.append(cost)
        return "ok"

    dispatcher = ToolDispatcher(
        {"tool": tool},
        [outer, DispatchBudgetHook(budget, lambda inv: inv.arguments["cost"], mode=mode), inner],
        errors=errors, batch_policy=policy)
    invocations = [ToolInvocation(f"c{i}", "tool", {"mode": m, "where": w, "cost": c})
                   for i, (m, w, c) in enumerate(calls)]

    async def main() -> None:
        # Any documented failure may be raised; the invariants below are the point.
        with contextlib.suppress(Exception):
            if single:
                for invocation in invocations:
                    await dispatcher.dispatch(invocation)
            else:
                await dispatcher.dispatch_batch(invocations)

    anyio.run(main, backend=backend)
    spent = sum(completed) if mode == "charge" else 0
    assert budget.available == capacity - spent
    assert budget.statistics().held == spent
    for hook in (outer, inner):
        assert Counter(hook.ended) == Counter(hook.returned)
