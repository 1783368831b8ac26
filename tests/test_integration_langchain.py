"""LangChain v1 agents and LangGraph, offline with a scripted chat model (tests/langchainkit)."""

from __future__ import annotations

import itertools
import operator
from decimal import Decimal
from typing import Annotated, Any, TypedDict

import anyio
import pytest

pytest.importorskip("langchain")
pytest.importorskip("langgraph")

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Send

from outlay import (
    AtomicBudget,
    BudgetExceeded,
    Continue,
    DispatchBudgetHook,
    DispatchTerminated,
    Skip,
    Terminate,
    TokenPrices,
    ToolDispatchHook,
    ToolInvocation,
)
from outlay.integrations.langchain import (
    BudgetedChatModel,
    OutlayMiddleware,
    estimate_messages_input,
)

from .budgetkit import figures, unit_budget, whole
from .langchainkit import ScriptedChatModel, answered, reply

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """LangGraph runs its graphs on asyncio tasks, not on trio."""
    return "asyncio"


def searcher(ran: list[str]) -> Any:
    @tool
    async def search(q: str) -> str:
        """Search the web."""
        ran.append(q)
        return f"results for {q}"

    return search


def batches(*sizes: int, input_tokens: int = 10, output_tokens: int = 5) -> Any:
    """The i-th response asks for ``sizes[i]`` searches; then the model answers."""
    step = itertools.count()

    async def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        i = next(step)
        calls = [("search", {"q": f"{i}-{j}"}) for j in range(sizes[i])] if i < len(sizes) else []
        return reply("" if calls else "done", calls=calls, input_tokens=input_tokens,
                     output_tokens=output_tokens)

    return respond


async def test_model_calls_hold_the_bound_and_commit_the_reported_usage() -> None:
    budget = unit_budget({"tokens": 10_000, "requests": 10, "usd": Decimal("1")})
    prices = TokenPrices(Decimal("2"), Decimal("8"))
    ran: list[str] = []
    model = ScriptedChatModel(respond=batches(1, input_tokens=40, output_tokens=20))
    agent = create_agent(model, tools=[searcher(ran)], middleware=[OutlayMiddleware(
        budget, prices=prices, max_output_tokens=300)])
    result = await agent.ainvoke({"messages": [HumanMessage("go")]})
    assert result["messages"][-1].content == "done"
    assert ran == ["0-0"]
    assert [call["max_tokens"] for call in model.calls] == [300, 300]  # the bound is sent
    await whole(budget, 120)  # two calls of 40 in + 20 out, as reported
    await whole(budget, 2, "requests")
    await whole(budget, Decimal("0.00048"), "usd")  # 2 x (40 x $2 + 20 x $8) per million


async def test_a_call_that_does_not_fit_is_never_sent() -> None:
    budget = unit_budget({"tokens": 500})
    model = ScriptedChatModel(respond=batches())
    agent = create_agent(model, tools=[], middleware=[OutlayMiddleware(
        budget, estimate_input=100, max_output_tokens=401)])
    with pytest.raises(BudgetExceeded) as info:
        await agent.ainvoke({"messages": [HumanMessage("go")]})
    assert model.calls == []
    assert (info.value.unit, info.value.requested) == ("tokens", 501)
    await whole(budget, 0)


async def test_a_models_own_max_tokens_is_the_bound() -> None:
    model = ScriptedChatModel(respond=batches(), max_tokens=64)
    fits = unit_budget({"output_tokens": 64})
    agent = create_agent(model, tools=[], middleware=[OutlayMiddleware(fits)])
    await agent.ainvoke({"messages": [HumanMessage("go")]})
    assert "max_tokens" not in model.calls[0]  # the model sends its own bound
    await whole(fits, 5, "output_tokens")
    short = unit_budget({"output_tokens": 63})
    agent = create_agent(model, tools=[], middleware=[OutlayMiddleware(short)])
    with pytest.raises(BudgetExceeded) as info:
        await agent.ainvoke({"messages": [HumanMessage("go")]})
    assert (info.value.requested, len(model.calls)) == (64, 1)


async def test_a_bound_max_tokens_is_the_bound() -> None:
    budget = unit_budget({"output_tokens": 1000})
    model = ScriptedChatModel(respond=batches())
    agent = create_agent(model.bind(max_tokens=64),  # type: ignore[call-overload]
                         tools=[], middleware=[OutlayMiddleware(budget)])
    await agent.ainvoke({"messages": [HumanMessage("go")]})
    assert model.calls[0]["max_tokens"] == 64
    await whole(budget, 5, "output_tokens")


