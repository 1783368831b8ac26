"""A research agent that stays inside its budgets, and says so when it cannot.

    python examples/research_agent.py                       # scripted model, no API key
    python examples/research_agent.py --usd 0.0004          # watch it run out and finish early
    OPENAI_API_KEY=... python examples/research_agent.py --base-url https://your-endpoint/v1 \\
        --model your-model --input-price 0.15 --output-price 0.60   # a real endpoint (USD/M)
        [--cached-input-price 0.075]                             # prompt-cache reads, if cheaper

The model answers with parallel tool calls. Before every model call outlay reserves tokens (an
estimate of the prompt plus the request's max output), dollars and one request on one budget,
in one reservation; after it, it commits what the model reported and refunds the rest. Tool
calls go through a ``ToolDispatcher`` whose hooks cap calls per tool and in total. When a
budget runs out, the agent answers from what it gathered and says why: graceful exhaustion,
not a stack trace.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anyio

from outlay import (
    Amount,
    AtomicBudget,
    Budget,
    BudgetExceeded,
    DispatchBudgetHook,
    MemoryStore,
    PriceTable,
    RecordingStore,
    SpendReport,
    TokenPrices,
    ToolCallLimitHook,
    ToolDispatcher,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
    labels,
    openai_chat_tool_calls,
    openai_chat_tool_messages,
    openai_chat_usage,
)
from outlay.clients import Charge
from outlay.testing import ScriptedModel

SCRIPTED_MODEL = "scripted-mini"
PRICES = {SCRIPTED_MODEL: TokenPrices(Decimal("0.15"), Decimal("0.60"))}  # USD per million tokens
MAX_OUTPUT_TOKENS = 400
QUESTION = "How should an agent keep its LLM spend inside a budget?"

# -- tools -------------------------------------------------------------------------------------


async def web_search(query: str) -> str:
    await anyio.sleep(0.01)  # stands in for an HTTP call
    return f"3 results for {query!r}: reserve before calling, reconcile after, refund on cancel"


async def fetch(url: str) -> str:
    await anyio.sleep(0.01)
    return f"{url}: holds carry leases so a crashed worker cannot block a budget forever"


def summarise(text: str) -> str:  # sync tools run in a worker thread
    return f"summary of {len(text)} characters: count with Decimal, never float"


TOOLS = [web_search, fetch, summarise]
TOOL_SCHEMAS = [
    {"type": "function", "function": {"name": tool.__name__, "parameters": {
        "type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]}}}
    for tool, arg in ((web_search, "query"), (fetch, "url"), (summarise, "text"))
]

# -- the scripted model: OpenAI Chat Completions shapes, deterministic usage ---------------------

SCRIPT: list[list[tuple[str, dict[str, str]]] | str] = [
    [("web_search", {"query": "budget-aware agents"}), ("web_search", {"query": "token leases"}),
     ("fetch", {"url": "https://example.org/paper"})],
    [("fetch", {"url": "https://example.org/survey"}), ("web_search", {"query": "Decimal money"}),
     ("web_search", {"query": "one more search"})],  # the 4th search: over the per-tool limit
    [("summarise", {"text": "paper + survey + searches"})],
    "Reserve before each call, reconcile with the reported usage after, refund on cancellation,"
    " and count money in Decimal.",
]


def count_tokens(messages: list[dict[str, Any]]) -> int:
    """The scripted model's tokenizer: 4 characters a token, plus a little per message."""
    return sum(math.ceil(len(json.dumps(m)) / 4) + 4 for m in messages)


# -- what the agent reports ----------------------------------------------------------------------


@dataclass
class Ledger:
    """Spend per model (reserved vs actual) and calls per tool, for the summary."""

    charges: list[Charge] = field(default_factory=list)
    tools: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


