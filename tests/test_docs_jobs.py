"""``docs/jobs.md`` runs as written: its python blocks run in order as one program, and the
``text`` block right after a python block is what that block prints (``...`` stands for any
text, as in doctest)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "jobs.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def matches(expected: str, printed: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, printed, re.DOTALL) is not None


def test_jobs_page_runs_as_written() -> None:
    fences = FENCE.findall(DOC.read_text())
    namespace: dict[str, object] = {"__name__": "__docs__"}
    checked = 0
    for index, (language, body) in enumerate(fences):
        if language != "python":
            continue
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(body, f"{DOC}:block{index}", "exec"), namespace)
        following = fences[index + 1] if index + 1 < len(fences) else None
        if following and following[0] == "text":
            assert matches(following[1], printed.getvalue()), printed.getvalue()
            checked += 1
    assert checked == 5
