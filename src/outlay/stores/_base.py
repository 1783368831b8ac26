"""The store protocol and its contract: where limits, holds and spend live.

A store keeps *limits* (a key with a cap), *holds* (amounts a reservation has taken against one
or more limits, with a lease) and *spend* (what committed reservations used). Every method is one
atomic step at the store; every ending is idempotent by reservation id, so a retried call after a
timeout counts once. Invariant at every instant: a reservation is admitted only if
``spent + held + amount <= cap`` for each of its limits.

The contract every store follows (``tests/test_store_behaviour.py`` and ``tests/test_faults.py``
run it against each one):

- **Validation first.** Amounts, caps and leases are checked (``check_amount``,
  ``check_amounts``, ``check_lease``; a bad amount is named by where it was given,
  ``amount['usd']``, ``defaults['new']``, ``actual['usd']``) and every decision is made before
  the first write; a refused or invalid call changes nothing. Arithmetic is exact in outlay's
  own decimal context, whatever the caller's. Stores that decide in Python share
  ``stores/_decide.py``.
- **Unknown ids.** ``commit`` of an id the store never saw (or has forgotten) raises
  ``ReservationError``. ``release`` and ``extend`` of one return False, and a released unknown
  id is remembered as released, so a ``reserve`` of it that arrives later (a cancelled
  caller's request still in flight) is refused with ``ReservationError`` instead of holding
  budget nobody will end.
- **Ended ids** are remembered for at least ``DEFAULT_RETAIN`` seconds (one day) after they
  end, so a retried ending within that time is answered as a retry: ``commit`` returns False,
  ``release`` returns False, ``reserve`` raises ``ReservationError``. Stores may keep them
  longer (SQLite: ``history``, 30 days); the in-process memory store also keeps at most the
  latest ``ENDED_MEMORY`` (65,536) ids.
- **Expiry.** A hold whose lease has passed stops counting at once (for admissions and
  ``usage``). A ``commit`` after that, while the id is remembered, still records its spend
  (spend is never lost); a ``release`` after it ends the reservation, and a later commit then
  returns False. ``extend`` never revives an expired hold. ``expire_at`` marks when a period
  limit is over; a store may forget such a limit some time after that and after every hold on
  it has ended (Redis), never while a hold on it is live.
- **Event loops and processes.** A store may be used from one event loop after another (on
  asyncio and trio). The stores that open their own connections (SQLite, PostgreSQL, and
  Redis from a URL) also work in a child made by ``os.fork``: the child leaves what it
  inherited alone, never using or closing it, and connects anew (``stores/_fork.py``).
- **Group commit.** A store may run concurrent operations of one process together, in one
  transaction or one round trip (SQLite and PostgreSQL through ``stores/_group.py``, Redis in
  one batch script); each keeps its own all-or-nothing, idempotent outcome, and an error
  answers exactly the operations it comes from. A lone operation never waits for company.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from .._core import Amount, minus

DEFAULT_RETAIN = 86_400.0
"""Seconds every store remembers an ended reservation id, at least (see the contract above)."""

ENDED_MEMORY = 65_536
"""The most ended ids the in-process memory store keeps (it forgets the oldest first)."""

if TYPE_CHECKING:
    from ._events import SpendEvent


def check_seconds(value: object, name: str) -> float:
    """``value`` as seconds >= 0 (an int or a finite float); ``TypeError``/``ValueError``
    otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite seconds >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """A snapshot of one limit. ``available`` is ``cap - spent - held``, never below zero."""

    key: str
    cap: Amount
    spent: Amount
    held: Amount

    @property
    def available(self) -> Amount:
        room = minus(minus(self.cap, self.spent), self.held)
        if room > 0:
            return room
        return Decimal(0) if isinstance(room, Decimal) else 0


@dataclass(frozen=True, slots=True)
class HoldUsage:
    """A snapshot of one live reservation: its id, what it holds by limit key, the seconds of
    lease it has left, and its ``age`` in seconds since it was reserved (``None`` when the store
    did not record when)."""

    rid: str
    amounts: Mapping[str, Amount]
    lease_left: float
    age: float | None


