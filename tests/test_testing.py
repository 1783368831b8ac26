"""``outlay.testing``: the shipped test doubles behave as documented, and stay out of
``import outlay``."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

import outlay.testing
from outlay import (
    ToolDispatcher,
    ToolInvocation,
    openai_chat_tool_calls,
    openai_chat_usage,
)
from outlay.clients import estimate_prompt_tokens
from outlay.testing import FakeClock, FakeProvider, RecordingHook, ScriptedModel, methods


def test_import_outlay_does_not_load_the_test_doubles() -> None:
    code = "import sys, outlay; print('outlay.testing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_all_is_sorted_and_complete() -> None:
    names = outlay.testing.__all__
    assert list(names) == sorted(names)
    public = {n for n in vars(outlay.testing) if not n.startswith("_")}
    assert set(names) == public


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock()
    assert clock() == clock() == 1_000.0
    clock.advance(2.5)
    assert clock() == 1_002.5
    clock.set(datetime(2026, 11, 23, tzinfo=UTC))
    assert clock.utcnow() == datetime(2026, 11, 23, tzinfo=UTC)
    ticking = FakeClock(10, tick=1)
    assert [ticking(), ticking(), ticking()] == [10, 11, 12]
    assert ticking.readings == 3
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2026, 1, 1))


@pytest.mark.anyio
async def test_scripted_model_answers_in_the_api_shape_the_adapters_read() -> None:
    model = ScriptedModel([[("lookup", {"q": "x"})], "done"], model="m")
    messages = [{"role": "user", "content": "find x"}]
    first = await model.complete(messages, max_tokens=100)
    (call,) = openai_chat_tool_calls(first)
    assert (call.tool_name, call.arguments) == ("lookup", {"q": "x"})
    usage = openai_chat_usage(first)
    assert usage is not None
    assert usage.input_tokens == estimate_prompt_tokens([messages], 1)
    assert 0 < usage.output_tokens <= 100
    second = await model.complete(messages, max_tokens=1)
    assert second["choices"][0]["message"]["content"] == "done"
    assert second["usage"]["completion_tokens"] == 1  # capped at max_tokens
    third = await model.complete(messages, max_tokens=100)
    assert third["choices"][0]["message"]["content"] == "done"  # the last step repeats
    assert model.turn == 3
    assert model.calls[0] == messages
    with pytest.raises(ValueError, match="at least one step"):
        ScriptedModel([])


@pytest.mark.anyio
async def test_recording_hook_keeps_its_own_ledger_by_default() -> None:
    async def echo(text: str) -> str:
        return text

    hook = RecordingHook("r")
    await ToolDispatcher([echo], [hook]).dispatch(ToolInvocation("c1", "echo", {"text": "hi"}))
    assert hook.ledger == [("r", "before", "c1", None), ("r", "after", "c1", "r:c1")]
    assert methods(hook.ledger) == ["r.before", "r.after"]


def test_fake_provider_says_when_it_is_not_started() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeProvider().openai_url
