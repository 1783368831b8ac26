"""``RoutedClient``: the model of each call picked from a list, on the real OpenAI SDK against
the scripted fake provider (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

openai = pytest.importorskip("openai", reason="the routed client tests use outlay[openai]")

from outlay import (  # noqa: E402
    Backend,
    BackendKind,
    Budget,
    LimitSpec,
    MemoryStore,
    NoRoute,
    Principals,
    RoutedClient,
    Router,
    TokenPrices,
    Window,
)
from outlay.testing import FakeProvider, Script  # noqa: E402

pytestmark = pytest.mark.anyio

D = Decimal
PREMIUM = TokenPrices(D("5"), D("25"))
CHEAP = TokenPrices(D("1"), D("5"))
MESSAGES = [{"role": "user", "content": "Summarise the budget rules."}]


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


def team(cap: str) -> Budget:
    owner = Principals(MemoryStore(), run_id="r1")
    return owner.get("team:a", caps=[LimitSpec("usd", Window.run(), D(cap))])


@pytest.fixture
async def sdk(provider: FakeProvider) -> AsyncIterator[Any]:
    """The real SDK, closed in the event loop that used it."""
    client = openai.AsyncOpenAI(api_key="test", base_url=provider.openai_url, max_retries=0,
                                http_client=openai.DefaultAsyncHttpxClient(verify=False))
    yield client
    await client.close()


async def test_each_call_goes_to_the_first_model_its_budget_affords(
    provider: FakeProvider, sdk: Any
) -> None:
    budget = team("0.012")
    router = Router([Backend("premium-1", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("cheap-1", BackendKind.CLOUD, prices=CHEAP)],
                    budget=budget, order="listed")
    llm = RoutedClient(router, sdk.chat.completions.create, hold=True)
    await llm.create(messages=MESSAGES, max_completion_tokens=300)
    assert llm.last is not None
    first = llm.last.decision
    assert first.chosen is not None
    assert first.chosen.name == "premium-1"
    await llm.create(messages=MESSAGES, max_completion_tokens=300)
    second = llm.last.decision
    assert second.chosen is not None
    assert second.chosen.name == "cheap-1"
    assert "premium-1" in second.reasons()
    # what the server saw: the model was rewritten per call
    assert [r.body["model"] for r in provider.requests] == ["premium-1", "cheap-1"]
    (usage,) = await budget.usage()
    assert usage.spent == (first.cost or 0) + (second.cost or 0)  # worst cases, held and kept
    assert usage.spent <= usage.cap


async def test_a_provider_error_falls_back_to_the_next_model(
    provider: FakeProvider, sdk: Any
) -> None:
    provider.script(Script(status=503, error_type="overloaded"), Script(text="from cheap"))
    budget = team("1")
    router = Router([Backend("premium-1", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("cheap-1", BackendKind.CLOUD, prices=CHEAP)],
                    budget=budget, order="listed")
    llm = RoutedClient(router, sdk.chat.completions.create, hold=True,
                       fallback_on=(openai.APIError,))
    completion = await llm.create(messages=MESSAGES, max_completion_tokens=50)
    assert completion.choices[0].message.content == "from cheap"
    assert llm.last is not None
    assert llm.last.decision.reasons() == {
        "premium-1": "failed with InternalServerError; fell back"}
    (usage,) = await budget.usage()
    assert usage.spent == llm.last.charged  # the failed premium attempt was released


async def test_no_model_fits_and_no_request_is_sent(provider: FakeProvider, sdk: Any) -> None:
    router = Router([Backend("premium-1", BackendKind.CLOUD, prices=PREMIUM)],
                    budget=team("0.0001"))
    llm = RoutedClient(router, sdk.chat.completions.create)
    with pytest.raises(NoRoute, match="premium-1"):
        await llm.create(messages=MESSAGES, max_completion_tokens=300)
    assert provider.requests == []


def test_the_worst_case_needs_an_output_bound() -> None:
    router = Router([Backend("local", BackendKind.LOCAL)])

    async def create(**params: Any) -> str:
        return "never"

    llm = RoutedClient(router, create)
    with pytest.raises(ValueError, match="no output bound"):
        llm.work({"messages": MESSAGES})
    work = llm.work({"messages": MESSAGES, "max_tokens": 100, "n": 2})
    assert work.max_output_tokens == 200
    assert work.input_tokens > 0
    per_call = RoutedClient(router, create, estimate_input=lambda params: 7,
                            default_max_output_tokens=9).work({"messages": MESSAGES})
    assert (per_call.input_tokens, per_call.max_output_tokens) == (7, 9)
