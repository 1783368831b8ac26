"""A small research agent that stays inside its budgets.

A scripted model (no API key needed) answers each turn with parallel tool calls. Before every
model call the agent reserves tokens and dollars; after it, it records what the model reported.
Every tool call takes one unit of a tool-call budget. When a budget runs out the agent stops
and answers with what it has, saying why.

Run: ``python examples/research_agent.py [--tokens N] [--usd X] [--tool-calls N]``
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from decimal import Decimal

import anyio

from outlay import AtomicBudget, AtomicTokenBudget, Budget, BudgetExceeded

PRICE_PER_MILLION = {"input": Decimal("0.15"), "output": Decimal("0.60")}  # USD, illustrative
MAX_OUTPUT_TOKENS = 400


@dataclass
class ModelTurn:
    """What the scripted model says on one turn."""

    tool_calls: list[tuple[str, str]]
    prompt_tokens: int
    completion_tokens: int
    answer: str | None = None


SCRIPT = [
    ModelTurn([("web_search", "budget-aware agents"), ("web_search", "token accounting"),
               ("fetch", "https://example.org/paper")], prompt_tokens=620, completion_tokens=90),
    ModelTurn([("fetch", "https://example.org/survey"), ("summarise", "paper + survey")],
              prompt_tokens=1800, completion_tokens=140),
    ModelTurn([("web_search", "reservation leases"), ("fetch", "https://example.org/leases")],
              prompt_tokens=2600, completion_tokens=160),
    ModelTurn([], prompt_tokens=3300, completion_tokens=260,
              answer="Reserve before each call, reconcile after, refund on cancel."),
]


async def run_tool(name: str, argument: str) -> str:
    await anyio.sleep(0.01)  # stands in for network I/O
    return f"{name}({argument!r}): ok"


def cost(prompt: int, completion: int) -> Decimal:
    return (prompt * PRICE_PER_MILLION["input"]
            + completion * PRICE_PER_MILLION["output"]) / 1_000_000


@dataclass
class Report:
    notes: list[str] = field(default_factory=list)
    tool_counts: dict[str, int] = field(default_factory=dict)
    reserved_tokens: int = 0
    stopped_because: str | None = None


async def main(tokens: int, usd: Decimal, tool_calls: int) -> Report:
    token_budget = AtomicTokenBudget(tokens, name="tokens")
    tool_budget = AtomicBudget(tool_calls, name="tool-calls")
    money = Budget()  # in-memory store by default
    await money.set_limit("run/usd", usd)
    report = Report()

    context_tokens = 700  # system prompt + question
    for turn_no, turn in enumerate(SCRIPT, start=1):
        # Conservative estimate: the context so far plus the largest answer allowed.
        estimate = context_tokens + MAX_OUTPUT_TOKENS
        try:
            async with token_budget.reserve_tokens(estimate) as tokens_held, money.reserve(
                {"run/usd": cost(estimate, MAX_OUTPUT_TOKENS)}
            ) as dollars_held:
                report.reserved_tokens += estimate
                print(f"turn {turn_no}: reserved {estimate} tokens, "
                      f"{dollars_held.amounts['run/usd']:.6f} USD")
                # ... the model call happens here; the scripted model reports its usage ...
                await token_budget.record_usage(tokens_held, turn.prompt_tokens,
                                                turn.completion_tokens)
                await dollars_held.commit(
                    {"run/usd": cost(turn.prompt_tokens, turn.completion_tokens)})
                context_tokens = turn.prompt_tokens + turn.completion_tokens
        except BudgetExceeded as exc:
            report.stopped_because = f"model budget exhausted before turn {turn_no}: {exc}"
            break
        if turn.answer is not None:
            report.notes.append(turn.answer)
            break

        async def call(name: str, argument: str) -> None:
            if not await tool_budget.try_reserve(1):
                report.notes.append(f"skipped {name}: tool-call budget exhausted")
                return
            # Tool calls are counted, never given back: the budget caps calls per run.
            output = await run_tool(name, argument)
            report.notes.append(output)
            nonlocal context_tokens
            context_tokens += math.ceil(len(output) / 3) + 200  # the tool result joins the context
            report.tool_counts[name] = report.tool_counts.get(name, 0) + 1

        async with anyio.create_task_group() as tg:
            for name, argument in turn.tool_calls:
                tg.start_soon(call, name, argument)
        print(f"turn {turn_no}: ran {len(turn.tool_calls)} tool calls in parallel, "
              f"{tool_budget.available} tool calls left")

    usage = await money.usage("run/usd")
    print("\n== answer ==")
    if report.stopped_because:
        print(f"stopped early, {report.stopped_because}")
        print("answering from what was gathered:")
        for note in report.notes:
            print(f"  - {note}")
    else:
        print(report.notes[-1])
    print("\n== spend ==")
    used = await token_budget.tokens_consumed()
    delta = report.reserved_tokens - used
    settled = f"{delta} refunded" if delta >= 0 else f"{-delta} over the estimates, debited"
    print(f"tokens: {used} used of {tokens}; {report.reserved_tokens} reserved across calls, "
          f"{settled} after reconciling")
    print(f"usd:    {usage.spent:.6f} spent of {usage.cap}")
    for name, count in sorted(report.tool_counts.items()):
        print(f"tool {name}: {count} call(s)")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--usd", type=Decimal, default=Decimal("0.05"))
    parser.add_argument("--tool-calls", type=int, default=8)
    args = parser.parse_args()
    anyio.run(main, args.tokens, args.usd, args.tool_calls)
