"""outlay's budget against pydantic-ai's ``UsageLimits`` on the same scripted model, in one run.

The limits are the same: $0.50, 100k tokens and 20 tool calls (``UsageLimits(cost_limit=...,
total_tokens_limit=..., tool_calls_limit=...)`` against ``outlay.Budget(usd=..., tokens=...,
tool_calls=...)`` through ``OutlayCapability``). The scripted model never stops asking for tool
calls and reports a fixed usage per response, priced at gpt-4o's $2.50 / $10 per million tokens
(pydantic-ai prices it through genai-prices; outlay is given the same ``TokenPrices``). Each
scenario says which limit the script reaches first:

- ``tokens``: 14k in + 1k out per response, 3 tool calls; the estimate covers what is reported;
- ``dollars``: 2k in + 6k out per response ($0.065), 2 tool calls; the estimate covers it;
- ``tool calls``: 3k in + 500 out, 3 tool calls per response;
- ``under-estimate``: as ``tokens`` with 2 tool calls, but outlay's input estimate is 1k, so
  the provider reports more than was held: the overshoot is recorded and the next call refused.

For each run: model requests sent, tool calls that ran, and what the provider billed (tokens,
dollars), and whether a limit was crossed. Prints a table and writes
benchmarks/results/usage_limits.json.

    python benchmarks/compare_usage_limits.py
"""

from __future__ import annotations

import asyncio
import json
import warnings
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic_ai import Agent, UsageLimitExceeded, UsageLimits
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from outlay import Budget, BudgetExceeded, TokenPrices
from outlay.integrations.pydantic_ai import OutlayCapability

ROOT = Path(__file__).resolve().parents[1]
USD, TOKENS, TOOL_CALLS = Decimal("0.50"), 100_000, 20
PRICES = TokenPrices(Decimal("2.50"), Decimal("10"))  # gpt-4o, $ per million tokens


@dataclass(frozen=True)
class Scenario:
    name: str
    input_tokens: int
    output_tokens: int
    tool_calls: int
    estimate_input: int  # what outlay holds for the input

    @property
    def cost(self) -> Decimal:
        return (self.input_tokens * PRICES.input_per_mtok
                + self.output_tokens * PRICES.output_per_mtok) / 1_000_000


SCENARIOS = [
    Scenario("tokens", 14_000, 1_000, 3, 14_000),
    Scenario("dollars", 2_000, 6_000, 2, 2_000),
    Scenario("tool calls", 3_000, 500, 3, 3_000),
    Scenario("under-estimate", 14_000, 1_000, 2, 1_000),
]


async def run(scenario: Scenario, limiter: str) -> dict[str, Any]:
    sent = [0]
    ran = [0]

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        sent[0] += 1
        n = sent[0]
        return ModelResponse(
            parts=[ToolCallPart("search", {"q": f"{n}-{i}"}, tool_call_id=f"c{n}-{i}")
                   for i in range(scenario.tool_calls)],
            usage=RequestUsage(input_tokens=scenario.input_tokens,
                               output_tokens=scenario.output_tokens))

    budget = Budget(usd=USD, tokens=TOKENS, tool_calls=TOOL_CALLS)
    capabilities = ([OutlayCapability(budget, prices=PRICES,
                                      estimate_input=scenario.estimate_input,
                                      max_output_tokens=scenario.output_tokens)]
                    if limiter == "outlay" else [])
    agent = Agent(FunctionModel(model, model_name="gpt-4o"), capabilities=capabilities)

    @agent.tool_plain
    async def search(q: str) -> str:
        ran[0] += 1
        return f"results for {q}"

    limits = (UsageLimits(cost_limit=USD, total_tokens_limit=TOKENS,
                          tool_calls_limit=TOOL_CALLS, request_limit=None)
              if limiter == "UsageLimits" else UsageLimits(request_limit=None))
    stop = "none"
    try:
        await agent.run("Research outlay.", usage_limits=limits)
    except BudgetExceeded as exc:
        stop = (f"BudgetExceeded ({exc.unit}): the batch, before any of it ran"
                if exc.unit == "tool_calls" else
                f"BudgetExceeded ({exc.unit}): the next call, before sending")
    except UsageLimitExceeded as exc:
        stop = "UsageLimitExceeded after the response: " + str(exc).split(" (")[0]
    tokens = sent[0] * (scenario.input_tokens + scenario.output_tokens)
    usd = sent[0] * scenario.cost
    if limiter == "outlay":  # outlay's books match the provider's bill exactly
        spent = {u.key.split("/")[-2]: u.spent for u in await budget.usage()}
        assert (spent["tokens"], spent["usd"]) == (tokens, usd), spent
    crossed = [name for name, value, cap in (("usd", usd, USD), ("tokens", tokens, TOKENS),
                                             ("tool_calls", ran[0], TOOL_CALLS))
               if value > cap]
    return {"scenario": scenario.name, "limiter": limiter, "requests_sent": sent[0],
            "tool_calls_run": ran[0], "tokens_billed": tokens, "usd_billed": str(usd),
            "caps_crossed": crossed, "stopped_by": stop}


async def main() -> list[dict[str, Any]]:
    rows = []
    for scenario in SCENARIOS:
        for limiter in ("outlay", "UsageLimits"):
            rows.append(await run(scenario, limiter))
    return rows


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    rows = asyncio.run(main())
    print(f"caps: ${USD}, {TOKENS:,} tokens, {TOOL_CALLS} tool calls\n")
    header = (f"{'scenario':<15} {'limiter':<12} {'requests':>8} {'tools':>6} {'tokens':>8} "
              f"{'usd':>7} {'crossed':<12} stopped by")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['scenario']:<15} {r['limiter']:<12} {r['requests_sent']:>8} "
              f"{r['tool_calls_run']:>6} {r['tokens_billed']:>8} {r['usd_billed']:>7} "
              f"{','.join(r['caps_crossed']) or '-':<12} {r['stopped_by']}")
    out = ROOT / "benchmarks" / "results" / "usage_limits.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"caps": {"usd": str(USD), "tokens": TOKENS,
                                        "tool_calls": TOOL_CALLS}, "rows": rows}, indent=2)
                   + "\n")
    print(f"\nwrote {out}")
