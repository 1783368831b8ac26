"""The one primitive: a reservation over one or more limits, all-or-nothing.

``Budget`` reserves against a store; the ``Reservation`` it hands back ends exactly once, by
``commit(actual)`` (the hold becomes spend, above or below what was held) or ``release()`` (the
hold comes back). ``async with`` releases on every exit that did not commit, cancellation
included, shielded from the cancellation. A handle garbage-collected before it ended emits a
``ResourceWarning`` and is released by its store (in-process) or by its lease (remote stores).
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Awaitable, Callable, Generator, Mapping
from decimal import Decimal
from types import MappingProxyType, TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

import anyio

from ..stores import Admission, LimitUsage, Store, store_from_url
from . import _log
from ._amounts import Amount, check_amount, check_lease
from ._exceptions import BudgetExceeded, ReservationError, StoreError

R = TypeVar("R", bound="Reservation")


class _Exits(Protocol):
    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None, /) -> object: ...


H = TypeVar("H", bound=_Exits)

DEFAULT_LEASE = 300.0
"""Seconds a hold lives unless committed, released or extended first."""


def refusal_reason(admission: Admission) -> str:
    """Say in words why ``admission`` was refused."""
    usage = admission.refused
    if usage is None:
        return "reservation refused"
    return (f"limit {usage.key!r} cannot hold {_show(admission.requested)}: cap "
            f"{_show(usage.cap)}, spent {_show(usage.spent)}, held {_show(usage.held)}, "
            f"available {_show(usage.available)}")


def _show(amount: Amount | None) -> str:
    """An amount as people write it: no exponent (``0E-8`` -> ``0``, ``1E+1`` -> ``10``)."""
    if isinstance(amount, Decimal):
        return "0" if amount == 0 else format(amount, "f")
    return str(amount)


class Reservation:
    """Amounts held against one or more limits of a store, until committed or released.

    Ending twice raises ``ReservationError`` and counts nothing twice. A failed ending (the store
    raised) leaves the reservation open, so it can be retried: endings are idempotent by ``id``.
    A commit that failed with ``StoreError`` (the store did not answer: it may have counted the
    spend) is never undone by a release: ``release()``, ``async with`` and garbage collection
    then leave the hold alone, and only a retried ``commit`` or the lease ends it.
    """

    __slots__ = ("__weakref__", "_amounts", "_ending", "_id", "_state", "_store", "_unsettled")

    def __init__(self, store: Store, rid: str, amounts: Mapping[str, Amount]) -> None:
        self._store = store
        self._id = rid
        self._amounts: Mapping[str, Amount] = MappingProxyType(dict(amounts))
        self._state: str | None = None
        self._ending = False
        self._unsettled = False  # a commit raised StoreError: its outcome is unknown

    @property
    def id(self) -> str:
        """The client-generated id the store knows this reservation by."""
        return self._id

    @property
    def amounts(self) -> Mapping[str, Amount]:
        """What is held, by limit key (read-only)."""
        return self._amounts

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

    async def commit(self, actual: Mapping[str, Amount] | None = None) -> None:
        """Turn the hold into spend of ``actual`` (default: what was held).

        ``actual`` may exceed the hold; the overshoot is recorded, never lost. Keys it leaves out
        settle at the held amount. Runs shielded from cancellation.
        """
        if actual is not None:
            for key, amount in actual.items():
                check_amount(amount, f"actual[{key!r}]")
        self._begin_ending("committed")
        try:
            with anyio.CancelScope(shield=True):
                await self._store.commit(self._id, actual)
        except StoreError:
            self._unsettled = True
            raise
        finally:
            self._ending = False
        self._state = "committed"
        if _log.enabled():
            _log.emit("outlay.reservation.committed", reservation=self._id,
                      held=dict(self._amounts), actual=dict(actual or self._amounts))

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
            with anyio.CancelScope(shield=True):
                await self._store.release(self._id)
        finally:
            self._ending = False
        self._state = "released"
        if _log.enabled():
            _log.emit("outlay.reservation.released", reservation=self._id,
                      held=dict(self._amounts))

    def detach(self) -> str:
        """Hand the hold to whoever ends it by id at the store (a job record that a worker in
        another process settles): this handle no longer ends it, and dropping it releases
        nothing. Returns the id; ``ReservationError`` if it has already ended."""
        self._begin_ending("detached")
        self._ending = False
        self._state = "detached"
        return self._id

    async def extend(self, lease: float) -> None:
        """Renew the lease to ``lease`` seconds from now; ``ReservationError`` if not held."""
        lease = check_lease(lease)
        if self._state is not None or not await self._store.extend(self._id, lease):
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
        if getattr(self, "_state", "unset") is None and not self._unsettled:
            # Release first: the warning may be turned into an error by a warnings filter.
            with contextlib.suppress(Exception):  # a finaliser must never raise
                self._store.release_abandoned(self._id)
            warnings.warn(f"reservation {self._id} was garbage-collected without being "
                          "committed or released; its hold was released",
                          ResourceWarning, stacklevel=1, source=self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._id} {dict(self._amounts)} {self.state}>"


class ReserveContext(Generic[H]):
    """What ``Budget.reserve`` (and ``reserve_tokens``, ``PrincipalBudget.reserve``) returns:
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


