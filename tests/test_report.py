"""The spend report: the event log on every store, ``RecordingStore``, and the report's tables,
JSON and HTML, against real stores (a SQLite file, a real Redis)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import anyio
import pytest

from outlay import (
    BudgetExceeded,
    LimitSpec,
    LimitUsage,
    MemoryStore,
    Principals,
    RecordingStore,
    SpendEvent,
    SpendReport,
    Store,
    Window,
    labels,
)
from outlay.cli import main
from outlay.stores import SQLiteStore, store_from_url

from .storekit import STORE_FACTORIES

pytestmark = pytest.mark.anyio

D = Decimal


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_FACTORIES[request.param](tmp_path, request) as opened:
        yield opened


async def test_the_event_log_is_kept_bounded_and_exact(store: Store) -> None:
    assert await store.events() == []
    refusal = LimitUsage("t:a/usd/run:1", D("1.50"), D("1"), D("0.25"))
    events = [SpendEvent(1000.0 + n, "reserved", f"r{n}", {"t:a/usd/run:1": D("0.10"),
                                                            "t:a/calls/run:1": 1},
                         {"model": "m1"}) for n in range(5)]
    events.append(SpendEvent(2000.5, "refused", "x", {"t:a/usd/run:1": D("0.3")}, {},
                             refusal))
    await store.append_events(events[:3], keep=10)
    await store.append_events(events[3:], keep=4)  # the oldest two go
    kept = await store.events()
    assert kept == events[2:]
    assert isinstance(kept[0].amounts["t:a/calls/run:1"], int)
    assert kept[-1].limit == refusal
    assert await store.events(limit=2) == events[4:]
    assert await store.events(limit=0) == []


def test_an_event_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="kind"):
        SpendEvent(0.0, "spent", "r")


async def spend(store: Store) -> Principals:
    """Two runs by two agents, labelled by model and tool, with a release and a refusal."""
    budgets = Principals(store, run_id="r1", template=[
        LimitSpec("usd", Window.month(), D("10")), LimitSpec("usd", Window.run(), D("1")),
        LimitSpec("tokens", Window.run(), 5000)])
    planner = budgets.get("tenant:acme").child("agent:planner")
    with labels(model="m-large"):
        held = await planner.reserve({"usd": D("0.40"), "tokens": 1000})
        await held.commit({"usd": D("0.25"), "tokens": 600})
    with labels(tool="search"):
        await (await planner.reserve({"usd": D("0.10")})).commit({"usd": D("0.10")})
        await (await planner.reserve({"usd": D("0.20")})).release()
    budgets.new_run("r2")
    writer = budgets.get("tenant:acme").child("agent:writer")
    with labels(model="m-small"):
        await (await writer.reserve({"usd": D("0.05"), "tokens": 200})).commit()
        with pytest.raises(BudgetExceeded):
            await writer.reserve({"usd": D("2")})  # over the run cap of 1
    return budgets


async def test_a_recorded_run_reports_reserved_vs_actual(tmp_path: Path) -> None:
    store = RecordingStore(SQLiteStore(tmp_path / "run.db"))
    try:
        budgets = await spend(store)
        report = await SpendReport.from_store(store, ledgers={"usd": budgets.ledger("usd")})
    finally:
        await store.aclose()
    models = {(r.value, r.unit): (r.reservations, r.reserved, r.actual, r.refused)
              for r in report.reserved_vs_actual("model")}
    assert models[("m-large", "usd")] == (1, D("0.40"), D("0.25"), 0)
    assert models[("m-large", "tokens")] == (1, 1000, 600, 0)
    assert models[("m-small", "usd")] == (1, D("0.05"), D("0.05"), 1)
    tools = {(r.value, r.unit): (r.reservations, r.reserved, r.actual)
             for r in report.reserved_vs_actual("tool")}
    assert tools[("search", "usd")] == (2, D("0.30"), D("0.10"))  # one released: no actual
    runs = {(r.value, r.unit): (r.reservations, r.reserved, r.actual, r.refused)
            for r in report.reserved_vs_actual("run")}
    assert runs == {("r1", "usd"): (3, D("0.70"), D("0.35"), 0),
                    ("r1", "tokens"): (1, 1000, 600, 0),
                    ("r2", "usd"): (1, D("0.05"), D("0.05"), 1),
                    ("r2", "tokens"): (1, 200, 200, 0)}
    principals = {(r.value, r.unit): (r.reserved, r.actual)
                  for r in report.reserved_vs_actual("principal")}
    assert principals[("tenant:acme/agent:planner", "usd")] == (D("0.70"), D("0.35"))
    assert principals[("tenant:acme/agent:writer", "usd")] == (D("0.05"), D("0.05"))
    [refusal] = report.refusals()
    assert refusal.principal == "tenant:acme/agent:writer"
    assert refusal.key == "tenant:acme/agent:writer/usd/run:r2"
    assert refusal.labels == {"model": "m-small"}
    assert refusal.reason == ("tenant:acme/agent:writer: cannot reserve $2 in this run: cap $1, "
                              "spent $0.05, held $0 in flight, available $0.95, short by $1.05. "
                              "Raise the cap, reserve less")  # what BudgetExceeded says
    spent = {(r.period, r.unit): r.spent for r in report.runs()}
    assert spent == {("run:r1", "usd"): D("0.35"), ("run:r1", "tokens"): 600,
                     ("run:r2", "usd"): D("0.05"), ("run:r2", "tokens"): 200}
    [top, *_] = report.biggest_spenders("usd")
    assert (top.principal, top.spent, top.window) == ("tenant:acme", D("0.40"), "month")
    month = next(k for k in report.series() if k.startswith("tenant:acme/usd/month:"))
    series = report.series()[month]
    assert [v for _, v in series] == [D(0), D("0.25"), D("0.35"), D("0.40"), D("0.40")]
    text = report.to_text()
    assert "Reserved vs actual by run" in text
    assert "Reserved vs actual by principal" in text
    assert "Reserved vs actual by model" in text
    assert "Reserved vs actual by tool" in text
    assert "Refusals (1)" in text
    assert "short by $1.05" in text
    assert "HELD PEAK" in text  # the ledger's high-water marks beside the spend
    body = report.to_json()
    planner = next(r for r in body["principals"]["usd"]
                   if r["principal"] == "tenant:acme/agent:planner")
    assert (planner["spent"], planner["held_peak"]) == ("0.35", "0.4")
    assert body["refusals"][0]["reason"] == refusal.reason


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


async def test_the_html_page_charts_spend_against_each_cap(tmp_path: Path) -> None:
    store = RecordingStore(SQLiteStore(tmp_path / "chart.db"))
    try:
        await spend(store)
        report = await SpendReport.from_store(store)
    finally:
        await store.aclose()
    page = report.to_html()
    parser = _Page()
    parser.feed(page)
    tags = [tag for tag, _ in parser.tags]
    assert "script" not in tags
    assert not [a for _, attrs in parser.tags for k, a in attrs.items()
                if k in ("src", "href")]  # self-contained: nothing fetched
    charted = [u for u in report.limits if u.cap > 0]
    assert tags.count("svg") == len(charted)
    # The refusing limit's chart marks the refusal on its cap line.
    svgs = page.split("<figure>")[1:]
    refused = next(s for s in svgs if "tenant:acme/agent:writer/usd/run:r2:" in s)
    assert refused.count("<circle") == 1
    cap_y = re.search(r'class="cap" x1="\d+" y1="([\d.]+)"', refused)
    dot_y = re.search(r'<circle cx="[\d.]+" cy="([\d.]+)"', refused)
    assert cap_y is not None
    assert dot_y is not None
    assert cap_y[1] == dot_y[1]
    # The spend line ends at the limit's spend now (0.05 of a cap of 1).
    points = re.search(r'class="spent"[^>]*points="([^"]+)"', refused)
    assert points is not None
    last_y = float(points[1].split()[-1].split(",")[1])
    height, pad, top = 140, 24, 1 * 1.1
    assert last_y == pytest.approx(height - pad - 0.05 / top * (height - 2 * pad), abs=0.1)


async def test_a_store_without_an_event_log_reports_its_limits() -> None:
    class NoLog(MemoryStore):
        events = Store.events

    store = NoLog()
    budgets = Principals(store, run_id="r1", template=[LimitSpec("usd", Window.run(), D("1"))])
    await (await budgets.get("agent:x").reserve({"usd": D("0.5")})).commit()
    report = await SpendReport.from_store(store)
    assert report.events is None
    assert report.refusals() == []
    text = report.to_text()
    assert "no event log: record one with outlay.report.RecordingStore" in text
    assert "agent:x" in text
    assert report.to_json()["events_recorded"] is False


async def test_a_report_of_a_run_in_progress_on_redis(store: Store) -> None:
    recording = RecordingStore(store)
    budgets = Principals(recording, run_id="live",
                         template=[LimitSpec("usd", Window.run(), D("5"))])
    with labels(model="m"):
        held = await budgets.get("agent:x").reserve({"usd": D("2")})
    report = await SpendReport.from_store(recording)
    [res] = report.reservations()
    assert (res.state, res.reserved, res.actual) == ("held", {"usd": D("2")}, None)
    assert report.runs()[0].held == D("2")
    await held.commit({"usd": D("1.5")})
    report = await SpendReport.from_store(recording)
    assert [(r.value, r.reserved, r.actual) for r in report.reserved_vs_actual("model")] == [
        ("m", D("2"), D("1.5"))]


async def test_recording_failures_do_not_fail_the_reservation() -> None:
    class Broken(MemoryStore):
        async def append_events(self, events: object, *, keep: int) -> None:
            raise OSError("disk full")

    store = RecordingStore(Broken())
    await store.set_limit("k", 5)
    assert (await store.reserve("r", {"k": 2}, lease=60)).admitted
    assert await store.commit("r") is True
    assert (await store.usage("k")).spent == 2


def test_labels_must_be_text() -> None:
    with pytest.raises(TypeError, match="label 'model'"), labels(model=3):  # type: ignore[arg-type]
        pass


def test_the_report_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    async def go() -> None:
        store = RecordingStore(store_from_url(url))
        try:
            await spend(store)
        finally:
            await store.aclose()

    anyio.run(go)
    page = tmp_path / "report.html"
    out, err = io.StringIO(), io.StringIO()
    code = main(["report", url, "--html", str(page)], stdout=out, stderr=err, environ={})
    assert code == 0, err.getvalue()
    assert "Biggest spenders (usd)" in out.getvalue()
    assert "Reserved vs actual by model" in out.getvalue()
    assert page.read_text().startswith("<!DOCTYPE html>")
    out = io.StringIO()
    assert main(["report", "--json", "--url", url], stdout=out, environ={}) == 0
    models = {(r["value"], r["unit"]): r
              for r in json.loads(out.getvalue())["reserved_vs_actual"]["model"]}
    assert (models["m-large", "usd"]["reserved"], models["m-large", "usd"]["actual"]) == (
        "0.4", "0.25")


async def test_clients_and_the_budget_hook_label_their_reservations(tmp_path: Path) -> None:
    """The LLM clients label reservations with the model, the budget hook with the tool, so
    a report groups spend by them with no code of the caller's."""
    openai = pytest.importorskip("openai", reason="the OpenAI client needs outlay[openai]")
    from outlay import Budget, DispatchBudgetHook, TokenPrices, ToolDispatcher, ToolInvocation
    from outlay.clients.openai import BudgetedAsyncOpenAI
    from outlay.testing import FakeProvider, Script

    store = RecordingStore(SQLiteStore(tmp_path / "labels.db"))
    money = Budget(usd=D("1"), store=store, principal="agent:llm")
    calls = Budget(tool_calls=10, store=store, principal="agent:x")

    async def search(query: str) -> str:
        return f"results for {query}"

    dispatcher = ToolDispatcher([search], [DispatchBudgetHook(calls)])
    try:
        with FakeProvider() as fake:
            sdk = openai.AsyncOpenAI(api_key="test", base_url=fake.openai_url, max_retries=0)
            llm = BudgetedAsyncOpenAI(sdk, money, prices={"m-test": TokenPrices(D("1"), D("2"))})
            fake.script(Script(input_tokens=100, output_tokens=10))
            await llm.chat.completions.create(model="m-test", max_completion_tokens=50,
                                              messages=[{"role": "user", "content": "hi"}])
            await sdk.close()
        await dispatcher.dispatch(ToolInvocation("c1", "search", {"query": "q"}))
        report = await SpendReport.from_store(store)
    finally:
        await store.aclose()
    [model] = report.reserved_vs_actual("model")[1:]  # after the "-" row of the tool call
    assert (model.value, model.unit, model.reservations) == ("m-test", "usd", 1)
    assert model.actual == D("0.00012")  # 100 in at $1/M + 10 out at $2/M
    assert model.reserved >= D("0.0001")  # the 50 output tokens at $2/M alone
    tools = {r.value: r for r in report.reserved_vs_actual("tool")}
    assert (tools["search"].unit, tools["search"].actual) == ("tool_calls", 1)


async def test_a_store_that_never_recorded_says_so(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "plain.db")
    try:
        await store.set_limit("team:a/usd", D("5"))
        report = await SpendReport.from_store(store)
    finally:
        await store.aclose()
    assert report.events == ()
    assert "no events recorded (outlay.report.RecordingStore records them)" in report.to_text()
