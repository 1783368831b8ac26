"""OpenAI Chat Completions and Responses: tool calls in, tool results out, usage.

Every function accepts the ``openai`` SDK's objects or the same data as plain dicts (parsed
JSON); the SDK is never imported. Results come back as plain dicts, which is what the SDK's
request parameters (TypedDicts) are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..hooks import ToolInvocation, ToolInvocationResult
from ._common import (
    TokenUsage,
    ToolSource,
    count,
    get,
    invocation_from_json,
    output_text,
    tool_specs,
)


def openai_chat_tools(source: ToolSource) -> list[dict[str, Any]]:
    """Chat Completions ``tools=``: one ``{"type": "function", "function": {"name",
    "description", "parameters"}}`` per tool of a ``ToolDispatcher`` (or per ``ToolSpec``),
    the parameters being the JSON schema the dispatcher validates calls against."""
    return [{"type": "function", "function": {"name": spec.name, "description": spec.description,
                                              "parameters": dict(spec.parameters)}}
            for spec in tool_specs(source)]


def openai_responses_tools(source: ToolSource) -> list[dict[str, Any]]:
    """Responses ``tools=``: one ``{"type": "function", "name", "description", "parameters",
    "strict": False}`` per tool, from the same schema as ``openai_chat_tools``. (Strict mode
    needs every property required, which optional parameters are not.)"""
    return [{"type": "function", "name": spec.name, "description": spec.description,
             "parameters": dict(spec.parameters), "strict": False}
            for spec in tool_specs(source)]


def openai_chat_tool_calls(
    source: Any,
    *,
    principal: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[ToolInvocation]:
    """The ``tool_calls`` of a Chat Completions message as invocations, in order.

    ``source`` is a ``ChatCompletion`` (its first choice is read), a ``Choice`` or a
    ``ChatCompletionMessage`` (SDK object or dict). ``function.arguments`` is JSON text: text
    that is not a JSON object gives an invocation with ``argument_error`` set, which
    ``ToolDispatcher`` refuses (``InvalidToolArguments`` or an error result) before any hook
    runs. A message without tool calls gives ``[]``. Raises ``ValueError`` for a tool call that
    is not a function call (custom tools are not supported) or has no id or name.
    """
    choices = get(source, "choices")
    if choices is not None:
        source = choices[0] if choices else None
    message = get(source, "message")
    if message is not None:
        source = message
    invocations = []
    for call in get(source, "tool_calls") or ():
        kind = get(call, "type") or "function"
        if kind != "function":
            raise ValueError(f"tool call {get(call, 'id')!r} has type {kind!r}; only function "
                             "tool calls are supported")
        function = get(call, "function")
        invocations.append(invocation_from_json(
            get(call, "id"), get(function, "name"), get(function, "arguments"),
            principal=principal, metadata=metadata))
    return invocations


def openai_chat_tool_messages(results: Iterable[ToolInvocationResult]) -> list[dict[str, Any]]:
    """One ``{"role": "tool", "tool_call_id": ..., "content": ...}`` message per result.

    Append them, in order, after the assistant message that asked for the calls; the API needs
    an answer for every ``tool_call_id``. Non-``str`` outputs are sent as JSON.
    """
    return [{"role": "tool", "tool_call_id": r.invocation.call_id,
             "content": output_text(r.output)} for r in results]


def openai_chat_usage(source: Any) -> TokenUsage | None:
    """Usage of a ``ChatCompletion``, a stream chunk or a ``CompletionUsage``; ``None`` if it has
    none (a stream chunk before the last, or ``stream_options.include_usage`` off).

    ``prompt_tokens`` -> ``input_tokens`` (cached included), ``prompt_tokens_details.
    cached_tokens`` / ``cache_write_tokens``, ``completion_tokens`` -> ``output_tokens``,
    ``completion_tokens_details.reasoning_tokens``.
    """
    usage = source if get(source, "prompt_tokens") is not None else get(source, "usage")
    if usage is None:
        return None
    return _token_usage(usage, "prompt_tokens", "completion_tokens")


def openai_responses_tool_calls(
    source: Any,
    *,
    principal: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[ToolInvocation]:
    """The ``function_call`` output items of a Responses API answer as invocations, in order.

    ``source`` is a ``Response`` or its ``output`` list (SDK objects or dicts). The invocation's
    ``call_id`` is the item's ``call_id`` (what ``function_call_output`` refers to), not its
    ``id``. Other items (messages, reasoning, built-in tools) are left out. Malformed JSON
    arguments are handled as in ``openai_chat_tool_calls``. Raises ``ValueError`` for a
    ``custom_tool_call`` item (not supported) or one without a call id or name.
    """
    items = get(source, "output") if not isinstance(source, list | tuple) else source
    invocations = []
    for item in items or ():
        kind = get(item, "type")
        if kind == "custom_tool_call":
            raise ValueError(f"output item {get(item, 'call_id')!r} is a custom tool call; only "
                             "function calls are supported")
        if kind != "function_call":
            continue
        invocations.append(invocation_from_json(
            get(item, "call_id"), get(item, "name"), get(item, "arguments"),
            principal=principal, metadata=metadata))
    return invocations


def openai_responses_tool_outputs(
    results: Iterable[ToolInvocationResult],
) -> list[dict[str, Any]]:
    """One ``{"type": "function_call_output", "call_id": ..., "output": ...}`` input item per
    result, for the next ``responses.create(input=...)``. Non-``str`` outputs are sent as JSON.
    """
    return [{"type": "function_call_output", "call_id": r.invocation.call_id,
             "output": output_text(r.output)} for r in results]


def openai_responses_usage(source: Any) -> TokenUsage | None:
    """Usage of a ``Response``, a ``response.completed`` stream event or a ``ResponseUsage``;
    ``None`` if it has none.

    ``input_tokens`` (cached included), ``input_tokens_details.cached_tokens`` /
    ``cache_write_tokens``, ``output_tokens``, ``output_tokens_details.reasoning_tokens``.
    """
    response = get(source, "response")
    if response is not None:
        source = response
    usage = source if get(source, "input_tokens") is not None else get(source, "usage")
    if usage is None:
        return None
    return _token_usage(usage, "input_tokens", "output_tokens")


def _token_usage(usage: Any, inputs: str, outputs: str) -> TokenUsage:
    """``TokenUsage`` from an OpenAI usage object whose input and output counts are named
    ``inputs`` and ``outputs``, with their ``<name>_details`` (cached, cache-write, reasoning)."""
    details_in = get(usage, f"{inputs}_details")
    details_out = get(usage, f"{outputs}_details")
    return TokenUsage(
        input_tokens=count(usage, inputs),
        output_tokens=count(usage, outputs),
        cached_input_tokens=count(details_in, "cached_tokens"),
        cache_creation_input_tokens=count(details_in, "cache_write_tokens"),
        reasoning_tokens=count(details_out, "reasoning_tokens"),
    )
