"""The recipes in docs/hooks.md and docs/adapters.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"


@pytest.mark.parametrize("page", ["hooks.md", "adapters.md"])
def test_doc_code_blocks_run(page: str) -> None:
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    namespace: dict[str, object] = {"__name__": f"docs_{page}"}
    for block in blocks:  # one namespace per page: later blocks build on earlier ones
        exec(compile(block, f"docs/{page}", "exec"), namespace)
