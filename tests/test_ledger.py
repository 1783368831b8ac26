"""The bounded usage ledger: biggest users kept, memory bounded under churn."""

from __future__ import annotations

import random
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from outlay import HeldPeak, LimitSpec, Principals, UsageLedger, Window


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


# -- high-water marks ----------------------------------------------------------------------


def test_high_water_marks_track_concurrent_holds_and_levels() -> None:
    ledger = UsageLedger(capacity=10)
    ledger.hold("agent:a", 3)
    ledger.hold("agent:a", 4)  # two reservations at once: 7
    ledger.unhold("agent:a", 3)
    ledger.hold("agent:a", 2)  # 6 now, below the peak
    peak = ledger.held_peak("agent:a")
    assert peak == HeldPeak("agent:a", 7, 6)
    ledger.unhold("agent:a", 6)
    assert ledger.held_peak("agent:a") == HeldPeak("agent:a", 7, 0)
    ledger.level("stage:embed", Decimal("1.5"))  # a gauge: the largest value reported
    ledger.level("stage:embed", Decimal("0.5"))
    assert ledger.held_peak("stage:embed") == HeldPeak("stage:embed", Decimal("1.5"),
                                                       Decimal(0))
    ledger.record("agent:a", 5)
    [entry] = ledger.top(1)
    assert (entry.principal, entry.total, entry.held_peak) == ("agent:a", 5, 7)  # beside spend
    assert ledger.held_peak("nobody") is None
    with pytest.raises(TypeError, match="principal"):
        ledger.hold("", 1)
    with pytest.raises(ValueError, match=">= 0"):
        ledger.level("agent:a", -1)


def test_a_flood_of_small_sub_agents_cannot_push_out_the_big_users() -> None:
    """The rule: when full, a newcomer evicts the lowest peak only if its own is bigger."""
    ledger = UsageLedger(capacity=3)
    for name, peak in [("big:1", 900), ("big:2", 800), ("big:3", 700)]:
        ledger.level(name, peak)
    for n in range(5_000):
        ledger.hold(f"sub:{n}", 5)
        ledger.unhold(f"sub:{n}", 5)
    assert [p.principal for p in ledger.held_peaks(5)] == ["big:1", "big:2", "big:3"]
    stats = ledger.statistics()
    assert (stats.peaks_size, stats.peaks_evicted, stats.peaks_dropped) == (3, 0, 5_000)
    ledger.level("big:4", 701)  # bigger than the lowest (700): it evicts big:3
    assert [p.principal for p in ledger.held_peaks(5)] == ["big:1", "big:2", "big:4"]
    ledger.level("big:5", 701)  # not bigger than the lowest (701): dropped
    assert ledger.held_peak("big:5") is None
    # Under Space-Saving the spend table would let the flood in; the peak table does not.
    assert len(ledger._current) == 0  # nobody holds anything now: nothing kept for them


class PeakModel(RuleBasedStateMachine):
    """Random levels and holds against a plain dict of true maxima."""

    def __init__(self) -> None:
        super().__init__()
        self.capacity = 3
        self.ledger = UsageLedger(capacity=self.capacity)
        self.true_peak: dict[str, int] = {}
        self.current: dict[str, int] = {}

    names = st.sampled_from([f"p{n}" for n in range(8)])

    def _saw(self, name: str, level: int) -> None:
        self.true_peak[name] = max(self.true_peak.get(name, 0), level)

    @rule(name=names, value=st.integers(0, 50))
    def level(self, name: str, value: int) -> None:
        self.ledger.level(name, value)
        self._saw(name, value)

    @rule(name=names, amount=st.integers(0, 20))
    def hold(self, name: str, amount: int) -> None:
        self.ledger.hold(name, amount)
        self.current[name] = self.current.get(name, 0) + amount
        self._saw(name, self.current[name])

    @rule(name=names, amount=st.integers(0, 20))
    def unhold(self, name: str, amount: int) -> None:
        amount = min(amount, self.current.get(name, 0))
        self.ledger.unhold(name, amount)
        self.current[name] = self.current.get(name, 0) - amount

    @invariant()
    def kept_peaks_are_true_and_the_biggest(self) -> None:
        kept = {p.principal: p.peak for p in self.ledger.held_peaks(100)}
        assert len(kept) <= self.capacity
        for name, peak in kept.items():
            assert peak == self.true_peak[name]  # exact: the principal's true maximum
            assert self.ledger.held_peak(name) == HeldPeak(name, peak,
                                                           self.current.get(name, 0))
        if len(kept) < self.capacity:
            assert kept.keys() == self.true_peak.keys()  # not full: everyone is kept
        else:
            lowest = min(kept.values())
            assert all(peak <= lowest for name, peak in self.true_peak.items()
                       if name not in kept)


TestPeakModel = PeakModel.TestCase
TestPeakModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.mark.anyio
async def test_principals_record_the_most_held_at_once(tmp_path: Path) -> None:
    budgets = Principals(f"sqlite:///{tmp_path / 'peaks.db'}", run_id="r1",
                         template=[LimitSpec("usd", Window.run(), Decimal("10"))])
    try:
        agent = budgets.get("agent:x")
        first = await agent.reserve({"usd": Decimal("2")})
        async with agent.reserve({"usd": Decimal("3")}):  # released on exit
            assert budgets.ledger("usd").held_peak("agent:x") == HeldPeak(
                "agent:x", Decimal("5"), Decimal("5"))
        await first.commit({"usd": Decimal("1.5")})
        await (await agent.reserve({"usd": Decimal("4")})).release()
        ledger = budgets.ledger("usd")
        assert ledger.held_peak("agent:x") == HeldPeak("agent:x", Decimal("5"), Decimal(0))
        [entry] = ledger.top(1)
        assert (entry.total, entry.held_peak) == (Decimal("1.5"), Decimal("5"))
    finally:
        await budgets.aclose()


@pytest.mark.anyio
async def test_a_detached_hold_leaves_the_principals_current_level() -> None:
    """A hold handed to a job (``detach``) is no longer this handle's to end: the ledger's
    current level drops back (its peak stays) instead of counting it held for ever."""
    budgets = Principals("memory://", template=[LimitSpec("usd", Window.run(), Decimal("10"))])
    try:
        agent = budgets.get("agent:x")
        held = await agent.reserve({"usd": Decimal("4")})
        held.detach()
        assert budgets.ledger("usd").held_peak("agent:x") == HeldPeak(
            "agent:x", Decimal("4"), Decimal(0))
        other = await agent.reserve({"usd": Decimal("1")})
        assert budgets.ledger("usd").held_peak("agent:x") == HeldPeak(
            "agent:x", Decimal("4"), Decimal("1"))
        await other.release()
    finally:
        await budgets.aclose()
