"""Budgeted ``anthropic.AsyncAnthropic``: Messages (extra ``outlay[anthropic]``).

Each ``messages.create`` reserves before the HTTP request (``BudgetExceeded`` if it cannot fit,
and then no request is sent): the prompt estimate (``system``, ``messages``, ``tools``) plus
``max_tokens``. After the call the reported usage is recorded, counting as prompt every input
token the API reports (``input_tokens + cache_creation_input_tokens +
cache_read_input_tokens``); an error or a cancellation refunds the hold. Streams
(``stream=True``) read usage from ``message_start`` and from ``message_delta``, whose counts are
cumulative: each replaces the last, never adds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

import anthropic
from anthropic.types import Message, RawMessageStreamEvent

from .._protocols import TokenBudget
from ..adapters import AnthropicStreamUsage, TokenUsage, anthropic_usage
from ._core import (
    BudgetedStream,
    Call,
    CallSpec,
    Charge,
    InputEstimator,
    Limits,
    MoneyLimit,
    Tally,
    call_once,
    estimate_prompt_tokens,
    open_stream,
)

__all__ = ("BudgetedAsyncAnthropic",)

_ABSENT = (anthropic.NotGiven, anthropic.Omit)
_PROMPT_FIELDS = ("system", "tools", "tool_choice")


def _given(params: dict[str, Any], key: str) -> Any:
    value = params.get(key)
    return None if value is None or isinstance(value, _ABSENT) else value


class BudgetedAsyncAnthropic:
    """An ``anthropic.AsyncAnthropic`` whose ``messages.create`` draws from outlay budgets.

    Options as ``BudgetedAsyncOpenAI``: ``tokens`` (any ``TokenBudget``) and/or ``money`` (a
    ``MoneyLimit``), ``clamp``/``min_output_tokens`` (lower ``max_tokens`` to what the budgets
    afford, sent in the request), ``default_max_output_tokens`` (used when ``max_tokens`` is
    missing, else ``ValueError``), ``estimate_input(params)`` (e.g. backed by the API's token
    counting endpoint) and ``on_settle(charge)``. SDK errors propagate unchanged after the
    refund. ``client`` is the wrapped client.
    """

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        *,
        tokens: TokenBudget | None = None,
        money: MoneyLimit | None = None,
        clamp: bool = False,
        min_output_tokens: int = 1,
        default_max_output_tokens: int | None = None,
        estimate_input: InputEstimator | None = None,
        on_settle: Callable[[Charge], object] | None = None,
    ) -> None:
        if not isinstance(client, anthropic.AsyncAnthropic):
            raise TypeError(f"client must be an anthropic.AsyncAnthropic, got "
                            f"{type(client).__name__}")
        self.client = client
        self.limits = Limits(tokens, money, clamp=clamp, min_output_tokens=min_output_tokens,
                             default_max_output_tokens=default_max_output_tokens,
                             estimate_input=estimate_input, on_settle=on_settle)
        self.messages = _Messages(self)


class _Messages:
    def __init__(self, owner: BudgetedAsyncAnthropic) -> None:
        self._owner = owner

    @overload
    async def create(self, *, stream: Literal[True],
                     **params: Any) -> BudgetedStream[RawMessageStreamEvent]: ...

    @overload
    async def create(self, *, stream: Literal[False] = False, **params: Any) -> Message: ...

    async def create(self, *, stream: bool = False,
                     **params: Any) -> Message | BudgetedStream[RawMessageStreamEvent]:
        """``client.messages.create(**params)`` under the budgets.

        Raises ``BudgetExceeded`` (no request sent), ``ValueError`` (no ``max_tokens`` and no
        default), ``UnknownModelPrice`` (no price for the model). With ``stream=True`` returns
        a ``BudgetedStream`` of ``RawMessageStreamEvent``.
        """
        owner = self._owner
        limits = owner.limits
        messages = list(_given(params, "messages") or ())
        if _given(params, "messages") is not None:
            params["messages"] = messages  # an iterator is read once, here
        system = 1 if _given(params, "system") is not None else 0
        spec = CallSpec(
            api="messages", model=str(_given(params, "model") or ""),
            input_estimate=limits.input_estimate(params, estimate_prompt_tokens(
                [messages, *(_given(params, f) for f in _PROMPT_FIELDS)],
                len(messages) + system)),
            max_output=limits.output_bound(_given(params, "max_tokens"), "max_tokens"),
            choices=1)

        if not stream:
            async def send(call: Call) -> Message:
                result: Message = await owner.client.messages.create(
                    **{**params, "max_tokens": call.max_output})
                return result

            return await call_once(limits, spec, send, _message_usage)

        async def start(call: Call) -> Any:
            return await owner.client.messages.create(
                **{**params, "max_tokens": call.max_output, "stream": True})

        return await open_stream(limits, spec, start, _StreamObserver())


# Usage comes from outlay.adapters, the one place that knows each provider's usage shape.

def _message_usage(message: Message) -> TokenUsage:
    usage = anthropic_usage(message)
    assert usage is not None  # a Message always carries usage
    return usage


class _StreamObserver:
    """Feeds one stream's events to an ``AnthropicStreamUsage`` (cumulative counts: replace)."""

    __slots__ = ("_started", "_usage")

    def __init__(self) -> None:
        self._usage = AnthropicStreamUsage()
        self._started = False  # final usage needs the input counts of message_start

    def __call__(self, event: RawMessageStreamEvent, tally: Tally) -> None:
        if event.type not in ("message_start", "message_delta"):
            return
        usage = self._usage.update(event)
        tally.input, tally.output = usage.input_tokens, usage.output_tokens
        tally.cached = usage.cached_input_tokens
        if event.type == "message_start":
            self._started = True
        elif event.delta.stop_reason is not None and self._started:
            tally.final = True
