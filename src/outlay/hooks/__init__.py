"""Hooks around tool dispatch: the chain, its types, and the hooks that ship with outlay."""

from ._budget import Cost as Cost
from ._budget import CostFunction as CostFunction
from ._budget import DispatchBudgetHook as DispatchBudgetHook
from ._dispatcher import BatchPolicy as BatchPolicy
from ._dispatcher import ErrorMode as ErrorMode
from ._dispatcher import ToolDispatcher as ToolDispatcher
from ._limits import ToolCallLimitHook as ToolCallLimitHook
from ._logging import DispatchLoggingHook as DispatchLoggingHook
from ._types import CONTINUE as CONTINUE
from ._types import Continue as Continue
from ._types import Skip as Skip
from ._types import Terminate as Terminate
from ._types import ToolDispatchAction as ToolDispatchAction
from ._types import ToolDispatchHook as ToolDispatchHook
from ._types import ToolInvocation as ToolInvocation
from ._types import ToolInvocationResult as ToolInvocationResult

__all__ = (
    "BatchPolicy",
    "CONTINUE",
    "Continue",
    "Cost",
    "CostFunction",
    "DispatchBudgetHook",
    "DispatchLoggingHook",
    "ErrorMode",
    "Skip",
    "Terminate",
    "ToolCallLimitHook",
    "ToolDispatchAction",
    "ToolDispatchHook",
    "ToolDispatcher",
    "ToolInvocation",
    "ToolInvocationResult",
)
