"""Provider adapters against the real SDK types, and the same data as plain dicts."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pydantic
import pytest
from anthropic.types import (
    Message,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    ToolResultBlockParam,
)
from openai.types.chat import ChatCompletion, ChatCompletionMessage, ChatCompletionToolMessageParam
from openai.types.completion_usage import CompletionUsage
from openai.types.responses import Response, ResponseCompletedEvent
from openai.types.responses.response_input_param import FunctionCallOutput

from outlay import (
    AnthropicStreamUsage,
    AtomicBudget,
    AtomicTokenBudget,
    DispatchBudgetHook,
    InvalidToolArguments,
    TokenUsage,
    ToolDispatcher,
    ToolInvocation,
    ToolInvocationResult,
    anthropic_tool_calls,
    anthropic_tool_results,
    anthropic_usage,
    openai_chat_tool_calls,
    openai_chat_tool_messages,
    openai_chat_usage,
    openai_responses_tool_calls,
    openai_responses_tool_outputs,
    openai_responses_usage,
    record_token_usage,
)

CHAT: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-test",
    "choices": [{
        "index": 0,
        "finish_reason": "tool_calls",
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "web_search", "arguments": '{"query": "outlay"}'}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "web_search", "arguments": '{"query": '}},
                {"id": "call_3", "type": "function",
                 "function": {"name": "clock", "arguments": ""}},
            ],
        },
    }],
    "usage": {
        "prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 25},
    },
}

RESPONSE: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "created_at": 0,
    "model": "gpt-test",
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "web_search",
         "arguments": '{"query": "outlay"}'},
        {"type": "function_call", "id": "fc_2", "call_id": "call_b", "name": "web_search",
         "arguments": "[1, 2]"},
    ],
    "usage": {
        "input_tokens": 300, "output_tokens": 90, "total_tokens": 390,
        "input_tokens_details": {"cached_tokens": 200, "cache_write_tokens": 50},
        "output_tokens_details": {"reasoning_tokens": 60},
    },
}

ANTHROPIC: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-test",
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "web_search", "input": {"query": "outlay"}},
        {"type": "tool_use", "id": "toolu_2", "name": "clock", "input": {}},
    ],
    "usage": {"input_tokens": 50, "output_tokens": 30, "cache_creation_input_tokens": 20,
              "cache_read_input_tokens": 1000,
              "output_tokens_details": {"thinking_tokens": 12}},
}


def check_param(param_type: Any, value: dict[str, Any]) -> None:
    """``value`` validates as the SDK's request TypedDict and has no keys it does not know."""
    pydantic.TypeAdapter(param_type).validate_python(value)
    assert set(value) <= param_type.__required_keys__ | param_type.__optional_keys__


def result(invocation: ToolInvocation, output: Any, *, is_error: bool = False
           ) -> ToolInvocationResult:
    return ToolInvocationResult(invocation, output, is_error=is_error)


@pytest.mark.parametrize("source", [ChatCompletion.model_validate(CHAT), CHAT,
                                    ChatCompletion.model_validate(CHAT).choices[0],
                                    CHAT["choices"][0]["message"]])
def test_openai_chat_tool_calls(source: Any) -> None:
    calls = openai_chat_tool_calls(source, principal="u1", metadata={"run": 7})
    assert [(c.call_id, c.tool_name) for c in calls] == [
        ("call_1", "web_search"), ("call_2", "web_search"), ("call_3", "clock")]
    assert calls[0].arguments == {"query": "outlay"}
    assert calls[0].raw_arguments == '{"query": "outlay"}'
    assert calls[0].argument_error is None
    assert (calls[0].principal, dict(calls[0].metadata)) == ("u1", {"run": 7})
    assert calls[1].argument_error is not None
    assert calls[1].argument_error.startswith("invalid JSON")
    assert calls[2].arguments == {}  # "" means no arguments
    assert calls[2].argument_error is None


def test_openai_chat_arguments_sent_as_an_object_are_accepted() -> None:
    message = {"tool_calls": [{"id": "c", "type": "function",
                               "function": {"name": "f", "arguments": {"a": 1}}}]}
    [invocation] = openai_chat_tool_calls(message)
    assert invocation.arguments == {"a": 1}
    assert invocation.argument_error is None
    [bad] = openai_chat_tool_calls({"tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": 7}}]})
    assert bad.argument_error == "arguments must be a JSON string, got int"


