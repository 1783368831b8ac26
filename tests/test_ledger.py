"""The bounded usage ledger: biggest users kept, memory bounded under churn."""

from __future__ import annotations

import random
import tracemalloc
from decimal import Decimal

import pytest

from outlay import UsageLedger


def test_keeps_totals_peaks_and_counts() -> None:
    ledger = UsageLedger(capacity=10)
    ledger.record("agent:a", Decimal("0.5"))
    ledger.record("agent:a", Decimal("1.5"))
    ledger.record("agent:b", Decimal("0.25"))
    entry = ledger.get("agent:a")
    assert entry is not None
    assert (entry.total, entry.error, entry.peak, entry.count) == (
        Decimal("2.0"), Decimal(0), Decimal("1.5"), 2)
    assert [e.principal for e in ledger.top(5)] == ["agent:a", "agent:b"]
    assert ledger.get("agent:zzz") is None


def test_when_full_the_smallest_is_evicted() -> None:
    ledger = UsageLedger(capacity=3)
    for name, amount in [("a", 50), ("b", 5), ("c", 30), ("d", 7)]:
        ledger.record(name, amount)
    assert ledger.get("b") is None  # the smallest made room
    d = ledger.get("d")
    assert d is not None
    assert (d.total, d.error) == (12, 5)
    stats = ledger.statistics()
    assert (stats.size, stats.evicted, stats.evicted_peak, stats.high_water) == (3, 1, 5, 50)


def test_bounded_memory_and_heavy_hitters_survive_churn() -> None:
    """Regression guard: thousands of ephemeral sub-agents must not grow the ledger, and the
    big spenders among them must still be there at the end."""
    capacity = 100
    ledger = UsageLedger(capacity)
    rng = random.Random(7)
    heavy = [f"agent:heavy{n}" for n in range(5)]
    truth = dict.fromkeys(heavy, 0)
    tracemalloc.start()
    try:
        for step in range(12_000):
            if step % 20 == 0:
                name = rng.choice(heavy)
                truth[name] += 100
                ledger.record(name, 100)
            else:
                ledger.record(f"agent:ephemeral{step}", rng.randint(1, 10))
            if step == 2_000:
                baseline, _ = tracemalloc.get_traced_memory()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stats = ledger.statistics()
    assert stats.size == capacity
    assert stats.heap_size <= 4 * capacity + 64
    assert current < baseline + 200_000  # no growth with 10,000 more distinct principals
    kept = {e.principal for e in ledger.top(5)}
    assert kept == set(heavy)
    for entry in ledger.top(5):
        assert entry.total - entry.error <= truth[entry.principal] <= entry.total
        assert entry.peak == 100


def test_bad_input_records_nothing() -> None:
    ledger = UsageLedger(2)
    with pytest.raises(TypeError):
        ledger.record("a", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        ledger.record("a", -1)
    with pytest.raises(TypeError):
        ledger.record("", 1)
    with pytest.raises(ValueError, match="at least 1"):
        UsageLedger(0)
    assert len(ledger) == 0
