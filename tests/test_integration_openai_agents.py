"""OpenAI Agents SDK integration, run offline with a scripted ``Model`` (no network, no key)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

pytest.importorskip("agents")

from agents import (
    Agent,
    FunctionTool,
    ModelSettings,
    RunConfig,
    Runner,
    function_tool,
)
from agents.agent_output import AgentOutputSchemaBase
from agents.exceptions import AgentsException
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.tool import Tool
from agents.usage import Usage
from openai.types.responses.response_prompt_param import ResponsePromptParam

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
from outlay.integrations.openai_agents import (
    ModelCallInput,
    OutlayModel,
    OutlayModelProvider,
    RunTerminated,
    estimate_call_input,
    wrap_tool,
    wrap_tools,
)

from .budgetkit import figures, token_budget, unit_budget, whole

pytestmark = pytest.mark.anyio

NO_TRACING = RunConfig(tracing_disabled=True)
Items = str | list[TResponseInputItem]
Responder = Callable[[Items], Awaitable[list[Any]]]


@pytest.fixture
def anyio_backend() -> str:
    """The Agents SDK runs on asyncio only."""
    return "asyncio"


class ScriptModel(Model):
    """An offline ``Model``: ``respond(input)`` gives the output items; usage is fixed."""

    def __init__(self, respond: Responder, usage: tuple[int, int] = (10, 5)) -> None:
        self.respond = respond
        self.usage = usage
        self.calls = 0
        self.settings: list[ModelSettings] = []

    async def get_response(
        self, system_instructions: str | None, input: Items,
        model_settings: ModelSettings, tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None, handoffs: list[Handoff],
        tracing: ModelTracing, *, previous_response_id: str | None,
        conversation_id: str | None, prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        self.calls += 1
        self.settings.append(model_settings)
        output = await self.respond(input)
        prompt_tokens, completion_tokens = self.usage
        return ModelResponse(output=output, response_id=None, usage=Usage(
            requests=1, input_tokens=prompt_tokens, output_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens))

    def stream_response(
        self, system_instructions: str | None, input: Items,
        model_settings: ModelSettings, tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None, handoffs: list[Handoff],
        tracing: ModelTracing, *, previous_response_id: str | None,
        conversation_id: str | None, prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("ScriptModel does not stream; see EventsModel")


def has_tool_output(input: Items) -> bool:
    return not isinstance(input, str) and any(
        isinstance(item, dict) and item.get("type") == "function_call_output" for item in input)


def tool_outputs(input: Items) -> list[str]:
    assert not isinstance(input, str)
    return [str(item.get("output")) for item in input
            if isinstance(item, dict) and item.get("type") == "function_call_output"]


_ids = itertools.count()


def calls_then_answer(*calls: tuple[str, dict[str, Any]], answer: str = "done",
                      seen: list[str] | None = None) -> Responder:
    async def respond(input: Items) -> list[Any]:
        if has_tool_output(input):
            if seen is not None:
                seen.extend(tool_outputs(input))
            return [assistant_message(answer)]
        return [function_call(name, args, call_id=f"call-{next(_ids)}") for name, args in calls]
    return respond


class Recorder(ToolDispatchHook):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def before_invocation(self, invocation: ToolInvocation) -> Continue:
        self.events.append(("before", (invocation.tool_name, dict(invocation.arguments),
                                       invocation.principal, invocation.metadata["agent"])))
        return Continue()

    async def after_invocation(self, invocation: ToolInvocation, result: ToolInvocationResult,
                               state: Any) -> None:
        self.events.append(("after", result.output))


async def test_wrapped_tools_pass_the_hook_chain() -> None:
    recorder = Recorder()

    @function_tool
    async def lookup(city: str) -> str:
        return f"sunny in {city}"

    model = ScriptModel(calls_then_answer(("lookup", {"city": "Oslo"})))
    agent = Agent(name="weather", model=model,
                  tools=wrap_tools([lookup], [recorder], principal="alice"))
    result = await Runner.run(agent, "weather?", run_config=NO_TRACING)
    assert result.final_output == "done"
    assert recorder.events == [("before", ("lookup", {"city": "Oslo"}, "alice", "weather")),
                               ("after", "sunny in Oslo")]


async def test_a_budget_hook_skips_calls_beyond_the_budget_and_the_model_sees_why() -> None:
    ran: list[int] = []
    seen: list[str] = []
    budget = AtomicBudget(2)

    @function_tool
    async def work(n: int) -> str:
        ran.append(n)
        return f"did {n}"

    model = ScriptModel(calls_then_answer(("work", {"n": 1}), ("work", {"n": 2}),
                                          ("work", {"n": 3}), seen=seen))
    hook = DispatchBudgetHook(budget, 1)
    agent = Agent(name="a", model=model, tools=[wrap_tool(work, [hook])])
    assert (await Runner.run(agent, "go", run_config=NO_TRACING)).final_output == "done"
    assert len(ran) == 2
    assert budget.available == 0
    assert sum(s.startswith("not run:") for s in seen) == 1


async def test_terminate_ends_the_run_with_dispatch_terminated() -> None:
    ran: list[str] = []

    @function_tool
    def delete() -> str:
        ran.append("x")
        return "gone"

    hook = ToolCallLimitHook({"delete": 0}, on_exceeded="terminate")
    agent = Agent(name="a", model=ScriptModel(calls_then_answer(("delete", {}))),
                  tools=[wrap_tool(delete, [hook])])
    with pytest.raises(DispatchTerminated, match="delete") as info:
        await Runner.run(agent, "go", run_config=NO_TRACING)
    assert ran == []
    # A public class, catchable as outlay's DispatchTerminated or the SDK's AgentsException.
    assert type(info.value) is RunTerminated
    assert RunTerminated.__module__ == "outlay.integrations.openai_agents"
    assert isinstance(info.value, AgentsException)


async def test_a_tool_failure_is_an_sdk_error_string_the_hooks_see_as_completed() -> None:
    budget = AtomicBudget(5)

    @function_tool
    def broken() -> str:
        raise RuntimeError("disk full")

    seen: list[str] = []
    hook = DispatchBudgetHook(budget, 1)
    agent = Agent(name="a", model=ScriptModel(calls_then_answer(("broken", {}), seen=seen)),
                  tools=[wrap_tool(broken, [hook])])
    await Runner.run(agent, "go", run_config=NO_TRACING)
    assert "error occurred" in seen[0]
    assert budget.available == 4  # documented: the SDK reported the failure as a result


async def test_wrap_tools_keeps_other_tools_and_refuses_non_function_tools() -> None:
    other = object()
    assert wrap_tools([other], [Recorder()]) == [other]  # type: ignore[list-item]
    with pytest.raises(TypeError, match="FunctionTool"):
        wrap_tool(other, [Recorder()])  # type: ignore[arg-type]


async def test_model_calls_hold_the_estimate_and_record_reported_usage() -> None:
    tokens = token_budget(1000)
    held: list[Any] = []

    async def respond(input: Items) -> list[Any]:
        held.append((await figures(tokens, "tokens"))[1])
        return [assistant_message("hi")]

    model = OutlayModel(ScriptModel(respond, usage=(30, 7)), tokens, estimate_input=200,
                        max_output_tokens=0)
    agent = Agent(name="a", model=model)
    assert (await Runner.run(agent, "hello", run_config=NO_TRACING)).final_output == "hi"
    assert held == [200]
    assert (await figures(tokens, "tokens"))[0] == 37
    assert (await figures(tokens, "tokens"))[1] == 0


async def test_a_call_that_does_not_fit_is_never_sent() -> None:
    tokens = token_budget(100)
    inner = ScriptModel(calls_then_answer())
    agent = Agent(name="a", model=OutlayModel(
        inner, tokens, estimate_input=101, max_output_tokens=0))
    with pytest.raises(BudgetExceeded, match="101 tokens"):
        await Runner.run(agent, "hello", run_config=NO_TRACING)
    assert inner.calls == 0
    assert (await figures(tokens, "tokens"))[2] == 100


async def test_failed_and_cancelled_calls_are_refunded() -> None:
    tokens = token_budget(500)

    async def fail(input: Items) -> list[Any]:
        raise RuntimeError("provider down")

    agent = Agent(name="a", model=OutlayModel(
        ScriptModel(fail), tokens, estimate_input=100, max_output_tokens=0))
    with pytest.raises(RuntimeError, match="provider down"):
        await Runner.run(agent, "hello", run_config=NO_TRACING)
    assert (await figures(tokens, "tokens"))[1] == 0
    assert (await figures(tokens, "tokens"))[2] == 500

    started = anyio.Event()

    async def hang(input: Items) -> list[Any]:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    agent = Agent(name="a", model=OutlayModel(
        ScriptModel(hang), tokens, estimate_input=100, max_output_tokens=0))
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(Runner.run, agent, "hello", run_config=NO_TRACING))
        await started.wait()
        assert (await figures(tokens, "tokens"))[1] == 100
        tg.cancel_scope.cancel()
    assert (await figures(tokens, "tokens"))[1] == 0
    assert (await figures(tokens, "tokens"))[2] == 500


async def test_streamed_runs_record_the_usage_of_the_completed_event() -> None:
    tokens = token_budget(1000)
    inner = ScriptedModel([ModelStep(output=[assistant_message("streamed")],
                                     usage=Usage(requests=1, input_tokens=40, output_tokens=9,
                                                 total_tokens=49))])
    agent = Agent(name="a", model=OutlayModel(
        inner, tokens, estimate_input=300, max_output_tokens=0))
    result = Runner.run_streamed(agent, "hello", run_config=NO_TRACING)
    async for _ in result.stream_events():
        pass
    assert result.final_output == "streamed"
    assert (await figures(tokens, "tokens"))[0] == 49
    assert (await figures(tokens, "tokens"))[1] == 0


class EventsModel(ScriptModel):
    """Streams the given stand-in events (no usage report), for OutlayModel alone."""

    def __init__(self, events: list[Any]) -> None:
        super().__init__(calls_then_answer())
        self.events = events

    async def stream_response(
        self, *args: Any, **kwargs: Any,
    ) -> AsyncIterator[Any]:
        for event in self.events:
            if isinstance(event, Exception):
                raise event
            yield event


def stream_args() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return ((None, "hi", ModelSettings(), [], None, [], ModelTracing.DISABLED),
            {"previous_response_id": None, "conversation_id": None, "prompt": None})


@pytest.mark.parametrize(("events", "consume", "consumed"), [
    ([RuntimeError("refused")], None, 0),                    # failed before any event: refund
    ([SimpleNamespace(type="response.created")] * 3, 1, 50),  # consumer stopped: charge estimate
    ([SimpleNamespace(type="response.created"), RuntimeError("cut")], None, 50),
    ([SimpleNamespace(type="response.created")], None, 50),   # ended without usage: estimate
    ([SimpleNamespace(type="response.completed",
                      response=SimpleNamespace(usage=SimpleNamespace(input_tokens=3,
                                                                     output_tokens=4)))],
     None, 7),
], ids=["error-first", "closed-early", "error-later", "no-usage", "usage"])
async def test_stream_settlement(events: list[Any], consume: int | None, consumed: int) -> None:
    tokens = token_budget(100)
    model = OutlayModel(EventsModel(events), tokens, estimate_input=50, max_output_tokens=0)
    args, kwargs = stream_args()
    stream = model.stream_response(*args, **kwargs)
    got = 0
    try:
        async for _ in stream:
            got += 1
            if got == consume:
                break
    except RuntimeError:
        pass
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    assert (await figures(tokens, "tokens"))[1] == 0
    assert (await figures(tokens, "tokens"))[0] == consumed


async def test_the_output_bound_is_held_and_sent() -> None:
    tokens = token_budget(10_000)
    seen: list[Any] = []

    async def respond(input: Any) -> list[Any]:
        seen.append((await figures(tokens, "tokens"))[1])
        return [assistant_message("hi")]

    inner = ScriptModel(respond)
    agent = Agent(name="a", model=OutlayModel(inner, tokens, estimate_input=100,
                                              max_output_tokens=50))
    await Runner.run(agent, "go", run_config=NO_TRACING)
    bounded = Agent(name="b", model=OutlayModel(inner, tokens, estimate_input=100),
                    model_settings=ModelSettings(max_tokens=7))
    await Runner.run(bounded, "go", run_config=NO_TRACING)
    assert seen == [150, 107]
    assert [s.max_tokens for s in inner.settings] == [50, 7]  # the bound held is the bound sent


async def test_default_estimate_is_the_clients_estimate() -> None:
    @function_tool
    def lookup(city: str) -> str:
        return city

    text = "日本語" * 300  # 1.5 tokens per CJK character, as the budgeted clients count
    call = ModelCallInput(None, text, ModelSettings(), [], [])
    assert estimate_call_input(call) == estimate_prompt_tokens([text], 1)
    assert estimate_prompt_tokens([text], 1) == REQUEST_OVERHEAD + MESSAGE_OVERHEAD + 1350 + 2
    items: list[Any] = [{"role": "user", "content": "abcdef"}]
    with_items = ModelCallInput("be brief", items, ModelSettings(), [], [])
    assert estimate_call_input(with_items) == estimate_prompt_tokens(["be brief", items], 2)
    with_tools = ModelCallInput("be brief", "x" * 400, ModelSettings(), [lookup], [])
    assert estimate_call_input(with_tools) > estimate_prompt_tokens(["be brief", "x" * 400], 2)


async def test_bad_configuration_is_refused_up_front() -> None:
    inner = ScriptModel(calls_then_answer())
    with pytest.raises(TypeError, match="outlay budget"):
        OutlayModel(inner, AtomicBudget(3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Model"):
        OutlayModel(object(), token_budget(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="estimate"):
        OutlayModel(inner, token_budget(3), estimate_input=-1)
    with pytest.raises(TypeError, match="prices="):
        OutlayModel(inner, unit_budget({"usd": Decimal(1)}))


@pytest.mark.parametrize("shared_budget", [True, False], ids=["budget", "control"])
async def test_eight_parallel_sub_agents_sharing_nine_tool_calls_run_at_most_nine(
        shared_budget: bool) -> None:
    """Acceptance (issue 7): a parent calls 8 agents-as-tools in one response; each sub-agent
    asks for 2 tool calls at once. With a shared budget of 9 calls exactly 9 tools execute
    (16 without it). Concurrency is forced as in the pydantic-ai test."""
    budget = AtomicBudget(9, name="tool-calls")
    hooks = [DispatchBudgetHook(budget, 1)] if shared_budget else []
    all_in_flight = anyio.Event()
    release_tools = anyio.Event()
    first_requests = 0
    executions = 0
    running = 0
    peak = 0

    async def sub_respond(input: Items) -> list[Any]:
        nonlocal first_requests
        if has_tool_output(input):
            return [assistant_message("sub done")]
        first_requests += 1
        if first_requests == 8:
            all_in_flight.set()
        await all_in_flight.wait()
        return [function_call("search", {"q": q}, call_id=f"s-{next(_ids)}") for q in "ab"]

    @function_tool
    async def search(q: str) -> str:
        nonlocal executions, running, peak
        executions += 1
        running += 1
        peak = max(peak, running)
        await release_tools.wait()
        running -= 1
        return f"found {q}"

    sub_agent = Agent(name="researcher", model=ScriptModel(sub_respond),
                      tools=wrap_tools([search], hooks))
    delegate: FunctionTool = sub_agent.as_tool("delegate", "research a topic",
                                               run_config=NO_TRACING)

    parent_model = ScriptModel(calls_then_answer(
        *[("delegate", {"input": f"topic {i}"}) for i in range(8)], answer="all done"))
    parent = Agent(name="lead", model=parent_model, tools=[delegate])
    outputs: list[Any] = []

    async def run_parent() -> None:
        outputs.append((await Runner.run(parent, "research", run_config=NO_TRACING))
                       .final_output)

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


async def test_a_model_provider_wraps_every_named_model() -> None:
    from agents.models.interface import ModelProvider

    tokens = token_budget(1000)
    names: list[str | None] = []

    class Provider(ModelProvider):
        def get_model(self, model_name: str | None) -> Model:
            names.append(model_name)
            return ScriptModel(calls_then_answer(), usage=(20, 3))

    agent = Agent(name="a", model="house-model")
    config = RunConfig(tracing_disabled=True,
                       model_provider=OutlayModelProvider(Provider(), tokens, estimate_input=100,
                                                                         max_output_tokens=0))
    await Runner.run(agent, "hello", run_config=config)
    assert names == ["house-model"]
    assert (await figures(tokens, "tokens"))[0] == 23
    with pytest.raises(TypeError, match="ModelProvider"):
        OutlayModelProvider(object(), tokens)  # type: ignore[arg-type]


@pytest.mark.parametrize("raise_errors", [True, False], ids=["raise", "sdk-default"])
async def test_terminate_inside_an_agent_as_tool(raise_errors: bool) -> None:
    """Documented: the SDK's agent-as-tool turns a sub-run's exception into an error string
    for the parent unless built with ``failure_error_function=None``."""
    ran: list[str] = []

    @function_tool
    def delete() -> str:
        ran.append("x")
        return "gone"

    sub = Agent(name="sub", model=ScriptModel(calls_then_answer(("delete", {}))),
                tools=wrap_tools([delete], [ToolCallLimitHook({"delete": 0},
                                                              on_exceeded="terminate")]))
    extra: dict[str, Any] = {"failure_error_function": None} if raise_errors else {}
    parent = Agent(name="lead", model=ScriptModel(calls_then_answer(("sub", {"input": "go"}))),
                   tools=[sub.as_tool("sub", "sub", run_config=NO_TRACING, **extra)])
    if raise_errors:
        with pytest.raises(DispatchTerminated, match="delete"):
            await Runner.run(parent, "go", run_config=NO_TRACING)
    else:
        assert (await Runner.run(parent, "go", run_config=NO_TRACING)).final_output == "done"
    assert ran == []


async def test_parallel_sub_agents_sharing_a_token_budget_send_only_what_it_holds() -> None:
    """8 sub-agent runs start at once on a token budget that holds 5 call estimates: exactly 5
    calls are sent (all in flight together), 3 are refused before sending."""
    tokens = token_budget(500)
    release = anyio.Event()
    sent = 0

    async def sub_respond(input: Items) -> list[Any]:
        nonlocal sent
        sent += 1
        await release.wait()
        return [assistant_message("answer")]

    sub_agent = Agent(name="researcher",
                      model=OutlayModel(ScriptModel(sub_respond, usage=(60, 20)), tokens,
                                        estimate_input=100, max_output_tokens=0))
    answers: list[str] = []

    @function_tool
    async def delegate(topic: str) -> str:
        try:
            answer = str((await Runner.run(sub_agent, topic, run_config=NO_TRACING))
                         .final_output)
        except BudgetExceeded as exc:
            answer = f"skipped: {exc.reason}"
        answers.append(answer)
        return answer

    parent = Agent(name="lead", tools=[delegate], model=ScriptModel(calls_then_answer(
        *[("delegate", {"topic": f"t{i}"}) for i in range(8)], answer="all done")))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(Runner.run, parent, "go", run_config=NO_TRACING))
            await anyio.wait_all_tasks_blocked()
            assert sent == 5
            assert (await figures(tokens, "tokens"))[1] == 500
            release.set()
    assert sorted(answers)[:5] == ["answer"] * 5
    assert sum("cannot reserve 100 tokens" in a for a in answers) == 3
    assert (await figures(tokens, "tokens"))[0] == 5 * 80
    assert (await figures(tokens, "tokens"))[1] == 0


def test_the_wrapper_passes_on_what_the_sdk_probes_on_models() -> None:
    inner = ScriptModel(calls_then_answer())
    inner.model = "house-model"  # type: ignore[attr-defined]
    wrapped = OutlayModel(inner, token_budget(10))
    assert wrapped.wrapped is inner
    assert wrapped.model == "house-model"
    with pytest.raises(AttributeError):
        _ = wrapped.no_such_attribute


# -- the budget object: dollars, tokens, requests and tool-call batches, before sending -------


def batches(*sizes: int, usage: Usage | None = None) -> ScriptedModel:
    steps: list[Any] = [[function_call("search", {"q": f"{i}-{j}"}, call_id=f"c{i}-{j}")
                         for j in range(size)] for i, size in enumerate(sizes)]
    steps.append([assistant_message("done")])
    return ScriptedModel(steps, default_usage=usage or Usage(
        requests=1, input_tokens=10, output_tokens=5, total_tokens=15))


def searching(ran: list[str]) -> Any:
    @function_tool
    async def search(q: str) -> str:
        ran.append(q)
        return f"results for {q}"

    return search


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
async def test_tool_calls_stop_at_the_limit_exactly(streamed: bool) -> None:
    """A limit of 5 tool calls runs 5 (batches of 2 and 3) and none of the next batch of 3."""
    budget = unit_budget({"tool_calls": 5, "tokens": 100_000})
    ran: list[str] = []
    agent = Agent(name="a", model=OutlayModel(batches(2, 3, 3), budget, max_output_tokens=100),
                  tools=[searching(ran)])
    with pytest.raises(BudgetExceeded) as info:
        if streamed:
            result = Runner.run_streamed(agent, "go", run_config=NO_TRACING)
            async for _ in result.stream_events():
                pass
        else:
            await Runner.run(agent, "go", run_config=NO_TRACING)
    assert len(ran) == 5
    assert (info.value.unit, info.value.requested) == ("tool_calls", 3)
    await whole(budget, 5, "tool_calls")
    await whole(budget, 3 * 15)  # three model calls, each settled at its reported usage


async def test_a_tool_call_batch_is_refused_all_or_nothing() -> None:
    budget = unit_budget({"tool_calls": 5})
    ran: list[str] = []
    agent = Agent(name="a", model=OutlayModel(batches(2, 2, 2), budget),
                  tools=[searching(ran)])
    with pytest.raises(BudgetExceeded):
        await Runner.run(agent, "go", run_config=NO_TRACING)
    assert ran == ["0-0", "0-1", "1-0", "1-1"]
    await whole(budget, 4, "tool_calls")


async def test_dollars_are_enforced_before_sending_and_an_overshoot_is_recorded() -> None:
    budget = unit_budget({"usd": Decimal("0.01")})
    prices = TokenPrices(Decimal("2"), Decimal("8"))  # $ per million tokens
    # Held per call: 1000 in + 500 out = $0.006; the provider reports more: 3000 in, 200 out.
    usage = Usage(requests=1, input_tokens=3000, output_tokens=200, total_tokens=3200)
    inner = ScriptedModel([[assistant_message("one")], [assistant_message("two")]],
                          default_usage=usage)
    agent = Agent(name="a", model=OutlayModel(inner, budget, prices=prices, estimate_input=1000,
                                              max_output_tokens=500))
    await Runner.run(agent, "go", run_config=NO_TRACING)
    await whole(budget, Decimal("0.0076"), "usd")  # 3000 * 2 + 200 * 8, above the hold
    with pytest.raises(BudgetExceeded) as info:  # $0.0024 left: the next $0.006 is refused
        await Runner.run(agent, "again", run_config=NO_TRACING)
    assert info.value.unit == "usd"
    await whole(budget, Decimal("0.0076"), "usd")
