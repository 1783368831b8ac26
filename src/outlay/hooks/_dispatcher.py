"""``ToolDispatcher``: runs tool invocations through a chain of hooks, one or a batch at a time.

The chain is a plain ``for`` loop over precomputed bound methods: hooks that leave a method at
the ``ToolDispatchHook`` default cost nothing for it. Per-invocation state lives in a local list
of ``(hook, state)`` pairs, so concurrent invocations never share bookkeeping.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NoReturn

import anyio

from .._core import DispatchTerminated, InvalidToolArguments, ToolCallError, UnknownTool, log
from ._signature import ToolSignature, ToolSpec
from ._types import (
    Continue,
    Skip,
    Terminate,
    ToolDispatchAction,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
)

ErrorMode = Literal["raise", "result"]
"""What the dispatcher does with an unknown tool, bad arguments or a tool exception."""

BatchPolicy = Literal["admit_what_fits", "all_or_nothing"]
"""How ``dispatch_batch`` treats a batch in which a hook skipped some calls."""

_Before = Callable[[ToolInvocation], Awaitable[ToolDispatchAction]]
_After = Callable[[ToolInvocation, ToolInvocationResult, Any], Awaitable[None]]
_OnError = Callable[[ToolInvocation, BaseException, Any], Awaitable[None]]

_DEFAULT_BEFORE = ToolDispatchHook.before_invocation
_DEFAULT_AFTER = ToolDispatchHook.after_invocation
_DEFAULT_ON_ERROR = ToolDispatchHook.on_invocation_error


class _Hook:
    """A hook's three methods, bound once; ``None`` where the hook keeps the default."""

    __slots__ = ("after", "before", "hook", "on_error")

    def __init__(self, hook: object) -> None:
        self.hook = hook
        self.before: _Before | None = _method(hook, "before_invocation", _DEFAULT_BEFORE)
        self.after: _After | None = _method(hook, "after_invocation", _DEFAULT_AFTER)
        self.on_error: _OnError | None = _method(hook, "on_invocation_error", _DEFAULT_ON_ERROR)
        if self.before is None and self.after is None and self.on_error is None:
            raise TypeError(f"{hook!r} implements none of before_invocation, after_invocation, "
                            "on_invocation_error")


def _method(hook: object, name: str, default: object) -> Any:
    impl = getattr(type(hook), name, None)
    if impl is None or impl is default:
        return None
    bound = getattr(hook, name)
    if not callable(bound):
        raise TypeError(f"{type(hook).__name__}.{name} is not callable")
    return bound


class _Tool:
    __slots__ = ("fn", "is_async", "name", "signature")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"tool {name!r} is not callable: {fn!r}")
        self.name = name
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None))  # noqa: B004 - an object with an async __call__
        self.signature = ToolSignature(name, fn)


class _Call:
    """One invocation of a batch on its way through the chain."""

    __slots__ = ("done", "index", "invocation", "ran", "result", "tool")

    def __init__(self, index: int, invocation: ToolInvocation, tool: _Tool) -> None:
        self.index = index
        self.invocation = invocation
        self.tool = tool
        self.ran: list[tuple[_Hook, Any]] = []
        self.result: ToolInvocationResult | None = None
        self.done = False


