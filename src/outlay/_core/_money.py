"""Money policy as pure code over ``Decimal``: caps per window, admission decisions, job costs.

Nothing here does I/O or keeps state. ``BudgetCap`` caps money per window and defaults to zero,
so paid work stays off until someone sets a budget. ``admits`` decides whether an estimate fits
every window and says why in words. ``estimate_cost`` bounds what a compute job billed per
second can cost (vCPUs, memory and accelerators), idle tail included, computed exactly;
``accelerator_refusal`` is the one rule that says a job needing accelerators cannot run where
none fits (the cost gate and the router both use it). ``float`` money is refused with
``TypeError`` everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)

from ._amounts import Amount, check_count, minus, plus
from ._exceptions import InfeasibleWork

__all__ = (
    "AdmissionDecision",
    "BudgetCap",
    "CostRates",
    "WindowState",
    "accelerator_refusal",
    "admits",
    "check_money",
    "estimate_cost",
    "over_cap_reason",
)

ZERO = Decimal(0)

# Products and sums of finite Decimals are exact at this precision; Inexact is trapped so a
# rounded result can never pass for an exact one.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN,
                 traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])


def check_money(value: object, name: str = "amount") -> Decimal:
    """Return ``value`` if it is a finite, non-negative ``Decimal``.

    Raises ``TypeError`` for anything else (``float``, ``int``, ``str``) and ``ValueError`` for a
    negative or non-finite ``Decimal``. ``int`` is refused too: money is always ``Decimal``.
    """
    if not isinstance(value, Decimal):
        hint = "; use Decimal('...') for money" if isinstance(value, float | int) else ""
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__}: {value!r}{hint}")
    if not value.is_finite():
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_quantity(value: object, name: str) -> Decimal:
    """A non-money quantity (seconds, vCPUs, GiB): int, Decimal, or float taken as written."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got bool")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        value = Decimal(repr(value))  # 0.1 -> Decimal("0.1"), not the binary expansion
    elif isinstance(value, int):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be an int, Decimal or float, got {type(value).__name__}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def _check_window(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"window name must be a non-empty str, got {name!r}")
    return name


class BudgetCap(Mapping[str, Decimal]):
    """Money caps by window name; a window with no cap set is capped at zero.

    ``BudgetCap(run=Decimal("50"), month=Decimal("500"))`` or ``BudgetCap({"6h": Decimal(5)})``.
    ``cap["day"]`` is ``Decimal(0)`` when no day cap was set, so paid work is off until a budget
    is set. Raises ``TypeError`` for ``float`` (or any non-``Decimal``) money and ``ValueError``
    for a negative cap. Iterating yields only the windows that were set.
    """

    __slots__ = ("_caps",)

    def __init__(self, caps: Mapping[str, Decimal] | None = None, /, **by_window: Decimal) -> None:
        merged = {**(caps or {}), **by_window}
        self._caps = {_check_window(w): check_money(c, f"cap for window {w!r}")
                      for w, c in merged.items()}

    def __getitem__(self, window: str) -> Decimal:
        return self._caps.get(window, ZERO)

    def __contains__(self, window: object) -> bool:
        return window in self._caps

    def __iter__(self) -> Iterator[str]:
        return iter(self._caps)

    def __len__(self) -> int:
        return len(self._caps)

    def __repr__(self) -> str:
        inner = ", ".join(f"{w}={c}" for w, c in self._caps.items())
        return f"BudgetCap({inner})"


@dataclass(frozen=True, slots=True)
class WindowState:
    """What a window has used so far: committed ``spent`` and ``reserved`` (live holds)."""

    spent: Decimal = ZERO
    reserved: Decimal = ZERO

    def __post_init__(self) -> None:
        check_money(self.spent, "spent")
        check_money(self.reserved, "reserved")


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """The answer of ``admits``. ``refused_window`` names the first window that lacked room
    (``None`` when admitted); ``reason`` says in words why, with the figures."""

    admitted: bool
    refused_window: str | None
    reason: str

    def __bool__(self) -> bool:
        return self.admitted


def over_cap_reason(
    window: str, cap: Amount, spent: Amount, reserved: Amount, estimate: Amount
) -> str:
    """Say in words why ``estimate`` does not fit ``window`` (shared by every refusal)."""
    total = plus(plus(spent, reserved), estimate)
    return (f"window {window!r}: cap {cap}, committed {spent}, reserved {reserved}, "
            f"estimate {estimate}: total {total} is over the cap by {minus(total, cap)}")


def admits(
    estimate: Decimal, states: Mapping[str, WindowState], cap: BudgetCap
) -> AdmissionDecision:
    """Decide whether ``estimate`` fits every window: ``spent + reserved + estimate <= cap``.

    The windows checked are those with a cap and those with a state; a window with a state but
    no cap has cap zero. With no window at all the cap is zero too, so only a zero estimate is
    admitted. Windows are checked in sorted order and the first refusal is reported. Raises
    ``TypeError``/``ValueError`` for bad money.
    """
    estimate = check_money(estimate, "estimate")
    if not isinstance(cap, BudgetCap):
        raise TypeError(f"cap must be a BudgetCap, got {type(cap).__name__}")
    windows = sorted(set(cap) | set(states))
    if not windows:
        if estimate == 0:
            return AdmissionDecision(True, None, "estimate 0 needs no budget")
        return AdmissionDecision(
            False, None, f"no budget is set (the default cap is 0); estimate {estimate} refused"
        )
    fits: list[str] = []
    for window in windows:
        state = states.get(window, WindowState())
        if not isinstance(state, WindowState):
            raise TypeError(f"states[{window!r}] must be a WindowState, "
                            f"got {type(state).__name__}")
        limit = cap[window]
        total = plus(plus(state.spent, state.reserved), estimate)  # exact, any caller context
        if total > limit:
            reason = over_cap_reason(window, limit, state.spent, state.reserved, estimate)
            if window not in cap:
                reason += " (no cap is set for this window: the default cap is 0)"
            return AdmissionDecision(False, window, reason)
        fits.append(f"{window} {total}/{limit}")
    return AdmissionDecision(True, None, "fits every window: " + ", ".join(fits))


