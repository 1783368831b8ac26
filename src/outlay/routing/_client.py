"""``RoutedClient``: the model of each call chosen from a list, on top of a budgeted client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from .._core import ConfigurationError, check_count
from ..clients import estimate_prompt_tokens
from ._model import Work
from ._router import RouteChoice, Routed, RoutedCalls, Router, check_router

__all__ = ("OUTPUT_BOUNDS", "RoutedClient")

T = TypeVar("T")

OUTPUT_BOUNDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
"""The request fields that bound a call's output, looked for in this order."""


class RoutedClient(RoutedCalls[T]):
    """Route every ``create(**params)`` to the model the router picks, then call it.

    ``create`` is one function (``llm.chat.completions.create`` of a budgeted client, or of
    any client) used for every candidate, or a mapping candidate name -> function (a model per
    provider, each on its own client and budget). The chosen ``Backend.model_name`` is sent as
    ``model``. The worst case of a call is the prompt estimate (``estimate_input(params)``,
    default ``outlay.clients.estimate_prompt_tokens`` of the request without its model and
    output bound) plus the output bound (the first of ``OUTPUT_BOUNDS`` the request has, times
    ``n``, else ``default_max_output_tokens``, else ``ValueError``), priced per candidate.

    ``hold=False`` (default) only checks each candidate against its budget: the budgeted
    client makes the reservation, and its ``BudgetExceeded`` falls through to the next model.
    ``hold=True`` holds the worst case on the router's budgets (for an unbudgeted client) and
    commits it. A provider error in ``fallback_on`` (default: the router's) tries the next
    model; ``NoRoute`` when none is left. ``on_decision(routed)`` sees every completed call
    (``routed.decisions`` are printable); ``last`` is the latest.
    """

    def __init__(
        self,
        router: Router,
        create: Callable[..., Awaitable[T]] | Mapping[str, Callable[..., Awaitable[T]]],
        *,
        default_max_output_tokens: int | None = None,
        estimate_input: Callable[[Mapping[str, Any]], int] | None = None,
        hold: bool = False,
        fallback_on: tuple[type[BaseException], ...] | None = None,
        on_decision: Callable[[Routed[T]], object] | None = None,
        output_bounds: Sequence[str] = OUTPUT_BOUNDS,
    ) -> None:
        router = check_router(router)
        if isinstance(create, Mapping):
            unknown = sorted(set(create) - {b.name for b in router.candidates})
            if unknown:
                raise ConfigurationError(f"create functions for unknown candidates {unknown}")
            router = router.replace([b for b in router.candidates if b.name in create])
            self._creates: Mapping[str, Callable[..., Awaitable[T]]] | None = dict(create)
            self._create: Callable[..., Awaitable[T]] | None = None
        elif callable(create):
            self._creates, self._create = None, create
        else:
            raise TypeError(f"create must be callable or a mapping of callables, got {create!r}")
        if default_max_output_tokens is not None:
            check_count(default_max_output_tokens, "default_max_output_tokens")
        self._route_through(router, on_decision)
        self._default_output = default_max_output_tokens
        self._estimate = estimate_input
        self._hold = hold
        self._fallback_on = fallback_on
        self._bounds = tuple(output_bounds)

    def work(self, params: Mapping[str, Any]) -> Work:
        """The worst case of a call with ``params``: prompt estimate and output bound."""
        output = next((params[f] for f in self._bounds if params.get(f) is not None), None)
        if output is None:
            output = self._default_output
        if output is None:
            raise ValueError(f"the request has no output bound ({', '.join(self._bounds)}) and "
                             "no default_max_output_tokens was given: its worst case is unknown")
        choices = params.get("n")
        output = check_count(output, "output bound") * (choices if isinstance(choices, int)
                                                         and choices > 1 else 1)
        if self._estimate is not None:
            prompt = check_count(self._estimate(params), "estimate_input(params)")
        else:
            rest = {k: v for k, v in params.items()
                    if k != "model" and k not in self._bounds and v is not None}
            messages = rest.get("messages")
            prompt = estimate_prompt_tokens([rest],
                                            len(messages) if isinstance(messages, list) else 1)
        return Work(input_tokens=prompt, max_output_tokens=output, label="model call")

    async def create(self, **params: Any) -> T:
        """Route one call; raises ``NoRoute`` when no model can take it, ``ValueError`` when
        its worst case is unknown. Whatever the chosen function raises outside
        ``fallback_on`` propagates."""
        needed = self.work(params)

        async def attempt(choice: RouteChoice) -> T:
            fn = self._create if self._creates is None else self._creates[choice.backend.name]
            assert fn is not None
            return await fn(**{**params, "model": choice.backend.model_name})

        routed = await self._router.run(needed, attempt, hold=self._hold,
                                        fallback_on=self._fallback_on)
        return self._done(routed)
