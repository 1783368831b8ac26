"""Administrative store methods used by the CLI: ``limits`` defaults and ``reset_spend``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from outlay import MemoryStore, Store, UnknownLimit

from .storekit import STORE_FACTORIES

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The stores that implement ``reset_spend`` (Redis does not yet)."""
    async with STORE_FACTORIES[request.param](tmp_path, request) as opened:
        yield opened


async def test_reset_spend_zeroes_spend_and_keeps_cap_and_holds(store: Store) -> None:
    await store.set_limit("usd", Decimal("10"))
    await store.reserve("a", {"usd": Decimal("4")}, lease=60)
    await store.commit("a")
    await store.reserve("b", {"usd": Decimal("3")}, lease=60)
    before = await store.reset_spend("usd")
    assert (before.spent, before.held) == (Decimal("4"), Decimal("3"))
    after = await store.usage("usd")
    assert (after.cap, after.spent, after.held) == (Decimal("10"), 0, Decimal("3"))
    assert isinstance(after.spent, Decimal)
    assert await store.commit("b") is True  # the live hold still settles normally
    assert (await store.usage("usd")).spent == Decimal("3")
    with pytest.raises(UnknownLimit):
        await store.reset_spend("nope")


async def test_optional_methods_default_to_a_clear_not_implemented() -> None:
    class Minimal(MemoryStore):
        limits = Store.limits
        reset_spend = Store.reset_spend

    store = Minimal()
    with pytest.raises(NotImplementedError, match="Minimal cannot list its limits"):
        await store.limits()
    with pytest.raises(NotImplementedError, match="Minimal cannot reset spend"):
        await store.reset_spend("k")
