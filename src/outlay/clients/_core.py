"""What every LLM client wrapper shares: estimate, reserve (maybe clamped), settle, stream.

Pure Python over the budget object (the reservation policy of one call is
``outlay._llm_call``); imports no provider SDK. The per-API modules
(``outlay.clients.openai``, ``outlay.clients.anthropic``) say which request fields are prompt,
which field bounds the output and where the usage is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio

from .._core import annotate, check_count, labels, operation
from .._llm_call import Call, CallPolicy, CallSpec, Charge
from .._pricing import Prices
from ..adapters import TokenUsage
from ._estimate import InputEstimator

T = TypeVar("T")

# -- the budget a wrapper draws from --------------------------------------------------------


class Limits:
    """The budget policy (``CallPolicy``) and request options one wrapper applies to every
    call. Raises ``TypeError``/``ValueError`` for bad options at construction."""

    __slots__ = ("default_max_output_tokens", "estimate_input", "policy")

    def __init__(
        self,
        budget: object,
        prices: Prices | None,
        *,
        clamp: bool,
        min_output_tokens: int,
        lease: float | None,
        default_max_output_tokens: int | None,
        estimate_input: InputEstimator | None,
        on_settle: Callable[[Charge], object] | None,
    ) -> None:
        self.policy = CallPolicy(budget, prices, clamp=clamp,
                                 min_output_tokens=min_output_tokens, lease=lease,
                                 on_settle=on_settle)
        self.default_max_output_tokens = (
            None if default_max_output_tokens is None
            else check_count(default_max_output_tokens, "default_max_output_tokens"))
        self.estimate_input = estimate_input

    def output_bound(self, requested: object, field: str) -> int:
        """The request's output bound, or the default; ``ValueError`` if there is neither."""
        if requested is None:
            if self.default_max_output_tokens is None:
                raise ValueError(f"the request has no {field}: the output bound is what makes "
                                 "the reservation safe; pass it, or set "
                                 "default_max_output_tokens on the wrapper")
            return self.default_max_output_tokens
        bound = check_count(requested, field)
        if bound < 1:
            raise ValueError(f"{field} must be >= 1")
        return bound

    async def open(self, spec: CallSpec, params: Mapping[str, Any]) -> Call:
        """Reserve for ``spec`` (see ``CallPolicy.open``), its input estimate replaced by
        ``estimate_input(params)`` (awaited if it returns an awaitable) when one was given."""
        if self.estimate_input is not None:
            value = self.estimate_input(params)
            if inspect.isawaitable(value):
                value = await value
            spec = dataclasses.replace(
                spec, input_estimate=check_count(value, "estimate_input(...)"))
        return await self.policy.open(spec)


async def call_once(limits: Limits, spec: CallSpec, params: Mapping[str, Any],
                    send: Callable[[Call], Awaitable[T]],
                    usage: Callable[[T], TokenUsage | None],
                    tool_calls: Callable[[T], int] | None = None) -> T:
    """Reserve, send, settle: refund if ``send`` raises or is cancelled (shielded). Then admit
    the result's tool calls as one batch (``tool_calls(result)``): ``BudgetExceeded`` if the
    budget cannot take them all (the call itself is settled and charged). The reservations
    are labelled with the model (and the call is a span, with telemetry on)."""
    with operation("model", spec.model):
        call = await limits.open(spec, params)
        try:
            result = await send(call)
        except BaseException:
            await call.refund()
            raise
        try:
            reported = usage(result)
        except BaseException:  # an unexpected result shape: settle, then report it
            await call.settle(None, None, final=False)
            raise
        if reported is None:
            charge = await call.settle(None, None, final=False)
        else:
            charge = await settle_usage(call, reported)
        annotate({"gen_ai.usage.input_tokens": charge.prompt_tokens,
                  "gen_ai.usage.output_tokens": charge.completion_tokens})
        if tool_calls is not None and limits.policy.caps_tool_calls:
            await limits.policy.admit_tool_calls(tool_calls(result), f"a {spec.api} response")
        return result