class ProgressHook(ToolDispatchHook):
    """Prints each tool call as it ends, and counts it."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def after_invocation(self, invocation: ToolInvocation, result: ToolInvocationResult,
                               state: object) -> None:
        if result.skipped:
            self.ledger.skipped[invocation.tool_name] += 1
            print(f"    skipped {invocation.tool_name}: {result.reason}")
        else:
            self.ledger.tools[invocation.tool_name] += 1
            print(f"    ran {invocation.tool_name}({', '.join(invocation.arguments.values())})")


# -- model calls under budget --------------------------------------------------------------------

ModelCall = Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]]


def scripted_model_call(budget: Budget, prices: PriceTable, ledger: Ledger) -> ModelCall:
    """Reserve tokens, dollars and one request, call the scripted model, settle at its usage."""
    model = ScriptedModel(SCRIPT, model=SCRIPTED_MODEL, count_prompt=count_tokens,
                          count_answer=lambda message: math.ceil(len(json.dumps(message)) / 4) + 40)

    async def call(messages: list[dict[str, Any]]) -> dict[str, Any]:
        estimate = count_tokens(messages) + 50  # the prompt, plus room for tool schemas
        bound = prices.cost(SCRIPTED_MODEL, input_tokens=estimate,
                            output_tokens=MAX_OUTPUT_TOKENS)
        hold: dict[str, Amount] = {"tokens": estimate + MAX_OUTPUT_TOKENS, "usd": bound,
                                   "requests": 1}
        with labels(model=SCRIPTED_MODEL):  # the real clients label their calls themselves
            held = await budget.reserve(hold)
        async with held:
            reply = await model.complete(messages, MAX_OUTPUT_TOKENS)
            usage = openai_chat_usage(reply)
            assert usage is not None
            cost = prices.cost(SCRIPTED_MODEL, input_tokens=usage.input_tokens,
                               output_tokens=usage.output_tokens,
                               cached_input_tokens=usage.cached_input_tokens)
            charged: dict[str, Amount] = {"tokens": usage.total_tokens, "usd": cost, "requests": 1}
            await held.commit(charged)
        ledger.charges.append(Charge(
            api="chat", model=SCRIPTED_MODEL, input_estimate=estimate,
            max_output_tokens=MAX_OUTPUT_TOKENS, prompt_tokens=usage.input_tokens,
            completion_tokens=usage.output_tokens,
            cached_prompt_tokens=usage.cached_input_tokens, cache_write_tokens=0,
            reserved=hold, charged=charged, reserved_cost=bound, cost=cost,
            outcome="recorded"))
        return reply

    return call


def openai_model_call(base_url: str, model: str, budget: Budget, prices: PriceTable,
                      ledger: Ledger) -> ModelCall:  # pragma: no cover - needs an endpoint
    """The same through ``BudgetedAsyncOpenAI`` against a real OpenAI-compatible endpoint."""
    from openai import AsyncOpenAI

    from outlay.clients.openai import BudgetedAsyncOpenAI

    llm = BudgetedAsyncOpenAI(AsyncOpenAI(base_url=base_url), budget, prices=prices,
                              clamp=True, on_settle=ledger.charges.append)

    async def call(messages: list[dict[str, Any]]) -> dict[str, Any]:
        completion = await llm.chat.completions.create(
            model=model, messages=messages, tools=TOOL_SCHEMAS,
            max_completion_tokens=MAX_OUTPUT_TOKENS)
        reply: dict[str, Any] = completion.model_dump(exclude_none=True)
        return reply

    return call


# -- the agent loop ------------------------------------------------------------------------------


async def run_agent(call_model: ModelCall, dispatcher: ToolDispatcher,
                    max_turns: int = 8) -> tuple[str, str | None]:
    """Returns (answer, why it stopped early or None)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a careful research agent."},
        {"role": "user", "content": QUESTION}]
    gathered: list[str] = []
    for turn in range(1, max_turns + 1):
        try:
            reply = await call_model(messages)
        except BudgetExceeded as exc:
            return _from_gathered(gathered), f"the model budget ran out before turn {turn}: {exc}"
        message = reply["choices"][0]["message"]
        messages.append(message)
        calls = openai_chat_tool_calls(reply)
        if not calls:
            return str(message.get("content") or ""), None
        print(f"turn {turn}: the model asked for {len(calls)} tool calls")
        results = await dispatcher.dispatch_batch(calls)
        gathered += [str(r.output) for r in results if not r.skipped]
        messages += openai_chat_tool_messages(results)
    return _from_gathered(gathered), f"no answer after {max_turns} turns"


