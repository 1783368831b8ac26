"""``docs/testing.md`` runs as written: each ``python`` block prints the ``text`` block after
it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
BLOCKS = FENCE.findall(DOC.read_text())
PROGRAMS = [(code, BLOCKS[i + 1][1]) for i, (language, code) in enumerate(BLOCKS)
            if language == "python"]


def test_every_program_is_followed_by_its_output() -> None:
    assert [language for language, _ in BLOCKS] == ["python", "text"] * 3


@pytest.mark.parametrize("index", range(len(PROGRAMS)))
def test_program_prints_what_the_page_says(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = PROGRAMS[index]
    exec(compile(code, f"{DOC}:{index}", "exec"), {"__name__": "docs_testing"})
    assert capsys.readouterr().out == output
