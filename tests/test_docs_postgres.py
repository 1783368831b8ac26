"""``docs/postgresql.md`` is a tested page: every ``python`` block runs, in order, against a
real PostgreSQL; the ``text`` blocks after one are its output on successive runs. The page's
URL is replaced by the test server's, with a schema of the test's own (dropped afterwards)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import outlay

from .pgserver import PostgresServer, drop_schema, fresh_schema

DOC = Path(__file__).resolve().parents[1] / "docs" / "postgresql.md"
SRC = Path(outlay.__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PAGE_URL = "postgresql://postgres@127.0.0.1:5432/test?schema=outlay_demo"


def test_postgresql_page_runs_as_written(postgres_server: PostgresServer, tmp_path: Path) -> None:
    schema = fresh_schema()
    programs: list[tuple[str, list[str]]] = []
    for language, body in FENCE.findall(DOC.read_text()):
        if language == "python":
            assert PAGE_URL in body
            programs.append((body.replace(PAGE_URL, postgres_server.schema_url(schema)), []))
        elif language == "text" and programs:
            programs[-1][1].append(body)
    assert len(programs) == 2
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    try:
        for code, outputs in programs:
            for expected in outputs or [""]:
                run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                                     capture_output=True, text=True, check=True)
                if outputs:
                    assert run.stdout == expected
    finally:
        drop_schema(postgres_server.url, schema)
