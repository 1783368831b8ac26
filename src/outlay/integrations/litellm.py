"""LiteLLM integration: outlay as the budget authority of every LiteLLM call — the SDK
(``acompletion``), its ``Router`` and the LiteLLM proxy — on any outlay store.

Install with the ``litellm`` extra. Importing this module imports ``litellm``; ``import outlay``
does not.

``OutlayCallback`` is a LiteLLM ``CustomLogger``. Register it once (``litellm.callbacks =
[OutlayCallback(budget, prices=...)]`` in an application, ``litellm_settings: callbacks:`` in a
proxy config) and every chat completion is held on the budget object:

Enforced *before* a call, per deployment: LiteLLM runs ``async_pre_call_deployment_hook`` after
the router picked the deployment that will really be called, for the first attempt and for
every retry and fallback. There the call makes ONE reservation of the units its budget caps
among ``tokens`` (input estimate + output bound), ``input_tokens``, ``output_tokens``, ``usd``
(priced for *that deployment's* model, not the model group asked for) and one of ``requests``,
or raises ``BudgetExceeded`` and that deployment is never called (a router then tries its next
fallback, which is held and checked on its own). The output bound is the call's ``max_tokens``
(or ``max_completion_tokens``), else ``max_output_tokens``, which is then sent as
``max_tokens`` so the provider enforces it. Concurrent first requests race for the one
reservation the store admits all-or-nothing: no more are admitted than the budget holds.

Only observed *after*: the usage the deployment reported, settled in
``async_post_call_success_deployment_hook`` before the response is returned (an overshoot is
committed, never lost, and the next call that no longer fits is refused). A failed call is
refunded when LiteLLM reports the failure (``async_log_failure_event``); a cancelled call,
which LiteLLM does not report, is refunded when the task that made it ends (a stream, which
another task may consume, when its lease runs out).

Which budget: one ``Budget`` for every call, or a function of the call's metadata returning
one — ``by_principal(principals)`` builds the proxy's: team -> key -> end user, nested, so a
call holds against all three at once and no key or end user can spend past its team.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from .._core import Budget, Principals, log
from .._llm_call import Call, CallPolicy, CallSpec
from .._pricing import Prices, TokenPrices, as_price_table
from ..clients import estimate_prompt_tokens
from ._common import check_estimate

__all__ = ("OutlayCallback", "by_principal", "litellm_prices")

BudgetFor = Callable[[Mapping[str, Any]], Budget]
"""Picks the budget of one call from its LiteLLM metadata."""

_COMPLETIONS = frozenset({"acompletion", "completion"})
_MAX_OPEN = 100_000


def by_principal(principals: Principals, levels: Sequence[str] = ("team", "key", "user"),
                 ) -> BudgetFor:
    """The budget of a proxy call: ``team:<team id>`` / ``key:<key hash>`` / ``user:<end
    user>`` from ``principals`` (each with the caps of its kind's template), nested in that
    order; levels the call does not carry are left out. A call with none of them is held on
    ``key:anonymous``. ``levels`` chooses and orders the levels."""
    sources = {"team": "user_api_key_team_id", "key": "user_api_key_hash",
               "user": "user_api_key_end_user_id"}
    unknown = sorted(set(levels) - sources.keys())
    if unknown:
        raise ValueError(f"levels must be among {sorted(sources)}, got {unknown}")
    chosen = tuple(levels)

    def budget_for(metadata: Mapping[str, Any]) -> Budget:
        budget: Budget | None = None
        for level in chosen:
            value = metadata.get(sources[level])
            if not isinstance(value, str) or not value:
                continue
            name = f"{level}:{_safe(value)}"
            budget = principals.get(name) if budget is None else budget.child(name)
        return budget if budget is not None else principals.get("key:anonymous")

    return budget_for


def _safe(value: str) -> str:
    """A principal name part: no ``/`` or whitespace (key hashes and ids rarely have any)."""
    return "".join("_" if c == "/" or c.isspace() else c for c in value)[:200]


def litellm_prices(models: Iterable[str]) -> dict[str, TokenPrices]:
    """``TokenPrices`` for ``models`` from LiteLLM's own cost map (``litellm.model_cost``),
    exact: each per-token price is read as the decimal literal it was written as.
    ``KeyError`` names a model the map does not price."""
    import litellm

    out: dict[str, TokenPrices] = {}
    for model in models:
        entry = litellm.model_cost.get(model) or litellm.model_cost.get(model.split("/", 1)[-1])
        if entry is None or "input_cost_per_token" not in entry:
            raise KeyError(f"LiteLLM's cost map has no price for {model!r}")
        out[model] = TokenPrices(
            _per_mtok(entry, "input_cost_per_token") or Decimal(0),
            _per_mtok(entry, "output_cost_per_token") or Decimal(0),
            cached_input_per_mtok=_per_mtok(entry, "cache_read_input_token_cost"),
            cache_write_per_mtok=_per_mtok(entry, "cache_creation_input_token_cost"))
    return out


def _per_mtok(entry: Mapping[str, Any], field: str) -> Decimal | None:
    """A per-token price of the cost map as dollars per million tokens, exactly: the float is
    read back as the shortest decimal that round-trips (the literal the map was written with)."""
    value = entry.get(field)
    return None if value is None else Decimal(repr(value)) * 1_000_000


class OutlayCallback(CustomLogger):
    """Holds every LiteLLM chat completion on a budget object; see the module docstring.

    ``budget``: a ``Budget``, or a function of the call's metadata returning one (e.g.
    ``by_principal(Principals(...))`` in the proxy). ``prices`` (one ``TokenPrices``, a
    mapping model -> ``TokenPrices`` such as ``litellm_prices([...])``, or a ``PriceTable``)
    is required when a budget caps ``usd``; a deployment is priced by its ``model``
    (``"openai/gpt-4o-mini"``) or, failing that, by the name after the provider prefix.
    ``estimate_input`` (an ``int`` or a function of the messages and tools) and
    ``max_output_tokens`` shape the hold; ``lease`` is the seconds a hold lives.
    """

    def __init__(
        self,
        budget: Budget | BudgetFor,
        *,
        prices: Prices | None = None,
        estimate_input: int | Callable[[Sequence[Any], Sequence[Any]], int] | None = None,
        max_output_tokens: int = 1024,
        lease: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(budget, Budget) and not callable(budget):
            raise TypeError(f"budget must be an outlay Budget or a function of the call's "
                            f"metadata returning one, got {type(budget).__name__}")
        self._budget = budget
        self._prices = None if prices is None else as_price_table(prices)
        self._fixed = (CallPolicy(budget, self._prices, lease=lease)
                       if isinstance(budget, Budget) else None)
        if estimate_input is not None and not callable(estimate_input):
            check_estimate(estimate_input, "estimate_input")
        self._estimate_input = estimate_input
        self._max_output = check_estimate(max_output_tokens, "max_output_tokens")
        self._lease = lease
        self._open: dict[str, Call] = {}
        self._streams: set[str] = set()
        self._refunding: set[asyncio.Task[object]] = set()

    @property
    def open_calls(self) -> int:
        """How many calls are held and not yet settled or refunded (refunds in flight count)."""
        return len(self._open) + len(self._refunding)

    def _policy(self, kwargs: Mapping[str, Any]) -> CallPolicy:
        if self._fixed is not None:
            return self._fixed
        metadata = {**(kwargs.get("litellm_metadata") or {}), **(kwargs.get("metadata") or {})}
        budget = self._budget(metadata)  # type: ignore[operator]
        return CallPolicy(budget, self._prices, lease=self._lease)

    def _priced_model(self, model: str) -> str:
        prices = self._prices
        if prices is None or "/" not in model:
            return model
        try:
            prices.cost(model, input_tokens=0, output_tokens=0)
        except Exception:
            return model.split("/", 1)[1]
        return model

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any],
                                             call_type: Any) -> dict[str, Any] | None:
        """Hold the call for the deployment about to be called, or raise ``BudgetExceeded``."""
        if getattr(call_type, "value", call_type) not in _COMPLETIONS:
            return None
        call_id = kwargs.get("litellm_call_id")
        if not isinstance(call_id, str) or call_id in self._open:
            return None
        bound = next((v for v in (kwargs.get("max_tokens"), kwargs.get("max_completion_tokens"))
                      if isinstance(v, int) and not isinstance(v, bool) and v >= 0), None)
        if bound is None:
            bound = kwargs["max_tokens"] = self._max_output
        messages = kwargs.get("messages") or []
        tools = kwargs.get("tools") or []
        estimate = self._estimate_input
        if estimate is None:
            input_estimate = estimate_prompt_tokens([messages, tools], len(messages))
        elif callable(estimate):
            input_estimate = check_estimate(estimate(messages, tools), "estimate_input(...)")
        else:
            input_estimate = estimate
        model = self._priced_model(str(kwargs.get("model")))
        call = await self._policy(kwargs).open(CallSpec("litellm", model, input_estimate, bound))
        if len(self._open) >= _MAX_OPEN:  # never grow without bound: the lease still ends it
            log.warn("outlay.litellm.too_many_open_calls", open=len(self._open))
            return kwargs
        self._open[call_id] = call
        if kwargs.get("stream") is True:
            # Settled once the stream is consumed, possibly by another task: no task watch.
            self._streams.add(call_id)
            return kwargs
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(lambda _: self._abandon(call_id))
        return kwargs

    async def async_post_call_success_deployment_hook(self, request_data: dict[str, Any],
                                                      response: Any, call_type: Any) -> None:
        """Commit the usage the deployment reported (whole hold if it reported none)."""
        call_id = str(request_data.get("litellm_call_id"))
        if call_id in self._streams:
            return
        call = self._open.pop(call_id, None)
        if call is not None:
            await _settle(call, response)

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any,
                                      start_time: Any, end_time: Any) -> None:
        """Commit a consumed stream's usage (LiteLLM assembles it once the stream ends)."""
        call_id = str(kwargs.get("litellm_call_id"))
        if call_id not in self._streams:
            return
        self._streams.discard(call_id)
        call = self._open.pop(call_id, None)
        if call is not None:
            await _settle(call, response_obj)

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any,
                                      start_time: Any, end_time: Any) -> None:
        """Refund a call that failed."""
        call_id = str(kwargs.get("litellm_call_id"))
        self._streams.discard(call_id)
        call = self._open.pop(call_id, None)
        if call is not None:
            await call.refund()

    def _abandon(self, call_id: str) -> None:
        """The task that made the call ended (cancelled, or it never saw an answer): refund."""
        self._streams.discard(call_id)
        call = self._open.pop(call_id, None)
        if call is not None:
            refund = asyncio.get_running_loop().create_task(call.refund())
            self._refunding.add(refund)  # also keeps the task alive until it is done
            refund.add_done_callback(self._refunding.discard)


async def _settle(call: Call, response: Any) -> None:
    """Commit the usage a response reports; the whole hold when it reports none."""
    usage = getattr(response, "usage", None)
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    written = getattr(usage, "cache_creation_input_tokens", None) or 0
    if not isinstance(prompt, int) or not isinstance(completion, int):
        await call.settle(None, None, final=False)
        return
    await call.settle(prompt, completion, final=True, cached=cached, written=written)