class Budget:
    """Reservations over named limits in a store (``memory://`` by default).

    Example::

        budget = Budget()                       # or Budget("sqlite:///budgets.db")
        await budget.set_limit("run/usd", Decimal("5"))
        await budget.set_limit("run/tokens", 100_000)
        async with budget.reserve({"run/usd": Decimal("0.02"), "run/tokens": 1500}) as r:
            usage = await call_the_model()
            await r.commit({"run/usd": usage.cost, "run/tokens": usage.total_tokens})
    """

    def __init__(self, store: Store | str = "memory://", *, lease: float = DEFAULT_LEASE) -> None:
        self._store = store_from_url(store) if isinstance(store, str) else store
        if not isinstance(self._store, Store):
            raise TypeError(f"store must be a Store or a URL, got {type(store).__name__}")
        self._lease = check_lease(lease)

    @property
    def store(self) -> Store:
        """The store this budget reserves against."""
        return self._store

    async def set_limit(self, key: str, cap: Amount) -> None:
        """Create limit ``key`` with ``cap`` (``int`` units or ``Decimal`` money), or change it."""
        await self._store.set_limit(_check_key(key), check_amount(cap, "cap"))

    async def usage(self, key: str) -> LimitUsage:
        """Snapshot one limit: cap, spent, held, available."""
        return await self._store.usage(_check_key(key))

    async def try_reserve(
        self,
        amounts: Mapping[str, Amount],
        *,
        lease: float | None = None,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Reservation | None:
        """Hold ``amounts`` against every named limit, all or nothing; ``None`` if one lacks room.

        ``defaults`` gives caps for limits to create on first use (period keys, principals);
        ``expire_at`` says when such a limit's period ends (see ``Store.reserve``).
        Bad amounts raise ``TypeError``/``ValueError`` and take nothing. If this task is
        cancelled while the store answers, whatever the store admitted is released (shielded).
        """
        _, reservation = await self._reserve(amounts, lease, defaults, expire_at, Reservation)
        return reservation

    def reserve(
        self,
        amounts: Mapping[str, Amount],
        *,
        lease: float | None = None,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> ReserveContext[Reservation]:
        """Like ``try_reserve`` but raises ``BudgetExceeded`` when refused.

        ``await budget.reserve(...)`` returns the reservation; ``async with budget.reserve(...)
        as r`` also releases it on exit unless the body committed it.
        """

        async def reserve() -> Reservation:
            admission, reservation = await self._reserve(
                amounts, lease, defaults, expire_at, Reservation
            )
            if reservation is None:
                raise _exceeded(admission)
            return reservation

        return ReserveContext(reserve)

    async def _reserve(
        self,
        amounts: Mapping[str, Amount],
        lease: float | None,
        defaults: Mapping[str, Amount] | None,
        expire_at: Mapping[str, float] | None,
        kind: type[R],
    ) -> tuple[Admission, R | None]:
        if not isinstance(amounts, Mapping) or not amounts:
            raise TypeError("amounts must be a non-empty mapping of limit key -> amount")
        checked = {_check_key(k): check_amount(v, f"amount[{k!r}]") for k, v in amounts.items()}
        if defaults is not None:
            defaults = {_check_key(k): check_amount(v, f"defaults[{k!r}]")
                        for k, v in defaults.items()}
        seconds = self._lease if lease is None else check_lease(lease)
        rid = uuid.uuid4().hex
        store = self._store
        try:
            admission = await store.reserve(rid, checked, lease=seconds, defaults=defaults,
                                            expire_at=expire_at)
        except BaseException:
            # Cancelled or failed mid-call: the store may have admitted it anyway.
            with anyio.CancelScope(shield=True):
                # If this fails too, the lease reclaims the hold; the first error is reported.
                with contextlib.suppress(Exception):
                    await store.release(rid)
            raise
        if not admission.admitted:
            if _log.enabled():
                _log.emit("outlay.reservation.denied", amounts=checked,
                          reason=refusal_reason(admission))
            return admission, None
        if _log.enabled():
            _log.emit("outlay.reservation.reserved", reservation=rid, amounts=checked)
        return admission, kind(store, rid, checked)

    async def aclose(self) -> None:
        """Close the store."""
        await self._store.aclose()


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"limit key must be a non-empty str, got {key!r}")
    return key


def _exceeded(admission: Admission) -> BudgetExceeded:
    usage = admission.refused
    return BudgetExceeded(refusal_reason(admission), key=usage.key if usage else None,
                          requested=admission.requested,
                          available=usage.available if usage else None, usage=usage)
