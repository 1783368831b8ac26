"""Provider adapters: OpenAI Chat Completions, OpenAI Responses and Anthropic tool calls and
usage to and from outlay's types. They accept SDK objects or plain dicts and never import an
SDK."""

from ._anthropic import AnthropicStreamUsage as AnthropicStreamUsage
from ._anthropic import anthropic_tool_calls as anthropic_tool_calls
from ._anthropic import anthropic_tool_results as anthropic_tool_results
from ._anthropic import anthropic_tools as anthropic_tools
from ._anthropic import anthropic_usage as anthropic_usage
from ._common import TokenUsage as TokenUsage
from ._common import ToolSource as ToolSource
from ._common import record_token_usage as record_token_usage
from ._openai import openai_chat_tool_calls as openai_chat_tool_calls
from ._openai import openai_chat_tool_messages as openai_chat_tool_messages
from ._openai import openai_chat_tools as openai_chat_tools
from ._openai import openai_chat_usage as openai_chat_usage
from ._openai import openai_responses_tool_calls as openai_responses_tool_calls
from ._openai import openai_responses_tool_outputs as openai_responses_tool_outputs
from ._openai import openai_responses_tools as openai_responses_tools
from ._openai import openai_responses_usage as openai_responses_usage

__all__ = (
    "AnthropicStreamUsage",
    "TokenUsage",
    "ToolSource",
    "anthropic_tool_calls",
    "anthropic_tool_results",
    "anthropic_tools",
    "anthropic_usage",
    "openai_chat_tool_calls",
    "openai_chat_tool_messages",
    "openai_chat_tools",
    "openai_chat_usage",
    "openai_responses_tool_calls",
    "openai_responses_tool_outputs",
    "openai_responses_tools",
    "openai_responses_usage",
    "record_token_usage",
)