def oldest_first(holds: list[HoldUsage]) -> list[HoldUsage]:
    """``holds`` in the order ``Store.holds`` promises: oldest first, then by id."""
    return sorted(holds, key=lambda h: (-(h.age or 0.0), h.rid))


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to ``Store.reserve``: admitted, or refused by the limit in ``refused``."""

    admitted: bool
    refused: LimitUsage | None = None
    requested: Amount | None = None


ADMITTED: Final = Admission(True)
"""The one admitted ``Admission`` (immutable, so every store returns this one rather than
building its own per reservation)."""


class Store(ABC):
    """What every store implements. Subclasses: ``MemoryStore``, ``SQLiteStore``, ``RedisStore``,
    ``PostgresStore``.

    ``rid`` is a client-generated reservation id. Amount mappings are limit key -> amount, checked
    by the caller for type and sign; a store checks units against caps and raises ``TypeError``
    for a ``Decimal`` amount on an ``int`` limit before taking anything.
    """

    @abstractmethod
    async def set_limit(self, key: str, cap: Amount) -> None:
        """Create the limit ``key`` or change its cap. Spend and holds are kept."""

    @abstractmethod
    async def reserve(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        """Hold ``amounts`` against every named limit, all or nothing, for ``lease`` seconds.

        A key with no limit is created with its cap from ``defaults`` (so period keys such as
        ``usd/month:2026-11`` start fresh on first use); without one it raises ``UnknownLimit``.
        ``expire_at`` (UNIX seconds, by key) says when a limit's period is over: a store may
        forget the limit some time after that (Redis sets a key expiry); others may ignore it.
        Reserving an id that is already held returns admitted (a retried call); reserving an id
        that has ended raises ``ReservationError``.
        """

    @abstractmethod
    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        """Turn the hold into spend. ``actual`` may be above or below the hold; keys it leaves
        out settle at their held amount. Works after the lease expired (the spend still counts).
        Returns False if ``rid`` had already ended (a retry); raises ``ReservationError`` if the
        store never saw ``rid``."""

    @abstractmethod
    async def release(self, rid: str) -> bool:
        """Give the hold back. Returns False if there was nothing held under ``rid``; an id the
        store never saw is then remembered as released (see the contract)."""

    @abstractmethod
    async def extend(self, rid: str, lease: float) -> bool:
        """Set the lease of a live hold to ``lease`` seconds from now. False if it is not held
        (ended or expired: an expired hold is not revived, it may no longer fit)."""

    @abstractmethod
    async def usage(self, key: str) -> LimitUsage:
        """Snapshot one limit; raises ``UnknownLimit`` if it does not exist."""

    async def limits(self, prefix: str = "") -> list[LimitUsage]:
        """Snapshot every limit whose key starts with ``prefix``, sorted by key.

        Holds whose lease expired do not count. A store that cannot enumerate its limits raises
        ``NotImplementedError``; the CLI reports that as an unsupported store.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its limits "
                                  "(Store.limits is not implemented)")

    async def reset_spend(self, key: str) -> LimitUsage:
        """Set the committed spend of ``key`` to zero; its cap and live holds are kept.

        An administrative act (the ``outlay reset --zero-spend`` command), never part of normal
        budgeting: periods start fresh by key, not by reset. Returns the usage as it was before.
        Raises ``UnknownLimit`` for a missing key and ``NotImplementedError`` on a store that
        does not support it.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot reset spend "
                                  "(Store.reset_spend is not implemented)")

    async def held_reservations(self) -> int:
        """How many reservations hold budget right now (held, lease not yet expired).

        For diagnostics and tests, not for admission decisions: the count may be stale by the
        time it is read. A store that cannot count its holds raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot count its holds "
                                  "(Store.held_reservations is not implemented)")

    async def holds(self, prefix: str = "") -> list[HoldUsage]:
        """Snapshot every live reservation holding a limit whose key starts with ``prefix``,
        oldest first (then by id). Holds whose lease expired are not listed.

        For inspection (``outlay holds``), not for admission. A store that cannot list its holds
        raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its holds "
                                  "(Store.holds is not implemented)")

    async def drop_idle_limit(self, key: str, *, idle: float) -> bool:
        """Delete the limit ``key`` if no live hold is on it and nothing changed it (a reserve,
        commit, cap or reset) for at least ``idle`` seconds, in one atomic step; return whether
        it was deleted (``False`` for a missing key, a held or a recently used limit).

        For ``outlay prune``: a finished run's limits are never reused, so they may go. A limit
        whose last change the store did not record is never dropped. Spend committed after the
        limit was dropped does not count anywhere (as on a forgotten period). A store that
        cannot drop limits raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot drop limits "
                                  "(Store.drop_idle_limit is not implemented)")

    async def append_events(self, events: Sequence[SpendEvent], *, keep: int) -> None:
        """Append ``events`` to the store's event log (in its own table or key), then drop
        all but the newest ``keep``. Best effort for reports: not atomic with the reservation
        operation it describes. A store without an event log raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no event log "
                                  "(Store.append_events is not implemented)")

    async def events(self, *, limit: int | None = None) -> list[SpendEvent]:
        """The event log, oldest first (only the newest ``limit`` if given); ``[]`` if
        nothing was recorded. A store without an event log raises ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no event log "
                                  "(Store.events is not implemented)")

    def release_abandoned(self, rid: str) -> None:  # noqa: B027 - optional, empty by default
        """Best-effort, synchronous release of a reservation handle that was garbage-collected.

        Called from ``__del__``, so it must not block or await. The default does nothing: the
        hold's lease expires and it stops counting. In-process stores release at once.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional, empty by default
        """Release connections and files held by the store."""
