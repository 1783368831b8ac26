"""Budgeted ``openai.AsyncOpenAI``: Chat Completions and Responses (extra ``outlay[openai]``).

Each call reserves before the HTTP request (``BudgetExceeded`` if it cannot fit, and then no
request is sent): the prompt estimate plus the request's output bound (``max_completion_tokens``
or ``max_tokens`` times ``n`` for Chat Completions, ``max_output_tokens`` for Responses). After
the call the reported usage is recorded; an error or a cancellation refunds the hold. Streams
ask for usage (Chat Completions: ``stream_options={"include_usage": True}``, added for you;
Responses: ``response.completed``) and settle when they end; see ``BudgetedStream``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, overload

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

from .._protocols import TokenBudget
from ..adapters import TokenUsage, openai_chat_usage, openai_responses_usage
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

__all__ = ("BudgetedAsyncOpenAI",)

_ABSENT = (openai.NotGiven, openai.Omit)
_CHAT_PROMPT_FIELDS = ("tools", "functions", "response_format", "tool_choice")
_RESPONSES_PROMPT_FIELDS = ("instructions", "tools", "text", "tool_choice")
_RESPONSES_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _given(params: Mapping[str, Any], key: str) -> Any:
    value = params.get(key)
    return None if value is None or isinstance(value, _ABSENT) else value


class BudgetedAsyncOpenAI:
    """An ``openai.AsyncOpenAI`` whose ``chat.completions.create`` and ``responses.create``
    draw from outlay budgets.

    ``tokens`` is any ``TokenBudget`` (e.g. ``AtomicTokenBudget``); ``money`` a ``MoneyLimit``
    (a ``Decimal`` limit on an ``outlay.Budget`` priced by ``TokenPrices``); give one or both.
    ``clamp=True`` lowers the request's output bound to what the budgets afford (sent in the
    request, so the API enforces it), never below ``min_output_tokens``. A request without an
    output bound uses ``default_max_output_tokens`` (sent as ``max_completion_tokens`` /
    ``max_output_tokens``) or raises ``ValueError``. ``estimate_input(params)`` replaces the
    built-in prompt estimate (``estimate_tokens``). ``on_settle(charge)`` observes every
    ``Charge``. Arguments are passed through to the SDK unchanged apart from the output bound
    and ``stream_options``; SDK errors propagate unchanged after the refund. ``client`` is the
    wrapped client, for calls that should not be budgeted.
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        tokens: TokenBudget | None = None,
        money: MoneyLimit | None = None,
        clamp: bool = False,
        min_output_tokens: int = 1,
        default_max_output_tokens: int | None = None,
        estimate_input: InputEstimator | None = None,
        on_settle: Callable[[Charge], object] | None = None,
    ) -> None:
        if not isinstance(client, openai.AsyncOpenAI):
            raise TypeError(f"client must be an openai.AsyncOpenAI, got {type(client).__name__}")
        self.client = client
        self.limits = Limits(tokens, money, clamp=clamp, min_output_tokens=min_output_tokens,
                             default_max_output_tokens=default_max_output_tokens,
                             estimate_input=estimate_input, on_settle=on_settle)
        self.chat = _Chat(self)
        self.responses = _Responses(self)


class _Chat:
    def __init__(self, owner: BudgetedAsyncOpenAI) -> None:
        self.completions = _ChatCompletions(owner)


