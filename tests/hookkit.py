"""Helpers for the hook tests: a hook that records what it sees, and gated tools."""

from __future__ import annotations

from typing import Any

import anyio

from outlay import (
    Continue,
    Skip,
    Terminate,
    ToolDispatchAction,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
)


class Recorder(ToolDispatchHook):
    """Appends ``(name, method, call_id, detail)`` to a shared ledger; optionally acts."""

    def __init__(self, name: str, ledger: list[tuple[str, str, str, Any]],
                 action: ToolDispatchAction | None = None) -> None:
        self.name = name
        self.ledger = ledger
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


def methods(ledger: list[tuple[str, str, str, Any]]) -> list[str]:
    """The ledger as ``"name.method"`` strings, in order."""
    return [f"{name}.{method}" for name, method, _, _ in ledger]


class Gate:
    """An async tool that blocks until ``open`` is called for its ``key`` argument."""

    def __init__(self) -> None:
        self.events: dict[str, anyio.Event] = {}
        self.started: list[str] = []
        self.finished: list[str] = []

    def event(self, key: str) -> anyio.Event:
        return self.events.setdefault(key, anyio.Event())

    async def __call__(self, key: str) -> str:
        self.started.append(key)
        await self.event(key).wait()
        self.finished.append(key)
        return f"done {key}"


def skip(reason: str = "no") -> Skip:
    return Skip(f"skipped: {reason}", reason)


def terminate(reason: str = "stop") -> Terminate:
    return Terminate(reason)
