"""The core: amounts and validation, the exceptions, the reservation primitive, the budget
object, windows, limits, money policy and the in-process counters.

Consumers (stores, hooks, graph, clients, integrations, adapters, cli) import from here or from
``outlay``, never from a module of this package. The order below is the import order: amounts
and exceptions first, because the stores this package builds on import them from here.
"""

# isort: off
from . import _log as log  # noqa: F401 - the logging helpers, as a namespace
from ._amounts import Amount as Amount
from ._amounts import check_amount as check_amount
from ._amounts import check_amounts as check_amounts
from ._amounts import check_count as check_count
from ._amounts import check_unit as check_unit
from ._amounts import check_lease as check_lease
from ._amounts import EXACT as EXACT
from ._amounts import MAX_AMOUNT as MAX_AMOUNT
from ._amounts import MAX_LEASE as MAX_LEASE
from ._amounts import MAX_PLACES as MAX_PLACES
from ._amounts import minus as minus
from ._amounts import named as named
from ._amounts import plus as plus
from ._exceptions import ApprovalNotPending as ApprovalNotPending
from ._exceptions import ArtifactMismatch as ArtifactMismatch
from ._exceptions import BudgetExceeded as BudgetExceeded
from ._exceptions import CompositionError as CompositionError
from ._exceptions import ConfigurationError as ConfigurationError
from ._exceptions import DispatchTerminated as DispatchTerminated
from ._exceptions import InfeasibleWork as InfeasibleWork
from ._exceptions import InvalidToolArguments as InvalidToolArguments
from ._exceptions import JobRejected as JobRejected
from ._exceptions import MissingSecret as MissingSecret
from ._exceptions import NoRoute as NoRoute
from ._exceptions import OutlayError as OutlayError
from ._exceptions import RemoteJobError as RemoteJobError
from ._exceptions import ReservationError as ReservationError
from ._exceptions import SecretLeak as SecretLeak
from ._exceptions import StoreError as StoreError
from ._exceptions import StoreUnavailable as StoreUnavailable
from ._exceptions import ToolCallError as ToolCallError
from ._exceptions import UnknownJob as UnknownJob
from ._exceptions import UnknownLimit as UnknownLimit
from ._exceptions import UnknownModelPrice as UnknownModelPrice
from ._exceptions import UnknownTool as UnknownTool
from ._money import AdmissionDecision as AdmissionDecision
from ._money import BudgetCap as BudgetCap
from ._money import CostRates as CostRates
from ._money import WindowState as WindowState
from ._money import accelerator_refusal as accelerator_refusal
from ._money import admits as admits
from ._money import check_money as check_money
from ._money import check_quantity as check_quantity
from ._money import estimate_cost as estimate_cost
from ._observe import annotate as annotate
from ._observe import current_labels as current_labels
from ._observe import labels as labels
from ._observe import operation as operation
from ._observe import set_tracer as set_tracer
from ._windows import Period as Period
from ._windows import Window as Window
from ._limits import LimitKey as LimitKey
from ._limits import LimitSpec as LimitSpec
from ._limits import money_limits as money_limits
from ._limits import parse_limit_key as parse_limit_key
from ._atomic import AtomicBudget as AtomicBudget
from ._atomic import BudgetStatistics as BudgetStatistics
from ._reservation import DEFAULT_LEASE as DEFAULT_LEASE
from ._reservation import KeyedBudget as KeyedBudget
from ._reservation import Reservation as Reservation
from ._reservation import ReserveContext as ReserveContext
from ._reservation import refused as refused
from ._tokens import AtomicTokenBudget as AtomicTokenBudget
from ._tokens import TokenReservation as TokenReservation
from ._budget import Budget as Budget
from ._budget import Principals as Principals
# isort: on