class _ChatCompletions:
    def __init__(self, owner: BudgetedAsyncOpenAI) -> None:
        self._owner = owner

    @overload
    async def create(self, *, stream: Literal[True],
                     **params: Any) -> BudgetedStream[ChatCompletionChunk]: ...

    @overload
    async def create(self, *, stream: Literal[False] = False,
                     **params: Any) -> ChatCompletion: ...

    async def create(self, *, stream: bool = False,
                     **params: Any) -> ChatCompletion | BudgetedStream[ChatCompletionChunk]:
        """``client.chat.completions.create(**params)`` under the budgets.

        Raises ``BudgetExceeded`` (no request sent), ``ValueError`` (no output bound),
        ``UnknownModelPrice`` (no price for the model). With ``stream=True`` returns a
        ``BudgetedStream`` of ``ChatCompletionChunk``; the usage chunk (``choices == []``) is
        requested and passed through.
        """
        owner = self._owner
        limits = owner.limits
        field = ("max_completion_tokens" if _given(params, "max_completion_tokens") is not None
                 or _given(params, "max_tokens") is None else "max_tokens")
        messages = list(_given(params, "messages") or ())
        if _given(params, "messages") is not None:
            params["messages"] = messages  # an iterator is read once, here
        spec = CallSpec(
            api="chat.completions", model=str(_given(params, "model") or ""),
            input_estimate=limits.input_estimate(params, estimate_prompt_tokens(
                [messages, *(_given(params, f) for f in _CHAT_PROMPT_FIELDS)], len(messages))),
            max_output=limits.output_bound(_given(params, field), field),
            choices=_choices(_given(params, "n")))

        def request(call: Call, extra: Mapping[str, Any]) -> dict[str, Any]:
            return {**params, field: call.max_output, **extra}

        if not stream:
            async def send(call: Call) -> ChatCompletion:
                result: ChatCompletion = await owner.client.chat.completions.create(
                    **request(call, {}))
                return result

            return await call_once(limits, spec, send, _chat_usage)

        stream_options = dict(_given(params, "stream_options") or {})
        stream_options["include_usage"] = True

        async def start(call: Call) -> Any:
            return await owner.client.chat.completions.create(
                **request(call, {"stream": True, "stream_options": stream_options}))

        return await open_stream(limits, spec, start, _observe_chat)


class _Responses:
    def __init__(self, owner: BudgetedAsyncOpenAI) -> None:
        self._owner = owner

    @overload
    async def create(self, *, stream: Literal[True],
                     **params: Any) -> BudgetedStream[ResponseStreamEvent]: ...

    @overload
    async def create(self, *, stream: Literal[False] = False, **params: Any) -> Response: ...

    async def create(self, *, stream: bool = False,
                     **params: Any) -> Response | BudgetedStream[ResponseStreamEvent]:
        """``client.responses.create(**params)`` under the budgets.

        Raises as ``chat.completions.create``. Input given by reference
        (``previous_response_id``, ``conversation``, ``prompt``) is not seen by the estimate;
        the reported usage corrects the charge afterwards. With ``stream=True`` the usage comes
        from ``response.completed`` (or ``response.incomplete`` / ``response.failed``).
        """
        owner = self._owner
        limits = owner.limits
        field = "max_output_tokens"
        given_input = _given(params, "input")
        items = [given_input] if isinstance(given_input, str) else list(given_input or ())
        if given_input is not None and not isinstance(given_input, str):
            params["input"] = items  # an iterator is read once, here
        messages = len(items) + (1 if _given(params, "instructions") is not None else 0)
        spec = CallSpec(
            api="responses", model=str(_given(params, "model") or ""),
            input_estimate=limits.input_estimate(params, estimate_prompt_tokens(
                [items, *(_given(params, f) for f in _RESPONSES_PROMPT_FIELDS)], messages)),
            max_output=limits.output_bound(_given(params, field), field), choices=1)

        if not stream:
            async def send(call: Call) -> Response:
                result: Response = await owner.client.responses.create(
                    **{**params, field: call.max_output})
                return result

            return await call_once(limits, spec, send, _responses_usage)

        async def start(call: Call) -> Any:
            return await owner.client.responses.create(
                **{**params, field: call.max_output, "stream": True})

        return await open_stream(limits, spec, start, _observe_responses)


def _choices(n: object) -> int:
    if n is None:
        return 1
    if type(n) is not int or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return n


# Usage comes from outlay.adapters, the one place that knows each provider's usage shape.

def _chat_usage(completion: ChatCompletion) -> TokenUsage | None:
    return openai_chat_usage(completion)


def _observe_chat(chunk: ChatCompletionChunk, tally: Tally) -> None:
    usage = openai_chat_usage(chunk)  # only the last chunk carries usage (include_usage)
    if usage is not None:
        tally.input, tally.output = usage.input_tokens, usage.output_tokens
        tally.cached = usage.cached_input_tokens
        tally.final = True


def _responses_usage(response: Response) -> TokenUsage | None:
    return openai_responses_usage(response)


def _observe_responses(event: ResponseStreamEvent, tally: Tally) -> None:
    if event.type in _RESPONSES_FINAL:
        usage = openai_responses_usage(event)
        if usage is not None:
            tally.input, tally.output = usage.input_tokens, usage.output_tokens
            tally.cached = usage.cached_input_tokens
            tally.final = True
