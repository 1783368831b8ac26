"""Budgeted ``openai.AsyncOpenAI``: Chat Completions, Responses, embeddings (``outlay[openai]``).

Each call makes ONE reservation on the budget before the HTTP request (``BudgetExceeded`` if it
cannot fit, and then no request is sent), holding the units the budget caps: ``tokens`` (prompt
estimate + output bound), ``input_tokens``, ``output_tokens``, ``usd`` (that, priced) and one
of ``requests``. The output bound is ``max_completion_tokens`` or ``max_tokens`` times ``n``
for Chat Completions, ``max_output_tokens`` for Responses, 0 for embeddings. After the call the
reported usage is committed; an error or a cancellation refunds the hold. A response's tool
calls are then admitted as one batch of ``tool_calls`` (all or none). Streams ask for usage
(Chat Completions: ``stream_options={"include_usage": True}``, added for you; Responses:
``response.completed``) and settle when they end; see ``BudgetedStream``.

Everything not wrapped is the wrapped client's own attribute (``base_url``, ``models``,
``with_options``...), so the wrapper works where an ``AsyncOpenAI`` is expected (pydantic-ai's
``OpenAIProvider(openai_client=...)``, the Agents SDK's models).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, overload

from .._extras import missing_extra
from .._llm_call import Call, CallSpec, Charge
from .._pricing import Prices
from ..adapters import TokenUsage, openai_chat_usage, openai_responses_usage
from ._core import (
    BudgetedClient,
    BudgetedStream,
    BudgetedStreamManager,
    Limits,
    Tally,
    call_once,
    open_stream,
)
from ._estimate import InputEstimator, estimate_prompt_tokens, estimate_tokens

try:
    import openai
    from openai.types import CreateEmbeddingResponse
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.responses import Response, ResponseStreamEvent
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_extra(__name__, "openai", "openai") from exc

__all__ = ("BudgetedAsyncOpenAI",)

_ABSENT = (openai.NotGiven, openai.Omit)
_CHAT_PROMPT_FIELDS = ("tools", "functions", "response_format", "tool_choice")
_RESPONSES_PROMPT_FIELDS = ("instructions", "tools", "text", "tool_choice")
_RESPONSES_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_UNBUDGETED = frozenset({"with_raw_response", "with_streaming_response"})


def _given(params: Mapping[str, Any], key: str) -> Any:
    value = params.get(key)
    return None if value is None or isinstance(value, _ABSENT) else value


class _Passthrough:
    """A wrapped SDK resource: what it does not define is the raw resource's attribute, except
    the raw-response views, which would bypass the budget."""

    __slots__ = ("_owner",)

    def __init__(self, owner: BudgetedAsyncOpenAI) -> None:
        self._owner = owner

    def _raw(self) -> Any:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        if name in _UNBUDGETED:
            raise AttributeError(f"{name} is not budgeted by outlay; call it on the wrapped "
                                 "client (llm.client) for unbudgeted calls")
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._raw(), name)


class BudgetedAsyncOpenAI(BudgetedClient):
    """An ``openai.AsyncOpenAI`` whose paid calls draw from ``budget``.

    Wrapped: ``chat.completions.create`` / ``parse`` / ``stream``, ``responses.create`` /
    ``parse`` / ``stream`` and ``embeddings.create``; every other attribute is the wrapped
    client's (``with_options`` and ``copy`` return a wrapped copy over the same budget).
    ``budget`` is the budget object (``outlay.Budget(...)``); ``prices`` (one ``TokenPrices``, a
    mapping model -> ``TokenPrices`` or a ``PriceTable``) is required when it caps ``usd``.
    ``clamp=True`` lowers the request's output bound to what the budget affords (sent in the
    request, so the API enforces it), never below ``min_output_tokens``. A request without an
    output bound uses ``default_max_output_tokens`` (sent as ``max_completion_tokens`` /
    ``max_output_tokens``) or raises ``ValueError``. ``estimate_input(params)`` (sync or async,
    e.g. a count-tokens endpoint) replaces the built-in prompt estimate (``estimate_tokens``).
    ``lease`` is the seconds a hold lives (default: the budget's). ``on_settle(charge)``
    observes every ``Charge``. Arguments are passed to the SDK unchanged apart from the output
    bound and ``stream_options``; SDK errors propagate unchanged after the refund. ``client`` is
    the wrapped client, for calls that should not be budgeted.
    """

    client: openai.AsyncOpenAI

    def __init__(
        self,
        client: openai.AsyncOpenAI,
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
        if not isinstance(client, openai.AsyncOpenAI):
            raise TypeError(f"client must be an openai.AsyncOpenAI, got {type(client).__name__}")
        self._setup(client, Limits(
            budget, prices, clamp=clamp, min_output_tokens=min_output_tokens, lease=lease,
            default_max_output_tokens=default_max_output_tokens,
            estimate_input=estimate_input, on_settle=on_settle))

    def _setup(self, client: openai.AsyncOpenAI, limits: Limits) -> None:
        super()._setup(client, limits)
        self.chat = _Chat(self)
        self.responses = _Responses(self)
        self.embeddings = _Embeddings(self)


class _Chat(_Passthrough):
    __slots__ = ("completions",)

    def __init__(self, owner: BudgetedAsyncOpenAI) -> None:
        super().__init__(owner)
        self.completions = _ChatCompletions(owner)

    def _raw(self) -> Any:
        return self._owner.client.chat


class _ChatCompletions(_Passthrough):
    __slots__ = ()

    def _raw(self) -> Any:
        return self._owner.client.chat.completions

    @overload
    async def create(self, *, stream: Literal[True],
                     **params: Any) -> BudgetedStream[ChatCompletionChunk]: ...

    @overload
    async def create(self, *, stream: Literal[False] = False,
                     **params: Any) -> ChatCompletion: ...

    async def create(self, *, stream: bool = False,
                     **params: Any) -> ChatCompletion | BudgetedStream[ChatCompletionChunk]:
        """``client.chat.completions.create(**params)`` under the budget.

        Raises ``BudgetExceeded`` (no request sent; or, after a paid response, when its tool
        calls do not fit), ``ValueError`` (no output bound), ``UnknownModelPrice`` (no price
        for the model). With ``stream=True`` returns a ``BudgetedStream`` of
        ``ChatCompletionChunk``; the usage chunk (``choices == []``) is requested and passed
        through.
        """
        if not stream:
            return await self._once("create", params)  # type: ignore[no-any-return]
        field, spec = self._spec(params)
        stream_options = dict(_given(params, "stream_options") or {})
        stream_options["include_usage"] = True

        async def start(call: Call) -> Any:
            return await self._raw().create(**{**params, field: call.max_output, "stream": True,
                                               "stream_options": stream_options})

        return await open_stream(self._owner.limits, spec, params, start, _ChatObserver())

    async def parse(self, **params: Any) -> Any:
        """``client.chat.completions.parse(**params)`` (structured output) under the budget;
        raises as ``create``."""
        return await self._once("parse", params)

    def stream(self, **params: Any) -> BudgetedStreamManager[Any]:
        """``client.chat.completions.stream(**params)`` under the budget: ``async with`` it as
        the SDK's manager; reserves on entry, settles on exit from the SDK's snapshot (the usage
        chunk is requested). Raises as ``create``; see ``BudgetedStreamManager``."""
        field, spec = self._spec(params)
        stream_options = dict(_given(params, "stream_options") or {})
        stream_options["include_usage"] = True

        def start(call: Call) -> Any:
            return self._raw().stream(**{**params, field: call.max_output,
                                         "stream_options": stream_options})

        return BudgetedStreamManager(self._owner.limits, spec, params, start, _chat_snapshot_usage)

    async def _once(self, method: str, params: dict[str, Any]) -> Any:
        field, spec = self._spec(params)

        async def send(call: Call) -> Any:
            return await getattr(self._raw(), method)(**{**params, field: call.max_output})

        return await call_once(self._owner.limits, spec, params, send, _chat_usage,
                               _chat_tool_calls)

    def _spec(self, params: dict[str, Any]) -> tuple[str, CallSpec]:
        limits = self._owner.limits
        field = ("max_completion_tokens" if _given(params, "max_completion_tokens") is not None
                 or _given(params, "max_tokens") is None else "max_tokens")
        messages = list(_given(params, "messages") or ())
        if _given(params, "messages") is not None:
            params["messages"] = messages  # an iterator is read once, here
        return field, CallSpec(
            api="chat.completions", model=str(_given(params, "model") or ""),
            input_estimate=estimate_prompt_tokens(
                [messages, *(_given(params, f) for f in _CHAT_PROMPT_FIELDS)], len(messages)),
            max_output=limits.output_bound(_given(params, field), field),
            choices=_choices(_given(params, "n")))


class _Responses(_Passthrough):
    __slots__ = ()

    def _raw(self) -> Any:
        return self._owner.client.responses

    @overload
    async def create(self, *, stream: Literal[True],
                     **params: Any) -> BudgetedStream[ResponseStreamEvent]: ...

    @overload
    async def create(self, *, stream: Literal[False] = False, **params: Any) -> Response: ...

    async def create(self, *, stream: bool = False,
                     **params: Any) -> Response | BudgetedStream[ResponseStreamEvent]:
        """``client.responses.create(**params)`` under the budget.

        Raises as ``chat.completions.create``. Input given by reference
        (``previous_response_id``, ``conversation``, ``prompt``) is not seen by the estimate;
        the reported usage corrects the charge afterwards. With ``stream=True`` the usage comes
        from ``response.completed`` (or ``response.incomplete`` / ``response.failed``).
        """
        if not stream:
            return await self._once("create", params)  # type: ignore[no-any-return]
        spec = self._spec(params)

        async def start(call: Call) -> Any:
            return await self._raw().create(
                **{**params, "max_output_tokens": call.max_output, "stream": True})

        return await open_stream(self._owner.limits, spec, params, start, _observe_responses)

    async def parse(self, **params: Any) -> Any:
        """``client.responses.parse(**params)`` (structured output) under the budget; raises
        as ``create``."""
        return await self._once("parse", params)

    def stream(self, **params: Any) -> BudgetedStreamManager[Any]:
        """``client.responses.stream(**params)`` under the budget: ``async with`` it as the
        SDK's manager; reserves on entry, settles on exit at the usage of the completed
        response (read where the SDK's stream keeps it; conservative if it is not there).
        Raises as ``create``; see ``BudgetedStreamManager``."""
        spec = self._spec(params)

        def start(call: Call) -> Any:
            return self._raw().stream(**{**params, "max_output_tokens": call.max_output})

        return BudgetedStreamManager(self._owner.limits, spec, params, start,
                                     _responses_stream_usage)

    async def _once(self, method: str, params: dict[str, Any]) -> Any:
        spec = self._spec(params)

        async def send(call: Call) -> Any:
            return await getattr(self._raw(), method)(
                **{**params, "max_output_tokens": call.max_output})

        return await call_once(self._owner.limits, spec, params, send, _responses_usage,
                               _responses_tool_calls)

    def _spec(self, params: dict[str, Any]) -> CallSpec:
        limits = self._owner.limits
        field = "max_output_tokens"
        given_input = _given(params, "input")
        items = [given_input] if isinstance(given_input, str) else list(given_input or ())
        if given_input is not None and not isinstance(given_input, str):
            params["input"] = items  # an iterator is read once, here
        messages = len(items) + (1 if _given(params, "instructions") is not None else 0)
        return CallSpec(
            api="responses", model=str(_given(params, "model") or ""),
            input_estimate=estimate_prompt_tokens(
                [items, *(_given(params, f) for f in _RESPONSES_PROMPT_FIELDS)], messages),
            max_output=limits.output_bound(_given(params, field), field))


class _Embeddings(_Passthrough):
    __slots__ = ()

    def _raw(self) -> Any:
        return self._owner.client.embeddings

    async def create(self, **params: Any) -> CreateEmbeddingResponse:
        """``client.embeddings.create(**params)`` under the budget: holds the input estimate
        (``estimate_tokens`` of ``input``, or ``estimate_input``) and one request; settles at
        the reported ``prompt_tokens``. Raises ``BudgetExceeded`` (nothing sent) and
        ``UnknownModelPrice``."""
        limits = self._owner.limits
        given = _given(params, "input")
        if given is not None and not isinstance(given, str):
            params["input"] = given = list(given)  # an iterator is read once, here
        spec = CallSpec(api="embeddings", model=str(_given(params, "model") or ""),
                        input_estimate=estimate_tokens(given),
                        max_output=0)

        async def send(call: Call) -> CreateEmbeddingResponse:
            result: CreateEmbeddingResponse = await self._raw().create(**params)
            return result

        return await call_once(limits, spec, params, send, _embedding_usage)


def _choices(n: object) -> int:
    if n is None:
        return 1
    if type(n) is not int or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return n


# Usage comes from outlay.adapters, the one place that knows each provider's usage shape.

def _chat_usage(completion: ChatCompletion) -> TokenUsage | None:
    return openai_chat_usage(completion)


def _chat_tool_calls(completion: Any) -> int:
    """The tool calls the answer asks for (of the choice that asks for most: one is run)."""
    return max((len(choice.message.tool_calls or ()) for choice in completion.choices),
               default=0)


def _chat_snapshot_usage(stream: Any) -> tuple[TokenUsage | None, bool, int]:
    snapshot = stream.current_completion_snapshot
    usage = openai_chat_usage(snapshot)  # set by the usage chunk
    return usage, usage is not None, _chat_tool_calls(snapshot)


class _ChatObserver:
    """Counts a chat stream's tool calls (a new one starts with its ``id``) per choice, and
    takes the usage chunk."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, int] = {}

    def __call__(self, chunk: ChatCompletionChunk, tally: Tally) -> None:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                if call.id:
                    self._calls[choice.index] = self._calls.get(choice.index, 0) + 1
        if self._calls:
            tally.tool_calls = max(self._calls.values())
        usage = openai_chat_usage(chunk)  # only the last chunk carries usage (include_usage)
        if usage is not None:
            _tally(tally, usage)


def _tally(tally: Tally, usage: TokenUsage) -> None:
    tally.input, tally.output = usage.input_tokens, usage.output_tokens
    tally.cached = usage.cached_input_tokens
    tally.written = usage.cache_creation_input_tokens
    tally.final = True


def _responses_usage(response: Response) -> TokenUsage | None:
    return openai_responses_usage(response)


def _responses_tool_calls(response: Any) -> int:
    output = getattr(response, "output", None) or ()
    return sum(1 for item in output if item.type in ("function_call", "custom_tool_call"))


def _observe_responses(event: ResponseStreamEvent, tally: Tally) -> None:
    if event.type in _RESPONSES_FINAL:
        usage = openai_responses_usage(event)
        if usage is not None:
            _tally(tally, usage)
        tally.tool_calls = _responses_tool_calls(getattr(event, "response", None))


def _responses_stream_usage(stream: Any) -> tuple[TokenUsage | None, bool, int]:
    # The SDK keeps the completed response on its stream state (no public snapshot); without
    # it the call is settled conservatively, never under the hold.
    completed = getattr(getattr(stream, "_state", None), "_completed_response", None)
    if completed is None:
        return None, False, 0
    usage = openai_responses_usage(completed)
    return usage, usage is not None, _responses_tool_calls(completed)


def _embedding_usage(response: CreateEmbeddingResponse) -> TokenUsage | None:
    usage = response.usage
    return None if usage is None else TokenUsage(input_tokens=usage.prompt_tokens)