async def test_an_overshoot_is_committed_and_the_next_call_refused() -> None:
    budget = unit_budget({"tokens": 1000})
    model = ScriptedChatModel(respond=batches(input_tokens=700, output_tokens=200))
    agent = create_agent(model, tools=[], middleware=[OutlayMiddleware(
        budget, estimate_input=200, max_output_tokens=100)])
    await agent.ainvoke({"messages": [HumanMessage("one")]})
    await whole(budget, 900)  # more than the 300 held: committed, never capped at the hold
    with pytest.raises(BudgetExceeded):
        await agent.ainvoke({"messages": [HumanMessage("two")]})
    assert len(model.calls) == 1


async def test_cache_reads_and_writes_are_priced_at_their_own_rates() -> None:
    budget = unit_budget({"usd": Decimal("1")})
    prices = TokenPrices(Decimal("3"), Decimal("15"), cached_input_per_mtok=Decimal("0.3"),
                         cache_write_per_mtok=Decimal("3.75"))

    async def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        return reply("hi", input_tokens=1000, output_tokens=100, cache_read=400,
                     cache_creation=500)

    agent = create_agent(ScriptedChatModel(respond=respond), tools=[],
                         middleware=[OutlayMiddleware(budget, prices=prices)])
    await agent.ainvoke({"messages": [HumanMessage("go")]})
    # 100 plain input x $3 + 400 cached x $0.3 + 500 written x $3.75 + 100 output x $15
    expected = (100 * 3 + 400 * Decimal("0.3") + 500 * Decimal("3.75") + 100 * 15) / 10**6
    await whole(budget, expected, "usd")


async def test_no_reported_usage_is_charged_the_whole_hold() -> None:
    budget = unit_budget({"tokens": 10_000})

    async def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        return reply("hi", usage=False)

    agent = create_agent(ScriptedChatModel(respond=respond), tools=[],
                         middleware=[OutlayMiddleware(budget, estimate_input=50,
                                                      max_output_tokens=70)])
    await agent.ainvoke({"messages": [HumanMessage("go")]})
    await whole(budget, 120)


async def test_a_failed_call_is_refunded() -> None:
    budget = unit_budget({"tokens": 10_000})

    async def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        raise ConnectionError("provider down")

    agent = create_agent(ScriptedChatModel(respond=respond), tools=[],
                         middleware=[OutlayMiddleware(budget)])
    with pytest.raises(ConnectionError):
        await agent.ainvoke({"messages": [HumanMessage("go")]})
    await whole(budget, 0)


async def test_a_cancelled_call_is_refunded() -> None:
    budget = unit_budget({"tokens": 10_000})
    entered = anyio.Event()

    async def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    agent = create_agent(ScriptedChatModel(respond=respond), tools=[],
                         middleware=[OutlayMiddleware(budget, estimate_input=10)])
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ainvoke, agent, "go")
            await entered.wait()
            assert (await figures(budget, "tokens"))[1] == 10 + 1024  # held while in flight
            tg.cancel_scope.cancel()
    await whole(budget, 0)


async def test_tool_calls_stop_at_the_limit_exactly() -> None:
    """A limit of 5 tool calls runs 5 (batches of 2 and 3); the next batch of 3 runs none."""
    budget = unit_budget({"tool_calls": 5, "tokens": 100_000})
    ran: list[str] = []
    agent = create_agent(ScriptedChatModel(respond=batches(2, 3, 3)), tools=[searcher(ran)],
                         middleware=[OutlayMiddleware(budget)])
    with pytest.raises(BudgetExceeded) as info:
        await agent.ainvoke({"messages": [HumanMessage("go")]})
    assert len(ran) == 5
    assert (info.value.unit, info.value.requested, info.value.available) == ("tool_calls", 3, 0)
    await whole(budget, 5, "tool_calls")


async def test_a_tool_call_batch_is_refused_all_or_nothing() -> None:
    budget = unit_budget({"tool_calls": 5})
    ran: list[str] = []
    agent = create_agent(ScriptedChatModel(respond=batches(2, 2, 2)), tools=[searcher(ran)],
                         middleware=[OutlayMiddleware(budget)])
    with pytest.raises(BudgetExceeded):
        await agent.ainvoke({"messages": [HumanMessage("go")]})
    assert sorted(ran) == ["0-0", "0-1", "1-0", "1-1"]  # none of the third batch ran
    await whole(budget, 4, "tool_calls")


class Recorder(ToolDispatchHook):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    async def before_invocation(self, invocation: ToolInvocation) -> Continue:
        self.seen.append((invocation.call_id, invocation.tool_name, dict(invocation.arguments)))
        assert invocation.metadata == {"framework": "langchain"}
        assert invocation.principal == "agent:lc"
        return Continue()


