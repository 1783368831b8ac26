"""BudgetedExecutor: declared costs charged through ``outlay.Budget`` for every node type.

Interleavings are forced with events; nothing sleeps. Snapshots are taken once the expected
number of ``waits`` stages have arrived (not on ``wait_all_tasks_blocked()``, which a store
doing network I/O would satisfy too early), so the suite holds for every store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from outlay import (
    Budget,
    BudgetExceeded,
    CompositionError,
    LimitSpec,
    Principals,
    Store,
    Window,
)
from outlay.graph import (
    Branch,
    BudgetedExecutor,
    Const,
    Cost,
    Fanout,
    Let,
    Map,
    Merge,
    Parallel,
    Reported,
    Retry,
    Sequential,
    Stage,
    StageRegistry,
)

from .storekit import STORE_FACTORIES

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


@dataclass
class Lab:
    """A registry of instrumented stages and a budget over one ``calls`` limit."""

    budget: Budget
    store: Store
    registry: StageRegistry = field(default_factory=StageRegistry)
    ran: list[str] = field(default_factory=list)
    gate: anyio.Event = field(default_factory=anyio.Event)
    cancelled: list[str] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)
    waiting: int = 0
    expect: int = 1

    def executor(self, **kwargs: Any) -> BudgetedExecutor:
        return BudgetedExecutor(self.registry, self.budget, **kwargs)

    async def set_limit(self, unit: str, cap: int | Decimal) -> None:
        """Change the cap of ``unit`` in this run (the limit key the budget maps it onto)."""
        [key] = self.budget.limits_at([unit])
        await self.store.set_limit(key, cap)

    async def usage(self, unit: str = "calls") -> tuple[Any, Any]:
        [key] = self.budget.limits_at([unit])
        found = await self.store.usage(key)
        return found.spent, found.held


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def lab(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Lab]:
    async with STORE_FACTORIES[request.param](tmp_path, request) as store:
        budget = Budget(caps=[LimitSpec("calls", Window.run(), 10)], store=store)
        lab = Lab(budget, store)
        await lab.set_limit("calls", 10)
        registry = lab.registry

        def priced(name: str, calls: int) -> None:
            async def stage(x: Any) -> Any:
                lab.ran.append(name)
                return x

            registry.register(name, stage, cost=Cost(calls=calls) if calls else None)

        for calls in range(5):
            priced(f"c{calls}", calls)  # c0 is free, c1 costs one call, ...

        async def waits(x: Any) -> Any:  # costs 1, blocks until the gate opens
            lab.ran.append("waits")
            lab.waiting += 1
            if lab.waiting >= lab.expect:
                lab.arrived.set()
            try:
                await lab.gate.wait()
            except anyio.get_cancelled_exc_class():
                lab.cancelled.append("waits")
                raise
            return x

        async def fails(x: Any) -> Any:  # costs 1, fails once every other task is blocked
            lab.ran.append("fails")
            await anyio.wait_all_tasks_blocked()
            raise Boom

        async def true(x: Any) -> bool:
            lab.ran.append("true")
            return True

        registry.register("waits", waits, cost=Cost(calls=1))
        registry.register("fails", fails, cost=Cost(calls=1))
        registry.register("true", true, cost=Cost(calls=1))
        yield lab


async def run_blocked(
    lab: Lab, comp: Any, value: Any = 0, *, expect: int = 1, **kwargs: Any
) -> Any:
    """Start ``comp``, wait until ``expect`` ``waits`` stages are blocked, return a usage
    snapshot, then open the gate."""
    lab.expect = expect
    result: list[Any] = []

    async def run() -> None:
        result.append(await lab.executor().run(comp, value, **kwargs))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await lab.arrived.wait()
        snapshot = await lab.usage()
        lab.gate.set()
    return snapshot, result[0]


# -- Stage ------------------------------------------------------------------------------------


async def test_stage_is_charged_before_it_runs(lab: Lab) -> None:
    during, _ = await run_blocked(lab, Stage("waits"))
    assert during == (0, 1)  # held while it runs
    assert await lab.usage() == (1, 0)


async def test_stage_over_budget_never_runs(lab: Lab) -> None:
    await lab.set_limit("calls", 2)
    with pytest.raises(BudgetExceeded) as info:
        await lab.executor().run(Stage("c3"), 0)
    assert (info.value.unit, info.value.cap, info.value.requested) == ("calls", 2, 3)
    assert lab.ran == []
    assert await lab.usage() == (0, 0)


async def test_failing_stage_keeps_its_charge(lab: Lab) -> None:
    with pytest.raises(Boom):
        await lab.executor().run(Stage("fails"), 0)
    assert await lab.usage() == (1, 0)


async def test_reported_actual_cost_is_reconciled(lab: Lab) -> None:
    reports: list[int] = []

    async def metered(x: int) -> Reported:
        return Reported(x, Cost(calls=reports.pop()))

    lab.registry.register("metered", metered, cost=Cost(calls=3))
    reports.extend([5, 1])  # pops 1 first: under the declaration
    assert await lab.executor().run(Stage("metered"), 7) == 7
    assert await lab.usage() == (1, 0)
    assert await lab.executor().run(Stage("metered"), 7) == 7  # 5: overshoot is recorded
    assert await lab.usage() == (6, 0)


async def test_reported_cost_in_an_undeclared_unit_is_refused(lab: Lab) -> None:
    async def sneaky(x: int) -> Reported:
        return Reported(x, Cost(calls=1, tokens=5))

    lab.registry.register("sneaky", sneaky, cost=Cost(calls=1))
    with pytest.raises(ValueError, match="undeclared units"):
        await lab.executor().run(Stage("sneaky"), 0)
    assert await lab.usage() == (1, 0)  # charged its declaration


async def test_free_stages_touch_no_limit(lab: Lab) -> None:
    await lab.set_limit("calls", 0)
    assert await lab.executor().run(Sequential([Stage("c0"), Const(5)]), 0) == 5
    assert await lab.usage() == (0, 0)


# -- Const and Sequential ---------------------------------------------------------------------


async def test_const_costs_nothing(lab: Lab) -> None:
    await lab.set_limit("calls", 0)
    assert await lab.executor().run(Const("x"), 0) == "x"


async def test_sequential_charges_each_stage_just_before_it_runs(lab: Lab) -> None:
    await lab.set_limit("calls", 5)
    with pytest.raises(BudgetExceeded):
        await lab.executor().run(Sequential([Stage("c2"), Stage("c2"), Stage("c2")]), 0)
    assert lab.ran == ["c2", "c2"]  # the third was refused and never ran
    assert await lab.usage() == (4, 0)


# -- Parallel ---------------------------------------------------------------------------------


async def test_parallel_holds_all_branches_or_starts_none(lab: Lab) -> None:
    await lab.set_limit("calls", 5)
    comp = Parallel({"a": Stage("c2"), "b": Stage("c2"), "c": Stage("c2")})
    with pytest.raises(BudgetExceeded):
        await lab.executor().run(comp, 0)
    assert lab.ran == []  # 2 + 2 fit, but the three together do not: none started
    assert await lab.usage() == (0, 0)


async def test_parallel_hold_leaves_no_room_for_transient_overspend(lab: Lab) -> None:
    await lab.set_limit("calls", 3)
    comp = Parallel({"a": Stage("waits"), "b": Stage("waits"), "c": Stage("waits")})
    seen: list[Any] = []

    async def run() -> None:
        seen.append(await lab.executor().run(comp, 0))

    lab.expect = 3
    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await lab.arrived.wait()
        assert await lab.usage() == (0, 3)  # one hold for all three branches
        assert await lab.budget.try_reserve({"calls": 1}) is None  # nothing left over
        lab.gate.set()
    assert seen == [{"a": 0, "b": 0, "c": 0}]
    assert await lab.usage() == (3, 0)


async def test_parallel_draws_from_one_hold(lab: Lab) -> None:
    inner = Parallel({"x": Stage("waits"), "y": Sequential([Stage("c1"), Stage("waits")])})
    comp = Parallel({"a": inner, "b": Stage("waits"), "c": Stage("c2")})
    store = lab.store
    lab.expect = 3
    async with anyio.create_task_group() as group:
        group.start_soon(lab.executor().run, comp, 0)
        await lab.arrived.wait()
        assert await lab.usage() == (0, 6)
        assert await store.held_reservations() == 1  # nested holds and stages draw in process
        lab.gate.set()
    assert await store.held_reservations() == 0
    assert await lab.usage() == (6, 0)


async def test_parallel_returns_the_unused_part_of_its_hold(lab: Lab) -> None:
    async def cheap(x: int) -> Reported:
        return Reported(x, Cost(calls=1))

    lab.registry.register("cheap", cheap, cost=Cost(calls=4))
    comp = Parallel({"a": Stage("cheap"), "b": Stage("cheap")})
    assert await lab.executor().run(comp, 0) == {"a": 0, "b": 0}
    assert await lab.usage() == (2, 0)  # held 8, used 2, 6 came back


async def test_parallel_cancelled_sibling_returns_what_it_had_not_started(lab: Lab) -> None:
    # b is blocked in its first stage when a fails: b's running stage keeps its charge (it
    # started), b's second stage never starts and its share of the hold comes back.
    comp = Parallel({"a": Stage("fails"), "b": Sequential([Stage("waits"), Stage("c4")])})
    with pytest.raises(Boom):
        await lab.executor().run(comp, 0)
    assert lab.cancelled == ["waits"]
    assert "c4" not in lab.ran
    assert await lab.usage() == (2, 0)  # fails (1) + waits (1); c4's 4 returned, nothing held


# -- Branch -----------------------------------------------------------------------------------


async def test_branch_charges_the_predicate_and_the_chosen_arm_only(lab: Lab) -> None:
    await lab.set_limit("calls", 3)  # the worst case (1 + 4) would not fit
    assert await lab.executor().run(Branch(Stage("true"), Stage("c2"), Stage("c4")), 0) == 0
    assert lab.ran == ["true", "c2"]
    assert await lab.usage() == (3, 0)


async def test_branch_inside_a_hold_draws_its_worst_case(lab: Lab) -> None:
    comp = Parallel({"a": Branch(Stage("true"), Stage("waits"), Stage("c4")), "b": Stage("c0")})
    during, _ = await run_blocked(lab, comp)
    assert during == (0, 5)  # predicate + the dearer arm
    assert await lab.usage() == (2, 0)


# -- Fanout, Merge, Let -----------------------------------------------------------------------


async def test_fanout_holds_source_and_targets_at_once(lab: Lab) -> None:
    await lab.set_limit("calls", 6)
    with pytest.raises(BudgetExceeded):
        await lab.executor().run(Fanout(Stage("c1"), [Stage("c3"), Stage("c3")]), 0)
    assert lab.ran == []  # not even the source ran
    during, out = await run_blocked(lab, Fanout(Stage("c1"), [Stage("waits"), Stage("c4")]))
    assert (during, out) == ((0, 6), [0, 0])
    assert await lab.usage() == (6, 0)


async def test_merge_holds_sources_and_target_at_once(lab: Lab) -> None:
    await lab.set_limit("calls", 4)
    with pytest.raises(BudgetExceeded):
        await lab.executor().run(Merge([Stage("c1"), Stage("c1")], Stage("c3")), 0)
    assert lab.ran == []
    assert await lab.executor().run(Merge([Stage("c1"), Stage("c1")], Stage("c2")), 0) == [0, 0]
    assert await lab.usage() == (4, 0)


async def test_merge_target_never_runs_after_a_failed_source(lab: Lab) -> None:
    with pytest.raises(Boom):
        await lab.executor().run(Merge([Stage("fails"), Stage("waits")], Stage("c4")), 0)
    assert "c4" not in lab.ran
    assert await lab.usage() == (2, 0)


async def test_let_holds_bindings_and_body_at_once(lab: Lab) -> None:
    await lab.set_limit("calls", 5)
    comp = Let({"a": Stage("c2"), "b": Stage("c2")}, Stage("c2"))
    with pytest.raises(BudgetExceeded):
        await lab.executor().run(comp, {})
    assert lab.ran == []
    during, out = await run_blocked(lab, Let({"a": Stage("waits")}, Stage("c3")), {"z": 1})
    assert during == (0, 4)
    assert out == {"z": 1, "a": {"z": 1}}
    assert await lab.usage() == (4, 0)


async def test_let_refuses_bad_input_before_charging(lab: Lab) -> None:
    with pytest.raises(TypeError):
        await lab.executor().run(Let({"a": Stage("c2")}, Stage("c2")), 5)
    assert await lab.usage() == (0, 0)


# -- Retry ------------------------------------------------------------------------------------


async def test_retry_charges_every_attempt(lab: Lab) -> None:
    attempts = 0

    async def flaky(x: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise Boom
        return x

    lab.registry.register("flaky", flaky, cost=Cost(calls=2))
    assert await lab.executor().run(Retry(Stage("flaky"), max_attempts=3), 1) == 1
    assert await lab.usage() == (6, 0)


async def test_retry_does_not_retry_a_refusal(lab: Lab) -> None:
    await lab.set_limit("calls", 2)
    with pytest.raises(BudgetExceeded):
        await lab.executor().run(Retry(Stage("fails"), max_attempts=5), 0)
    assert lab.ran == ["fails", "fails"]  # the third attempt was refused, not retried
    assert await lab.usage() == (2, 0)


async def test_retry_inside_a_hold_reserves_every_attempt(lab: Lab) -> None:
    comp = Parallel({"a": Retry(Stage("waits"), max_attempts=3), "b": Stage("c0")})
    during, _ = await run_blocked(lab, comp)
    assert during == (0, 3)
    assert await lab.usage() == (1, 0)  # only the one attempt that ran


# -- Map --------------------------------------------------------------------------------------


async def test_map_holds_every_item_at_once(lab: Lab) -> None:
    await lab.set_limit("calls", 5)
    with pytest.raises(BudgetExceeded):
        await lab.executor().run(Map(Stage("c2"), max_concurrency=1), [1, 2, 3])
    assert lab.ran == []  # even with concurrency 1, three items need 6: none started
    during, out = await run_blocked(lab, Map(Stage("waits"), max_concurrency=2), [1, 2, 3],
                                   expect=2)
    assert during == (0, 3)  # held for all three items, two running
    assert out == [1, 2, 3]
    assert await lab.usage() == (3, 0)


async def test_map_over_max_items_is_refused_before_charging(lab: Lab) -> None:
    with pytest.raises(ValueError, match="max_items"):
        await lab.executor().run(Map(Stage("c1"), 2, max_items=2), [1, 2, 3])
    assert (lab.ran, await lab.usage()) == ([], (0, 0))


async def test_map_failure_returns_the_unstarted_items(lab: Lab) -> None:
    cancelled: list[int] = []

    async def item(x: int) -> int:
        lab.ran.append(f"item{x}")
        if x == 1:
            await anyio.wait_all_tasks_blocked()
            raise Boom
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(x)
        return x  # pragma: no cover

    lab.registry.register("item", item, cost=Cost(calls=2))
    with pytest.raises(Boom):
        await lab.executor().run(Map(Stage("item"), max_concurrency=2), [1, 2, 3, 4])
    assert lab.ran == ["item1", "item2"] or lab.ran == ["item2", "item1"]
    assert cancelled == [2]
    assert await lab.usage() == (4, 0)  # held 8; the two that started keep 2 each


async def test_unbounded_map_inside_a_hold_draws_from_the_budget(lab: Lab) -> None:
    # The Parallel can only hold its bounded part (b); the Map holds its items when it starts.
    comp = Parallel({"a": Map(Stage("c2"), 2), "b": Stage("c1")})
    assert await lab.executor().run(comp, {"a": [1, 2, 3]}) == {"a": [1, 2, 3],
                                                               "b": {"a": [1, 2, 3]}}
    assert await lab.usage() == (7, 0)
    await lab.set_limit("calls", 10)
    with pytest.raises(BudgetExceeded):  # 3 left: the Map's 3 * 2 = 6 does not fit
        await lab.executor().run(comp, {"a": [1, 2, 3]})
    assert lab.ran.count("c2") == 3  # no Map item ran the second time
    # b ran on its share of the Parallel's hold if it started before the Map was refused
    assert await lab.usage() == (6 + lab.ran.count("c1"), 0)


# -- the whole run ----------------------------------------------------------------------------


async def test_hold_worst_case_refuses_an_unaffordable_run_up_front(lab: Lab) -> None:
    await lab.set_limit("calls", 4)
    comp = Sequential([Stage("c1"), Branch(Stage("true"), Stage("c1"), Stage("c4"))])
    with pytest.raises(BudgetExceeded):
        await lab.executor().run(comp, 0, hold_worst_case=True)  # worst case 1 + 1 + 4
    assert lab.ran == []
    assert await lab.executor().run(comp, 0) == 0  # the path taken costs only 3
    assert await lab.usage() == (3, 0)
    with pytest.raises(CompositionError, match="unbounded"):
        await lab.executor().run(Map(Stage("c1"), 2), [1], hold_worst_case=True)


async def test_hold_worst_case_runs_within_one_hold(lab: Lab) -> None:
    comp = Sequential([Stage("c2"), Stage("waits")])
    during, _ = await run_blocked(lab, comp, hold_worst_case=True)
    assert during == (0, 3)  # one hold of 3, c2's share already drawn inside it
    assert await lab.usage() == (3, 0)


async def test_cancelling_a_run_returns_unused_holds(lab: Lab) -> None:
    comp = Parallel({"a": Stage("waits"), "b": Sequential([Stage("waits"), Stage("c4")])})
    lab.expect = 2
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(lab.executor().run, comp, 0)
            await lab.arrived.wait()
            assert await lab.usage() == (0, 6)
            scope.cancel()
    assert scope.cancelled_caught
    assert await lab.usage() == (2, 0)  # the two running stages keep their charge


async def test_unknown_stage_is_refused_before_anything_is_charged(lab: Lab) -> None:
    with pytest.raises(CompositionError, match="'typo'"):
        await lab.executor().run(Sequential([Stage("c1"), Stage("typo")]), 0)
    assert (lab.ran, await lab.usage()) == ([], (0, 0))


# -- units and limit keys ---------------------------------------------------------------------


async def test_units_map_to_every_window_and_ancestor_all_or_nothing(lab: Lab) -> None:
    async def llm(x: int) -> int:
        return x

    lab.registry.register("llm", llm, cost=Cost(usd=Decimal("0.25"), tokens=1000))
    principals = Principals(lab.store, run_id="r1", template=[
        LimitSpec("usd", Window.run(), Decimal("0.30")), LimitSpec("tokens", Window.day(), 10**6)])
    tenant = principals.get("tenant:acme")
    agent = tenant.child("agent:x", caps=[LimitSpec("usd", Window.run(), Decimal("1")),
                                          LimitSpec("tokens", Window.run(), 10_000)])
    executor = BudgetedExecutor(lab.registry, agent)
    assert await executor.run(Stage("llm"), 1) == 1
    with pytest.raises(BudgetExceeded) as info:
        await executor.run(Stage("llm"), 1)
    assert info.value.key == "tenant:acme/usd/run:r1"
    assert (info.value.unit, info.value.spent, info.value.requested) == (
        "usd", Decimal("0.25"), Decimal("0.25"))
    assert await agent.remaining() == {"usd": Decimal("0.05"), "tokens": 9_000}


async def test_uncapped_money_is_refused_before_the_stage_runs(lab: Lab) -> None:
    async def paid(x: Any) -> Any:
        lab.ran.append("paid")
        return x

    lab.registry.register("paid", paid, cost=Cost(usd=Decimal("0.01")))
    with pytest.raises(BudgetExceeded, match="no cap is set for usd"):
        await lab.executor().run(Stage("paid"), 0)
    assert lab.ran == []
    with pytest.raises(TypeError):
        BudgetedExecutor(lab.registry, object())  # type: ignore[arg-type]


async def test_a_free_stage_cannot_report_a_cost_under_a_budget(lab: Lab) -> None:
    async def sneaky(x: int) -> Reported:
        return Reported(x, Cost(calls=1))

    lab.registry.register("free_sneaky", sneaky)
    with pytest.raises(ValueError, match="declares no cost"):
        await lab.executor().run(Stage("free_sneaky"), 0)
    assert await lab.usage() == (0, 0)
