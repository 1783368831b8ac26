"""``DelegatingStore``: a store that hands every operation to another store.

The base of store wrappers that add something around the operations (``RecordingStore``
writes events, ``outlay.telemetry``'s store exports metrics and spans) without changing what
the inner store decides. A subclass overrides the operations it observes and calls ``super()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._core import Amount
from ._base import Admission, HoldUsage, LimitUsage, Store
from ._events import SpendEvent

#: How many live reservations a wrapper remembers (their amounts, labels) so their endings are
#: described like their holds; an older one is forgotten, as a hold never ended would be.
REMEMBERED = 65_536


class DelegatingStore(Store):
    """Every ``Store`` method goes to ``inner``; so do attributes the wrapper does not have
    (``namespace``, ``path``...)."""

    def __init__(self, inner: Store) -> None:
        if not isinstance(inner, Store):
            raise TypeError(f"inner must be a Store, got {type(inner).__name__}")
        self._inner = inner

    @property
    def inner(self) -> Store:
        """The store this one hands its operations to."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not set yet (a failed __init__): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    async def set_limit(self, key: str, cap: Amount) -> None:
        await self._inner.set_limit(key, cap)

    async def reserve(
        self,
        rid: str,
        amounts: Mapping[str, Amount],
        *,
        lease: float,
        defaults: Mapping[str, Amount] | None = None,
        expire_at: Mapping[str, float] | None = None,
    ) -> Admission:
        return await self._inner.reserve(rid, amounts, lease=lease, defaults=defaults,
                                         expire_at=expire_at)

    async def commit(self, rid: str, actual: Mapping[str, Amount] | None = None) -> bool:
        return await self._inner.commit(rid, actual)

    async def release(self, rid: str) -> bool:
        return await self._inner.release(rid)

    async def extend(self, rid: str, lease: float) -> bool:
        return await self._inner.extend(rid, lease)

    async def usage(self, key: str) -> LimitUsage:
        return await self._inner.usage(key)

    async def limits(self, prefix: str = "") -> list[LimitUsage]:
        return await self._inner.limits(prefix)

    async def reset_spend(self, key: str) -> LimitUsage:
        return await self._inner.reset_spend(key)

    async def held_reservations(self) -> int:
        return await self._inner.held_reservations()

    async def holds(self, prefix: str = "") -> list[HoldUsage]:
        return await self._inner.holds(prefix)

    async def drop_idle_limit(self, key: str, *, idle: float) -> bool:
        return await self._inner.drop_idle_limit(key, idle=idle)

    async def append_events(self, events: Sequence[SpendEvent], *, keep: int) -> None:
        await self._inner.append_events(events, keep=keep)

    async def events(self, *, limit: int | None = None) -> list[SpendEvent]:
        return await self._inner.events(limit=limit)

    def release_abandoned(self, rid: str) -> None:
        self._inner.release_abandoned(rid)

    async def aclose(self) -> None:
        await self._inner.aclose()
