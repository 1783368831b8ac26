"""OpenAI Agents SDK integration: a ``Model`` wrapper that holds every model call and every
tool-call batch on the budget object, and function tools wrapped in outlay's hook chain.

Install with the ``openai-agents`` extra. Importing this module imports the SDK (``agents``);
``import outlay`` does not. The SDK runs on asyncio only.

Enforced *before* a call:

- ``OutlayModel`` makes ONE reservation on the budget before every ``get_response`` /
  ``stream_response`` of the model it wraps, of the units the budget caps among ``tokens``
  (input estimate + output bound), ``input_tokens``, ``output_tokens``, ``usd`` (priced by
  ``prices``) and one of ``requests``; a call that does not fit raises ``BudgetExceeded`` and is
  never sent. The output bound is ``model_settings.max_tokens``, else ``max_output_tokens``,
  which is then sent as ``max_tokens`` so the provider enforces it;
- the function-tool calls of each response are charged to ``tool_calls`` as one batch before
  the SDK runs any of them: all fit, or ``BudgetExceeded`` ends the run and none runs;
- a wrapped ``FunctionTool`` (``wrap_tool`` / ``wrap_tools``; agents-as-tools included) passes
  the hook chain before its ``on_invoke_tool`` runs: ``Skip`` returns the skip output to the
  model instead of running the tool, ``Terminate`` ends the run with ``RunTerminated`` (a
  ``DispatchTerminated``).

Only observed *after* a call: the usage the model reported (``ModelResponse.usage``, or the
``response.completed`` event of a stream), committed on the reservation; a tool's result. The
SDK's ``RunHooks`` / ``AgentHooks`` (``on_tool_start``, ``on_llm_start``) can only observe, so
outlay does not use them for enforcement. Hosted tools (web search, file search, code
interpreter...) run on the provider's side and cannot be wrapped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from .._core import Budget, DispatchTerminated
from .._extras import missing_extra
from .._llm_call import Call, CallPolicy, CallSpec
from .._pricing import Prices
from ..clients import estimate_prompt_tokens
from ..hooks import ToolDispatchHook, ToolInvocation
from ._common import HookChain, check_estimate

try:
    from agents.agent_output import AgentOutputSchemaBase
    from agents.exceptions import AgentsException
    from agents.handoffs import Handoff
    from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
    from agents.model_settings import ModelSettings
    from agents.models.interface import Model, ModelProvider, ModelTracing
    from agents.tool import FunctionTool, Tool
    from agents.tool_context import ToolContext
    from openai.types.responses.response_prompt_param import ResponsePromptParam
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_extra(__name__, "openai-agents", "openai-agents") from exc

__all__ = ("ModelCallInput", "OutlayModel", "OutlayModelProvider", "RunTerminated",
           "estimate_call_input", "wrap_tool", "wrap_tools")

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
            raise RunTerminated(exc.reason, invocation=exc.invocation) from exc
        return result.output

    return dataclasses.replace(tool, on_invoke_tool=on_invoke_tool)


class RunTerminated(DispatchTerminated, AgentsException):
    """A hook's ``Terminate`` ended the run: raised by ``Runner.run`` out of a wrapped tool.

    It is both an ``outlay.DispatchTerminated`` (``reason``, ``invocation``) and an
    ``agents.exceptions.AgentsException``, which the SDK lets through unwrapped (it wraps
    every other exception a tool raises in its ``UserError``). Catch either."""


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


InputEstimate = Callable[[ModelCallInput], int]
"""Computes the input tokens to hold for one model call."""


def estimate_call_input(call: ModelCallInput) -> int:
    """The default input estimate for one model call.

    ``outlay.clients.estimate_prompt_tokens`` (the budgeted clients' estimate) of the
    instructions, the input items, and the function tools' and handoffs' names, descriptions
    and parameter schemas, with one message overhead per input item and for the instructions.
    """
    items: list[object] = [call.input] if isinstance(call.input, str) else list(call.input)
    tools: list[object] = [[tool.name, tool.description, tool.params_json_schema]
                           for tool in call.tools if isinstance(tool, FunctionTool)]
    tools += [[handoff.tool_name, handoff.tool_description, handoff.input_json_schema]
              for handoff in call.handoffs]
    messages = len(items) + (1 if call.system_instructions is not None else 0)
    return estimate_prompt_tokens([call.system_instructions, items, tools], messages)


class OutlayModel(Model):
    """An Agents SDK ``Model`` whose every call draws from ``budget``.

    Use it wherever the SDK takes a model: ``Agent(model=OutlayModel(model, budget))`` or
    ``RunConfig(model=...)``. ``wrapped`` is the model; attributes it does not define (the
    ``model`` name, provider features the SDK probes for) are read from the wrapped model.

    ``budget`` is the budget object (``outlay.Budget(usd=Decimal("0.50"), tokens=100_000,
    tool_calls=20)``, or one on a store, windowed, per principal); ``prices`` is required when
    it caps ``usd``, and the price is looked up by ``model_name`` (default: the wrapped model's
    ``model`` attribute). Each call holds ``estimate_input`` (an ``int``, a function of a
    ``ModelCallInput``, or by default ``estimate_call_input``) plus the output bound
    (``model_settings.max_tokens``, else ``max_output_tokens``, sent) as the module says, and
    raises ``BudgetExceeded`` if it does not fit; nothing is sent.

    ``get_response``: commits the response's usage (cache reads at their rate); refunds the
    hold if the call raises or is cancelled; then charges the response's function-tool calls
    as one batch. ``stream_response``: the same from the ``response.completed`` event. A
    stream that fails or is closed before its first event is refunded; one that ends after
    events arrived but without a usage report is charged the whole hold (the conservative
    figure: the provider has billed an unknown part of it). Every commit and refund runs
    shielded. ``lease`` is the seconds a hold lives.
    """

    def __init__(self, model: Model, budget: Budget, *, prices: Prices | None = None,
                 estimate_input: int | InputEstimate | None = None,
                 max_output_tokens: int = 4096, model_name: str | None = None,
                 lease: float | None = None) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"model must be an agents Model, got {type(model).__name__}")
        self._setup(model, CallPolicy(budget, prices, lease=lease), estimate_input,
                    max_output_tokens, model_name)

    def _setup(self, model: Model, policy: CallPolicy,
               estimate_input: int | InputEstimate | None, max_output_tokens: int,
               model_name: str | None) -> None:
        if estimate_input is not None and not callable(estimate_input):
            check_estimate(estimate_input, "estimate_input")
        self.wrapped = model
        self.policy = policy
        self._estimate = estimate_input
        self._max_output_tokens = check_estimate(max_output_tokens, "max_output_tokens")
        self._model_name = model_name

    @property
    def budget(self) -> Budget:
        """The budget every call draws from."""
        return self.policy.budget

    async def _open(self, call: ModelCallInput) -> tuple[Call, ModelSettings]:
        settings = call.model_settings
        bound = settings.max_tokens
        if not (isinstance(bound, int) and bound >= 0):
            bound = self._max_output_tokens
            settings = dataclasses.replace(settings, max_tokens=bound)  # the provider enforces it
        estimate = self._estimate
        if estimate is None:
            input_estimate = estimate_call_input(call)
        elif callable(estimate):
            input_estimate = check_estimate(estimate(call), "estimate_input(...)")
        else:
            input_estimate = estimate
        name = self._model_name or str(getattr(self.wrapped, "model", "") or "")
        opened = await self.policy.open(CallSpec("openai-agents", name, input_estimate, bound))
        return opened, settings

    async def _admit_tool_calls(self, output: Sequence[Any], tools: list[Tool]) -> None:
        functions = {tool.name for tool in tools if isinstance(tool, FunctionTool)}
        batch = sum(1 for item in output if getattr(item, "type", None) == "function_call"
                    and getattr(item, "name", None) in functions)
        await self.policy.admit_tool_calls(batch, f"a response of {type(self.wrapped).__name__}")

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
        """Reserve, call the wrapped model, commit the reported usage, charge the tool calls."""
        call, model_settings = await self._open(
            ModelCallInput(system_instructions, input, model_settings, tools, handoffs))
        try:
            response = await self.wrapped.get_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs,
                tracing, previous_response_id=previous_response_id,
                conversation_id=conversation_id, prompt=prompt)
        except BaseException:
            await call.refund()
            raise
        await _settle(call, response.usage)
        await self._admit_tool_calls(response.output, tools)
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
        """Reserve, relay the wrapped stream, settle when it ends (see the class)."""
        call, model_settings = await self._open(
            ModelCallInput(system_instructions, input, model_settings, tools, handoffs))
        completed: Any = None
        started = False
        try:
            async for event in self.wrapped.stream_response(
                    system_instructions, input, model_settings, tools, output_schema, handoffs,
                    tracing, previous_response_id=previous_response_id,
                    conversation_id=conversation_id, prompt=prompt):
                started = True
                if getattr(event, "type", None) == "response.completed":
                    completed = getattr(event, "response", None)
                    await self._settle_stream(call, completed, started)
                    await self._admit_tool_calls(getattr(completed, "output", ()), tools)
                yield event
        finally:
            await self._settle_stream(call, completed, started)

    @staticmethod
    async def _settle_stream(call: Call, completed: Any, started: bool) -> None:
        if call.charge is not None:
            return
        usage = getattr(completed, "usage", None)
        if usage is not None:
            details = getattr(usage, "input_tokens_details", None)
            await call.settle(usage.input_tokens, usage.output_tokens, final=True,
                              cached=getattr(details, "cached_tokens", 0) or 0)
        elif started:
            await call.settle(None, None, final=False)
        else:
            await call.refund()

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


async def _settle(call: Call, usage: Any) -> None:
    details = getattr(usage, "input_tokens_details", None)
    await call.settle(usage.input_tokens, usage.output_tokens, final=True,
                      cached=getattr(details, "cached_tokens", 0) or 0)


class OutlayModelProvider(ModelProvider):
    """A ``ModelProvider`` whose every model is an ``OutlayModel`` over ``budget``.

    For agents whose model is a name (``Agent(model="gpt-...")``):
    ``RunConfig(model_provider=OutlayModelProvider(MultiProvider(), budget, prices=...))``.
    The options are passed to each ``OutlayModel``; prices are looked up by the model name.
    """

    def __init__(self, provider: ModelProvider, budget: Budget, *,
                 prices: Prices | None = None,
                 estimate_input: int | InputEstimate | None = None,
                 max_output_tokens: int = 4096, lease: float | None = None) -> None:
        if not isinstance(provider, ModelProvider):
            raise TypeError(f"provider must be an agents ModelProvider, got "
                            f"{type(provider).__name__}")
        if estimate_input is not None and not callable(estimate_input):
            check_estimate(estimate_input, "estimate_input")
        self.provider = provider
        self.policy = CallPolicy(budget, prices, lease=lease)
        self._estimate = estimate_input
        self._max_output_tokens = check_estimate(max_output_tokens, "max_output_tokens")

    def get_model(self, model_name: str | None) -> Model:
        """The wrapped provider's model for ``model_name``, inside an ``OutlayModel``."""
        model = OutlayModel.__new__(OutlayModel)
        model._setup(self.provider.get_model(model_name), self.policy, self._estimate,
                     self._max_output_tokens, model_name)
        return model

    async def aclose(self) -> None:
        """Close the wrapped provider."""
        await self.provider.aclose()
