"""BudgetedAsyncAnthropic with the real anthropic SDK over real HTTP (outlay.testing.FakeProvider).

Runs on asyncio and trio: the SDK does its I/O through httpx2/anyio, which supports both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import anyio
import anyio.to_thread
import pytest

from outlay import AtomicTokenBudget, Budget, BudgetExceeded, TokenPrices
from outlay.clients import Charge, MoneyLimit, estimate_prompt_tokens
from outlay.clients.anthropic import BudgetedAsyncAnthropic
from outlay.testing import FakeProvider, Script

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


def whole(budget: AtomicTokenBudget, consumed: int) -> None:
    assert budget.held == 0
    assert budget.tokens_consumed_nowait() == consumed
    assert budget.available == budget.capacity - consumed


async def test_message_records_usage_with_cache_reads(fake: FakeProvider,
                                                      client: anthropic.AsyncAnthropic) -> None:
    budget = AtomicTokenBudget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncAnthropic(client, tokens=budget, on_settle=charges.append)
    fake.script(Script(input_tokens=11, cache_read_input_tokens=5, output_tokens=7))
    message = await llm.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES,
                                        system="Be brief.")
    assert message.content[0].type == "text"
    assert fake.requests[0].path == "/v1/messages"
    assert fake.requests[0].body["max_tokens"] == 64
    whole(budget, 11 + 5 + 7)
    assert charges[0].input_estimate == estimate_prompt_tokens([MESSAGES, "Be brief."], 2)
    assert (charges[0].prompt_tokens, charges[0].completion_tokens) == (16, 7)
    assert charges[0].cached_prompt_tokens == 5


async def test_refused_before_any_request_and_clamp(fake: FakeProvider,
                                                    client: anthropic.AsyncAnthropic) -> None:
    budget = AtomicTokenBudget(100)
    llm = BudgetedAsyncAnthropic(client, tokens=budget, estimate_input=fixed)
    with pytest.raises(BudgetExceeded):
        await llm.messages.create(model="m", max_tokens=81, messages=MESSAGES)
    with pytest.raises(ValueError, match="max_tokens"):
        await llm.messages.create(model="m", messages=MESSAGES)
    assert fake.requests == []
    clamped = BudgetedAsyncAnthropic(client, tokens=budget, estimate_input=fixed, clamp=True)
    await clamped.messages.create(model="m", max_tokens=4096, messages=MESSAGES)
    assert fake.requests[0].body["max_tokens"] == 80
    whole(budget, 18)


async def test_default_max_tokens_is_sent(fake: FakeProvider,
                                          client: anthropic.AsyncAnthropic) -> None:
    llm = BudgetedAsyncAnthropic(client, tokens=AtomicTokenBudget(1000),
                                 default_max_output_tokens=256)
    await llm.messages.create(model="m", messages=MESSAGES)
    assert fake.requests[0].body["max_tokens"] == 256


@pytest.mark.parametrize("status", [500, 429])
async def test_error_refunds(fake: FakeProvider, client: anthropic.AsyncAnthropic,
                             status: int) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncAnthropic(client, tokens=budget)
    fake.script(Script(status=status, error_type="rate_limit_error"),
                Script(status=status, error_type="api_error"))
    with pytest.raises(anthropic.APIStatusError) as info:
        await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES)
    assert info.value.status_code == status
    with pytest.raises(anthropic.APIStatusError):
        await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES, stream=True)
    whole(budget, 0)
    assert len(fake.requests) == 2


async def test_stream_usage_is_replaced_not_added(fake: FakeProvider,
                                                  client: anthropic.AsyncAnthropic) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncAnthropic(client, tokens=budget, estimate_input=fixed)
    # message_start reports output_tokens=1; message_delta reports the cumulative 7.
    fake.script(Script(input_tokens=11, cache_read_input_tokens=3, output_tokens=7))
    stream = await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES,
                                       stream=True)
    assert budget.held == INPUT + 64
    async with stream:
        kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    whole(budget, 11 + 3 + 7)  # not 11 + 3 + 1 + 7, not the inputs twice
    assert stream.charge is not None
    assert stream.charge.outcome == "recorded"


async def test_stream_error_event_uses_reported_input(fake: FakeProvider,
                                                      client: anthropic.AsyncAnthropic) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncAnthropic(client, tokens=budget, estimate_input=fixed)
    fake.script(Script(input_tokens=11, error_after=3, error_type="overloaded_error"))
    stream = await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES,
                                       stream=True)
    with pytest.raises(anthropic.APIStatusError):
        async for _ in stream:
            pass
    # Input as reported by message_start (11, not the estimate 20), plus the whole bound.
    whole(budget, 11 + 64)
    assert stream.charge is not None
    assert stream.charge.outcome == "conservative"


async def test_stream_cancelled_mid_stream(fake: FakeProvider,
                                           client: anthropic.AsyncAnthropic) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncAnthropic(client, tokens=budget, estimate_input=fixed)
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
        assert budget.held == INPUT + 64
        tg.cancel_scope.cancel()
    fake.release()
    whole(budget, 11 + 64)


async def test_stream_break_after_final_usage_records_it(
        fake: FakeProvider, client: anthropic.AsyncAnthropic) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncAnthropic(client, tokens=budget, estimate_input=fixed)
    stream = await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES,
                                       stream=True)
    async with stream:
        async for event in stream:
            if event.type == "message_delta":
                break  # message_stop never read: the usage is final already
    whole(budget, 11 + 7)


async def test_money_and_tokens_together(fake: FakeProvider,
                                         client: anthropic.AsyncAnthropic) -> None:
    dollars = Budget()
    await dollars.set_limit("run/usd", Decimal("0.01"))
    tokens = AtomicTokenBudget(1000)
    prices = TokenPrices(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"))
    llm = BudgetedAsyncAnthropic(client, tokens=tokens,
                                 money=MoneyLimit(dollars, "run/usd", prices),
                                 estimate_input=fixed)
    fake.script(Script(input_tokens=100, output_tokens=40))
    stream = await llm.messages.create(model="m", max_tokens=64, messages=MESSAGES,
                                       stream=True)
    usage = await dollars.usage("run/usd")
    assert usage.held == Decimal("0.00102")  # 20 * 3e-6 + 64 * 15e-6
    async with stream:
        async for _ in stream:
            pass
    usage = await dollars.usage("run/usd")
    assert (usage.spent, usage.held) == (Decimal("0.0009"), 0)  # 100 * 3e-6 + 40 * 15e-6
    whole(tokens, 140)


@pytest.mark.parametrize("stream", [False, True])
async def test_cache_reads_are_charged_at_the_cached_rate(
        fake: FakeProvider, client: anthropic.AsyncAnthropic, stream: bool) -> None:
    dollars = Budget()
    await dollars.set_limit("run/usd", Decimal("1"))
    prices = TokenPrices(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"),
                         cached_input_per_mtok=Decimal("0.30"))
    charges: list[Charge] = []
    llm = BudgetedAsyncAnthropic(client, money=MoneyLimit(dollars, "run/usd", {"m": prices}),
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
    usage = await dollars.usage("run/usd")
    assert (usage.spent, usage.held) == (Decimal("0.0012"), 0)
    assert (charges[0].prompt_tokens, charges[0].cached_prompt_tokens) == (1100, 1000)
    assert charges[0].cost == Decimal("0.0012")
