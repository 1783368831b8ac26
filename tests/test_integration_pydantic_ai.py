"""pydantic-ai integration, run offline with pydantic-ai's own TestModel and FunctionModel."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import anyio
import pytest

pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RequestUsage

from outlay import (
    AtomicBudget,
    BudgetExceeded,
    Continue,
    DispatchBudgetHook,
    DispatchTerminated,
    TokenPrices,
    ToolCallLimitHook,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
)
from outlay.clients import MESSAGE_OVERHEAD, REQUEST_OVERHEAD, estimate_prompt_tokens
from outlay.integrations.pydantic_ai import OutlayCapability, estimate_request_input

from .budgetkit import figures, token_budget, unit_budget, whole

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """pydantic-ai runs its agent graph on asyncio (it starts asyncio tasks), not on trio."""
    return "asyncio"


class Recorder(ToolDispatchHook):
    """Records what the chain saw, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    async def before_invocation(self, invocation: ToolInvocation) -> Continue:
        self.events.append(("before", invocation.tool_name, dict(invocation.arguments)))
        return Continue(invocation.call_id)

    async def after_invocation(self, invocation: ToolInvocation, result: ToolInvocationResult,
                               state: Any) -> None:
        assert state == invocation.call_id
        self.events.append(("after", invocation.tool_name, result.output))

    async def on_invocation_error(self, invocation: ToolInvocation, error: BaseException,
                                  state: Any) -> None:
        self.events.append(("error", invocation.tool_name, type(error).__name__))


def calls(*parts: tuple[str, dict[str, Any]], usage: RequestUsage | None = None) -> ModelResponse:
    ids = itertools.count()
    return ModelResponse(
        parts=[ToolCallPart(name, args, tool_call_id=f"call-{name}-{next(ids)}")
               for name, args in parts],
        usage=usage or RequestUsage(input_tokens=10, output_tokens=5))


def answered(messages: list[ModelMessage]) -> bool:
    last = messages[-1]
    return isinstance(last, ModelRequest) and any(
        isinstance(p, ToolReturnPart) for p in last.parts)


async def test_tool_calls_pass_the_hook_chain_with_validated_arguments() -> None:
    recorder = Recorder()
    agent = Agent(TestModel(), capabilities=[
        OutlayCapability(tool_hooks=[recorder], principal="alice")])

    @agent.tool_plain
    async def lookup(city: str, days: int) -> str:
        return f"{city}:{days}"

    result = await agent.run("weather?")
    assert recorder.events == [("before", "lookup", {"city": "a", "days": 0}),
                               ("after", "lookup", "a:0")]
    assert "a:0" in result.output


async def test_a_budget_hook_skips_calls_beyond_the_budget_and_the_model_sees_why() -> None:
    ran: list[int] = []
    budget = AtomicBudget(2)
    seen: list[str] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if answered(messages):
            last = messages[-1]
            assert isinstance(last, ModelRequest)
            seen.extend(str(p.content) for p in last.parts if isinstance(p, ToolReturnPart))
            return ModelResponse(parts=[TextPart("done")])
        return calls(("work", {"n": 1}), ("work", {"n": 2}), ("work", {"n": 3}))

    hook = DispatchBudgetHook(budget, 1)
    agent = Agent(FunctionModel(model), capabilities=[OutlayCapability(tool_hooks=[hook])])

    @agent.tool_plain
    async def work(n: int) -> str:
        ran.append(n)
        return f"did {n}"

    assert (await agent.run("go")).output == "done"
    assert len(ran) == 2
    assert budget.available == 0
    skipped = [s for s in seen if s.startswith("not run:")]
    assert len(skipped) == 1
    assert "'work' was not run" in skipped[0]


async def test_terminate_ends_the_run_with_dispatch_terminated() -> None:
    ran: list[str] = []
    hook = ToolCallLimitHook({"delete": 0}, on_exceeded="terminate")
    agent = Agent(FunctionModel(lambda m, i: calls(("delete", {}))),
                  capabilities=[OutlayCapability(tool_hooks=[hook])])

    @agent.tool_plain
    def delete() -> str:
        ran.append("x")
        return "gone"

    with pytest.raises(DispatchTerminated, match="delete"):
        await agent.run("go")
    assert ran == []


