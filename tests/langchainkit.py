"""A scripted LangChain chat model for the integration tests (no network)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field

Reply = Callable[[list[BaseMessage], dict[str, Any]], Awaitable[AIMessage]]


def reply(text: str = "", *, calls: Sequence[tuple[str, dict[str, Any]]] = (),
          input_tokens: int = 10, output_tokens: int = 5, cache_read: int = 0,
          cache_creation: int = 0, usage: bool = True) -> AIMessage:
    """An AI message as a provider integration builds it, with usage metadata."""
    tool_calls = [{"name": name, "args": args, "id": f"call-{i}-{name}", "type": "tool_call"}
                  for i, (name, args) in enumerate(calls)]
    metadata: Any = None
    if usage:
        metadata = {"input_tokens": input_tokens, "output_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                    "input_token_details": {"cache_read": cache_read,
                                            "cache_creation": cache_creation}}
    return AIMessage(content=text, tool_calls=tool_calls, usage_metadata=metadata)


def answered(messages: Sequence[BaseMessage]) -> bool:
    """True once the conversation holds a tool result (the model's second turn)."""
    return any(isinstance(m, ToolMessage) for m in messages)


class ScriptedChatModel(BaseChatModel):
    """Answers each call with ``respond(messages, kwargs)``; records the kwargs of every call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    respond: Any
    model_name: str = "scripted-model"
    max_tokens: int | None = None
    calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=[getattr(t, "name", t) for t in tools], **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        raise NotImplementedError("async only")

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        self.calls.append(kwargs)
        message = await self.respond(messages, kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])


def script(*replies: AIMessage) -> Reply:
    """Answer calls with ``replies`` in order."""
    queue = list(replies)

    async def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        return queue.pop(0)

    return respond
