"""The recipes in docs/gates.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).parent.parent / "docs"


def test_gates_doc_code_blocks_run() -> None:
    text = (DOCS / "gates.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 2
    namespace: dict[str, object] = {"__name__": "docs_gates"}
    for block in blocks:  # one namespace per page: later blocks build on earlier ones
        exec(compile(block, "docs/gates.md", "exec"), namespace)
