"""BudgetedAsyncOpenAI with the real openai SDK over real HTTP against outlay.testing.FakeProvider.

Runs on asyncio and trio: the SDK does its I/O through httpx2/anyio, which supports both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import anyio
import anyio.to_thread
import openai
import pytest
from structlog.testing import capture_logs

from outlay import AtomicTokenBudget, Budget, BudgetExceeded, TokenPrices, UnknownModelPrice
from outlay.clients import Charge, MoneyLimit, estimate_prompt_tokens
from outlay.clients.openai import BudgetedAsyncOpenAI
from outlay.testing import FakeProvider, Script

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


def whole(budget: AtomicTokenBudget, consumed: int) -> None:
    """Nothing held, exactly ``consumed`` spent, the rest available."""
    assert budget.held == 0
    assert budget.tokens_consumed_nowait() == consumed
    assert budget.available == budget.capacity - consumed


# -- Chat Completions, non-streaming ---------------------------------------------------------


async def test_chat_records_reported_usage(fake: FakeProvider,
                                           client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, tokens=budget, on_settle=charges.append)
    fake.script(Script(input_tokens=13, output_tokens=9))
    completion = await llm.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                                   max_completion_tokens=50)
    assert completion.choices[0].message.content == "Hello from the fake provider."
    whole(budget, 22)
    assert fake.requests[0].body["max_completion_tokens"] == 50
    estimate = estimate_prompt_tokens([MESSAGES], 1)
    [charge] = charges
    assert charge.outcome == "recorded"
    assert (charge.input_estimate, charge.max_output_tokens) == (estimate, 50)
    assert (charge.prompt_tokens, charge.completion_tokens) == (13, 9)


async def test_chat_legacy_max_tokens_and_n_bound_the_output(
        fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed,
                              on_settle=charges.append)
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_tokens=30, n=3)
    assert fake.requests[0].body["max_tokens"] == 30
    assert "max_completion_tokens" not in fake.requests[0].body
    assert charges[0].reserved_tokens == INPUT + 90


async def test_refused_before_any_request(fake: FakeProvider,
                                          client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(100)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
    with pytest.raises(BudgetExceeded) as info:
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=81)
    assert (info.value.requested, info.value.available) == (INPUT + 81, 100)
    with pytest.raises(BudgetExceeded):
        await llm.responses.create(model="m", input="hi", max_output_tokens=81)
    assert fake.requests == []
    whole(budget, 0)


async def test_missing_output_bound(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncOpenAI(client, tokens=budget)
    with pytest.raises(ValueError, match="max_completion_tokens"):
        await llm.chat.completions.create(model="m", messages=MESSAGES)
    assert fake.requests == []
    llm = BudgetedAsyncOpenAI(client, tokens=budget, default_max_output_tokens=64)
    await llm.chat.completions.create(model="m", messages=MESSAGES)
    await llm.responses.create(model="m", input="hi")
    assert fake.requests[0].body["max_completion_tokens"] == 64
    assert fake.requests[1].body["max_output_tokens"] == 64


async def test_clamp_lowers_the_bound_sent(fake: FakeProvider,
                                           client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(100)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed, clamp=True,
                              on_settle=charges.append)
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=500)
    assert fake.requests[0].body["max_completion_tokens"] == 100 - INPUT
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_tokens=500, n=2)
    assert fake.requests[1].body["max_tokens"] == (100 - INPUT - 18) // 2
    assert charges[1].max_output_tokens == 2 * ((100 - INPUT - 18) // 2)
    whole(budget, 36)


async def test_clamp_refuses_below_min_output(fake: FakeProvider,
                                              client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(100)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed, clamp=True,
                              min_output_tokens=81)
    with pytest.raises(BudgetExceeded, match="min_output_tokens"):
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=500)
    assert fake.requests == []
    whole(budget, 0)


class HalvingBudget:
    """A ``TokenBudget`` that does not say what is available (the protocol alone)."""

    def __init__(self, capacity: int) -> None:
        self.inner = AtomicTokenBudget(capacity)
        self.asked: list[int] = []

    async def try_reserve_tokens(self, estimate: int) -> Any:
        self.asked.append(estimate)
        return await self.inner.try_reserve_tokens(estimate)

    async def record_usage(self, reservation: Any, prompt: int, completion: int) -> None:
        await self.inner.record_usage(reservation, prompt, completion)

    async def tokens_consumed(self) -> int:
        return await self.inner.tokens_consumed()


async def test_clamp_with_a_protocol_only_budget_halves(fake: FakeProvider,
                                                        client: openai.AsyncOpenAI) -> None:
    budget = HalvingBudget(100)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed, clamp=True)
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=400)
    assert budget.asked == [INPUT + 400, INPUT + 200, INPUT + 100, INPUT + 50]
    assert fake.requests[0].body["max_completion_tokens"] == 50


class RacedBudget(HalvingBudget):
    """Another task takes ``steal`` tokens between our read of ``available`` and our reserve."""

    def __init__(self, capacity: int, steal: int) -> None:
        super().__init__(capacity)
        self.steal = steal
        self.stolen: Any = None

    @property
    def available(self) -> int:
        return self.inner.available

    async def try_reserve_tokens(self, estimate: int) -> Any:
        if self.steal:
            self.stolen = self.inner.try_reserve_tokens_nowait(self.steal)
            self.steal = 0
        return await super().try_reserve_tokens(estimate)


async def test_clamp_retries_when_a_concurrent_call_takes_the_room(
        fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = RacedBudget(100, steal=30)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed, clamp=True)
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=400)
    # 80 fitted when read; after the steal only 100 - 30 - 20 = 50 does.
    assert budget.asked == [INPUT + 80, INPUT + 50]
    assert fake.requests[0].body["max_completion_tokens"] == 50
    await budget.stolen.release()
    whole(budget.inner, 18)


@pytest.mark.parametrize("status", [500, 429])
async def test_error_refunds(fake: FakeProvider, client: openai.AsyncOpenAI,
                             status: int) -> None:
    budget = AtomicTokenBudget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, tokens=budget, on_settle=charges.append)
    fake.script(Script(status=status), Script(status=status))
    with pytest.raises(openai.APIStatusError) as info:
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=50)
    assert info.value.status_code == status
    with pytest.raises(openai.APIStatusError):
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=50, stream=True)
    whole(budget, 0)
    assert [c.outcome for c in charges] == ["refunded", "refunded"]
    assert len(fake.requests) == 2  # retries disabled: one request each


async def test_cancelled_call_refunds(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
    fake.script(Script(stall_after=0))
    async with anyio.create_task_group() as tg:
        async def call() -> None:
            await llm.chat.completions.create(model="m", messages=MESSAGES,
                                              max_completion_tokens=50)

        tg.start_soon(call)
        assert await anyio.to_thread.run_sync(fake.stalled.wait, 5.0)
        assert budget.held == INPUT + 50  # held while the request is in flight
        tg.cancel_scope.cancel()
    fake.release()
    whole(budget, 0)


async def test_no_usage_reported_charges_conservatively(fake: FakeProvider,
                                                        client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
    fake.script(Script(report_usage=False))
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=50)
    whole(budget, INPUT + 50)


# -- Chat Completions, streaming -------------------------------------------------------------


async def test_chat_stream_records_usage(fake: FakeProvider,
                                         client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
    fake.script(Script(input_tokens=12, output_tokens=6))
    stream = await llm.chat.completions.create(
        model="m", messages=MESSAGES, max_completion_tokens=50, stream=True,
        stream_options={"include_usage": False})
    assert budget.held == INPUT + 50
    text = ""
    async with stream:
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == "Hello from the fake provider."
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}
    whole(budget, 18)
    assert stream.charge is not None
    assert stream.charge.outcome == "recorded"


async def test_chat_stream_settles_without_async_with(fake: FakeProvider,
                                                      client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
    stream = await llm.chat.completions.create(model="m", messages=MESSAGES,
                                               max_completion_tokens=50, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    whole(budget, 18)
    await stream.close()  # idempotent
    whole(budget, 18)


async def test_chat_stream_early_exit_is_conservative(fake: FakeProvider,
                                                      client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
    stream = await llm.chat.completions.create(model="m", messages=MESSAGES,
                                               max_completion_tokens=50, stream=True)
    async with stream:
        async for _ in stream:
            break
    whole(budget, INPUT + 50)
    assert stream.charge is not None
    assert stream.charge.outcome == "conservative"


async def test_chat_stream_cancelled_mid_stream(fake: FakeProvider,
                                                client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
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
        assert budget.held == INPUT + 50
        tg.cancel_scope.cancel()
    fake.release()
    whole(budget, INPUT + 50)
    assert len(seen) == 4


async def test_chat_stream_dropped_connection(fake: FakeProvider,
                                              client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
    fake.script(Script(drop_after=2))
    stream = await llm.chat.completions.create(model="m", messages=MESSAGES,
                                               max_completion_tokens=50, stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass
    whole(budget, INPUT + 50)


async def test_chat_stream_error_event(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
    fake.script(Script(error_after=2))
    stream = await llm.chat.completions.create(model="m", messages=MESSAGES,
                                               max_completion_tokens=50, stream=True)

    async def drain() -> None:
        async with stream:
            async for _ in stream:
                pass

    with pytest.raises(openai.APIError):
        await drain()
    whole(budget, INPUT + 50)


# -- Responses --------------------------------------------------------------------------------


async def test_responses_records_usage(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, tokens=budget, on_settle=charges.append)
    fake.script(Script(input_tokens=30, output_tokens=4))
    response = await llm.responses.create(model="m", input="Say hello.",
                                          instructions="Be brief.", max_output_tokens=40)
    assert response.output_text == "Hello from the fake provider."
    assert fake.requests[0].path == "/v1/responses"
    assert fake.requests[0].body["max_output_tokens"] == 40
    whole(budget, 34)
    assert charges[0].input_estimate == estimate_prompt_tokens(["Say hello.", "Be brief."], 2)


async def test_responses_stream(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
    fake.script(Script(input_tokens=30, output_tokens=4), Script(error_after=2))
    stream = await llm.responses.create(model="m", input=[{"role": "user", "content": "hi"}],
                                        max_output_tokens=40, stream=True)
    async with stream:
        types = [event.type async for event in stream]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    whole(budget, 34)
    # An error event ends the stream without a completed response: conservative.
    stream = await llm.responses.create(model="m", input="hi", max_output_tokens=40,
                                        stream=True)
    async with stream:
        types = [event.type async for event in stream]
    assert types[-1] == "error"
    whole(budget, 34 + INPUT + 40)


# -- money ------------------------------------------------------------------------------------


async def money_budget(cap: str) -> Budget:
    budget = Budget()
    await budget.set_limit("run/usd", Decimal(cap))
    return budget


PRICES = TokenPrices(input_per_mtok=Decimal("2.50"), output_per_mtok=Decimal("10.00"))


async def test_money_records_exact_cost(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    dollars = await money_budget("1")
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, money=MoneyLimit(dollars, "run/usd", PRICES),
                              estimate_input=fixed, on_settle=charges.append)
    fake.script(Script(input_tokens=1000, output_tokens=300))
    await llm.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=500)
    usage = await dollars.usage("run/usd")
    assert usage.spent == Decimal("0.0055")  # 1000 * 2.50e-6 + 300 * 10e-6
    assert usage.held == 0
    assert charges[0].reserved_cost == Decimal("0.00505")  # 20 * 2.50e-6 + 500 * 10e-6
    assert charges[0].cost == Decimal("0.0055")


async def test_money_refusal_and_clamp(fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    dollars = await money_budget("0.00105")  # 20 in (0.00005) + 100 out (0.001)
    tokens = AtomicTokenBudget(10_000)
    money = MoneyLimit(dollars, "run/usd", {"m": PRICES})
    llm = BudgetedAsyncOpenAI(client, tokens=tokens, money=money, estimate_input=fixed)
    with pytest.raises(BudgetExceeded) as info:
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=101)
    assert info.value.key == "run/usd"
    with pytest.raises(UnknownModelPrice):
        await llm.chat.completions.create(model="other", messages=MESSAGES,
                                          max_completion_tokens=1)
    assert fake.requests == []
    whole(tokens, 0)  # the token hold taken before the money refusal came back
    clamped = BudgetedAsyncOpenAI(client, tokens=tokens, money=money, estimate_input=fixed,
                                  clamp=True)
    fake.script(Script(report_usage=False))
    await clamped.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=5000)
    assert fake.requests[0].body["max_completion_tokens"] == 100
    usage = await dollars.usage("run/usd")
    assert (usage.spent, usage.held, usage.available) == (Decimal("0.00105"), 0, 0)



@pytest.mark.parametrize(("api", "stream"), [("chat", False), ("chat", True),
                                             ("responses", False), ("responses", True)])
async def test_cached_input_is_charged_at_the_cached_rate(
        fake: FakeProvider, client: openai.AsyncOpenAI, api: str, stream: bool) -> None:
    dollars = await money_budget("1")
    prices = TokenPrices(Decimal("2.50"), Decimal("10.00"), cached_input_per_mtok=Decimal("1.25"))
    charges: list[Charge] = []
    llm = BudgetedAsyncOpenAI(client, money=MoneyLimit(dollars, "run/usd", prices),
                              estimate_input=fixed, on_settle=charges.append)
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
    usage = await dollars.usage("run/usd")
    assert (usage.spent, usage.held) == (Decimal("0.0045"), 0)
    assert charges[0].outcome == "recorded"
    assert (charges[0].prompt_tokens, charges[0].cached_prompt_tokens) == (1000, 800)


# -- concurrency ------------------------------------------------------------------------------


async def test_parallel_calls_never_exceed_the_budget(fake: FakeProvider,
                                                      client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(3 * (INPUT + 50))
    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed)
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
    whole(budget, budget.capacity)


async def test_settlement_is_logged_and_a_failing_observer_is_skipped(
        fake: FakeProvider, client: openai.AsyncOpenAI) -> None:
    budget = AtomicTokenBudget(1000)

    def broken(charge: Charge) -> None:
        raise RuntimeError("observer bug")

    llm = BudgetedAsyncOpenAI(client, tokens=budget, estimate_input=fixed, on_settle=broken)
    with capture_logs() as logs:
        await llm.chat.completions.create(model="m", messages=MESSAGES,
                                          max_completion_tokens=50)
    events = {entry["event"]: entry for entry in logs}
    settled = events["outlay.clients.settled"]
    assert (settled["outcome"], settled["prompt_tokens"], settled["completion_tokens"]) == (
        "recorded", 11, 7)
    assert "observer bug" in events["outlay.clients.on_settle_failed"]["error"]
    whole(budget, 18)