async def settle_usage(call: Call, usage: TokenUsage) -> Charge:
    """Settle ``call`` at the reported ``usage`` (cache reads and writes included)."""
    return await call.settle(usage.input_tokens, usage.output_tokens, final=True,
                             cached=usage.cached_input_tokens,
                             written=usage.cache_creation_input_tokens)


# -- streams ---------------------------------------------------------------------------------


class BudgetedClient:
    """What the budgeted SDK clients share: ``client`` (the wrapped SDK client) and ``limits``;
    every attribute they do not wrap is the client's; ``with_options`` / ``copy`` wrap the
    client's copy over the same budget and options; ``async with`` closes the client, as the
    SDK client's own does. A subclass's ``_setup`` adds its wrapped resources."""

    client: Any
    limits: Limits

    def _setup(self, client: Any, limits: Limits) -> None:
        self.client = client
        self.limits = limits

    @property
    def budget(self) -> object:
        """The budget every call draws from."""
        return self.limits.policy.budget

    def with_options(self, **options: Any) -> Self:
        """``client.with_options(**options)``, wrapped over the same budget and options."""
        copy = object.__new__(type(self))
        copy._setup(self.client.with_options(**options), self.limits)
        return copy

    copy = with_options

    def __getattr__(self, name: str) -> Any:
        client = self.__dict__.get("client")
        if client is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(client, name)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.client.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {self.client!r}>"


class Tally:
    """Usage a stream has reported so far. Providers fill it as events arrive."""

    __slots__ = ("cached", "final", "input", "output", "tool_calls", "written")

    def __init__(self) -> None:
        self.input: int | None = None
        self.output: int | None = None
        self.cached = 0
        """The part of ``input`` read from the prompt cache."""
        self.written = 0
        """The part of ``input`` written to the prompt cache."""
        self.final = False
        """True once the final usage (both counts) was reported."""
        self.tool_calls = 0
        """The tool calls the response asked for so far."""


class BudgetedStream(Generic[T]):
    """An SDK stream whose call is settled exactly once, when the stream ends.

    Iterate it like the SDK stream (``async for event in stream``). Use ``async with stream:``
    or ``await stream.close()`` if you may stop early: a ``break`` alone does not end it. Once
    the final usage arrived, ending the stream (reading it to the end, or closing it) also
    charges the response's tool calls as one batch: ``BudgetExceeded`` if they do not fit (the
    call itself stays charged), and then none of them should run.
    Settlement: the reported usage if the stream reported its final usage; otherwise (the
    consumer stopped early, an error or a cancellation ended it, the server sent no usage) the
    conservative figure of ``Charge`` (reported input, else the estimate, plus the whole output
    bound). Settlement and closing run shielded from cancellation. A stream that is dropped
    without being ended leaves its reservation to the garbage collector, which refunds it with a
    ``ResourceWarning``.
    """

    __slots__ = ("_call", "_iterator", "_observe", "_stream", "_tally")

    def __init__(self, stream: Any, call: Call, observe: Callable[[T, Tally], None]) -> None:
        self._stream = stream
        self._iterator: AsyncIterator[T] = stream.__aiter__()
        self._call = call
        self._observe = observe
        self._tally = Tally()

    @property
    def stream(self) -> Any:
        """The SDK stream being wrapped."""
        return self._stream

    @property
    def tally(self) -> Tally:
        """The usage reported so far."""
        return self._tally

    @property
    def charge(self) -> Charge | None:
        """How the call was settled, once the stream has ended; ``None`` before."""
        return self._call.charge

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if self._call.charge is not None:
            raise StopAsyncIteration
        try:
            event = await self._iterator.__anext__()
            self._observe(event, self._tally)
        except StopAsyncIteration:
            await self._settle(admit=True)
            raise
        except BaseException:
            await self._finish(quiet=True)
            raise
        return event

    async def close(self) -> None:
        """Stop reading, close the HTTP response and settle (idempotent, shielded)."""
        await self._finish()

    aclose = close

    async def _finish(self, *, quiet: bool = False) -> None:
        if self._call.charge is not None:
            return
        try:
            with anyio.CancelScope(shield=True):
                if quiet:  # already raising: the first error is the one to report
                    with contextlib.suppress(Exception):
                        await self._stream.close()
                else:
                    await self._stream.close()
        except BaseException:
            await self._settle(admit=False)
            raise
        await self._settle(admit=not quiet)

    async def _settle(self, *, admit: bool) -> None:
        tally = self._tally
        await self._call.settle(tally.input, tally.output, final=tally.final,
                                cached=tally.cached, written=tally.written)
        if admit and tally.final and tally.tool_calls:
            await self._call.admit_tool_calls(tally.tool_calls)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


