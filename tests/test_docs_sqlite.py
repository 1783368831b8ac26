"""``docs/sqlite.md`` is a tested page: every ``python`` block runs, in order, in one working
directory; the ``text`` blocks after it are its output on successive runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import outlay

DOC = Path(__file__).resolve().parents[1] / "docs" / "sqlite.md"
SRC = Path(outlay.__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_sqlite_page_runs_as_written(tmp_path: Path) -> None:
    programs: list[tuple[str, list[str]]] = []
    for language, body in FENCE.findall(DOC.read_text()):
        if language == "python":
            programs.append((body, []))
        elif language == "text" and programs:
            programs[-1][1].append(body)
    assert len(programs) == 2
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for code, outputs in programs:
        for expected in outputs or [""]:
            run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, check=True)
            if outputs:
                assert run.stdout == expected