async def test_tool_calls_pass_the_hook_chain() -> None:
    recorder = Recorder()
    ran: list[str] = []
    agent = create_agent(ScriptedChatModel(respond=batches(2)), tools=[searcher(ran)],
                         middleware=[OutlayMiddleware(tool_hooks=[recorder],
                                                      principal="agent:lc")])
    await agent.ainvoke({"messages": [HumanMessage("go")]})
    assert sorted(recorder.seen) == [("call-0-search", "search", {"q": "0-0"}),
                                     ("call-1-search", "search", {"q": "0-1"})]
    assert sorted(ran) == ["0-0", "0-1"]


class SkipSecond(ToolDispatchHook):
    async def before_invocation(self, invocation: ToolInvocation) -> Continue | Skip:
        if invocation.arguments["q"].endswith("-1"):
            return Skip("not allowed today", reason="policy", is_error=True)
        return Continue()


async def test_a_skipped_call_answers_the_model_without_running() -> None:
    ran: list[str] = []
    agent = create_agent(ScriptedChatModel(respond=batches(2)), tools=[searcher(ran)],
                         middleware=[OutlayMiddleware(tool_hooks=[SkipSecond()])])
    result = await agent.ainvoke({"messages": [HumanMessage("go")]})
    assert ran == ["0-0"]
    answers = {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}
    assert answers["call-1-search"].content == "not allowed today"
    assert answers["call-1-search"].status == "error"
    assert answers["call-0-search"].status == "success"


class Stop(ToolDispatchHook):
    async def before_invocation(self, invocation: ToolInvocation) -> Terminate:
        return Terminate("the approver said stop")


async def test_terminate_ends_the_run() -> None:
    ran: list[str] = []
    agent = create_agent(ScriptedChatModel(respond=batches(1)), tools=[searcher(ran)],
                         middleware=[OutlayMiddleware(tool_hooks=[Stop()])])
    with pytest.raises(DispatchTerminated, match="approver said stop"):
        await agent.ainvoke({"messages": [HumanMessage("go")]})
    assert ran == []


def test_the_default_estimate_counts_messages_and_tools() -> None:
    messages = [HumanMessage("hello " * 50)]
    bare = estimate_messages_input(messages)
    with_tools = estimate_messages_input(messages, [searcher([])])
    assert bare >= 50  # at least a token per word
    assert with_tools > bare


async def ainvoke(agent: Any, text: str) -> None:
    await agent.ainvoke({"messages": [HumanMessage(text)]})


# -- BudgetedChatModel: any model in any LangGraph node ----------------------------------------


class State(TypedDict):
    messages: Annotated[list[BaseMessage], operator.add]


def one_node_graph(model: Any) -> Any:
    async def think(state: State) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(State)
    graph.add_node("think", think)
    graph.add_edge(START, "think")
    graph.add_edge("think", END)
    return graph.compile()


async def test_a_budgeted_model_in_a_graph_node_is_held_and_settled() -> None:
    budget = unit_budget({"tokens": 1000, "requests": 2})
    inner = ScriptedChatModel(respond=batches(input_tokens=30, output_tokens=12))
    graph = one_node_graph(BudgetedChatModel(model=inner, budget=budget, max_output_tokens=100))
    out = await graph.ainvoke({"messages": [HumanMessage("go")]})
    assert out["messages"][-1].content == "done"
    assert inner.calls[0]["max_tokens"] == 100
    await whole(budget, 42)
    await whole(budget, 1, "requests")


async def test_a_budgeted_model_refuses_before_sending() -> None:
    budget = unit_budget({"requests": 1})
    inner = ScriptedChatModel(respond=batches())
    graph = one_node_graph(BudgetedChatModel(model=inner, budget=budget))
    await graph.ainvoke({"messages": [HumanMessage("one")]})
    with pytest.raises(BudgetExceeded) as info:
        await graph.ainvoke({"messages": [HumanMessage("two")]})
    assert info.value.unit == "requests"
    assert len(inner.calls) == 1


async def test_a_budgeted_model_is_refunded_on_cancellation() -> None:
    budget = unit_budget({"tokens": 5000})
    entered = anyio.Event()

    async def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    model = BudgetedChatModel(model=ScriptedChatModel(respond=respond), budget=budget)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(model.ainvoke, "go")
            await entered.wait()
            assert (await figures(budget, "tokens"))[1] > 0
            tg.cancel_scope.cancel()
    await whole(budget, 0)


