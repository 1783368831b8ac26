"""BudgetedAsyncAnthropic with the real anthropic SDK over real HTTP (outlay.testing.FakeProvider).

Runs on asyncio and trio: the SDK does its I/O through httpx2/anyio, which supports both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx2 as httpx
import pytest

from outlay import BudgetExceeded, TokenPrices
from outlay.clients import Charge, estimate_prompt_tokens
from outlay.clients.anthropic import BudgetedAsyncAnthropic
from outlay.testing import FakeProvider, Script

from .budgetkit import figures, token_budget, unit_budget, whole

pytestmark = pytest.mark.anyio

INPUT = 20
MESSAGES = [{"role": "user", "content": "Say hello."}]


def fixed(params: Any) -> int:
    return INPUT


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def client(fake: FakeProvider) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(
        api_key="test", base_url=fake.anthropic_url, max_retries=0,
        http_client=anthropic.DefaultAsyncHttpxClient(verify=False))
    yield sdk
    await sdk.close()


async def test_message_records_usage_with_cache_reads(fake: FakeProvider,
                                                      client: anthropic.AsyncAnthropic) -> None:
    budget = token_budget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncAnthropic(client, budget, on_settle=charges.append)
    fake.script(Script(input_tokens=11, cache_read_input_tokens=5, output_tokens=7))
    message = await llm.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES,
                                        system="Be brief.")
    assert message.content[0].type == "text"
    assert fake.requests[0].path == "/v1/messages"
    assert fake.requests[0].body["max_tokens"] == 64
    await whole(budget, 11 + 5 + 7)
    assert charges[0].input_estimate == estimate_prompt_tokens([MESSAGES, "Be brief."], 2)
    assert (charges[0].prompt_tokens, charges[0].completion_tokens) == (16, 7)
    assert charges[0].cached_prompt_tokens == 5


async def test_refused_before_any_request_and_clamp(fake: FakeProvider,
                                                    client: anthropic.AsyncAnthropic) -> None:
    budget = token_budget(100)
    llm = BudgetedAsyncAnthropic(client, budget, estimate_input=fixed)
    with pytest.raises(BudgetExceeded):
        await llm.messages.create(model="m", max_tokens=81, messages=MESSAGES)
    with pytest.raises(ValueError, match="max_tokens"):
        await llm.messages.create(model="m", messages=MESSAGES)
    assert fake.requests == []
    clamped = BudgetedAsyncAnthropic(client, budget, estimate_input=fixed, clamp=True)
    await clamped.messages.create(model="m", max_tokens=4096, messages=MESSAGES)
    assert fake.requests[0].body["max_tokens"] == 80
    await whole(budget, 18)


async def test_default_max_tokens_is_sent(fake: FakeProvider,
                                          client: anthropic.AsyncAnthropic) -> None:
    llm = BudgetedAsyncAnthropic(client, token_budget(1000),
                                 default_max_output_tokens=256)
    await llm.messages.create(model="m", messages=MESSAGES)
    assert fake.requests[0].body["max_tokens"] == 256


@pytest.mark.parametrize("status", [500, 429])
async def test_error_refunds(fake: FakeProvider, client: anthropic.AsyncAnthropic,
                             status: int) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncAnthropic(client, budget)
    fake.script(Script(status=status, error_type="rate_limit_error"),
                Script(status=status, error_type="api_error"))
    with pytest.raises(anthropic.APIStatusError) as info:
        await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES)
    assert info.value.status_code == status
    with pytest.raises(anthropic.APIStatusError):
        await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES, stream=True)
    await whole(budget, 0)
    assert len(fake.requests) == 2


async def test_stream_usage_is_replaced_not_added(fake: FakeProvider,
                                                  client: anthropic.AsyncAnthropic) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncAnthropic(client, budget, estimate_input=fixed)
    # message_start reports output_tokens=1; message_delta reports the cumulative 7.
    fake.script(Script(input_tokens=11, cache_read_input_tokens=3, output_tokens=7))
    stream = await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES,
                                       stream=True)
    assert (await figures(budget, "tokens"))[1] == INPUT + 64
    async with stream:
        kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    await whole(budget, 11 + 3 + 7)  # not 11 + 3 + 1 + 7, not the inputs twice
    assert stream.charge is not None
    assert stream.charge.outcome == "recorded"


async def test_stream_error_event_uses_reported_input(fake: FakeProvider,
                                                      client: anthropic.AsyncAnthropic) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncAnthropic(client, budget, estimate_input=fixed)
    fake.script(Script(input_tokens=11, error_after=3, error_type="overloaded_error"))
    stream = await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES,
                                       stream=True)
    with pytest.raises(anthropic.APIStatusError):
        async for _ in stream:
            pass
    # Input as reported by message_start (11, not the estimate 20), plus the whole bound.
    await whole(budget, 11 + 64)
    assert stream.charge is not None
    assert stream.charge.outcome == "conservative"


async def test_stream_cancelled_mid_stream(fake: FakeProvider,
                                           client: anthropic.AsyncAnthropic) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncAnthropic(client, budget, estimate_input=fixed)
    fake.script(Script(input_tokens=11, stall_after=2))
    got_two = anyio.Event()
    async with anyio.create_task_group() as tg:
        async def consume() -> None:
            stream = await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES,
                                               stream=True)
            async with stream:
                async for event in stream:
                    if event.type == "content_block_start":
                        got_two.set()

        tg.start_soon(consume)
        await got_two.wait()
        assert await anyio.to_thread.run_sync(fake.stalled.wait, 5.0)
        await anyio.wait_all_tasks_blocked()
        assert (await figures(budget, "tokens"))[1] == INPUT + 64
        tg.cancel_scope.cancel()
    fake.release()
    await whole(budget, 11 + 64)


async def test_stream_break_after_final_usage_records_it(
        fake: FakeProvider, client: anthropic.AsyncAnthropic) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncAnthropic(client, budget, estimate_input=fixed)
    stream = await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES,
                                       stream=True)
    async with stream:
        async for event in stream:
            if event.type == "message_delta":
                break  # message_stop never read: the usage is final already
    await whole(budget, 11 + 7)


async def test_money_and_tokens_together(fake: FakeProvider,
                                         client: anthropic.AsyncAnthropic) -> None:
    budget = unit_budget({"usd": Decimal("0.01"), "tokens": 1000})
    prices = TokenPrices(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"))
    llm = BudgetedAsyncAnthropic(client, budget, prices=prices, estimate_input=fixed)
    fake.script(Script(input_tokens=100, output_tokens=40))
    stream = await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES,
                                       stream=True)
    assert (await figures(budget, "usd"))[1] == Decimal("0.00102")  # 20 * 3e-6 + 64 * 15e-6
    assert (await figures(budget, "tokens"))[1] == INPUT + 64  # held in the same reservation
    async with stream:
        async for _ in stream:
            pass
    await whole(budget, Decimal("0.0009"), "usd")  # 100 * 3e-6 + 40 * 15e-6
    await whole(budget, 140)


@pytest.mark.parametrize("stream", [False, True])
async def test_cache_reads_are_charged_at_the_cached_rate(
        fake: FakeProvider, client: anthropic.AsyncAnthropic, stream: bool) -> None:
    dollars = unit_budget({"usd": Decimal("1")})
    prices = TokenPrices(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"),
                         cached_input_per_mtok=Decimal("0.30"))
    charges: list[Charge] = []
    llm = BudgetedAsyncAnthropic(client, dollars, prices={"m": prices},
                                 estimate_input=fixed, on_settle=charges.append)
    fake.script(Script(input_tokens=100, cache_read_input_tokens=1000, output_tokens=40))
    if stream:
        async with await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES,
                                             stream=True) as events:
            async for _ in events:
                pass
    else:
        await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES)
    # 100 uncached at 3, 1000 cache reads at 0.30, 40 out at 15 (per million tokens)
    await whole(dollars, Decimal("0.0012"), "usd")
    assert (charges[0].prompt_tokens, charges[0].cached_prompt_tokens) == (1100, 1000)
    assert charges[0].cost == Decimal("0.0012")


def _message_with_cache_writes(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 40,
                  "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 1000}})


async def test_cache_writes_are_charged_at_the_write_rate() -> None:
    # Anthropic reports cache writes apart; the fake provider does not script them, so this
    # one answer comes from an httpx transport that returns the API's JSON shape.
    dollars = unit_budget({"usd": Decimal("1")})
    prices = TokenPrices(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"),
                         cached_input_per_mtok=Decimal("0.30"),
                         cache_write_per_mtok=Decimal("3.75"))
    charges: list[Charge] = []
    transport = httpx.MockTransport(_message_with_cache_writes)
    async with anthropic.AsyncAnthropic(
            api_key="test", max_retries=0,
            http_client=httpx.AsyncClient(transport=transport)) as sdk:
        llm = BudgetedAsyncAnthropic(sdk, dollars, prices=prices, estimate_input=fixed,
                                     on_settle=charges.append)
        await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES)
    # 100 in at 3 + 2000 writes at 3.75 + 1000 reads at 0.30 + 40 out at 15, per million
    assert charges[0].cost == Decimal("0.0087")
    assert (charges[0].cache_write_tokens, charges[0].cached_prompt_tokens) == (2000, 1000)
    # The hold priced the whole input at the dearer write rate: 20 * 3.75 + 64 * 15.
    assert charges[0].reserved_cost == Decimal("0.001035")
    await whole(dollars, Decimal("0.0087"), "usd")


async def test_the_stream_helper_is_budgeted(fake: FakeProvider,
                                             client: anthropic.AsyncAnthropic) -> None:
    budget = token_budget(1000)
    llm = BudgetedAsyncAnthropic(client, budget, estimate_input=fixed)
    fake.script(Script(input_tokens=11, cache_read_input_tokens=3, output_tokens=7))
    manager = llm.messages.stream(model="m", max_tokens=64, messages=MESSAGES)
    async with manager as stream:
        assert (await figures(budget, "tokens"))[1] == INPUT + 64
        text = "".join([piece async for piece in stream.text_stream])
    assert text == "Hello from the fake provider."
    assert manager.charge is not None
    assert manager.charge.outcome == "recorded"
    await whole(budget, 11 + 3 + 7)
    fake.script(Script(status=500))
    with pytest.raises(anthropic.InternalServerError):  # failed to start: refunded
        async with llm.messages.stream(model="m", max_tokens=64, messages=MESSAGES):
            pass
    await whole(budget, 11 + 3 + 7)


async def test_an_async_estimate_such_as_count_tokens_is_awaited(
        fake: FakeProvider, client: anthropic.AsyncAnthropic) -> None:
    budget = token_budget(1000)
    asked: list[Any] = []

    async def count(params: Any) -> int:  # e.g. backed by messages.count_tokens
        await anyio.lowlevel.checkpoint()
        asked.append(params["model"])
        return 123

    charges: list[Charge] = []
    llm = BudgetedAsyncAnthropic(client, budget, estimate_input=count, on_settle=charges.append)
    await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES)
    async with llm.messages.stream(model="m", max_tokens=64, messages=MESSAGES) as stream:
        assert (await figures(budget, "tokens"))[1] == 123 + 64
        await stream.get_final_message()
    assert asked == ["m", "m"]
    assert [c.input_estimate for c in charges] == [123, 123]
    assert llm.messages.count_tokens == client.messages.count_tokens  # passed through


def _tool_use_events(request: httpx.Request) -> httpx.Response:
    """A Messages stream with two tool_use blocks (the fake provider streams text only)."""
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 11, "output_tokens": 1}}}]
    for n in range(2):
        events += [
            {"type": "content_block_start", "index": n, "content_block": {
                "type": "tool_use", "id": f"toolu_{n}", "name": "search", "input": {}}},
            {"type": "content_block_delta", "index": n,
             "delta": {"type": "input_json_delta", "partial_json": "{}"}},
            {"type": "content_block_stop", "index": n}]
    events += [{"type": "message_delta", "delta": {"stop_reason": "tool_use",
                                                   "stop_sequence": None},
                "usage": {"output_tokens": 7}},
               {"type": "message_stop"}]
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


@pytest.mark.parametrize("helper", [False, True], ids=["create-stream", "stream-helper"])
async def test_a_streamed_tool_use_batch_is_admitted_all_or_nothing(helper: bool) -> None:
    budget = unit_budget({"tokens": 1000, "tool_calls": 3})
    async with anthropic.AsyncAnthropic(api_key="test", max_retries=0,
                                        http_client=httpx.AsyncClient(
                                            transport=httpx.MockTransport(_tool_use_events))
                                        ) as sdk:
        llm = BudgetedAsyncAnthropic(sdk, budget, estimate_input=fixed)

        async def one_stream() -> None:
            kw: dict[str, Any] = {"model": "m", "max_tokens": 64, "messages": MESSAGES}
            if helper:
                async with llm.messages.stream(**kw) as stream:
                    await stream.get_final_message()
            else:
                async with await llm.messages.create(**kw, stream=True) as events:
                    async for _ in events:
                        pass

        await one_stream()
        await whole(budget, 2, "tool_calls")
        with pytest.raises(BudgetExceeded):  # 2 more do not fit in the 1 left
            await one_stream()
    await whole(budget, 2, "tool_calls")
    await whole(budget, 2 * (11 + 7))
