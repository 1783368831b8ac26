"""pydantic-ai integration: an agent capability that holds every model request and every tool-call
batch on the budget object, and runs tool calls through outlay's hook chain.

Install with the ``pydantic-ai`` extra (``pydantic-ai-slim``). Importing this module imports
pydantic-ai; ``import outlay`` does not.

Enforced *before* a call:

- every model request makes ONE reservation on ``budget`` (``wrap_model_request``) of the units
  it caps among ``tokens`` (input estimate + output bound), ``input_tokens``,
  ``output_tokens``, ``usd`` (priced by ``prices``) and one of ``requests``; a request that
  does not fit raises ``BudgetExceeded`` and is never sent. The output bound is the request's
  ``max_tokens`` setting, else ``max_output_tokens``, which is then sent as ``max_tokens`` so
  the provider enforces it;
- the function-tool calls of each response are charged to ``tool_calls`` as one batch, before
  any of them runs: all of them fit or ``BudgetExceeded`` ends the run and none runs;
- every tool call passes the ``tool_hooks`` chain (``wrap_tool_execute``, after pydantic-ai
  validated the arguments): ``Skip`` returns the skip output to the model instead of running
  the tool, ``Terminate`` ends the run with ``DispatchTerminated``.

Only observed *after* a call: the usage a request step really used (every response pydantic-ai
counted for it, committed on the reservation; an overshoot beyond the hold is committed, never
lost, and the next request that does not fit is refused) and a tool's result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from .._core import Budget
from .._extras import missing_extra
from .._llm_call import Call, CallPolicy, CallSpec
from .._pricing import Prices
from ..clients import estimate_prompt_tokens
from ..hooks import ToolDispatchHook, ToolInvocation
from ._common import HookChain, check_estimate

try:
    from pydantic_ai import RunContext
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.capabilities.abstract import (
        ValidatedToolArgs,
        WrapModelRequestHandler,
        WrapToolExecuteHandler,
    )
    from pydantic_ai.messages import (
        ModelMessage,
        ModelMessagesTypeAdapter,
        ModelResponse,
        ToolCallPart,
    )
    from pydantic_ai.models import ModelRequestContext, ModelRequestParameters
    from pydantic_ai.tools import ToolDefinition
    from pydantic_ai.usage import RequestUsage
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_extra(__name__, "pydantic-ai-slim", "pydantic-ai") from exc

__all__ = ("OutlayCapability", "estimate_messages_input", "estimate_request_input")

InputEstimate = Callable[[ModelRequestContext], int]
"""Computes the input tokens to hold for one model request."""


def estimate_request_input(request_context: ModelRequestContext) -> int:
    """The default input estimate of one request: ``estimate_messages_input`` of its messages
    and request parameters."""
    return estimate_messages_input(request_context.messages,
                                   request_context.model_request_parameters)


def estimate_messages_input(messages: list[ModelMessage],
                            parameters: ModelRequestParameters) -> int:
    """The input estimate of ``messages`` sent with ``parameters``.

    ``outlay.clients.estimate_prompt_tokens`` (the budgeted clients' estimate) of the messages
    as JSON data (binary content counts at its base64 size, so images are over-estimated) and
    the tool definitions, with one message overhead per message part.
    """
    tools = [_tool_fields(tool)
             for tool in (*parameters.function_tools, *parameters.output_tools)]
    return estimate_prompt_tokens(
        [ModelMessagesTypeAdapter.dump_python(messages, mode="json"), tools],
        sum(len(message.parts) for message in messages))


def _tool_fields(tool: ToolDefinition) -> list[object]:
    return [tool.name, tool.description, tool.parameters_json_schema]


@dataclass
class OutlayCapability(AbstractCapability[Any]):
    """Budgets and hooks for a pydantic-ai ``Agent``: ``Agent(model, capabilities=[cap])``.

    ``budget``: the budget object (``outlay.Budget(usd=Decimal("0.50"), tokens=100_000,
    tool_calls=20)``, or one on a store, windowed, per principal); ``None`` for hooks only.
    ``prices`` (one ``TokenPrices``, a mapping model name -> ``TokenPrices`` or a
    ``PriceTable``) is required when the budget caps ``usd``. Before each model request
    (once per request step, around every attempt and fallback of that step) the request is
    held as the module says: ``estimate_input`` (an ``int``, a function of the
    ``ModelRequestContext``, or by default ``estimate_request_input``) plus the output bound
    (``max_tokens``, else ``max_output_tokens``, sent). After the step the reservation is
    committed at the usage of every response pydantic-ai counted for it (attempts a fallback
    rejected and the partial response of a stream whose consumer failed included; where this
    pydantic-ai version does not expose that, the usage of the response the step ends with),
    cache reads and writes priced at their own rates. A step that raises or is cancelled with
    no response counted is refunded. Then the response's function-tool calls are charged as
    one batch of ``tool_calls`` or ``BudgetExceeded`` is raised (none of them runs). Every
    commit and refund runs shielded from cancellation. ``lease`` is the seconds a hold lives.

    ``tool_hooks``: outlay ``ToolDispatchHook``s (``ToolCallLimitHook``, approval, your own)
    run around every function-tool call, in order, as a ``ToolDispatcher`` runs them; their
    state is shared by every agent and run that uses them. ``ToolInvocation.call_id`` is
    pydantic-ai's ``tool_call_id``, ``arguments`` the validated arguments, ``principal`` this
    capability's ``principal``, ``metadata`` ``{"framework": "pydantic-ai", "run_step": ...}``.
    A tool's exception (``ModelRetry`` included) reaches the hooks' ``on_invocation_error``
    and then pydantic-ai unchanged.

    One capability (or several over the same budget) can govern many concurrent (sub-)agents:
    they all draw from the one budget.
    """

    budget: Budget | None = None
    _: KW_ONLY
    prices: Prices | None = None
    tool_hooks: Sequence[ToolDispatchHook] = ()
    estimate_input: int | InputEstimate | None = None
    max_output_tokens: int = 4096
    principal: str | None = None
    lease: float | None = None
    _chain: HookChain = field(init=False, repr=False, compare=False)
    _policy: CallPolicy | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._chain = HookChain(self.tool_hooks)
        self._policy = (None if self.budget is None
                        else CallPolicy(self.budget, self.prices, lease=self.lease))
        if self.estimate_input is not None and not callable(self.estimate_input):
            check_estimate(self.estimate_input, "estimate_input")
        check_estimate(self.max_output_tokens, "max_output_tokens")

    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: ValidatedToolArgs,
        handler: WrapToolExecuteHandler,
    ) -> Any:
        """Run the call through ``tool_hooks``; a skipped call returns the skip output."""
        if not self._chain.hooks:
            return await handler(args)
        invocation = ToolInvocation(call.tool_call_id, call.tool_name, args, self.principal,
                                    {"framework": "pydantic-ai", "run_step": ctx.run_step})
        result = await self._chain.run(invocation, lambda: handler(args))
        return result.output

    async def wrap_model_request(
        self,
        ctx: RunContext[Any],
        *,
        request_context: ModelRequestContext,
        handler: WrapModelRequestHandler,
    ) -> ModelResponse:
        """Reserve, send the request, commit its usage (refund on error), then charge the
        response's tool-call batch."""
        policy = self._policy
        if policy is None:
            return await handler(request_context)
        settings = dict(request_context.model_settings or {})
        max_tokens = settings.get("max_tokens")
        if not (isinstance(max_tokens, int) and max_tokens >= 0):
            max_tokens = self.max_output_tokens
            settings["max_tokens"] = max_tokens  # the provider enforces the bound held
            request_context.model_settings = settings  # type: ignore[assignment]
        estimate = self.estimate_input
        if estimate is None:
            input_estimate = estimate_request_input(request_context)
        elif callable(estimate):
            input_estimate = check_estimate(estimate(request_context), "estimate_input(...)")
        else:
            input_estimate = estimate
        model = request_context.model.model_name
        call = await policy.open(CallSpec("pydantic-ai", model, input_estimate, max_tokens))
        try:
            response = await handler(request_context)
        except BaseException:
            billed = _billed_usage(request_context)
            if billed is None:
                await call.refund()
            else:
                await _settle(call, billed)
            raise
        await _settle(call, _billed_usage(request_context) or response.usage)
        functions = {tool.name for tool in
                     request_context.model_request_parameters.function_tools}
        batch = sum(1 for part in response.parts
                    if isinstance(part, ToolCallPart) and part.tool_name in functions)
        await policy.admit_tool_calls(batch, f"a response of {model}")
        return response


async def _settle(call: Call, usage: RequestUsage) -> None:
    await call.settle(usage.input_tokens, usage.output_tokens, final=True,
                      cached=usage.cache_read_tokens, written=usage.cache_write_tokens)


def _billed_usage(request_context: ModelRequestContext) -> RequestUsage | None:
    """The usage of every response pydantic-ai counted for this request step, summed.

    pydantic-ai keeps them on the request context (``_usage_responses``, private but read by
    its own instrumentation): they include attempts a fallback rejected and the partial
    response of a stream whose consumer failed. ``None`` when the attribute is missing (another
    pydantic-ai version) or holds no response: the caller falls back to the public figures.
    """
    responses = getattr(request_context, "_usage_responses", None)
    if not isinstance(responses, tuple) or not responses:
        return None
    if not all(isinstance(r, ModelResponse) for r in responses):
        return None
    total = RequestUsage()
    for response in responses:
        total = total + response.usage
    return total
