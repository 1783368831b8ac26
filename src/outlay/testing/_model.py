"""``ScriptedModel``: an OpenAI Chat Completions-shaped model that answers from a script."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..clients import estimate_prompt_tokens, text_tokens

__all__ = ("ScriptedModel", "Step", "ToolCall")

ToolCall = tuple[str, Mapping[str, Any]]
"""``(tool name, arguments)``; the arguments are sent as JSON text, as the API does."""
Step = str | Sequence[ToolCall]
"""One answer: text, or the tool calls of one response."""


class ScriptedModel:
    """Answers ``complete(messages, max_tokens)`` with the next step of ``steps`` as a Chat
    Completions response dict (the last step repeats once the script is used up), so an agent
    loop runs offline and the outlay adapters read it like the real API's answer.

    Usage is reported as ``prompt_tokens`` = ``count_prompt(messages)`` (default: outlay's
    ``estimate_prompt_tokens``) and ``completion_tokens`` = ``count_answer(message)`` (default:
    ``text_tokens`` of the answer message as JSON), capped at ``max_tokens``. ``calls`` lists
    the message lists it was sent. ``ValueError`` for an empty script.
    """

    def __init__(self, steps: Sequence[Step], *, model: str = "scripted",
                 count_prompt: Callable[[list[dict[str, Any]]], int] | None = None,
                 count_answer: Callable[[dict[str, Any]], int] | None = None) -> None:
        if not steps:
            raise ValueError("a ScriptedModel needs at least one step")
        self.steps = list(steps)
        self.model = model
        self.count_prompt = count_prompt or (
            lambda messages: estimate_prompt_tokens([messages], len(messages)))
        self.count_answer = count_answer or (lambda message: text_tokens(json.dumps(message)))
        self.calls: list[list[dict[str, Any]]] = []

    @property
    def turn(self) -> int:
        """How many answers were given."""
        return len(self.calls)

    async def complete(self, messages: Sequence[Mapping[str, Any]],
                       max_tokens: int) -> dict[str, Any]:
        """The next answer (a ``ChatCompletion``-shaped dict)."""
        sent = [dict(m) for m in messages]
        step = self.steps[min(len(self.calls), len(self.steps) - 1)]
        self.calls.append(sent)
        if isinstance(step, str):
            message: dict[str, Any] = {"role": "assistant", "content": step}
            finish = "stop"
        else:
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{self.turn}_{i}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(dict(arguments))}}
                for i, (name, arguments) in enumerate(step)]}
            finish = "tool_calls"
        completion = min(self.count_answer(message), max_tokens)
        prompt = self.count_prompt(sent)
        return {"id": f"chatcmpl-scripted-{self.turn}", "object": "chat.completion",
                "created": 0, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}
