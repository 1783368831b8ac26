"""``docs/sqlite.md`` is a tested page: every ``python`` block runs, in order, in one working
directory; the ``text`` blocks after it are its output on successive runs. The SQLite example
program runs too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

import outlay

from .storekit import REDIS_TEST_DB, drop_namespace_at

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


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_fleet_example_shares_one_budget(tmp_path: Path, store: str,
                                         request: pytest.FixtureRequest) -> None:
    example = DOC.parents[1] / "examples" / "fleet.py"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    if store == "redis":
        server = request.getfixturevalue("redis_server")
        # A namespace of the test's own, deleted afterwards (the default one would keep the
        # run's limits and events in the test database for good).
        url = f"{server.url(REDIS_TEST_DB)}?namespace=outlay-test-{uuid.uuid4().hex[:12]}"
        request.addfinalizer(lambda: anyio.run(drop_namespace_at, url))
    else:
        url = f"sqlite:///{tmp_path / 'b.db'}"
    run = subprocess.run([sys.executable, str(example), "--store", url], env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    fleet = re.search(r"^fleet: (\d+) calls, (\S+) USD committed", run.stdout, re.M)
    found = re.search(r"^store: spent (\S+) of 1.00, held (\S+)$", run.stdout, re.M)
    assert fleet, run.stdout
    assert found, run.stdout
    total = Decimal(fleet.group(2))
    spent, held = (Decimal(x) for x in found.groups())
    assert total == spent  # every committed cent is in the store, none twice
    assert Decimal("0.94") <= spent <= Decimal("1.00")  # stops only when 7 cents no longer fit
    assert held == 0
    assert run.stdout.rstrip().endswith("within budget")
