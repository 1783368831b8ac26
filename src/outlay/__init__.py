"""outlay: keep LLM agents inside their budgets.

Everything public is re-exported here; the modules behind it are private.
"""

from ._budget import AtomicBudget as AtomicBudget
from ._budget import BudgetStatistics as BudgetStatistics
from ._exceptions import BudgetExceeded as BudgetExceeded
from ._exceptions import ConfigurationError as ConfigurationError
from ._exceptions import OutlayError as OutlayError
from ._exceptions import ReservationError as ReservationError
from ._exceptions import StoreError as StoreError
from ._exceptions import StoreUnavailable as StoreUnavailable
from ._exceptions import UnknownLimit as UnknownLimit
from ._exceptions import UnknownModelPrice as UnknownModelPrice
from ._ledger import LedgerEntry as LedgerEntry
from ._ledger import LedgerStatistics as LedgerStatistics
from ._ledger import UsageLedger as UsageLedger
from ._money import AdmissionDecision as AdmissionDecision
from ._money import BudgetCap as BudgetCap
from ._money import CostRates as CostRates
from ._money import WindowState as WindowState
from ._money import admits as admits
from ._money import estimate_cost as estimate_cost
from ._pricing import PriceTable as PriceTable
from ._pricing import TokenPrices as TokenPrices
from ._pricing import token_cost as token_cost
from ._principals import LimitKey as LimitKey
from ._principals import LimitSpec as LimitSpec
from ._principals import PrincipalBudget as PrincipalBudget
from ._principals import PrincipalReservation as PrincipalReservation
from ._principals import PrincipalReserveContext as PrincipalReserveContext
from ._principals import Principals as Principals
from ._principals import money_limits as money_limits
from ._principals import parse_limit_key as parse_limit_key
from ._protocols import BudgetGuard as BudgetGuard
from ._protocols import TokenBudget as TokenBudget
from ._reservation import Budget as Budget
from ._reservation import Reservation as Reservation
from ._reservation import ReserveContext as ReserveContext
from ._tokens import AtomicTokenBudget as AtomicTokenBudget
from ._tokens import TokenReservation as TokenReservation
from ._validation import Amount as Amount
from ._windows import Period as Period
from ._windows import Window as Window
from .stores import LimitUsage as LimitUsage
from .stores import MemoryStore as MemoryStore
from .stores import Store as Store
from .stores import store_from_url as store_from_url

__all__ = (
    "AdmissionDecision",
    "Amount",
    "AtomicBudget",
    "AtomicTokenBudget",
    "Budget",
    "BudgetCap",
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetStatistics",
    "ConfigurationError",
    "CostRates",
    "LedgerEntry",
    "LedgerStatistics",
    "LimitKey",
    "LimitSpec",
    "LimitUsage",
    "MemoryStore",
    "OutlayError",
    "Period",
    "PriceTable",
    "PrincipalBudget",
    "PrincipalReservation",
    "PrincipalReserveContext",
    "Principals",
    "Reservation",
    "ReservationError",
    "ReserveContext",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TokenBudget",
    "TokenPrices",
    "TokenReservation",
    "UnknownLimit",
    "UnknownModelPrice",
    "UsageLedger",
    "Window",
    "WindowState",
    "admits",
    "estimate_cost",
    "money_limits",
    "parse_limit_key",
    "store_from_url",
    "token_cost",
)