def test_openai_chat_without_tool_calls_and_unsupported_calls() -> None:
    message = ChatCompletionMessage(role="assistant", content="hello")
    assert openai_chat_tool_calls(message) == []
    custom = {"tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "x", "input": ""}}]}
    with pytest.raises(ValueError, match="only function tool calls"):
        openai_chat_tool_calls(custom)
    nameless = {"tool_calls": [{"id": "c", "function": {"name": "", "arguments": "{}"}}]}
    with pytest.raises(ValueError, match="non-empty tool name"):
        openai_chat_tool_calls(nameless)


def test_openai_chat_tool_messages_have_the_sdk_shape() -> None:
    calls = openai_chat_tool_calls(CHAT)
    messages = openai_chat_tool_messages([result(calls[0], {"hits": 3}), result(calls[2], "12:00")])
    assert messages == [
        {"role": "tool", "tool_call_id": "call_1", "content": '{"hits": 3}'},
        {"role": "tool", "tool_call_id": "call_3", "content": "12:00"},
    ]
    for message in messages:
        check_param(ChatCompletionToolMessageParam, message)


@pytest.mark.parametrize("source", [ChatCompletion.model_validate(CHAT), CHAT,
                                    CompletionUsage.model_validate(CHAT["usage"])])
def test_openai_chat_usage(source: Any) -> None:
    assert openai_chat_usage(source) == TokenUsage(
        input_tokens=120, output_tokens=40, cached_input_tokens=100, reasoning_tokens=25)


def test_openai_chat_usage_absent_or_bad() -> None:
    assert openai_chat_usage({"choices": []}) is None
    assert openai_chat_usage({"usage": {"prompt_tokens": 1, "completion_tokens": None}}
                             ) == TokenUsage(input_tokens=1)
    with pytest.raises(TypeError, match="must be an int"):
        openai_chat_usage({"prompt_tokens": 1.5})


@pytest.mark.parametrize("source", [Response.model_validate(RESPONSE), RESPONSE,
                                    RESPONSE["output"], Response.model_validate(RESPONSE).output])
def test_openai_responses_tool_calls(source: Any) -> None:
    calls = openai_responses_tool_calls(source)
    assert [(c.call_id, c.tool_name) for c in calls] == [("call_a", "web_search"),
                                                         ("call_b", "web_search")]
    assert calls[0].arguments == {"query": "outlay"}
    assert calls[1].argument_error == "arguments must be a JSON object, got list"


def test_openai_responses_tool_outputs_have_the_sdk_shape() -> None:
    calls = openai_responses_tool_calls(RESPONSE)
    outputs = openai_responses_tool_outputs([result(calls[0], ["a", "b"])])
    assert outputs == [{"type": "function_call_output", "call_id": "call_a",
                        "output": '["a", "b"]'}]
    check_param(FunctionCallOutput, outputs[0])
    with pytest.raises(ValueError, match="custom tool call"):
        openai_responses_tool_calls([{"type": "custom_tool_call", "call_id": "x"}])


def test_openai_responses_usage() -> None:
    expected = TokenUsage(input_tokens=300, output_tokens=90, cached_input_tokens=200,
                          cache_creation_input_tokens=50, reasoning_tokens=60)
    response = Response.model_validate(RESPONSE)
    completed = ResponseCompletedEvent(type="response.completed", response=response,
                                       sequence_number=9)
    for source in (response, RESPONSE, response.usage, completed):
        assert openai_responses_usage(source) == expected
    assert expected.total_tokens == 390
    assert openai_responses_usage({"output": []}) is None


@pytest.mark.parametrize("source", [Message.model_validate(ANTHROPIC), ANTHROPIC,
                                    ANTHROPIC["content"],
                                    Message.model_validate(ANTHROPIC).content])
def test_anthropic_tool_calls(source: Any) -> None:
    calls = anthropic_tool_calls(source)
    assert [(c.call_id, c.tool_name, dict(c.arguments)) for c in calls] == [
        ("toolu_1", "web_search", {"query": "outlay"}), ("toolu_2", "clock", {})]
    bad = anthropic_tool_calls([{"type": "tool_use", "id": "t", "name": "x", "input": "oops"}])
    assert bad[0].argument_error == "arguments must be an object, got str"


def test_anthropic_tool_results_have_the_sdk_shape() -> None:
    calls = anthropic_tool_calls(ANTHROPIC)
    message = anthropic_tool_results([result(calls[0], {"hits": 3}),
                                      result(calls[1], "not run: budget", is_error=True)])
    assert message == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"hits": 3}',
         "is_error": False},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "not run: budget",
         "is_error": True},
    ]}
    for block in message["content"]:
        check_param(ToolResultBlockParam, block)


