"""A routing decision as a record: every candidate, its worst case and its verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from ._budget import RemainingBudget, plain
from ._model import Backend, Work

__all__ = ("RouteDecision", "RouteVerdict")

Status = Literal["chosen", "eligible", "refused"]


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    """One candidate in a decision: ``status`` is ``"chosen"``, ``"eligible"`` (a fallback) or
    ``"refused"`` (``reason`` says why); ``cost`` is its worst case (``None`` when it could not
    be priced), ``remaining`` what was left of the budget charged for it."""

    backend: Backend
    status: Status
    reason: str
    cost: Decimal | None = None
    remaining: RemainingBudget | None = None


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where ``work`` goes: ``chosen`` (``None`` when nothing is eligible) and a ``RouteVerdict``
    for every candidate, in the order they were considered. ``remaining`` is what was left of
    the router's budget. ``str()`` is a table; ``fields()`` the flat log fields."""

    work: Work
    verdicts: tuple[RouteVerdict, ...]
    allow_sdk: bool
    remaining: RemainingBudget | None = None

    @property
    def chosen(self) -> Backend | None:
        for verdict in self.verdicts:
            if verdict.status == "chosen":
                return verdict.backend
        return None

    @property
    def cost(self) -> Decimal | None:
        """The chosen candidate's worst case."""
        for verdict in self.verdicts:
            if verdict.status == "chosen":
                return verdict.cost
        return None

    @property
    def refused(self) -> tuple[RouteVerdict, ...]:
        return tuple(v for v in self.verdicts if v.status == "refused")

    @property
    def fallbacks(self) -> tuple[Backend, ...]:
        """The eligible candidates after the chosen one, in order."""
        return tuple(v.backend for v in self.verdicts if v.status == "eligible")

    def reasons(self) -> Mapping[str, str]:
        """Candidate name -> why it was refused."""
        return {v.backend.name: v.reason for v in self.verdicts if v.status == "refused"}

    def fields(self) -> dict[str, Any]:
        """Flat, JSON-friendly fields for a log event (amounts as strings, no secrets)."""
        chosen = self.chosen
        return {
            "work": self.work.describe(),
            "chosen": None if chosen is None else chosen.name,
            "kind": None if chosen is None else str(chosen.kind),
            "node": None if chosen is None else chosen.node,
            "estimate": None if self.cost is None else str(self.cost),
            "refused": dict(self.reasons()),
            "remaining": None if self.remaining is None else str(self.remaining.left),
            "allow_sdk": self.allow_sdk,
        }

    def __str__(self) -> str:
        chosen = self.chosen
        head = (f"{self.work.describe()} -> {chosen.name} ({chosen.kind})" if chosen is not None
                else f"{self.work.describe()} -> no candidate can take it")
        if self.remaining is not None:
            head += f"; budget: {self.remaining}"
        rows = [("candidate", "kind", "node", "worst case", "verdict")]
        for v in self.verdicts:
            verdict = v.status if v.status != "refused" else f"refused: {v.reason}"
            rows.append((v.backend.name, str(v.backend.kind), v.backend.node or "-",
                         "-" if v.cost is None else plain(v.cost), verdict))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [head]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            lines.append("  " + "  ".join([*cells, row[4]]))
        return "\n".join(lines)
