"""Budgeted LLM clients (optional extras).

``outlay.clients.openai.BudgetedAsyncOpenAI`` (extra ``outlay[openai]``) and
``outlay.clients.anthropic.BudgetedAsyncAnthropic`` (extra ``outlay[anthropic]``) wrap the
providers' async SDK clients. This package itself imports neither SDK; it holds what both share.
"""

from .._llm_call import Charge as Charge
from ._core import BudgetedStream as BudgetedStream
from ._core import BudgetedStreamManager as BudgetedStreamManager
from ._core import Tally as Tally
from ._estimate import MEDIA_TOKENS as MEDIA_TOKENS
from ._estimate import MESSAGE_OVERHEAD as MESSAGE_OVERHEAD
from ._estimate import REQUEST_OVERHEAD as REQUEST_OVERHEAD
from ._estimate import AsyncInputCounter as AsyncInputCounter
from ._estimate import InputEstimator as InputEstimator
from ._estimate import TextCounter as TextCounter
from ._estimate import Tokenizer as Tokenizer
from ._estimate import anthropic_input_tokens as anthropic_input_tokens
from ._estimate import estimate_prompt_tokens as estimate_prompt_tokens
from ._estimate import estimate_tokens as estimate_tokens
from ._estimate import openai_input_tokens as openai_input_tokens
from ._estimate import text_tokens as text_tokens

__all__ = (
    "AsyncInputCounter",
    "BudgetedStream",
    "BudgetedStreamManager",
    "Charge",
    "InputEstimator",
    "MEDIA_TOKENS",
    "MESSAGE_OVERHEAD",
    "REQUEST_OVERHEAD",
    "Tally",
    "TextCounter",
    "Tokenizer",
    "anthropic_input_tokens",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "openai_input_tokens",
    "text_tokens",
)