async def test_model_retry_from_a_tool_reaches_the_hooks_and_releases_the_hold() -> None:
    recorder = Recorder()
    budget = AtomicBudget(1)
    attempts: list[int] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(attempts) >= 2:
            return ModelResponse(parts=[TextPart("gave up")])
        return calls(("flaky", {}))

    hooks = [recorder, DispatchBudgetHook(budget, 1)]
    agent = Agent(FunctionModel(model), capabilities=[OutlayCapability(tool_hooks=hooks)])

    @agent.tool_plain(retries=3)
    def flaky() -> str:
        attempts.append(1)
        raise ModelRetry("try again")

    assert (await agent.run("go")).output == "gave up"
    assert [e[0] for e in recorder.events] == ["before", "error", "before", "error"]
    assert budget.available == 1  # a failed call is released, not charged


async def test_model_requests_hold_the_estimate_and_record_reported_usage() -> None:
    tokens = token_budget(1000)
    held: list[Any] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        held.append((await figures(tokens, "tokens"))[1])
        return ModelResponse(parts=[TextPart("hi")],
                             usage=RequestUsage(input_tokens=30, output_tokens=7))

    agent = Agent(FunctionModel(model),
                  capabilities=[
        OutlayCapability(tokens, estimate_input=200, max_output_tokens=0)])
    await agent.run("hello")
    assert held == [200]  # held while the request ran
    assert (await figures(tokens, "tokens"))[0] == 37
    assert (await figures(tokens, "tokens"))[1] == 0
    assert (await figures(tokens, "tokens"))[2] == 963


async def test_a_request_that_does_not_fit_is_never_sent() -> None:
    tokens = token_budget(100)
    sent: list[int] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        sent.append(1)
        return ModelResponse(parts=[TextPart("hi")])

    agent = Agent(FunctionModel(model),
                  capabilities=[
        OutlayCapability(tokens, estimate_input=101, max_output_tokens=0)])
    with pytest.raises(BudgetExceeded, match="101 tokens"):
        await agent.run("hello")
    assert sent == []
    assert (await figures(tokens, "tokens"))[2] == 100


async def test_a_failed_request_is_refunded() -> None:
    tokens = token_budget(500)

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise RuntimeError("provider down")

    agent = Agent(FunctionModel(model),
                  capabilities=[
        OutlayCapability(tokens, estimate_input=100, max_output_tokens=0)])
    with pytest.raises(RuntimeError, match="provider down"):
        await agent.run("hello")
    assert (await figures(tokens, "tokens"))[1] == 0
    assert (await figures(tokens, "tokens"))[2] == 500
    assert (await figures(tokens, "tokens"))[0] == 0


async def test_a_cancelled_request_is_refunded() -> None:
    tokens = token_budget(500)
    started = anyio.Event()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    agent = Agent(FunctionModel(model),
                  capabilities=[
        OutlayCapability(tokens, estimate_input=100, max_output_tokens=0)])
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, "hello")
        await started.wait()
        assert (await figures(tokens, "tokens"))[1] == 100
        tg.cancel_scope.cancel()
    assert (await figures(tokens, "tokens"))[1] == 0
    assert (await figures(tokens, "tokens"))[2] == 500


async def test_streamed_runs_record_the_final_usage() -> None:
    tokens = token_budget(10_000)
    agent = Agent(TestModel(custom_output_text="streamed"),
                  capabilities=[OutlayCapability(tokens)])
    async with agent.run_stream("hello") as stream:
        assert await stream.get_output() == "streamed"
        usage = stream.usage
    assert (await figures(tokens, "tokens"))[1] == 0
    assert (await figures(tokens, "tokens"))[0] == usage.input_tokens + usage.output_tokens > 0


async def test_the_output_bound_is_held_and_sent() -> None:
    tokens = token_budget(100_000)
    inputs: list[int] = []
    sent: list[Any] = []

    def estimate(request_context: Any) -> int:
        inputs.append(estimate_request_input(request_context))
        return inputs[-1]

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        sent.append((info.model_settings or {}).get("max_tokens"))
        held.append((await figures(tokens, "tokens"))[1])
        return ModelResponse(parts=[TextPart("hi")])

    held: list[Any] = []
    agent = Agent(FunctionModel(model), capabilities=[OutlayCapability(
        tokens, estimate_input=estimate, max_output_tokens=50)])
    await agent.run("x" * 400)
    await agent.run("x" * 400, model_settings={"max_tokens": 7})
    assert inputs[0] >= 100  # >= 100 tokens of prompt text
    assert sent == [50, 7]  # the bound held is the bound the provider is told
    assert held == [inputs[0] + 50, inputs[1] + 7]


