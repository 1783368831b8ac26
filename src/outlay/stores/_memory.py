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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from .._core import (
    Amount,
    ReservationError,
    UnknownLimit,
    check_amount,
    check_amounts,
    check_count,
    check_lease,
)
from ._base import (
    ADMITTED,
    DEFAULT_RETAIN,
    ENDED_MEMORY,
    Admission,
    HoldUsage,
    LimitUsage,
    Store,
    check_seconds,
    oldest_first,
)
from ._decide import decide_commit, decide_release, decide_reserve, decide_set_limit
from ._events import SpendEvent

_COMMITTED = "committed"
_RELEASED = "released"


@dataclass(slots=True)
class _Hold:
    amounts: dict[str, Amount]
    expires_at: float
    created_at: float


class MemoryStore(Store):
    """Limits, holds and spend in this process's memory.

    ``clock`` returns seconds (monotonic by default) and can be replaced in tests to drive
    leases. Expired holds stop counting at the next operation; a commit that arrives after its
    lease expired still records the spend. Ended ids are remembered for ``retain`` seconds
    (default one day), at most the latest ``ENDED_MEMORY`` of them, so retried endings are
    answered idempotently (see the contract in ``Store``). Memory follows the live holds, not
    the call rate: an ended hold leaves nothing behind but its remembered id.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 retain: float = DEFAULT_RETAIN) -> None:
        self._clock = clock
        self._retain = check_lease(retain)
        self._lock = threading.Lock()
        self._limits: dict[str, LimitUsage] = {}
        self._holds: dict[str, _Hold] = {}
        # (lease end, rid) of every hold; entries of ended or extended holds are dropped
        # lazily, and the heap is rebuilt once they outnumber the live ones.
        self._expiry: list[tuple[float, str]] = []
        # rid -> "committed" | "released" | the amounts of a hold whose lease expired, in the
        # order they ended; _ended_at holds when, in the same order.
        self._ended: OrderedDict[str, str | dict[str, Amount]] = OrderedDict()
        self._ended_at: OrderedDict[str, float] = OrderedDict()
        # key -> the store clock at its last reserve, commit, cap change or reset (for
        # drop_idle_limit)
        self._changed: dict[str, float] = {}
        self._events: list[SpendEvent] = []

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """``memory://`` -> a fresh, empty store."""
        return cls()

    # -- synchronous core ----------------------------------------------------------------

    def set_limit_nowait(self, key: str, cap: Amount) -> None:
        """Create ``key`` with ``cap`` or change its cap; spend and holds are kept."""
        cap = check_amount(cap, "cap")
        with self._lock:
            self._write({key: decide_set_limit(self._limits.get(key), key, cap)}, self._clock())

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
        checked = check_amounts(amounts, "amount")
        if defaults:
            defaults = check_amounts(defaults, "defaults")
        check_lease(lease)
        with self._lock:
            now = self._clock()
            self._expire(now)
            if rid in self._holds:
                return ADMITTED
            if rid in self._ended:
                raise ReservationError(f"reservation {rid!r} has already ended")
            limits = self._limits
            decision = decide_reserve({k: limits[k] for k in checked if k in limits}, checked,
                                      defaults)
            if not decision.admission.admitted:
                return decision.admission
            self._write(decision.after, now)
            expires_at = now + lease
            self._holds[rid] = _Hold(checked, expires_at, now)
            self._queue(expires_at, rid)
            return decision.admission

    def commit_nowait(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        """Synchronous ``commit``; see ``Store.commit``."""
        checked = check_amounts(actual or {}, "actual")
        with self._lock:
            now = self._clock()
            self._expire(now)
            hold = self._holds.get(rid)
            if hold is None:
                ended = self._ended.get(rid)
                if ended is None:
                    raise ReservationError(f"unknown reservation {rid!r}")
                if isinstance(ended, str):
                    return False
                # The lease expired before the commit: the hold is gone, the spend still counts.
                held, live = ended, False
            else:
                held, live = hold.amounts, True
            after, _ = decide_commit(self._current(held), held, checked, live=live)
            self._write(after, now)
            if live:
                del self._holds[rid]
            self._remember(rid, _COMMITTED)
            return True

    def release_nowait(self, rid: str) -> bool:
        """Synchronous ``release``; see ``Store.release``."""
        with self._lock:
            self._expire(self._clock())
            hold = self._holds.get(rid)
            if hold is None:
                ended = self._ended.get(rid)
                if not isinstance(ended, str):  # never seen, or its lease expired: over now
                    self._remember(rid, _RELEASED)
                return False
            self._limits.update(decide_release(self._current(hold.amounts), hold.amounts))
            del self._holds[rid]
            self._remember(rid, _RELEASED)
            return True

    def extend_nowait(self, rid: str, lease: float) -> bool:
        """Synchronous ``extend``; see ``Store.extend``."""
        check_lease(lease)
        with self._lock:
            now = self._clock()
            self._expire(now)
            hold = self._holds.get(rid)
            if hold is None:
                return False
            hold.expires_at = now + lease
            self._queue(hold.expires_at, rid)
            return True

    def usage_nowait(self, key: str) -> LimitUsage:
        """Synchronous ``usage``; see ``Store.usage``."""
        with self._lock:
            self._expire(self._clock())
            limit = self._limits.get(key)
            if limit is None:
                raise UnknownLimit(key)
            return limit

    def limits_nowait(self, prefix: str = "") -> list[LimitUsage]:
        """Synchronous ``limits``; see ``Store.limits``."""
        with self._lock:
            self._expire(self._clock())
            return [limit for key, limit in sorted(self._limits.items())
                    if key.startswith(prefix)]

    def reset_spend_nowait(self, key: str) -> LimitUsage:
        """Synchronous ``reset_spend``; see ``Store.reset_spend``."""
        with self._lock:
            self._expire(self._clock())
            limit = self._limits.get(key)
            if limit is None:
                raise UnknownLimit(key)
            zero: Amount = Decimal(0) if isinstance(limit.cap, Decimal) else 0
            self._write({key: LimitUsage(key, limit.cap, zero, limit.held)}, self._clock())
            return limit

    def holds_nowait(self, prefix: str = "") -> list[HoldUsage]:
        """Synchronous ``holds``; see ``Store.holds``."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            found = [HoldUsage(rid, dict(hold.amounts), hold.expires_at - now,
                               now - hold.created_at)
                     for rid, hold in self._holds.items()
                     if any(key.startswith(prefix) for key in hold.amounts)]
        return oldest_first(found)

    def drop_idle_limit_nowait(self, key: str, *, idle: float) -> bool:
        """Synchronous ``drop_idle_limit``; see ``Store.drop_idle_limit``."""
        idle = check_seconds(idle, "idle")
        with self._lock:
            now = self._clock()
            self._expire(now)
            limit = self._limits.get(key)
            if limit is None or limit.held or now - self._changed[key] < idle:
                return False
            if any(key in hold.amounts for hold in self._holds.values()):
                return False  # a live hold of zero on it
            del self._limits[key]
            del self._changed[key]
            return True

    def held_reservations_nowait(self) -> int:
        """Synchronous ``held_reservations``: how many holds are live right now."""
        with self._lock:
            self._expire(self._clock())
            return len(self._holds)

    # -- helpers (call with the lock held) -------------------------------------------------

    def _current(self, held: Mapping[str, Amount]) -> dict[str, LimitUsage]:
        limits = self._limits
        return {key: limits[key] for key in held if key in limits}  # a dropped limit: absent

    def _write(self, after: Mapping[str, LimitUsage], now: float) -> None:
        """Store the new figures of limits a reserve, commit, cap change or reset touched."""
        self._limits.update(after)
        for key in after:
            self._changed[key] = now

    def _queue(self, expires_at: float, rid: str) -> None:
        expiry = self._expiry
        heapq.heappush(expiry, (expires_at, rid))
        if len(expiry) > 2 * len(self._holds) + 64:
            # Most entries belong to holds that ended or were extended: keep only live ones.
            holds = self._holds
            self._expiry = [(at, r) for at, r in expiry
                            if (h := holds.get(r)) is not None and h.expires_at == at]
            heapq.heapify(self._expiry)

    def _expire(self, now: float) -> None:
        ended_at = self._ended_at
        while ended_at:
            rid, at = next(iter(ended_at.items()))
            if now - at < self._retain:
                break
            del ended_at[rid]
            del self._ended[rid]
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            expires_at, rid = heapq.heappop(expiry)
            hold = self._holds.get(rid)
            if hold is None or hold.expires_at != expires_at:
                continue  # ended already, or extended (a newer heap entry exists)
            self._limits.update(decide_release(self._current(hold.amounts), hold.amounts))
            del self._holds[rid]
            self._remember(rid, hold.amounts)

    def _remember(self, rid: str, outcome: str | dict[str, Amount]) -> None:
        ended, ended_at = self._ended, self._ended_at
        ended[rid] = outcome
        ended.move_to_end(rid)
        ended_at[rid] = self._clock()
        ended_at.move_to_end(rid)
        if len(ended) > ENDED_MEMORY:
            ended.popitem(last=False)
            ended_at.popitem(last=False)

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

    async def holds(self, prefix: str = "") -> list[HoldUsage]:
        return self.holds_nowait(prefix)

    async def drop_idle_limit(self, key: str, *, idle: float) -> bool:
        return self.drop_idle_limit_nowait(key, idle=idle)

    async def append_events(self, events: Sequence[SpendEvent], *, keep: int) -> None:
        keep = check_count(keep, "keep")
        with self._lock:
            self._events.extend(events)
            if len(self._events) > keep:
                del self._events[: len(self._events) - keep]

    async def events(self, *, limit: int | None = None) -> list[SpendEvent]:
        with self._lock:
            found = list(self._events)
        return found if limit is None else found[len(found) - check_count(limit, "limit"):]

    def release_abandoned(self, rid: str) -> None:
        self.release_nowait(rid)
