"""Every example is a real program: run each one and check what it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_research_agent_finishes_within_budget() -> None:
    out = run("research_agent.py")
    assert "Reserve before each call" in out
    assert "stopped early" not in out
    assert "usd:    0.001638 spent of 0.05" in out


def test_research_agent_exhausts_gracefully() -> None:
    out = run("research_agent.py", "--tokens", "5000", "--tool-calls", "3")
    assert "stopped early, model budget exhausted before turn 4" in out
    assert "skipped summarise: tool-call budget exhausted" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_runs(script: str) -> None:
    assert run(script)


def test_tenant_budgets_stops_the_sub_agent_at_its_run_cap() -> None:
    out = run("tenant_budgets.py")
    assert "step 0: spent 0.0875 (estimate 0.14)" in out
    assert "step 21: spent 0.0875" in out
    assert "stopped: tenant:acme/agent:researcher: window 'run:" in out
    assert "cap 2, committed 1.9250" in out
    assert "tenant:acme/usd/month:" in out
