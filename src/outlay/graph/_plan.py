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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, assert_never

from .._core import CompositionError
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

    Keyed by node identity, so use one instance per composition while it is alive. Paths are
    not built on this hot walk: ``refuse`` finds where a problem is once one was found.
    """

    def __init__(self, registry: StageRegistry) -> None:
        self.registry = registry
        self.unbounded_nodes: list[Map] = []
        self.units: set[str] = set()
        self._memo: dict[int, Cost] = {}

    def __call__(self, node: Node) -> Cost:
        key = id(node)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._compute(node)
        return found

    def _sum(self, nodes: Iterable[Node]) -> Cost:
        total = FREE
        for child in nodes:
            total = total + self(child)
        return total

    def _compute(self, node: Node) -> Cost:
        kind = type(node)
        if kind is Stage:
            assert isinstance(node, Stage)
            cost = self.registry.spec(node.id).cost
            self.units.update(cost)
            return cost
        if kind is Const:
            return FREE
        if kind is Sequential:
            assert isinstance(node, Sequential)
            return self._sum(node.stages)
        if kind is Parallel:
            assert isinstance(node, Parallel)
            return self._sum(node.branches.values())
        if kind is Branch:
            assert isinstance(node, Branch)
            return self(node.predicate) + self(node.if_true).join(self(node.if_false))
        if kind is Fanout:
            assert isinstance(node, Fanout)
            return self(node.source) + self._sum(node.targets)
        if kind is Merge:
            assert isinstance(node, Merge)
            return self._sum(node.sources) + self(node.target)
        if kind is Retry:
            assert isinstance(node, Retry)
            return self(node.stage) * node.max_attempts
        if kind is Let:
            assert isinstance(node, Let)
            return self._sum(node.bindings.values()) + self(node.body)
        if kind is Map:
            assert isinstance(node, Map)
            item = self(node.node)
            if node.max_items is None:
                if item:
                    self.unbounded_nodes.append(node)
                return FREE
            return item * node.max_items
        check_node(node, "?")
        raise AssertionError(f"unhandled node type {kind.__name__}")  # pragma: no cover

    def unbounded(self, root: Node) -> tuple[str, ...]:
        """Paths of the unbounded ``Map`` nodes found so far under ``root``."""
        if not self.unbounded_nodes:
            return ()
        wanted = {id(node) for node in self.unbounded_nodes}
        return tuple(path for node, path in walk(root) if id(node) in wanted)


def walk(root: Node) -> Iterator[tuple[Node, str]]:
    """Every node under ``root`` (depth first, in order) with its path; checks node types."""
    stack: list[tuple[Any, str]] = [(root, "root")]
    while stack:
        node, path = stack.pop()
        check_node(node, path)
        yield node, path
        stack.extend(reversed(children(node, path)))


def refuse(root: Node, registry: StageRegistry) -> None:
    """Raise the ``CompositionError`` for the first problem under ``root``, with its path."""
    for node, path in walk(root):
        if isinstance(node, Stage):
            registry.spec(node.id, path=path)


def estimate(composition: Node, registry: StageRegistry) -> Estimate:
    """The static worst-case cost of ``composition``; see the module docstring for the rules.

    Raises ``CompositionError`` for a stage id the registry does not know or a non-node.
    """
    worst = WorstCase(registry)
    try:
        cost = worst(composition)
    except CompositionError:
        refuse(composition, registry)
        raise
    return Estimate(cost, worst.unbounded(composition))


def build_cost_map(composition: Node, registry: StageRegistry) -> dict[str, Cost]:
    """Stage id -> declared cost for every stage in ``composition`` that costs something.

    Raises ``CompositionError`` for an unknown stage id or a non-node.
    """
    costs: dict[str, Cost] = {}
    for node, path in walk(composition):
        if isinstance(node, Stage):
            cost = registry.spec(node.id, path=path).cost
            if cost:
                costs[node.id] = cost
    return dict(sorted(costs.items()))
