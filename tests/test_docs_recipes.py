"""docs/recipes.md runs as written: the three tasks stop at $0.50, 100k tokens and 20 tool calls
before sending, on memory, SQLite and Redis, and with four worker processes sharing one Redis
budget with a day window. The line counts the page states are the lines marked ``# outlay``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from outlay import Budget, Window
from outlay.testing import FakeProvider, Script

from .redisserver import RedisServer
from .storekit import REDIS_TEST_DB, drop_namespace

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "recipes.md"
TEXT = DOC.read_text()
RECIPES = {  # recipe -> its row in the page's table of line counts
    "pydantic-ai": "pydantic-ai agent",
    "agents": "OpenAI Agents SDK agent",
    "openai": "plain OpenAI client loop",
}
MODULES = {"pydantic-ai": "pydantic_ai", "agents": "agents", "openai": "openai"}
SECTIONS = {"pydantic-ai": "pydantic-ai agent", "agents": "OpenAI Agents SDK agent",
            "openai": "Plain OpenAI client loop"}
LEFT = re.compile(r"^left: \$(\S+), (\d+) tokens, (\d+) tool calls$", re.M)
THREE_SEARCHES = Script(input_tokens=2_000, output_tokens=300,
                        tool_calls=(("search", '{"query": "outlay"}'),) * 3)


def recipe(name: str) -> str:
    body = TEXT.split(f"\n## {SECTIONS[name]}\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    return str(block)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    with FakeProvider(default=THREE_SEARCHES) as provider:
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setenv("OPENAI_BASE_URL", provider.openai_url)
        yield provider


def redis_url(server: RedisServer) -> str:
    return f"{server.url(REDIS_TEST_DB)}?namespace=outlay-test-{uuid.uuid4().hex[:12]}"


def spent(url: str) -> dict[str, object]:
    """What the agent's budget on ``url`` has spent today, by unit (read by a new Budget)."""

    async def read() -> dict[str, object]:
        budget = Budget(usd=Decimal("0.50"), tokens=100_000, tool_calls=20,
                        window=Window.day(), store=url, principal="agent:researcher")
        try:
            usage = await budget.usage()
            assert all(u.held == 0 for u in usage), usage  # nothing left held
            return {u.key.split("/")[-2]: u.spent for u in usage}
        finally:
            store = budget.store
            if url.startswith("redis"):
                await drop_namespace(store)  # type: ignore[arg-type]
            await budget.aclose()

    return asyncio.run(read())


def check_within_caps(figures: dict[str, object], tool_calls: int) -> None:
    assert figures["tool_calls"] == tool_calls
    usd, tokens = figures["usd"], figures["tokens"]
    assert isinstance(usd, Decimal)
    assert isinstance(tokens, int)
    assert Decimal(0) < usd <= Decimal("0.50")
    assert 0 < tokens <= 100_000


def test_the_page_states_the_outlay_line_counts() -> None:
    for name, row in RECIPES.items():
        marked = sum(1 for line in recipe(name).splitlines() if line.endswith("# outlay"))
        assert f"| {row} | {marked} |" in TEXT, (name, marked)


@pytest.mark.parametrize("store", ["memory", "sqlite", "redis"])
@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_stops_before_sending(name: str, store: str, fake: FakeProvider,
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str],
                                     request: pytest.FixtureRequest) -> None:
    pytest.importorskip(MODULES[name])
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path / 'budgets.db'}"}.get(store)
    if url is None:
        url = redis_url(request.getfixturevalue("redis_server"))
    monkeypatch.setenv("OUTLAY_STORE", url)
    exec(compile(recipe(name), f"{DOC}:{name}", "exec"), {"__name__": "recipe"})
    out = capsys.readouterr().out
    # The seventh response asks for 3 tool calls with 2 left: the batch is refused whole.
    refused = "stopped before sending: agent:researcher: cannot reserve 3 tool_calls in day:"
    assert refused in out, out
    left = LEFT.search(out)
    assert left, out
    assert Decimal(left.group(1)) > 0
    assert int(left.group(2)) > 0
    assert left.group(3) == "2"
    if name == "openai":
        assert len(fake.requests) == 7  # six answered batches of 3, one refused after it
    if store != "memory":
        check_within_caps(spent(url), 18)


@pytest.mark.parametrize("name", list(RECIPES))
def test_four_workers_share_one_redis_budget_per_day(name: str, fake: FakeProvider,
                                                     tmp_path: Path,
                                                     redis_server: RedisServer) -> None:
    pytest.importorskip(MODULES[name])
    url = redis_url(redis_server)
    script = tmp_path / f"recipe_{MODULES[name]}.py"  # not agents.py: it would shadow the SDK
    script.write_text(recipe(name))
    env = {**os.environ, "OUTLAY_STORE": url, "PYTHONPATH": str(ROOT / "src")}
    workers = [subprocess.Popen([sys.executable, str(script)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(4)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "stopped before sending: agent:researcher:" in out, out
    # One budget for the fleet: batches of 3 admitted whole, so 18 of the 20 tool calls, and
    # never more than the caps, however the four interleaved.
    check_within_caps(spent(url), 18)
