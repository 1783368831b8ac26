"""Hooks around tool dispatch: the chain, its types, and the hooks that ship with outlay."""

from ._approval import ApprovalAuditSink as ApprovalAuditSink
from ._approval import ApprovalDecision as ApprovalDecision
from ._approval import ApprovalHook as ApprovalHook
from ._approval import ApprovalQueue as ApprovalQueue
from ._approval import ApprovalRecord as ApprovalRecord
from ._approval import ApprovalRequest as ApprovalRequest
from ._approval import Approver as Approver
from ._approval import MemoryApprovalLog as MemoryApprovalLog
from ._budget import Cost as Cost
from ._budget import CostFunction as CostFunction
from ._budget import DispatchBudgetHook as DispatchBudgetHook
from ._dispatcher import BatchPolicy as BatchPolicy
from ._dispatcher import ErrorMode as ErrorMode
from ._dispatcher import ToolDispatcher as ToolDispatcher
from ._egress import EgressAuditHook as EgressAuditHook
from ._egress import Secret as Secret
from ._limits import ToolCallLimitHook as ToolCallLimitHook
from ._logging import DispatchLoggingHook as DispatchLoggingHook
from ._signature import ToolSpec as ToolSpec
from ._types import CONTINUE as CONTINUE
from ._types import Continue as Continue
from ._types import Skip as Skip
from ._types import Terminate as Terminate
from ._types import ToolDispatchAction as ToolDispatchAction
from ._types import ToolDispatchHook as ToolDispatchHook
from ._types import ToolInvocation as ToolInvocation
from ._types import ToolInvocationResult as ToolInvocationResult

__all__ = (
    "ApprovalAuditSink",
    "ApprovalDecision",
    "ApprovalHook",
    "ApprovalQueue",
    "ApprovalRecord",
    "ApprovalRequest",
    "Approver",
    "BatchPolicy",
    "CONTINUE",
    "Continue",
    "Cost",
    "CostFunction",
    "DispatchBudgetHook",
    "DispatchLoggingHook",
    "EgressAuditHook",
    "ErrorMode",
    "MemoryApprovalLog",
    "Secret",
    "Skip",
    "Terminate",
    "ToolCallLimitHook",
    "ToolDispatchAction",
    "ToolDispatchHook",
    "ToolDispatcher",
    "ToolInvocation",
    "ToolInvocationResult",
    "ToolSpec",
)