async def test_default_estimate_is_the_clients_estimate() -> None:
    seen: list[int] = []
    tokens = token_budget(100_000)

    def estimate(request_context: Any) -> int:
        seen.append(estimate_request_input(request_context))
        return seen[-1]

    agent = Agent(TestModel(), capabilities=[
        OutlayCapability(tokens, estimate_input=estimate)])
    text = "日本語" * 300  # 1.5 tokens per CJK character, as the budgeted clients count
    await agent.run(text)
    # at least the prompt text as the clients estimate it; ~4 characters per token was 225
    assert seen[0] >= estimate_prompt_tokens([text], 1) == (
        REQUEST_OVERHEAD + MESSAGE_OVERHEAD + 1350 + 2)


def test_bad_configuration_is_refused_up_front() -> None:
    with pytest.raises(TypeError, match="outlay budget"):
        OutlayCapability(AtomicBudget(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="estimate"):
        OutlayCapability(token_budget(3), estimate_input=-1)
    with pytest.raises(TypeError, match="prices="):
        OutlayCapability(unit_budget({"usd": Decimal(1)}))
    with pytest.raises(TypeError, match="implements none"):
        OutlayCapability(tool_hooks=[object()])  # type: ignore[list-item]


@pytest.mark.parametrize("shared_budget", [True, False], ids=["budget", "control"])
async def test_eight_parallel_sub_agents_sharing_nine_tool_calls_run_at_most_nine(
        shared_budget: bool) -> None:
    """Acceptance (issue 7): 8 sub-agents run at once, each asking for 2 tool calls in one
    response; with a shared budget of 9 calls exactly 9 tools execute (16 without it).

    Concurrency is forced: every sub-agent's model waits until all 8 are in flight, and every
    admitted tool blocks until the test has seen all of them running at once."""
    budget = AtomicBudget(9, name="tool-calls")
    hooks = [DispatchBudgetHook(budget, 1)] if shared_budget else []
    sub_capability = OutlayCapability(tool_hooks=hooks)
    all_in_flight = anyio.Event()
    release_tools = anyio.Event()
    first_requests = 0
    executions = 0
    running = 0
    peak = 0

    async def sub_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal first_requests
        if answered(messages):
            return ModelResponse(parts=[TextPart("sub done")])
        first_requests += 1
        if first_requests == 8:
            all_in_flight.set()
        await all_in_flight.wait()
        return calls(("search", {"q": "a"}), ("search", {"q": "b"}))

    sub_agent = Agent(FunctionModel(sub_model), capabilities=[sub_capability])

    @sub_agent.tool_plain
    async def search(q: str) -> str:
        nonlocal executions, running, peak
        executions += 1
        running += 1
        peak = max(peak, running)
        await release_tools.wait()
        running -= 1
        return f"found {q}"

    async def parent_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if answered(messages):
            return ModelResponse(parts=[TextPart("all done")])
        return calls(*[("delegate", {"topic": f"t{i}"}) for i in range(8)])

    parent = Agent(FunctionModel(parent_model))

    @parent.tool_plain
    async def delegate(topic: str) -> str:
        return (await sub_agent.run(topic)).output

    outputs: list[str] = []

    async def run_parent() -> None:
        outputs.append((await parent.run("research")).output)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_parent)
            await all_in_flight.wait()
            await anyio.wait_all_tasks_blocked()
            assert running == executions  # every admitted tool is running at the same time
            release_tools.set()
    assert outputs == ["all done"]
    if shared_budget:
        assert executions == 9
        assert peak == 9
        assert budget.available == 0
    else:
        assert executions == 16
        assert peak == 16


async def test_terminate_inside_a_sub_agent_ends_the_parent_run() -> None:
    ran: list[str] = []
    sub = Agent(FunctionModel(lambda m, i: calls(("delete", {}))),
                capabilities=[OutlayCapability(tool_hooks=[ToolCallLimitHook({"delete": 0},
                                                                  on_exceeded="terminate")])])

    @sub.tool_plain
    def delete() -> str:
        ran.append("x")
        return "gone"

    parent = Agent(FunctionModel(lambda m, i: calls(("delegate", {}))))

    @parent.tool_plain
    async def delegate() -> str:
        return (await sub.run("go")).output

    with pytest.raises(DispatchTerminated, match="delete"):
        await parent.run("go")
    assert ran == []


