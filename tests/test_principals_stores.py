"""Principals over every store in ``storekit.STORE_FACTORIES``: period keys created on first use
with their period end, nested all-or-nothing holds, and the CLI's view of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from outlay import BudgetExceeded, LimitSpec, Principals, Store, Window

from .storekit import STORE_FACTORIES

pytestmark = pytest.mark.anyio

D = Decimal


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_FACTORIES[request.param](tmp_path, request) as opened:
        yield opened


async def test_nested_windows_across_a_month_end(store: Store) -> None:
    # Periods in the future: a store that expires finished periods (Redis) keeps these.
    now = [datetime(2030, 1, 31, 23, 30, tzinfo=UTC).timestamp()]
    budgets = Principals(store, clock=lambda: now[0], run_id="r1")
    tenant = budgets.get("tenant:acme", caps=[LimitSpec("usd", Window.month(), D("5"))])
    agent = tenant.child("agent:a", caps=[LimitSpec("usd", Window.run(), D("4")),
                                          LimitSpec("calls", Window.day(), 3)])
    held = await agent.reserve({"usd": D("3"), "calls": 1})
    assert sorted(held.keys) == ["tenant:acme/agent:a/calls/day:2030-01-31",
                                 "tenant:acme/agent:a/usd/run:r1",
                                 "tenant:acme/usd/month:2030-01"]
    with pytest.raises(BudgetExceeded) as info:
        await tenant.reserve({"usd": D("2.01")})
    assert info.value.key == "tenant:acme/usd/month:2030-01"
    await held.commit({"usd": D("2.5")})
    now[0] = datetime(2030, 2, 1, 0, 30, tzinfo=UTC).timestamp()
    # February is fresh for the tenant, but the run cap (4) still binds: 2.5 + 2 > 4
    with pytest.raises(BudgetExceeded) as info:
        await agent.reserve({"usd": D("2")})
    assert info.value.key == "tenant:acme/agent:a/usd/run:r1"
    assert await store.limits("tenant:acme/usd/month:2030-02") == []  # nothing created
    again = await agent.reserve({"usd": D("1.5"), "calls": 3})
    await again.release()
    listed = {u.key: u.spent for u in await store.limits("tenant:acme/")}
    assert listed["tenant:acme/usd/month:2030-01"] == D("2.5")
    assert listed["tenant:acme/agent:a/usd/run:r1"] == D("2.5")
    assert listed["tenant:acme/agent:a/calls/day:2030-01-31"] == 1


async def test_the_monthly_figure_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'budgets.db'}"
    now = datetime(2030, 5, 20, tzinfo=UTC).timestamp()
    caps = [LimitSpec("usd", Window.month("Europe/Paris"), D("500"))]

    async def spend(amount: str) -> None:
        budgets = Principals(url, clock=lambda: now, template=caps)  # a fresh process's view
        try:
            await (await budgets.get("tenant:acme").reserve({"usd": D(amount)})).commit()
        finally:
            await budgets.aclose()

    await spend("120.50")
    await spend("79.50")
    reopened = Principals(url, clock=lambda: now, template=caps)
    try:
        [month] = await reopened.get("tenant:acme").usage()
        assert (month.key, month.spent, month.cap) == ("tenant:acme/usd/month:2030-05",
                                                       D("200.00"), D("500"))
    finally:
        await reopened.aclose()
