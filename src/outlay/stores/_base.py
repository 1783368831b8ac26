"""The store protocol: where limits, holds and spend live.

A store keeps *limits* (a key with a cap), *holds* (amounts a reservation has taken against one
or more limits, with a lease) and *spend* (what committed reservations used). Every method is one
atomic step at the store; every ending is idempotent by reservation id, so a retried call after a
timeout counts once. Invariant at every instant: a reservation is admitted only if
``spent + held + amount <= cap`` for each of its limits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from .._core import Amount


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """A snapshot of one limit. ``available`` is ``cap - spent - held``, never below zero."""

    key: str
    cap: Amount
    spent: Amount
    held: Amount

    @property
    def available(self) -> Amount:
        room = self.cap - self.spent - self.held
        if room > 0:
            return room
        return Decimal(0) if isinstance(room, Decimal) else 0


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to ``Store.reserve``: admitted, or refused by the limit in ``refused``."""

    admitted: bool
    refused: LimitUsage | None = None
    requested: Amount | None = None


class Store(ABC):
    """What every store implements. Subclasses: ``MemoryStore``, ``SQLiteStore``, ``RedisStore``.

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
        """Give the hold back. Returns False if there was nothing held under ``rid``."""

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

    def release_abandoned(self, rid: str) -> None:  # noqa: B027 - optional, empty by default
        """Best-effort, synchronous release of a reservation handle that was garbage-collected.

        Called from ``__del__``, so it must not block or await. The default does nothing: the
        hold's lease expires and it stops counting. In-process stores release at once.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional, empty by default
        """Release connections and files held by the store."""
