"""Principals: budgets created on first use, several windows and units at once, nesting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from outlay import (
    Budget,
    BudgetCap,
    BudgetExceeded,
    ConfigurationError,
    LimitKey,
    LimitSpec,
    MemoryStore,
    Principals,
    ReservationError,
    Window,
    money_limits,
    parse_limit_key,
)
from outlay.testing import FakeClock

pytestmark = pytest.mark.anyio

D = Decimal


TEMPLATE = [
    LimitSpec("usd", Window.run(), D("50")),
    LimitSpec("usd", Window.month(), D("500")),
    LimitSpec("tokens", Window.day(), 1_000_000),
]


def principals(clock: FakeClock, store: MemoryStore | None = None, **kw: object) -> Principals:
    return Principals(store or MemoryStore(), template=TEMPLATE, clock=clock, run_id="r1",
                      **kw)  # type: ignore[arg-type]


async def test_one_reservation_holds_every_window_and_unit() -> None:
    clock = FakeClock(datetime(2026, 11, 23, 12, tzinfo=UTC))
    store = MemoryStore()
    acme = principals(clock, store).get("tenant:acme")
    async with acme.reserve({"usd": D("0.10"), "tokens": 4000}) as held:
        assert dict(held.keys) == {
            "tenant:acme/usd/run:r1": D("0.10"),
            "tenant:acme/usd/month:2026-11": D("0.10"),
            "tenant:acme/tokens/day:2026-11-23": 4000,
        }
        await held.commit({"usd": D("0.07"), "tokens": 3500})
    usage = {u.key: u for u in await acme.usage()}
    assert usage["tenant:acme/usd/month:2026-11"].spent == D("0.07")
    assert usage["tenant:acme/usd/month:2026-11"].cap == D("500")  # created from the template
    assert usage["tenant:acme/usd/run:r1"].spent == D("0.07")
    assert usage["tenant:acme/tokens/day:2026-11-23"].spent == 3500


async def test_all_or_nothing_across_windows_and_units() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    store = MemoryStore()
    acme = principals(clock, store).get("tenant:acme")
    await store.set_limit("tenant:acme/tokens/day:2026-11-23", 100)
    with pytest.raises(BudgetExceeded) as info:
        await acme.reserve({"usd": D("1"), "tokens": 101})
    refusal = info.value
    assert refusal.key == "tenant:acme/tokens/day:2026-11-23"
    assert (refusal.unit, refusal.principal, refusal.window, refusal.period) == (
        "tokens", "tenant:acme", "day", "day:2026-11-23")
    assert (refusal.cap, refusal.spent, refusal.held, refusal.requested) == (100, 0, 0, 101)
    assert refusal.reason == (
        "tenant:acme: cannot reserve 101 tokens in day:2026-11-23: cap 100, spent 0, held 0 in "
        "flight, available 100, short by 1. Raise the cap, reserve less, or wait for the next "
        "period")
    assert await store.limits("tenant:acme/usd") == []  # nothing was created or held


async def test_a_new_month_starts_fresh_without_a_sweeper() -> None:
    clock = FakeClock(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    store = MemoryStore()
    acme = principals(clock, store).get("tenant:acme", caps=[
        LimitSpec("usd", Window.month(), D("10"))])
    await (await acme.reserve({"usd": D("10")})).commit()
    assert await acme.try_reserve({"usd": D("0.01")}) is None  # November is spent
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    december = await acme.try_reserve({"usd": D("10")})
    assert december is not None
    assert list(december.keys) == ["tenant:acme/usd/month:2026-12"]
    await december.release()
    assert (await store.usage("tenant:acme/usd/month:2026-11")).spent == D("10")


async def test_period_end_is_passed_as_expire_at() -> None:
    seen: dict[str, float] = {}

    class Recording(MemoryStore):
        async def reserve(self, rid, amounts, *, lease, defaults=None,  # type: ignore[no-untyped-def]
                          expire_at=None):
            seen.update(expire_at or {})
            return await super().reserve(rid, amounts, lease=lease, defaults=defaults,
                                         expire_at=expire_at)

    clock = FakeClock(datetime(2028, 2, 29, 22, tzinfo=UTC))
    acme = principals(clock, Recording()).get("tenant:acme")
    await (await acme.reserve({"usd": D(1), "tokens": 1})).release()
    assert seen == {
        "tenant:acme/usd/month:2028-02": datetime(2028, 3, 1, tzinfo=UTC).timestamp(),
        "tenant:acme/tokens/day:2028-02-29": datetime(2028, 3, 1, tzinfo=UTC).timestamp(),
    }  # the run window has no end, so no expiry


async def test_day_window_in_a_time_zone_rolls_at_local_midnight() -> None:
    clock = FakeClock(datetime(2026, 11, 23, 14, 59, tzinfo=UTC))  # 23:59 in Tokyo
    acme = principals(clock).get("tenant:acme", caps=[
        LimitSpec("tokens", Window.day("Asia/Tokyo"), 10)])
    await (await acme.reserve({"tokens": 10})).commit()
    assert await acme.try_reserve({"tokens": 1}) is None
    clock.set(datetime(2026, 11, 23, 15, 0, tzinfo=UTC))  # midnight in Tokyo
    fresh = await acme.reserve({"tokens": 10})
    assert list(fresh.keys) == ["tenant:acme/tokens/day:2026-11-24"]
    await fresh.release()


async def test_new_run_starts_run_limits_fresh() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    budgets = principals(clock)
    acme = budgets.get("tenant:acme")
    await (await acme.reserve({"usd": D("50")})).commit()
    assert await acme.try_reserve({"usd": D("1")}) is None  # the run cap of 50 is spent
    budgets.new_run("r2")
    again = await acme.reserve({"usd": D("1")})
    assert "tenant:acme/usd/run:r2" in again.keys
    await again.commit()
    month = {u.key: u for u in await acme.usage()}["tenant:acme/usd/month:2026-11"]
    assert month.spent == D("51")  # the month keeps counting across runs


async def test_unit_without_any_cap_is_refused_by_default() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    acme = Principals(MemoryStore(), clock=clock).get("tenant:acme")
    assert await acme.try_reserve({"usd": D("0.01")}) is None
    with pytest.raises(BudgetExceeded, match="default cap is 0"):
        await acme.reserve({"usd": D("0.01")})


async def test_kind_templates_and_explicit_caps() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    budgets = Principals(MemoryStore(), template=TEMPLATE, clock=clock, run_id="r1",
                         templates={"tool": [LimitSpec("calls", Window.hour(), 3)]})
    assert budgets.get("tool:search").caps == (LimitSpec("calls", Window.hour(), 3),)
    assert budgets.get("user:ann").caps == tuple(TEMPLATE)
    with pytest.raises(ValueError, match="kind:name"):
        budgets.get("acme")
    with pytest.raises(ValueError, match="kind:name"):
        budgets.get("tenant:a/b")
    with pytest.raises(TypeError):
        LimitSpec("usd", Window.month(), 1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="pick one"):
        budgets.get("user:y", caps=[LimitSpec("usd", Window.month(), D(1)),
                                    LimitSpec("usd", Window.run(), 5)])
    with pytest.raises(ValueError, match="two caps"):
        budgets.get("user:x", caps=[LimitSpec("usd", Window.month(), D(1)),
                                    LimitSpec("usd", Window.month("Asia/Tokyo"), D(2))])


async def test_child_reservation_holds_against_every_ancestor() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    store = MemoryStore()
    budgets = Principals(store, clock=clock, run_id="r1")
    tenant = budgets.get("tenant:acme", caps=[LimitSpec("usd", Window.month(), D("5"))])
    user = tenant.child("user:ann", caps=[LimitSpec("usd", Window.month(), D("3"))])
    agent = user.child("agent:planner", caps=[LimitSpec("usd", Window.run(), D("2"))])
    held = await agent.reserve({"usd": D("1.5")})
    assert dict(held.keys) == {
        "tenant:acme/user:ann/agent:planner/usd/run:r1": D("1.5"),
        "tenant:acme/user:ann/usd/month:2026-11": D("1.5"),
        "tenant:acme/usd/month:2026-11": D("1.5"),
    }
    # the child's own cap binds: 1.5 + 1 > 2
    with pytest.raises(BudgetExceeded) as info:
        await agent.reserve({"usd": D("1")})
    assert info.value.key == "tenant:acme/user:ann/agent:planner/usd/run:r1"
    # a sibling has room of its own but the user's cap (3) binds: 1.5 + 2 > 3
    sibling = user.child("agent:coder", caps=[LimitSpec("usd", Window.run(), D("2"))])
    with pytest.raises(BudgetExceeded) as info:
        await sibling.reserve({"usd": D("2")})
    assert info.value.key == "tenant:acme/user:ann/usd/month:2026-11"
    assert "tenant:acme/user:ann:" in info.value.reason
    # nothing of the refused reservation was taken anywhere
    assert (await store.usage("tenant:acme/usd/month:2026-11")).held == D("1.5")
    await held.commit({"usd": D("1.25")})
    for key in held.keys:
        assert (await store.usage(key)).spent == D("1.25")


async def test_a_child_never_spends_past_its_parent() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    store = MemoryStore()
    budgets = Principals(store, clock=clock, run_id="r1")
    parent = budgets.get("agent:root", caps=[LimitSpec("usd", Window.run(), D("1.00"))])
    children = [parent.child(f"agent:sub{n}", caps=[LimitSpec("usd", Window.run(), D("0.30"))])
                for n in range(10)]
    admitted = 0

    async def spend(child_budget: Budget) -> None:
        nonlocal admitted
        for _ in range(5):
            got = await child_budget.try_reserve({"usd": D("0.10")})
            await anyio.lowlevel.checkpoint()  # let the siblings interleave
            if got is not None:
                admitted += 1
                await got.commit()

    async with anyio.create_task_group() as tg:
        for child in children:
            tg.start_soon(spend, child)
    assert admitted == 10  # 1.00 / 0.10: the parent binds before the children's 3.00 total
    parent_usage = await store.usage("agent:root/usd/run:r1")
    assert parent_usage.spent == D("1.00")
    total_children = sum([(await c.usage())[0].spent for c in children], D(0))
    assert total_children == parent_usage.spent
    for child in children:
        assert (await child.usage())[0].spent <= D("0.30")


async def test_commit_by_unit_and_reservation_ends_once() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    acme = principals(clock).get("tenant:acme")
    held = await acme.reserve({"usd": D("1"), "tokens": 10})
    with pytest.raises(ValueError, match="does not hold"):
        await held.commit({"calls": 1})
    await held.commit({"tokens": 12})  # usd settles at its hold
    assert held.state == "committed"
    with pytest.raises(ReservationError):
        await held.release()
    usage = {u.key: u.spent for u in await acme.usage()}
    assert usage["tenant:acme/usd/run:r1"] == D("1")
    assert usage["tenant:acme/tokens/day:2026-11-23"] == 12


async def test_bad_amounts_take_nothing() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    store = MemoryStore()
    acme = principals(clock, store).get("tenant:acme")
    with pytest.raises(TypeError):
        await acme.reserve({"usd": 0.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=">= 0"):
        await acme.reserve({"usd": D("-1")})
    with pytest.raises(TypeError):
        await acme.reserve({})
    with pytest.raises(TypeError):  # Decimal on a whole-unit limit
        await acme.reserve({"tokens": D("1.5")})
    assert await store.limits() == []


async def test_committed_spend_goes_to_the_bounded_ledger() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    budgets = principals(clock, ledger_capacity=2)
    for name, cost in [("user:a", "3"), ("user:b", "1"), ("user:c", "2"), ("user:a", "1")]:
        await (await budgets.get(name).reserve({"usd": D(cost)})).commit()
    ledger = budgets.ledger("usd")
    assert len(ledger) == 2
    top = ledger.top()
    assert [(e.principal, e.total) for e in top] == [("user:a", D(4)), ("user:c", D(3))]
    assert top[1].error == D(1)  # user:c took user:b's place: its total may overstate by 1


def test_parse_limit_key() -> None:
    assert parse_limit_key("tenant:acme/agent:x/usd/month:2026-11") == LimitKey(
        "tenant:acme/agent:x", "usd", "month:2026-11")
    parsed = parse_limit_key("tenant:acme/usd/hour:2026-11-01T01:00-04:00")
    assert parsed is not None
    assert parsed.window == "hour"
    assert str(parsed) == "tenant:acme/usd/hour:2026-11-01T01:00-04:00"
    assert parse_limit_key("calls") is None
    assert parse_limit_key("run/usd") is None
    assert parse_limit_key("acme/usd/month:2026-11") is None


async def test_reservation_made_before_month_end_is_spent_in_its_month() -> None:
    clock = FakeClock(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    store = MemoryStore()
    acme = principals(clock, store).get("tenant:acme", caps=[
        LimitSpec("usd", Window.month(), D("10"))])
    held = await acme.reserve({"usd": D("4")})
    clock.set(datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC))  # the call finishes in December
    await held.commit({"usd": D("5")})
    assert (await store.usage("tenant:acme/usd/month:2026-11")).spent == D("5")
    assert [u.spent for u in await acme.usage()] == [D(0)]  # December untouched


def test_money_limits_from_a_budget_cap() -> None:
    windows = [Window.run(), Window.month("Europe/Paris"), Window.day()]
    specs = money_limits(BudgetCap(run=D("50"), month=D("500")), windows)
    assert [(s.unit, s.window.name, s.cap) for s in specs] == [
        ("usd", "run", D("50")), ("usd", "month", D("500")), ("usd", "day", D(0))]
    with pytest.raises(ConfigurationError, match="week"):
        money_limits(BudgetCap(week=D(1)), windows)


async def test_check_previews_admission_across_the_chain() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    budgets = Principals(MemoryStore(), clock=clock, run_id="r1")
    tenant = budgets.get("tenant:acme", caps=money_limits(BudgetCap(month=D("10")),
                                                         [Window.month()]))
    agent = tenant.child("agent:a", caps=money_limits(BudgetCap(run=D("8")), [Window.run()]))
    await (await tenant.reserve({"usd": D("6")})).commit()
    fits = await agent.check("usd", D("4"))
    assert fits.admitted
    refused = await agent.check("usd", D("4.01"))
    assert refused.refused_window == "tenant:acme/usd/month:2026-11"
    assert "committed 6" in refused.reason
    assert await agent.try_reserve({"usd": D("4.01")}) is None  # the check agrees
    with pytest.raises(TypeError):
        await agent.check("usd", 4)  # type: ignore[arg-type]


async def test_refusal_by_a_limit_not_created_yet_names_it() -> None:
    """Regression guard: the first reservation of a period, above the template cap, must name
    the limit the store would have created, not report a vague refusal."""
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    store = MemoryStore()
    acme = principals(clock, store).get("tenant:acme")
    with pytest.raises(BudgetExceeded) as info:
        await acme.reserve({"usd": D("60")})
    refusal = info.value
    assert refusal.key == "tenant:acme/usd/run:r1"
    assert "cannot reserve $60 in this run: cap $50, spent $0, held $0" in refusal.reason
    assert refusal.available == D(50)
    assert (refusal.unit, refusal.window, refusal.period) == ("usd", "run", "run:r1")
    assert (refusal.cap, refusal.spent, refusal.held, refusal.requested) == (
        D(50), D(0), D(0), D(60))
    assert await store.limits() == []


async def test_refusals_are_logged_with_principal_and_reason() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    acme = principals(clock).get("tenant:acme")
    with capture_logs() as logs:
        assert await acme.try_reserve({"usd": D("60")}) is None
        assert await acme.try_reserve({"eur": D(1)}) is None  # uncapped money: cap 0
    denied = [e for e in logs if e["event"] == "outlay.reservation.denied"]
    assert [(e["principal"], e["key"], e["unit"]) for e in denied] == [
        ("tenant:acme", "tenant:acme/usd/run:r1", "usd"), ("tenant:acme", None, "eur")]
    assert "cannot reserve $60" in denied[0]["reason"]
    assert "no cap is set for eur (the default cap is 0)" in denied[1]["reason"]


async def test_an_uncapped_whole_unit_is_not_limited_and_holds_nothing() -> None:
    clock = FakeClock(datetime(2026, 11, 23, tzinfo=UTC))
    store = MemoryStore()
    acme = principals(clock, store).get("tenant:acme")
    held = await acme.reserve({"usd": D("1"), "gpu_hours": 7})
    assert held.amounts == {"usd": D("1"), "gpu_hours": 7}
    assert all(key.split("/")[1] == "usd" for key in held.keys)
    await held.commit({"usd": D("0.5"), "gpu_hours": 9})
    alone = await acme.reserve({"gpu_hours": 1_000_000})  # no store call, nothing held
    assert alone.keys == {}
    await alone.commit()
    assert all("/usd/" in u.key for u in await store.limits())


async def test_a_25_hour_day_is_one_period_in_its_time_zone() -> None:
    # 1 November 2026 in New York falls back: the local day lasts 25 hours.
    clock = FakeClock(datetime(2026, 11, 1, 4, 30, tzinfo=UTC))  # 00:30 EDT
    acme = principals(clock).get("tenant:acme", caps=[
        LimitSpec("calls", Window.day("America/New_York"), 3)])
    for hour in (4, 6, 28):  # 00:30 EDT, 01:30 EST (second pass), 23:30 EST
        clock.set(datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=hour, minutes=30))
        held = await acme.reserve({"calls": 1})
        assert list(held.keys) == ["tenant:acme/calls/day:2026-11-01"]
        await held.commit()
    assert await acme.try_reserve({"calls": 1}) is None  # all three landed in one day
    clock.set(datetime(2026, 11, 2, 5, 0, tzinfo=UTC))  # 00:00 EST on 2 November
    await (await acme.reserve({"calls": 1})).release()
