"""BudgetedAsyncOpenAI with the real openai SDK over real HTTP against outlay.testing.FakeProvider.

Runs on asyncio and trio: the SDK does its I/O through httpx2/anyio, which supports both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import anyio
import anyio.to_thread
import httpx2 as httpx
import openai
import pytest
from structlog.testing import capture_logs

from outlay import Budget, BudgetExceeded, TokenPrices, UnknownModelPrice
from outlay.clients import Charge, estimate_prompt_tokens
from outlay.clients.openai import BudgetedAsyncOpenAI
from outlay.testing import FakeProvider, Script

from .budgetkit import figures, token_budget, unit_budget, whole

pytestmark = pytest.mark.anyio

INPUT = 20  # a fixed input estimate, so the arithmetic below is exact
MESSAGES = [{"role": "user", "content": "Say hello."}]


def fixed(params: Any) -> int:
    return INPUT


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def client(fake: FakeProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    # Plain HTTP to 127.0.0.1: no TLS context to build per test.
    sdk = openai.AsyncOpenAI(api_key="test", base_url=fake.openai_url, max_retries=0,
                             http_client=openai.DefaultAsyncHttpxClient(verify=False))
    yield sdk
    await sdk.close()


# -- Chat Completions, non-streaming ---------------------------------------------------------


async def test_chat_records_reported_usage(fake: FakeProvider,
                                           client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, budget, on_settle=charges.append)
    fake.script(Script(input_tokens=13, output_tokens=9))
    completion = await llm.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                                   max_completion_tokens=50)
    assert completion.choices[0].message.content == "Hello from the fake provider."
    await whole(budget, 22)
    assert fake.requests[0].body["max_completion_tokens"] == 50
    estimate = estimate_prompt_tokens([MESSAGES], 1)
    [charge] = charges
    assert charge.outcome == "recorded"
    assert (charge.input_estimate, charge.max_output_tokens) == (estimate, 50)
    assert (charge.prompt_tokens, charge.completion_tokens) == (13, 9)


async def test_chat_legacy_max_tokens_and_n_bound_the_output(
        fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed,
                              on_settle=charges.append)
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_tokens=30, n=3)
    assert fake.requests[0].body["max_tokens"] == 30
    assert "max_completion_tokens" not in fake.requests[0].body
    assert charges[0].reserved_tokens == INPUT + 90


async def test_refused_before_any_request(fake: FakeProvider,
                                          client: openai.AsyncOpenAI) -> None:
    budget = token_budget(100)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    with pytest.raises(BudgetExceeded) as info:
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=81)
    assert (info.value.requested, info.value.available) == (INPUT + 81, 100)
    with pytest.raises(BudgetExceeded):
        await llm.responses.create(model="m", input="hi", max_output_tokens=81)
    assert fake.requests == []
    await whole(budget, 0)


async def test_missing_output_bound(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget)
    with pytest.raises(ValueError, match="max_completion_tokens"):
        await llm.chat.completions.create(model="m", messages=MESSAGES)
    assert fake.requests == []
    llm = BudgetedAsyncOpenAI(client, budget, default_max_output_tokens=64)
    await llm.chat.completions.create(model="m", messages=MESSAGES)
    await llm.responses.create(model="m", input="hi")
    assert fake.requests[0].body["max_completion_tokens"] == 64
    assert fake.requests[1].body["max_output_tokens"] == 64


async def test_clamp_lowers_the_bound_sent(fake: FakeProvider,
                                           client: openai.AsyncOpenAI) -> None:
    budget = token_budget(100)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed, clamp=True,
                              on_settle=charges.append)
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=500)
    assert fake.requests[0].body["max_completion_tokens"] == 100 - INPUT
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_tokens=500, n=2)
    assert fake.requests[1].body["max_tokens"] == (100 - INPUT - 18) // 2
    assert charges[1].max_output_tokens == 2 * ((100 - INPUT - 18) // 2)
    await whole(budget, 36)


async def test_clamp_refuses_below_min_output(fake: FakeProvider,
                                              client: openai.AsyncOpenAI) -> None:
    budget = token_budget(100)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed, clamp=True,
                              min_output_tokens=81)
    with pytest.raises(BudgetExceeded) as info:
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=500)
    assert info.value.requested == INPUT + 500  # 80 would fit: below min_output_tokens
    assert fake.requests == []
    await whole(budget, 0)


async def test_clamp_reads_the_room_left_by_calls_in_flight(
        fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = token_budget(100)
    in_flight = await budget.reserve({"tokens": 30})  # another call, still running
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed, clamp=True,
                              on_settle=charges.append)
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=400)
    # The refusal of 420 said 70 were left: 70 - 20 = 50 out, one retry.
    assert fake.requests[0].body["max_completion_tokens"] == 50
    assert charges[0].reserved["tokens"] == INPUT + 50
    await in_flight.release()
    await whole(budget, 18)


async def test_clamp_by_output_tokens_and_usd(fake: FakeProvider,
                                              client: openai.AsyncOpenAI) -> None:
    budget = unit_budget({"output_tokens": 60, "usd": Decimal("1")})
    llm = BudgetedAsyncOpenAI(client, budget, prices=PRICES, estimate_input=fixed, clamp=True)
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=400)
    assert fake.requests[0].body["max_completion_tokens"] == 60
    await whole(budget, 7, "output_tokens")
    await whole(budget, Decimal("0.0000975"), "usd")  # 11 in at 2.50, 7 out at 10 per M


@pytest.mark.parametrize("status", [500, 429])
async def test_error_refunds(fake: FakeProvider, client: openai.AsyncOpenAI,
                             status: int) -> None:
    budget = token_budget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, budget, on_settle=charges.append)
    fake.script(Script(status=status), Script(status=status))
    with pytest.raises(openai.APIStatusError) as info:
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=50)
    assert info.value.status_code == status
    with pytest.raises(openai.APIStatusError):
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=50, stream=True)
    await whole(budget, 0)
    assert [c.outcome for c in charges] == ["refunded", "refunded"]
    assert len(fake.requests) == 2  # retries disabled: one request each


async def test_cancelled_call_refunds(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    fake.script(Script(stall_after=0))
    async with anyio.create_task_group() as tg:
        async def call() -> None:
            await llm.chat.completions.create(model="m", messages=MESSAGES,
                                              max_completion_tokens=50)

        tg.start_soon(call)
        assert await anyio.to_thread.run_sync(fake.stalled.wait, 5.0)
        # held while the request is in flight
        assert (await figures(budget, "tokens"))[1] == INPUT + 50
        tg.cancel_scope.cancel()
    fake.release()
    await whole(budget, 0)


async def test_no_usage_reported_charges_conservatively(fake: FakeProvider,
                                                        client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    fake.script(Script(report_usage=False))
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=50)
    await whole(budget, INPUT + 50)


# -- Chat Completions, streaming -------------------------------------------------------------


async def test_chat_stream_records_usage(fake: FakeProvider,
                                         client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    fake.script(Script(input_tokens=12, output_tokens=6))
    stream = await llm.chat.completions.create(
        model="m", messages=MESSAGES, max_completion_tokens=50, stream=True,
        stream_options={"include_usage": False})
    assert (await figures(budget, "tokens"))[1] == INPUT + 50
    text = ""
    async with stream:
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "Hello from the fake provider."
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}
    await whole(budget, 18)
    assert stream.charge is not None
    assert stream.charge.outcome == "recorded"


async def test_chat_stream_settles_without_async_with(fake: FakeProvider,
                                                      client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    stream = await llm.chat.completions.create(model="m", messages=MESSAGES,
                                               max_completion_tokens=50, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    await whole(budget, 18)
    await stream.close()  # idempotent
    await whole(budget, 18)


async def test_chat_stream_early_exit_is_conservative(fake: FakeProvider,
                                                      client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    stream = await llm.chat.completions.create(model="m", messages=MESSAGES,
                                               max_completion_tokens=50, stream=True)
    async with stream:
        async for _ in stream:
            break
    await whole(budget, INPUT + 50)
    assert stream.charge is not None
    assert stream.charge.outcome == "conservative"


async def test_chat_stream_cancelled_mid_stream(fake: FakeProvider,
                                                client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    fake.script(Script(stall_after=3))
    got_three = anyio.Event()
    seen: list[object] = []
    async with anyio.create_task_group() as tg:
        async def consume() -> None:
            stream = await llm.chat.completions.create(model="m", messages=MESSAGES,
                                                       max_completion_tokens=50, stream=True)
            seen.append(stream)
            async with stream:
                async for chunk in stream:
                    seen.append(chunk)
                    if len(seen) == 4:
                        got_three.set()

        tg.start_soon(consume)
        await got_three.wait()
        assert await anyio.to_thread.run_sync(fake.stalled.wait, 5.0)
        await anyio.wait_all_tasks_blocked()  # the consumer waits on the stalled socket
        assert (await figures(budget, "tokens"))[1] == INPUT + 50
        tg.cancel_scope.cancel()
    fake.release()
    await whole(budget, INPUT + 50)
    assert len(seen) == 4


async def test_chat_stream_dropped_connection(fake: FakeProvider,
                                              client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    fake.script(Script(drop_after=2))
    stream = await llm.chat.completions.create(model="m", messages=MESSAGES,
                                               max_completion_tokens=50, stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass
    await whole(budget, INPUT + 50)


async def test_chat_stream_error_event(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    fake.script(Script(error_after=2))
    stream = await llm.chat.completions.create(model="m", messages=MESSAGES,
                                               max_completion_tokens=50, stream=True)

    async def drain() -> None:
        async with stream:
            async for _ in stream:
                pass

    with pytest.raises(openai.APIError):
        await drain()
    await whole(budget, INPUT + 50)


# -- Responses --------------------------------------------------------------------------------


async def test_responses_records_usage(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, budget, on_settle=charges.append)
    fake.script(Script(input_tokens=30, output_tokens=4))
    response = await llm.responses.create(model="m", input="Say hello.",
                                          instructions="Be brief.", max_output_tokens=40)
    assert response.output_text == "Hello from the fake provider."
    assert fake.requests[0].path == "/v1/responses"
    assert fake.requests[0].body["max_output_tokens"] == 40
    await whole(budget, 34)
    assert charges[0].input_estimate == estimate_prompt_tokens(["Say hello.", "Be brief."], 2)


async def test_responses_stream(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    fake.script(Script(input_tokens=30, output_tokens=4), Script(error_after=2))
    stream = await llm.responses.create(model="m", input=[{"role": "user", "content": "hi"}],
                                        max_output_tokens=40, stream=True)
    async with stream:
        types = [event.type async for event in stream]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    await whole(budget, 34)
    # An error event ends the stream without a completed response: conservative.
    stream = await llm.responses.create(model="m", input="hi", max_output_tokens=40,
                                        stream=True)
    async with stream:
        types = [event.type async for event in stream]
    assert types[-1] == "error"
    await whole(budget, 34 + INPUT + 40)


# -- money ------------------------------------------------------------------------------------


def money_budget(cap: str, **more: int) -> Budget:
    return unit_budget({"usd": Decimal(cap), **more})


PRICES = TokenPrices(input_per_mtok=Decimal("2.50"), output_per_mtok=Decimal("10.00"))


async def test_money_records_exact_cost(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    dollars = money_budget("1")
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, dollars, prices=PRICES, estimate_input=fixed,
                              on_settle=charges.append)
    fake.script(Script(input_tokens=1000, output_tokens=300))
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=500)
    await whole(dollars, Decimal("0.0055"), "usd")  # 1000 * 2.50e-6 + 300 * 10e-6
    assert charges[0].reserved_cost == Decimal("0.00505")  # 20 * 2.50e-6 + 500 * 10e-6
    assert charges[0].cost == Decimal("0.0055")


async def test_money_refusal_and_clamp(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    # 20 in (0.00005) + 100 out (0.001)
    budget = money_budget("0.00105", tokens=10_000)
    prices = {"m": PRICES}
    llm = BudgetedAsyncOpenAI(client, budget, prices=prices, estimate_input=fixed)
    with pytest.raises(BudgetExceeded) as info:
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=101)
    assert info.value.unit == "usd"
    with pytest.raises(UnknownModelPrice):
        await llm.chat.completions.create(model="other", messages=MESSAGES,
                                          max_completion_tokens=1)
    assert fake.requests == []
    await whole(budget, 0)  # one reservation: the refusal by usd took no tokens either
    clamped = BudgetedAsyncOpenAI(client, budget, prices=prices, estimate_input=fixed,
                                  clamp=True)
    fake.script(Script(report_usage=False))
    await clamped.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=5000)
    assert fake.requests[0].body["max_completion_tokens"] == 100
    await whole(budget, Decimal("0.00105"), "usd")
    await whole(budget, INPUT + 100)


async def test_a_usd_cap_needs_prices(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(TypeError, match="prices="):
        BudgetedAsyncOpenAI(client, money_budget("1"))
    with pytest.raises(TypeError, match="outlay budget"):
        BudgetedAsyncOpenAI(client, object())


@pytest.mark.parametrize(("api", "stream"), [("chat", False), ("chat", True),
                                             ("responses", False), ("responses", True)])
async def test_cached_input_is_charged_at_the_cached_rate(
        fake: FakeProvider, client: openai.AsyncOpenAI, api: str, stream: bool) -> None:
    dollars = money_budget("1")
    prices = TokenPrices(Decimal("2.50"), Decimal("10.00"), cached_input_per_mtok=Decimal("1.25"))
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, dollars, prices=prices, estimate_input=fixed,
                              on_settle=charges.append)
    fake.script(Script(input_tokens=1000, cache_read_input_tokens=800, output_tokens=300))
    if api == "chat":
        if stream:
            async with await llm.chat.completions.create(
                    model="m", messages=MESSAGES, max_completion_tokens=500,
                    stream=True) as chunks:
                async for _ in chunks:
                    pass
        else:
            await llm.chat.completions.create(model="m", messages=MESSAGES,
                                              max_completion_tokens=500)
    elif stream:
        async with await llm.responses.create(model="m", input="Say hello.",
                                              max_output_tokens=500, stream=True) as events:
            async for _ in events:
                pass
    else:
        await llm.responses.create(model="m", input="Say hello.", max_output_tokens=500)
    # 200 uncached at 2.50, 800 cached at 1.25, 300 out at 10 (per million tokens)
    await whole(dollars, Decimal("0.0045"), "usd")
    assert charges[0].outcome == "recorded"
    assert (charges[0].prompt_tokens, charges[0].cached_prompt_tokens) == (1000, 800)


# -- concurrency ------------------------------------------------------------------------------


async def test_parallel_calls_never_exceed_the_budget(fake: FakeProvider,
                                                      client: openai.AsyncOpenAI) -> None:
    budget = token_budget(3 * (INPUT + 50))
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    fake.default = Script(stall_after=0, input_tokens=INPUT, output_tokens=50)
    outcomes: list[str] = []

    async def call() -> None:
        try:
            await llm.chat.completions.create(model="m", messages=MESSAGES,
                                              max_completion_tokens=50)
        except BudgetExceeded:
            outcomes.append("refused")
        else:
            outcomes.append("ok")

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(call)
        assert await anyio.to_thread.run_sync(fake.wait_requests, 3)
        await anyio.wait_all_tasks_blocked()
        assert sorted(outcomes) == ["refused"] * 5
        assert len(fake.requests) == 3
        fake.release()
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 5
    await whole(budget, 3 * (INPUT + 50))


async def test_settlement_is_logged_and_a_failing_observer_is_skipped(
        fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)

    def broken(charge: Charge) -> None:
        raise RuntimeError("observer bug")

    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed, on_settle=broken)
    with capture_logs() as logs:
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=50)
    events = {entry["event"]: entry for entry in logs}
    settled = events["outlay.clients.settled"]
    assert (settled["outcome"], settled["prompt_tokens"], settled["completion_tokens"]) == (
        "recorded", 11, 7)
    assert "observer bug" in events["outlay.clients.on_settle_failed"]["error"]
    await whole(budget, 18)


# -- drop-in: pass-through, the frameworks' own clients, parse, embeddings, tool calls --------


async def test_unwrapped_attributes_pass_through(client: openai.AsyncOpenAI) -> None:
    llm = BudgetedAsyncOpenAI(client, token_budget(1000))
    assert llm.base_url == client.base_url
    assert llm.api_key == "test"
    assert llm.models.list == client.models.list
    assert llm.chat.completions.list == client.chat.completions.list
    assert llm.responses.retrieve == client.responses.retrieve
    copy = llm.with_options(max_retries=3)
    assert isinstance(copy, BudgetedAsyncOpenAI)
    assert copy.budget is llm.budget
    assert copy.client.max_retries == 3
    with pytest.raises(AttributeError, match="not budgeted"):
        llm.chat.completions.with_raw_response  # noqa: B018 - would bypass the budget
    with pytest.raises(AttributeError, match="not budgeted"):
        llm.responses.with_streaming_response  # noqa: B018


async def test_tool_call_batches_are_admitted_all_or_nothing(
        fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = unit_budget({"tokens": 10_000, "tool_calls": 5})
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    two = Script(tool_calls=(("search", "{}"), ("search", "{}")))
    three = Script(tool_calls=(("search", "{}"),) * 3)
    fake.script(two, three, two)
    for _ in range(2):
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=50)
    await whole(budget, 5, "tool_calls")
    with pytest.raises(BudgetExceeded) as info:  # 2 more do not fit: neither is admitted
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=50)
    assert info.value.unit == "tool_calls"
    await whole(budget, 5, "tool_calls")
    await whole(budget, 3 * 18)  # the refused batch's call itself was paid and is charged


async def test_parse_is_budgeted(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed)
    parsed = await llm.chat.completions.parse(model="m", messages=MESSAGES,
                                              max_completion_tokens=50)
    assert parsed.choices[0].message.content == "Hello from the fake provider."
    response = await llm.responses.parse(model="m", input="hi", max_output_tokens=50)
    assert response.output_text == "Hello from the fake provider."
    await whole(budget, 36)
    with pytest.raises(BudgetExceeded):
        await llm.chat.completions.parse(model="m", messages=MESSAGES,
                                         max_completion_tokens=5000)
    assert len(fake.requests) == 2


def _embeddings(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={
        "object": "list", "model": "e",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
        "usage": {"prompt_tokens": 6, "total_tokens": 6}})


async def test_embeddings_are_budgeted() -> None:
    # The fake provider has no embeddings route; an httpx transport answers in the API's shape.
    budget = unit_budget({"tokens": 100, "requests": 2})
    async with openai.AsyncOpenAI(api_key="test", max_retries=0, http_client=httpx.AsyncClient(
            transport=httpx.MockTransport(_embeddings))) as sdk:
        llm = BudgetedAsyncOpenAI(sdk, budget)
        result = await llm.embeddings.create(model="e", input=["hello world"])
        assert result.data[0].embedding == [0.5, 0.25]
        with pytest.raises(BudgetExceeded):  # 700 letters estimate at 117 tokens: over 100
            await llm.embeddings.create(model="e", input="x" * 700)
        await llm.embeddings.create(model="e", input="again")
        with pytest.raises(BudgetExceeded):  # two requests are the cap
            await llm.embeddings.create(model="e", input="once more")
    await whole(budget, 12)
    await whole(budget, 2, "requests")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # pydantic-ai runs on asyncio only
async def test_pydantic_ai_accepts_the_wrapped_client(fake: FakeProvider,
                                                      client: openai.AsyncOpenAI) -> None:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    budget = unit_budget({"tokens": 1000, "requests": 1})
    llm = BudgetedAsyncOpenAI(client, budget, default_max_output_tokens=100)
    agent = Agent(OpenAIChatModel("m", provider=OpenAIProvider(openai_client=llm)))  # type: ignore[call-overload]
    result = await agent.run("Say hello.")
    assert result.output == "Hello from the fake provider."
    await whole(budget, 18)
    with pytest.raises(BudgetExceeded):
        await agent.run("Again.")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the Agents SDK runs on asyncio only
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_the_agents_sdk_accepts_the_wrapped_client(
        fake: FakeProvider, client: openai.AsyncOpenAI, api: str) -> None:
    pytest.importorskip("agents")
    from agents import Agent, ModelSettings, RunConfig, Runner
    from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
    from agents.models.openai_responses import OpenAIResponsesModel

    budget = unit_budget({"tokens": 1000, "requests": 2})
    llm = BudgetedAsyncOpenAI(client, budget, default_max_output_tokens=100)
    model = (OpenAIChatCompletionsModel("m", openai_client=llm) if api == "chat"  # type: ignore[arg-type]
             else OpenAIResponsesModel("m", openai_client=llm))  # type: ignore[arg-type]
    agent = Agent(name="a", model=model, model_settings=ModelSettings(max_tokens=50))
    config = RunConfig(tracing_disabled=True)
    result = await Runner.run(agent, "Say hello.", run_config=config)
    assert result.final_output == "Hello from the fake provider."
    streamed = Runner.run_streamed(agent, "Say hello.", run_config=config)
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "Hello from the fake provider."
    await whole(budget, 2, "requests")
    await whole(budget, 36)
    with pytest.raises(BudgetExceeded):
        await Runner.run(agent, "Again.", run_config=config)
    assert len(fake.requests) == 2


async def test_the_stream_helper_is_budgeted(fake: FakeProvider,
                                             client: openai.AsyncOpenAI) -> None:
    budget = token_budget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, budget, estimate_input=fixed, on_settle=charges.append)
    fake.script(Script(input_tokens=12, output_tokens=6))
    manager = llm.chat.completions.stream(model="m", messages=MESSAGES,
                                          max_completion_tokens=50)
    async with manager as stream:
        assert (await figures(budget, "tokens"))[1] == INPUT + 50  # held while it streams
        final = await stream.get_final_completion()  # the SDK's own helper, untouched
    assert final.choices[0].message.content == "Hello from the fake provider."
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}
    assert manager.charge is not None
    assert manager.charge.outcome == "recorded"
    await whole(budget, 18)
    # Left early, before the usage chunk: conservative (estimate + the whole bound).
    async with llm.chat.completions.stream(model="m", messages=MESSAGES,
                                           max_completion_tokens=50) as stream:
        async for event in stream:
            if event.type == "chunk":
                break
    await whole(budget, 18 + INPUT + 50)
    with pytest.raises(BudgetExceeded):  # refused on entry: nothing sent
        async with llm.chat.completions.stream(model="m", messages=MESSAGES,
                                               max_completion_tokens=5000):
            pass
    assert len(fake.requests) == 2


def _response_events(request: httpx.Request) -> httpx.Response:
    """A Responses stream in the API's full event order (the fake provider's stream leaves
    out the output-item events the SDK's stream helper needs)."""
    item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress",
            "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    done = {**item, "status": "completed",
            "content": [{**part, "text": "Hello from the fake provider."}]}
    base = {"id": "resp_1", "object": "response", "created_at": 0, "model": "m",
            "status": "in_progress", "output": [], "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": []}
    usage = {"input_tokens": 12, "output_tokens": 6, "total_tokens": 18,
             "input_tokens_details": {"cached_tokens": 0},
             "output_tokens_details": {"reasoning_tokens": 0}}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": base},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0,
         "content_index": 0, "part": part},
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
         "content_index": 0, "delta": "Hello from the fake provider.", "logprobs": []},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed",
         "response": {**base, "status": "completed", "output": [done], "usage": usage}},
    ]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': i})}\n\n"
                   for i, e in enumerate(events))
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


