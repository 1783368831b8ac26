"""pydantic-ai: ``RoutedModel`` under a real ``Agent`` with scripted ``FunctionModel``s."""

from __future__ import annotations

from decimal import Decimal

import pytest

pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from outlay import (
    Backend,
    BackendKind,
    Budget,
    Ladder,
    LimitSpec,
    MemoryStore,
    NoRoute,
    Principals,
    Router,
    TokenPrices,
    Window,
)
from outlay.routing.pydantic_ai import RoutedModel

pytestmark = pytest.mark.anyio

D = Decimal
PREMIUM = TokenPrices(D("5"), D("25"))
CHEAP = TokenPrices(D("1"), D("5"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # pydantic-ai runs on asyncio


def team(cap: str) -> Budget:
    owner = Principals(MemoryStore(), run_id="r1")
    return owner.get("team:a", caps=[LimitSpec("usd", Window.run(), D(cap))])


def scripted(name: str, failures: list[str] | None = None) -> FunctionModel:
    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if failures:
            raise ModelHTTPError(503, name, body=failures.pop())
        return ModelResponse(parts=[TextPart(f"answer from {name}")], model_name=name,
                             usage=RequestUsage(input_tokens=1000, output_tokens=200))
    return FunctionModel(answer, model_name=name)


async def test_an_agent_steps_down_to_the_cheap_model_as_money_runs_low() -> None:
    budget = team("0.05")
    router = Router([Backend("premium", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("cheap", BackendKind.CLOUD, prices=CHEAP)],
                    budget=budget, order="listed", ladder=Ladder({D("0.5"): "cheap"}))
    model = RoutedModel(router, {"premium": scripted("premium"), "cheap": scripted("cheap")},
                        max_output_tokens=500)
    agent = Agent(model)
    outputs = [(await agent.run("Plan the trip.")).output for _ in range(4)]
    # premium: 1000 x 5 + 200 x 25 = 0.01 per answer; cheap 0.002. Under 50% left: cheap.
    assert outputs == ["answer from premium"] * 3 + ["answer from cheap"]
    assert model.last is not None
    assert "ladder: 40% of the budget left, below 50%" in model.last.decision.reasons()["premium"]
    (usage,) = await budget.usage()
    assert usage.spent == 3 * D("0.01") + D("0.002")  # what the responses' usage cost
    assert usage.held == 0


async def test_a_provider_error_falls_back_only_to_a_model_its_budget_affords() -> None:
    premium_key, cheap_key = team("1"), team("0")
    router = Router([Backend("premium", BackendKind.CLOUD, prices=PREMIUM, budget=premium_key),
                     Backend("cheap", BackendKind.CLOUD, prices=CHEAP, budget=cheap_key)],
                    order="listed")
    model = RoutedModel(router, {"premium": scripted("premium", ["overloaded"]),
                                 "cheap": scripted("cheap")})
    with pytest.raises(NoRoute) as refused:
        await Agent(model).run("Plan the trip.")
    reasons = refused.value.decision.reasons()
    assert reasons["premium"] == "failed with ModelHTTPError; fell back"
    assert reasons["cheap"].startswith("worst case")
    for key in (premium_key, cheap_key):
        (usage,) = await key.usage()
        assert (usage.spent, usage.held) == (0, 0)


async def test_fallback_to_a_model_that_fits() -> None:
    budget = team("1")
    router = Router([Backend("premium", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("cheap", BackendKind.CLOUD, prices=CHEAP)],
                    budget=budget, order="listed")
    model = RoutedModel(router, {"premium": scripted("premium", ["overloaded"]),
                                 "cheap": scripted("cheap")})
    result = await Agent(model).run("Plan the trip.")
    assert result.output == "answer from cheap"
    (usage,) = await budget.usage()
    assert usage.spent == D("0.002")


async def test_streamed_runs_are_routed_and_held_at_the_worst_case() -> None:
    budget = team("1")
    router = Router([Backend("cheap", BackendKind.CLOUD, prices=CHEAP)], budget=budget)

    async def stream(messages: list[ModelMessage], info: AgentInfo):  # type: ignore[no-untyped-def]
        yield "streamed "
        yield "answer"

    model = RoutedModel(router, {"cheap": FunctionModel(stream_function=stream)},
                        max_output_tokens=100)
    async with Agent(model).run_stream("Plan the trip.") as run:
        text = await run.get_output()
    assert text == "streamed answer"
    assert model.last is not None
    (usage,) = await budget.usage()
    assert usage.spent == model.last.charged == model.last.decision.cost


def test_the_default_worst_case_is_the_integrations_estimate() -> None:
    from pydantic_ai.messages import ModelRequest
    from pydantic_ai.models import ModelRequestParameters
    from pydantic_ai.tools import ToolDefinition

    from outlay.integrations.pydantic_ai import estimate_messages_input

    router = Router([Backend("cheap", BackendKind.CLOUD, prices=CHEAP)], budget=team("1"))
    model = RoutedModel(router, {"cheap": scripted("cheap")}, max_output_tokens=300)
    messages: list[ModelMessage] = [ModelRequest.user_text_prompt("Plan the trip.")]
    tool = ToolDefinition(name="search", description="Search the web " * 10,
                          parameters_json_schema={"type": "object", "properties": {}})
    parameters = ModelRequestParameters(function_tools=[tool])
    work = model.work(messages, None, parameters)
    assert work.input_tokens == estimate_messages_input(messages, parameters)
    assert work.input_tokens > model.work(messages, None, ModelRequestParameters()).input_tokens
    assert work.max_output_tokens == 300
