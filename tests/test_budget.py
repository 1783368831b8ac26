"""``Budget``, the one budget object: by unit, over windows and principals, on every store."""

from __future__ import annotations

import pickle
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from outlay import (
    AtomicBudget,
    AtomicTokenBudget,
    Budget,
    BudgetExceeded,
    LimitSpec,
    Principals,
    ReservationError,
    Store,
    TokenBudget,
    TokenReservation,
    Window,
)
from outlay.stores import SQLiteStore

from .redisserver import redis_binary, start_server
from .storekit import STORE_FACTORIES, redis_store_at

pytestmark = pytest.mark.anyio

NOON = datetime(2026, 12, 1, 12, tzinfo=UTC).timestamp()


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_FACTORIES[request.param](tmp_path, request) as opened:
        yield opened


# -- the one-liner ----------------------------------------------------------------------------


async def test_the_one_liner_caps_money_tokens_requests_and_tool_calls() -> None:
    budget = Budget(usd=D("0.50"), tokens=100_000, requests=3, tool_calls=20)
    assert budget.units == {"usd", "tokens", "requests", "tool_calls"}
    async with budget.reserve({"usd": D("0.02"), "tokens": 1500, "requests": 1}) as r:
        assert r.amounts == {"usd": D("0.02"), "tokens": 1500, "requests": 1}
        assert len(r.keys) == 3  # one limit per unit in the run window
        await r.commit({"usd": D("0.015"), "tokens": 1200})  # requests settle at the hold
    assert await budget.remaining() == {"usd": D("0.485"), "tokens": 98_800, "requests": 2,
                                        "tool_calls": 20}
    await (await budget.reserve({"requests": 2})).commit()
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve({"usd": D("0.01"), "requests": 1})
    assert (info.value.unit, info.value.cap, info.value.spent, info.value.held,
            info.value.requested) == ("requests", 3, 3, 0, 1)
    assert (await budget.remaining())["usd"] == D("0.485")  # the refusal took nothing


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"usd": 0.5}, TypeError), ({"usd": 1}, TypeError), ({"usd": D("-1")}, ValueError),
    ({"tokens": 1.5}, TypeError), ({"tool_calls": -1}, ValueError), ({"window": []}, TypeError),
    ({"principal": "no kind"}, ValueError), ({"store": "nope://"}, ValueError),
])
def test_bad_caps_raise_at_construction(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Budget(**kwargs)


async def test_reserve_never_waits_and_try_reserve_returns_the_handle_or_none() -> None:
    budget = Budget(tokens=10)
    held = await budget.try_reserve({"tokens": 10})
    assert held is not None
    assert held.state == "held"
    assert await budget.try_reserve({"tokens": 1}) is None
    with pytest.raises(BudgetExceeded, match="held 10 in flight"):
        await budget.reserve({"tokens": 1})
    await held.release()
    assert await budget.remaining() == {"tokens": 10}


async def test_bad_amounts_take_nothing() -> None:
    budget = Budget(usd=D("1"), tokens=10)
    for bad in ({"usd": 0.1}, {"tokens": -1}, {"tokens": True}, {}):
        with pytest.raises((TypeError, ValueError)):
            await budget.reserve(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await budget.reserve({"tokens": D("1.5")})  # money into a whole-unit limit
    assert await budget.remaining() == {"usd": D("1"), "tokens": 10}
    assert await budget.store.held_reservations() == 0


async def test_commit_names_only_held_units_and_ends_once() -> None:
    budget = Budget(usd=D("1"))
    held = await budget.reserve({"usd": D("0.5")})
    with pytest.raises(ValueError, match="does not hold"):
        await held.commit({"tokens": 5})
    await held.commit({"usd": D("0.7")})  # overshoot is recorded, never lost
    with pytest.raises(ReservationError):
        await held.release()
    assert await budget.remaining() == {"usd": D("0.3")}


# -- windows, principals and stores ------------------------------------------------------------


async def test_a_fleet_budget_is_the_same_call_with_a_store_windows_and_a_principal(
        store: Store) -> None:
    clock = [NOON]
    budget = Budget(usd=D("5"), tokens=1000, window=[Window.run(), Window.day("Europe/Berlin")],
                    store=store, principal="agent:researcher", clock=lambda: clock[0],
                    run_id="r1")
    held = await budget.reserve({"usd": D("4"), "tokens": 600})
    assert sorted(held.keys) == [
        "agent:researcher/tokens/day:2026-12-01", "agent:researcher/tokens/run:r1",
        "agent:researcher/usd/day:2026-12-01", "agent:researcher/usd/run:r1"]
    await held.commit()
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve({"tokens": 500})
    refusal = info.value
    assert refusal.principal == "agent:researcher"
    assert refusal.unit == "tokens"
    assert refusal.window in ("run", "day")
    assert (refusal.cap, refusal.spent, refusal.held, refusal.requested) == (1000, 600, 0, 500)
    budget.new_run("r2")  # the run starts fresh, the day does not
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve({"tokens": 500})
    assert (info.value.window, info.value.period) == ("day", "day:2026-12-01")
    assert "wait for the next period" in info.value.reason
    clock[0] += 24 * 3600  # the next Berlin day
    await (await budget.reserve({"tokens": 500})).commit()
    assert await budget.remaining() == {"usd": D("5"), "tokens": 500}


async def test_a_principal_is_a_budget_and_a_child_holds_against_its_ancestors(
        store: Store) -> None:
    principals = Principals(store, run_id="r1", template=[
        LimitSpec("usd", Window.run(), D("1")), LimitSpec("tool_calls", Window.run(), 10)])
    acme = principals.get("tenant:acme")
    agent = acme.child("agent:x", caps=[LimitSpec("usd", Window.run(), D("5"))])
    assert isinstance(acme, Budget)
    assert isinstance(agent, Budget)
    await (await agent.reserve({"usd": D("0.75"), "tool_calls": 3})).commit()
    assert await agent.remaining() == {"usd": D("0.25"), "tool_calls": 7}  # the tenant's cap
    with pytest.raises(BudgetExceeded) as info:
        await agent.reserve({"usd": D("0.5")})
    assert info.value.key == "tenant:acme/usd/run:r1"
    assert info.value.principal == "tenant:acme"


async def test_budget_is_a_token_budget_on_every_store(store: Store) -> None:
    budget = Budget(tokens=1000, store=store)
    assert isinstance(budget, TokenBudget)
    held = await budget.try_reserve_tokens(800)
    assert isinstance(held, TokenReservation)
    assert held.estimate == 800
    assert await budget.try_reserve_tokens(300) is None
    await budget.record_usage(held, 700, 400)  # over the estimate: the overshoot counts
    assert await budget.tokens_consumed() == 1100
    with pytest.raises(BudgetExceeded, match="cannot reserve 1 tokens"):
        await budget.reserve_tokens(1)
    with pytest.raises(ReservationError):
        await budget.record_usage(held, 1, 1)
    other = AtomicTokenBudget(10)
    foreign = await other.try_reserve_tokens(1)
    assert foreign is not None
    with pytest.raises(ReservationError):
        await budget.record_usage(foreign, 1, 0)
    await foreign.release()


# -- uncapped units ------------------------------------------------------------------------


async def test_uncapped_money_is_refused_and_uncapped_whole_units_are_unlimited() -> None:
    budget = Budget(tokens=100)
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve({"usd": D("0.01"), "tokens": 1})
    assert (info.value.unit, info.value.cap, info.value.key) == ("usd", D(0), None)
    assert "no cap is set for usd (the default cap is 0)" in info.value.reason
    held = await budget.reserve({"tokens": 1, "requests": 1})
    assert set(held.amounts) == {"tokens", "requests"}
    assert all("/tokens/" in key for key in held.keys)
    await held.commit({"tokens": 1, "requests": 1})


# -- BudgetExceeded ------------------------------------------------------------------------


def test_a_refusal_says_what_to_do_in_the_unit_of_its_limit() -> None:
    exc = BudgetExceeded(unit="usd", requested=D("0.02"), cap=D("0.50"), spent=D("0.49"),
                         held=D("0.005"), key="agent:x/usd/day:2026-12-01", principal="agent:x",
                         window="day", period="day:2026-12-01")
    assert str(exc) == exc.reason == (
        "agent:x: cannot reserve $0.02 in day:2026-12-01: cap $0.50, spent $0.49, held $0.005 "
        "in flight, available $0.005, short by $0.015. Raise the cap, reserve less, or wait "
        "for the next period")
    assert exc.available == D("0.005")
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.reason, copy.unit, copy.cap, copy.key) == (exc.reason, "usd", D("0.50"),
                                                            exc.key)
    tokens = BudgetExceeded(unit="tokens", requested=1500, cap=100_000, spent=99_000, held=0,
                            window="run", period="run:r1", principal="budget:default")
    assert tokens.reason == ("budget:default: cannot reserve 1,500 tokens in this run: cap "
                             "100,000, spent 99,000, held 0 in flight, available 1,000, short "
                             "by 500. Raise the cap, reserve less")


def test_every_refusal_is_built_by_budget_exceeded_alone() -> None:
    """Regression guard: refusal messages used to be written in seven places."""
    src = Path(__file__).resolve().parent.parent / "src" / "outlay"
    builders = [str(path.relative_to(src)) for path in src.rglob("*.py")
                if re.search(r"BudgetExceeded\(\s*f?[\"']", path.read_text())]
    assert builders == []


async def test_atomic_budget_speaks_the_same_vocabulary() -> None:
    guard = AtomicBudget(2, name="calls")
    await guard.reserve(2)  # takes now
    with pytest.raises(BudgetExceeded) as info:
        await guard.reserve(1)  # never waits: raises
    assert (info.value.key, info.value.cap, info.value.held, info.value.requested) == (
        "calls", 2, 2, 1)
    assert await guard.try_reserve(1) is False
    guard.release_nowait(2)
    await guard.acquire(2)  # waiting is asked for by name
    assert guard.available == 0


# -- exactly one store round trip per reservation --------------------------------------------


async def test_one_sqlite_transaction_per_reservation_and_per_ending(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "budgets.db")
    budget = Budget(usd=D("5"), tokens=10_000, requests=10, tool_calls=10,
                    window=[Window.run(), Window.day(), Window.month()], store=store)
    statements: list[str] = []

    def trace(tx: Any) -> None:
        tx.conn.set_trace_callback(statements.append)

    await store._run(trace, write=False)
    try:
        for _ in range(3):
            statements.clear()
            held = await budget.reserve({"usd": D("0.1"), "tokens": 100, "requests": 1,
                                         "tool_calls": 1})
            assert len(held.keys) == 12  # 4 units x 3 windows
            assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
            statements.clear()
            await held.commit({"usd": D("0.05"), "tokens": 80})
            assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
    finally:
        await store.aclose()


@pytest.mark.skipif(redis_binary() is None, reason="no redis-server binary on PATH to start a "
                    "private server (its command counters must not see other clients)")
async def test_one_redis_round_trip_per_reservation_and_per_ending(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted on both sides: the writes the client sends (a pipeline would be one write) and
    the scripts the server ran (a private server, so no other client is counted)."""
    pytest.importorskip("redis", reason="the redis driver is not installed (outlay[redis])")
    from redis.asyncio.connection import AbstractConnection

    sent: list[object] = []
    send = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        await send(self, command, check_health)

    server = start_server(tmp_path / "redis")
    try:
        async with redis_store_at(server) as store:
            budget = Budget(usd=D("5"), tokens=10_000, requests=10,
                            window=[Window.run(), Window.day()], store=store)
            await (await budget.reserve({"usd": D("0.1")})).commit()  # scripts are loaded

            async def scripts_run() -> int:
                async def info() -> Any:
                    return await store.client.info("commandstats")

                stats = await store._call(info)
                calls = stats.get("cmdstat_evalsha", {}).get("calls", 0)
                calls += stats.get("cmdstat_eval", {}).get("calls", 0)
                return int(calls)

            monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
            for _ in range(3):
                before = await scripts_run()
                sent.clear()
                held = await budget.reserve({"usd": D("0.1"), "tokens": 100, "requests": 1})
                assert len(held.keys) == 6
                assert len(sent) == 1
                assert await scripts_run() == before + 1
                sent.clear()
                await held.commit({"usd": D("0.05")})
                assert len(sent) == 1
                assert await scripts_run() == before + 2
    finally:
        server.stop()


# -- a guard or a token budget as the budget object ------------------------------------------


async def test_a_budget_guard_becomes_the_budget_object_in_one_call() -> None:
    guard = AtomicBudget(3, name="calls")
    budget = Budget.from_guard(guard)
    dispatcher_cost = {"tool_calls": 1}
    for _ in range(3):
        await (await budget.reserve(dispatcher_cost)).commit()
    assert guard.available == 0  # the guard keeps the count
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve(dispatcher_cost)
    assert (info.value.unit, info.value.cap, info.value.held) == ("tool_calls", 3, 3)
    guard.refill()
    held = await budget.reserve({"tool_calls": 2})
    assert await budget.remaining() == {"tool_calls": 1}
    await held.commit({"tool_calls": 1})  # below the hold: the rest goes back
    assert guard.available == 2
    await (await budget.reserve({"tool_calls": 2})).release()
    assert guard.available == 2
    with pytest.raises(TypeError):
        Budget.from_guard(object())  # type: ignore[arg-type]


async def test_a_token_budget_becomes_the_budget_object_in_one_call() -> None:
    tokens = AtomicTokenBudget(1000)
    budget = Budget.from_token_budget(tokens)
    held = await budget.reserve({"tokens": 600})
    assert tokens.held == 600
    await held.commit({"tokens": 700})  # recorded through record_usage, overshoot included
    assert tokens.tokens_consumed_nowait() == 700
    assert await budget.try_reserve({"tokens": 400}) is None
    assert await budget.remaining() == {"tokens": 300}
    async with budget.reserve({"tokens": 300}):
        assert tokens.available == 0
    assert tokens.available == 300  # released on exit
    with pytest.raises(TypeError):
        Budget.from_token_budget(AtomicBudget(1))  # type: ignore[arg-type]


async def test_aclose_closes_only_a_store_the_budget_opened(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "mine.db")
    await Budget(usd=D("1"), store=store).aclose()
    await store.set_limit("still-open", 1)  # a store passed in stays open
    await store.aclose()
    opened = Budget(usd=D("1"), store=f"sqlite:///{tmp_path / 'its.db'}")
    await (await opened.reserve({"usd": D("0.5")})).commit()
    await opened.aclose()
    with pytest.raises(Exception, match="closed"):
        await opened.reserve({"usd": D("0.1")})


async def test_per_tool_limits_are_units_of_the_budget_object() -> None:
    """A durable, shared form of ``ToolCallLimitHook``: one custom unit per tool."""
    from outlay import DispatchBudgetHook, ToolDispatcher, ToolInvocation

    async def search(query: str) -> str:
        return query

    budget = Budget(tool_calls=3, caps=[LimitSpec("tool_calls.search", Window.run(), 2)])
    hook = DispatchBudgetHook(budget, lambda inv: {"tool_calls": 1,
                                                   f"tool_calls.{inv.tool_name}": 1})
    dispatcher = ToolDispatcher([search], [hook])
    outcomes = [(await dispatcher.dispatch(ToolInvocation(f"c{i}", "search", {"query": "q"}))
                 ).skipped for i in range(3)]
    assert outcomes == [False, False, True]
    assert await budget.remaining() == {"tool_calls": 1, "tool_calls.search": 0}


async def test_a_standalone_budget_keeps_no_ledger_and_principals_do() -> None:
    with pytest.raises(ValueError, match="keep no ledger"):
        Budget(usd=D("1")).principals.ledger("usd")
    principals = Principals(template=[LimitSpec("usd", Window.run(), D("1"))])
    await (await principals.get("user:ann").reserve({"usd": D("0.25")})).commit()
    assert principals.ledger("usd").top(1)[0].principal == "user:ann"


async def test_the_hook_charges_the_budget_object_on_every_store(store: Store) -> None:
    from outlay import DispatchBudgetHook, ToolDispatcher, ToolInvocation

    async def search(query: str) -> str:
        return query

    budget = Budget(usd=D("0.05"), tool_calls=10, window=[Window.run(), Window.day()],
                    store=store, principal="agent:x")
    dispatcher = ToolDispatcher([search], [DispatchBudgetHook(
        budget, {"usd": D("0.02"), "tool_calls": 1})])
    results = [await dispatcher.dispatch(ToolInvocation(f"c{i}", "search", {"query": "q"}))
               for i in range(3)]
    assert [r.skipped for r in results] == [False, False, True]
    assert await budget.remaining() == {"usd": D("0.01"), "tool_calls": 8}
    assert await store.held_reservations() == 0
