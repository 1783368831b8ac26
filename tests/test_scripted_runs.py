"""Random scripted pydantic-ai runs under a budget of every unit (hypothesis).

Where the provider reports no more than what was held, no cap is ever exceeded. Where it
reports more, the overshoot is committed (what is spent is exactly what was reported) and the
next call that does not fit is refused. At every moment a request is in flight, what is spent
plus what is held fits every cap: nothing is ever over-admitted.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from outlay import Budget, BudgetExceeded, TokenPrices
from outlay.integrations.pydantic_ai import OutlayCapability

PRICES = TokenPrices(Decimal("2"), Decimal("8"))
ESTIMATE, BOUND = 200, 100  # what each request holds: 200 in + 100 out, $0.0012


def cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * PRICES.input_per_mtok + output_tokens * PRICES.output_per_mtok) / 10**6


caps = st.fixed_dictionaries({
    "usd": st.decimals(Decimal("0.001"), Decimal("0.02"), places=4),
    "tokens": st.integers(300, 5_000),
    "input_tokens": st.integers(200, 4_000),
    "output_tokens": st.integers(100, 2_000),
    "requests": st.integers(1, 25),
    "tool_calls": st.integers(0, 30),
})


def responses(over: bool) -> st.SearchStrategy[list[tuple[int, int, int]]]:
    extra = 1_000 if over else 0
    return st.lists(st.tuples(st.integers(1, ESTIMATE + extra), st.integers(1, BOUND),
                              st.integers(1, 4)), min_size=1, max_size=20)


async def run(limits: dict[str, Any], script: list[tuple[int, int, int]]) -> None:
    budget = Budget(**limits)
    reported: list[tuple[int, int]] = []
    ran: list[int] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        # In flight: spent + held (this request's hold included) fits every cap.
        for usage in await budget.usage():
            assert usage.spent + usage.held <= usage.cap, usage
        # (FunctionModel estimates a usage it is given as zero: every count is at least 1.)
        input_tokens, output_tokens, calls = (script[len(reported)] if len(reported) < len(script)
                                              else (1, 1, 0))
        reported.append((input_tokens, output_tokens))
        n = len(reported)
        return ModelResponse(
            parts=[ToolCallPart("search", {"q": f"{n}-{i}"}, tool_call_id=f"c{n}-{i}")
                   for i in range(calls)] or [TextPart("done")],
            usage=RequestUsage(input_tokens=input_tokens, output_tokens=output_tokens))

    agent = Agent(FunctionModel(model), capabilities=[OutlayCapability(
        budget, prices=PRICES, estimate_input=ESTIMATE, max_output_tokens=BOUND)])

    @agent.tool_plain
    async def search(q: str) -> str:
        ran.append(1)
        return "ok"

    refusal: BudgetExceeded | None = None
    try:
        await agent.run("go")
    except BudgetExceeded as exc:
        refusal = exc
    spent = {u.key.split("/")[-2]: u for u in await budget.usage()}
    assert all(u.held == 0 for u in spent.values())
    # What is spent is exactly what the provider reported: an overshoot is never lost.
    assert spent["tokens"].spent == sum(i + o for i, o in reported)
    assert spent["input_tokens"].spent == sum(i for i, _ in reported)
    assert spent["usd"].spent == sum((cost(i, o) for i, o in reported), Decimal(0))
    assert spent["tool_calls"].spent == len(ran)
    assert spent["requests"].spent == len(reported)
    if refusal is not None:  # refused because it did not fit, never for nothing
        assert refusal.unit is not None
        limit = spent[refusal.unit]
        assert limit.spent + refusal.requested > limit.cap
    if all(i <= ESTIMATE for i, _ in reported):
        for unit, limit in spent.items():
            assert limit.spent <= limit.cap, unit


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limits=caps, script=responses(over=False))
def test_reports_within_the_holds_never_exceed_a_cap(limits: dict[str, Any],
                                                       script: list[tuple[int, int, int]]) -> None:
    asyncio.run(run(limits, script))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limits=caps, script=responses(over=True))
def test_an_overshoot_is_recorded_and_the_next_call_refused(
        limits: dict[str, Any], script: list[tuple[int, int, int]]) -> None:
    asyncio.run(run(limits, script))
