"""pydantic-ai integration: an agent capability that runs tool calls through outlay's hook chain
and model requests through a ``TokenBudget``.

Install with the ``pydantic-ai`` extra (``pydantic-ai-slim``). Importing this module imports
pydantic-ai; ``import outlay`` does not.

Enforced *before* a call:

- every tool call the model asked for passes the ``tool_hooks`` chain (``wrap_tool_execute``,
  after pydantic-ai validated the arguments): a budget or limit hook that does not admit it
  returns ``Skip`` (the tool does not run; the model gets the skip output as the tool's return
  value) or ``Terminate`` (``DispatchTerminated`` ends the run);
- every model request holds its token estimate on ``token_budget`` (``wrap_model_request``); a
  request that does not fit raises ``BudgetExceeded`` and is never sent.

Only observed *after* a call: the tokens a request step really used (every response pydantic-ai
counted for it, recorded on the reservation; an overage beyond the estimate is counted, never
lost) and a tool's result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.capabilities.abstract import (
    ValidatedToolArgs,
    WrapModelRequestHandler,
    WrapToolExecuteHandler,
)
from pydantic_ai.messages import ModelMessagesTypeAdapter, ModelResponse, ToolCallPart
from pydantic_ai.models import ModelRequestContext
from pydantic_ai.tools import ToolDefinition

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

__all__ = ("OutlayCapability", "estimate_request_tokens")

TokenEstimate = Callable[[ModelRequestContext], int]
"""Computes the tokens to hold before one model request."""


def estimate_request_tokens(request_context: ModelRequestContext, *,
                            max_output_tokens: int = 1024) -> int:
    """The default estimate for one request: input + output bound.

    Input: ``outlay.clients.estimate_prompt_tokens`` (the budgeted clients' estimate) of the
    request's messages as JSON data (binary content counts at its base64 size, so images are
    over-estimated) and the tool definitions, with one message overhead per message part.
    Output: the request's ``max_tokens`` model setting, or ``max_output_tokens`` when it has
    none.
    """
    messages = request_context.messages
    parameters = request_context.model_request_parameters
    tools = [_tool_fields(tool)
             for tool in (*parameters.function_tools, *parameters.output_tools)]
    prompt = estimate_prompt_tokens(
        [ModelMessagesTypeAdapter.dump_python(messages, mode="json"), tools],
        sum(len(message.parts) for message in messages))
    settings = request_context.model_settings or {}
    max_tokens = settings.get("max_tokens")
    output = max_tokens if isinstance(max_tokens, int) and max_tokens >= 0 else max_output_tokens
    return prompt + output


def _tool_fields(tool: ToolDefinition) -> list[object]:
    return [tool.name, tool.description, tool.parameters_json_schema]


@dataclass
class OutlayCapability(AbstractCapability[Any]):
    """Budgets and hooks for a pydantic-ai ``Agent``: ``Agent(model, capabilities=[cap])``.

    ``tool_hooks``: outlay ``ToolDispatchHook``s (``DispatchBudgetHook``,
    ``ToolCallLimitHook``, your own) run around every function-tool call, in order, as a
    ``ToolDispatcher`` runs them; their state (budgets, counts) is shared by every agent and
    run that uses hooks over the same budgets, so one capability can govern many concurrent
    (sub-)agents. ``ToolInvocation.call_id`` is pydantic-ai's ``tool_call_id``, ``arguments``
    the validated arguments, ``principal`` this capability's ``principal``, ``metadata``
    ``{"framework": "pydantic-ai", "run_step": ...}``. A tool's exception (``ModelRetry``
    included) reaches the hooks' ``on_invocation_error`` and then pydantic-ai unchanged.

    ``token_budget``: before each model request (once per request step, around every attempt
    and fallback of that step) hold ``estimate`` tokens (an ``int``, a function of the
    ``ModelRequestContext``, or by default ``estimate_request_tokens`` with
    ``max_output_tokens``); raise ``BudgetExceeded`` if it does not fit. After the step, record
    ``input_tokens + output_tokens`` of every response pydantic-ai counted for it (attempts a
    fallback rejected and the partial response of a stream whose consumer failed included);
    where this pydantic-ai version does not expose that, the usage of the response the step
    ends with. A step that raises or is cancelled with no response counted is refunded. Every
    record and refund runs shielded from cancellation.
    """

    tool_hooks: Sequence[ToolDispatchHook] = ()
    token_budget: TokenBudget | None = None
    estimate: int | TokenEstimate | None = None
    _: KW_ONLY
    max_output_tokens: int = 1024
    principal: str | None = None
    _chain: HookChain = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._chain = HookChain(self.tool_hooks)
        if self.token_budget is not None and not isinstance(self.token_budget, TokenBudget):
            raise TypeError(f"token_budget must be a TokenBudget, got "
                            f"{type(self.token_budget).__name__}")
        if self.estimate is not None and not callable(self.estimate):
            check_estimate(self.estimate)
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
        """Hold the estimate, send the request, record its usage (refund on error)."""
        budget = self.token_budget
        if budget is None:
            return await handler(request_context)
        if self.estimate is None:
            estimate = estimate_request_tokens(request_context,
                                               max_output_tokens=self.max_output_tokens)
        elif callable(self.estimate):
            estimate = self.estimate(request_context)
        else:
            estimate = self.estimate
        what = f"a request to {request_context.model.model_name}"
        reservation = await hold_tokens(budget, estimate, what)
        try:
            response = await handler(request_context)
        except BaseException:
            billed = _billed_usage(request_context)
            if billed is None:
                await refund_tokens(reservation)
            else:
                await settle_tokens(budget, reservation, *billed)
            raise
        billed = _billed_usage(request_context)
        if billed is None:
            billed = (response.usage.input_tokens, response.usage.output_tokens)
        await settle_tokens(budget, reservation, *billed)
        return response


def _billed_usage(request_context: ModelRequestContext) -> tuple[int, int] | None:
    """Input and output tokens of every response pydantic-ai counted for this request step.

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
    return (sum(r.usage.input_tokens for r in responses),
            sum(r.usage.output_tokens for r in responses))
