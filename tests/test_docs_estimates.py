"""``docs/estimates.md`` runs as written: the exact-count block prints the ``text`` block after
it, and the count-tokens block runs against the fake provider (both SDKs pointed at it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from outlay.testing import FakeProvider, Script

DOC = Path(__file__).resolve().parents[1] / "docs" / "estimates.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
BLOCKS = FENCE.findall(DOC.read_text())
PYTHON = [body for language, body in BLOCKS if language == "python"]


def test_the_page_has_two_programs_and_one_output() -> None:
    assert [language for language, _ in BLOCKS] == ["python", "text", "python"]


def test_exact_count_block_prints_what_the_page_says(capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(PYTHON[0], f"{DOC}:exact", "exec"), {"__name__": "recipe"})
    assert capsys.readouterr().out == BLOCKS[1][1]


def test_count_tokens_block_asks_both_providers(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with FakeProvider() as fake:
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.anthropic_url)
        fake.script(Script(input_tokens=14), Script(input_tokens=9))
        exec(compile(PYTHON[1], f"{DOC}:count", "exec"), {"__name__": "recipe"})
    assert capsys.readouterr().out.splitlines() == ["anthropic counts 14", "openai counts 9"]
    assert [r.path.split("?")[0] for r in fake.requests] == [
        "/v1/messages/count_tokens", "/v1/responses/input_tokens"]