class ToolDispatcher:
    """Holds the tools and the hook chain; dispatches invocations through it.

    ``tools`` maps names to callables (or is an iterable of callables, named by ``__name__``).
    A tool is called with the invocation's ``arguments`` as keyword arguments; async tools are
    awaited, sync ones run in a worker thread (``anyio.to_thread.run_sync``; cancellation waits
    for the thread, so no hold is ended while the tool still runs). Before any hook runs the
    arguments are validated and coerced against the tool's signature with pydantic (``"8"``
    becomes ``8`` for an ``int`` parameter); hooks and the tool see the coerced invocation.
    ``tool_specs`` is the same signature as JSON schema, for the model. Raises ``TypeError`` at
    construction for a tool whose annotations pydantic cannot validate.

    ``errors="raise"`` (default): an unknown tool raises ``UnknownTool``, bad arguments raise
    ``InvalidToolArguments`` (both before any hook runs, so nothing is reserved) and a tool's
    exception propagates. ``errors="result"``: each becomes a ``ToolInvocationResult`` with
    ``is_error=True`` and an ``output`` message for the model (a tool exception then reaches
    the hooks' ``after_invocation`` with ``result.error`` set). ``DispatchTerminated`` is always
    raised, from a hook's ``Terminate`` or from a tool that raises it. ``batch_policy`` is the
    default for ``dispatch_batch``.

    A dispatcher keeps no per-call state: share one across tasks. Hooks are shared too, so a
    hook keeps per-call state in ``Continue(state)``, never in its own attributes.
    """

    __slots__ = ("_batch_policy", "_errors", "_hooks", "_tools")

    def __init__(
        self,
        tools: Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]],
        hooks: Sequence[ToolDispatchHook] = (),
        *,
        errors: ErrorMode = "raise",
        batch_policy: BatchPolicy = "admit_what_fits",
    ) -> None:
        if errors not in ("raise", "result"):
            raise ValueError(f"errors must be 'raise' or 'result', got {errors!r}")
        self._errors = errors
        self._batch_policy = _check_policy(batch_policy)
        items = tools.items() if isinstance(tools, Mapping) else (
            (getattr(fn, "__name__", None), fn) for fn in tools)
        self._tools: dict[str, _Tool] = {}
        for name, fn in items:
            if not isinstance(name, str) or not name:
                raise TypeError(f"tool names must be non-empty str, got {name!r} for {fn!r}")
            self._tools[name] = _Tool(name, fn)
        self._hooks = tuple(_Hook(hook) for hook in hooks)

    @property
    def tool_names(self) -> tuple[str, ...]:
        """The registered tool names, in registration order."""
        return tuple(self._tools)

    @property
    def tool_specs(self) -> tuple[ToolSpec, ...]:
        """Each tool's name, description and JSON-schema parameters, in registration order:
        the schema the dispatcher validates against (give it to the model with
        ``outlay.adapters.openai_chat_tools`` and the like)."""
        return tuple(tool.signature.spec for tool in self._tools.values())

    @property
    def hooks(self) -> tuple[object, ...]:
        """The hook chain, in ``before`` order."""
        return tuple(h.hook for h in self._hooks)

    async def dispatch(self, invocation: ToolInvocation) -> ToolInvocationResult:
        """Run one invocation through the chain and the tool.

        Returns the result (skipped results included). Raises ``DispatchTerminated``, the
        ``ToolCallError`` / tool exception with ``errors="raise"``, a hook's exception, or the
        cancellation; on every exit each hook whose ``before`` returned got ``after`` or
        ``on_invocation_error`` (the latter shielded from cancellation).
        """
        tool = self._tools.get(invocation.tool_name)
        checked = self._check(invocation, tool)
        if isinstance(checked, ToolInvocationResult):
            return checked
        assert tool is not None  # _check refuses an unknown tool
        invocation = checked
        # The chain is inlined here (rather than calling _before/_finish) because each
        # coroutine call costs about a microsecond; dispatch_batch uses the shared helpers.
        ran: list[tuple[_Hook, Any]] = []
        try:
            skip: Skip | None = None
            for hook in self._hooks:
                before = hook.before
                if before is None:
                    ran.append((hook, None))
                    continue
                action = await before(invocation)
                if type(action) is Continue or isinstance(action, Continue):
                    ran.append((hook, action.state))
                    continue
                ran.append((hook, None))
                skip = _stop(hook, action, invocation)
                break
            if skip is not None:
                result = ToolInvocationResult(invocation, skip.output, True, skip.reason,
                                              skip.is_error)
            elif tool.is_async and self._errors == "raise":
                result = ToolInvocationResult(invocation, await tool.fn(**invocation.arguments))
            else:
                result = await self._run_tool(tool, invocation)
        except BaseException as exc:
            await _unwind(ran, invocation, exc)
            raise
        for index in range(len(ran) - 1, -1, -1):
            hook, state = ran[index]
            after = hook.after
            if after is not None:
                try:
                    await after(invocation, result, state)
                except BaseException as exc:
                    await _finish_after_failure(ran, index, invocation, result, exc)
        return result

    async def dispatch_batch(
        self,
        invocations: Iterable[ToolInvocation],
        *,
        policy: BatchPolicy | None = None,
    ) -> list[ToolInvocationResult]:
        """Dispatch the calls of one model response; results come back in the same order.

        Admission is deterministic: every call's ``before`` chain runs first, one call after
        another in the given order; then the admitted tools run concurrently and each call's
        ``after`` chain runs when its tool returns. ``policy`` (default: the dispatcher's):

        - ``"admit_what_fits"``: calls a hook skipped (e.g. the budget ran out at call 3) are
          skipped with that hook's reason; the others run.
        - ``"all_or_nothing"``: if a hook skipped any call, no tool of the batch runs; every
          other call is skipped with ``reason`` naming the refused call, and the holds its
          hooks took are ended through their ``after_invocation``.

        With ``errors="raise"`` a bad call raises its ``ToolCallError`` before any hook runs.
        ``DispatchTerminated`` or a hook error in the ``before`` phase, a tool exception
        (``errors="raise"``) or an ``after`` failure cancels the rest of the batch and is raised
        as itself (the first one, if several); every call's hooks still end their holds.
        """
        policy = self._batch_policy if policy is None else _check_policy(policy)
        invocations = list(invocations)
        results: list[ToolInvocationResult | None] = [None] * len(invocations)
        calls: list[_Call] = []
        for index, invocation in enumerate(invocations):
            tool = self._tools.get(invocation.tool_name)
            checked = self._check(invocation, tool)  # raises with errors="raise"
            if isinstance(checked, ToolInvocationResult):
                results[index] = checked
            else:
                assert tool is not None
                calls.append(_Call(index, checked, tool))
        failures: list[BaseException] = []
        try:
            for call in calls:
                skip = await self._before(call.invocation, call.ran)
                if skip is not None:
                    call.result = ToolInvocationResult(call.invocation, skip.output, True,
                                                       skip.reason, skip.is_error)
            if policy == "all_or_nothing":
                _refuse_whole_batch(calls)
            # Skipped calls settle first, in order, without a task of their own.
            runnable = []
            for call in calls:
                if call.result is None:
                    runnable.append(call)
                elif not failures:
                    await self._run_call(call, results, failures, None)
            if len(runnable) == 1 and not failures:
                await self._run_call(runnable[0], results, failures, None)
            elif runnable and not failures:
                async with anyio.create_task_group() as tg:
                    for call in runnable:
                        tg.start_soon(self._run_call, call, results, failures, tg.cancel_scope)
        except BaseException as exc:
            await _unwind_pending(calls, exc)
            raise
        if failures:
            # Calls that never started (a skipped call's after failed first) end here; anyio
            # runs every task to its first checkpoint, so the others unwound themselves.
            await _unwind_pending(calls, failures[0])
            for extra in failures[1:]:
                log.warn("outlay.hooks.batch_error", error_type=type(extra).__name__,
                          error=str(extra))
            raise failures[0]
        return [r for r in results if r is not None]

    async def _run_call(
        self,
        call: _Call,
        results: list[ToolInvocationResult | None],
        failures: list[BaseException],
        scope: anyio.CancelScope | None,
    ) -> None:
        invocation = call.invocation
        try:
            result = call.result
            if result is None:
                result = await self._run_tool(call.tool, invocation)
        except BaseException as exc:
            call.done = True
            await _unwind(call.ran, invocation, exc)
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise
            failures.append(exc)
            if scope is not None:
                scope.cancel()
            return
        call.done = True
        try:
            results[call.index] = await _finish(call.ran, invocation, result)
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise
            failures.append(exc)
            if scope is not None:
                scope.cancel()

    async def _before(
        self, invocation: ToolInvocation, ran: list[tuple[_Hook, Any]]
    ) -> Skip | None:
        """Run the ``before`` chain, recording each hook that returned. ``Skip`` or ``None``."""
        for hook in self._hooks:
            before = hook.before
            if before is None:
                ran.append((hook, None))
                continue
            action = await before(invocation)
            if type(action) is Continue or isinstance(action, Continue):
                ran.append((hook, action.state))
                continue
            ran.append((hook, None))
            return _stop(hook, action, invocation)
        return None

    async def _run_tool(self, tool: _Tool, invocation: ToolInvocation) -> ToolInvocationResult:
        try:
            if tool.is_async:
                output = await tool.fn(**invocation.arguments)
            else:
                output = await anyio.to_thread.run_sync(
                    functools.partial(tool.fn, **invocation.arguments))
        except DispatchTerminated:
            raise  # a tool may stop the run too, whatever ``errors`` says
        except Exception as exc:
            if self._errors == "raise":
                raise
            return ToolInvocationResult(invocation, f"error: {type(exc).__name__}: {exc}",
                                        is_error=True, error=exc)
        return ToolInvocationResult(invocation, output)

    def _check(self, invocation: ToolInvocation,
               tool: _Tool | None) -> ToolInvocation | ToolInvocationResult:
        """The invocation with validated, coerced arguments, or the refusal (raised with
        ``errors="raise"``): an unknown tool, malformed JSON, arguments the signature rejects."""
        if tool is None:
            return self._refuse(invocation, UnknownTool(
                f"unknown tool {invocation.tool_name!r}; known tools: "
                f"{', '.join(sorted(self._tools)) or '(none)'}", invocation=invocation))
        where = f"tool {tool.name!r} (call {invocation.call_id})"
        if invocation.argument_error is not None:
            return self._refuse(invocation, InvalidToolArguments(
                f"malformed arguments for {where}: {invocation.argument_error}",
                invocation=invocation))
        checked = tool.signature.validate(invocation.arguments)
        if isinstance(checked, str):
            return self._refuse(invocation, InvalidToolArguments(
                f"bad arguments for {where}: {checked}", invocation=invocation))
        if checked == invocation.arguments:
            return invocation
        return dataclasses.replace(invocation, arguments=checked)

    def _refuse(self, invocation: ToolInvocation, error: ToolCallError) -> ToolInvocationResult:
        if log.enabled():
            log.emit("outlay.hooks.invalid_call", call_id=invocation.call_id,
                      tool=invocation.tool_name, reason=error.reason)
        if self._errors == "raise":
            raise error
        return ToolInvocationResult(invocation, f"error: {error.reason}", True, error.reason,
                                    is_error=True, error=error)

    def __repr__(self) -> str:
        return (f"<ToolDispatcher tools={list(self._tools)} "
                f"hooks={[type(h.hook).__name__ for h in self._hooks]}>")


