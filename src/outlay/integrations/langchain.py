"""LangChain v1 and LangGraph integration: every model call held on the budget object before it
is sent, every tool call through outlay's hook chain.

Install with the ``langchain`` extra (``langchain`` and ``langgraph``). Importing this module
imports ``langchain_core`` and ``langchain.agents``; ``import outlay`` does not.

Three pieces over one policy:

- ``OutlayMiddleware``: an ``AgentMiddleware`` for ``langchain.agents.create_agent``
  (``middleware=[OutlayMiddleware(budget)]``). Its ``awrap_model_call`` holds each model call,
  its ``awrap_tool_call`` runs each tool call through the hooks. LangGraph's prebuilt
  ``ToolNode`` takes the same method: ``ToolNode(tools, awrap_tool_call=mw.awrap_tool_call)``.
- ``BudgetedChatModel``: any ``BaseChatModel`` wrapped so that every call of it, from any
  LangGraph node, chain or agent, is held the same way (``BudgetedChatModel(model, budget)``).
  Use it where no middleware runs (a hand-written graph node calling ``model.ainvoke``). It is
  what callbacks cannot be: a callback handler sees neither a cancelled call (LangChain does
  not report a cancellation to ``on_llm_error``) nor gets to refuse after a partial failure,
  so a hold taken in a callback could only wait for its lease.

Enforced *before* a call:

- a model call makes ONE reservation of the units the budget caps among ``tokens`` (input
  estimate + output bound), ``input_tokens``, ``output_tokens``, ``usd`` (priced by
  ``prices`` for the model's name) and one of ``requests``, or raises ``BudgetExceeded`` and is
  never sent. The output bound is the call's ``max_tokens`` (model setting or bound keyword),
  else ``max_output_tokens``, which is then sent as ``max_tokens`` so the provider enforces it;
- the tool calls of a response are charged to ``tool_calls`` as one batch, before any of them
  runs: all of them fit, or ``BudgetExceeded`` ends the run and none runs;
- every tool call passes the ``tool_hooks`` chain (``DispatchBudgetHook``,
  ``ToolCallLimitHook``, approval, egress, your own): ``Skip`` answers the model with a
  ``ToolMessage`` holding the skip output instead of running the tool, ``Terminate`` ends the
  run with ``DispatchTerminated``. Calls of one response run concurrently (as ``ToolNode``
  runs them); each passes the chain on its own, so a budget hook admits what fits.

Only observed *after* a call: the usage the provider reported (``AIMessage.usage_metadata``,
cache reads and writes priced at their own rates), committed on the reservation — an overshoot
is committed, never lost, and the next call that no longer fits is refused. A call with no
reported usage is charged its whole hold. A call that raises or is cancelled is refunded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import RunnableBinding
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, PrivateAttr

from .._core import Budget
from .._llm_call import Call, CallPolicy, CallSpec
from .._pricing import Prices
from ..clients import estimate_prompt_tokens
from ..hooks import ToolDispatchHook, ToolInvocation
from ._common import HookChain, check_estimate

__all__ = ("BudgetedChatModel", "OutlayMiddleware", "estimate_messages_input")

InputEstimate = Callable[[Sequence[BaseMessage], Sequence[object]], int]
"""Computes the input tokens to hold for one model call from its messages and tools."""


def estimate_messages_input(messages: Sequence[BaseMessage], tools: Sequence[object] = ()) -> int:
    """The default input estimate of one call: ``outlay.clients.estimate_prompt_tokens`` of the
    messages as data and of the tools as OpenAI tool schemas, one overhead per message."""
    schemas = [_tool_schema(tool) for tool in tools]
    return estimate_prompt_tokens([[m.model_dump(mode="json") for m in messages], schemas],
                                  len(messages))


def _tool_schema(tool: object) -> object:
    try:
        return convert_to_openai_tool(tool)  # type: ignore[arg-type]
    except Exception:  # an unusual tool spec: count it as its text
        return repr(tool)


def _unbound(model: object) -> tuple[object, dict[str, Any]]:
    """The chat model under ``model.bind(...)`` bindings, and the keywords they bind."""
    bound: dict[str, Any] = {}
    while isinstance(model, RunnableBinding):
        bound = {**model.kwargs, **bound}
        model = model.bound
    return model, bound


def model_name(model: object) -> str:
    """The name a chat model is priced by: its ``model_name``, else ``model``, else its type
    (through ``bind(...)`` bindings)."""
    model = _unbound(model)[0]
    for attribute in ("model_name", "model", "model_id"):
        name = getattr(model, attribute, None)
        if isinstance(name, str) and name:
            return name
    llm_type = getattr(model, "_llm_type", None)
    return llm_type if isinstance(llm_type, str) else type(model).__name__


class _ModelCalls:
    """The policy both pieces apply to one model call: hold, send, settle, charge tool calls."""

    __slots__ = ("estimate_input", "max_output_tokens", "policy")

    def __init__(self, budget: Budget, prices: Prices | None, estimate_input: int |
                 InputEstimate | None, max_output_tokens: int, lease: float | None) -> None:
        self.policy = CallPolicy(budget, prices, lease=lease)
        if estimate_input is not None and not callable(estimate_input):
            check_estimate(estimate_input, "estimate_input")
        self.estimate_input = estimate_input
        self.max_output_tokens = check_estimate(max_output_tokens, "max_output_tokens")

    def bound(self, settings: dict[str, Any], model: object) -> int:
        """The output bound of a call; sets ``max_tokens`` in ``settings`` when none is set."""
        inner, bound = _unbound(model)
        for value in (settings.get("max_tokens"), bound.get("max_tokens"),
                      getattr(inner, "max_tokens", None)):
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
        settings["max_tokens"] = self.max_output_tokens
        return self.max_output_tokens

    async def open(self, api: str, model: object, messages: Sequence[BaseMessage],
                   tools: Sequence[object], bound: int) -> Call:
        estimate = self.estimate_input
        if estimate is None:
            input_estimate = estimate_messages_input(messages, tools)
        elif callable(estimate):
            input_estimate = check_estimate(estimate(messages, tools), "estimate_input(...)")
        else:
            input_estimate = estimate
        return await self.policy.open(CallSpec(api, model_name(model), input_estimate, bound))

    async def settle(self, call: Call, messages: Iterable[BaseMessage]) -> None:
        """Commit the reported usage of the call's AI messages, then charge their tool calls."""
        replies = [m for m in messages if isinstance(m, AIMessage)]
        usages = [m.usage_metadata for m in replies if m.usage_metadata is not None]
        if not usages:
            await call.settle(None, None, final=False)
        else:
            details = [u.get("input_token_details") or {} for u in usages]
            await call.settle(sum(u["input_tokens"] for u in usages),
                              sum(u["output_tokens"] for u in usages), final=True,
                              cached=sum(d.get("cache_read", 0) or 0 for d in details),
                              written=sum(d.get("cache_creation", 0) or 0 for d in details))
        batch = sum(len(m.tool_calls) for m in replies)
        await self.policy.admit_tool_calls(batch, f"a response of {call.spec.model}")


