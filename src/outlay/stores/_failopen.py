"""``FailOpenStore``: admit instead of failing when a store cannot answer (opt-in, loud).

Stores fail closed: a backend that does not answer raises ``StoreError`` and nothing is
admitted. Wrapping any store in ``FailOpenStore`` trades exactness for availability: a
``reserve`` that fails with ``StoreError`` is admitted without being counted, and endings that
fail are dropped. Every admission made that way, and every dropped ending, is logged as the
warning event ``outlay.store.failed_open`` (``operation``, ``store``, ``error``,
``reservation``). Reads (``usage``, ``limits``) and ``set_limit`` are never faked.

A reservation admitted while failing open and committed once the store answers again records
its spend then (a zero hold taken under its id, then committed), so work done during an
outage is still paid for; if a limit is already past its cap by then, that spend cannot be
recorded and the warning says so.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._core import Amount, ReservationError, StoreError, check_amounts, log
from ._base import ADMITTED, Admission, Store
from ._decide import zero_of
from ._wrapper import DelegatingStore

OPENED_MEMORY = 65_536
"""How many reservations admitted while failing open are remembered for their endings."""

_SETTLE_LEASE = 60.0


@dataclass(frozen=True, slots=True)
class _Opened:
    amounts: dict[str, Amount]
    defaults: dict[str, Amount] | None
    expire_at: dict[str, float] | None


class FailOpenStore(DelegatingStore):
    """``inner``, admitting when it cannot answer (see the module docstring). What it does not
    fake (reads, caps, inspection) goes to ``inner`` unchanged."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self._opened: OrderedDict[str, _Opened] = OrderedDict()

    def __repr__(self) -> str:
        return f"<FailOpenStore {self._inner!r}>"

    def _failed(self, operation: str, exc: BaseException, **fields: Any) -> None:
        log.warn("outlay.store.failed_open", store=type(self._inner).__name__,
                  operation=operation, error=str(exc), error_type=type(exc).__name__, **fields)

    async def reserve(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        checked = check_amounts(amounts, "amount")
        try:
            return await self._inner.reserve(rid, checked, lease=lease, defaults=defaults,
                                             expire_at=expire_at)
        except StoreError as exc:
            self._failed("reserve", exc, reservation=rid, amounts=checked)
            self._opened[rid] = _Opened(checked, dict(defaults) if defaults else None,
                                        dict(expire_at) if expire_at else None)
            if len(self._opened) > OPENED_MEMORY:
                self._opened.popitem(last=False)
            return ADMITTED

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        checked = check_amounts(actual or {}, "actual")
        opened = self._opened.get(rid)
        if opened is not None:
            unknown = sorted(checked.keys() - opened.amounts.keys())
            if unknown:
                raise ValueError(f"actual names limits the reservation does not hold: {unknown}")
        try:
            if opened is not None:
                settled = await self._settle_opened(rid, opened, checked)
                self._opened.pop(rid, None)
                return settled
            return await self._inner.commit(rid, checked)
        except StoreError as exc:
            self._opened.pop(rid, None)
            self._failed("commit", exc, reservation=rid, actual=checked)
            return True

    async def _settle_opened(self, rid: str, opened: _Opened,
                             actual: Mapping[str, Amount]) -> bool:
        """Record the spend of a reservation the store never saw: hold zero under its id,
        then commit that hold at ``actual`` (the admitted amounts where it says nothing)."""
        zeros = {key: zero_of(amount) for key, amount in opened.amounts.items()}
        try:
            admission = await self._inner.reserve(rid, zeros, lease=_SETTLE_LEASE,
                                                  defaults=opened.defaults,
                                                  expire_at=opened.expire_at)
        except ReservationError:  # ended already (a retried commit): counted once
            return False
        if not admission.admitted:
            self._failed("commit", StoreError("a limit is past its cap; the spend of this "
                                              "fail-open admission is not recorded"),
                         reservation=rid, actual=dict(actual))
            await self._inner.release(rid)
            return True
        spend = {key: actual.get(key, amount) for key, amount in opened.amounts.items()}
        return await self._inner.commit(rid, spend)

    async def release(self, rid: str) -> bool:
        opened = self._opened.pop(rid, None) is not None
        try:
            return await self._inner.release(rid) or opened
        except StoreError as exc:
            self._failed("release", exc, reservation=rid)
            return opened

    async def extend(self, rid: str, lease: float) -> bool:
        try:
            return await self._inner.extend(rid, lease) or rid in self._opened
        except StoreError as exc:
            self._failed("extend", exc, reservation=rid)
            return True

    def release_abandoned(self, rid: str) -> None:
        self._opened.pop(rid, None)
        self._inner.release_abandoned(rid)