def _check_policy(policy: object) -> BatchPolicy:
    if policy == "admit_what_fits":
        return "admit_what_fits"
    if policy == "all_or_nothing":
        return "all_or_nothing"
    raise ValueError(f"batch policy must be 'admit_what_fits' or 'all_or_nothing', "
                     f"got {policy!r}")


def _refuse_whole_batch(calls: list[_Call]) -> None:
    refused = next((c for c in calls if c.result is not None), None)
    if refused is None:
        return
    assert refused.result is not None
    reason = (f"batch refused (all_or_nothing): call {refused.invocation.call_id} "
              f"({refused.invocation.tool_name}) was skipped: {refused.result.reason}")
    for call in calls:
        if call.result is None:
            call.result = ToolInvocationResult(call.invocation, f"not run: {reason}", True,
                                               reason, is_error=True)
    if log.enabled():
        log.emit("outlay.hooks.batch_refused", calls=len(calls),
                  call_id=refused.invocation.call_id, reason=reason)


async def _unwind_pending(calls: list[_Call], exc: BaseException) -> None:
    for call in calls:
        if not call.done:
            call.done = True
            await _unwind(call.ran, call.invocation, exc)


async def _unwind(ran: list[tuple[_Hook, Any]], invocation: ToolInvocation,
                  exc: BaseException) -> None:
    """``on_invocation_error`` for every hook that ran, in reverse, shielded. A hook that raises
    here is logged (``outlay.hooks.hook_failed``) and the others still run; ``exc`` goes on."""
    if not ran:
        return
    with anyio.CancelScope(shield=True):
        for hook, state in reversed(ran):
            on_error = hook.on_error
            if on_error is None:
                continue
            try:
                await on_error(invocation, exc, state)
            except Exception as hook_exc:
                _hook_failed(hook, invocation, "on_invocation_error", hook_exc)


