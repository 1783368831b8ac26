"""Compositions as data, costs, the registry and the pure planner (no stage runs here)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

import outlay.graph
from outlay import CompositionError, OutlayError
from outlay.graph import (
    FREE,
    Branch,
    Const,
    Cost,
    Fanout,
    Let,
    Map,
    Merge,
    Node,
    Parallel,
    Reported,
    Retry,
    Sequential,
    Stage,
    StageRegistry,
    build_cost_map,
    dump_composition,
    estimate,
    parse_composition,
)

EVERY_NODE: list[Node] = [
    Stage("fetch"),
    Stage("fetch", {"url": "https://example.invalid", "n": [1, 2.5, None, True]}),
    Const(None),
    Const({"a": [1, "two", 3.0]}),
    Sequential([Stage("a"), Const(1)]),
    Parallel({"left": Stage("a"), "right": Const(2)}),
    Branch(Stage("p"), Stage("a"), Const(0)),
    Fanout(Stage("a"), [Stage("b"), Const(3)]),
    Merge([Stage("a"), Stage("b")], Stage("c")),
    Retry(Stage("a"), max_attempts=4, delay_ms=250, backoff=2.0),
    Let({"x": Stage("a"), "y": Const(1)}, Stage("b")),
    Map(Stage("a"), max_concurrency=3, max_items=10),
    Map(Sequential([Stage("a"), Parallel({"q": Retry(Stage("b"))})]), 2),
]


@pytest.mark.parametrize("node", EVERY_NODE, ids=lambda n: type(n).__name__)
def test_json_round_trip_of_every_node(node: Node) -> None:
    text = dump_composition(node)
    assert json.loads(text)["type"] == type(node).__name__.lower()
    assert parse_composition(text) == node
    assert parse_composition(json.loads(text)) == node
    assert parse_composition(node.model_dump(mode="json")) == node


def test_every_node_type_is_covered_by_the_round_trip() -> None:
    assert {type(n) for n in EVERY_NODE} == set(outlay.graph._nodes.NODE_TYPES)


def test_keyword_and_positional_construction_agree() -> None:
    assert Retry(Stage("a"), 2, 10) == Retry(stage=Stage(id="a"), max_attempts=2, delay_ms=10)
    assert Map(Const(1), 3) == Map(node=Const(1), max_concurrency=3)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"type": "loop", "body": {"type": "const"}}, "'loop'"),
        ({"stages": []}, "type"),
        ({"type": "stage"}, "id"),
        ({"type": "stage", "id": ""}, "id"),
        ({"type": "stage", "id": "a", "cost": 3}, "cost"),
        ({"type": "sequential", "stages": []}, "stages"),
        ({"type": "parallel", "branches": {}}, "branches"),
        ({"type": "retry", "stage": {"type": "const"}, "max_attempts": 0}, "max_attempts"),
        ({"type": "retry", "stage": {"type": "const"}, "delay_ms": -1}, "delay_ms"),
        ({"type": "map", "node": {"type": "const"}, "max_concurrency": 0}, "max_concurrency"),
        ({"type": "map", "node": {"type": "const"}, "max_items": -1}, "max_items"),
        ({"type": "sequential", "stages": [{"type": "const"}, {"type": "nope"}]}, "'nope'"),
    ],
)
def test_malformed_compositions_are_refused_clearly(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(CompositionError, match="malformed composition") as info:
        parse_composition(data)
    assert needle in str(info.value)
    assert isinstance(info.value, OutlayError)
    assert isinstance(info.value, ValueError)


def test_parse_refuses_what_is_not_json_or_a_mapping() -> None:
    with pytest.raises(CompositionError):
        parse_composition("{not json")
    with pytest.raises(CompositionError, match="JSON or a mapping"):
        parse_composition([1, 2])  # type: ignore[arg-type]


def test_nodes_are_frozen() -> None:
    node = Stage("a")
    with pytest.raises(ValueError, match="frozen"):
        node.id = "b"


# -- Cost ---------------------------------------------------------------------------------


def test_cost_is_exact_and_multi_unit() -> None:
    cost = Cost(usd=Decimal("0.02"), tokens=1500)
    assert cost["usd"] == Decimal("0.02")
    assert dict(cost * 3) == {"usd": Decimal("0.06"), "tokens": 4500}
    assert cost + Cost(calls=1) == Cost({"usd": Decimal("0.02"), "tokens": 1500, "calls": 1})
    assert Cost(usd=Decimal("0.1")) * 3 == Cost(usd=Decimal("0.3"))  # no float drift
    assert Cost(a=1, b=5).join(Cost(a=3, c=1)) == Cost(a=3, b=5, c=1)
    assert Cost(a=0) == FREE
    assert not FREE
    assert cost * 0 == FREE
    assert hash(Cost(a=1)) == hash(Cost({"a": 1}))
    assert Cost(a=2).fits_in({"a": 2})
    assert not Cost(a=2).fits_in({"b": 9})


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"usd": 0.02}, TypeError),
        ({"calls": True}, TypeError),
        ({"calls": -1}, ValueError),
        ({"usd": Decimal("NaN")}, ValueError),
    ],
)
def test_cost_refuses_bad_amounts(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Cost(**kwargs)


def test_cost_refuses_a_unit_given_twice_and_bad_units() -> None:
    with pytest.raises(ValueError, match="twice"):
        Cost({"a": 1}, a=2)
    with pytest.raises(TypeError):
        Cost({"": 1})
    with pytest.raises(TypeError):
        Cost(a=1) * 1.5  # type: ignore[operator]


def test_reported_needs_a_cost() -> None:
    with pytest.raises(TypeError):
        Reported(1, {"usd": 1})  # type: ignore[arg-type]


# -- registry --------------------------------------------------------------------------------


async def _one(x: Any) -> Any:
    return x


async def _two(x: Any, config: Any) -> Any:
    return x


def test_registry_records_specs() -> None:
    registry = StageRegistry()
    spec = registry.register("one", _one, cost=Cost(calls=1), description="d")
    assert (spec.is_async, spec.takes_config, spec.cost) == (True, False, Cost(calls=1))
    assert registry.register("two", _two).takes_config
    assert not registry.register("sync", lambda x: x).is_async
    assert "one" in registry
    assert list(registry) == ["one", "two", "sync"]
    assert len(registry) == 3


def test_registry_refuses_bad_registrations() -> None:
    registry = StageRegistry()
    registry.register("one", _one)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("one", _one)
    with pytest.raises(TypeError):
        registry.register("x", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        registry.register("x", _one, cost={"usd": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="first argument"):
        registry.register("x", lambda: None)
    with pytest.raises(CompositionError, match="unknown stage id 'nope'"):
        registry.spec("nope")


# -- estimate / build_cost_map ---------------------------------------------------------------


@pytest.fixture
def priced() -> StageRegistry:
    registry = StageRegistry()
    registry.register("free", _one)
    registry.register("cheap", _one, cost=Cost(usd=Decimal("0.01"), tokens=100))
    registry.register("dear", _one, cost=Cost(usd=Decimal("0.50"), calls=1))
    return registry


def test_estimate_rules(priced: StageRegistry) -> None:
    cheap = Cost(usd=Decimal("0.01"), tokens=100)
    dear = Cost(usd=Decimal("0.50"), calls=1)
    assert estimate(Stage("free"), priced).cost == FREE
    assert estimate(Const(1), priced).cost == FREE
    assert estimate(Sequential([Stage("cheap"), Stage("dear")]), priced).cost == cheap + dear
    assert estimate(Parallel({"a": Stage("cheap"), "b": Stage("cheap")}), priced).cost == cheap * 2
    # predicate plus, per unit, the dearer arm
    branch = Branch(Stage("cheap"), Stage("dear"), Sequential([Stage("cheap")] * 3))
    assert estimate(branch, priced).cost == cheap + Cost(usd=Decimal("0.50"), calls=1,
                                                        tokens=300)
    assert estimate(Retry(Stage("dear"), max_attempts=4), priced).cost == dear * 4
    assert estimate(Fanout(Stage("cheap"), [Stage("dear")] * 2), priced).cost == cheap + dear * 2
    assert estimate(Merge([Stage("cheap")] * 2, Stage("dear")), priced).cost == cheap * 2 + dear
    assert estimate(Let({"a": Stage("dear")}, Stage("cheap")), priced).cost == dear + cheap
    assert estimate(Map(Stage("cheap"), 2, max_items=7), priced).cost == cheap * 7


def test_map_without_max_items_is_reported_unbounded(priced: StageRegistry) -> None:
    result = estimate(Sequential([Stage("dear"), Map(Stage("cheap"), 4)]), priced)
    assert not result.bounded
    assert result.unbounded == ("root.stages[1]",)
    assert result.cost == Cost(usd=Decimal("0.50"), calls=1)  # the bounded part
    assert estimate(Map(Stage("free"), 4), priced).bounded  # free items cost nothing


def test_build_cost_map_leaves_free_stages_out(priced: StageRegistry) -> None:
    comp = Sequential([Stage("free"), Parallel({"a": Stage("cheap"), "b": Stage("dear")})])
    assert build_cost_map(comp, priced) == {"cheap": Cost(usd=Decimal("0.01"), tokens=100),
                                            "dear": Cost(usd=Decimal("0.50"), calls=1)}


def test_planning_refuses_unknown_stage_ids_with_a_path(priced: StageRegistry) -> None:
    comp = Sequential([Stage("cheap"), Parallel({"x": Stage("typo")})])
    for plan in (estimate, build_cost_map):
        with pytest.raises(CompositionError, match="unknown stage id 'typo'") as info:
            plan(comp, priced)
        assert info.value.path == "root.stages[1].branches['x']"


def test_planning_refuses_non_nodes(priced: StageRegistry) -> None:
    with pytest.raises(CompositionError, match="not a composition node"):
        estimate({"type": "stage", "id": "cheap"}, priced)  # type: ignore[arg-type]
    with pytest.raises(CompositionError, match="not a composition node"):
        build_cost_map("cheap", priced)  # type: ignore[arg-type]


def test_graph_exports_are_sorted_and_importable() -> None:
    assert outlay.graph.__all__ == tuple(sorted(outlay.graph.__all__))
    public = {name for name in vars(outlay.graph) if not name.startswith("_")}
    assert public == set(outlay.graph.__all__)
    assert "CompositionError" in outlay.__all__
