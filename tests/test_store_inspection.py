"""``Store.holds`` and ``Store.drop_idle_limit`` (what ``outlay holds`` and ``outlay prune`` sit
on), on every store in ``storekit.STORE_FACTORIES``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from outlay import MemoryStore, Store
from outlay.stores import SQLiteStore

from .storekit import STORE_FACTORIES

pytestmark = pytest.mark.anyio

D = Decimal


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_FACTORIES[request.param](tmp_path, request) as opened:
        yield opened


async def test_holds_lists_live_reservations_with_amounts_lease_and_age(store: Store) -> None:
    await store.set_limit("t:a/usd/run:1", D("10"))
    await store.set_limit("t:a/calls/run:1", 100)
    await store.set_limit("t:b/usd/run:1", D("10"))
    assert await store.holds() == []
    assert (await store.reserve("first", {"t:a/usd/run:1": D("1.50"), "t:a/calls/run:1": 2},
                                lease=600)).admitted
    assert (await store.reserve("second", {"t:b/usd/run:1": D("3")}, lease=30)).admitted
    assert (await store.reserve("ended", {"t:b/usd/run:1": D("1")}, lease=30)).admitted
    await store.commit("ended")
    holds = await store.holds()
    assert [h.rid for h in holds] == ["first", "second"]  # oldest first; ended ones gone
    first, second = holds
    assert first.amounts == {"t:a/usd/run:1": D("1.5"), "t:a/calls/run:1": 2}
    assert isinstance(first.amounts["t:a/calls/run:1"], int)
    assert 590 < first.lease_left <= 600
    assert 20 < second.lease_left <= 30
    assert first.age is not None
    assert 0 <= first.age < 10
    assert [h.rid for h in await store.holds("t:b/")] == ["second"]
    assert await store.holds("t:c/") == []


async def test_drop_idle_limit_keeps_held_and_recent_limits(store: Store) -> None:
    await store.set_limit("t:a/usd/run:old", D("10"))
    await store.set_limit("t:a/usd/run:busy", D("10"))
    assert (await store.reserve("h", {"t:a/usd/run:busy": D("1")}, lease=600)).admitted
    assert await store.drop_idle_limit("t:a/usd/run:old", idle=3600) is False  # just changed
    assert await store.drop_idle_limit("t:a/usd/run:busy", idle=0) is False  # a live hold
    assert await store.drop_idle_limit("t:a/usd/run:none", idle=0) is False  # no such limit
    assert await store.drop_idle_limit("t:a/usd/run:old", idle=0) is True
    assert [u.key for u in await store.limits()] == ["t:a/usd/run:busy"]
    await store.commit("h")
    assert await store.drop_idle_limit("t:a/usd/run:busy", idle=0) is True
    assert await store.limits() == []
    with pytest.raises(ValueError, match="idle"):
        await store.drop_idle_limit("x", idle=-1)
    with pytest.raises(TypeError, match="idle"):
        await store.drop_idle_limit("x", idle="1")  # type: ignore[arg-type]


@pytest.mark.parametrize(("actual", "kept"), [(None, D("1")),
                                             ({"keep": D("2"), "gone": D("3")}, D("2"))])
async def test_a_commit_after_the_limit_was_dropped_counts_nowhere(
        tmp_path: Path, actual: dict[str, Decimal] | None, kept: Decimal) -> None:
    """The dropped limit takes no spend, the others still do, with or without ``actual``."""
    now = [1000.0]
    stores: list[Store] = [MemoryStore(clock=lambda: now[0]),
                           SQLiteStore(tmp_path / "late.db", clock=lambda: now[0])]
    for store in stores:
        await store.set_limit("keep", D("10"))
        await store.set_limit("gone", D("10"))
        assert (await store.reserve("r", {"keep": D("1"), "gone": D("1")}, lease=5)).admitted
        assert await store.drop_idle_limit("gone", idle=0) is False  # held
        now[0] += 6  # the lease expired: the hold no longer keeps the limit
        assert await store.drop_idle_limit("gone", idle=0) is True
        assert await store.commit("r", actual) is True  # a late commit counts where it can
        assert (await store.usage("keep")).spent == kept
        assert [u.key for u in await store.limits()] == ["keep"]
        await store.aclose()
        now[0] = 1000.0


async def test_idle_is_measured_on_the_store_clock(tmp_path: Path) -> None:
    now = [1000.0]
    stores: list[Store] = [MemoryStore(clock=lambda: now[0]),
                           SQLiteStore(tmp_path / "idle.db", clock=lambda: now[0])]
    for store in stores:
        await store.set_limit("k", 5)
        assert (await store.reserve(f"r{id(store)}", {"k": 1}, lease=10)).admitted
        await store.commit(f"r{id(store)}")
        now[0] += 99
        assert await store.drop_idle_limit("k", idle=100) is False
        now[0] += 1
        assert await store.drop_idle_limit("k", idle=100) is True
        await store.aclose()
        now[0] = 1000.0


async def test_the_new_optional_methods_default_to_a_clear_not_implemented() -> None:
    class Minimal(MemoryStore):
        holds = Store.holds
        drop_idle_limit = Store.drop_idle_limit
        append_events = Store.append_events
        events = Store.events

    store = Minimal()
    with pytest.raises(NotImplementedError, match="Minimal cannot list its holds"):
        await store.holds()
    with pytest.raises(NotImplementedError, match="Minimal cannot drop limits"):
        await store.drop_idle_limit("k", idle=0)
    with pytest.raises(NotImplementedError, match="Minimal keeps no event log"):
        await store.append_events([], keep=1)
    with pytest.raises(NotImplementedError, match="Minimal keeps no event log"):
        await store.events()
