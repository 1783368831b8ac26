"""Every example is a real program: run each one and check what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SRC = EXAMPLES.parent / "src"


def run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return done.stdout


def test_research_agent_answers_within_budget() -> None:
    out = run("research_agent.py")
    assert "Reserve before each call, reconcile" in out
    assert "stopped early" not in out
    # The per-tool limit skipped the fourth search; everything else ran.
    assert "tool web_search: 3 ran, 1 skipped" in out
    assert "tool fetch: 2 ran, 0 skipped" in out
    spend = re.search(r"tokens reserved (\d+), used (\d+); usd reserved (\S+), spent (\S+)", out)
    assert spend, out
    reserved, used = int(spend.group(1)), int(spend.group(2))
    assert used < reserved  # estimates were conservative; the difference was refunded
    assert Decimal(spend.group(4)) < Decimal(spend.group(3))


def test_research_agent_exhausts_gracefully() -> None:
    out = run("research_agent.py", "--usd", "0.0004")
    assert "(stopped early: the model budget ran out before turn 3: limit 'run/usd'" in out
    assert "From what I gathered:" in out
    total = re.search(r"run total: \d+ of \d+ tokens, (\S+) of 0.0004 USD", out)
    assert total, out
    assert Decimal(total.group(1)) <= Decimal("0.0004")


def test_research_agent_wants_prices_for_a_real_model() -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, str(EXAMPLES / "research_agent.py"), "--base-url",
                           "http://127.0.0.1:9/v1"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2
    assert "--base-url needs --input-price and --output-price" in done.stderr


def test_research_agent_on_an_openai_compatible_endpoint() -> None:
    pytest.importorskip("openai", reason="the real-endpoint path needs outlay[openai]")
    from outlay.testing import FakeProvider, Script

    with FakeProvider() as provider:
        provider.script(
            Script(input_tokens=120, output_tokens=30, tool_calls=(
                ("web_search", '{"query": "llm budgets"}'), ("fetch", '{"url": "u"}'))),
            Script(input_tokens=300, cache_read_input_tokens=200, output_tokens=45,
                   text="Reserve, reconcile, refund."),
        )
        env = {**os.environ, "PYTHONPATH": str(SRC), "OPENAI_API_KEY": "test"}
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "research_agent.py"), "--base-url",
             provider.openai_url, "--model", "fake-1", "--input-price", "1",
             "--output-price", "2", "--cached-input-price", "0.5"],
            capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert len(provider.requests) == 2
    out = done.stdout
    assert "ran web_search(llm budgets)" in out
    assert "Reserve, reconcile, refund." in out
    # usage as the endpoint reported it: 420 in (200 of them cached), 75 out, at $1 / $0.50
    # (cached) / $2 per million: 220 + 100 + 150 = 470 micro-dollars
    assert "model fake-1: 2 calls;" in out
    assert "used 495;" in out
    assert "spent 0.000470" in out


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_runs(script: str) -> None:
    assert run(script)


def test_approval_console_audits_and_never_prints_the_key() -> None:
    out = run("approval_console.py")
    assert "medium: queued medium for 8 GPU-hours" in out
    assert "huge: approval rejected by scripted-reviewer: above the $30 job cap" in out
    assert "call_1 $20.00 approved by scripted-reviewer" in out
    assert out.count('"event": "outlay.egress.sent"') == 2
    assert '"secrets": ["GPU_CLOUD_TOKEN"]' in out
    assert "demo-token-not-a-real-key" not in out


def test_tenant_budgets_stops_the_sub_agent_at_its_run_cap() -> None:
    out = run("tenant_budgets.py")
    assert "step 0: spent 0.0875 (estimate 0.14)" in out
    assert "step 21: spent 0.0875" in out
    assert "stopped: tenant:acme/agent:researcher: window 'run:" in out
    assert "cap 2, committed 1.9250" in out
    assert "tenant:acme/usd/month:" in out
