"""A hook that records what the dispatcher asks of it, and a tool that waits for the test."""

from __future__ import annotations

from typing import Any

import anyio

from ..hooks import (
    Continue,
    ToolDispatchAction,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
)

__all__ = ("Gate", "LedgerEntry", "RecordingHook", "methods")

LedgerEntry = tuple[str, str, str, Any]
"""``(hook name, "before" | "after" | "error", call id, detail)``."""


class RecordingHook(ToolDispatchHook):
    """Appends ``(name, method, call_id, detail)`` to ``ledger`` for every hook method the
    dispatcher calls: ``before`` (detail ``None``), ``after`` (detail: the state its ``before``
    returned), ``error`` (detail: the exception's class name). Several hooks can share one
    ledger to show the order of the chain. ``action`` is what ``before`` returns (default
    ``Continue("<name>:<call_id>")``), e.g. a ``Skip`` or a ``Terminate``."""

    def __init__(self, name: str, ledger: list[LedgerEntry] | None = None,
                 action: ToolDispatchAction | None = None) -> None:
        self.name = name
        self.ledger: list[LedgerEntry] = [] if ledger is None else ledger
        self.action = action

    async def before_invocation(self, invocation: ToolInvocation) -> ToolDispatchAction:
        self.ledger.append((self.name, "before", invocation.call_id, None))
        if self.action is not None:
            return self.action
        return Continue(f"{self.name}:{invocation.call_id}")

    async def after_invocation(self, invocation: ToolInvocation, result: ToolInvocationResult,
                               state: Any) -> None:
        self.ledger.append((self.name, "after", invocation.call_id, state))

    async def on_invocation_error(self, invocation: ToolInvocation, error: BaseException,
                                  state: Any) -> None:
        self.ledger.append((self.name, "error", invocation.call_id, type(error).__name__))


def methods(ledger: list[LedgerEntry]) -> list[str]:
    """The ledger as ``"name.method"`` strings, in order."""
    return [f"{name}.{method}" for name, method, _, _ in ledger]


class Gate:
    """An async tool ``gate(key: str)`` that blocks until the test sets ``gate.event(key)``:
    to hold tool calls mid-flight (``started`` and ``finished`` list the keys in order)."""

    def __init__(self) -> None:
        self.events: dict[str, anyio.Event] = {}
        self.started: list[str] = []
        self.finished: list[str] = []

    def event(self, key: str) -> anyio.Event:
        """The event that releases the call with ``key`` (created on first use)."""
        return self.events.setdefault(key, anyio.Event())

    async def __call__(self, key: str) -> str:
        self.started.append(key)
        await self.event(key).wait()
        self.finished.append(key)
        return f"done {key}"
