"""``docs/graph.md`` is a program: its python blocks run, in order, as one module."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "graph.md"


def test_graph_docs_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 4
    namespace: dict[str, object] = {"__name__": "docs_graph"}
    exec(compile("\n".join(blocks), str(DOC), "exec"), namespace)


def test_graph_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(DOC.parent.parent / "examples" / "graph_fanout.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "left: 0.05 USD" in out
    assert "refused before any branch started" in out
