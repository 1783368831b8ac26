"""Run every Python recipe in docs/clients.md against the fake provider, as a user would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from outlay.testing import FakeProvider

DOC = Path(__file__).resolve().parents[1] / "docs" / "clients.md"
RECIPES = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    pytest.importorskip("openai")
    pytest.importorskip("anthropic")
    with FakeProvider() as provider:
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setenv("OPENAI_BASE_URL", provider.openai_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", provider.anthropic_url)
        yield provider


def test_the_doc_has_four_recipes() -> None:
    assert len(RECIPES) == 4


def test_chat_recipe(fake: FakeProvider, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(RECIPES[0], f"{DOC}:chat", "exec"), {"__name__": "recipe"})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == out[1] == "Hello from the fake provider."
    assert out[2] == "left 1964 tokens, 8 requests; charge: recorded"  # 2 x (11 in + 7 out)
    assert out[3].startswith("refused before sending:")
    assert len(fake.requests) == 2


def test_responses_recipe(fake: FakeProvider, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(RECIPES[1], f"{DOC}:responses", "exec"), {"__name__": "recipe"})
    out = capsys.readouterr().out.splitlines()
    assert out == ["Hello from the fake provider.", "left 482 of 500"]
    assert fake.requests[0].body["max_output_tokens"] < 500  # clamped


def test_anthropic_recipe(fake: FakeProvider, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(RECIPES[2], f"{DOC}:anthropic", "exec"), {"__name__": "recipe"})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Hello from the fake provider."
    # 11 in at $3/M + 7 out at $15/M; reserved: estimate in + 512 out.
    assert out[1].endswith("charged $0.000138 for 18 tokens")
    # the amount left (its exponent follows the released hold's: 8 places with this estimate)
    assert Decimal(out[2].removeprefix("left: ")) == Decimal("0.499862")


def test_drop_in_recipe(fake: FakeProvider, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pydantic_ai")
    pytest.importorskip("agents")
    exec(compile(RECIPES[3], f"{DOC}:drop-in", "exec"), {"__name__": "recipe"})
    out = capsys.readouterr().out.splitlines()
    assert out == ["Hello from the fake provider."] * 2
    assert [r.body["max_completion_tokens"] for r in fake.requests] == [500, 500]
