"""The recipes in docs/integrations.md run as written (offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"


@pytest.mark.parametrize(("section", "module"), [("pydantic-ai", "pydantic_ai"),
                                                 ("OpenAI Agents SDK", "agents")])
def test_integration_recipe_runs(section: str, module: str) -> None:
    pytest.importorskip(module)
    text = (DOCS / "integrations.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)
    assert len(blocks) == 1
    namespace: dict[str, object] = {"__name__": f"docs_integrations_{module}"}
    exec(compile(blocks[0], "docs/integrations.md", "exec"), namespace)
