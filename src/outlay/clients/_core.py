"""What every LLM client wrapper shares: estimate, reserve (maybe clamped), settle, stream.

Pure Python over outlay's budgets; imports no provider SDK. The per-API modules
(``outlay.clients.openai``, ``outlay.clients.anthropic``) say which request fields are prompt,
which field bounds the output and where the usage is reported.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

import anyio

from .. import _log
from .._exceptions import BudgetExceeded, ConfigurationError
from .._protocols import TokenBudget
from .._reservation import Budget, Reservation
from .._tokens import TokenReservation
from .._validation import check_amount, check_count

T = TypeVar("T")

_MILLION = Decimal(1_000_000)
MESSAGE_OVERHEAD = 4
"""Tokens added per message (role, separators) by ``estimate_prompt_tokens``."""
REQUEST_OVERHEAD = 3
"""Tokens added once per request (the reply's priming) by ``estimate_prompt_tokens``."""
MEDIA_TOKENS = 2_000
"""Tokens counted for one inline media item (a ``data:`` URL or a base64 source)."""
_CLAMP_ATTEMPTS = 64

Outcome = Literal["recorded", "conservative", "refunded"]
InputEstimator = Callable[[Mapping[str, Any]], int]
"""Counts a request's prompt tokens from its keyword arguments (a conservative guess)."""


# -- money -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pricing:
    """Prices of one model in ``Decimal`` money per million tokens.

    Raises ``TypeError`` for a non-``Decimal`` price (never ``float``), ``ValueError`` for a
    negative or non-finite one.
    """

    input_per_million: Decimal
    output_per_million: Decimal

    def __post_init__(self) -> None:
        for name in ("input_per_million", "output_per_million"):
            value = getattr(self, name)
            if not isinstance(value, Decimal):
                raise TypeError(f"{name} must be a Decimal, got {type(value).__name__}: "
                                f"{value!r}")
            check_amount(value, name)

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        """The price of ``input_tokens`` in and ``output_tokens`` out, exact."""
        return (check_count(input_tokens, "input_tokens") * self.input_per_million
                + check_count(output_tokens, "output_tokens") * self.output_per_million
                ) / _MILLION

    def affordable_output(self, money: Decimal, input_tokens: int) -> int:
        """The most output tokens ``money`` pays for after ``input_tokens`` (may be negative)."""
        left = money * _MILLION - input_tokens * self.input_per_million
        if self.output_per_million == 0:
            return (1 << 62) if left >= 0 else -1
        return math.floor(left / self.output_per_million)


@dataclass(frozen=True, slots=True)
class MoneyLimit:
    """A ``Decimal`` money limit ``key`` on ``budget``, charged at ``prices``.

    ``prices`` is one ``Pricing`` for every model or a mapping model name -> ``Pricing``; a call
    for a model that is not in the mapping raises ``ConfigurationError`` before anything is
    reserved (fail closed: an unpriced model is never free).
    """

    budget: Budget
    key: str
    prices: Pricing | Mapping[str, Pricing]
    lease: float | None = None
    """Seconds the money hold lives (default: the budget's lease). Spend is recorded even when
    a call outlives its lease; only the hold stops counting."""

    def __post_init__(self) -> None:
        if not isinstance(self.budget, Budget):
            raise TypeError(f"budget must be an outlay.Budget, got {type(self.budget).__name__}")
        if not isinstance(self.key, str) or not self.key:
            raise TypeError(f"key must be a non-empty str, got {self.key!r}")
        prices = [self.prices] if isinstance(self.prices, Pricing) else list(
            self.prices.values())
        for price in prices:
            if not isinstance(price, Pricing):
                raise TypeError(f"prices must be Pricing objects, got {type(price).__name__}")

    def pricing_for(self, model: str) -> Pricing:
        """The prices for ``model``; ``ConfigurationError`` if it has none."""
        if isinstance(self.prices, Pricing):
            return self.prices
        try:
            return self.prices[model]
        except KeyError:
            raise ConfigurationError(f"no Pricing for model {model!r}; known: "
                                     f"{sorted(self.prices)}") from None


# -- what a call cost ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Charge:
    """How one model call was settled.

    ``outcome`` is ``"recorded"`` (the provider's reported usage), ``"conservative"`` (no final
    usage was reported, e.g. a stream that ended early: prompt is the reported input, else the
    estimate, and completion is the whole output bound) or ``"refunded"`` (the call failed or
    was cancelled before a result: nothing charged). ``max_output_tokens`` is the output bound
    after clamping, times ``n`` where the API returns ``n`` choices.
    """

    api: str
    model: str
    input_estimate: int
    max_output_tokens: int
    prompt_tokens: int
    completion_tokens: int
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


# -- estimating ------------------------------------------------------------------------------


def estimate_tokens(value: object) -> int:
    """A heuristic, deliberately high token count for ``value`` (text or JSON-like data).

    ASCII characters count one token per 3 (English averages about 4 per token), every other
    character one token each; mapping keys count too. Inline media (``data:`` URLs, base64
    sources) count ``MEDIA_TOKENS`` each. Pydantic models are counted by their dumped fields.
    Not an upper bound for every tokenizer; pass your own estimator where it must be exact.
    """
    ascii_chars = 0
    other_chars = 0
    media = 0
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.startswith("data:") and len(item) > 256:
                media += 1
                continue
            n_ascii = len(item.encode("ascii", "ignore"))
            ascii_chars += n_ascii
            other_chars += len(item) - n_ascii
        elif isinstance(item, Mapping):
            if item.get("type") == "base64" and isinstance(item.get("data"), str):
                media += 1
                item = {k: v for k, v in item.items() if k != "data"}
            for key, val in item.items():
                stack.append(str(key))
                stack.append(val)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif item is None or isinstance(item, bool):
            continue
        elif isinstance(item, int | float | Decimal):
            ascii_chars += len(str(item))
        elif hasattr(item, "model_dump"):
            stack.append(item.model_dump(exclude_none=True))
        else:
            stack.append(str(item))
    return -(-ascii_chars // 3) + other_chars + media * MEDIA_TOKENS


def estimate_prompt_tokens(parts: Iterable[object], messages: int) -> int:
    """``estimate_tokens`` of every prompt part, plus ``MESSAGE_OVERHEAD`` per message and
    ``REQUEST_OVERHEAD`` once."""
    return (REQUEST_OVERHEAD + MESSAGE_OVERHEAD * messages
            + sum(estimate_tokens(part) for part in parts if part is not None))


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
        when this raises or is cancelled.
        """
        pricing = self.money.pricing_for(spec.model) if self.money is not None else None
        out = spec.max_output
        refused_by = "tokens" if self.tokens is not None else "money"
        if self.clamp and self.tokens is not None:
            out = min(out, self._tokens_affordable(spec, out))
        if self.clamp and self.money is not None and pricing is not None:
            by_money = await self._money_affordable(spec, pricing, out)
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
                if self.money is not None and pricing is not None:
                    cost = pricing.cost(spec.input_estimate, out * spec.choices)
                    held_money = await self.money.budget.try_reserve({self.money.key: cost},
                                                                     lease=self.money.lease)
                    if held_money is None:
                        await _release(held_tokens)
                        held_tokens = None
                        if not self.clamp:
                            raise self._exceeded(spec, out, "money")
                        refused_by = "money"
                        out = min(out - 1, await self._money_affordable(spec, pricing, out))
                        continue
            except BaseException:
                await _release(held_tokens)
                raise
            return Call(self, spec, out, held_tokens, held_money, pricing, cost)
        raise self._exceeded(spec, out, refused_by)

    def _tokens_affordable(self, spec: CallSpec, fallback: int) -> int:
        available = getattr(self.tokens, "available", None)
        if type(available) is not int:
            return fallback
        return (available - spec.input_estimate) // spec.choices

    async def _money_affordable(self, spec: CallSpec, pricing: Pricing, fallback: int) -> int:
        assert self.money is not None
        usage = await self.money.budget.usage(self.money.key)
        available = usage.available
        if not isinstance(available, Decimal):
            return fallback
        return pricing.affordable_output(available, spec.input_estimate) // spec.choices

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

    __slots__ = ("_cost", "_limits", "_money", "_pricing", "_tokens", "charge", "max_output",
                 "spec")

    def __init__(self, limits: Limits, spec: CallSpec, max_output: int,
                 tokens: TokenReservation | None, money: Reservation | None,
                 pricing: Pricing | None, cost: Decimal | None) -> None:
        self._limits = limits
        self.spec = spec
        self.max_output = max_output
        """The per-choice output bound to send (clamped if the budget asked for it)."""
        self._tokens = tokens
        self._money = money
        self._pricing = pricing
        self._cost = cost
        self.charge: Charge | None = None

    @property
    def output_bound(self) -> int:
        """The whole output bound: ``max_output`` times the number of choices."""
        return self.max_output * self.spec.choices

    async def settle(self, prompt: int | None, completion: int | None, *,
                     final: bool) -> Charge:
        """Charge the reported usage when ``final``; otherwise charge conservatively: the reported
        ``prompt`` (else the estimate) plus the whole output bound."""
        if final and prompt is not None and completion is not None:
            outcome: Outcome = "recorded"
        else:
            outcome = "conservative"
            prompt = self.spec.input_estimate if prompt is None else prompt
            completion = self.output_bound
        return await self._end(prompt, completion, outcome)

    async def refund(self) -> Charge:
        """Give every hold back; nothing is charged."""
        return await self._end(0, 0, "refunded")

    async def _end(self, prompt: int, completion: int, outcome: Outcome) -> Charge:
        if self.charge is not None:
            return self.charge
        cost = (self._pricing.cost(prompt, completion)
                if self._pricing is not None and outcome != "refunded" else None)
        self.charge = charge = Charge(
            api=self.spec.api, model=self.spec.model, input_estimate=self.spec.input_estimate,
            max_output_tokens=self.output_bound, prompt_tokens=prompt,
            completion_tokens=completion, reserved_cost=self._cost,
            cost=cost if self._money is not None else None, outcome=outcome)
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
                    if outcome == "refunded" or cost is None:
                        await _release(self._money)
                    else:
                        assert self._limits.money is not None
                        await self._money.commit({self._limits.money.key: cost})
        if _log.enabled():
            _log.emit("outlay.clients.settled", api=charge.api, model=charge.model,
                      outcome=outcome, input_estimate=charge.input_estimate,
                      max_output_tokens=charge.max_output_tokens,
                      prompt_tokens=prompt, completion_tokens=completion,
                      reserved_cost=charge.reserved_cost, cost=charge.cost)
        if self._limits.on_settle is not None:
            try:
                self._limits.on_settle(charge)
            except Exception as exc:  # an observer: logged and skipped
                _log.warn("outlay.clients.on_settle_failed", error=repr(exc))
        return charge


async def call_once(limits: Limits, spec: CallSpec, send: Callable[[Call], Awaitable[T]],
                    usage: Callable[[T], tuple[int, int] | None]) -> T:
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
        await call.settle(*reported, final=True)
    return result


# -- streams ---------------------------------------------------------------------------------


class Tally:
    """Usage a stream has reported so far. Providers fill it as events arrive."""

    __slots__ = ("final", "input", "output")

    def __init__(self) -> None:
        self.input: int | None = None
        self.output: int | None = None
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
        await self._call.settle(tally.input, tally.output, final=tally.final)

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
