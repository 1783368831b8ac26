"""Budgeted ``anthropic.AsyncAnthropic``: Messages (extra ``outlay[anthropic]``).

Each ``messages.create`` makes ONE reservation on the budget before the HTTP request
(``BudgetExceeded`` if it cannot fit, and then no request is sent): the units the budget caps
among ``tokens`` (prompt estimate of ``system``, ``messages``, ``tools`` + ``max_tokens``),
``input_tokens``, ``output_tokens``, ``usd`` and one of ``requests``. After the call the
reported usage is committed, counting as prompt every input token the API reports
(``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``; cache reads and
writes priced at their own rates); an error or a cancellation refunds the hold. The answer's
``tool_use`` blocks are then admitted as one batch of ``tool_calls``. Streams (``stream=True``)
read usage from ``message_start`` and from ``message_delta``, whose counts are cumulative: each
replaces the last, never adds. Everything not wrapped (``messages.count_tokens``,
``base_url``, ``models``...) is the wrapped client's own attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

from .._extras import missing_extra
from .._llm_call import Call, CallSpec, Charge
from .._pricing import Prices
from ..adapters import AnthropicStreamUsage, TokenUsage, anthropic_usage
from ._core import (
    BudgetedClient,
    BudgetedStream,
    BudgetedStreamManager,
    Limits,
    Tally,
    call_once,
    open_stream,
)
from ._estimate import InputEstimator, estimate_prompt_tokens

try:
    import anthropic
    from anthropic.types import Message, RawMessageStreamEvent
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_extra(__name__, "anthropic", "anthropic") from exc

__all__ = ("BudgetedAsyncAnthropic",)

_ABSENT = (anthropic.NotGiven, anthropic.Omit)
_PROMPT_FIELDS = ("system", "tools", "tool_choice")
_UNBUDGETED = frozenset({"with_raw_response", "with_streaming_response"})


def _given(params: dict[str, Any], key: str) -> Any:
    value = params.get(key)
    return None if value is None or isinstance(value, _ABSENT) else value


class BudgetedAsyncAnthropic(BudgetedClient):
    """An ``anthropic.AsyncAnthropic`` whose ``messages.create`` and ``messages.stream`` draw from
    ``budget``.

    Options as ``BudgetedAsyncOpenAI``: ``budget`` (the budget object) and ``prices`` (required
    when it caps ``usd``), ``clamp``/``min_output_tokens`` (lower ``max_tokens`` to what the
    budget affords, sent in the request), ``default_max_output_tokens`` (used when
    ``max_tokens`` is missing, else ``ValueError``), ``estimate_input(params)`` (sync or async,
    e.g. backed by ``messages.count_tokens``), ``lease`` and ``on_settle(charge)``. SDK errors
    propagate unchanged after the refund. Every other attribute is the wrapped client's;
    ``with_options`` / ``copy`` return a wrapped copy over the same budget. ``client`` is the
    wrapped client.
    """

    client: anthropic.AsyncAnthropic

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        budget: object,
        *,
        prices: Prices | None = None,
        clamp: bool = False,
        min_output_tokens: int = 1,
        default_max_output_tokens: int | None = None,
        estimate_input: InputEstimator | None = None,
        lease: float | None = None,
        on_settle: Callable[[Charge], object] | None = None,
    ) -> None:
        if not isinstance(client, anthropic.AsyncAnthropic):
            raise TypeError(f"client must be an anthropic.AsyncAnthropic, got "
                            f"{type(client).__name__}")
        self._setup(client, Limits(
            budget, prices, clamp=clamp, min_output_tokens=min_output_tokens, lease=lease,
            default_max_output_tokens=default_max_output_tokens,
            estimate_input=estimate_input, on_settle=on_settle))

    def _setup(self, client: anthropic.AsyncAnthropic, limits: Limits) -> None:
        super()._setup(client, limits)
        self.messages = _Messages(self)


class _Messages:
    __slots__ = ("_owner",)

    def __init__(self, owner: BudgetedAsyncAnthropic) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        if name in _UNBUDGETED:
            raise AttributeError(f"{name} is not budgeted by outlay; call it on the wrapped "
                                 "client (llm.client) for unbudgeted calls")
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._owner.client.messages, name)

    @overload
    async def create(self, *, stream: Literal[True],
                     **params: Any) -> BudgetedStream[RawMessageStreamEvent]: ...

    @overload
    async def create(self, *, stream: Literal[False] = False, **params: Any) -> Message: ...

    async def create(self, *, stream: bool = False,
                     **params: Any) -> Message | BudgetedStream[RawMessageStreamEvent]:
        """``client.messages.create(**params)`` under the budget.

        Raises ``BudgetExceeded`` (no request sent; or, after a paid answer, when its tool
        calls do not fit), ``ValueError`` (no ``max_tokens`` and no default),
        ``UnknownModelPrice`` (no price for the model). With ``stream=True`` returns a
        ``BudgetedStream`` of ``RawMessageStreamEvent``.
        """
        limits = self._owner.limits
        raw = self._owner.client.messages
        spec = self._spec(params)

        if not stream:
            async def send(call: Call) -> Message:
                result: Message = await raw.create(**{**params, "max_tokens": call.max_output})
                return result

            return await call_once(limits, spec, params, send, _message_usage, _tool_uses)

        async def start(call: Call) -> Any:
            return await raw.create(**{**params, "max_tokens": call.max_output, "stream": True})

        return await open_stream(limits, spec, params, start, _StreamObserver())

    def stream(self, **params: Any) -> BudgetedStreamManager[Any]:
        """``client.messages.stream(**params)`` under the budget: ``async with`` it as the
        SDK's manager (``text_stream``, ``get_final_message()`` ...); reserves on entry, settles
        on exit from the SDK's message snapshot. Raises as ``create``; see
        ``BudgetedStreamManager``."""
        spec = self._spec(params)
        raw = self._owner.client.messages

        def start(call: Call) -> Any:
            return raw.stream(**{**params, "max_tokens": call.max_output})

        return BudgetedStreamManager(self._owner.limits, spec, params, start, _snapshot_usage)

    def _spec(self, params: dict[str, Any]) -> CallSpec:
        limits = self._owner.limits
        messages = list(_given(params, "messages") or ())
        if _given(params, "messages") is not None:
            params["messages"] = messages  # an iterator is read once, here
        system = 1 if _given(params, "system") is not None else 0
        return CallSpec(
            api="messages", model=str(_given(params, "model") or ""),
            input_estimate=estimate_prompt_tokens(
                [messages, *(_given(params, f) for f in _PROMPT_FIELDS)],
                len(messages) + system),
            max_output=limits.output_bound(_given(params, "max_tokens"), "max_tokens"))


# Usage comes from outlay.adapters, the one place that knows each provider's usage shape.

def _message_usage(message: Message) -> TokenUsage:
    usage = anthropic_usage(message)
    assert usage is not None  # a Message always carries usage
    return usage


def _snapshot_usage(stream: Any) -> tuple[TokenUsage | None, bool, int]:
    snapshot = stream.current_message_snapshot  # usage accumulated from the stream's events
    return anthropic_usage(snapshot), snapshot.stop_reason is not None, _tool_uses(snapshot)


def _tool_uses(message: Any) -> int:
    return sum(1 for block in message.content if block.type == "tool_use")


class _StreamObserver:
    """Feeds one stream's events to an ``AnthropicStreamUsage`` (cumulative counts: replace)."""

    __slots__ = ("_started", "_usage")

    def __init__(self) -> None:
        self._usage = AnthropicStreamUsage()
        self._started = False  # final usage needs the input counts of message_start

    def __call__(self, event: RawMessageStreamEvent, tally: Tally) -> None:
        if event.type == "content_block_start" and event.content_block.type == "tool_use":
            tally.tool_calls += 1
        if event.type not in ("message_start", "message_delta"):
            return
        usage = self._usage.update(event)
        tally.input, tally.output = usage.input_tokens, usage.output_tokens
        tally.cached = usage.cached_input_tokens
        tally.written = usage.cache_creation_input_tokens
        if event.type == "message_start":
            self._started = True
        elif event.delta.stop_reason is not None and self._started:
            tally.final = True
