"""outlay.telemetry with the OpenTelemetry SDK's in-memory exporters, on real stores: the
figures exported equal what the store holds."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the telemetry tests need outlay[otel] and the "
                                               "OpenTelemetry SDK")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from outlay import (
    BudgetExceeded,
    LimitSpec,
    Principals,
    Store,
    ToolDispatcher,
    ToolInvocation,
    Window,
    labels,
)
from outlay.telemetry import ToolSpanHook, instrument, uninstrument

from .storekit import STORE_FACTORIES

pytestmark = pytest.mark.anyio

D = Decimal


class Otel:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.spans = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.spans))

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        found: list[Any] = []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def by_limit(self, name: str) -> dict[str, float]:
        totals: dict[str, float] = {}
        for point in self.points(name):
            key = point.attributes["outlay.limit"]
            totals[key] = totals.get(key, 0) + point.value
        return totals


@pytest.fixture
def otel() -> Iterator[Otel]:
    telemetry = Otel()
    yield telemetry
    uninstrument()
    telemetry.meters.shutdown()
    telemetry.tracers.shutdown()


@pytest.fixture(params=sorted(name for name in STORE_FACTORIES if name != "memory"))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_FACTORIES[request.param](tmp_path, request) as opened:
        yield opened


async def test_the_figures_exported_equal_what_the_store_holds(store: Store, otel: Otel) -> None:
    instrumented = instrument(store, meter_provider=otel.meters, tracer_provider=otel.tracers)
    budgets = Principals(instrumented, run_id="r1", template=[
        LimitSpec("usd", Window.run(), D("1")), LimitSpec("tokens", Window.day(), 10_000)])
    agent = budgets.get("tenant:acme").child("agent:x")
    with labels(model="m-large"):
        await (await agent.reserve({"usd": D("0.375"), "tokens": 900})).commit(
            {"usd": D("0.25"), "tokens": 700})
    with labels(tool="search"):
        await (await agent.reserve({"usd": D("0.125")})).release()
        live = await agent.reserve({"usd": D("0.5")})  # still held when we look
        with pytest.raises(BudgetExceeded):
            await agent.reserve({"usd": D("0.5")})
    usages = {u.key: u for u in await store.limits()}
    spend = otel.by_limit("outlay.spend")
    held = otel.by_limit("outlay.held")
    assert set(usages) == set(held)
    for key, usage in usages.items():
        assert spend.get(key, 0) == float(usage.spent), key
        assert held[key] == float(usage.held), key
    assert spend[next(k for k in spend if "/agent:x/tokens/" in k)] == 700
    refusals = otel.points("outlay.refusals")
    assert [(p.value, p.attributes["outlay.limit"], p.attributes["gen_ai.tool.name"])
            for p in refusals] == [(1, "tenant:acme/agent:x/usd/run:r1", "search")]
    model_points = [p for p in otel.points("outlay.spend")
                    if p.attributes.get("gen_ai.request.model") == "m-large"]
    assert {p.attributes["outlay.unit"] for p in model_points} == {"usd", "tokens"}
    assert {p.attributes["outlay.window"] for p in model_points} == {"run", "day"}
    assert {p.attributes["outlay.principal"] for p in model_points} == {
        "tenant:acme", "tenant:acme/agent:x"}
    [latency] = [p for p in otel.points("outlay.reservation.duration")
                 if p.attributes["outlay.admitted"]]
    assert latency.count == 3
    names = [s.name for s in otel.spans.get_finished_spans()]
    assert names.count("outlay.reserve") == 4
    assert names.count("outlay.commit") == 1
    assert names.count("outlay.release") == 1
    await live.commit()
    spend = otel.by_limit("outlay.spend")
    assert spend["tenant:acme/agent:x/usd/run:r1"] == 0.75
    assert otel.by_limit("outlay.held")["tenant:acme/agent:x/usd/run:r1"] == 0


async def test_spans_around_model_and_tool_calls(tmp_path: Path, otel: Otel) -> None:
    openai = pytest.importorskip("openai", reason="the model-call span needs outlay[openai]")
    from outlay import Budget, DispatchBudgetHook, TokenPrices
    from outlay.clients.openai import BudgetedAsyncOpenAI
    from outlay.stores import SQLiteStore
    from outlay.testing import FakeProvider, Script

    store = instrument(SQLiteStore(tmp_path / "spans.db"), meter_provider=otel.meters,
                       tracer_provider=otel.tracers)
    money = Budget(usd=D("1"), store=store, principal="agent:llm", run_id="r1")
    calls = Budget(tool_calls=5, store=store, principal="agent:x", run_id="r1")

    async def search(query: str) -> str:
        return f"results for {query}"

    async def broken(query: str) -> str:
        raise RuntimeError("tool failed")

    dispatcher = ToolDispatcher([search, broken], [
        ToolSpanHook(tracer_provider=otel.tracers),
        DispatchBudgetHook(calls)], errors="result")
    try:
        with FakeProvider() as fake:
            sdk = openai.AsyncOpenAI(api_key="test", base_url=fake.openai_url, max_retries=0)
            llm = BudgetedAsyncOpenAI(sdk, money, prices={"m-test": TokenPrices(D("1"), D("2"))})
            fake.script(Script(input_tokens=100, output_tokens=10))
            await llm.chat.completions.create(model="m-test", max_completion_tokens=50,
                                              messages=[{"role": "user", "content": "hi"}])
            await sdk.close()
        await dispatcher.dispatch(ToolInvocation("c1", "search", {"query": "q"},
                                                 principal="agent:x"))
        await dispatcher.dispatch(ToolInvocation("c2", "broken", {"query": "q"}))
    finally:
        await store.aclose()
    spans = {s.name: s for s in otel.spans.get_finished_spans()}
    chat = spans["chat m-test"]
    assert chat.attributes is not None
    assert (chat.attributes["gen_ai.operation.name"], chat.attributes["gen_ai.request.model"],
            chat.attributes["gen_ai.usage.input_tokens"],
            chat.attributes["gen_ai.usage.output_tokens"]) == ("chat", "m-test", 100, 10)
    reserve = next(s for s in otel.spans.get_finished_spans() if s.name == "outlay.reserve"
                   and s.attributes and s.attributes.get("gen_ai.request.model") == "m-test")
    assert reserve.parent is not None
    assert reserve.parent.span_id == chat.context.span_id  # the reservation is in the call
    tool = spans["execute_tool search"]
    assert tool.attributes is not None
    assert (tool.attributes["gen_ai.tool.name"], tool.attributes["gen_ai.tool.call.id"],
            tool.attributes["outlay.principal"]) == ("search", "c1", "agent:x")
    assert tool.status.status_code.name == "UNSET"
    assert spans["execute_tool broken"].status.status_code.name == "ERROR"
    calls_key = "agent:x/tool_calls/run:r1"
    assert otel.by_limit("outlay.spend")[calls_key] == 1  # the failed call was released
    assert otel.by_limit("outlay.held")[calls_key] == 0


async def test_metrics_without_spans(tmp_path: Path, otel: Otel) -> None:
    from outlay.stores import SQLiteStore

    store = instrument(SQLiteStore(tmp_path / "quiet.db"), meter_provider=otel.meters,
                       tracer_provider=otel.tracers, spans=False)
    try:
        await store.set_limit("k", 10)
        assert (await store.reserve("r", {"k": 4}, lease=60)).admitted
        await store.commit("r", {"k": 3})
        assert otel.by_limit("outlay.spend") == {"k": 3}
        assert (await store.usage("k")).spent == 3
    finally:
        await store.aclose()
    assert [s.name for s in otel.spans.get_finished_spans()] == []


def test_import_outlay_does_not_import_opentelemetry() -> None:
    code = "import sys, outlay, outlay.report; print('opentelemetry' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_telemetry_is_off_unless_configured() -> None:
    code = ("import outlay.telemetry; from outlay._core import _observe; "
            "print(_observe._tracer is None and _observe._annotator is None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "True"  # importing it installs nothing
