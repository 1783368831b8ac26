"""Per-tenant dollar budgets: $50 a run, $500 a month, and sub-agents capped at $2 each.

Run: ``python examples/tenant_budgets.py [sqlite:///budgets.db]`` (memory by default).
Prices the calls from a price table, reserves the estimate against every window of the agent,
its tenant and the run, commits what the call cost, and shows what a refusal says.
"""

from __future__ import annotations

import sys
from decimal import Decimal as D

import anyio

from outlay import (
    BudgetCap,
    BudgetExceeded,
    LimitSpec,
    PriceTable,
    Principals,
    RecordingStore,
    SpendReport,
    TokenPrices,
    Window,
    labels,
    money_limits,
    store_from_url,
)

PRICES = PriceTable({"small-model": TokenPrices(D("0.15"), D("0.60"), D("0.075")),
                     "large-model": TokenPrices(D("2.50"), D("10.00"), D("1.25"))})


async def main(url: str) -> None:
    store = RecordingStore(store_from_url(url))  # also keeps an event log for the report
    budgets = Principals(store, template=[
        *money_limits(BudgetCap(run=D("50"), month=D("500")),
                      [Window.run(), Window.month("Europe/Paris")]),
        LimitSpec("tokens", Window.day(), 5_000_000),
    ])
    tenant = budgets.get("tenant:acme")
    researcher = tenant.child("agent:researcher",
                              caps=money_limits(BudgetCap(run=D("2")), [Window.run()]))
    try:
        for step in range(100):
            estimate = PRICES.cost("large-model", input_tokens=40_000, output_tokens=4_000)
            with labels(model="large-model"):
                held = await researcher.reserve({"usd": estimate, "tokens": 44_000})
            async with held:
                # A real agent calls the model here; say it used a bit less than the bound.
                used = PRICES.cost("large-model", input_tokens=40_000, output_tokens=2_500,
                                   cached_input_tokens=30_000)
                await held.commit({"usd": used, "tokens": 42_500})
            print(f"step {step}: spent {used} (estimate {estimate})")
    except BudgetExceeded as exc:
        print(f"stopped: {exc.reason}")
    for usage in await tenant.usage():
        print(f"{usage.key}: spent {usage.spent} of {usage.cap}")
    report = await SpendReport.from_store(store, ledgers={"usd": budgets.ledger("usd")})
    print(report.to_text())
    await budgets.aclose()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "memory://")
