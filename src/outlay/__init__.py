"""outlay: keep LLM agents inside their budgets.

Everything public is re-exported here; the modules behind it are private.
"""

from ._core._amounts import Amount as Amount
from ._core._atomic import AtomicBudget as AtomicBudget
from ._core._atomic import BudgetStatistics as BudgetStatistics
from ._core._budget import Budget as Budget
from ._core._budget import Principals as Principals
from ._core._exceptions import ApprovalNotPending as ApprovalNotPending
from ._core._exceptions import ArtifactMismatch as ArtifactMismatch
from ._core._exceptions import BudgetExceeded as BudgetExceeded
from ._core._exceptions import CompositionError as CompositionError
from ._core._exceptions import ConfigurationError as ConfigurationError
from ._core._exceptions import DispatchTerminated as DispatchTerminated
from ._core._exceptions import InfeasibleWork as InfeasibleWork
from ._core._exceptions import InvalidToolArguments as InvalidToolArguments
from ._core._exceptions import JobRejected as JobRejected
from ._core._exceptions import MissingSecret as MissingSecret
from ._core._exceptions import NoRoute as NoRoute
from ._core._exceptions import OutlayError as OutlayError
from ._core._exceptions import RemoteJobError as RemoteJobError
from ._core._exceptions import ReservationError as ReservationError
from ._core._exceptions import SecretLeak as SecretLeak
from ._core._exceptions import StoreError as StoreError
from ._core._exceptions import StoreUnavailable as StoreUnavailable
from ._core._exceptions import ToolCallError as ToolCallError
from ._core._exceptions import UnknownJob as UnknownJob
from ._core._exceptions import UnknownLimit as UnknownLimit
from ._core._exceptions import UnknownModelPrice as UnknownModelPrice
from ._core._exceptions import UnknownTool as UnknownTool
from ._core._limits import LimitKey as LimitKey
from ._core._limits import LimitSpec as LimitSpec
from ._core._limits import money_limits as money_limits
from ._core._limits import parse_limit_key as parse_limit_key
from ._core._money import AdmissionDecision as AdmissionDecision
from ._core._money import BudgetCap as BudgetCap
from ._core._money import CostRates as CostRates
from ._core._money import WindowState as WindowState
from ._core._money import accelerator_refusal as accelerator_refusal
from ._core._money import admits as admits
from ._core._money import estimate_cost as estimate_cost
from ._core._reservation import KeyedBudget as KeyedBudget
from ._core._reservation import Reservation as Reservation
from ._core._reservation import ReserveContext as ReserveContext
from ._core._tokens import AtomicTokenBudget as AtomicTokenBudget
from ._core._tokens import TokenReservation as TokenReservation
from ._core._windows import Period as Period
from ._core._windows import Window as Window
from ._ledger import HeldPeak as HeldPeak
from ._ledger import LedgerEntry as LedgerEntry
from ._ledger import LedgerStatistics as LedgerStatistics
from ._ledger import UsageLedger as UsageLedger
from ._pricing import PriceTable as PriceTable
from ._pricing import TokenPrices as TokenPrices
from ._pricing import token_cost as token_cost
from ._protocols import BudgetGuard as BudgetGuard
from ._protocols import TokenBudget as TokenBudget
from .adapters import AnthropicStreamUsage as AnthropicStreamUsage
from .adapters import TokenUsage as TokenUsage
from .adapters import anthropic_tool_calls as anthropic_tool_calls
from .adapters import anthropic_tool_results as anthropic_tool_results
from .adapters import anthropic_tools as anthropic_tools
from .adapters import anthropic_usage as anthropic_usage
from .adapters import openai_chat_tool_calls as openai_chat_tool_calls
from .adapters import openai_chat_tool_messages as openai_chat_tool_messages
from .adapters import openai_chat_tools as openai_chat_tools
from .adapters import openai_chat_usage as openai_chat_usage
from .adapters import openai_responses_tool_calls as openai_responses_tool_calls
from .adapters import openai_responses_tool_outputs as openai_responses_tool_outputs
from .adapters import openai_responses_tools as openai_responses_tools
from .adapters import openai_responses_usage as openai_responses_usage
from .adapters import record_token_usage as record_token_usage
from .hooks import ApprovalAuditSink as ApprovalAuditSink
from .hooks import ApprovalDecision as ApprovalDecision
from .hooks import ApprovalHook as ApprovalHook
from .hooks import ApprovalQueue as ApprovalQueue
from .hooks import ApprovalRecord as ApprovalRecord
from .hooks import ApprovalRequest as ApprovalRequest
from .hooks import Approver as Approver
from .hooks import Continue as Continue
from .hooks import DispatchBudgetHook as DispatchBudgetHook
from .hooks import DispatchLoggingHook as DispatchLoggingHook
from .hooks import EgressAuditHook as EgressAuditHook
from .hooks import MemoryApprovalLog as MemoryApprovalLog
from .hooks import Secret as Secret
from .hooks import Skip as Skip
from .hooks import Terminate as Terminate
from .hooks import ToolCallLimitHook as ToolCallLimitHook
from .hooks import ToolDispatchAction as ToolDispatchAction
from .hooks import ToolDispatcher as ToolDispatcher
from .hooks import ToolDispatchHook as ToolDispatchHook
from .hooks import ToolInvocation as ToolInvocation
from .hooks import ToolInvocationResult as ToolInvocationResult
from .hooks import ToolSpec as ToolSpec
from .jobs import Artifact as Artifact
from .jobs import Claim as Claim
from .jobs import Hold as Hold
from .jobs import Job as Job
from .jobs import JobEndpoint as JobEndpoint
from .jobs import JobOutcome as JobOutcome
from .jobs import JobQueue as JobQueue
from .jobs import JobState as JobState
from .jobs import JobStore as JobStore
from .jobs import LocalTransport as LocalTransport
from .jobs import RecoveryReport as RecoveryReport
from .jobs import TcpTransport as TcpTransport
from .jobs import Transport as Transport
from .jobs import Worker as Worker
from .jobs import job_cost as job_cost
from .jobs import verify_artifacts as verify_artifacts
from .report import RecordingStore as RecordingStore
from .report import SpendReport as SpendReport
from .report import labels as labels
from .routing import Accelerator as Accelerator
from .routing import Backend as Backend
from .routing import BackendKind as BackendKind
from .routing import Ladder as Ladder
from .routing import RemainingBudget as RemainingBudget
from .routing import RouteChoice as RouteChoice
from .routing import Routed as Routed
from .routing import RoutedClient as RoutedClient
from .routing import RouteDecision as RouteDecision
from .routing import Router as Router
from .routing import RouteVerdict as RouteVerdict
from .routing import Work as Work
from .routing import alternatives as alternatives
from .routing import read_remaining as read_remaining
from .routing import select_backend as select_backend
from .routing import worst_case_cost as worst_case_cost
from .stores import FailOpenStore as FailOpenStore
from .stores import HoldUsage as HoldUsage
from .stores import LimitUsage as LimitUsage
from .stores import MemoryStore as MemoryStore
from .stores import SpendEvent as SpendEvent
from .stores import Store as Store
from .stores import store_from_url as store_from_url

