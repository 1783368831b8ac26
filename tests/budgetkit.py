"""Budget objects for the consumer tests (clients, integrations, recipes), and their figures.

One place builds "a budget that caps these units" so the consumer tests do not depend on how
the budget object is constructed.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from outlay import Amount, Budget, LimitSpec, Store, Window


def unit_budget(caps: Mapping[str, Amount], store: Store | str = "memory://", *,
                window: Window | None = None, principal: str = "agent:test",
                run_id: str | None = None) -> Budget:
    """A budget capping each unit of ``caps`` in one window (the run by default)."""
    window = window or Window.run()
    return Budget(caps=[LimitSpec(unit, window, cap) for unit, cap in caps.items()],
                  store=store, principal=principal, run_id=run_id)


def token_budget(cap: int) -> Budget:
    """A budget of ``cap`` tokens and nothing else."""
    return unit_budget({"tokens": cap})


async def figures(budget: Budget, unit: str) -> tuple[Amount, Amount, Amount]:
    """``(spent, held, available)`` of ``unit`` on the budget's own limit."""
    for usage in await budget.usage():
        if f"/{unit}/" in usage.key:
            available = usage.available
            assert available is not None
            return usage.spent, usage.held, available
    raise AssertionError(f"the budget caps no {unit!r}")


async def whole(budget: Budget, consumed: Amount, unit: str = "tokens") -> None:
    """Nothing held, exactly ``consumed`` spent, the rest available."""
    spent, held, available = await figures(budget, unit)
    cap = next(spec.cap for spec in budget.caps if spec.unit == unit)
    assert (spent, held) == (consumed, 0)
    expected = cap - consumed
    assert available == (max(expected, type(expected)(0)))


__all__ = ("Decimal", "figures", "token_budget", "unit_budget", "whole")
