"""What the framework integrations share: the hook chain around one tool call, and the model
call's reservation (``outlay._llm_call``: one reservation per request, tool-call batches)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

from .._core import check_count
from ..hooks import ToolDispatcher, ToolDispatchHook, ToolInvocation, ToolInvocationResult

_CALL: ContextVar[Callable[[], Awaitable[Any]]] = ContextVar("outlay_integration_call")
_MAX_CACHED = 1024


async def _run_current_call(**_: Any) -> Any:
    return await _CALL.get()()


class HookChain:
    """Runs one framework tool call through outlay's hook chain.

    The framework has already chosen and validated the call; ``run`` hands the chain a
    ``ToolInvocation`` and, if every hook continues, awaits ``call()`` as the tool. Hooks keep
    their own state (budgets, limits), so one ``HookChain`` (or several over the same hooks)
    can serve any number of agents and concurrent calls.
    """

    __slots__ = ("_dispatchers", "_hooks")

    def __init__(self, hooks: Sequence[ToolDispatchHook]) -> None:
        hooks = tuple(hooks)
        ToolDispatcher((), hooks)  # validates the hooks now, not at the first tool call
        self._hooks = hooks
        # One dispatcher per tool name; the call itself travels in a context variable, which
        # each task (and each nested call) sees for itself.
        self._dispatchers: dict[str, ToolDispatcher] = {}

    @property
    def hooks(self) -> tuple[ToolDispatchHook, ...]:
        """The hooks, in ``before`` order."""
        return self._hooks

    async def run(self, invocation: ToolInvocation,
                  call: Callable[[], Awaitable[Any]]) -> ToolInvocationResult:
        """Dispatch ``invocation`` with ``call`` as its tool; see ``ToolDispatcher.dispatch``.

        Returns the result (``skipped`` when a hook said ``Skip``). Raises
        ``DispatchTerminated``, the tool's own exception (after every hook that ran saw it in
        ``on_invocation_error``), or the cancellation.
        """
        name = invocation.tool_name
        dispatcher = self._dispatchers.get(name)
        if dispatcher is None:
            dispatcher = ToolDispatcher({name: _run_current_call}, self._hooks)
            if len(self._dispatchers) < _MAX_CACHED:
                self._dispatchers[name] = dispatcher
        token = _CALL.set(call)
        try:
            return await dispatcher.dispatch(invocation)
        finally:
            _CALL.reset(token)


def check_estimate(estimate: object, name: str = "estimate") -> int:
    """A token estimate must be a non-negative ``int``."""
    return check_count(estimate, name)
