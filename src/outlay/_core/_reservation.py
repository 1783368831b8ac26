"""The one primitive: a reservation over one or more limits, all-or-nothing.

``reserve_keys`` is the one store call every reservation makes; ``KeyedBudget`` reserves by
limit key (administration, tests) and ``Budget`` by unit on top of the same call. The
``Reservation`` handed back ends exactly once, by
``commit(actual)`` (the hold becomes spend, above or below what was held) or ``release()`` (the
hold comes back). ``async with`` releases on every exit that did not commit, cancellation
included, shielded from the cancellation. A handle garbage-collected before it ended emits a
``ResourceWarning`` and is released by its store (in-process) or by its lease (remote stores).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Awaitable, Callable, Generator, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

import anyio

from ..stores import Admission, LimitUsage, Store, store_from_url
from . import _log
from ._amounts import Amount, check_amount, check_amounts, check_lease
from ._exceptions import BudgetExceeded, ReservationError, StoreError
from ._limits import UNIT_NAME, parse_limit_key


def new_id() -> str:
    """A fresh reservation (or run) id: 32 hex digits, 128 random bits from the OS (as random
    as ``uuid4``, without building a ``UUID``: 0.36 us against 1.6)."""
    return os.urandom(16).hex()


class _Exits(Protocol):
    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None, /) -> object: ...


H = TypeVar("H", bound=_Exits)

DEFAULT_LEASE = 300.0
"""Seconds a hold lives unless committed, released or extended first."""


def refused(admission: Admission, unit: str | None = None) -> BudgetExceeded:
    """The ``BudgetExceeded`` for a store's refusal: the refusing limit's figures, and its
    principal, unit, window and period when the key was made by a ``Budget``."""
    usage = admission.refused
    requested = admission.requested if admission.requested is not None else 0
    if usage is None:  # pragma: no cover - every store names the refusing limit
        return BudgetExceeded(unit=unit, requested=requested)
    parsed = parse_limit_key(usage.key)
    if parsed is None and unit is None:
        # A key of the keyed primitive: by convention its last segment names the unit.
        last = usage.key.rpartition("/")[2]
        unit = last if UNIT_NAME.match(last) else None
    return BudgetExceeded(
        unit=parsed.unit if parsed else unit, requested=requested, cap=usage.cap,
        spent=usage.spent, held=usage.held, key=usage.key,
        principal=parsed.principal if parsed else None,
        window=parsed.window if parsed else None, period=parsed.period if parsed else None)


class Reservation:
    """Amounts held against one or more limits of a store, until committed or released.

    ``amounts`` is what is held by unit (``{"usd": Decimal("0.02"), "tokens": 1500}``) and
    ``keys`` the same by limit key (every window of every principal in the chain). Ending twice
    raises ``ReservationError`` and counts nothing twice. A failed ending (the store raised)
    leaves the reservation open, so it can be retried: endings are idempotent by ``id``.
    A commit that failed with ``StoreError`` (the store did not answer: it may have counted the
    spend) is never undone by a release: ``release()``, ``async with`` and garbage collection
    then leave the hold alone, and only a retried ``commit`` or the lease ends it.
    """

    __slots__ = ("__weakref__", "_amounts", "_ending", "_id", "_keys", "_on_end", "_state",
                 "_store", "_units", "_unsettled")

    def __init__(
        self,
        store: Store,
        rid: str,
        keys: Mapping[str, Amount],
        units: Mapping[str, str] | None = None,
        amounts: Mapping[str, Amount] | None = None,
        on_end: Callable[[Mapping[str, Amount] | None], None] | None = None,
    ) -> None:
        """``on_end`` is called once when the reservation ends: with the settled amounts by
        unit on commit, with ``None`` on release or detach."""
        self._store = store
        self._id = rid
        self._keys: Mapping[str, Amount] = MappingProxyType(dict(keys))
        # key -> unit; None means every key is its own unit (the keyed primitive).
        self._units = units
        self._amounts = self._keys if amounts is None else MappingProxyType(dict(amounts))
        self._on_end = on_end
        self._state: str | None = None
        self._ending = False
        self._unsettled = False  # a commit raised StoreError: its outcome is unknown

    @property
    def id(self) -> str:
        """The client-generated id the store knows this reservation by."""
        return self._id

    @property
    def amounts(self) -> Mapping[str, Amount]:
        """What is held, by unit (read-only)."""
        return self._amounts

    @property
    def keys(self) -> Mapping[str, Amount]:
        """What is held, by limit key (read-only)."""
        return self._keys

    @property
    def ended(self) -> bool:
        """True once committed, released or detached."""
        return self._state is not None

    @property
    def state(self) -> str:
        """``"held"``, ``"committed"``, ``"released"`` or ``"detached"``."""
        return self._state or "held"

    def _begin_ending(self, verb: str) -> None:
        if self._state is not None:
            raise ReservationError(f"reservation {self._id} was already {self._state}; "
                                   f"it cannot be {verb}")
        if self._ending:
            raise ReservationError(f"reservation {self._id} is being ended by another task")
        self._ending = True

    def _by_key(self, actual: Mapping[str, Amount]) -> dict[str, Amount]:
        by_unit = check_amounts(actual, "actual")
        unknown = sorted(by_unit.keys() - self._amounts.keys())
        if unknown:
            raise ValueError(f"actual names units the reservation does not hold: {unknown}")
        if self._units is None:
            return by_unit
        return {key: by_unit[unit] for key, unit in self._units.items() if unit in by_unit}

    async def commit(self, actual: Mapping[str, Amount] | None = None) -> None:
        """Turn the hold into spend of ``actual`` by unit (default: what was held).

        ``actual`` may exceed the hold; the overshoot is recorded, never lost (and the next
        reservation that does not fit is refused). Units it leaves out settle at the held
        amount. Raises ``ValueError`` for a unit not held, ``ReservationError`` if already
        ended. Runs shielded from cancellation.
        """
        by_key = None if actual is None else self._by_key(actual)
        self._begin_ending("committed")
        try:
            if self._keys:  # a reservation of uncapped units only holds nothing in the store
                with anyio.CancelScope(shield=True):
                    await self._store.commit(self._id, by_key)
        except StoreError:
            self._unsettled = True
            raise
        finally:
            self._ending = False
        self._state = "committed"
        settled = {**self._amounts, **(actual or {})}
        if self._on_end is not None:
            self._on_end(settled)
        if _log.enabled():
            _log.emit("outlay.reservation.committed", reservation=self._id,
                      held=dict(self._amounts), actual=settled)

    async def release(self) -> None:
        """Give the whole hold back. Runs shielded from cancellation.

        After a commit whose outcome is unknown (it raised ``StoreError``) this does nothing
        but log the warning ``outlay.reservation.release_skipped``: the spend may have been
        counted, and a release must not undo it.
        """
        if self._unsettled and self._state is None:
            _log.warn("outlay.reservation.release_skipped", reservation=self._id,
                      reason="commit outcome unknown; retry commit or let the lease expire")
            return
        self._begin_ending("released")
        try:
            if self._keys:
                with anyio.CancelScope(shield=True):
                    await self._store.release(self._id)
        finally:
            self._ending = False
        self._state = "released"
        if self._on_end is not None:
            self._on_end(None)
        if _log.enabled():
            _log.emit("outlay.reservation.released", reservation=self._id,
                      held=dict(self._amounts))

    def detach(self) -> str:
        """Hand the hold to whoever ends it by id at the store (a job record that a worker in
        another process settles): this handle no longer ends it, and dropping it releases
        nothing. Returns the id; ``ReservationError`` if it has already ended, or if a commit
        raised ``StoreError`` (the spend may be counted: only a retried commit may end it)."""
        if self._unsettled and self._state is None:
            raise ReservationError(f"reservation {self._id} has a commit of unknown outcome; "
                                   "retry the commit instead of detaching it")
        self._begin_ending("detached")
        self._ending = False
        self._state = "detached"
        if self._on_end is not None:
            self._on_end(None)
        return self._id

    async def extend(self, lease: float) -> None:
        """Renew the lease to ``lease`` seconds from now; ``ReservationError`` if not held."""
        lease = check_lease(lease)
        if self._state is not None or (self._keys and
                                       not await self._store.extend(self._id, lease)):
            raise ReservationError(f"reservation {self._id} is not held (ended or lease expired)")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is None and not self._ending:
            await self.release()

    def __del__(self) -> None:
        if getattr(self, "_state", "unset") is None and self._keys and not self._unsettled:
            # Release first: the warning may be turned into an error by a warnings filter.
            with contextlib.suppress(Exception):  # a finaliser must never raise
                self._store.release_abandoned(self._id)
            warnings.warn(f"reservation {self._id} was garbage-collected without being "
                          "committed or released; its hold was released",
                          ResourceWarning, stacklevel=1, source=self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._id} {dict(self._amounts)} {self.state}>"


class ReserveContext(Generic[H]):
    """What every ``reserve`` that hands back a reservation returns (``Budget.reserve``,
    ``reserve_tokens``, ``KeyedBudget.reserve``):
    await it for the reservation, or use ``async with`` to reserve on entry and release on exit
    unless the body committed."""

    __slots__ = ("_factory", "_reservation")

    def __init__(self, factory: Callable[[], Awaitable[H]]) -> None:
        self._factory = factory
        self._reservation: H | None = None

    def __await__(self) -> Generator[Any, None, H]:
        return self._factory().__await__()

    async def __aenter__(self) -> H:
        self._reservation = await self._factory()
        return self._reservation

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reservation is not None:
            await self._reservation.__aexit__(exc_type, exc, tb)


async def reserve_keys(
    store: Store,
    amounts: Mapping[str, Amount],
    lease: float,
    defaults: Mapping[str, Amount] | None = None,
    expire_at: Mapping[str, float] | None = None,
) -> tuple[Admission, str]:
    """The one store call of a reservation: hold checked ``amounts`` (by limit key) under a
    fresh id. If this task is cancelled or the store fails mid-call, whatever the store may
    have admitted is released (shielded) before the error propagates."""
    rid = new_id()
    try:
        admission = await store.reserve(rid, amounts, lease=lease, defaults=defaults,
                                        expire_at=expire_at)
    except BaseException:
        with anyio.CancelScope(shield=True):
            # If this fails too, the lease reclaims the hold; the first error is reported.
            with contextlib.suppress(Exception):
                await store.release(rid)
        raise
    return admission, rid


class KeyedBudget:
    """The keyed primitive under ``Budget``: reservations over limits named by key.

    For administration and tests (``set_limit``, ``usage`` by key) and for code that names
    store keys itself; agents, hooks, clients and the graph executor take a ``Budget``, which
    maps units onto keys. Amounts here are by limit key; the ``Reservation`` it hands back has
    ``amounts == keys`` and commits by key.
    """

    def __init__(self, store: Store | str = "memory://", *, lease: float = DEFAULT_LEASE) -> None:
        self._store = open_store(store)
        self._lease = check_lease(lease)

    @property
    def store(self) -> Store:
        """The store this budget reserves against."""
        return self._store

    async def set_limit(self, key: str, cap: Amount) -> None:
        """Create limit ``key`` with ``cap`` (``int`` units or ``Decimal`` money), or change it."""
        await self._store.set_limit(check_key(key), check_amount(cap, "cap"))

    async def usage(self, key: str) -> LimitUsage:
        """Snapshot one limit: cap, spent, held, available."""
        return await self._store.usage(check_key(key))

    async def try_reserve(
        self,
        amounts: Mapping[str, Amount],
        *,
        lease: float | None = None,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Reservation | None:
        """Hold ``amounts`` against every named limit, all or nothing; ``None`` if one lacks room.

        ``defaults`` gives caps for limits to create on first use; ``expire_at`` says when such
        a limit's period ends (see ``Store.reserve``). Bad amounts raise ``TypeError`` /
        ``ValueError`` and take nothing.
        """
        reservation, _ = await self._reserve(amounts, lease, defaults, expire_at)
        return reservation

    def reserve(
        self,
        amounts: Mapping[str, Amount],
        *,
        lease: float | None = None,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> ReserveContext[Reservation]:
        """Like ``try_reserve`` but raises ``BudgetExceeded`` when refused (never waits)."""

        async def reserve() -> Reservation:
            reservation, refusal = await self._reserve(amounts, lease, defaults, expire_at)
            if reservation is None:
                assert refusal is not None
                raise refusal
            return reservation

        return ReserveContext(reserve)

    async def _reserve(
        self,
        amounts: Mapping[str, Amount],
        lease: float | None,
        defaults: Mapping[str, Amount] | None,
        expire_at: Mapping[str, float] | None,
    ) -> tuple[Reservation | None, BudgetExceeded | None]:
        if not isinstance(amounts, Mapping) or not amounts:
            raise TypeError("amounts must be a non-empty mapping of limit key -> amount")
        checked = {check_key(k): check_amount(v, "amount", k) for k, v in amounts.items()}
        if defaults is not None:
            defaults = {check_key(k): check_amount(v, "defaults", k)
                        for k, v in defaults.items()}
        seconds = self._lease if lease is None else check_lease(lease)
        admission, rid = await reserve_keys(self._store, checked, seconds, defaults, expire_at)
        if not admission.admitted:
            refusal = refused(admission)
            if _log.enabled():
                _log.emit("outlay.reservation.denied", amounts=checked, key=refusal.key,
                          reason=refusal.reason)
            return None, refusal
        if _log.enabled():
            _log.emit("outlay.reservation.reserved", reservation=rid, amounts=checked)
        return Reservation(self._store, rid, checked), None

    async def aclose(self) -> None:
        """Close the store."""
        await self._store.aclose()


def open_store(store: Store | str) -> Store:
    """``store`` itself, or the store a URL names (``memory://``, ``sqlite:///...``, ...)."""
    opened = store_from_url(store) if isinstance(store, str) else store
    if not isinstance(opened, Store):
        raise TypeError(f"store must be a Store or a URL, got {type(store).__name__}")
    return opened


def check_key(key: object) -> str:
    """A limit key is a non-empty ``str``."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"limit key must be a non-empty str, got {key!r}")
    return key
