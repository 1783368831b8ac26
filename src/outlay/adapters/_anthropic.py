"""Anthropic Messages: ``tool_use`` blocks in, ``tool_result`` blocks out, usage.

Every function accepts the ``anthropic`` SDK's objects or the same data as plain dicts; the SDK
is never imported. Results come back as plain dicts (the SDK's request parameters are
TypedDicts).
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
    invocation_from_object,
    output_text,
    tool_specs,
)

_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                 "cache_read_input_tokens")


def anthropic_tool_calls(
    source: Any,
    *,
    principal: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[ToolInvocation]:
    """The ``tool_use`` content blocks of a ``Message`` (or of its ``content`` list) as
    invocations, in order. ``input`` is already decoded; an ``input`` that is not an object
    gives an invocation with ``argument_error`` set. Other blocks (text, thinking,
    ``server_tool_use``, which Anthropic runs itself) are left out. Raises ``ValueError`` for a
    ``tool_use`` block without an id or name.
    """
    blocks = get(source, "content") if not isinstance(source, list | tuple) else source
    return [invocation_from_object(get(b, "id"), get(b, "name"), get(b, "input"),
                                   principal=principal, metadata=metadata)
            for b in blocks or () if get(b, "type") == "tool_use"]


def anthropic_tools(source: ToolSource) -> list[dict[str, Any]]:
    """Messages ``tools=``: one ``{"name", "description", "input_schema"}`` per tool of a
    ``ToolDispatcher`` (or per ``ToolSpec``), the schema the dispatcher validates against."""
    return [{"name": spec.name, "description": spec.description,
             "input_schema": dict(spec.parameters)} for spec in tool_specs(source)]


def anthropic_tool_results(results: Iterable[ToolInvocationResult]) -> dict[str, Any]:
    """One user message holding a ``tool_result`` block per result, in order:
    ``{"role": "user", "content": [{"type": "tool_result", "tool_use_id": ..., "content": ...,
    "is_error": ...}]}``. Anthropic wants every result of a turn in one message, before any
    other content. ``is_error`` is the result's ``is_error``; non-``str`` outputs go as JSON.
    """
    return {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": r.invocation.call_id,
         "content": output_text(r.output), "is_error": r.is_error} for r in results]}


def anthropic_usage(source: Any) -> TokenUsage | None:
    """Usage of a ``Message``, a ``message_start`` event or a ``Usage``; ``None`` if it has none.

    ``input_tokens`` of the result is Anthropic's ``input_tokens + cache_creation_input_tokens +
    cache_read_input_tokens`` (Anthropic counts those apart); ``output_tokens_details.
    thinking_tokens`` -> ``reasoning_tokens``. For a stream use ``AnthropicStreamUsage``:
    ``message_delta`` usage is cumulative.
    """
    message = get(source, "message")
    if message is not None:
        source = message
    usage = source if get(source, "output_tokens") is not None else get(source, "usage")
    if usage is None:
        return None
    return _usage({name: count(usage, name) for name in _USAGE_FIELDS},
                  count(get(usage, "output_tokens_details"), "thinking_tokens"))


class AnthropicStreamUsage:
    """Usage of a streamed Anthropic message, fed event by event.

    ``message_start`` carries the initial usage; each ``message_delta`` carries *cumulative*
    counts, so a field it reports replaces the one seen before (adding would double-count).
    Fields a delta leaves out (or sends as null) keep their last value. Other events are
    ignored. ``usage`` is the total so far.
    """

    __slots__ = ("_counts", "_thinking")

    def __init__(self) -> None:
        self._counts = dict.fromkeys(_USAGE_FIELDS, 0)
        self._thinking = 0

    def update(self, event: Any) -> TokenUsage:
        """Take in one stream event (SDK object or dict); return the usage so far."""
        kind = get(event, "type")
        if kind == "message_start":
            usage = get(get(event, "message"), "usage")
        elif kind == "message_delta":
            usage = get(event, "usage")
        else:
            return self.usage
        for name in _USAGE_FIELDS:
            if get(usage, name) is not None:
                self._counts[name] = count(usage, name)
        details = get(usage, "output_tokens_details")
        if get(details, "thinking_tokens") is not None:
            self._thinking = count(details, "thinking_tokens")
        return self.usage

    @property
    def usage(self) -> TokenUsage:
        """The usage so far, normalised as ``anthropic_usage`` does."""
        return _usage(self._counts, self._thinking)


def _usage(counts: Mapping[str, int], thinking: int) -> TokenUsage:
    created = counts["cache_creation_input_tokens"]
    read = counts["cache_read_input_tokens"]
    return TokenUsage(
        input_tokens=counts["input_tokens"] + created + read,
        output_tokens=counts["output_tokens"],
        cached_input_tokens=read,
        cache_creation_input_tokens=created,
        reasoning_tokens=thinking,
    )
