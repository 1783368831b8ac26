"""What one LLM call holds on the budget object, and how it is settled.

Written once for every consumer of a model call (the budgeted SDK clients, the pydantic-ai and
Agents SDK integrations). One call is ONE reservation, all-or-nothing, of the units the budget
caps among::

    tokens         input estimate + output bound     settled at input + output reported
    input_tokens   input estimate                    settled at the reported input
    output_tokens  output bound                      settled at the reported output
    usd            price of the above                settled at the price of the reported usage
    requests       1                                 settled at 1

The output bound is what the API enforces (``max_tokens`` and the like), so the hold is the
call's worst case; the input estimate is a pre-flight guess corrected by the reported usage (an
overshoot is committed, never lost, and the next call that no longer fits is refused). A
response's tool calls are admitted as one batch of ``tool_calls`` (``admit_tool_calls``),
all-or-nothing.

The budget object is ``outlay.Budget``; a unit it does not cap is not held.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import anyio

from ._core import Amount, Budget, BudgetExceeded, Reservation, check_count, check_lease, log
from ._pricing import Prices, PriceTable, as_price_table

__all__ = ("CALL_UNITS", "Call", "CallPolicy", "CallSpec", "Charge", "check_budget")

CALL_UNITS = ("tokens", "input_tokens", "output_tokens", "usd", "requests")
"""The units one model call can hold, in the order of the module docstring."""
_CLAMP_ATTEMPTS = 64

Outcome = Literal["recorded", "conservative", "refunded"]


def check_budget(budget: object, name: str = "budget") -> Budget:
    """``budget`` if it is an ``outlay.Budget``, else ``TypeError`` naming how to build one."""
    if not isinstance(budget, Budget):
        raise TypeError(f"{name} must be an outlay budget, e.g. outlay.Budget(usd=Decimal("
                        f"'0.50'), tokens=100_000, tool_calls=20); got {type(budget).__name__}")
    return budget


@dataclass(frozen=True, slots=True)
class CallSpec:
    """What a consumer extracted from one model call before it is sent."""

    api: str
    model: str
    input_estimate: int
    max_output: int
    """The per-choice output bound requested (or the default)."""
    choices: int = 1
    """How many choices share that bound (Chat Completions ``n``; else 1)."""


@dataclass(frozen=True, slots=True)
class Charge:
    """How one model call was settled.

    ``outcome`` is ``"recorded"`` (the provider's reported usage), ``"conservative"`` (no final
    usage was reported, e.g. a stream that ended early: prompt is the reported input, else the
    estimate, and completion is the whole output bound) or ``"refunded"`` (the call failed or
    was cancelled before a result: nothing charged). ``max_output_tokens`` is the output bound
    after clamping, times ``n`` where the API returns ``n`` choices. ``cached_prompt_tokens``
    and ``cache_write_tokens`` are the parts of ``prompt_tokens`` the provider reported as read
    from and written to its prompt cache (each priced at its own rate). ``reserved`` and
    ``charged`` are the amounts by unit that were held and committed (``charged`` is empty
    when refunded); ``reserved_cost``/``cost`` their ``usd`` (``None`` without prices).
    """

    api: str
    model: str
    input_estimate: int
    max_output_tokens: int
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    cache_write_tokens: int
    reserved: Mapping[str, Amount]
    charged: Mapping[str, Amount]
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


class CallPolicy:
    """How every call of one consumer reserves on ``budget``: the units it holds, its prices,
    clamping, the lease. Raises ``TypeError``/``ValueError`` for bad options at construction,
    and ``TypeError`` if the budget caps ``usd`` but no ``prices`` were given (an unpriced call
    is never free).

    ``clamp`` lowers a call's output bound to what the budget affords (read from the refusal),
    never below ``min_output_tokens``; the consumer sends the lowered bound.
    """

    __slots__ = ("_priced", "budget", "caps_tool_calls", "clamp", "lease", "min_output_tokens",
                 "on_settle", "units")

    def __init__(
        self,
        budget: object,
        prices: Prices | None = None,
        *,
        clamp: bool = False,
        min_output_tokens: int = 1,
        lease: float | None = None,
        on_settle: Callable[[Charge], object] | None = None,
    ) -> None:
        self.budget = check_budget(budget)
        capped = self.budget.units
        self.units = tuple(unit for unit in CALL_UNITS if unit in capped)
        """The units a model call holds: those of ``CALL_UNITS`` the budget caps."""
        self.caps_tool_calls = "tool_calls" in capped
        if not self.units and not self.caps_tool_calls:
            raise ValueError(f"the budget caps none of the units a model call uses "
                             f"({', '.join((*CALL_UNITS, 'tool_calls'))}); give it a cap")
        self._priced: PriceTable | None = None if prices is None else as_price_table(prices)
        if "usd" in self.units and self._priced is None:
            raise TypeError("the budget caps 'usd': pass prices= (one TokenPrices, a mapping "
                            "model -> TokenPrices, or a PriceTable) so calls can be priced")
        self.clamp = bool(clamp)
        self.min_output_tokens = check_count(min_output_tokens, "min_output_tokens")
        if self.min_output_tokens < 1:
            raise ValueError("min_output_tokens must be >= 1")
        self.lease = None if lease is None else check_lease(lease)
        self.on_settle = on_settle

    @property
    def prices(self) -> PriceTable | None:
        return self._priced

    def cost(self, model: str, input_tokens: int, output_tokens: int, cached: int = 0,
             written: int = 0) -> Decimal | None:
        """The price of a call, or ``None`` without prices. Raises ``UnknownModelPrice``."""
        if self._priced is None:
            return None
        return self._priced.cost(model, input_tokens=input_tokens, output_tokens=output_tokens,
                                 cached_input_tokens=cached, cache_write_tokens=written)

    def _worst_cost(self, model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
        # Input may be billed as cache writes (dearer than input on Anthropic): hold the dearer.
        plain = self.cost(model, input_tokens, output_tokens)
        written = self.cost(model, input_tokens, output_tokens, written=input_tokens)
        return None if plain is None or written is None else max(plain, written)

    def amounts(self, spec: CallSpec, per_choice: int) -> dict[str, Amount]:
        """The hold of ``spec`` with ``per_choice`` output tokens, in the capped units."""
        output = per_choice * spec.choices
        every: dict[str, Amount] = {"tokens": spec.input_estimate + output,
                                    "input_tokens": spec.input_estimate,
                                    "output_tokens": output, "requests": 1}
        if "usd" in self.units:
            cost = self._worst_cost(spec.model, spec.input_estimate, output)
            assert cost is not None  # prices are required when usd is capped
            every["usd"] = cost
        return {unit: every[unit] for unit in self.units}

    async def open(self, spec: CallSpec) -> Call:
        """Reserve for ``spec`` in one store call and return the open ``Call``.

        Without ``clamp`` the whole bound is reserved or the budget's ``BudgetExceeded`` is
        raised. With ``clamp`` a refusal by ``tokens``, ``output_tokens`` or ``usd`` lowers
        the per-choice bound to what that limit had left and tries again, down to
        ``min_output_tokens``. ``UnknownModelPrice`` is raised before anything is reserved.
        Nothing stays held when this raises or is cancelled.
        """
        self.cost(spec.model, spec.input_estimate, spec.max_output * spec.choices)
        out = spec.max_output
        if not self.units:
            return Call(self, spec, out, None, {})
        for _ in range(_CLAMP_ATTEMPTS):
            amounts = self.amounts(spec, out)
            try:
                held = await self.budget.reserve(amounts, lease=self.lease)
            except BudgetExceeded as exc:
                smaller = self._affordable(spec, out, exc) if self.clamp else None
                if smaller is None or smaller >= out or smaller < self.min_output_tokens:
                    if log.enabled():
                        log.emit("outlay.clients.denied", api=spec.api, model=spec.model,
                                  input_estimate=spec.input_estimate, max_output_tokens=out,
                                  reason=exc.reason)
                    raise
                out = smaller
                continue
            return Call(self, spec, out, held, amounts)
        raise RuntimeError("the budget kept changing while clamping")  # pragma: no cover

    def _affordable(self, spec: CallSpec, out: int, exc: BudgetExceeded) -> int | None:
        """The per-choice bound the refusing limit can still hold; ``None`` if lowering the
        output cannot help (the input or the request alone does not fit)."""
        room = exc.available
        unit = exc.unit
        if room is None or unit is None:
            return None
        if unit == "tokens" and isinstance(room, int):
            return (room - spec.input_estimate) // spec.choices
        if unit == "output_tokens" and isinstance(room, int):
            return room // spec.choices
        if unit == "usd" and isinstance(room, Decimal):
            return self._affordable_output(spec, room, out * spec.choices) // spec.choices
        return None

    def _affordable_output(self, spec: CallSpec, money: Decimal, bound: int) -> int:
        """The most output tokens, at most ``bound``, that ``money`` pays for after the input;
        ``-1`` if it does not even pay for the input. A binary search over the price (which
        never falls as output grows), so it also holds for tiered library prices."""
        def cost(output: int) -> Decimal:
            value = self._worst_cost(spec.model, spec.input_estimate, output)
            assert value is not None
            return value

        if cost(0) > money:
            return -1
        low, high = 0, bound  # cost(low) fits; find the largest that does
        while low < high:
            mid = (low + high + 1) // 2
            if cost(mid) <= money:
                low = mid
            else:
                high = mid - 1
        return low

    async def admit_tool_calls(self, count: int, what: str) -> None:
        """Charge ``count`` tool calls of one response at once, or raise ``BudgetExceeded``
        and charge none (all-or-nothing). A no-op when the budget caps no ``tool_calls``."""
        count = check_count(count, "count")
        if count == 0 or not self.caps_tool_calls:
            return
        try:
            held = await self.budget.reserve({"tool_calls": count}, lease=self.lease)
        except BudgetExceeded:
            if log.enabled():
                log.emit("outlay.tool_calls.denied", what=what, tool_calls=count)
            raise
        await held.commit()


class Call:
    """The hold of one model call; ends exactly once by ``settle`` or ``refund`` (shielded)."""

    __slots__ = ("_held", "_policy", "amounts", "charge", "max_output", "spec")

    def __init__(self, policy: CallPolicy, spec: CallSpec, max_output: int,
                 held: Reservation | None, amounts: Mapping[str, Amount]) -> None:
        self._policy = policy
        self.spec = spec
        self.max_output = max_output
        """The per-choice output bound to send (clamped if the policy asked for it)."""
        self._held = held
        self.amounts = amounts
        """What is held, by unit."""
        self.charge: Charge | None = None

    @property
    def output_bound(self) -> int:
        """The whole output bound: ``max_output`` times the number of choices."""
        return self.max_output * self.spec.choices

    async def settle(self, prompt: int | None, completion: int | None, *, final: bool,
                     cached: int = 0, written: int = 0) -> Charge:
        """Charge the reported usage when ``final``; otherwise charge conservatively: the
        reported ``prompt`` (else the estimate) plus the whole output bound. ``cached`` and
        ``written`` are the parts of ``prompt`` read from and written to the prompt cache;
        they count only with a reported ``prompt`` and are capped by it."""
        if final and prompt is not None and completion is not None:
            outcome: Outcome = "recorded"
        else:
            outcome = "conservative"
            if prompt is None:
                prompt, cached, written = self.spec.input_estimate, 0, 0
            completion = self.output_bound
        cached = min(cached, prompt)
        written = min(written, prompt - cached)
        return await self._end(prompt, completion, cached, written, outcome)

    async def admit_tool_calls(self, count: int) -> None:
        """Charge the ``count`` tool calls of this call's response as one batch, or raise
        ``BudgetExceeded`` and charge none (see ``CallPolicy.admit_tool_calls``)."""
        await self._policy.admit_tool_calls(count, f"a {self.spec.api} response")

    async def refund(self) -> Charge:
        """Give the whole hold back; nothing is charged."""
        return await self._end(0, 0, 0, 0, "refunded")

    async def _end(self, prompt: int, completion: int, cached: int, written: int,
                   outcome: Outcome) -> Charge:
        if self.charge is not None:
            return self.charge
        policy = self._policy
        spec = self.spec
        charged: dict[str, Amount] = {}
        cost: Decimal | None = None
        if outcome != "refunded":
            cost = policy.cost(spec.model, prompt, completion, cached, written)
            every: dict[str, Amount] = {"tokens": prompt + completion, "input_tokens": prompt,
                                        "output_tokens": completion, "requests": 1}
            if cost is not None:
                every["usd"] = cost
            charged = {unit: every[unit] for unit in self.amounts}
        reserved_cost = self.amounts.get("usd")
        if reserved_cost is None and policy.prices is not None:
            reserved_cost = policy._worst_cost(spec.model, spec.input_estimate,
                                               self.output_bound)
        self.charge = charge = Charge(
            api=spec.api, model=spec.model, input_estimate=spec.input_estimate,
            max_output_tokens=self.output_bound, prompt_tokens=prompt,
            completion_tokens=completion, cached_prompt_tokens=cached,
            cache_write_tokens=written, reserved=dict(self.amounts), charged=charged,
            reserved_cost=reserved_cost if isinstance(reserved_cost, Decimal) else None,
            cost=cost, outcome=outcome)
        if self._held is not None:
            with anyio.CancelScope(shield=True):
                if outcome == "refunded":
                    await self._held.release()
                else:
                    await self._held.commit(charged)
        if log.enabled():
            log.emit("outlay.clients.settled", api=charge.api, model=charge.model,
                      outcome=outcome, input_estimate=charge.input_estimate,
                      max_output_tokens=charge.max_output_tokens,
                      prompt_tokens=prompt, completion_tokens=completion,
                      cached_prompt_tokens=cached, cache_write_tokens=written,
                      reserved_cost=charge.reserved_cost, cost=charge.cost)
        if policy.on_settle is not None:
            try:
                policy.on_settle(charge)
            except Exception as exc:  # an observer: logged and skipped
                log.warn("outlay.clients.on_settle_failed", error=repr(exc))
        return charge

