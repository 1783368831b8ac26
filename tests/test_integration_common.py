"""The framework-neutral part of the integrations: the hook chain around one call, imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import anyio
import pytest

from outlay import (
    AtomicBudget,
    Continue,
    DispatchBudgetHook,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
)
from outlay.integrations._common import HookChain

pytestmark = pytest.mark.anyio


class Seen(ToolDispatchHook):
    def __init__(self) -> None:
        self.outputs: list[Any] = []

    async def before_invocation(self, invocation: ToolInvocation) -> Continue:
        return Continue(invocation.call_id)

    async def after_invocation(self, invocation: ToolInvocation, result: ToolInvocationResult,
                               state: Any) -> None:
        self.outputs.append((state, result.output))


async def test_concurrent_calls_of_one_tool_each_run_their_own_call() -> None:
    """Regression guard for the per-name dispatcher cache: the call travels in a context
    variable, so two calls of the same tool in flight at once never swap bodies."""
    seen = Seen()
    chain = HookChain([seen])
    both_started = anyio.Event()
    started = 0

    def body(tag: str) -> Any:
        async def call() -> str:
            nonlocal started
            started += 1
            if started == 2:
                both_started.set()
            await both_started.wait()
            return tag
        return call

    results: dict[str, Any] = {}

    async def run(call_id: str) -> None:
        result = await chain.run(ToolInvocation(call_id, "search"), body(f"body-{call_id}"))
        results[call_id] = result.output

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "a")
        tg.start_soon(run, "b")
    assert results == {"a": "body-a", "b": "body-b"}
    assert sorted(seen.outputs) == [("a", "body-a"), ("b", "body-b")]


async def test_a_skipped_call_never_runs_its_body() -> None:
    chain = HookChain([DispatchBudgetHook(AtomicBudget(0), 1, mode="in_flight")])
    ran: list[int] = []

    async def call() -> None:
        ran.append(1)

    result = await chain.run(ToolInvocation("c", "t", {"x": 1}), call)
    assert result.skipped
    assert ran == []
    assert str(result.output).startswith("not run:")


def test_bad_hooks_are_refused_when_the_chain_is_built() -> None:
    with pytest.raises(TypeError, match="implements none"):
        HookChain([object()])  # type: ignore[list-item]


def test_import_outlay_imports_no_agent_framework() -> None:
    code = ("import sys, outlay, outlay.integrations; "
            "bad = [m for m in ('pydantic_ai', 'agents', 'langchain', 'langchain_core', "
            "'langgraph', 'litellm') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("module", "framework", "names"), [
    ("outlay.integrations.pydantic_ai", "pydantic_ai",
     ("OutlayCapability", "estimate_messages_input", "estimate_request_input")),
    ("outlay.integrations.openai_agents", "agents",
     ("ModelCallInput", "OutlayModel", "OutlayModelProvider", "RunTerminated",
      "estimate_call_input", "wrap_tool", "wrap_tools")),
    ("outlay.integrations.langchain", "langchain",
     ("BudgetedChatModel", "OutlayMiddleware", "estimate_messages_input")),
    ("outlay.integrations.litellm", "litellm",
     ("OutlayCallback", "by_principal", "litellm_prices")),
])
def test_integration_exports(module: str, framework: str, names: tuple[str, ...]) -> None:
    pytest.importorskip(framework)
    import importlib

    mod = importlib.import_module(module)
    assert mod.__all__ == names
    for name in names:
        assert getattr(mod, name).__module__ == module


@pytest.mark.parametrize(("module", "framework", "extra"), [
    ("outlay.integrations.pydantic_ai", "pydantic_ai", "pydantic-ai"),
    ("outlay.integrations.openai_agents", "agents", "openai-agents"),
])
def test_a_missing_framework_says_what_to_install(module: str, framework: str,
                                                  extra: str) -> None:
    code = (f"import sys; sys.modules[{framework!r}] = None\n"
            f"try:\n    import {module}\n"
            f"except ModuleNotFoundError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert f"pip install 'outlay[{extra}]'" in out, out