async def test_the_responses_stream_helper_is_budgeted() -> None:
    budget = token_budget(1000)
    async with openai.AsyncOpenAI(api_key="test", max_retries=0, http_client=httpx.AsyncClient(
            transport=httpx.MockTransport(_response_events))) as sdk:
        llm = BudgetedAsyncOpenAI(sdk, budget, estimate_input=fixed)
        manager = llm.responses.stream(model="m", input="hi", max_output_tokens=50)
        async with manager as stream:
            assert (await figures(budget, "tokens"))[1] == INPUT + 50
            final = await stream.get_final_response()
        assert final.output_text == "Hello from the fake provider."
        assert manager.charge is not None
        assert manager.charge.outcome == "recorded"
        await whole(budget, 18)
        async with llm.responses.stream(model="m", input="hi", max_output_tokens=50) as stream:
            async for _ in stream:
                break  # left before response.completed: conservative
        await whole(budget, 18 + INPUT + 50)


def _chat_tool_call_chunks(request: httpx.Request) -> httpx.Response:
    """A Chat Completions stream that asks for three tool calls, then reports usage (the fake
    provider streams text only)."""
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": None})]
    for n in range(3):
        chunks.append(chunk({"tool_calls": [{"index": n, "id": f"call_{n}", "type": "function",
                                             "function": {"name": "search", "arguments": ""}}]}))
        chunks.append(chunk({"tool_calls": [{"index": n, "function": {"arguments": "{}"}}]}))
    chunks.append(chunk({}, "tool_calls"))
    chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 6,
                                                    "total_tokens": 18}})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


