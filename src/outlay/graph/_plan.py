"""Pure planning over a composition: validation, worst-case cost, the stage cost map.

Nothing here runs a stage or touches a budget. The worst case of a node is:

- ``Stage``: its declared cost; ``Const``: nothing;
- ``Sequential``, ``Parallel``, ``Fanout``, ``Merge``, ``Let``: the sum of their children;
- ``Branch``: the predicate plus, per unit, the dearer arm;
- ``Retry``: ``max_attempts`` times its node (every attempt is charged);
- ``Map``: ``max_items`` times its node; without ``max_items`` (and with a node that costs
  something) it is unbounded, reported in ``Estimate.unbounded`` and counted as nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, assert_never

from .._exceptions import CompositionError
from ._cost import FREE, Cost
from ._nodes import (
    NODE_TYPES,
    Branch,
    Const,
    Fanout,
    Let,
    Map,
    Merge,
    Node,
    Parallel,
    Retry,
    Sequential,
    Stage,
)
from ._registry import StageRegistry


@dataclass(frozen=True, slots=True)
class Estimate:
    """The static worst case of a composition.

    ``cost`` is the most the composition can be charged, by unit, counting the ``Map`` nodes in
    ``unbounded`` (paths such as ``"root.stages[1]"``) as nothing. ``bounded`` is True when
    ``unbounded`` is empty, that is when ``cost`` is a true upper bound.
    """

    cost: Cost
    unbounded: tuple[str, ...] = ()

    @property
    def bounded(self) -> bool:
        return not self.unbounded


def check_node(node: object, path: str) -> None:
    """Refuse anything that is not a composition node (``CompositionError``)."""
    if not isinstance(node, NODE_TYPES):
        raise CompositionError(f"not a composition node: {type(node).__name__} "
                               f"(expected one of {', '.join(t.__name__ for t in NODE_TYPES)})",
                               path=path)


def children(node: Node, path: str) -> list[tuple[Node, str]]:
    """The direct children of ``node`` (already checked to be a node) with their paths."""
    if isinstance(node, Stage | Const):
        return []
    if isinstance(node, Sequential):
        return [(n, f"{path}.stages[{i}]") for i, n in enumerate(node.stages)]
    if isinstance(node, Parallel):
        return [(n, f"{path}.branches[{k!r}]") for k, n in node.branches.items()]
    if isinstance(node, Branch):
        return [(node.predicate, f"{path}.predicate"), (node.if_true, f"{path}.if_true"),
                (node.if_false, f"{path}.if_false")]
    if isinstance(node, Fanout):
        return [(node.source, f"{path}.source"),
                *((n, f"{path}.targets[{i}]") for i, n in enumerate(node.targets))]
    if isinstance(node, Merge):
        return [*((n, f"{path}.sources[{i}]") for i, n in enumerate(node.sources)),
                (node.target, f"{path}.target")]
    if isinstance(node, Retry):
        return [(node.stage, f"{path}.stage")]
    if isinstance(node, Let):
        return [*((n, f"{path}.bindings[{k!r}]") for k, n in node.bindings.items()),
                (node.body, f"{path}.body")]
    if isinstance(node, Map):
        return [(node.node, f"{path}.node")]
    assert_never(node)


class WorstCase:
    """Memoised worst-case costs of the nodes of one composition (pure; validates as it goes).

    Keyed by node identity, so use one instance per composition while it is alive.
    """

    def __init__(self, registry: StageRegistry) -> None:
        self.registry = registry
        self.unbounded: list[str] = []
        self.units: set[str] = set()
        self._memo: dict[int, Cost] = {}

    def __call__(self, node: Node, path: str = "root") -> Cost:
        key = id(node)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._compute(node, path)
        return found

    def _sum(self, nodes: list[tuple[Node, str]]) -> Cost:
        total = FREE
        for child, path in nodes:
            total = total + self(child, path)
        return total

    def _compute(self, node: Node, path: str) -> Cost:
        check_node(node, path)
        if isinstance(node, Stage):
            cost = self.registry.spec(node.id, path=path).cost
            self.units.update(cost)
            return cost
        if isinstance(node, Branch):
            return (self(node.predicate, f"{path}.predicate")
                    + self(node.if_true, f"{path}.if_true").join(
                        self(node.if_false, f"{path}.if_false")))
        if isinstance(node, Retry):
            return self(node.stage, f"{path}.stage") * node.max_attempts
        if isinstance(node, Map):
            item = self(node.node, f"{path}.node")
            if node.max_items is None:
                if item:
                    self.unbounded.append(path)
                return FREE
            return item * node.max_items
        return self._sum(children(node, path))


def estimate(composition: Node, registry: StageRegistry) -> Estimate:
    """The static worst-case cost of ``composition``; see the module docstring for the rules.

    Raises ``CompositionError`` for a stage id the registry does not know or a non-node.
    """
    worst = WorstCase(registry)
    cost = worst(composition)
    return Estimate(cost, tuple(worst.unbounded))


def build_cost_map(composition: Node, registry: StageRegistry) -> dict[str, Cost]:
    """Stage id -> declared cost for every stage in ``composition`` that costs something.

    Raises ``CompositionError`` for an unknown stage id or a non-node.
    """
    costs: dict[str, Cost] = {}
    stack: list[tuple[Any, str]] = [(composition, "root")]
    while stack:
        node, path = stack.pop()
        check_node(node, path)
        if isinstance(node, Stage):
            cost = registry.spec(node.id, path=path).cost
            if cost:
                costs[node.id] = cost
        else:
            stack.extend(reversed(children(node, path)))
    return dict(sorted(costs.items()))
