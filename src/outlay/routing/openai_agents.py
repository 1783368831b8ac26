"""OpenAI Agents SDK: a routed model whose every call goes to the model the router picks.

Install with the ``openai-agents`` extra. Importing this module imports the SDK; ``import
outlay`` does not. ``RoutedModel`` is an Agents SDK ``Model``: pass it as ``Agent(model=...)``.
Per call it asks the ``Router`` for the first candidate whose worst case (prompt estimate +
output bound, at that candidate's prices) fits the budget charged for *that* candidate, holds
that worst case, calls the candidate's model and commits what the reported usage costs. A
provider error (``openai.APIError`` by default) falls back to the next candidate, checked again
against its own budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import openai
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelTracing
from agents.tool import Tool

from .._core import check_count
from ..integrations.openai_agents import InputEstimate, ModelCallInput, estimate_call_input
from ._model import Work
from ._router import RouteChoice, Routed, RoutedCalls, Router, check_router

__all__ = ("RoutedModel",)


class RoutedModel(Model, RoutedCalls[Any]):
    """An Agents SDK model that routes each call across ``models`` (candidate name -> SDK
    ``Model``) with ``router``.

    The worst case of a call is ``estimate(call)`` of its ``ModelCallInput`` (default: the
    integration's ``outlay.integrations.openai_agents.estimate_call_input``) plus
    ``model_settings.max_tokens``, else ``max_output_tokens``. The chosen model's call is
    held at that worst case on its budget and committed at the price of the usage it reports;
    a stream is committed at the worst case once its first event arrived (an error before that
    falls back). ``fallback_on`` (default ``openai.APIError``) falls back to the next
    candidate; ``NoRoute`` when none is left.
    ``on_decision(routed)`` sees every completed call; ``last`` is the latest.
    """

    def __init__(
        self,
        router: Router,
        models: Mapping[str, Model],
        *,
        max_output_tokens: int = 1024,
        estimate: InputEstimate | None = None,
        fallback_on: tuple[type[BaseException], ...] = (openai.APIError,),
        on_decision: Callable[[Routed[Any]], object] | None = None,
    ) -> None:
        narrowed, checked = check_router(router).for_models(models, Model, "an Agents SDK Model")
        self._models: dict[str, Model] = checked
        self._max_output = check_count(max_output_tokens, "max_output_tokens")
        self._estimate = estimate or estimate_call_input
        self._fallback_on = fallback_on
        self._route_through(narrowed, on_decision)

    def work(self, system_instructions: str | None, input: str | list[TResponseInputItem],
             model_settings: ModelSettings, tools: list[Tool],
             handoffs: list[Handoff]) -> Work:
        """The worst case of one call."""
        max_tokens = model_settings.max_tokens
        output = max_tokens if isinstance(max_tokens, int) and max_tokens >= 0 else self._max_output
        call = ModelCallInput(system_instructions, input, model_settings, tools, handoffs)
        prompt = check_count(self._estimate(call), "estimate(...)")
        return Work(input_tokens=prompt, max_output_tokens=output, label="model call")

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
        prompt: Any | None,
    ) -> ModelResponse:
        """Route one call; raises ``NoRoute`` (every candidate and why) when none fits."""

        async def attempt(choice: RouteChoice) -> ModelResponse:
            response = await self._models[choice.backend.name].get_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs,
                tracing, previous_response_id=previous_response_id,
                conversation_id=conversation_id, prompt=prompt)
            choice.report(choice.backend.token_cost(
                input_tokens=response.usage.input_tokens,
                output_tokens=response.usage.output_tokens))
            return response

        routed = await self._router.run(
            self.work(system_instructions, input, model_settings, tools, handoffs), attempt,
            fallback_on=self._fallback_on)
        self._done(routed)
        return routed.value

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
        prompt: Any | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """Route one streamed call (see the class docstring for what is charged)."""

        async def attempt(
            choice: RouteChoice,
        ) -> tuple[TResponseStreamEvent | None, AsyncIterator[TResponseStreamEvent]]:
            events = self._models[choice.backend.name].stream_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs,
                tracing, previous_response_id=previous_response_id,
                conversation_id=conversation_id, prompt=prompt).__aiter__()
            try:
                return await events.__anext__(), events
            except StopAsyncIteration:
                return None, events

        routed = await self._router.run(
            self.work(system_instructions, input, model_settings, tools, handoffs), attempt,
            fallback_on=self._fallback_on)
        self._done(routed)
        first, events = routed.value
        if first is None:
            return
        yield first
        async for event in events:
            yield event
