"""pydantic-ai: a routed model whose every request goes to the model the router picks.

Install with the ``pydantic-ai`` extra. Importing this module imports pydantic-ai; ``import
outlay`` does not. ``RoutedModel`` is a pydantic-ai ``Model``: pass it to ``Agent(model=...)``.
Per request it asks the ``Router`` for the first candidate whose worst case (prompt estimate +
output bound, at that candidate's prices) fits the budget charged for *that* candidate, holds
that worst case, sends the request to the candidate's model and commits what the response's
usage costs. A provider error (``ModelAPIError``) falls back to the next candidate, checked
again against its own budget: pydantic-ai's ``FallbackModel`` with a budget check per fallback.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext

from .._core import check_count
from ..integrations.pydantic_ai import estimate_messages_input
from ._model import Work
from ._router import RouteChoice, Routed, RoutedCalls, Router, check_router

__all__ = ("RoutedModel",)

InputEstimate = Callable[[list[ModelMessage], ModelRequestParameters], int]
"""Counts one request's prompt tokens (a conservative guess)."""


class RoutedModel(WrapperModel, RoutedCalls[Any]):
    """A pydantic-ai model that routes each request across ``models`` (candidate name ->
    pydantic-ai ``Model``) with ``router``.

    The worst case of a request is ``estimate(messages, parameters)`` (default: the
    integration's ``outlay.integrations.pydantic_ai.estimate_messages_input``) plus its
    ``max_tokens`` setting, else ``max_output_tokens``. The chosen model's request is held at
    that worst case on its budget and committed at the price of the usage it reports (a
    streamed request at its worst case). ``fallback_on`` (default
    ``ModelAPIError``) falls back to the next candidate; ``NoRoute`` when none is left.
    ``on_decision(routed)`` sees every completed request; ``last`` is the latest. Profile and
    settings are the first model's.
    """

    def __init__(
        self,
        router: Router,
        models: Mapping[str, Model],
        *,
        max_output_tokens: int = 1024,
        estimate: InputEstimate | None = None,
        fallback_on: tuple[type[BaseException], ...] = (ModelAPIError,),
        on_decision: Callable[[Routed[Any]], object] | None = None,
    ) -> None:
        narrowed, checked = check_router(router).for_models(models, Model, "a pydantic-ai Model")
        super().__init__(next(iter(checked.values())))
        self._models: dict[str, Model] = checked
        self._max_output = check_count(max_output_tokens, "max_output_tokens")
        self._estimate = estimate or estimate_messages_input
        self._fallback_on = fallback_on
        self._route_through(narrowed, on_decision)

    @property
    def model_name(self) -> str:
        return "routed:" + ",".join(self._models)

    def work(self, messages: list[ModelMessage], settings: ModelSettings | None,
             parameters: ModelRequestParameters) -> Work:
        """The worst case of one request."""
        max_tokens = (settings or {}).get("max_tokens")
        output = max_tokens if isinstance(max_tokens, int) and max_tokens >= 0 else self._max_output
        prompt = check_count(self._estimate(messages, parameters), "estimate(...)")
        return Work(input_tokens=prompt, max_output_tokens=output, label="model request")

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        """Route one request; raises ``NoRoute`` (every candidate and why) when none fits."""

        async def attempt(choice: RouteChoice) -> ModelResponse:
            model = self._models[choice.backend.name]
            response = await model.request(messages, model_settings, model_request_parameters)
            usage = response.usage
            choice.report(choice.backend.token_cost(input_tokens=usage.input_tokens,
                                                    output_tokens=usage.output_tokens))
            return response

        routed = await self._router.run(
            self.work(messages, model_settings, model_request_parameters), attempt,
            fallback_on=self._fallback_on)
        self._done(routed)
        return routed.value

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        """Route one streamed request; a provider error while opening the stream falls back.
        The hold is committed at the worst case once the stream is open."""
        async with AsyncExitStack() as stack:

            async def attempt(choice: RouteChoice) -> StreamedResponse:
                model = self._models[choice.backend.name]
                opened: StreamedResponse = await stack.enter_async_context(model.request_stream(
                    messages, model_settings, model_request_parameters, run_context))
                return opened

            routed = await self._router.run(
                self.work(messages, model_settings, model_request_parameters), attempt,
                fallback_on=self._fallback_on)
            self._done(routed)
            yield routed.value
