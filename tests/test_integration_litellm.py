"""LiteLLM SDK and Router, over real HTTP to the local fake provider
(``outlay.testing.FakeProvider``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anyio
import pytest

pytest.importorskip("litellm")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download

import litellm
from litellm.exceptions import InternalServerError
from litellm.router import Router

from outlay import BudgetExceeded, LimitSpec, Principals, TokenPrices, Window
from outlay.integrations.litellm import OutlayCallback, by_principal, litellm_prices
from outlay.testing import FakeProvider, Script

from .budgetkit import figures, unit_budget, whole

pytestmark = pytest.mark.anyio

BIG = TokenPrices(Decimal("10"), Decimal("30"))
SMALL = TokenPrices(Decimal("0.15"), Decimal("0.60"))
PRICES = {"openai/gpt-4o": BIG, "openai/gpt-4o-mini": SMALL}
MESSAGES: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def anyio_backend() -> str:
    """LiteLLM is asyncio only."""
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def register() -> Iterator[Any]:
    """Install a callback for one test, and take it out of every list LiteLLM copied it to."""
    installed: list[OutlayCallback] = []

    def install(callback: OutlayCallback) -> OutlayCallback:
        litellm.callbacks.append(callback)
        installed.append(callback)
        return callback

    yield install
    for callback in installed:
        litellm.logging_callback_manager.remove_callback_from_all_lists(callback)


async def complete(fake: FakeProvider, model: str = "openai/gpt-4o-mini", **options: Any) -> Any:
    return await litellm.acompletion(model=model, messages=MESSAGES, api_base=fake.openai_url,
                                     api_key="test", num_retries=0, **options)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 5 s) for something another thread or task does; LiteLLM offers no event."""
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but the condition
            await asyncio.sleep(0.01)


async def settled(callback: OutlayCallback) -> None:
    """Wait until every held call was settled or refunded (refunds run in tasks of their own)."""
    await until(lambda: callback.open_calls == 0)


async def test_a_completion_is_held_and_settled_at_the_reported_usage(
        fake: FakeProvider, register: Any) -> None:
    budget = unit_budget({"tokens": 10_000, "requests": 5, "usd": Decimal("1")})
    register(OutlayCallback(budget, prices=PRICES, max_output_tokens=200))
    fake.script(Script(input_tokens=40, output_tokens=20))
    response = await complete(fake)
    assert response.usage.total_tokens == 60
    assert fake.requests[-1].body["max_tokens"] == 200  # the bound held is sent
    await whole(budget, 60)
    await whole(budget, 1, "requests")
    await whole(budget, (40 * SMALL.input_per_mtok + 20 * SMALL.output_per_mtok) / 10**6, "usd")


async def test_a_call_that_does_not_fit_never_reaches_the_provider(
        fake: FakeProvider, register: Any) -> None:
    budget = unit_budget({"tokens": 100})
    register(OutlayCallback(budget, estimate_input=50, max_output_tokens=51))
    with pytest.raises(BudgetExceeded) as info:
        await complete(fake)
    assert (info.value.unit, info.value.requested) == ("tokens", 101)
    assert fake.requests == []
    await whole(budget, 0)


async def test_the_callers_max_tokens_is_the_bound(fake: FakeProvider, register: Any) -> None:
    budget = unit_budget({"output_tokens": 63})
    register(OutlayCallback(budget))
    with pytest.raises(BudgetExceeded) as info:
        await complete(fake, max_tokens=64)
    assert info.value.requested == 64
    assert fake.requests == []


async def test_a_failed_call_is_refunded(fake: FakeProvider, register: Any) -> None:
    budget = unit_budget({"tokens": 10_000})
    callback = register(OutlayCallback(budget))
    fake.script(Script(status=500))
    with pytest.raises(InternalServerError):
        await complete(fake)
    await settled(callback)
    await whole(budget, 0)


async def test_a_cancelled_call_is_refunded_when_its_task_ends(
        fake: FakeProvider, register: Any) -> None:
    budget = unit_budget({"tokens": 10_000})
    callback = register(OutlayCallback(budget, estimate_input=10, max_output_tokens=90))
    fake.script(Script(stall_after=0))
    task = asyncio.ensure_future(complete(fake))
    await until(lambda: bool(fake.requests))  # the request is in flight and held
    assert (await figures(budget, "tokens"))[1] == 100
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fake.release()
    await settled(callback)
    await whole(budget, 0)


async def test_an_overshoot_is_committed_and_the_next_call_refused(
        fake: FakeProvider, register: Any) -> None:
    budget = unit_budget({"tokens": 1000})
    register(OutlayCallback(budget, estimate_input=200, max_output_tokens=100))
    fake.script(Script(input_tokens=700, output_tokens=200))
    await complete(fake)
    await whole(budget, 900)  # more than the 300 held: committed, never capped at the hold
    with pytest.raises(BudgetExceeded):
        await complete(fake)
    assert len(fake.requests) == 1


