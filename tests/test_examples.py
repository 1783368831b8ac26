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
    assert ("(stopped early: the model budget ran out before turn 3: agent:research: cannot "
            "reserve $"
            in out)
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
    out = run(script)
    assert "Spend report, " in out  # every agent ends by printing the spend report
    assert "Biggest spenders (usd)" in out


def test_approval_console_audits_and_never_prints_the_key() -> None:
    out = run("approval_console.py")
    assert "medium: queued medium for 8 GPU-hours" in out
    assert "huge: approval rejected by scripted-reviewer: above the $30 job cap" in out
    assert "call_1 $20.00 approved by scripted-reviewer" in out
    assert out.count('"event": "outlay.egress.sent"') == 2
    assert '"secrets": ["GPU_CLOUD_TOKEN"]' in out
    assert "demo-token-not-a-real-key" not in out
    # the approved jobs (2 and 8 GPU-hours at $2.50) were charged to the trainer's budget
    by_tool = out.split("Reserved vs actual by tool\n", 1)[1].splitlines()
    assert by_tool[1].split() == ["train", "usd", "2", "25", "25", "0"]


def test_tenant_budgets_stops_the_sub_agent_at_its_run_cap() -> None:
    out = run("tenant_budgets.py")
    assert "step 0: spent 0.0875 (estimate 0.14)" in out
    assert "step 21: spent 0.0875" in out
    assert "stopped: tenant:acme/agent:researcher: cannot reserve $0.14 in this run" in out
    assert "cap $2, spent $1.9250" in out
    assert "tenant:acme/usd/month:" in out
    by_model = out.split("Reserved vs actual by model\n", 1)[1].splitlines()
    assert by_model[2].split() == ["large-model", "usd", "22", "3.08", "1.925", "1"]
    assert "Refusals (1)" in out


def test_gpu_jobs_recovers_the_killed_workers_job_and_the_spend_adds_up() -> None:
    out = run("gpu_jobs.py")
    assert "approved train-a ($9.60) by reviewer" in out
    assert "rejected sweep-d: job sweep-d was not approved: approval rejected by reviewer" in out
    assert "refused train-f: the approvals before it already hold the monthly cap" in out
    assert "held before anything ran: 38.40 of 40" in out
    killed = re.search(r"^killed a worker while it ran (\S+)$", out, re.M)
    assert killed, out
    assert re.search(rf"^{killed.group(1)}: completed on attempt 2, .*\(recovered from the "
                     r"killed worker\)$", out, re.M), out
    costs = [Decimal(c) for c in re.findall(r"^train-\w: completed .* cost \$(\S+)", out, re.M)]
    assert len(costs) == 4
    spend = re.search(r"^spend: jobs (\S+) = store spent (\S+), held (\S+)$", out, re.M)
    assert spend, out
    assert Decimal(spend.group(1)) == Decimal(spend.group(2)) == sum(costs) == Decimal("31.80")
    assert Decimal(spend.group(3)) == 0


def test_routing_agent_steps_down_from_premium_to_cheap_and_prints_each_decision() -> None:
    out = run("routing_agent.py")
    assert "model request -> premium-large (cloud); budget: 0.05 usd left" in out
    assert "question 1: [premium-large] answer to: Which hotels are near the venue?" in out
    # the ladder: once under 40% is left, the premium model is refused with the reason
    assert ("premium-large  cloud  -            -           refused: ladder: 35.5% of the "
            "budget left, below 40%: start at 'cheap-mini'") in out
    assert "question 8: [cheap-mini] answer to: Write the packing list." in out
    assert "models used: premium-large x3, cheap-mini x5" in out
    spent = re.search(r"spent (\S+) of 0.05 USD", out)
    assert spent, out
    assert Decimal(spent.group(1)) == 3 * Decimal("0.01075") + 5 * Decimal("0.000285")


def test_routing_agent_on_a_small_budget_never_overspends() -> None:
    out = run("routing_agent.py", "--usd", "0.012")
    assert "models used: premium-large x1, cheap-mini x1, local-llama x6" in out
    assert "refused: ladder: 8.04% of the budget left, below 10%: start at 'local-llama'" in out
    spent = re.search(r"spent (\S+) of 0.012 USD", out)
    assert spent, out
    assert Decimal(spent.group(1)) <= Decimal("0.012")


def test_gpu_routing_runs_local_then_cloud_and_sdk_only_when_allowed() -> None:
    out = run("gpu_routing.py")
    blocks = out.split("\n\n")
    assert blocks[0].startswith("small-lora -> workstation (local)")
    assert "small-lora: ran on workstation (local, node ws-01); charged 0 USD" in blocks[0]
    assert blocks[1].startswith("small-lora -> cloud-h100 (cloud)")
    assert ("workstation  local  ws-01    -           refused: needs 1 accelerator(s) of >= "
            "16 GiB; has no free accelerator") in blocks[1]
    assert blocks[2].startswith("big-lora -> cloud-h100 (cloud)")
    assert "0 of 1 free accelerator(s) fit" in blocks[2]
    assert blocks[3].startswith("two-gpu-run: refused\ntwo-gpu-run -> no candidate can take it")
    assert "managed-sdk  sdk    -        -           refused: a paid SDK backend" in blocks[3]
    assert blocks[4].startswith("two-gpu-run -> managed-sdk (sdk)")
    assert "two-gpu-run: ran on managed-sdk (sdk); charged 4.00 USD" in blocks[4]
    # worst cases are held, actuals (60% of the declared runtime) committed
    assert "cloud-h100   cloud  eu-west  2.32128     chosen" in blocks[1]
    assert "charged 1.4227200 USD" in blocks[1]
    assert "left in the budget: 1.4781600 USD" in out
