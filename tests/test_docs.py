"""The recipes in docs/ run: each page's python blocks, in order, as one program."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["money-and-windows.md"]


def python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))


@pytest.mark.parametrize("page", PAGES)
def test_page_runs(page: str, capsys: pytest.CaptureFixture[str]) -> None:
    source = python_blocks(DOCS / page)
    assert source, f"{page} has no python blocks"
    exec(compile(source, str(DOCS / page), "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    assert "over the cap by 5" in printed
    assert "no price is known for model 'mystery-model'" in printed
    assert ("tenant:acme/agent:planner: cannot reserve $2 in this run: cap $2, spent $0.07"
            in printed)

