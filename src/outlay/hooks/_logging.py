"""``DispatchLoggingHook``: structlog events for every invocation's start and end."""

from __future__ import annotations

import time
from typing import Any

import anyio

from .._core import DispatchTerminated, log
from ._types import CONTINUE, Continue, ToolDispatchHook, ToolInvocation, ToolInvocationResult


class DispatchLoggingHook(ToolDispatchHook):
    """Emit one event when an invocation starts and one when it ends.

    Events (flat fields ``call_id``, ``tool``, ``principal``, plus): ``outlay.hooks.started``
    (``arguments`` if ``include_arguments``), ``outlay.hooks.finished`` (``duration_ms``),
    ``outlay.hooks.skipped`` (``reason``), ``outlay.hooks.failed`` (``error_type``, ``error``;
    a tool exception or an error result), ``outlay.hooks.terminated`` (``reason``),
    ``outlay.hooks.cancelled``. Put it first in the chain to see skips and terminations by
    later hooks. Without ``logger`` events go through outlay's logger, which stays silent until
    the application configures structlog; with ``logger`` (anything with ``.info``/``.warning``,
    e.g. a structlog ``BoundLogger``) they always go to it. It never raises into the dispatch.
    """

    __slots__ = ("_include_arguments", "_logger")

    def __init__(self, logger: Any = None, *, include_arguments: bool = False) -> None:
        self._logger = logger
        self._include_arguments = include_arguments

    async def before_invocation(self, invocation: ToolInvocation) -> Continue:
        """Emit ``outlay.hooks.started``; carry the start time to this call's end."""
        if self._logger is None and not log.enabled():
            return CONTINUE  # nobody listens: cost nothing (and emit no end event either)
        if self._include_arguments:
            self._emit("outlay.hooks.started", invocation, arguments=dict(invocation.arguments))
        else:
            self._emit("outlay.hooks.started", invocation)
        return Continue(time.perf_counter())

    async def after_invocation(
        self, invocation: ToolInvocation, result: ToolInvocationResult, state: Any
    ) -> None:
        """Emit ``finished``, ``skipped`` or ``failed`` (an error result)."""
        if state is None:
            return
        duration_ms = round((time.perf_counter() - state) * 1000, 3)
        if result.skipped:
            self._emit("outlay.hooks.skipped", invocation, reason=result.reason,
                       duration_ms=duration_ms)
        elif result.is_error:
            error = result.error
            self._emit("outlay.hooks.failed", invocation, warning=True, duration_ms=duration_ms,
                       error_type=type(error).__name__ if error else None, error=str(result.output))
        else:
            self._emit("outlay.hooks.finished", invocation, duration_ms=duration_ms)

    async def on_invocation_error(
        self, invocation: ToolInvocation, error: BaseException, state: Any
    ) -> None:
        """Emit ``terminated``, ``cancelled`` or ``failed``."""
        if state is None:
            return
        duration_ms = round((time.perf_counter() - state) * 1000, 3)
        if isinstance(error, DispatchTerminated):
            self._emit("outlay.hooks.terminated", invocation, warning=True, reason=error.reason,
                       duration_ms=duration_ms)
        elif isinstance(error, anyio.get_cancelled_exc_class()):
            self._emit("outlay.hooks.cancelled", invocation, duration_ms=duration_ms)
        else:
            self._emit("outlay.hooks.failed", invocation, warning=True, duration_ms=duration_ms,
                       error_type=type(error).__name__, error=str(error))

    def _emit(self, event: str, invocation: ToolInvocation, *, warning: bool = False,
              **fields: Any) -> None:
        fields.update(call_id=invocation.call_id, tool=invocation.tool_name,
                      principal=invocation.principal)
        logger = self._logger
        try:
            if logger is not None:
                (logger.warning if warning else logger.info)(event, **fields)
            elif warning:
                log.warn(event, **fields)
            else:
                log.emit(event, **fields)
        except Exception:  # an observer never breaks the dispatch
            return