def test_anthropic_usage_counts_cache_tokens_as_input() -> None:
    expected = TokenUsage(input_tokens=1070, output_tokens=30, cached_input_tokens=1000,
                          cache_creation_input_tokens=20, reasoning_tokens=12)
    message = Message.model_validate(ANTHROPIC)
    for source in (message, ANTHROPIC, message.usage):
        assert anthropic_usage(source) == expected
    assert anthropic_usage({"content": []}) is None


def test_anthropic_stream_usage_replaces_cumulative_counts() -> None:
    start = dict(ANTHROPIC, content=[], usage={
        "input_tokens": 50, "output_tokens": 1, "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 1000})
    events: list[Any] = [
        RawMessageStartEvent(type="message_start", message=Message.model_validate(start)),
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "text", "text": ""}},
        RawMessageDeltaEvent.model_validate({
            "type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None},
            "usage": {"output_tokens": 15}}),
        {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 30,
                                                          "input_tokens": None}},
        {"type": "message_stop"},
    ]
    stream = AnthropicStreamUsage()
    seen = [stream.update(e).output_tokens for e in events]
    # 1, then 15, then 30: each delta replaces (adding would give 46).
    assert seen == [1, 1, 15, 30, 30]
    assert stream.usage == TokenUsage(input_tokens=1070, output_tokens=30,
                                      cached_input_tokens=1000, cache_creation_input_tokens=20)


@pytest.mark.anyio
async def test_usage_feeds_a_token_budget() -> None:
    budget = AtomicTokenBudget(10_000)
    reservation = await budget.try_reserve_tokens(2_000)
    assert reservation is not None
    usage = anthropic_usage(ANTHROPIC)
    assert usage is not None
    await record_token_usage(budget, reservation, usage)
    assert await budget.tokens_consumed() == 1100
    assert budget.held == 0


@pytest.mark.anyio
async def test_an_openai_turn_end_to_end_through_the_dispatcher() -> None:
    budget = AtomicBudget(10)
    seen: list[str] = []

    async def web_search(query: str) -> dict[str, Any]:
        seen.append(query)
        return {"hits": 1}

    def clock() -> str:
        return "12:00"

    dispatcher = ToolDispatcher([web_search, clock], [DispatchBudgetHook(budget, 1,
                                                                         mode="in_flight")],
                                errors="result")
    results = await dispatcher.dispatch_batch(
        openai_chat_tool_calls(ChatCompletion.model_validate(CHAT)))
    messages = openai_chat_tool_messages(results)
    assert [m["tool_call_id"] for m in messages] == ["call_1", "call_2", "call_3"]
    assert json.loads(messages[0]["content"]) == {"hits": 1}
    assert messages[1]["content"].startswith("error: malformed arguments for tool 'web_search'")
    assert messages[2]["content"] == "12:00"
    assert seen == ["outlay"]
    assert budget.available == 10
    assert budget.statistics().reserved == 2  # the malformed call never reached the budget


@pytest.mark.anyio
async def test_malformed_arguments_raise_with_errors_raise() -> None:
    dispatcher = ToolDispatcher({"web_search": lambda query: query})
    with pytest.raises(InvalidToolArguments, match="invalid JSON"):
        await dispatcher.dispatch_batch(openai_chat_tool_calls(CHAT))


def test_import_outlay_imports_no_sdk() -> None:
    code = ("import sys, outlay, outlay.adapters, outlay.hooks; "
            "print([m for m in sys.modules if m.split('.')[0] in ('openai', 'anthropic')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
