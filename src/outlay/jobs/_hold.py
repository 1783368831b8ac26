"""The one seam between jobs and the budget object.

A job's hold is taken through the budget (by unit, all-or-nothing over the budget's limits)
and then handed over: the handle is detached and everything needed to end the hold from any
process (reservation id, amounts by limit key, each key's unit) goes into the job record. After
that the hold is ended by id at the store (``Store.commit`` / ``release`` / ``extend``), which is
idempotent by id, so a repeated settlement counts once.

Only this module knows the budget's shape; adapting jobs to another budget object changes
``take_hold`` alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import anyio

from .._core import Amount, ConfigurationError, ReservationError, log, parse_limit_key
from ..stores import Store
from ._model import Hold


class _ByUnitReservation(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def keys(self) -> Mapping[str, Amount]: ...
    def detach(self) -> str: ...
    async def release(self) -> None: ...


class ByUnitBudget(Protocol):
    """What jobs need of a budget: ``reserve({unit: amount}, lease=...)``, awaitable, raising
    ``BudgetExceeded`` when refused, handing back a reservation with ``id``, ``keys`` (amounts
    by limit key), ``detach()`` and ``release()`` (``Principals(...).get(name)``)."""

    def reserve(self, amounts: Mapping[str, Amount], *, lease: float | None = None
                ) -> Awaitable[Any]: ...


async def take_hold(budget: ByUnitBudget, cost: Mapping[str, Amount], *, lease: float,
                    store: Store) -> Hold:
    """Hold ``cost`` (by unit) through ``budget`` for ``lease`` seconds and hand it over.

    Raises ``BudgetExceeded`` if it does not fit (nothing held) and ``ConfigurationError`` if
    the budget reserves in another store than ``store`` (the hold is given back first).
    """
    reservation: _ByUnitReservation = await budget.reserve(cost, lease=lease)
    try:
        keys = dict(reservation.keys)
        if not keys:  # nothing the budget caps: nothing held, nothing to settle
            return Hold(reservation.detach(), {}, {})
        units: dict[str, str] = {}
        for key in keys:
            parsed = parse_limit_key(key)
            if parsed is None or parsed.unit not in cost:
                raise ConfigurationError(f"cannot tell the unit of budget limit {key!r}")
            units[key] = parsed.unit
        # Proves the hold lives in the queue's store: it must be settled from there, by id.
        if not await store.extend(reservation.id, lease):
            raise ConfigurationError("the budget reserves in another store than the job "
                                     "queue's; build both on the same store")
    except BaseException:
        with anyio.CancelScope(shield=True):
            await reservation.release()
        raise
    return Hold(reservation.detach(), keys, units)


async def commit_hold(store: Store, hold: Hold, actual: Mapping[str, Amount] | None) -> None:
    """Settle ``hold`` at ``actual`` (by unit; units left out at their worst case). Shielded;
    a hold the store has already ended (a repeated settlement) counts nothing again."""
    if not hold.keys:
        return
    with anyio.CancelScope(shield=True):
        try:
            await store.commit(hold.rid, hold.by_key(actual or {}))
        except ReservationError:
            # The store no longer remembers the id (ended longer ago than it keeps endings).
            log.warn("outlay.jobs.settle_unknown_hold", reservation=hold.rid)


async def release_hold(store: Store, hold: Hold) -> None:
    """Give ``hold`` back (shielded); a hold already ended or expired is left alone."""
    if not hold.keys:
        return
    with anyio.CancelScope(shield=True):
        await store.release(hold.rid)


async def extend_hold(store: Store, hold: Hold, lease: float) -> bool:
    """Renew ``hold``'s lease; False if it is no longer held."""
    return not hold.keys or await store.extend(hold.rid, lease)