async def test_a_budgeted_model_binds_tools_and_charges_their_batch() -> None:
    budget = unit_budget({"tool_calls": 1, "tokens": 100_000})
    inner = ScriptedChatModel(respond=batches(2))
    model = BudgetedChatModel(model=inner, budget=budget).bind_tools([searcher([])])
    with pytest.raises(BudgetExceeded) as info:
        await model.ainvoke("go")
    assert info.value.unit == "tool_calls"
    assert inner.calls[0]["tools"] == ["search"]  # bound the way the wrapped model binds them
    await whole(budget, 15)  # the call itself was settled before its batch was refused


def test_a_budgeted_model_is_async_only() -> None:
    model = BudgetedChatModel(model=ScriptedChatModel(respond=batches()),
                              budget=unit_budget({"tokens": 10}))
    with pytest.raises(RuntimeError, match="async only"):
        model.invoke("go")


# -- LangGraph: parallel sub-agents sharing one budget ---------------------------------------


class Fanout(TypedDict):
    topics: list[str]
    answers: Annotated[list[str], operator.add]


@pytest.mark.parametrize("shared_budget", [True, False], ids=["budget", "control"])
async def test_eight_parallel_sub_agents_sharing_nine_tool_calls_run_exactly_nine(
        shared_budget: bool) -> None:
    """8 sub-agents (each a ``create_agent`` graph) run as parallel branches of a LangGraph
    graph (``Send``); each asks for 2 tool calls in one response. With a hook over one budget
    of 9 calls exactly 9 tools run (16 without it). Concurrency is forced: every sub-agent's
    model waits until all 8 are in flight, and admitted tools block until as many as should
    run are running at once (then any further admission would show as an extra run)."""
    expected = 9 if shared_budget else 16
    all_running = anyio.Event()
    budget = AtomicBudget(9, name="tool-calls")
    hooks = [DispatchBudgetHook(budget, 1)] if shared_budget else []
    all_in_flight = anyio.Event()
    release_tools = anyio.Event()
    first_requests = 0
    executions = 0
    running = 0
    peak = 0

    async def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        nonlocal first_requests
        if answered(messages):
            return reply("sub done")
        first_requests += 1
        if first_requests == 8:
            all_in_flight.set()
        await all_in_flight.wait()
        return reply(calls=[("search", {"q": "a"}), ("search", {"q": "b"})])

    @tool
    async def search(q: str) -> str:
        """Search."""
        nonlocal executions, running, peak
        executions += 1
        running += 1
        peak = max(peak, running)
        if running == expected:
            all_running.set()
        await release_tools.wait()
        running -= 1
        return f"found {q}"

    sub_agent = create_agent(ScriptedChatModel(respond=respond), tools=[search],
                             middleware=[OutlayMiddleware(tool_hooks=hooks)])

    async def research(state: Any) -> dict[str, Any]:
        out = await sub_agent.ainvoke({"messages": [HumanMessage(state["topic"])]})
        return {"answers": [out["messages"][-1].content]}

    def fan_out(state: Fanout) -> list[Send]:
        return [Send("research", {"topic": topic}) for topic in state["topics"]]

    graph = StateGraph(Fanout)
    graph.add_node("research", research)
    graph.add_conditional_edges(START, fan_out, ["research"])
    graph.add_edge("research", END)
    app = graph.compile()
    results: list[Any] = []

    async def run() -> None:
        results.append(await app.ainvoke({"topics": [f"t{i}" for i in range(8)],
                                          "answers": []}))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await all_running.wait()
            await anyio.wait_all_tasks_blocked()
            assert running == executions  # every admitted tool is running at the same time
            release_tools.set()
    assert results[0]["answers"] == ["sub done"] * 8
    if shared_budget:
        assert (executions, peak, budget.available) == (9, 9, 0)
    else:
        assert (executions, peak) == (16, 16)


async def test_a_prebuilt_tool_node_takes_the_middlewares_tool_wrapper() -> None:
    recorder = Recorder()
    ran: list[str] = []
    middleware = OutlayMiddleware(tool_hooks=[recorder, SkipSecond()], principal="agent:lc")
    graph = StateGraph(State)
    graph.add_node("tools", ToolNode([searcher(ran)], awrap_tool_call=middleware.awrap_tool_call))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    message = reply(calls=[("search", {"q": "x-0"}), ("search", {"q": "x-1"})])
    out = await graph.compile().ainvoke({"messages": [message]})
    out["messages"] = out["messages"][1:]
    assert ran == ["x-0"]
    contents = sorted(m.content for m in out["messages"])
    assert contents == ["not allowed today", "results for x-0"]
    assert len(recorder.seen) == 2