class OutlayMiddleware(AgentMiddleware[Any, Any, Any]):
    """Budgets and hooks for a LangChain agent: ``create_agent(model, tools,
    middleware=[OutlayMiddleware(budget, prices=...)])``.

    ``budget``: the budget object (``outlay.Budget(usd=Decimal("0.50"), tokens=100_000,
    tool_calls=20)``, or one on a store, windowed, per principal); ``None`` for hooks only.
    ``prices`` (one ``TokenPrices``, a mapping model name -> ``TokenPrices`` or a
    ``PriceTable``) is required when the budget caps ``usd``. Each model call is held, sent,
    settled and its tool calls charged as the module says; ``estimate_input`` (an ``int`` or a
    function of the messages and tools; default ``estimate_messages_input``) and
    ``max_output_tokens`` (the bound sent when the call names none) shape the hold; ``lease``
    is the seconds a hold lives.

    ``tool_hooks``: outlay ``ToolDispatchHook``s run around every tool call, in order, as a
    ``ToolDispatcher`` runs them; their state is shared by every agent that uses them.
    ``ToolInvocation.call_id`` is the tool call's id, ``arguments`` its arguments,
    ``principal`` this middleware's ``principal``, ``metadata`` ``{"framework": "langchain"}``.
    A tool's exception reaches the hooks' ``on_invocation_error`` and then LangChain unchanged.
    """

    def __init__(
        self,
        budget: Budget | None = None,
        *,
        prices: Prices | None = None,
        tool_hooks: Sequence[ToolDispatchHook] = (),
        estimate_input: int | InputEstimate | None = None,
        max_output_tokens: int = 1024,
        principal: str | None = None,
        lease: float | None = None,
    ) -> None:
        super().__init__()
        self._chain = HookChain(tool_hooks)
        self._calls = (None if budget is None else
                       _ModelCalls(budget, prices, estimate_input, max_output_tokens, lease))
        self.principal = principal

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        """Hold the call, send it, commit its usage (refund on error or cancellation), then
        charge the response's tool-call batch."""
        calls = self._calls
        if calls is None:
            return await handler(request)
        settings = dict(request.model_settings)
        bound = calls.bound(settings, request.model)
        messages = ([request.system_message] if request.system_message is not None
                    else []) + list(request.messages)
        call = await calls.open("langchain", request.model, messages, request.tools, bound)
        try:
            response = await handler(request.override(model_settings=settings))
        except BaseException:
            await call.refund()
            raise
        await calls.settle(call, response.result)
        return response

    async def awrap_tool_call(
        self,
        request: Any,
        handler: Callable[[Any], Awaitable[ToolMessage | Any]],
    ) -> ToolMessage | Any:
        """Run the tool call through ``tool_hooks``; a skipped call answers with its output."""
        if not self._chain.hooks:
            return await handler(request)
        tool_call = request.tool_call
        invocation = ToolInvocation(tool_call["id"] or "", tool_call["name"],
                                    dict(tool_call["args"]), self.principal,
                                    {"framework": "langchain"})
        result = await self._chain.run(invocation, lambda: handler(request))
        if result.skipped:
            return ToolMessage(content=str(result.output), tool_call_id=tool_call["id"],
                               name=tool_call["name"],
                               status="error" if result.is_error else "success")
        return result.output


