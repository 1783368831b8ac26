"""What observing costs: a reservation (reserve + commit of one principal's three limits)
on a plain store vs the same store wrapped in ``RecordingStore`` (an event per operation in
the store's own log), ``outlay.telemetry.instrument`` with ``spans=False`` (metrics only) and
with spans (SDK providers, no exporter attached), and recording plus telemetry, on the memory
store and on a SQLite file.

Usage: ``python benchmarks/bench_observe.py [--quick]``; prints a table (operations per
second, best of three rounds, and the cost against the plain store) and writes
``benchmarks/results/observe.json``. Also times ``SpendReport.from_store`` and ``to_html``
over the events the runs recorded.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import anyio

from outlay import LimitSpec, MemoryStore, Principals, RecordingStore, SpendReport, Store, Window
from outlay.stores import SQLiteStore

D = Decimal
ROUNDS = 3
TEMPLATE = [LimitSpec("usd", Window.run(), D("1e12")),
            LimitSpec("usd", Window.month(), D("1e12")),
            LimitSpec("tokens", Window.day(), 10**15)]


def telemetry(spans: bool = True) -> Callable[[Store], Store] | None:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider

        from outlay.telemetry import instrument, uninstrument
    except ImportError:
        return None
    meters, tracers = MeterProvider(), TracerProvider()

    def wrap(store: Store) -> Store:
        wrapped = instrument(store, meter_provider=meters, tracer_provider=tracers,
                             spans=spans)
        uninstrument()  # only the store's own metrics and spans are measured here
        return wrapped

    return wrap


async def rate(store: Store, n: int) -> float:
    budgets = Principals(store, run_id="bench", template=TEMPLATE)
    agent = budgets.get("tenant:bench")
    best = 0.0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            held = await agent.reserve({"usd": D("0.01"), "tokens": 100})
            await held.commit({"usd": D("0.005"), "tokens": 60})
        best = max(best, n / (time.perf_counter() - start))
    return best


async def main(quick: bool) -> dict[str, object]:
    n_memory, n_sqlite = (2_000, 200) if quick else (20_000, 2_000)
    otel, metrics_only = telemetry(), telemetry(spans=False)
    wrappers: dict[str, Callable[[Store], Store] | None] = {
        "plain": lambda s: s, "recording": RecordingStore}
    if otel is not None:
        wrappers["metrics"] = metrics_only
        wrappers["telemetry"] = otel
        wrappers["both"] = lambda s: otel(RecordingStore(s))
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for store_name, n in (("memory", n_memory), ("sqlite", n_sqlite)):
            base = 0.0
            for name, wrap in wrappers.items():
                assert wrap is not None
                inner: Store = (MemoryStore() if store_name == "memory"
                                else SQLiteStore(Path(tmp) / f"{name}.db"))
                store = wrap(inner)
                ops = await rate(store, n)
                if name == "recording" and store_name == "sqlite":
                    started = time.perf_counter()
                    report = await SpendReport.from_store(store)
                    report.to_html()
                    report_s = time.perf_counter() - started
                    events = len(report.events or ())
                await store.aclose()
                base = ops if name == "plain" else base
                rows.append({"store": store_name, "wrapper": name, "ops_per_s": round(ops),
                             "of_plain": round(ops / base * 100)})
    print(f"{'store':8} {'wrapper':10} {'reserve+commit/s':>17} {'of plain':>9}")
    for row in rows:
        print(f"{row['store']:8} {row['wrapper']:10} {row['ops_per_s']:>17,} "
              f"{row['of_plain']:>8}%")
    print(f"SpendReport.from_store + to_html over {events:,} events (SQLite): "
          f"{report_s * 1000:.0f} ms")
    return {"rows": rows, "report_ms": round(report_s * 1000), "report_events": events,
            "quick": quick, "python": platform.python_version(), "machine": platform.machine()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations")
    args = parser.parse_args()
    results = anyio.run(main, args.quick)
    out = Path(__file__).parent / "results" / "observe.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
