"""An agent that starts on the premium model and finishes on the cheap one as money runs low.

    python examples/routing_agent.py              # scripted models, no network, no API key
    python examples/routing_agent.py --usd 0.012  # a smaller budget: down to the local model

A pydantic-ai agent answers a list of questions. Its model is an ``outlay`` ``RoutedModel``: for
every request the router takes the first model, in the order premium -> cheap -> local, whose
worst case (prompt estimate + output bound, at that model's prices) fits what is left of the
budget, and a ladder steps down early: under 40% left it starts at the cheap model, under 10% at
the free local one. Every decision is printed as a table: the chosen model, every refused one
and why, and what remained. The models are pydantic-ai ``FunctionModel``s with scripted answers
and usage; swap in ``OpenAIChatModel(...)`` etc. for real ones.
"""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import Any

import anyio
import anyio.lowlevel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from outlay import (
    Backend,
    BackendKind,
    Budget,
    Ladder,
    MemoryStore,
    NoRoute,
    RecordingStore,
    Routed,
    Router,
    SpendReport,
    TokenPrices,
    read_remaining,
)
from outlay.routing.pydantic_ai import RoutedModel

QUESTIONS = [
    "Which hotels are near the venue?",
    "Compare the two train routes.",
    "Draft the travel policy summary.",
    "What is the cheapest flight on Friday?",
    "Summarise the visa rules.",
    "List three restaurants for the team dinner.",
    "Check the conference schedule for clashes.",
    "Write the packing list.",
]
PRICES = {  # USD per million tokens
    "premium-large": TokenPrices(Decimal("5"), Decimal("25")),
    "cheap-mini": TokenPrices(Decimal("0.15"), Decimal("0.60")),
}


def scripted(name: str) -> FunctionModel:
    """A model that answers with a canned text and reports 900 input / 250 output tokens."""

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await anyio.lowlevel.checkpoint()  # stands in for the HTTP call
        question = str(getattr(messages[-1].parts[-1], "content", "?"))
        return ModelResponse(parts=[TextPart(f"[{name}] answer to: {question}")],
                             model_name=name,
                             usage=RequestUsage(input_tokens=900, output_tokens=250))

    return FunctionModel(answer, model_name=name)


async def main(usd: Decimal) -> None:
    # this run only, in memory, recording events for the spend report printed at the end
    budget = Budget(usd=usd, store=RecordingStore(MemoryStore()))
    router = Router(
        [Backend("premium-large", BackendKind.CLOUD, prices=PRICES["premium-large"]),
         Backend("cheap-mini", BackendKind.CLOUD, prices=PRICES["cheap-mini"]),
         Backend("local-llama", BackendKind.LOCAL, node="this-laptop")],
        budget=budget, order="listed",  # a preference list: strongest first
        ladder=Ladder({Decimal("0.40"): "cheap-mini", Decimal("0.10"): "local-llama"}))
    used: list[str] = []

    def show(routed: Routed[Any]) -> None:
        chosen = routed.backend.name
        if not used or used[-1] != chosen:
            print(routed.decision)  # the whole table when the model changes
        else:
            print(f"{routed.decision.work.describe()} -> {chosen}")
        used.append(chosen)

    model = RoutedModel(router, {name: scripted(name) for name in
                                 ("premium-large", "cheap-mini", "local-llama")},
                        max_output_tokens=400, on_decision=show)
    agent = Agent(model, instructions="You plan team trips. Be brief.")
    for number, question in enumerate(QUESTIONS, 1):
        try:
            result = await agent.run(question)
        except NoRoute as refused:
            print(f"question {number}: no model can take it\n{refused.decision}")
            break
        print(f"question {number}: {result.output}\n")
    left = await read_remaining(budget, "usd")
    spent = usd - left.left
    print(f"models used: {', '.join(f'{m} x{used.count(m)}' for m in dict.fromkeys(used))}")
    print(f"spent {spent} of {usd} USD; {left}")
    print("\n== spend report ==")
    print((await SpendReport.from_store(budget.store)).to_text())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--usd", type=Decimal, default=Decimal("0.05"))
    anyio.run(main, parser.parse_args().usd)
