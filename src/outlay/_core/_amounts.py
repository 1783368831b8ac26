"""Argument checks shared by every budget and store.

Amounts are counted exactly: ``int`` units (tokens, calls) or ``Decimal`` money. ``bool`` and
``float`` are refused with ``TypeError``; negative or non-finite values with ``ValueError``. Every
check runs before any state is touched, so bad input takes nothing.
"""

from __future__ import annotations

from decimal import Decimal

Amount = int | Decimal
"""A quantity of budget: ``int`` units or ``Decimal`` money. Never ``float``."""


def check_count(value: object, name: str = "amount") -> int:
    """Return ``value`` if it is a non-negative ``int`` (not ``bool``); raise otherwise."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_amount(value: object, name: str = "amount") -> Amount:
    """Return ``value`` if it is a non-negative ``int`` or finite ``Decimal``; raise otherwise."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{name} must be finite, got {value}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return value
    if isinstance(value, float):
        raise TypeError(f"{name} must be an int or Decimal, never float (got {value!r}); "
                        "use Decimal('...') for money")
    return check_count(value, name)


def check_unit(cap: Amount, amount: Amount, key: str) -> None:
    """Refuse a ``Decimal`` amount against a limit that counts whole ``int`` units."""
    if isinstance(cap, int) and not isinstance(amount, int):
        raise TypeError(f"limit {key!r} counts whole units (int); got {amount!r}")
