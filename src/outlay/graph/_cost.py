"""Costs in one or more units, and the actual cost a stage may report.

A ``Cost`` is an immutable mapping of unit name (``"usd"``, ``"tokens"``, ``"calls"``) to an
amount: ``int`` units or ``Decimal`` money, never ``float``. Zero amounts are dropped, so two
costs that charge the same are equal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .._core import Amount, check_amount, check_count


class Cost(Mapping[str, Amount]):
    """What a stage (or a whole composition) may charge, by unit.

    ``Cost(usd=Decimal("0.02"), tokens=1500)`` or ``Cost({"usd": Decimal("0.02")})``. Amounts
    are checked like every outlay amount (``TypeError`` for ``float``/``bool``, ``ValueError``
    for negative or non-finite). Costs add (``+``), scale by a whole number (``*``) and take the
    per-unit maximum (``join``).
    """

    __slots__ = ("_amounts", "_hash")

    def __init__(self, amounts: Mapping[str, Amount] | None = None, /, **units: Amount) -> None:
        merged: dict[str, Amount] = {}
        for source in (amounts or {}, units):
            for unit, amount in source.items():
                if not isinstance(unit, str) or not unit:
                    raise TypeError(f"a cost unit must be a non-empty str, got {unit!r}")
                if unit in merged:
                    raise ValueError(f"cost unit {unit!r} given twice")
                checked = check_amount(amount, "cost", unit)
                if checked:
                    merged[unit] = checked
        self._amounts = merged
        self._hash: int | None = None

    @classmethod
    def _trusted(cls, amounts: dict[str, Amount]) -> Cost:
        """Wrap already-checked, non-zero amounts without copying them."""
        cost = cls.__new__(cls)
        cost._amounts = amounts
        cost._hash = None
        return cost

    def __getitem__(self, unit: str) -> Amount:
        return self._amounts[unit]

    def __iter__(self) -> Iterator[str]:
        return iter(self._amounts)

    def __len__(self) -> int:
        return len(self._amounts)

    def __bool__(self) -> bool:
        return bool(self._amounts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Cost):
            return self._amounts == other._amounts
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._amounts.items()))
        return self._hash

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        if not other._amounts:
            return self
        if not self._amounts:
            return other
        total = dict(self._amounts)
        for unit, amount in other._amounts.items():
            total[unit] = total.get(unit, 0) + amount
        return Cost._trusted(total)

    def __mul__(self, times: int) -> Cost:
        check_count(times, "times")
        if times == 0:
            return Cost()
        if times == 1:
            return self
        return Cost._trusted({unit: amount * times for unit, amount in self._amounts.items()})

    __rmul__ = __mul__

    def join(self, other: Cost) -> Cost:
        """The per-unit maximum of two costs: what is enough to pay for either."""
        if not other._amounts:
            return self
        if not self._amounts:
            return other
        most = dict(self._amounts)
        for unit, amount in other._amounts.items():
            if amount > most.get(unit, 0):
                most[unit] = amount
        return Cost._trusted(most)

    def fits_in(self, available: Mapping[str, Amount]) -> bool:
        """True if every unit of this cost is within ``available`` (missing units are zero)."""
        return all(amount <= available.get(unit, 0) for unit, amount in self._amounts.items())

    def __repr__(self) -> str:
        inner = ", ".join(f"{unit}={amount!r}" for unit, amount in self._amounts.items())
        return f"Cost({inner})"


FREE = Cost()
"""The zero cost."""


@dataclass(frozen=True, slots=True)
class Reported:
    """What a stage returns to report the actual cost it used alongside its output.

    ``return Reported(answer, Cost(usd=usage_usd, tokens=usage.total_tokens))``. The executor
    passes ``value`` on and reconciles ``cost`` against the stage's charge: the stage is
    charged ``cost`` instead of its declared cost (below the declaration gives budget back,
    above it is recorded as overshoot, never lost). A report may only name units the stage
    declared; anything else raises ``ValueError`` under a budget.
    """

    value: Any
    cost: Cost

    def __post_init__(self) -> None:
        if not isinstance(self.cost, Cost):
            raise TypeError(f"Reported.cost must be a Cost, got {type(self.cost).__name__}")


def zero_of(amount: Amount) -> Amount:
    """Zero in the same unit kind as ``amount``."""
    return Decimal(0) if isinstance(amount, Decimal) else 0
