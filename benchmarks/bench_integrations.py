"""What the framework integrations add to one agent run, against the bare framework.

Run: ``python benchmarks/bench_integrations.py [--quick]``. One run = two offline model
requests (the first asks for 8 parallel calls of an async no-op tool, the second answers), on
pydantic-ai (``FunctionModel``) and the OpenAI Agents SDK (a scripted ``Model``, tracing off).
Cases per framework: ``bare``; ``tools`` = a ``DispatchBudgetHook`` (``AtomicBudget``, release
mode) on every tool call; ``tools+tokens`` = that plus a token hold/record around both model
requests. Prints milliseconds per run (CPU time of the event-loop thread, best round; the cases
take turns within a round) and the difference to ``bare`` per run and per tool call, and writes
``benchmarks/results/integrations.json``. A framework's own run costs milliseconds and varies by
more than the integration adds (``bare-again``, the same setup as ``bare`` measured again,
shows that noise floor), so the script also measures the integration's intrinsic cost
alone: ``HookChain.run`` (what both integrations do per tool call) against
``ToolDispatcher.dispatch`` and a direct await, with the same ``DispatchBudgetHook``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from outlay import (
    AtomicBudget,
    Budget,
    DispatchBudgetHook,
    ToolDispatcher,
    ToolInvocation,
)
from outlay.integrations._common import HookChain

CALLS = 8
Run = Callable[[], Awaitable[Any]]


def pydantic_ai_cases() -> dict[str, Run]:
    from pydantic_ai import Agent
    from pydantic_ai.messages import (
        ModelMessage,
        ModelRequest,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
    )
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.usage import RequestUsage

    from outlay.integrations.pydantic_ai import OutlayCapability

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        usage = RequestUsage(input_tokens=50, output_tokens=10)
        if isinstance(last, ModelRequest) and any(isinstance(p, ToolReturnPart)
                                                  for p in last.parts):
            return ModelResponse(parts=[TextPart("done")], usage=usage)
        return ModelResponse(parts=[ToolCallPart("noop", {"n": i}, tool_call_id=f"c{i}")
                                    for i in range(CALLS)], usage=usage)

    async def noop(n: int) -> int:
        return n

    def agent(*capabilities: Any) -> Run:
        a = Agent(FunctionModel(model), capabilities=list(capabilities))
        a.tool_plain(noop)
        return lambda: a.run("go")

    hook = DispatchBudgetHook(AtomicBudget(10**6), 1, mode="in_flight")
    return {
        "bare": agent(),
        "tools": agent(OutlayCapability(tool_hooks=[hook])),
        "tools+tokens": agent(OutlayCapability(Budget(tokens=10**15), tool_hooks=[hook],
                                               estimate_input=100)),
        "bare-again": agent(),
    }


def openai_agents_cases() -> dict[str, Run]:
    from agents import Agent, RunConfig, Runner, function_tool
    from agents.items import ModelResponse
    from agents.models.interface import Model
    from agents.testing import assistant_message, function_call
    from agents.usage import Usage

    from outlay.integrations.openai_agents import OutlayModel, wrap_tools

    class Script(Model):
        async def get_response(self, system_instructions: Any, input: Any,
                               *args: Any, **kwargs: Any) -> ModelResponse:
            answered = not isinstance(input, str) and any(
                isinstance(i, dict) and i.get("type") == "function_call_output" for i in input)
            output = [assistant_message("done")] if answered else [
                function_call("noop", {"n": i}, call_id=f"c{i}") for i in range(CALLS)]
            return ModelResponse(output=output, response_id=None, usage=Usage(
                requests=1, input_tokens=50, output_tokens=10, total_tokens=60))

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    @function_tool
    async def noop(n: int) -> int:
        return n

    config = RunConfig(tracing_disabled=True)
    hook = DispatchBudgetHook(AtomicBudget(10**6), 1, mode="in_flight")

    def agent(model: Model, tools: list[Any]) -> Run:
        a = Agent(name="bench", model=model, tools=tools)
        return lambda: Runner.run(a, "go", run_config=config)

    return {
        "bare": agent(Script(), [noop]),
        "tools": agent(Script(), wrap_tools([noop], [hook])),
        "tools+tokens": agent(OutlayModel(Script(), Budget(tokens=10**15), estimate_input=100),
                              wrap_tools([noop], [hook])),
        "bare-again": agent(Script(), [noop]),
    }


async def measure(cases: dict[str, Run], n: int, rounds: int) -> dict[str, float]:
    best = dict.fromkeys(cases, float("inf"))
    for run in cases.values():  # warm up
        await run()
    for _ in range(rounds):
        gc.collect()
        for name, run in cases.items():
            cpu = time.thread_time()
            for _ in range(n):
                await run()
            best[name] = min(best[name], (time.thread_time() - cpu) / n * 1e3)
    return best


def chain_cases() -> dict[str, Run]:
    hook = DispatchBudgetHook(AtomicBudget(10**6), 1, mode="in_flight")
    chain = HookChain([hook])
    invocation = ToolInvocation("c1", "noop", {"n": 1})

    async def noop(n: int) -> int:
        return n

    async def call() -> int:
        return await noop(1)

    dispatcher = ToolDispatcher({"noop": noop}, [hook])
    return {"direct": call, "dispatcher": lambda: dispatcher.dispatch(invocation),
            "hook_chain": lambda: chain.run(invocation, call)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (smoke test)")
    args = parser.parse_args()
    n, rounds = (20, 2) if args.quick else (200, 5)
    results: dict[str, Any] = {"runs_per_round": n, "rounds": rounds, "tool_calls_per_run": CALLS,
                               "model_requests_per_run": 2, "python": platform.python_version(),
                               "frameworks": {}}
    print(f"{'framework':<15} {'case':<13} {'ms/run':>8} {'overhead/run':>13} "
          f"{'per tool call':>14}")
    for framework, make in (("pydantic-ai", pydantic_ai_cases),
                            ("openai-agents", openai_agents_cases)):
        best = asyncio.run(measure(make(), n, rounds))
        rows = {}
        for case, ms in best.items():
            overhead_us = (ms - best["bare"]) * 1e3
            rows[case] = {"ms_per_run": round(ms, 3), "overhead_us_per_run": round(overhead_us, 1),
                          "overhead_us_per_tool_call": round(overhead_us / CALLS, 1)}
            print(f"{framework:<15} {case:<13} {ms:>8.3f} {overhead_us:>10.1f} us "
                  f"{overhead_us / CALLS:>11.1f} us")
        results["frameworks"][framework] = rows
    chain = asyncio.run(measure(chain_cases(), n * 100, rounds))
    results["per_call_us"] = {case: round(ms * 1e3, 2) for case, ms in chain.items()}
    print("per tool call, 1 DispatchBudgetHook: " + ", ".join(
        f"{case} {ms * 1e3:.2f} us" for case, ms in chain.items()))
    out = Path(__file__).parent / "results" / "integrations.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
