"""Agents SDK: ``RoutedModel`` under a real ``Runner`` with the SDK's ``ScriptedModel``."""

from __future__ import annotations

from decimal import Decimal

import pytest

pytest.importorskip("agents")

import httpx2
import openai
from agents import Agent, RunConfig, Runner
from agents.testing import ModelStep, ScriptedModel, assistant_message
from agents.usage import Usage

from outlay import (
    Backend,
    BackendKind,
    Budget,
    LimitSpec,
    MemoryStore,
    NoRoute,
    Principals,
    Router,
    TokenPrices,
    Window,
)
from outlay.routing.openai_agents import RoutedModel

pytestmark = pytest.mark.anyio

D = Decimal
PREMIUM = TokenPrices(D("5"), D("25"))
CHEAP = TokenPrices(D("1"), D("5"))
NO_TRACING = RunConfig(tracing_disabled=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Agents SDK runs on asyncio


def team(cap: str) -> Budget:
    owner = Principals(MemoryStore(), run_id="r1")
    return owner.get("team:a", caps=[LimitSpec("usd", Window.run(), D(cap))])


def answer(text: str) -> ModelStep:
    return ModelStep(output=[assistant_message(text)],
                     usage=Usage(requests=1, input_tokens=1000, output_tokens=200,
                                 total_tokens=1200))


def overloaded() -> ModelStep:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/responses")
    return ModelStep.raise_error(openai.InternalServerError(
        "overloaded", response=httpx2.Response(503, request=request), body=None))


async def test_each_call_is_routed_and_settled_at_its_usage() -> None:
    budget = team("0.025")
    router = Router([Backend("premium", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("cheap", BackendKind.CLOUD, prices=CHEAP)],
                    budget=budget, order="listed")
    model = RoutedModel(router, {"premium": ScriptedModel([answer("p1"), answer("p2")]),
                                 "cheap": ScriptedModel([answer("c1")])},
                        max_output_tokens=400)
    agent = Agent(name="a", model=model)
    outputs = [(await Runner.run(agent, "hi", run_config=NO_TRACING)).final_output
               for _ in range(3)]
    # premium costs 0.01 per answer and holds ~0.0101 at its worst case: the third call finds
    # 0.005 left and goes to cheap
    assert outputs == ["p1", "p2", "c1"]
    assert model.last is not None
    assert model.last.decision.reasons()["premium"].startswith("worst case")
    (usage,) = await budget.usage()
    assert usage.spent == 2 * D("0.01") + D("0.002")
    assert usage.held == 0


async def test_a_provider_error_falls_back_and_the_fallback_is_checked_again() -> None:
    premium_key, cheap_key = team("1"), team("0")
    router = Router([Backend("premium", BackendKind.CLOUD, prices=PREMIUM, budget=premium_key),
                     Backend("cheap", BackendKind.CLOUD, prices=CHEAP, budget=cheap_key)],
                    order="listed")
    cheap = ScriptedModel([answer("never")])
    model = RoutedModel(router, {"premium": ScriptedModel([overloaded()]), "cheap": cheap})
    with pytest.raises(NoRoute) as refused:
        await Runner.run(Agent(name="a", model=model), "hi", run_config=NO_TRACING)
    assert refused.value.decision.reasons()["premium"] == (
        "failed with InternalServerError; fell back")
    assert cheap.remaining_steps == 1  # the exhausted fallback was never called
    (usage,) = await premium_key.usage()
    assert (usage.spent, usage.held) == (0, 0)


async def test_streamed_calls_are_routed_with_fallback() -> None:
    budget = team("1")
    router = Router([Backend("premium", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("cheap", BackendKind.CLOUD, prices=CHEAP)],
                    budget=budget, order="listed")
    model = RoutedModel(router, {"premium": ScriptedModel([overloaded()]),
                                 "cheap": ScriptedModel([answer("streamed")])},
                        max_output_tokens=100)
    result = Runner.run_streamed(Agent(name="a", model=model), "hi", run_config=NO_TRACING)
    async for _ in result.stream_events():
        pass
    assert result.final_output == "streamed"
    assert model.last is not None
    assert model.last.backend.name == "cheap"
    (usage,) = await budget.usage()
    assert usage.spent == model.last.decision.cost  # a stream is charged its worst case


def test_the_default_worst_case_is_the_integrations_estimate_handoffs_included() -> None:
    from agents import ModelSettings, handoff

    from outlay.integrations.openai_agents import ModelCallInput, estimate_call_input

    router = Router([Backend("cheap", BackendKind.CLOUD, prices=CHEAP)], budget=team("1"))
    model = RoutedModel(router, {"cheap": ScriptedModel([])}, max_output_tokens=300)
    settings = ModelSettings()
    handoffs = [handoff(Agent(name="billing", handoff_description="Billing questions " * 20))]
    work = model.work("Be brief.", "hi", settings, [], handoffs)
    assert work.input_tokens == estimate_call_input(
        ModelCallInput("Be brief.", "hi", settings, [], handoffs))
    assert work.input_tokens > model.work("Be brief.", "hi", settings, [], []).input_tokens
    assert work.max_output_tokens == 300