__all__ = (
    "Accelerator",
    "AdmissionDecision",
    "Amount",
    "AnthropicStreamUsage",
    "ApprovalAuditSink",
    "ApprovalDecision",
    "ApprovalHook",
    "ApprovalNotPending",
    "ApprovalQueue",
    "ApprovalRecord",
    "ApprovalRequest",
    "Approver",
    "Artifact",
    "ArtifactMismatch",
    "AtomicBudget",
    "AtomicTokenBudget",
    "Backend",
    "BackendKind",
    "Budget",
    "BudgetCap",
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetStatistics",
    "Claim",
    "CompositionError",
    "ConfigurationError",
    "Continue",
    "CostRates",
    "DispatchBudgetHook",
    "DispatchLoggingHook",
    "DispatchTerminated",
    "EgressAuditHook",
    "FailOpenStore",
    "HeldPeak",
    "Hold",
    "HoldUsage",
    "InfeasibleWork",
    "InvalidToolArguments",
    "Job",
    "JobEndpoint",
    "JobOutcome",
    "JobQueue",
    "JobRejected",
    "JobState",
    "JobStore",
    "KeyedBudget",
    "Ladder",
    "LedgerEntry",
    "LedgerStatistics",
    "LimitKey",
    "LimitSpec",
    "LimitUsage",
    "LocalTransport",
    "MemoryApprovalLog",
    "MemoryStore",
    "MissingSecret",
    "NoRoute",
    "OutlayError",
    "Period",
    "PriceTable",
    "Principals",
    "RecordingStore",
    "RecoveryReport",
    "RemainingBudget",
    "RemoteJobError",
    "Reservation",
    "ReservationError",
    "ReserveContext",
    "RouteChoice",
    "RouteDecision",
    "RouteVerdict",
    "Routed",
    "RoutedClient",
    "Router",
    "Secret",
    "SecretLeak",
    "Skip",
    "SpendEvent",
    "SpendReport",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TcpTransport",
    "Terminate",
    "TokenBudget",
    "TokenPrices",
    "TokenReservation",
    "TokenUsage",
    "ToolCallError",
    "ToolCallLimitHook",
    "ToolDispatchAction",
    "ToolDispatchHook",
    "ToolDispatcher",
    "ToolInvocation",
    "ToolInvocationResult",
    "ToolSpec",
    "Transport",
    "UnknownJob",
    "UnknownLimit",
    "UnknownModelPrice",
    "UnknownTool",
    "UsageLedger",
    "Window",
    "WindowState",
    "Work",
    "Worker",
    "accelerator_refusal",
    "admits",
    "alternatives",
    "anthropic_tool_calls",
    "anthropic_tool_results",
    "anthropic_tools",
    "anthropic_usage",
    "estimate_cost",
    "job_cost",
    "labels",
    "money_limits",
    "openai_chat_tool_calls",
    "openai_chat_tool_messages",
    "openai_chat_tools",
    "openai_chat_usage",
    "openai_responses_tool_calls",
    "openai_responses_tool_outputs",
    "openai_responses_tools",
    "openai_responses_usage",
    "parse_limit_key",
    "read_remaining",
    "record_token_usage",
    "select_backend",
    "store_from_url",
    "token_cost",
    "verify_artifacts",
    "worst_case_cost",
)
