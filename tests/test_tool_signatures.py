"""Tool arguments are validated and coerced against the tool's signature before any hook runs,
and the schemas the providers are sent come from the same signature."""

from __future__ import annotations

import json
from typing import Annotated, Any

import anthropic
import openai
import pydantic
import pytest
from anthropic.types import ToolParam
from openai.types.chat import ChatCompletionToolParam
from openai.types.responses import FunctionToolParam

from outlay import (
    AtomicBudget,
    DispatchBudgetHook,
    InvalidToolArguments,
    ToolDispatcher,
    ToolInvocation,
    ToolSpec,
    anthropic_tool_calls,
    anthropic_tools,
    openai_chat_tool_calls,
    openai_chat_tools,
    openai_responses_tools,
)
from outlay.testing import FakeProvider, RecordingHook, Script

pytestmark = pytest.mark.anyio


class Point(pydantic.BaseModel):
    x: int
    y: int


def log_hours(hours: int, project: Annotated[str, pydantic.Field(description="code")],
              note: str = "none") -> dict[str, Any]:
    """Log hours worked on a project.

    Longer text the model does not need."""
    return {"hours": hours, "project": project, "note": note}


async def plot(at: Point, *, label: str | None = None) -> str:
    """Plot a point."""
    return f"{type(at).__name__}({at.x}, {at.y}) {label}"


def anything(first: Any, **rest: Any) -> dict[str, Any]:
    return {"first": first, **rest}


def call(arguments: dict[str, Any], tool: str = "log_hours", call_id: str = "c1"
         ) -> ToolInvocation:
    return ToolInvocation(call_id, tool, arguments)


async def test_a_string_for_an_int_reaches_hooks_and_tool_as_the_int() -> None:
    """The bug: "8" reached the tool as a string, and a cost function multiplied it to 88."""
    ledger: list[Any] = []
    budget = AtomicBudget(1_000)
    costs: list[Any] = []

    def cost(invocation: ToolInvocation) -> int:
        costs.append(invocation.arguments["hours"] * 11)
        return int(costs[-1])

    dispatcher = ToolDispatcher([log_hours], [RecordingHook("r", ledger),
                                              DispatchBudgetHook(budget, cost)])
    result = await dispatcher.dispatch(call({"hours": "8", "project": "ox"}))
    assert result.output == {"hours": 8, "project": "ox", "note": "none"}
    assert result.invocation.arguments == {"hours": 8, "project": "ox"}
    assert costs == [88]  # not "88888888888"
    assert [m for _, m, _, _ in ledger] == ["before", "after"]


async def test_arguments_that_do_not_validate_are_refused_before_any_hook() -> None:
    ledger: list[Any] = []
    budget = AtomicBudget(10)
    dispatcher = ToolDispatcher([log_hours],
                                [RecordingHook("r", ledger), DispatchBudgetHook(budget, 1)])
    with pytest.raises(InvalidToolArguments) as info:
        await dispatcher.dispatch(call({"hours": "eight", "project": "ox", "extra": 1}))
    message = str(info.value)
    assert "bad arguments for tool 'log_hours' (call c1)" in message
    assert "hours: Input should be a valid integer" in message
    assert "unexpected extra" in message
    assert "eight" not in message  # values are not echoed (they may be secrets)
    assert ledger == []
    assert budget.statistics().reserved == 0


async def test_errors_result_tells_the_model_what_to_fix() -> None:
    dispatcher = ToolDispatcher([log_hours], errors="result")
    result = await dispatcher.dispatch(call({"project": "ox", "hours": [1]}))
    assert result.is_error
    assert result.skipped
    assert result.output == ("error: bad arguments for tool 'log_hours' (call c1): "
                             "hours: Input should be a valid integer")


async def test_the_tool_keeps_its_own_defaults_and_gets_models_built() -> None:
    dispatcher = ToolDispatcher([plot, anything])
    result = await dispatcher.dispatch(call({"at": {"x": "1", "y": 2}}, "plot"))
    assert result.output == "Point(1, 2) None"
    free = await dispatcher.dispatch(call({"first": [1], "other": "kept"}, "anything"))
    assert free.output == {"first": [1], "other": "kept"}  # **kwargs lets names through