class BudgetedChatModel(BaseChatModel):
    """A chat model whose every call is held on ``budget`` before it is sent.

    ``BudgetedChatModel(model=ChatOpenAI(...), budget=budget, prices=...)``: use it wherever
    the model was used (``ainvoke``, ``astream`` yields once the call is settled,
    ``bind_tools``, LangGraph nodes, agents). The options are ``OutlayMiddleware``'s; calls are
    async only (a sync call raises ``RuntimeError``: a budget store is async).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: BaseChatModel
    budget: Budget
    prices: Any = None
    estimate_input: Any = None
    max_output_tokens: int = 1024
    lease: float | None = None
    _calls: _ModelCalls = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._calls = _ModelCalls(self.budget, self.prices, self.estimate_input,
                                  self.max_output_tokens, self.lease)

    @property
    def _llm_type(self) -> str:
        return f"outlay-budgeted-{self.model._llm_type}"

    @property
    def model_name(self) -> str:
        """The wrapped model's name (what calls are priced by)."""
        return model_name(self.model)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Bind ``tools`` as the wrapped model formats them; calls still go through the
        budget."""
        bound = self.model.bind_tools(tools, **kwargs)
        return self.bind(**getattr(bound, "kwargs", {}))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        raise RuntimeError("BudgetedChatModel is async only: use ainvoke/astream/abatch")

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        calls = self._calls
        bound = calls.bound(kwargs, self.model)
        call = await calls.open("langchain", self.model, messages, kwargs.get("tools", ()),
                                bound)
        try:
            result = await self.model._agenerate(messages, stop=stop, run_manager=run_manager,
                                                 **kwargs)
        except BaseException:
            await call.refund()
            raise
        await calls.settle(call, [generation.message for generation in result.generations])
        return result
