"""What every LLM client wrapper shares: estimate, reserve (maybe clamped), settle, stream.

Pure Python over outlay's budgets; imports no provider SDK. The per-API modules
(``outlay.clients.openai``, ``outlay.clients.anthropic``) say which request fields are prompt,
which field bounds the output and where the usage is reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

import anyio

from .._core import _log
from .._core._amounts import check_count
from .._core._exceptions import BudgetExceeded
from .._core._reservation import Budget, Reservation
from .._core._tokens import TokenReservation
from .._pricing import PriceTable, TokenPrices, token_cost
from .._protocols import TokenBudget
from ..adapters import TokenUsage
from ._estimate import MEDIA_TOKENS as MEDIA_TOKENS
from ._estimate import MESSAGE_OVERHEAD as MESSAGE_OVERHEAD
from ._estimate import REQUEST_OVERHEAD as REQUEST_OVERHEAD
from ._estimate import InputEstimator as InputEstimator
from ._estimate import estimate_prompt_tokens as estimate_prompt_tokens
from ._estimate import estimate_tokens as estimate_tokens

T = TypeVar("T")

_CLAMP_ATTEMPTS = 64

Outcome = Literal["recorded", "conservative", "refunded"]


# -- money -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MoneyLimit:
    """A ``Decimal`` money limit ``key`` on ``budget``, charged at ``prices``.

    ``prices`` is one ``TokenPrices`` for every model, a ``PriceTable`` (per model, optionally
    backed by ``genai-prices``) or a mapping model name -> ``TokenPrices`` (taken as
    ``PriceTable(mapping)``). A call for a model that has no price raises ``UnknownModelPrice``
    before anything is reserved (fail closed: an unpriced model is never free). Cached input
    tokens the provider reports are charged at ``cached_input_per_mtok`` when the price has one.
    Raises ``TypeError`` for a bad ``budget``, ``key`` or ``prices``.
    """

    budget: Budget
    key: str
    prices: TokenPrices | PriceTable | Mapping[str, TokenPrices]
    lease: float | None = None
    """Seconds the money hold lives (default: the budget's lease). Spend is recorded even when
    a call outlives its lease; only the hold stops counting."""
    _priced: TokenPrices | PriceTable = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.budget, Budget):
            raise TypeError(f"budget must be an outlay.Budget, got {type(self.budget).__name__}")
        if not isinstance(self.key, str) or not self.key:
            raise TypeError(f"key must be a non-empty str, got {self.key!r}")
        prices = self.prices
        if isinstance(prices, Mapping):
            prices = PriceTable(prices)  # checks every entry is a TokenPrices
        elif not isinstance(prices, TokenPrices | PriceTable):
            raise TypeError(f"prices must be TokenPrices, a PriceTable or a mapping model -> "
                            f"TokenPrices, got {type(prices).__name__}")
        object.__setattr__(self, "_priced", prices)

    def cost(self, model: str, *, input_tokens: int, output_tokens: int,
             cached_input_tokens: int = 0) -> Decimal:
        """Exact ``Decimal`` cost of one call of ``model``. Raises ``UnknownModelPrice``, and
        ``TypeError``/``ValueError`` for bad counts (see ``token_cost``)."""
        if isinstance(self._priced, TokenPrices):
            return token_cost(self._priced, input_tokens=input_tokens,
                              output_tokens=output_tokens,
                              cached_input_tokens=cached_input_tokens)
        return self._priced.cost(model, input_tokens=input_tokens, output_tokens=output_tokens,
                                 cached_input_tokens=cached_input_tokens)

    def affordable_output(self, model: str, money: Decimal, input_tokens: int,
                          bound: int) -> int:
        """The most output tokens, at most ``bound``, that ``money`` pays for after
        ``input_tokens`` of ``model``; ``-1`` if it does not even pay for the input.

        A binary search over ``cost`` (which never falls as output grows), so it also holds
        for tiered library prices."""
        if self.cost(model, input_tokens=input_tokens, output_tokens=0) > money:
            return -1
        low, high = 0, bound  # cost(low) fits; find the largest that does
        while low < high:
            mid = (low + high + 1) // 2
            if self.cost(model, input_tokens=input_tokens, output_tokens=mid) <= money:
                low = mid
            else:
                high = mid - 1
        return low


# -- what a call cost ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Charge:
    """How one model call was settled.

    ``outcome`` is ``"recorded"`` (the provider's reported usage), ``"conservative"`` (no final
    usage was reported, e.g. a stream that ended early: prompt is the reported input, else the
    estimate, and completion is the whole output bound) or ``"refunded"`` (the call failed or
    was cancelled before a result: nothing charged). ``max_output_tokens`` is the output bound
    after clamping, times ``n`` where the API returns ``n`` choices. ``cached_prompt_tokens`` is
    the part of ``prompt_tokens`` the provider reported as read from its prompt cache (charged
    at the cached rate of the model's ``TokenPrices`` when it has one).
    """

    api: str
    model: str
    input_estimate: int
    max_output_tokens: int
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    reserved_cost: Decimal | None
    cost: Decimal | None
    outcome: Outcome

    @property
    def reserved_tokens(self) -> int:
        """Tokens held before the call: the input estimate plus the output bound."""
        return self.input_estimate + self.max_output_tokens

    @property
    def total_tokens(self) -> int:
        """Tokens charged: ``prompt_tokens + completion_tokens``."""
        return self.prompt_tokens + self.completion_tokens


# -- the budgets a wrapper draws from ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallSpec:
    """What a per-API module extracted from one request before it is sent."""

    api: str
    model: str
    input_estimate: int
    max_output: int
    """The per-choice output bound requested (or the default)."""
    choices: int
    """How many choices share that bound (Chat Completions ``n``; else 1)."""


class Limits:
    """The budgets and options one wrapper applies to every call.

    Raises ``TypeError``/``ValueError`` for bad options at construction.
    """

    def __init__(
        self,
        tokens: TokenBudget | None,
        money: MoneyLimit | None,
        *,
        clamp: bool,
        min_output_tokens: int,
        default_max_output_tokens: int | None,
        estimate_input: InputEstimator | None,
        on_settle: Callable[[Charge], object] | None,
    ) -> None:
        if tokens is None and money is None:
            raise TypeError("give a token budget (tokens=), a money limit (money=), or both")
        if tokens is not None and not isinstance(tokens, TokenBudget):
            raise TypeError(f"tokens must implement outlay.TokenBudget, got "
                            f"{type(tokens).__name__}")
        if money is not None and not isinstance(money, MoneyLimit):
            raise TypeError(f"money must be a MoneyLimit, got {type(money).__name__}")
        self.tokens = tokens
        self.money = money
        self.clamp = bool(clamp)
        self.min_output_tokens = check_count(min_output_tokens, "min_output_tokens")
        if self.min_output_tokens < 1:
            raise ValueError("min_output_tokens must be >= 1")
        self.default_max_output_tokens = (
            None if default_max_output_tokens is None
            else check_count(default_max_output_tokens, "default_max_output_tokens"))
        self.estimate_input = estimate_input
        self.on_settle = on_settle

    def output_bound(self, requested: object, field: str) -> int:
        """The request's output bound, or the default; ``ValueError`` if there is neither."""
        if requested is None:
            if self.default_max_output_tokens is None:
                raise ValueError(f"the request has no {field}: the output bound is what makes "
                                 "the reservation safe; pass it, or set "
                                 "default_max_output_tokens on the wrapper")
            return self.default_max_output_tokens
        bound = check_count(requested, field)
        if bound < 1:
            raise ValueError(f"{field} must be >= 1")
        return bound

    def input_estimate(self, params: Mapping[str, Any], default: int) -> int:
        if self.estimate_input is None:
            return default
        return check_count(self.estimate_input(params), "estimate_input(...)")

    async def open(self, spec: CallSpec) -> Call:
        """Reserve for ``spec`` and return the open ``Call``.

        Without ``clamp`` the full bound is reserved or ``BudgetExceeded`` is raised. With
        ``clamp`` the per-choice output bound shrinks to what the budgets afford (read from a
        token budget's ``available`` when it has one, else halved per refusal) down to
        ``min_output_tokens``, below which ``BudgetExceeded`` is raised. Nothing stays held
        when this raises or is cancelled. ``UnknownModelPrice`` (an unpriced model) is raised
        before anything is reserved.
        """
        money = self.money
        if money is not None:  # price the whole bound first: an unpriced model fails here
            money.cost(spec.model, input_tokens=spec.input_estimate,
                       output_tokens=spec.max_output * spec.choices)
        out = spec.max_output
        refused_by = "tokens" if self.tokens is not None else "money"
        if self.clamp and self.tokens is not None:
            out = min(out, self._tokens_affordable(spec, out))
        if self.clamp and money is not None:
            by_money = await self._money_affordable(spec, money, out)
            if by_money < out:
                out, refused_by = by_money, "money"
        for _ in range(_CLAMP_ATTEMPTS):
            if out < self.min_output_tokens:
                break
            held_tokens: TokenReservation | None = None
            held_money: Reservation | None = None
            cost: Decimal | None = None
            try:
                if self.tokens is not None:
                    held_tokens = await self.tokens.try_reserve_tokens(
                        spec.input_estimate + out * spec.choices)
                    if held_tokens is None:
                        if not self.clamp:
                            raise self._exceeded(spec, out, "tokens")
                        refused_by = "tokens"
                        out = min(out - 1, self._tokens_affordable(spec, out // 2))
                        continue
                if money is not None:
                    cost = money.cost(spec.model, input_tokens=spec.input_estimate,
                                      output_tokens=out * spec.choices)
                    held_money = await money.budget.try_reserve({money.key: cost},
                                                                lease=money.lease)
                    if held_money is None:
                        await _release(held_tokens)
                        held_tokens = None
                        if not self.clamp:
                            raise self._exceeded(spec, out, "money")
                        refused_by = "money"
                        out = min(out - 1, await self._money_affordable(spec, money, out))
                        continue
            except BaseException:
                await _release(held_tokens)
                raise
            return Call(self, spec, out, held_tokens, held_money, cost)
        raise self._exceeded(spec, out, refused_by)

    def _tokens_affordable(self, spec: CallSpec, fallback: int) -> int:
        available = getattr(self.tokens, "available", None)
        if type(available) is not int:
            return fallback
        return (available - spec.input_estimate) // spec.choices

    async def _money_affordable(self, spec: CallSpec, money: MoneyLimit, fallback: int) -> int:
        usage = await money.budget.usage(money.key)
        available = usage.available
        if not isinstance(available, Decimal):
            return fallback
        return money.affordable_output(spec.model, available, spec.input_estimate,
                                       fallback * spec.choices) // spec.choices

    def _exceeded(self, spec: CallSpec, out: int, what: str) -> BudgetExceeded:
        per_choice = self.min_output_tokens if self.clamp else out
        need = spec.input_estimate + per_choice * spec.choices
        available = getattr(self.tokens, "available", None) if what == "tokens" else None
        if _log.enabled():
            _log.emit("outlay.clients.denied", api=spec.api, model=spec.model,
                      input_estimate=spec.input_estimate, max_output_tokens=per_choice,
                      limit=what)
        return BudgetExceeded(
            f"{spec.api} call to {spec.model!r} does not fit the {what} budget: it needs "
            f"~{spec.input_estimate} input tokens + {per_choice * spec.choices} output tokens"
            + (" (clamped to min_output_tokens)" if self.clamp else ""),
            key=self.money.key if what == "money" and self.money else None,
            requested=need, available=available if type(available) is int else None)


async def _release(reservation: Reservation | None) -> None:
    if reservation is not None and not reservation.ended:
        with anyio.CancelScope(shield=True):
            await reservation.release()


class Call:
    """The holds of one model call; ends exactly once by ``settle`` or ``refund`` (shielded)."""

    __slots__ = ("_cost", "_limits", "_money", "_tokens", "charge", "max_output", "spec")

    def __init__(self, limits: Limits, spec: CallSpec, max_output: int,
                 tokens: TokenReservation | None, money: Reservation | None,
                 cost: Decimal | None) -> None:
        self._limits = limits
        self.spec = spec
        self.max_output = max_output
        """The per-choice output bound to send (clamped if the budget asked for it)."""
        self._tokens = tokens
        self._money = money
        self._cost = cost
        self.charge: Charge | None = None

    @property
    def output_bound(self) -> int:
        """The whole output bound: ``max_output`` times the number of choices."""
        return self.max_output * self.spec.choices

    async def settle(self, prompt: int | None, completion: int | None, *, final: bool,
                     cached: int = 0) -> Charge:
        """Charge the reported usage when ``final``; otherwise charge conservatively: the reported
        ``prompt`` (else the estimate) plus the whole output bound. ``cached`` is the part of
        ``prompt`` read from the prompt cache (priced at the cached rate); it counts only with
        a reported ``prompt`` and never exceeds it."""
        if final and prompt is not None and completion is not None:
            outcome: Outcome = "recorded"
        else:
            outcome = "conservative"
            if prompt is None:
                prompt, cached = self.spec.input_estimate, 0
            completion = self.output_bound
        return await self._end(prompt, completion, min(cached, prompt), outcome)

    async def refund(self) -> Charge:
        """Give every hold back; nothing is charged."""
        return await self._end(0, 0, 0, "refunded")

    async def _end(self, prompt: int, completion: int, cached: int,
                   outcome: Outcome) -> Charge:
        if self.charge is not None:
            return self.charge
        money = self._limits.money
        cost = (money.cost(self.spec.model, input_tokens=prompt, output_tokens=completion,
                           cached_input_tokens=cached)
                if money is not None and self._money is not None and outcome != "refunded"
                else None)
        self.charge = charge = Charge(
            api=self.spec.api, model=self.spec.model, input_estimate=self.spec.input_estimate,
            max_output_tokens=self.output_bound, prompt_tokens=prompt,
            completion_tokens=completion, cached_prompt_tokens=cached,
            reserved_cost=self._cost, cost=cost, outcome=outcome)
        with anyio.CancelScope(shield=True):
            try:
                if self._tokens is not None:
                    if outcome == "refunded":
                        await _release(self._tokens)
                    else:
                        tokens = self._limits.tokens
                        assert tokens is not None
                        await tokens.record_usage(self._tokens, prompt, completion)
            finally:
                if self._money is not None:
                    if cost is None:
                        await _release(self._money)
                    else:
                        assert money is not None
                        await self._money.commit({money.key: cost})
        if _log.enabled():
            _log.emit("outlay.clients.settled", api=charge.api, model=charge.model,
                      outcome=outcome, input_estimate=charge.input_estimate,
                      max_output_tokens=charge.max_output_tokens,
                      prompt_tokens=prompt, completion_tokens=completion,
                      cached_prompt_tokens=cached, reserved_cost=charge.reserved_cost,
                      cost=charge.cost)
        if self._limits.on_settle is not None:
            try:
                self._limits.on_settle(charge)
            except Exception as exc:  # an observer: logged and skipped
                _log.warn("outlay.clients.on_settle_failed", error=repr(exc))
        return charge


async def call_once(limits: Limits, spec: CallSpec, send: Callable[[Call], Awaitable[T]],
                    usage: Callable[[T], TokenUsage | None]) -> T:
    """Reserve, send, settle: refund if ``send`` raises or is cancelled (shielded)."""
    call = await limits.open(spec)
    try:
        result = await send(call)
    except BaseException:
        await call.refund()
        raise
    try:
        reported = usage(result)
    except BaseException:  # an unexpected result shape: settle, then report it
        await call.settle(None, None, final=False)
        raise
    if reported is None:
        await call.settle(None, None, final=False)
    else:
        await call.settle(reported.input_tokens, reported.output_tokens, final=True,
                          cached=reported.cached_input_tokens)
    return result


# -- streams ---------------------------------------------------------------------------------


class Tally:
    """Usage a stream has reported so far. Providers fill it as events arrive."""

    __slots__ = ("cached", "final", "input", "output")

    def __init__(self) -> None:
        self.input: int | None = None
        self.output: int | None = None
        self.cached = 0
        """The part of ``input`` read from the prompt cache."""
        self.final = False
        """True once the final usage (both counts) was reported."""


class BudgetedStream(Generic[T]):
    """An SDK stream whose call is settled exactly once, when the stream ends.

    Iterate it like the SDK stream (``async for event in stream``). Use ``async with stream:``
    or ``await stream.close()`` if you may stop early: a ``break`` alone does not end it.
    Settlement: the reported usage if the stream reported its final usage; otherwise (the
    consumer stopped early, an error or a cancellation ended it, the server sent no usage) the
    conservative figure of ``Charge`` (reported input, else the estimate, plus the whole output
    bound). Settlement and closing run shielded from cancellation. A stream that is dropped
    without being ended leaves its reservation to the garbage collector, which refunds it with a
    ``ResourceWarning``.
    """

    __slots__ = ("_call", "_iterator", "_observe", "_stream", "_tally")

    def __init__(self, stream: Any, call: Call, observe: Callable[[T, Tally], None]) -> None:
        self._stream = stream
        self._iterator: AsyncIterator[T] = stream.__aiter__()
        self._call = call
        self._observe = observe
        self._tally = Tally()

    @property
    def stream(self) -> Any:
        """The SDK stream being wrapped."""
        return self._stream

    @property
    def tally(self) -> Tally:
        """The usage reported so far."""
        return self._tally

    @property
    def charge(self) -> Charge | None:
        """How the call was settled, once the stream has ended; ``None`` before."""
        return self._call.charge

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        if self._call.charge is not None:
            raise StopAsyncIteration
        try:
            event = await self._iterator.__anext__()
            self._observe(event, self._tally)
        except StopAsyncIteration:
            await self._settle()
            raise
        except BaseException:
            await self._finish(quiet=True)
            raise
        return event

    async def close(self) -> None:
        """Stop reading, close the HTTP response and settle (idempotent, shielded)."""
        await self._finish()

    aclose = close

    async def _finish(self, *, quiet: bool = False) -> None:
        if self._call.charge is not None:
            return
        try:
            with anyio.CancelScope(shield=True):
                if quiet:  # already raising: the first error is the one to report
                    with contextlib.suppress(Exception):
                        await self._stream.close()
                else:
                    await self._stream.close()
        finally:
            await self._settle()

    async def _settle(self) -> None:
        tally = self._tally
        await self._call.settle(tally.input, tally.output, final=tally.final,
                                cached=tally.cached)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


async def open_stream(limits: Limits, spec: CallSpec, send: Callable[[Call], Awaitable[Any]],
                      observe: Callable[[T, Tally], None]) -> BudgetedStream[T]:
    """Reserve and start a stream; refund if starting it raises or is cancelled."""
    call = await limits.open(spec)
    try:
        stream = await send(call)
    except BaseException:
        await call.refund()
        raise
    return BudgetedStream(stream, call, observe)