def accelerator_refusal(
    needed: int, memory_gib: Decimal, offered: Iterable[Decimal]
) -> str | None:
    """The one accelerator rule: why ``needed`` accelerators of at least ``memory_gib`` GiB each
    cannot be had from accelerators with memories ``offered`` (free ones only), or ``None``.

    A job needing none always fits; "no accelerator" makes any job needing one infeasible.
    Used by ``estimate_cost`` (rates without an accelerator rate) and by the router.
    """
    if needed == 0:
        return None
    memories = list(offered)
    fitting = sum(1 for memory in memories if memory >= memory_gib)
    if fitting >= needed:
        return None
    want = f"needs {needed} accelerator(s)" + (f" of >= {memory_gib} GiB" if memory_gib else "")
    if not memories:
        return f"{want}; has no free accelerator"
    return f"{want}; {fitting} of {len(memories)} free accelerator(s) fit"


@dataclass(frozen=True, slots=True)
class CostRates:
    """Prices of a compute job billed per second, all ``Decimal`` money.

    ``per_vcpu_second``, ``per_gib_second`` and ``per_accelerator_second`` (per device) are
    charged for every billed second; ``per_job`` once. ``per_accelerator_second=None`` (the
    default) says the machine has no accelerator: a job that needs one is infeasible there
    (``InfeasibleWork``), never priced as free. Billed time is the runtime plus ``idle_tail_s``
    (the machine lingers before it is torn down), at least ``minimum_billed_s``, rounded up to
    whole ``billing_increment_s``. Raises ``TypeError`` for ``float`` money and ``ValueError``
    for negative figures or a non-positive increment.
    """

    per_vcpu_second: Decimal = ZERO
    per_gib_second: Decimal = ZERO
    per_job: Decimal = ZERO
    idle_tail_s: int = 0
    minimum_billed_s: int = 0
    billing_increment_s: int = 1
    per_accelerator_second: Decimal | None = None

    def __post_init__(self) -> None:
        check_money(self.per_vcpu_second, "per_vcpu_second")
        check_money(self.per_gib_second, "per_gib_second")
        check_money(self.per_job, "per_job")
        if self.per_accelerator_second is not None:
            check_money(self.per_accelerator_second, "per_accelerator_second")
        for name in ("idle_tail_s", "minimum_billed_s", "billing_increment_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int number of seconds, got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.billing_increment_s == 0:
            raise ValueError("billing_increment_s must be at least 1 second")


def estimate_cost(
    rates: CostRates,
    *,
    max_runtime_s: int | Decimal | float,
    vcpus: int | Decimal | float,
    memory_gib: int | Decimal | float,
    accelerators: int = 0,
) -> Decimal:
    """Upper bound on what one job costs: billed seconds x (vCPU + memory + accelerator rate)
    + per-job fee, exact in ``Decimal`` (never rounded).

    Billed seconds are ``max_runtime_s + idle_tail_s``, at least ``minimum_billed_s``, rounded
    up to a whole ``billing_increment_s``. Quantities may be ``int``, ``Decimal`` or ``float``
    (a float is taken as written: ``0.5`` is exactly one half); ``accelerators`` is a whole
    device count. A job at or below every declared figure never costs more. Raises
    ``InfeasibleWork`` when ``accelerators > 0`` and the rates have no accelerator rate, and
    ``TypeError``/``ValueError`` for bad input.
    """
    if not isinstance(rates, CostRates):
        raise TypeError(f"rates must be CostRates, got {type(rates).__name__}")
    runtime = check_quantity(max_runtime_s, "max_runtime_s")
    cpus = check_quantity(vcpus, "vcpus")
    gib = check_quantity(memory_gib, "memory_gib")
    devices = check_count(accelerators, "accelerators")
    accelerator_rate = rates.per_accelerator_second
    if accelerator_rate is None:
        refusal = accelerator_refusal(devices, ZERO, ())
        if refusal is not None:
            raise InfeasibleWork(f"{refusal} (these rates price no accelerator)")
        accelerator_rate = ZERO
    ctx = _EXACT
    seconds = max(ctx.add(runtime, rates.idle_tail_s), Decimal(rates.minimum_billed_s))
    whole, part = ctx.divmod(seconds, rates.billing_increment_s)
    billed = ctx.multiply(ctx.add(whole, 1 if part else 0), rates.billing_increment_s)
    per_second = ctx.add(ctx.add(ctx.multiply(cpus, rates.per_vcpu_second),
                                 ctx.multiply(gib, rates.per_gib_second)),
                         ctx.multiply(devices, accelerator_rate))
    return ctx.add(ctx.multiply(billed, per_second), rates.per_job)
