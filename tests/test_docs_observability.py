"""docs/observability.md: its python blocks run in order as one program, and what the first
prints is the text block the page shows (dates, times and the month aside)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "observability.md"


def _masked(text: str) -> list[str]:
    text = re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", "<when>", text)
    text = re.sub(r"month:\d{4}-\d{2}", "month:<m>", text)
    text = re.sub(r"^\d{2}:\d{2}:\d{2}  ", "<time>  ", text, flags=re.M)
    return text.strip().splitlines()


def test_the_page_runs_and_prints_what_it_shows(capsys: pytest.CaptureFixture[str]) -> None:
    page = PAGE.read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 3
    shown = page.split("prints (the date aside)\n\n```text\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {"__name__": "__docs__"}
    exec(compile(blocks[0], str(PAGE), "exec"), namespace)
    assert _masked(capsys.readouterr().out) == _masked(shown)
    for block in blocks[1:]:
        exec(compile(block, str(PAGE), "exec"), namespace)
