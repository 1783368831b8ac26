"""OpenAI Agents SDK integration: function tools wrapped in outlay's hook chain, and a ``Model``
wrapper that holds tokens on a ``TokenBudget`` around every model call.

Install with the ``openai-agents`` extra. Importing this module imports the SDK (``agents``);
``import outlay`` does not. The SDK runs on asyncio only.

Enforced *before* a call:

- a wrapped ``FunctionTool`` (``wrap_tool`` / ``wrap_tools``; agents-as-tools included) passes
  the hook chain before its ``on_invoke_tool`` runs: ``Skip`` returns the skip output to the
  model instead of running the tool, ``Terminate`` ends the run with ``DispatchTerminated``;
- ``OutlayModel`` holds a token estimate before every ``get_response`` / ``stream_response``
  of the model it wraps; a call that does not fit raises ``BudgetExceeded`` and is never sent.

Only observed *after* a call: the usage the model reported (``ModelResponse.usage``, or the
``response.completed`` event of a stream), recorded on the reservation; a tool's result. The
SDK's ``RunHooks`` / ``AgentHooks`` (``on_tool_start``, ``on_llm_start``) can only observe, so
outlay does not use them for enforcement. Hosted tools (web search, file search, code
interpreter...) run on the provider's side and cannot be wrapped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from agents.agent_output import AgentOutputSchemaBase
from agents.exceptions import AgentsException
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.tool import FunctionTool, Tool
from agents.tool_context import ToolContext
from openai.types.responses.response_prompt_param import ResponsePromptParam

from .._core import DispatchTerminated, TokenReservation
from .._protocols import TokenBudget
from ..clients import estimate_prompt_tokens
from ..hooks import ToolDispatchHook, ToolInvocation
from ._common import (
    HookChain,
    check_estimate,
    hold_tokens,
    refund_tokens,
    settle_tokens,
)

__all__ = ("ModelCallInput", "OutlayModel", "OutlayModelProvider", "estimate_call_tokens",
           "wrap_tool", "wrap_tools")

_FRAMEWORK = "openai-agents"


def wrap_tool(tool: FunctionTool, hooks: Sequence[ToolDispatchHook], *,
              principal: str | None = None) -> FunctionTool:
    """A copy of ``tool`` whose every invocation passes ``hooks`` first.

    The ``ToolInvocation`` carries the SDK's ``tool_call_id`` and tool name, the arguments
    parsed from the model's JSON (``{}`` if they are not a JSON object: the SDK then reports
    the bad input itself, inside the tool) with ``raw_arguments`` the JSON text, ``principal``,
    and ``metadata={"framework": "openai-agents", "agent": <agent name or None>}``.

    The SDK turns a tool's exception into an error string for the model *inside*
    ``on_invoke_tool`` (its ``failure_error_function``), so the hooks see such a failure as a
    completed call (``DispatchBudgetHook`` charges it by default). A tool run with
    ``failure_error_function=None`` raises instead: the hooks see the exception. The copy has
    no ``__wrapped__`` callable (the SDK ties that to its own invoker).
    """
    if not isinstance(tool, FunctionTool):
        raise TypeError(f"only FunctionTool can be wrapped, got {type(tool).__name__}")
    return _wrap(tool, HookChain(hooks), principal)


def _wrap(tool: FunctionTool, chain: HookChain, principal: str | None) -> FunctionTool:
    inner = tool.on_invoke_tool
    name = tool.name

    async def on_invoke_tool(ctx: ToolContext[Any], input_json: str) -> Any:
        invocation = _invocation(ctx, name, input_json, principal)
        try:
            result = await chain.run(invocation, lambda: inner(ctx, input_json))
        except DispatchTerminated as exc:
            if isinstance(exc, AgentsException):
                raise
            raise _RunTerminated(exc.reason, invocation=exc.invocation) from exc
        return result.output

    return dataclasses.replace(tool, on_invoke_tool=on_invoke_tool)


class _RunTerminated(DispatchTerminated, AgentsException):
    """``DispatchTerminated`` that the SDK lets through unwrapped (it wraps every exception of
    a tool that is not an ``AgentsException`` in its ``UserError``)."""


def wrap_tools(tools: Iterable[Tool], hooks: Sequence[ToolDispatchHook], *,
               principal: str | None = None) -> list[Tool]:
    """``wrap_tool`` for every ``FunctionTool`` of ``tools``; other tools are kept as they are
    (hosted tools run on the provider's side and never reach the hooks)."""
    chain = HookChain(hooks)
    return [_wrap(t, chain, principal) if isinstance(t, FunctionTool) else t
            for t in tools]


def _invocation(ctx: ToolContext[Any], name: str, input_json: str,
                principal: str | None) -> ToolInvocation:
    arguments: dict[str, Any] = {}
    if input_json:
        try:
            parsed = json.loads(input_json)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            arguments = parsed
    agent = getattr(ctx, "agent", None)
    return ToolInvocation(ctx.tool_call_id, name, arguments, principal,
                          {"framework": _FRAMEWORK, "agent": getattr(agent, "name", None)},
                          input_json if isinstance(input_json, str) else None)


@dataclasses.dataclass(frozen=True, slots=True)
class ModelCallInput:
    """What a token estimate sees of one model call."""

    system_instructions: str | None
    input: str | list[TResponseInputItem]
    model_settings: ModelSettings
    tools: list[Tool]
    handoffs: list[Handoff]


TokenEstimate = Callable[[ModelCallInput], int]


def estimate_call_tokens(call: ModelCallInput, *, max_output_tokens: int = 1024) -> int:
    """The default estimate for one model call: input + output bound.

    Input: ``outlay.clients.estimate_prompt_tokens`` (the budgeted clients' estimate) of the
    instructions, the input items, and the function tools' and handoffs' names, descriptions
    and parameter schemas, with one message overhead per input item and for the instructions.
    Output: the call's ``model_settings.max_tokens``, or ``max_output_tokens`` when it has none.
    """
    items: list[object] = [call.input] if isinstance(call.input, str) else list(call.input)
    tools: list[object] = [[tool.name, tool.description, tool.params_json_schema]
                           for tool in call.tools if isinstance(tool, FunctionTool)]
    tools += [[handoff.tool_name, handoff.tool_description, handoff.input_json_schema]
              for handoff in call.handoffs]
    messages = len(items) + (1 if call.system_instructions is not None else 0)
    prompt = estimate_prompt_tokens([call.system_instructions, items, tools], messages)
    max_tokens = call.model_settings.max_tokens
    output = max_tokens if isinstance(max_tokens, int) and max_tokens >= 0 else max_output_tokens
    return prompt + output


class OutlayModel(Model):
    """An Agents SDK ``Model`` that holds tokens on ``token_budget`` around ``model``'s calls.

    Use it wherever the SDK takes a model: ``Agent(model=OutlayModel(model, budget))`` or
    ``RunConfig(model=...)``. ``wrapped`` is the model; attributes it does not define (the
    ``model`` name, provider features the SDK probes for) are read from the wrapped model.

    Before each call it holds ``estimate`` tokens (an ``int``, a function of a
    ``ModelCallInput``, or by default ``estimate_call_tokens`` with ``max_output_tokens``) and
    raises ``BudgetExceeded`` if they do not fit; nothing is sent.

    ``get_response``: records ``usage.input_tokens + usage.output_tokens`` of the response;
    refunds the hold if the call raises or is cancelled. ``stream_response``: records the usage
    of the ``response.completed`` event. A stream that fails or is closed before its first event
    is refunded; one that ends (normally, by error or by the consumer closing it) after events
    arrived but without a usage report is charged the whole estimate (the conservative figure:
    the provider has billed an unknown part of it). Every record and refund runs shielded.
    """

    def __init__(self, model: Model, token_budget: TokenBudget, *,
                 estimate: int | TokenEstimate | None = None,
                 max_output_tokens: int = 1024) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"model must be an agents Model, got {type(model).__name__}")
        if not isinstance(token_budget, TokenBudget):
            raise TypeError(f"token_budget must be a TokenBudget, got "
                            f"{type(token_budget).__name__}")
        if estimate is not None and not callable(estimate):
            check_estimate(estimate)
        self.wrapped = model
        self.token_budget = token_budget
        self._estimate = estimate
        self._max_output_tokens = check_estimate(max_output_tokens, "max_output_tokens")

    async def _hold(self, call: ModelCallInput) -> TokenReservation:
        estimate = self._estimate
        if estimate is None:
            tokens = estimate_call_tokens(call, max_output_tokens=self._max_output_tokens)
        elif callable(estimate):
            tokens = estimate(call)
        else:
            tokens = estimate
        what = f"a call to {type(self.wrapped).__name__}"
        return await hold_tokens(self.token_budget, tokens, what)

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        """Hold the estimate, call the wrapped model, record the reported usage."""
        reservation = await self._hold(
            ModelCallInput(system_instructions, input, model_settings, tools, handoffs))
        try:
            response = await self.wrapped.get_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs,
                tracing, previous_response_id=previous_response_id,
                conversation_id=conversation_id, prompt=prompt)
        except BaseException:
            await refund_tokens(reservation)
            raise
        usage = response.usage
        await settle_tokens(self.token_budget, reservation, usage.input_tokens,
                            usage.output_tokens)
        return response

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """Hold the estimate, relay the wrapped stream, settle when it ends (see the class)."""
        reservation = await self._hold(
            ModelCallInput(system_instructions, input, model_settings, tools, handoffs))
        usage: tuple[int, int] | None = None
        started = False
        try:
            async for event in self.wrapped.stream_response(
                    system_instructions, input, model_settings, tools, output_schema, handoffs,
                    tracing, previous_response_id=previous_response_id,
                    conversation_id=conversation_id, prompt=prompt):
                started = True
                if getattr(event, "type", None) == "response.completed":
                    reported = getattr(getattr(event, "response", None), "usage", None)
                    if reported is not None:
                        usage = (reported.input_tokens, reported.output_tokens)
                yield event
        except BaseException:
            await self._settle_stream(reservation, usage, started)
            raise
        await self._settle_stream(reservation, usage, started)

    async def _settle_stream(self, reservation: TokenReservation, usage: tuple[int, int] | None,
                             started: bool) -> None:
        if usage is not None:
            await settle_tokens(self.token_budget, reservation, *usage)
        elif started:
            await settle_tokens(self.token_budget, reservation, reservation.estimate, 0)
        else:
            await refund_tokens(reservation)

    async def close(self) -> None:
        """Close the wrapped model."""
        await self.wrapped.close()

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.wrapped._cleanup_on_run_end(owner)

    def get_retry_advice(self, request: Any) -> Any:
        """The wrapped model's retry advice."""
        return self.wrapped.get_retry_advice(request)

    def __getattr__(self, name: str) -> Any:
        # Attributes the SDK looks up by duck typing (the ``model`` name, prompt-cache support)
        # come from the wrapped model.
        wrapped = self.__dict__.get("wrapped")
        if wrapped is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(wrapped, name)

    def __repr__(self) -> str:
        return f"<OutlayModel {type(self.wrapped).__name__}>"