async def _finish(ran: list[tuple[_Hook, Any]], invocation: ToolInvocation,
                  result: ToolInvocationResult) -> ToolInvocationResult:
    """``after_invocation`` for every hook that ran, in reverse."""
    for index in range(len(ran) - 1, -1, -1):
        hook, state = ran[index]
        after = hook.after
        if after is not None:
            try:
                await after(invocation, result, state)
            except BaseException as exc:
                await _finish_after_failure(ran, index, invocation, result, exc)
    return result


async def _finish_after_failure(ran: list[tuple[_Hook, Any]], failed: int,
                                invocation: ToolInvocation, result: ToolInvocationResult,
                                failure: BaseException) -> NoReturn:
    """The ``after`` of ``ran[failed]`` raised ``failure``: run the outer hooks' ``after``
    shielded (logging their own failures), then raise ``failure``."""
    with anyio.CancelScope(shield=True):
        for index in range(failed - 1, -1, -1):
            hook, state = ran[index]
            after = hook.after
            if after is None:
                continue
            try:
                await after(invocation, result, state)
            except Exception as exc:
                _hook_failed(hook, invocation, "after_invocation", exc)
    raise failure


def _stop(hook: _Hook, action: object, invocation: ToolInvocation) -> Skip:
    """Return a ``Skip``, raise ``DispatchTerminated`` for a ``Terminate``, ``TypeError`` else."""
    if isinstance(action, Skip):
        return action
    if isinstance(action, Terminate):
        raise DispatchTerminated(action.reason, invocation=invocation)
    raise TypeError(f"{type(hook.hook).__name__}.before_invocation returned {action!r}; "
                    "expected Continue, Skip or Terminate")


def _hook_failed(hook: _Hook, invocation: ToolInvocation, method: str,
                 exc: BaseException) -> None:
    log.warn("outlay.hooks.hook_failed", hook=type(hook.hook).__name__, method=method,
              call_id=invocation.call_id, tool=invocation.tool_name,
              error_type=type(exc).__name__, error=str(exc))
