"""Stores over a user's ``BudgetGuard`` or ``TokenBudget``: what ``Budget.from_guard`` and
``Budget.from_token_budget`` stand on.

Each holds exactly one limit (the guard), whatever key the budget names it by, so a reservation
is still one call and all-or-nothing. Holds are kept by reservation id in this process; the
guard decides admission and keeps the count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..stores import Admission, LimitUsage, Store
from ..stores._base import ADMITTED
from ._amounts import Amount, check_count
from ._exceptions import ReservationError

if TYPE_CHECKING:
    from .._protocols import BudgetGuard, TokenBudget
    from ._tokens import TokenReservation


def _one(amounts: Mapping[str, Amount]) -> tuple[str, int]:
    if len(amounts) != 1:
        raise ValueError(f"a guard budget holds one unit, got {sorted(amounts)}")
    [(key, amount)] = amounts.items()
    return key, check_count(amount, "amount", key)


class _AdaptedStore(Store):
    """What the two adapters share: ids of live holds, idempotent endings, a usage snapshot."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, int]] = {}
        self._ended: set[str] = set()

    async def set_limit(self, key: str, cap: Amount) -> None:
        raise NotImplementedError("the cap of a guard budget is the guard's own")

    async def extend(self, rid: str, lease: float) -> bool:
        return rid in self._held  # the guard's holds do not expire

    def _take(self, rid: str) -> tuple[str, int] | None:
        hold = self._held.pop(rid, None)
        if hold is None:
            if rid in self._ended:
                return None
            raise ReservationError(f"reservation {rid} is unknown to this guard budget")
        self._ended.add(rid)
        return hold

    def _ending(self, rid: str, actual: Mapping[str, Amount] | None) -> tuple[int, int] | None:
        """End ``rid`` (``_take``) for a commit: its held and spent counts; None if it had
        already ended. ``actual`` leaving the key out spends the hold."""
        hold = self._take(rid)
        if hold is None:
            return None
        key, held = hold
        return held, held if actual is None or key not in actual else check_count(actual[key])

    @staticmethod
    def _refused(key: str, amount: int, limit: object) -> Admission:
        """A refusal, with ``limit``'s usage when it reports ``capacity`` and ``available``."""
        capacity = getattr(limit, "capacity", None)
        available = getattr(limit, "available", None)
        if type(capacity) is int and type(available) is int:
            usage = LimitUsage(key, capacity, 0, capacity - available)
            return Admission(False, usage, amount)
        return Admission(False, None, amount)


class GuardStore(_AdaptedStore):
    """A store whose one limit is a ``BudgetGuard``: reserve is ``try_reserve``, release gives
    the units back, commit keeps them (below the hold the rest is given back; above it the
    extra is taken if the guard has room - a guard cannot record spend it refuses)."""

    def __init__(self, guard: BudgetGuard) -> None:
        super().__init__()
        self._guard = guard

    async def reserve(self, rid: str, amounts: Mapping[str, Amount], *, lease: float,
                      defaults: Mapping[str, Amount] | None = None,
                      expire_at: Mapping[str, float] | None = None) -> Admission:
        key, amount = _one(amounts)
        if rid in self._held:
            return ADMITTED
        if not await self._guard.try_reserve(amount):
            return self._refused(key, amount, self._guard)
        self._held[rid] = (key, amount)
        return ADMITTED

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        ending = self._ending(rid, actual)
        if ending is None:
            return False
        held, spent = ending
        if spent < held:
            await self._guard.release(held - spent)
        elif spent > held:
            await self._guard.try_reserve(spent - held)
        return True

    async def release(self, rid: str) -> bool:
        hold = self._take(rid)
        if hold is None:
            return False
        await self._guard.release(hold[1])
        return True

    async def usage(self, key: str) -> LimitUsage:
        capacity = getattr(self._guard, "capacity", None)
        available = getattr(self._guard, "available", None)
        if type(capacity) is int and type(available) is int:
            return LimitUsage(key, capacity, 0, capacity - available)
        raise NotImplementedError(f"{type(self._guard).__name__} does not report its usage")


class TokenBudgetStore(_AdaptedStore):
    """A store whose one limit is a ``TokenBudget``: reserve is ``try_reserve_tokens``, commit
    is ``record_usage`` (the whole actual as prompt tokens), release refunds the estimate."""

    def __init__(self, tokens: TokenBudget) -> None:
        super().__init__()
        self._tokens = tokens
        self._reservations: dict[str, TokenReservation] = {}

    async def reserve(self, rid: str, amounts: Mapping[str, Amount], *, lease: float,
                      defaults: Mapping[str, Amount] | None = None,
                      expire_at: Mapping[str, float] | None = None) -> Admission:
        key, amount = _one(amounts)
        if rid in self._held:
            return ADMITTED
        reservation = await self._tokens.try_reserve_tokens(amount)
        if reservation is None:
            return self._refused(key, amount, self._tokens)
        self._held[rid] = (key, amount)
        self._reservations[rid] = reservation
        return ADMITTED

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        ending = self._ending(rid, actual)
        if ending is None:
            return False
        _, spent = ending
        await self._tokens.record_usage(self._reservations.pop(rid), spent, 0)
        return True

    async def release(self, rid: str) -> bool:
        if self._take(rid) is None:
            return False
        await self._reservations.pop(rid).release()
        return True

    async def usage(self, key: str) -> LimitUsage:
        capacity = getattr(self._tokens, "capacity", None)
        available = getattr(self._tokens, "available", None)
        if type(capacity) is int and type(available) is int:
            spent = await self._tokens.tokens_consumed()
            return LimitUsage(key, capacity, spent, max(capacity - available - spent, 0))
        raise NotImplementedError(f"{type(self._tokens).__name__} does not report its usage")