@pytest.mark.parametrize("helper", [False, True], ids=["create-stream", "stream-helper"])
async def test_a_streamed_tool_call_batch_is_admitted_all_or_nothing(helper: bool) -> None:
    budget = unit_budget({"tokens": 1000, "tool_calls": 5})
    async with openai.AsyncOpenAI(api_key="test", max_retries=0, http_client=httpx.AsyncClient(
            transport=httpx.MockTransport(_chat_tool_call_chunks))) as sdk:
        llm = BudgetedAsyncOpenAI(sdk, budget, estimate_input=fixed)

        async def one_stream() -> None:
            kw: dict[str, Any] = {"model": "m", "messages": MESSAGES,
                                  "max_completion_tokens": 50}
            if helper:
                async with llm.chat.completions.stream(**kw) as events:
                    async for _ in events:
                        pass
            else:
                async with await llm.chat.completions.create(**kw, stream=True) as chunks:
                    async for _ in chunks:
                        pass

        await one_stream()
        await whole(budget, 3, "tool_calls")
        with pytest.raises(BudgetExceeded) as info:  # 3 more do not fit in the 2 left
            await one_stream()
        assert info.value.unit == "tool_calls"
    await whole(budget, 3, "tool_calls")
    await whole(budget, 36)  # both calls were paid and are charged
