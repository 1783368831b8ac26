"""outlay: keep LLM agents inside their budgets.

Everything public is re-exported here; the modules behind it are private.
"""

from ._budget import AtomicBudget as AtomicBudget
from ._budget import BudgetStatistics as BudgetStatistics
from ._exceptions import BudgetExceeded as BudgetExceeded
from ._exceptions import CompositionError as CompositionError
from ._exceptions import ConfigurationError as ConfigurationError
from ._exceptions import OutlayError as OutlayError
from ._exceptions import ReservationError as ReservationError
from ._exceptions import StoreError as StoreError
from ._exceptions import StoreUnavailable as StoreUnavailable
from ._exceptions import UnknownLimit as UnknownLimit
from ._protocols import BudgetGuard as BudgetGuard
from ._protocols import TokenBudget as TokenBudget
from ._reservation import Budget as Budget
from ._reservation import Reservation as Reservation
from ._reservation import ReserveContext as ReserveContext
from ._tokens import AtomicTokenBudget as AtomicTokenBudget
from ._tokens import TokenReservation as TokenReservation
from ._validation import Amount as Amount
from .stores import LimitUsage as LimitUsage
from .stores import MemoryStore as MemoryStore
from .stores import Store as Store
from .stores import store_from_url as store_from_url

__all__ = (
    "Amount",
    "AtomicBudget",
    "AtomicTokenBudget",
    "Budget",
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetStatistics",
    "CompositionError",
    "ConfigurationError",
    "LimitUsage",
    "MemoryStore",
    "OutlayError",
    "ReservationError",
    "Reservation",
    "ReserveContext",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TokenBudget",
    "TokenReservation",
    "UnknownLimit",
    "store_from_url",
)
