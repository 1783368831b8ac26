"""Budgeted LLM clients (optional extras).

``outlay.clients.openai.BudgetedAsyncOpenAI`` (extra ``outlay[openai]``) and
``outlay.clients.anthropic.BudgetedAsyncAnthropic`` (extra ``outlay[anthropic]``) wrap the
providers' async SDK clients. This package itself imports neither SDK; it holds what both share.
"""

from .._llm_call import Charge as Charge
from ._core import MEDIA_TOKENS as MEDIA_TOKENS
from ._core import MESSAGE_OVERHEAD as MESSAGE_OVERHEAD
from ._core import REQUEST_OVERHEAD as REQUEST_OVERHEAD
from ._core import BudgetedStream as BudgetedStream
from ._core import BudgetedStreamManager as BudgetedStreamManager
from ._core import InputEstimator as InputEstimator
from ._core import Tally as Tally
from ._core import estimate_prompt_tokens as estimate_prompt_tokens
from ._core import estimate_tokens as estimate_tokens

__all__ = (
    "BudgetedStream",
    "BudgetedStreamManager",
    "Charge",
    "InputEstimator",
    "MEDIA_TOKENS",
    "MESSAGE_OVERHEAD",
    "REQUEST_OVERHEAD",
    "Tally",
    "estimate_prompt_tokens",
    "estimate_tokens",
)
