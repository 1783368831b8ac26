"""Property: whatever the composition, the budget ends exact.

For random trees of every node type over priced, free and failing stages and a random cap:
nothing is left held afterwards, the spend is exactly the declared cost of the stages that
started (no more, no less), and it never exceeds the cap.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outlay import Budget, BudgetExceeded, LimitSpec, MemoryStore, Window
from outlay.graph import (
    Branch,
    BudgetedExecutor,
    Const,
    Cost,
    Fanout,
    Let,
    Map,
    Merge,
    Node,
    Parallel,
    Retry,
    Sequential,
    Stage,
    StageRegistry,
)

pytestmark = pytest.mark.anyio

PRICES = {"c0": 0, "c1": 1, "c2": 2, "c3": 3, "boom": 1}


class Boom(Exception):
    pass


leaves = st.sampled_from(sorted(PRICES)).map(Stage) | st.just(Const([1, 2]))


def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    some = st.lists(children, min_size=1, max_size=3)
    names = st.lists(st.sampled_from("abcd"), min_size=1, max_size=3, unique=True)
    return st.one_of(
        some.map(Sequential),
        st.tuples(names, some).map(lambda t: Parallel(dict(zip(t[0], t[1], strict=False)))),
        st.tuples(st.booleans(), children, children).map(
            lambda t: Branch(Const(t[0]), t[1], t[2])),
        st.tuples(children, some).map(lambda t: Fanout(t[0], t[1])),
        st.tuples(some, children).map(lambda t: Merge(t[0], t[1])),
        st.tuples(children, st.integers(1, 3)).map(lambda t: Retry(t[0], t[1])),
        st.tuples(names, some, children).map(
            lambda t: Sequential([Const({"k": 1}), Let(dict(zip(t[0], t[1], strict=False)),
                                                       t[2])])),
        st.tuples(children, st.integers(1, 3), st.sampled_from([None, 2])).map(
            lambda t: Sequential([Const([1, 2]), Map(t[0], t[1], t[2])])),
    )


compositions = st.recursive(leaves, extend, max_leaves=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(composition=compositions, cap=st.integers(0, 12))
async def test_spend_is_exactly_what_started_and_nothing_stays_held(
    composition: Node, cap: int
) -> None:
    registry = StageRegistry()
    started: list[int] = []

    def priced(name: str, price: int) -> None:
        async def stage(x: Any) -> Any:
            started.append(price)
            if name == "boom":
                raise Boom
            return x

        registry.register(name, stage, cost=Cost(calls=price) if price else None)

    for name, price in PRICES.items():
        priced(name, price)
    store = MemoryStore()
    budget = Budget(caps=[LimitSpec("calls", Window.run(), cap)], store=store)
    executor = BudgetedExecutor(registry, budget)
    try:
        await executor.run(composition, [1, 2])
    except* (Boom, BudgetExceeded):
        pass
    [usage] = await budget.usage()
    assert usage.held == 0
    assert await store.held_reservations() == 0
    assert usage.spent == sum(started)
    assert usage.spent <= cap
