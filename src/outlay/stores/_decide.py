"""The reserve and settle decisions, written once for every store that decides in Python.

Pure: no I/O, no clock, no lock. A store reads the limits a call names (as ``LimitUsage``), asks
here for the answer and the new figures, and writes all of them in its one atomic step (memory:
one critical section; SQLite and PostgreSQL: one transaction). Everything is decided before the
first write, so a refused or invalid call changes nothing. Arithmetic is exact in outlay's own
decimal context (``EXACT``) whatever the caller's context is; a figure that cannot be held
exactly raises ``ValueError`` before anything is written. (The Redis store runs the same rules
in its Lua scripts, on scaled integers.)

Amounts passed in are already checked (``check_amount``); keys are limit keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from .._core import MAX_AMOUNT, Amount, UnknownLimit, check_unit, minus, plus
from ._base import ADMITTED, Admission, LimitUsage


def zero_of(cap: Amount) -> Amount:
    """Zero in the unit of ``cap``: ``Decimal(0)`` for money, ``0`` for whole units."""
    return Decimal(0) if isinstance(cap, Decimal) else 0


def new_limit(key: str, cap: Amount) -> LimitUsage:
    """A fresh limit: ``cap``, nothing spent, nothing held."""
    zero = zero_of(cap)
    return LimitUsage(key, cap, zero, zero)


def decide_set_limit(current: LimitUsage | None, key: str, cap: Amount) -> LimitUsage:
    """The limit after ``set_limit(key, cap)``: spend and holds are kept; the unit (``int`` or
    ``Decimal``) of an existing limit cannot change (``TypeError``)."""
    if current is None:
        return new_limit(key, cap)
    if isinstance(current.cap, int) != isinstance(cap, int):
        raise TypeError(f"limit {key!r} cannot change unit from {type(current.cap).__name__} "
                        f"to {type(cap).__name__}")
    return LimitUsage(key, cap, current.spent, current.held)


@dataclass(frozen=True, slots=True)
class ReserveDecision:
    """What ``decide_reserve`` answers: the admission, and when admitted the figures of every
    named limit after the hold (``after``) and which of them are new (``created``)."""

    admission: Admission
    after: dict[str, LimitUsage]
    created: frozenset[str]


def decide_reserve(
    current: Mapping[str, LimitUsage],
    amounts: Mapping[str, Amount],
    defaults: Mapping[str, Amount] | None = None,
) -> ReserveDecision:
    """Hold ``amounts`` all or nothing against the limits in ``current`` (the named limits that
    exist). A missing limit is created from ``defaults`` or raises ``UnknownLimit``; a
    ``Decimal`` amount on an ``int`` limit raises ``TypeError``. Refused (nothing changes) when
    any limit would have ``spent + held + amount > cap``."""
    limits: dict[str, LimitUsage] = {}
    created: set[str] = set()
    for key, amount in amounts.items():
        limit = current.get(key)
        if limit is None:
            if not defaults or key not in defaults:
                raise UnknownLimit(key)
            limit = new_limit(key, defaults[key])
            created.add(key)
        check_unit(limit.cap, amount, key)
        limits[key] = limit
    after: dict[str, LimitUsage] = {}
    for key, amount in amounts.items():
        limit = limits[key]
        held = plus(limit.held, amount)
        if plus(limit.spent, held) > limit.cap:
            return ReserveDecision(Admission(False, limit, amount), {}, frozenset())
        after[key] = LimitUsage(key, limit.cap, limit.spent, held)
    return ReserveDecision(ADMITTED, after, frozenset(created))


def decide_commit(
    current: Mapping[str, LimitUsage],
    held: Mapping[str, Amount],
    actual: Mapping[str, Amount],
    *,
    live: bool,
) -> tuple[dict[str, LimitUsage], dict[str, Amount]]:
    """The figures after committing a reservation that held ``held``, and the spend recorded
    on each limit: ``actual`` where given, else what was held. ``live`` is False when the hold
    is already gone (its lease expired): the spend still counts, nothing is unheld. Limits
    missing from ``current`` (a forgotten period) take no spend. ``TypeError`` for a
    ``Decimal`` spend on an ``int`` limit, then ``ValueError`` if ``actual`` names a limit the
    reservation does not hold or a spend cannot be counted exactly."""
    spend: dict[str, Amount] = {}
    for key, amount in held.items():
        limit = current.get(key)
        if limit is not None:
            used = actual.get(key, amount) if actual else amount
            check_unit(limit.cap, used, key)
            spend[key] = used
    if actual and not actual.keys() <= held.keys():
        foreign = sorted(actual.keys() - held.keys())
        raise ValueError(f"actual names limits the reservation does not hold: {foreign}")
    after: dict[str, LimitUsage] = {}
    for key, used in spend.items():
        limit = current[key]
        spent = plus(limit.spent, used)
        if spent > MAX_AMOUNT:
            raise ValueError(f"limit {key!r} cannot count that much spend exactly (at most "
                             "10**30); nothing was recorded")
        after[key] = LimitUsage(key, limit.cap, spent,
                                minus(limit.held, held[key]) if live else limit.held)
    return after, spend


def decide_release(current: Mapping[str, LimitUsage], held: Mapping[str, Amount]
                   ) -> dict[str, LimitUsage]:
    """The figures after giving back ``held`` (a release, or a lease that expired)."""
    after: dict[str, LimitUsage] = {}
    for key, amount in held.items():
        limit = current.get(key)
        if limit is not None:
            after[key] = LimitUsage(key, limit.cap, limit.spent, minus(limit.held, amount))
    return after