async def test_parallel_sub_agents_sharing_a_token_budget_send_only_what_it_holds() -> None:
    """8 sub-agents start at once on a token budget that holds 5 request estimates: exactly 5
    requests are sent (all in flight together), 3 are refused before sending, and the parent's
    tool turns the refusal into an answer for the parent model."""
    tokens = token_budget(500)
    sub_capability = OutlayCapability(tokens, estimate_input=100, max_output_tokens=0)
    release = anyio.Event()
    sent = 0

    async def sub_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal sent
        sent += 1
        await release.wait()
        return ModelResponse(parts=[TextPart("answer")],
                             usage=RequestUsage(input_tokens=60, output_tokens=20))

    sub_agent = Agent(FunctionModel(sub_model), capabilities=[sub_capability])
    answers: list[str] = []

    async def parent_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if answered(messages):
            return ModelResponse(parts=[TextPart("all done")])
        return calls(*[("delegate", {"topic": f"t{i}"}) for i in range(8)])

    parent = Agent(FunctionModel(parent_model))

    @parent.tool_plain
    async def delegate(topic: str) -> str:
        try:
            answer = (await sub_agent.run(topic)).output
        except BudgetExceeded as exc:
            answer = f"skipped: {exc.reason}"
        answers.append(answer)
        return answer

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(parent.run, "research")
            await anyio.wait_all_tasks_blocked()
            assert sent == 5
            assert (await figures(tokens, "tokens"))[1] == 500
            release.set()
    assert sorted(answers)[:5] == ["answer"] * 5
    assert sum("cannot reserve 100 tokens" in a for a in answers) == 3
    assert (await figures(tokens, "tokens"))[0] == 5 * 80
    assert (await figures(tokens, "tokens"))[1] == 0


async def test_a_stream_whose_consumer_fails_is_charged_what_pydantic_ai_counted() -> None:
    """Regression guard: the provider billed the streamed response, so refunding it would let
    the budget forget real spend."""
    tokens = token_budget(10_000)
    agent = Agent(TestModel(custom_output_text="word " * 50),
                  capabilities=[
        OutlayCapability(tokens, estimate_input=1000, max_output_tokens=0)])

    async def consume_and_fail() -> None:
        async with agent.run_stream("hello") as stream:
            async for _ in stream.stream_text(delta=True):
                raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        await consume_and_fail()
    assert (await figures(tokens, "tokens"))[1] == 0
    consumed = (await figures(tokens, "tokens"))[0]
    assert 0 < consumed < 1000  # the billed response, not the estimate, not a refund


async def test_rejected_attempts_within_a_step_are_recorded_too() -> None:
    """A capability that rejects the first response (RetryModelRequest) makes a second
    attempt inside the same request step: both responses were billed, both are recorded."""
    from dataclasses import dataclass

    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.exceptions import RetryModelRequest

    @dataclass
    class RejectFirst(AbstractCapability[Any]):
        rejected: int = 0

        async def after_model_request(self, ctx: Any, *, request_context: Any,
                                      response: ModelResponse) -> ModelResponse:
            if self.rejected == 0:
                self.rejected += 1
                raise RetryModelRequest()
            return response

    tokens = token_budget(10_000)

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("hi")],
                             usage=RequestUsage(input_tokens=30, output_tokens=7))

    agent = Agent(FunctionModel(model), capabilities=[
        OutlayCapability(tokens, estimate_input=100, max_output_tokens=0), RejectFirst()])
    assert (await agent.run("hello")).output == "hi"
    assert (await figures(tokens, "tokens"))[0] == 2 * 37


def test_billed_usage_falls_back_when_pydantic_ai_does_not_expose_it() -> None:
    from outlay.integrations.pydantic_ai import _billed_usage

    class Bare:
        pass

    class Odd:
        _usage_responses = ("not a response",)

    assert _billed_usage(Bare()) is None  # type: ignore[arg-type]
    assert _billed_usage(Odd()) is None  # type: ignore[arg-type]


# -- the budget object: dollars, tokens, requests and tool-call batches, before sending -------


def scripted(*batches: int, usage: RequestUsage | None = None) -> tuple[FunctionModel, list[str]]:
    """A model that asks for ``batches[i]`` ``search`` calls in its i-th response, then
    answers; and the list of tool runs."""
    ran: list[str] = []
    step = itertools.count()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        i = next(step)
        if i < len(batches):
            return calls(*[("search", {"q": f"{i}-{j}"}) for j in range(batches[i])],
                         usage=usage)
        return ModelResponse(parts=[TextPart("done")], usage=usage or RequestUsage(
            input_tokens=10, output_tokens=5))

    return FunctionModel(model), ran


