"""Where should it run? Budget-aware routing of work to backends and models.

Candidates (``Backend``) declare their kind, node, accelerators, tools, capabilities and
prices; ``Work`` declares what it needs and its worst case. ``select_backend`` is the pure
decision (LOCAL -> LAN -> CLOUD -> SDK, SDK only when allowed, each candidate's worst case checked
against the budget charged for it); ``Router`` reads the budgets, holds, runs and falls back. See
``docs/routing.md``. Everything public is re-exported from ``outlay``.
"""

from ._alternatives import alternatives as alternatives
from ._budget import RemainingBudget as RemainingBudget
from ._budget import read_remaining as read_remaining
from ._client import RoutedClient as RoutedClient
from ._decision import RouteDecision as RouteDecision
from ._decision import RouteVerdict as RouteVerdict
from ._model import Accelerator as Accelerator
from ._model import Backend as Backend
from ._model import BackendKind as BackendKind
from ._model import Ladder as Ladder
from ._model import Work as Work
from ._router import RouteChoice as RouteChoice
from ._router import Routed as Routed
from ._router import Router as Router
from ._select import select_backend as select_backend
from ._select import worst_case_cost as worst_case_cost

__all__ = (
    "Accelerator",
    "Backend",
    "BackendKind",
    "Ladder",
    "RemainingBudget",
    "RouteChoice",
    "RouteDecision",
    "RouteVerdict",
    "Routed",
    "RoutedClient",
    "Router",
    "Work",
    "alternatives",
    "read_remaining",
    "select_backend",
    "worst_case_cost",
)