def _from_gathered(gathered: list[str]) -> str:
    if not gathered:
        return "(nothing gathered)"
    return "From what I gathered:\n" + "\n".join(f"  - {note}" for note in gathered)


async def main(tokens: int, usd: Decimal, tool_calls: int, per_tool: Mapping[str, int],
               base_url: str | None, model: str, price: TokenPrices | None) -> None:
    ledger = Ledger()
    # In memory, this run (store="sqlite:///budgets.db" would persist it), recording events
    # for the spend report printed at the end.
    budget = Budget(usd=usd, tokens=tokens, principal="agent:research",
                    store=RecordingStore(MemoryStore()))
    prices = PriceTable(PRICES if price is None else {model: price})
    dispatcher = ToolDispatcher(TOOLS, [
        ProgressHook(ledger),
        ToolCallLimitHook(per_tool, total=tool_calls),
        DispatchBudgetHook(AtomicBudget(tool_calls, name="tool-calls"), 1),
    ], errors="result")
    call_model = (scripted_model_call(budget, prices, ledger) if base_url is None
                  else openai_model_call(base_url, model, budget, prices, ledger))

    answer, stopped = await run_agent(call_model, dispatcher)

    print("\n== answer ==")
    if stopped:
        print(f"(stopped early: {stopped})")
    print(answer)
    print("\n== spend ==")
    by_model: dict[str, list[Charge]] = {}
    for charge in ledger.charges:
        by_model.setdefault(charge.model, []).append(charge)
    for name, charges in by_model.items():
        reserved = sum(c.reserved_tokens for c in charges)
        actual = sum(c.prompt_tokens + c.completion_tokens for c in charges)
        reserved_usd = sum((c.reserved_cost or Decimal(0) for c in charges), Decimal(0))
        actual_usd = sum((c.cost or Decimal(0) for c in charges), Decimal(0))
        print(f"model {name}: {len(charges)} calls; tokens reserved {reserved}, used {actual}; "
              f"usd reserved {reserved_usd:.6f}, spent {actual_usd:.6f}")
    spent = {usage.key.split("/")[-2]: usage for usage in await budget.usage()}
    print(f"run total: {spent['tokens'].spent} of {tokens} tokens, "
          f"{spent['usd'].spent:.6f} of {spent['usd'].cap} USD")
    for name in sorted(set(ledger.tools) | set(ledger.skipped)):
        print(f"tool {name}: {ledger.tools[name]} ran, {ledger.skipped[name]} skipped")
    print("\n== spend report ==")
    print((await SpendReport.from_store(budget.store)).to_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000, help="token budget for the run")
    parser.add_argument("--usd", type=Decimal, default=Decimal("0.05"), help="dollar cap")
    parser.add_argument("--tool-calls", type=int, default=10, help="tool calls for the run")
    parser.add_argument("--searches", type=int, default=3, help="web_search calls at most")
    parser.add_argument("--base-url", default=os.environ.get("OUTLAY_OPENAI_BASE_URL"),
                        help="an OpenAI-compatible endpoint (needs outlay[openai])")
    parser.add_argument("--model", default=os.environ.get("OUTLAY_MODEL", "gpt-4o-mini"))
    parser.add_argument("--input-price", type=Decimal, help="USD per million input tokens")
    parser.add_argument("--output-price", type=Decimal, help="USD per million output tokens")
    parser.add_argument("--cached-input-price", type=Decimal,
                        help="USD per million cached input tokens (default: the input price)")
    args = parser.parse_args()
    price = None
    if args.base_url:  # a real model is never free: its price must be given
        if args.input_price is None or args.output_price is None:
            parser.error("--base-url needs --input-price and --output-price (USD per million)")
        price = TokenPrices(args.input_price, args.output_price, args.cached_input_price)
    anyio.run(main, args.tokens, args.usd, args.tool_calls, {"web_search": args.searches},
              args.base_url, args.model, price)