async def open_stream(limits: Limits, spec: CallSpec, params: Mapping[str, Any],
                      send: Callable[[Call], Awaitable[Any]],
                      observe: Callable[[T, Tally], None]) -> BudgetedStream[T]:
    """Reserve and start a stream; refund if starting it raises or is cancelled. The
    reservation is labelled with the model."""
    with labels(model=spec.model):
        call = await limits.open(spec, params)
    try:
        stream = await send(call)
    except BaseException:
        await call.refund()
        raise
    return BudgetedStream(stream, call, observe)


class BudgetedStreamManager(Generic[T]):
    """What a wrapped helper ``.stream(...)`` returns (``chat.completions.stream``,
    ``messages.stream``): use it as the SDK's stream manager, ``async with llm....stream(...)
    as stream:``; ``stream`` is the SDK's own helper stream (events, ``get_final_*``, text
    iterators), untouched.

    Entering reserves (``BudgetExceeded``: nothing is sent) and opens the SDK's stream (an error
    or a cancellation refunds). Leaving closes it and settles exactly once, shielded: at the
    final usage the SDK's accumulated snapshot reports, else conservatively (as
    ``BudgetedStream``); with the final usage it then charges the response's tool calls as one
    batch (``BudgetExceeded`` on leaving if they do not fit): run the tool calls after the
    ``async with`` block. ``charge`` is the settlement once it has left.
    """

    __slots__ = ("_call", "_limits", "_manager", "_params", "_read", "_spec", "_start",
                 "_stream")

    def __init__(self, limits: Limits, spec: CallSpec, params: Mapping[str, Any],
                 start: Callable[[Call], Any],
                 read: Callable[[T], tuple[TokenUsage | None, bool, int]]) -> None:
        self._limits = limits
        self._spec = spec
        self._params = params
        self._start = start
        self._read = read
        self._call: Call | None = None
        self._manager: Any = None
        self._stream: T | None = None

    @property
    def charge(self) -> Charge | None:
        """How the call was settled, once the manager has exited; ``None`` before."""
        return None if self._call is None else self._call.charge

    async def __aenter__(self) -> T:
        if self._call is not None:
            raise RuntimeError("a budgeted stream manager can be entered once")
        with labels(model=self._spec.model):
            call = self._call = await self._limits.open(self._spec, self._params)
        try:
            self._manager = self._start(call)
            self._stream = stream = await self._manager.__aenter__()
        except BaseException:
            await call.refund()
            raise
        return stream  # type: ignore[no-any-return]

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        call = self._call
        assert call is not None
        assert self._stream is not None
        tool_calls = 0
        try:
            with anyio.CancelScope(shield=True):
                await self._manager.__aexit__(exc_type, exc, tb)
        finally:
            try:
                usage, final, tool_calls = self._read(self._stream)
            except Exception:  # no snapshot yet (nothing arrived): conservative
                usage, final = None, False
            if usage is None:
                await call.settle(None, None, final=False)
            elif final:
                await settle_usage(call, usage)
            else:
                await call.settle(usage.input_tokens, None, final=False,
                                  cached=usage.cached_input_tokens,
                                  written=usage.cache_creation_input_tokens)
        if exc_type is None and call.charge is not None and call.charge.outcome == "recorded":
            await call.admit_tool_calls(tool_calls)
