"""The in-memory store: the default, for one process.

Every operation is one short critical section under a ``threading.Lock`` and never awaits while
holding it, so the store is safe from any thread and from asyncio and trio alike. The async
methods of the ``Store`` protocol wrap the synchronous ``*_nowait`` core, which in-process code
(the ``Atomic*`` budgets) may call directly.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from .._core import Amount, ReservationError, UnknownLimit, check_amount, check_unit
from ._base import Admission, LimitUsage, Store

#: How many ended reservation ids are remembered for idempotent retries.
ENDED_MEMORY = 65_536

_COMMITTED = "committed"
_RELEASED = "released"


@dataclass(slots=True)
class _Limit:
    cap: Amount
    spent: Amount
    held: Amount


@dataclass(slots=True)
class _Hold:
    amounts: dict[str, Amount]
    expires_at: float


class MemoryStore(Store):
    """Limits, holds and spend in this process's memory.

    ``clock`` returns seconds (monotonic by default) and can be replaced in tests to drive
    leases. Expired holds stop counting at the next operation; a commit that arrives after its
    lease expired still records the spend. The last ``ENDED_MEMORY`` ended ids are remembered so
    retried endings are answered idempotently.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._limits: dict[str, _Limit] = {}
        self._holds: dict[str, _Hold] = {}
        self._expiry: list[tuple[float, str]] = []
        # rid -> "committed" | "released" | the amounts of a hold whose lease expired
        self._ended: OrderedDict[str, str | dict[str, Amount]] = OrderedDict()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """``memory://`` -> a fresh, empty store."""
        return cls()

    # -- synchronous core ----------------------------------------------------------------

    def set_limit_nowait(self, key: str, cap: Amount) -> None:
        """Create ``key`` with ``cap`` or change its cap; spend and holds are kept."""
        cap = check_amount(cap, "cap")
        with self._lock:
            limit = self._limits.get(key)
            if limit is None:
                zero: Amount = Decimal(0) if isinstance(cap, Decimal) else 0
                self._limits[key] = _Limit(cap, zero, zero)
            else:
                if isinstance(limit.cap, int) != isinstance(cap, int):
                    raise TypeError(f"limit {key!r} cannot change unit from "
                                    f"{type(limit.cap).__name__} to {type(cap).__name__}")
                limit.cap = cap

    def reserve_nowait(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        """Synchronous ``reserve``; see ``Store.reserve``. ``expire_at`` is not used: a
        finished period's limit stays readable for the life of the process."""
        checked = {key: check_amount(amount) for key, amount in amounts.items()}
        if defaults:
            for cap in defaults.values():
                check_amount(cap, "cap")
        with self._lock:
            now = self._clock()
            self._expire(now)
            if rid in self._holds:
                return Admission(True)
            if rid in self._ended:
                raise ReservationError(f"reservation {rid!r} has already ended")
            limits: list[tuple[_Limit, Amount]] = []
            created: dict[str, _Limit] = {}
            for key, amount in checked.items():
                limit = self._limits.get(key)
                if limit is None:
                    if not defaults or key not in defaults:
                        raise UnknownLimit(key)
                    cap = defaults[key]
                    zero: Amount = Decimal(0) if isinstance(cap, Decimal) else 0
                    limit = created[key] = _Limit(cap, zero, zero)
                check_unit(limit.cap, amount, key)
                limits.append((limit, amount))
            for (key, amount), (limit, _) in zip(checked.items(), limits, strict=True):
                if limit.spent + limit.held + amount > limit.cap:
                    usage = LimitUsage(key, limit.cap, limit.spent, limit.held)
                    return Admission(False, usage, amount)
            self._limits.update(created)
            for limit, amount in limits:
                limit.held += amount
            expires_at = now + lease
            self._holds[rid] = _Hold(checked, expires_at)
            heapq.heappush(self._expiry, (expires_at, rid))
            return Admission(True)

    def commit_nowait(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        """Synchronous ``commit``; see ``Store.commit``."""
        checked = {k: check_amount(v, f"actual[{k!r}]") for k, v in (actual or {}).items()}
        with self._lock:
            self._expire(self._clock())
            hold = self._holds.get(rid)
            if hold is None:
                ended = self._ended.get(rid)
                if ended is None:
                    raise ReservationError(f"unknown reservation {rid!r}")
                if isinstance(ended, str):
                    return False
                # The lease expired before the commit: the hold is gone, the spend still counts.
                spend = self._settle(ended, checked)
                for key, amount in spend.items():
                    self._limits[key].spent += amount
                self._remember(rid, _COMMITTED)
                return True
            spend = self._settle(hold.amounts, checked)
            for key, held in hold.amounts.items():
                limit = self._limits[key]
                limit.held -= held
                limit.spent += spend[key]
            del self._holds[rid]
            self._remember(rid, _COMMITTED)
            return True

    def release_nowait(self, rid: str) -> bool:
        """Synchronous ``release``; see ``Store.release``."""
        with self._lock:
            self._expire(self._clock())
            hold = self._holds.pop(rid, None)
            if hold is None:
                if rid in self._ended and not isinstance(self._ended[rid], str):
                    self._remember(rid, _RELEASED)
                return False
            for key, held in hold.amounts.items():
                self._limits[key].held -= held
            self._remember(rid, _RELEASED)
            return True

    def extend_nowait(self, rid: str, lease: float) -> bool:
        """Synchronous ``extend``; see ``Store.extend``."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            hold = self._holds.get(rid)
            if hold is None:
                return False
            hold.expires_at = now + lease
            heapq.heappush(self._expiry, (hold.expires_at, rid))
            return True

    def usage_nowait(self, key: str) -> LimitUsage:
        """Synchronous ``usage``; see ``Store.usage``."""
        with self._lock:
            self._expire(self._clock())
            limit = self._limits.get(key)
            if limit is None:
                raise UnknownLimit(key)
            return LimitUsage(key, limit.cap, limit.spent, limit.held)

    def limits_nowait(self, prefix: str = "") -> list[LimitUsage]:
        """Synchronous ``limits``; see ``Store.limits``."""
        with self._lock:
            self._expire(self._clock())
            return [LimitUsage(key, limit.cap, limit.spent, limit.held)
                    for key, limit in sorted(self._limits.items()) if key.startswith(prefix)]

    def reset_spend_nowait(self, key: str) -> LimitUsage:
        """Synchronous ``reset_spend``; see ``Store.reset_spend``."""
        with self._lock:
            self._expire(self._clock())
            limit = self._limits.get(key)
            if limit is None:
                raise UnknownLimit(key)
            before = LimitUsage(key, limit.cap, limit.spent, limit.held)
            limit.spent = Decimal(0) if isinstance(limit.cap, Decimal) else 0
            return before

    def held_reservations_nowait(self) -> int:
        """Synchronous ``held_reservations``: how many holds are live right now."""
        with self._lock:
            self._expire(self._clock())
            return len(self._holds)

    # -- helpers (call with the lock held) -------------------------------------------------

    def _settle(
        self, held: Mapping[str, Amount], actual: Mapping[str, Amount]
    ) -> dict[str, Amount]:
        unknown = sorted(actual.keys() - held.keys())
        if unknown:
            raise ValueError(f"actual names limits the reservation does not hold: {unknown}")
        spend = {key: actual.get(key, amount) for key, amount in held.items()}
        for key, amount in spend.items():
            check_unit(self._limits[key].cap, amount, key)
        return spend

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            expires_at, rid = heapq.heappop(expiry)
            hold = self._holds.get(rid)
            if hold is None or hold.expires_at != expires_at:
                continue  # ended already, or extended (a newer heap entry exists)
            del self._holds[rid]
            for key, held in hold.amounts.items():
                self._limits[key].held -= held
            self._remember(rid, hold.amounts)

    def _remember(self, rid: str, outcome: str | dict[str, Amount]) -> None:
        ended = self._ended
        ended[rid] = outcome
        ended.move_to_end(rid)
        if len(ended) > ENDED_MEMORY:
            ended.popitem(last=False)

    # -- the Store protocol ----------------------------------------------------------------

    async def set_limit(self, key: str, cap: Amount) -> None:
        self.set_limit_nowait(key, cap)

    async def reserve(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        return self.reserve_nowait(rid, amounts, lease=lease, defaults=defaults)

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        return self.commit_nowait(rid, actual)

    async def release(self, rid: str) -> bool:
        return self.release_nowait(rid)

    async def extend(self, rid: str, lease: float) -> bool:
        return self.extend_nowait(rid, lease)

    async def usage(self, key: str) -> LimitUsage:
        return self.usage_nowait(key)

    async def limits(self, prefix: str = "") -> list[LimitUsage]:
        return self.limits_nowait(prefix)

    async def reset_spend(self, key: str) -> LimitUsage:
        return self.reset_spend_nowait(key)

    async def held_reservations(self) -> int:
        return self.held_reservations_nowait()

    def release_abandoned(self, rid: str) -> None:
        self.release_nowait(rid)
