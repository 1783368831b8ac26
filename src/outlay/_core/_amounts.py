"""Argument checks and exact arithmetic shared by every budget and store.

Amounts are counted exactly: ``int`` units (tokens, calls) or ``Decimal`` money. ``bool`` and
``float`` are refused with ``TypeError``; negative, non-finite or unbounded values with
``ValueError``. Every check runs before any state is touched, so bad input takes nothing.

Bounds: an amount or cap is at most ``MAX_AMOUNT`` (10**30) and a ``Decimal`` has at most
``MAX_PLACES`` (18) decimal places, so every sum a store forms stays exact in ``EXACT``, outlay's
own decimal context, and a hostile ``Decimal("1E+99999999")`` is refused at once instead of
being expanded. Store arithmetic runs in ``EXACT`` whatever the caller's context is (``plus``,
``minus``); a result it cannot hold exactly raises ``ValueError``.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from decimal import Decimal

Amount = int | Decimal
"""A quantity of budget: ``int`` units or ``Decimal`` money. Never ``float``."""

MAX_AMOUNT = 10**30
"""The largest amount or cap outlay counts (``int`` units or ``Decimal`` money)."""

MAX_PLACES = 18
"""The most decimal places a ``Decimal`` amount may have (trailing zeros aside)."""

MAX_LEASE = 10.0**9
"""The longest lease in seconds (about 31 years); ``math.inf`` is refused."""

EXACT = decimal.Context(
    prec=64, Emax=64, Emin=-64, rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.Inexact, decimal.Rounded, decimal.Overflow, decimal.InvalidOperation,
           decimal.DivisionByZero, decimal.Underflow, decimal.Subnormal, decimal.Clamped],
)
"""outlay's own decimal context: any rounding, overflow or invalid operation raises."""

_MAX_DECIMAL = Decimal(MAX_AMOUNT)


def named(name: str, key: str | None = None) -> str:
    """How an error names a value: ``name``, or ``name[key]`` for one entry of a mapping (built
    only when an error is raised, so the checks cost no formatting on the way through)."""
    return name if key is None else f"{name}[{key!r}]"


def check_count(value: object, name: str = "amount", key: str | None = None) -> int:
    """Return ``value`` if it is an ``int`` (not ``bool``) in ``0..MAX_AMOUNT``; raise otherwise
    (the error names it ``named(name, key)``)."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{named(name, key)} must be an int, got {type(value).__name__}: "
                        f"{value!r}")
    if value < 0:
        raise ValueError(f"{named(name, key)} must be >= 0, got {value}")
    if value > MAX_AMOUNT:
        raise ValueError(f"{named(name, key)} is too large: at most 10**30")
    return value


def check_amount(value: object, name: str = "amount", key: str | None = None) -> Amount:
    """Return ``value`` if it is a non-negative ``int`` or finite ``Decimal`` within the bounds
    (``MAX_AMOUNT``, ``MAX_PLACES``); raise ``TypeError``/``ValueError`` otherwise (the error
    names it ``named(name, key)``)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{named(name, key)} must be finite, got {value}")
        if value < 0:
            raise ValueError(f"{named(name, key)} must be >= 0, got {value}")
        if value > _MAX_DECIMAL:
            raise ValueError(f"{named(name, key)} is too large: at most 10**30")
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)  # finite
        if exponent < -MAX_PLACES:
            return _fewer_places(value, sign, digits, exponent, named(name, key))
        return value
    if isinstance(value, float):
        raise TypeError(f"{named(name, key)} must be an int or Decimal, never float (got "
                        f"{value!r}); use Decimal('...') for money")
    return check_count(value, name, key)


def check_amounts(amounts: Mapping[str, object], name: str) -> dict[str, Amount]:
    """Every value of ``amounts`` checked by ``check_amount``, as a new dict; a bad one raises
    naming it ``name[key]``."""
    return {key: check_amount(value, name, key) for key, value in amounts.items()}


def _fewer_places(value: Decimal, sign: int, digits: tuple[int, ...], exponent: int,
                  name: str) -> Decimal:
    """``value`` without trailing zeros if that leaves at most ``MAX_PLACES`` places."""
    if not any(digits):
        return Decimal(0)
    kept = len(digits)
    while digits[kept - 1] == 0:
        kept -= 1
    exponent += len(digits) - kept
    if exponent < -MAX_PLACES:
        raise ValueError(f"{name} has more than {MAX_PLACES} decimal places")
    return Decimal((sign, digits[:kept], exponent))


def check_unit(cap: Amount, amount: Amount, key: str) -> None:
    """Refuse a ``Decimal`` amount against a limit that counts whole ``int`` units."""
    if isinstance(cap, int) and not isinstance(amount, int):
        raise TypeError(f"limit {key!r} counts whole units (int); got {amount!r}")


def check_lease(lease: object) -> float:
    """Return ``lease`` as positive finite seconds up to ``MAX_LEASE``; raise
    ``TypeError``/``ValueError`` otherwise."""
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        raise TypeError(f"lease must be a number of seconds, got {type(lease).__name__}")
    if not math.isfinite(lease) or lease <= 0 or lease > MAX_LEASE:
        raise ValueError("lease must be a positive, finite number of seconds up to "
                         f"{MAX_LEASE:.0f}, got {lease}")
    return float(lease)


def plus(a: Amount, b: Amount) -> Amount:
    """``a + b``, exact in ``EXACT`` (``ValueError`` if it cannot be held exactly)."""
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    try:
        return EXACT.add(a, b)
    except decimal.DecimalException as exc:
        raise ValueError(f"{a} + {b} cannot be counted exactly") from exc


def minus(a: Amount, b: Amount) -> Amount:
    """``a - b``, exact in ``EXACT`` (``ValueError`` if it cannot be held exactly)."""
    if isinstance(a, int) and isinstance(b, int):
        return a - b
    try:
        return EXACT.subtract(a, b)
    except decimal.DecimalException as exc:
        raise ValueError(f"{a} - {b} cannot be counted exactly") from exc
