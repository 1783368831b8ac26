"""The types a tool-dispatch hook chain speaks: invocations, results, actions, the hook protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ToolInvocation:
    """One tool call the model asked for.

    ``call_id`` is the provider's id (OpenAI ``tool_call.id`` / ``call_id``, Anthropic
    ``tool_use.id``); results are matched back by it. ``arguments`` are the keyword arguments
    the tool is called with. ``raw_arguments`` keeps the JSON text the model sent, if any.
    ``argument_error`` is set by an adapter when that text was not a JSON object: the dispatcher
    then refuses the call (``InvalidToolArguments``) before any hook runs.
    """

    call_id: str
    tool_name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    principal: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    raw_arguments: str | None = None
    argument_error: str | None = None


@dataclass(slots=True)
class ToolInvocationResult:
    """What one invocation produced.

    ``output`` is the tool's return value, or the synthetic output of a ``Skip``, or an error
    message for the model. ``skipped`` is True when the tool did not run (``reason`` says why).
    ``is_error`` is True when ``output`` reports a failure to the model (unknown tool, bad
    arguments, a tool exception with ``errors="result"``, or a ``Skip(..., is_error=True)``);
    ``error`` is the tool's exception in the last case.

    Treat it as read-only: every hook of the chain sees the same object. (It is not a frozen
    dataclass because that costs microseconds per invocation on the hot path.)
    """

    invocation: ToolInvocation
    output: Any
    skipped: bool = False
    reason: str | None = None
    is_error: bool = False
    error: BaseException | None = None


@dataclass(slots=True)
class Continue:
    """Let the invocation go on to the next hook and the tool.

    ``state`` is handed back to this hook's own ``after_invocation`` / ``on_invocation_error``
    for this invocation only (a reservation, a start time): per-invocation state without a
    shared table.
    """

    state: Any = None


@dataclass(slots=True)
class Skip:
    """Do not run the tool; ``output`` stands in for its result and ``reason`` says why.

    Hooks after this one are not asked. Every hook whose ``before`` ran (this one included)
    gets ``after_invocation`` with a skipped result. ``is_error`` marks the output as a failure
    report for the model (adapters pass it on, e.g. Anthropic ``is_error``).
    """

    output: Any
    reason: str
    is_error: bool = False


@dataclass(slots=True)
class Terminate:
    """Do not run the tool and stop the run: the dispatcher raises ``DispatchTerminated``.

    Every hook whose ``before`` ran (this one included) gets ``on_invocation_error`` with that
    ``DispatchTerminated``.
    """

    reason: str


ToolDispatchAction = Continue | Skip | Terminate
"""What ``before_invocation`` returns. Actions and results are plain (not frozen) slotted
dataclasses for speed; treat them as read-only values."""

CONTINUE = Continue()
"""A shared ``Continue()`` with no state, to return from hooks on the hot path."""


def refuse(invocation: ToolInvocation, reason: str, *, terminate: bool) -> Skip | Terminate:
    """How a control hook (budget, limit, approval, egress) refuses a call: ``reason`` with
    "; tool '<name>' was not run" appended, as ``Terminate`` or as an error ``Skip`` whose
    output tells the model the tool did not run."""
    reason = f"{reason}; tool {invocation.tool_name!r} was not run"
    if terminate:
        return Terminate(reason)
    return Skip(f"not run: {reason}", reason, is_error=True)


@runtime_checkable
class ToolDispatchHook(Protocol):
    """A hook around tool invocations. All three methods are async.

    A hook may implement only some of them: subclass ``ToolDispatchHook`` explicitly and the
    others default to "continue" / "do nothing" (the dispatcher skips those defaults entirely).

    Contract, per invocation: ``before_invocation`` runs in chain order; a hook whose
    ``before`` *returned* (any action) gets exactly one of ``after_invocation`` (the invocation
    produced a result, skipped ones included) or ``on_invocation_error`` (the dispatch is
    raising: tool error, termination, another hook's error, cancellation), in reverse chain
    order, with the ``state`` its own ``Continue(state)`` carried (``None`` after ``Skip`` or
    ``Terminate``). A hook whose ``before`` raised gets neither: it must clean up after itself.
    ``on_invocation_error`` runs shielded from cancellation. See docs/hooks.md.
    """

    async def before_invocation(self, invocation: ToolInvocation) -> ToolDispatchAction:
        """Decide whether the invocation runs. Default: ``CONTINUE``."""
        return CONTINUE

    async def after_invocation(
        self, invocation: ToolInvocation, result: ToolInvocationResult, state: Any
    ) -> None:
        """See the result (skipped or not). Default: nothing."""
        # A real body, so type checkers treat this as a default, not an abstract method.
        return None  # noqa: RET501

    async def on_invocation_error(
        self, invocation: ToolInvocation, error: BaseException, state: Any
    ) -> None:
        """See the exception the dispatch is about to raise. Default: nothing."""
        return None  # noqa: RET501
