"""The graph executor: compositions of stages as data, run under anyio, charged to a budget.

See ``docs/graph.md``. Everything public is re-exported here; the modules behind it are private.
"""

from ._cost import FREE as FREE
from ._cost import Cost as Cost
from ._cost import Reported as Reported
from ._executor import BudgetedExecutor as BudgetedExecutor
from ._executor import Executor as Executor
from ._executor import Plan as Plan
from ._nodes import Branch as Branch
from ._nodes import Const as Const
from ._nodes import Fanout as Fanout
from ._nodes import Let as Let
from ._nodes import Map as Map
from ._nodes import Merge as Merge
from ._nodes import Node as Node
from ._nodes import Parallel as Parallel
from ._nodes import Retry as Retry
from ._nodes import Sequential as Sequential
from ._nodes import Stage as Stage
from ._nodes import dump_composition as dump_composition
from ._nodes import parse_composition as parse_composition
from ._plan import Estimate as Estimate
from ._plan import build_cost_map as build_cost_map
from ._plan import estimate as estimate
from ._registry import StageRegistry as StageRegistry
from ._registry import StageSpec as StageSpec

__all__ = (
    "Branch",
    "BudgetedExecutor",
    "Const",
    "Cost",
    "Estimate",
    "Executor",
    "FREE",
    "Fanout",
    "Let",
    "Map",
    "Merge",
    "Node",
    "Parallel",
    "Plan",
    "Reported",
    "Retry",
    "Sequential",
    "Stage",
    "StageRegistry",
    "StageSpec",
    "build_cost_map",
    "dump_composition",
    "estimate",
    "parse_composition",
)