def agent_with(budget: Any, model: FunctionModel, ran: list[str], **options: Any) -> Agent:
    agent = Agent(model, capabilities=[OutlayCapability(budget, **options)])

    @agent.tool_plain
    async def search(q: str) -> str:
        ran.append(q)
        return f"results for {q}"

    return agent


async def test_tool_calls_stop_at_the_limit_exactly() -> None:
    """A limit of 5 tool calls runs 5 (batches of 2 and 3), and the next batch none of its 3.
    Regression: the capability admitted call by call through hooks; 6 ran where 5 was meant."""
    budget = unit_budget({"tool_calls": 5, "tokens": 100_000})
    model, ran = scripted(2, 3, 3)
    agent = agent_with(budget, model, ran)
    with pytest.raises(BudgetExceeded) as info:
        await agent.run("go")
    assert len(ran) == 5
    assert info.value.unit == "tool_calls"
    assert (info.value.requested, info.value.available) == (3, 0)
    await whole(budget, 5, "tool_calls")


async def test_a_tool_call_batch_is_refused_all_or_nothing() -> None:
    budget = unit_budget({"tool_calls": 5})
    model, ran = scripted(2, 2, 2)
    agent = agent_with(budget, model, ran)
    with pytest.raises(BudgetExceeded):
        await agent.run("go")
    assert ran == ["0-0", "0-1", "1-0", "1-1"]  # the third batch does not fit: none of it ran
    await whole(budget, 4, "tool_calls")


@pytest.mark.parametrize(("unit", "cap"), [("usd", Decimal("0.001")), ("input_tokens", 150),
                                           ("output_tokens", 150), ("requests", 2),
                                           ("tokens", 300)])
async def test_every_unit_is_enforced_before_sending(unit: str, cap: Any) -> None:
    budget = unit_budget({unit: cap})
    sent: list[int] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        sent.append(1)
        return ModelResponse(parts=[TextPart("hi")],
                             usage=RequestUsage(input_tokens=40, output_tokens=20))

    prices = TokenPrices(Decimal("2"), Decimal("8"))  # $ per million tokens
    agent = Agent(FunctionModel(model), capabilities=[OutlayCapability(
        budget, prices=prices, estimate_input=100, max_output_tokens=50)])
    # Each request holds 100 in + 50 out (150 tokens, $0.0006) and one request.
    await agent.run("one")
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(10):
            await agent.run("more")
    assert info.value.unit == unit
    settled: Any = {"usd": Decimal("0.00024"), "input_tokens": 40, "output_tokens": 20,
               "requests": 1, "tokens": 60}[unit]
    runs = len(sent)
    await whole(budget, settled * runs, unit)  # committed at the reported usage, never more
    assert runs == {"usd": 2, "input_tokens": 2, "output_tokens": 6, "requests": 2,
                    "tokens": 3}[unit]


async def test_an_overshoot_is_recorded_and_the_next_request_refused() -> None:
    budget = unit_budget({"tokens": 1000})
    sent: list[int] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        sent.append(1)  # the provider reports more than was held (200 + 100)
        return ModelResponse(parts=[TextPart("hi")],
                             usage=RequestUsage(input_tokens=700, output_tokens=200))

    agent = Agent(FunctionModel(model), capabilities=[OutlayCapability(
        budget, estimate_input=200, max_output_tokens=100)])
    await agent.run("one")
    await whole(budget, 900)  # the overshoot is committed, not capped at the hold
    with pytest.raises(BudgetExceeded):
        await agent.run("two")  # 100 left: the next 300 do not fit
    assert len(sent) == 1


async def test_a_streamed_run_refuses_a_tool_call_batch_that_does_not_fit() -> None:
    budget = unit_budget({"tool_calls": 1, "tokens": 100_000})
    ran: list[str] = []
    agent = Agent(TestModel(), capabilities=[OutlayCapability(budget)])  # calls every tool

    @agent.tool_plain
    async def search(q: str) -> str:
        ran.append("search")
        return "ok"

    @agent.tool_plain
    async def fetch(url: str) -> str:
        ran.append("fetch")
        return "ok"

    with pytest.raises(BudgetExceeded) as info:
        async with agent.run_stream("go") as stream:
            await stream.get_output()
    assert info.value.unit == "tool_calls"
    assert ran == []  # two asked for, one left: neither ran
    await whole(budget, 0, "tool_calls")
