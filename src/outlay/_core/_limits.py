"""Limits as users write them: ``LimitSpec`` (a unit, a window, a cap) and limit keys.

A ``Budget`` turns the caps of a principal into one store limit per principal in the chain and
window capping the unit, keyed ``<principal path>/<unit>/<period id>``::

    tenant:acme/usd/month:2026-11
    tenant:acme/agent:planner/usd/run:7f3a...

``parse_limit_key`` takes such a key apart again (the CLI, refusals).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from ._amounts import Amount, check_amount
from ._exceptions import ConfigurationError
from ._money import BudgetCap
from ._windows import Window

__all__ = ("UNIT_NAME", "LimitKey", "LimitSpec", "check_principal", "check_specs", "money_limits",
           "parse_limit_key")

_PRINCIPAL = re.compile(r"^[a-z][a-z0-9_]*:[^/\s]+$")
UNIT_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
"""What a unit name looks like: ``usd``, ``tokens``, ``gpu_seconds``."""


def check_principal(name: object) -> str:
    if not isinstance(name, str) or not _PRINCIPAL.match(name):
        raise ValueError(f"a principal is named 'kind:name' (kind in lower case, no '/' or "
                         f"spaces), e.g. 'tenant:acme'; got {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One cap of a principal: at most ``cap`` of ``unit`` per period of ``window``.

    ``cap`` is ``int`` (tokens, calls) or ``Decimal`` (money); ``float`` raises ``TypeError``.
    """

    unit: str
    window: Window
    cap: Amount

    def __post_init__(self) -> None:
        if not isinstance(self.unit, str) or not UNIT_NAME.match(self.unit):
            raise ValueError(f"unit must match {UNIT_NAME.pattern}, got {self.unit!r}")
        if not isinstance(self.window, Window):
            raise TypeError(f"window must be a Window, got {type(self.window).__name__}")
        check_amount(self.cap, "cap")


@dataclass(frozen=True, slots=True)
class LimitKey:
    """A limit key taken apart: ``principal`` path, ``unit`` and ``period`` id."""

    principal: str
    unit: str
    period: str

    @property
    def window(self) -> str:
        """The window name: the period id up to its first ``:`` (``month``)."""
        return self.period.partition(":")[0]

    def __str__(self) -> str:
        return f"{self.principal}/{self.unit}/{self.period}"


def parse_limit_key(key: str) -> LimitKey | None:
    """Split ``tenant:acme/usd/month:2026-11``; ``None`` for a key not made by ``Principals``."""
    parts = key.split("/")
    if len(parts) < 3 or ":" not in parts[-1] or not UNIT_NAME.match(parts[-2]):
        return None
    if not all(_PRINCIPAL.match(p) for p in parts[:-2]):
        return None
    return LimitKey("/".join(parts[:-2]), parts[-2], parts[-1])


def money_limits(cap: BudgetCap, windows: Iterable[Window], unit: str = "usd") -> list[LimitSpec]:
    """Turn a ``BudgetCap`` into limit specs: one per window, matched by window name.

    A window the cap does not mention gets the default cap of zero; a cap for a window not in
    ``windows`` raises ``ConfigurationError`` (it would silently never apply).
    """
    if not isinstance(cap, BudgetCap):
        raise TypeError(f"cap must be a BudgetCap, got {type(cap).__name__}")
    listed = list(windows)
    names = {window.name for window in listed}
    stray = sorted(set(cap) - names)
    if stray:
        raise ConfigurationError(f"caps for windows {stray} match none of the windows given "
                                 f"({sorted(names)})")
    return [LimitSpec(unit, window, cap[window.name]) for window in listed]


def check_specs(specs: Iterable[LimitSpec]) -> tuple[LimitSpec, ...]:
    checked = tuple(specs)
    seen: set[tuple[str, str]] = set()
    money: dict[str, bool] = {}
    for spec in checked:
        if not isinstance(spec, LimitSpec):
            raise TypeError(f"caps must be LimitSpec objects, got {type(spec).__name__}")
        ident = (spec.unit, spec.window.name)
        if ident in seen:
            raise ConfigurationError(f"two caps for unit {spec.unit!r} in window "
                                     f"{spec.window.name!r}")
        seen.add(ident)
        is_money = isinstance(spec.cap, Decimal)
        if money.setdefault(spec.unit, is_money) != is_money:
            raise ConfigurationError(f"unit {spec.unit!r} is capped both in Decimal money and "
                                     "in whole int units; pick one")
    return checked