class OutlayModelProvider(ModelProvider):
    """A ``ModelProvider`` whose every model is an ``OutlayModel`` over ``token_budget``.

    For agents whose model is a name (``Agent(model="gpt-...")``):
    ``RunConfig(model_provider=OutlayModelProvider(MultiProvider(), budget))``. ``estimate`` and
    ``max_output_tokens`` are passed to each ``OutlayModel``.
    """

    def __init__(self, provider: ModelProvider, token_budget: TokenBudget, *,
                 estimate: int | TokenEstimate | None = None,
                 max_output_tokens: int = 1024) -> None:
        if not isinstance(provider, ModelProvider):
            raise TypeError(f"provider must be an agents ModelProvider, got "
                            f"{type(provider).__name__}")
        if estimate is not None and not callable(estimate):
            check_estimate(estimate)
        if not isinstance(token_budget, TokenBudget):
            raise TypeError(f"token_budget must be a TokenBudget, got "
                            f"{type(token_budget).__name__}")
        self.provider = provider
        self.token_budget = token_budget
        self._estimate = estimate
        self._max_output_tokens = check_estimate(max_output_tokens, "max_output_tokens")

    def get_model(self, model_name: str | None) -> Model:
        """The wrapped provider's model for ``model_name``, inside an ``OutlayModel``."""
        return OutlayModel(self.provider.get_model(model_name), self.token_budget,
                           estimate=self._estimate, max_output_tokens=self._max_output_tokens)

    async def aclose(self) -> None:
        """Close the wrapped provider."""
        await self.provider.aclose()
