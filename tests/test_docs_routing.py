"""``docs/routing.md`` is a program: its python blocks run, in order, as one module."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "routing.md"


def test_routing_docs_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 6
    namespace: dict[str, object] = {"__name__": "docs_routing"}
    exec(compile("\n".join(blocks), str(DOC), "exec"), namespace)


def test_readme_routing_block_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (DOC.parent.parent / "README.md").read_text()
    section = readme[readme.index("## Where should it run? Routing"):]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[0]
    code = compile(block, "README.md:routing", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    asyncio.run(eval(code, {"__name__": "readme_routing"}))  # top-level await, as README runs
    assert "0 of 1 free accelerator(s) fit" in capsys.readouterr().out