async def test_a_batch_refuses_only_the_call_that_does_not_validate() -> None:
    dispatcher = ToolDispatcher([log_hours], errors="result")
    results = await dispatcher.dispatch_batch([
        call({"hours": "2", "project": "a"}, call_id="c1"),
        call({"hours": "x", "project": "b"}, call_id="c2"),
    ])
    assert results[0].output["hours"] == 2
    assert results[1].is_error
    assert "call c2" in results[1].output


class Handle:
    pass


def use(handle: Handle) -> None:
    del handle


def test_a_parameter_without_json_form_is_refused_when_the_schema_is_asked_for() -> None:
    dispatcher = ToolDispatcher([use])  # programs may still pass a Handle
    with pytest.raises(TypeError, match="tool 'use' has a parameter without a JSON schema"):
        _ = dispatcher.tool_specs


def test_specs_come_from_the_signatures() -> None:
    (hours, point) = ToolDispatcher([log_hours, plot]).tool_specs
    assert hours == ToolSpec("log_hours", "Log hours worked on a project.", {
        "type": "object", "additionalProperties": False, "required": ["hours", "project"],
        "properties": {"hours": {"type": "integer"},
                       "project": {"type": "string", "description": "code"},
                       "note": {"type": "string", "default": "none"}}})
    assert point.parameters["required"] == ["at"]
    assert point.parameters["properties"]["at"] == {"$ref": "#/$defs/Point"}


def test_provider_tool_definitions_validate_as_the_sdk_types() -> None:
    dispatcher = ToolDispatcher([log_hours, plot, anything])
    for tools, param_type in ((openai_chat_tools(dispatcher), ChatCompletionToolParam),
                              (openai_responses_tools(dispatcher), FunctionToolParam),
                              (anthropic_tools(dispatcher), ToolParam)):
        adapter = pydantic.TypeAdapter(list[param_type])  # type: ignore[valid-type]
        assert adapter.validate_python(tools) == tools
        json.dumps(tools)  # what the SDK sends
    assert openai_chat_tools(dispatcher)[0]["function"]["parameters"] == (
        dispatcher.tool_specs[0].parameters)
    assert anthropic_tools(dispatcher.tool_specs[:1])[0]["input_schema"] == (
        dispatcher.tool_specs[0].parameters)
    with pytest.raises(TypeError, match="ToolSpec"):
        openai_chat_tools([log_hours])  # type: ignore[list-item]


async def test_a_real_sdk_round_trip_sends_the_schema_and_coerces_the_answer() -> None:
    """OpenAI: the tools go out in the request; the model's "8" comes back as 8."""
    dispatcher = ToolDispatcher([log_hours])
    with FakeProvider() as fake:
        fake.script(Script(tool_calls=(("log_hours", '{"hours": "8", "project": "ox"}'),)))
        client = openai.AsyncOpenAI(api_key="test", base_url=fake.openai_url, max_retries=0)
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "log 8h on ox"}],
            tools=openai_chat_tools(dispatcher))  # type: ignore[arg-type]
        await client.close()
    assert fake.requests[0].body["tools"] == openai_chat_tools(dispatcher)
    (result,) = await dispatcher.dispatch_batch(openai_chat_tool_calls(completion))
    assert result.output["hours"] == 8


async def test_anthropic_tool_use_input_is_coerced_too() -> None:
    dispatcher = ToolDispatcher([log_hours])
    with FakeProvider() as fake:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=fake.anthropic_url,
                                          max_retries=0)
        await client.messages.create(model="claude-x", max_tokens=10,
                                     messages=[{"role": "user", "content": "hi"}],
                                     tools=anthropic_tools(dispatcher))  # type: ignore[arg-type]
        await client.close()
    assert fake.requests[0].body["tools"] == anthropic_tools(dispatcher)
    message = {"content": [{"type": "tool_use", "id": "tu1", "name": "log_hours",
                            "input": {"hours": "3", "project": "ox"}}]}
    (result,) = await dispatcher.dispatch_batch(anthropic_tool_calls(message))
    assert result.output["hours"] == 3
