"""``ToolCallLimitHook``: at most N calls per tool and M calls in all, per run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import anyio

from .._core import AtomicBudget, DispatchTerminated, check_count
from ._types import (
    Continue,
    Skip,
    Terminate,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
    refuse,
)


class ToolCallLimitHook(ToolDispatchHook):
    """Cap how many times tools are called in a run: ``per_tool={"web_search": 3}`` and/or
    ``total=10``. Tools not named in ``per_tool`` count only towards ``total``.

    A call counts once it is attempted: it completed, returned an error result or raised. It
    does not count when a later hook skipped it or stopped the run, or when the dispatch was
    cancelled; those slots are given back. Over the limit: ``on_exceeded="skip"`` (default)
    skips the call with a reason for the model, ``"terminate"`` raises ``DispatchTerminated``.
    Counters are exact under concurrency (``AtomicBudget``); ``reset()`` starts a new run.
    """

    __slots__ = ("_per_tool", "_terminate", "_total")

    def __init__(
        self,
        per_tool: Mapping[str, int] | None = None,
        *,
        total: int | None = None,
        on_exceeded: Literal["skip", "terminate"] = "skip",
    ) -> None:
        if on_exceeded not in ("skip", "terminate"):
            raise ValueError(f"on_exceeded must be 'skip' or 'terminate', got {on_exceeded!r}")
        if not per_tool and total is None:
            raise ValueError("give per_tool limits, a total, or both")
        self._per_tool = {name: AtomicBudget(check_count(cap, "per_tool", name),
                                             name=f"calls:{name}")
                          for name, cap in (per_tool or {}).items()}
        self._total = None if total is None else AtomicBudget(check_count(total, "total"),
                                                               name="calls:total")
        self._terminate = on_exceeded == "terminate"

    def remaining(self, tool_name: str | None = None) -> int | None:
        """Calls left for ``tool_name`` (or in total when ``None``); ``None`` means unlimited."""
        if tool_name is None:
            return None if self._total is None else self._total.available
        per = self._per_tool.get(tool_name)
        own = None if per is None else per.available
        if self._total is None:
            return own
        return self._total.available if own is None else min(own, self._total.available)

    def reset(self) -> None:
        """Start a new run: every counter back to its full limit."""
        for budget in self._per_tool.values():
            budget.refill()
        if self._total is not None:
            self._total.refill()

    async def before_invocation(self, invocation: ToolInvocation) -> Continue | Skip | Terminate:
        """Take one call from the total and from the tool's own limit, or refuse."""
        total = self._total
        per = self._per_tool.get(invocation.tool_name)
        if total is not None and not total.try_reserve_nowait(1):
            return refuse(invocation, f"the run's limit of {total.capacity} tool calls is reached",
                          terminate=self._terminate)
        if per is not None and not per.try_reserve_nowait(1):
            if total is not None:
                total.release_nowait(1)
            return refuse(invocation, f"the limit of {per.capacity} calls to "
                                      f"{invocation.tool_name!r} is reached",
                          terminate=self._terminate)
        return Continue((total, per))

    async def after_invocation(
        self, invocation: ToolInvocation, result: ToolInvocationResult, state: Any
    ) -> None:
        """Keep the count unless a later hook skipped the call."""
        if state is not None and result.skipped:
            _give_back(state)

    async def on_invocation_error(
        self, invocation: ToolInvocation, error: BaseException, state: Any
    ) -> None:
        """Give the count back on termination and cancellation; keep it on a failure."""
        if state is not None and isinstance(
                error, DispatchTerminated | anyio.get_cancelled_exc_class()):
            _give_back(state)

    def __repr__(self) -> str:
        limits = {name: b.capacity for name, b in self._per_tool.items()}
        total = None if self._total is None else self._total.capacity
        return f"<ToolCallLimitHook per_tool={limits} total={total}>"


def _give_back(state: tuple[AtomicBudget | None, AtomicBudget | None]) -> None:
    for budget in state:
        if budget is not None:
            budget.release_nowait(1)