async def test_concurrent_first_requests_are_admitted_only_as_far_as_the_budget_holds(
        fake: FakeProvider, register: Any) -> None:
    """LiteLLM's proxy admitted every concurrent first request of a fresh key. Here 10 calls
    start at once, each holding 100 tokens on a budget of 300: the provider sees exactly 3.
    The provider holds its answers until all 10 have been decided, so no settle can help."""
    budget = unit_budget({"tokens": 300})
    register(OutlayCallback(budget, estimate_input=40, max_output_tokens=60))
    fake.script(*[Script(stall_after=0, input_tokens=40, output_tokens=60)] * 10)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await complete(fake)
            outcomes.append("ok")
        except BudgetExceeded:
            outcomes.append("refused")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
            await until(lambda: outcomes.count("refused") == 7)
            assert await anyio.to_thread.run_sync(fake.wait_requests, 3)
            fake.release()
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 7
    assert len(fake.requests) == 3
    await whole(budget, 300)


async def test_a_router_checks_the_fallback_that_bills_not_the_model_asked_for(
        fake: FakeProvider, register: Any) -> None:
    """The LiteLLM lesson: a key's budget was checked against the requested model while a paid
    fallback billed. Here the dear model does not fit; the router falls back to the cheap one,
    which is held and charged at its own price, and the dear one is never called."""
    budget = unit_budget({"usd": Decimal("0.001")})
    register(OutlayCallback(budget, prices=PRICES, estimate_input=20, max_output_tokens=100))
    router = Router(model_list=[
        {"model_name": "big", "litellm_params": {"model": "openai/gpt-4o",
                                                 "api_base": fake.openai_url, "api_key": "t"}},
        {"model_name": "small", "litellm_params": {"model": "openai/gpt-4o-mini",
                                                   "api_base": fake.openai_url,
                                                   "api_key": "t"}}],
        fallbacks=[{"big": ["small"]}], num_retries=0)
    # big: 20 x $10 + 100 x $30 per million = $0.0032 > $0.001; small: $0.000063 fits.
    response: Any = await router.acompletion(model="big", messages=MESSAGES)
    assert [r.body["model"] for r in fake.requests] == ["gpt-4o-mini"]
    assert response.usage.prompt_tokens == 11
    await whole(budget, (11 * SMALL.input_per_mtok + 7 * SMALL.output_per_mtok) / 10**6, "usd")


async def test_an_exhausted_budget_does_not_spend_through_a_paid_fallback(
        fake: FakeProvider, register: Any) -> None:
    budget = unit_budget({"usd": Decimal("0.00001")})
    register(OutlayCallback(budget, prices=PRICES, estimate_input=20, max_output_tokens=100))
    router = Router(model_list=[
        {"model_name": "big", "litellm_params": {"model": "openai/gpt-4o",
                                                 "api_base": fake.openai_url, "api_key": "t"}},
        {"model_name": "small", "litellm_params": {"model": "openai/gpt-4o-mini",
                                                   "api_base": fake.openai_url,
                                                   "api_key": "t"}}],
        fallbacks=[{"big": ["small"]}], num_retries=0)
    with pytest.raises(BudgetExceeded):
        await router.acompletion(model="big", messages=MESSAGES)
    assert fake.requests == []


async def test_a_stream_is_settled_once_consumed(fake: FakeProvider, register: Any) -> None:
    budget = unit_budget({"tokens": 10_000})
    callback = register(OutlayCallback(budget, estimate_input=10, max_output_tokens=90))
    fake.script(Script(input_tokens=30, output_tokens=9))
    stream = await complete(fake, stream=True, stream_options={"include_usage": True})
    assert (await figures(budget, "tokens"))[1] == 100  # held while the stream is open
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream
                    if chunk.choices])
    assert text == "Hello from the fake provider."
    await settled(callback)
    await whole(budget, 39)


async def test_by_principal_nests_team_key_and_end_user(fake: FakeProvider,
                                                        register: Any) -> None:
    principals = Principals(templates={
        "team": [LimitSpec("requests", Window.run(), 3)],
        "user": [LimitSpec("requests", Window.run(), 2)]})
    register(OutlayCallback(by_principal(principals, levels=("team", "user"))))

    async def as_user(user: str) -> None:
        await complete(fake, metadata={"user_api_key_team_id": "acme",
                                       "user_api_key_end_user_id": user})

    await as_user("ann")
    await as_user("ann")
    with pytest.raises(BudgetExceeded) as info:
        await as_user("ann")  # her own cap of 2
    assert info.value.principal == "team:acme/user:ann"
    await as_user("bob")
    with pytest.raises(BudgetExceeded) as info:
        await as_user("cy")  # the team's cap of 3, although cy used nothing
    assert info.value.principal == "team:acme"
    assert len(fake.requests) == 3


def test_litellm_prices_are_exact_decimals() -> None:
    prices = litellm_prices(["gpt-4o-mini"])["gpt-4o-mini"]
    entry = litellm.model_cost["gpt-4o-mini"]
    assert prices.input_per_mtok == Decimal(repr(entry["input_cost_per_token"])) * 10**6
    assert isinstance(prices.output_per_mtok, Decimal)
    with pytest.raises(KeyError, match="no price"):
        litellm_prices(["no-such-model-anywhere"])


def test_bad_options_are_refused_up_front() -> None:
    with pytest.raises(TypeError, match="Budget"):
        OutlayCallback(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prices"):
        OutlayCallback(unit_budget({"usd": Decimal(1)}))
    with pytest.raises(ValueError, match="levels"):
        by_principal(Principals(), levels=("org",))
