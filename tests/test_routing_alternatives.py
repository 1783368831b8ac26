"""A tool (hook chain) and a graph stage with alternatives, routed per call."""

from __future__ import annotations

from decimal import Decimal

import pytest

from outlay import (
    Accelerator,
    AtomicBudget,
    Backend,
    BackendKind,
    Budget,
    ConfigurationError,
    CostRates,
    DispatchBudgetHook,
    LimitSpec,
    MemoryStore,
    NoRoute,
    Principals,
    Router,
    ToolDispatcher,
    ToolInvocation,
    Window,
    Work,
    alternatives,
)
from outlay.graph import Executor, Sequential, Stage, StageRegistry

pytestmark = pytest.mark.anyio

D = Decimal
RATES = CostRates(per_accelerator_second=D("0.001"))


def team(cap: str) -> Budget:
    owner = Principals(MemoryStore(), run_id="r1")
    return owner.get("team:a", caps=[LimitSpec("usd", Window.run(), D(cap))])


def gpu_router(budget: Budget, *, local_free: bool) -> Router:
    return Router([
        Backend("cloud", BackendKind.CLOUD, tools={"embed"}, rates=RATES,
                accelerators=(Accelerator("h100", 80),)),
        Backend("local", BackendKind.LOCAL, tools={"embed"},
                accelerators=(Accelerator("rtx", 24, free=local_free),)),
    ], budget=budget)


def embed_work(text: str) -> Work:
    return Work(tool="embed", accelerator_memory_gib=16, max_runtime_s=len(text))


async def embed_local(text: str) -> str:
    return f"local:{text}"


def embed_cloud(text: str) -> str:  # sync: runs in a worker thread
    return f"cloud:{text}"


async def test_a_tool_with_alternatives_runs_under_the_hook_chain() -> None:
    budget = team("1")
    calls = AtomicBudget(5, name="calls")
    for local_free, expected, spent in ((True, "local:hello", D(0)),
                                        (False, "cloud:hello", D("0.005"))):
        embed = alternatives(gpu_router(budget, local_free=local_free),
                             {"local": embed_local, "cloud": embed_cloud}, work=embed_work)
        dispatcher = ToolDispatcher({"embed": embed}, [DispatchBudgetHook(calls, 1)],
                                    errors="raise")
        result = await dispatcher.dispatch(ToolInvocation("c1", "embed", {"text": "hello"}))
        assert result.output == expected
        (usage,) = await budget.usage()
        assert usage.spent == spent  # local is free; the cloud's worst case was charged
    # the dispatcher validated arguments against the implementations' signature
    bad = await ToolDispatcher({"embed": embed}, [], errors="result").dispatch(
        ToolInvocation("c2", "embed", {"txt": "x"}))
    assert bad.is_error


async def test_no_route_reaches_the_model_as_an_error_result() -> None:
    embed = alternatives(gpu_router(team("0"), local_free=False),
                         {"local": embed_local, "cloud": embed_cloud}, work=embed_work)
    with pytest.raises(NoRoute) as refused:
        await ToolDispatcher({"embed": embed}, []).dispatch(
            ToolInvocation("c1", "embed", {"text": "hi"}))
    assert set(refused.value.decision.reasons()) == {"local", "cloud"}


async def test_a_graph_stage_with_alternatives() -> None:
    budget = team("1")
    registry = StageRegistry()
    registry.register("embed", alternatives(gpu_router(budget, local_free=False),
                                            {"local": embed_local, "cloud": embed_cloud},
                                            work=embed_work))

    async def shout(text: str) -> str:
        return text.upper()

    registry.register("shout", shout)
    out = await Executor(registry).run(Sequential([Stage("embed"), Stage("shout")]), "graph")
    assert out == "CLOUD:GRAPH"
    (usage,) = await budget.usage()
    assert usage.spent == D("0.005")


async def test_alternatives_refuse_unknown_candidates() -> None:
    router = gpu_router(team("1"), local_free=True)
    with pytest.raises(ConfigurationError, match="unknown candidates \\['gpu'\\]"):
        alternatives(router, {"gpu": embed_local}, work=Work())
    with pytest.raises(TypeError):
        alternatives(router, {}, work=Work())
