"""What every provider adapter shares: duck-typed field access, argument parsing, usage."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._core import TokenReservation
from .._protocols import TokenBudget
from ..hooks import ToolDispatcher, ToolInvocation, ToolSpec

ToolSource = ToolDispatcher | Iterable[ToolSpec]
"""Where tool definitions come from: a ``ToolDispatcher`` (its ``tool_specs``) or specs."""


def tool_specs(source: ToolSource) -> list[ToolSpec]:
    """The specs of ``source``; ``TypeError`` for anything that is not a ``ToolSpec``."""
    specs = list(source.tool_specs if isinstance(source, ToolDispatcher) else source)
    for spec in specs:
        if not isinstance(spec, ToolSpec):
            raise TypeError(f"expected a ToolDispatcher or ToolSpec objects, got "
                            f"{type(spec).__name__}")
    return specs


def get(obj: Any, name: str) -> Any:
    """``obj[name]`` for a mapping, ``obj.name`` for an SDK object; ``None`` when absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def count(obj: Any, name: str) -> int:
    """A token count field, ``0`` when absent or null; ``TypeError`` for anything not an int."""
    value = get(obj, name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"usage field {name!r} must be an int, got {value!r}")
    return value


def invocation_from_json(call_id: Any, name: Any, raw: Any, *, principal: str | None,
                         metadata: Mapping[str, Any] | None) -> ToolInvocation:
    """Build an invocation from JSON-text arguments (an already-decoded mapping is accepted too,
    as some OpenAI-compatible servers send one). Text that is not a JSON object yields an
    invocation with ``argument_error`` set, which the dispatcher refuses before any hook runs."""
    call_id, name = _check_ids(call_id, name)
    arguments: dict[str, Any] = {}
    problem: str | None = None
    if raw is None or raw == "":
        raw = None  # no arguments at all: a tool without parameters
    elif isinstance(raw, Mapping):  # some compatible servers send an object, not JSON text
        arguments = dict(raw)
    elif not isinstance(raw, str):
        problem = f"arguments must be a JSON string, got {type(raw).__name__}"
    else:
        try:
            parsed = json.loads(raw)
        except ValueError as exc:
            problem = f"invalid JSON ({exc})"
        else:
            if isinstance(parsed, dict):
                arguments = parsed
            else:
                problem = f"arguments must be a JSON object, got {type(parsed).__name__}"
    return ToolInvocation(call_id, name, arguments, principal, dict(metadata or {}),
                          raw if isinstance(raw, str) else None, problem)


def invocation_from_object(call_id: Any, name: Any, value: Any, *, principal: str | None,
                           metadata: Mapping[str, Any] | None) -> ToolInvocation:
    """Build an invocation from already-decoded arguments (Anthropic ``input``)."""
    call_id, name = _check_ids(call_id, name)
    if value is None:
        value = {}
    problem = None if isinstance(value, Mapping) else (
        f"arguments must be an object, got {type(value).__name__}")
    arguments = dict(value) if isinstance(value, Mapping) else {}
    return ToolInvocation(call_id, name, arguments, principal, dict(metadata or {}), None,
                          problem)


def _check_ids(call_id: Any, name: Any) -> tuple[str, str]:
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f"a tool call needs a non-empty string id, got {call_id!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"tool call {call_id} needs a non-empty tool name, got {name!r}")
    return call_id, name


def output_text(output: Any) -> str:
    """A tool's output as the text a provider expects: ``str`` as is, anything else as JSON
    (``default=str`` for values JSON cannot encode)."""
    if isinstance(output, str):
        return output
    return json.dumps(output, default=str, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token usage of one model response, normalised across providers.

    ``input_tokens`` counts every input token the model processed, cached ones included (OpenAI
    ``prompt_tokens`` / ``input_tokens``; Anthropic ``input_tokens + cache_creation_input_tokens
    + cache_read_input_tokens``). ``cached_input_tokens`` and ``cache_creation_input_tokens`` are
    the parts of it read from and written to the prompt cache. ``output_tokens`` counts every
    generated token, reasoning included; ``reasoning_tokens`` is that part.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """``input_tokens + output_tokens``."""
        return self.input_tokens + self.output_tokens


async def record_token_usage(budget: TokenBudget, reservation: TokenReservation,
                             usage: TokenUsage) -> None:
    """Settle ``reservation`` on ``budget`` at ``usage``: ``record_usage(reservation,
    usage.input_tokens, usage.output_tokens)``. Raises what ``record_usage`` raises."""
    await budget.record_usage(reservation, usage.input_tokens, usage.output_tokens)
