"""The router's one seam to the budget object: what remains of it, read in one place."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .._core import Budget, parse_limit_key

__all__ = ("RemainingBudget", "RouteBudget", "plain", "read_remaining")

RouteBudget = Budget
"""The by-unit budget object the router charges (``reserve``/``try_reserve({unit: amount})``,
``usage()``, ``chain()``)."""


def plain(amount: Decimal) -> str:
    """An amount for a reason or a table: ``Decimal("2.3212800")`` -> ``"2.32128"``."""
    return format(amount.normalize(), "f") if amount else "0"


@dataclass(frozen=True, slots=True)
class RemainingBudget:
    """What a budget can still take in ``unit``: ``left`` is the least room over every limit of
    the unit (every window, every ancestor), ``fraction`` the least share of a cap still free
    (0 when no limit caps the unit: paid work is then off), ``key`` the tightest limit."""

    unit: str
    left: Decimal
    fraction: Decimal
    key: str | None = None

    def __str__(self) -> str:
        if self.key is None:
            return f"no {self.unit} cap is set (the default cap is 0)"
        percent = (self.fraction * 100).quantize(Decimal(1))
        return f"{plain(self.left)} {self.unit} left ({percent}% of the tightest cap, {self.key})"


async def read_remaining(budget: RouteBudget, unit: str) -> RemainingBudget:
    """Read what ``budget`` can still take in ``unit`` now: a snapshot that may be stale by the
    time anything is reserved (the router reserves, or the consumer does, and a refusal then
    falls through to the next candidate). One store read per limit of the chain."""
    seen: list[tuple[Decimal, Decimal, str]] = []
    for node in budget.chain():
        for usage in await node.usage():
            parsed = parse_limit_key(usage.key)
            if parsed is None or parsed.unit != unit:
                continue
            room = Decimal(usage.available)
            share = room / Decimal(usage.cap) if usage.cap else Decimal(0)
            seen.append((room, share, usage.key))
    if not seen:
        return RemainingBudget(unit, Decimal(0), Decimal(0))
    left, _, key = min(seen, key=lambda item: item[0])
    return RemainingBudget(unit, left, min(share for _, share, _ in seen), key)
