"""A bounded per-principal usage ledger for high-cardinality principals.

Thousands of ephemeral sub-agents must not grow memory without bound, yet the biggest spenders
must stay visible. ``UsageLedger`` keeps at most ``capacity`` principals using the Space-Saving
algorithm (Metwally, Agrawal, El Abbadi 2005): when full, the smallest entry is evicted and the
newcomer inherits its total as a bound on its error. A principal whose true total exceeds
``(everything recorded) / capacity`` is never evicted, and every kept ``total`` overstates the
truth by at most ``error``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from dataclasses import dataclass
from decimal import Decimal

from ._core import Amount, check_amount, check_count

__all__ = ("LedgerEntry", "LedgerStatistics", "UsageLedger")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One principal's figures. ``total`` is an upper bound on what it spent; ``total - error``
    is a lower bound (``error`` is 0 unless the entry replaced an evicted one). ``peak`` is its
    largest single record and ``count`` how many records it got since it entered the ledger."""

    principal: str
    total: Amount
    error: Amount
    peak: Amount
    count: int


@dataclass(frozen=True, slots=True)
class LedgerStatistics:
    """Counts for diagnostics: ``size`` entries of ``capacity``; ``evicted`` so far; the largest
    total ever evicted (``evicted_peak``); the largest total any entry ever reached
    (``high_water``); ``heap_size`` bounded by ``4 * capacity + 64``."""

    size: int
    capacity: int
    evicted: int
    evicted_peak: Amount
    high_water: Amount
    heap_size: int


@dataclass(slots=True)
class _Entry:
    total: Amount
    error: Amount
    peak: Amount
    count: int


class UsageLedger:
    """Bounded usage totals by principal, biggest kept, smallest evicted when full.

    ``record`` is O(log capacity) and safe from any thread. Amounts are ``int`` or ``Decimal``
    (one unit per ledger); bad amounts raise ``TypeError``/``ValueError`` and record nothing.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if check_count(capacity, "capacity") < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[Amount, int, str]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._evicted = 0
        self._evicted_peak: Amount = 0
        self._high_water: Amount = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, principal: str, amount: Amount) -> None:
        """Add ``amount`` to ``principal``'s total, evicting the smallest entry if full."""
        if not isinstance(principal, str) or not principal:
            raise TypeError(f"principal must be a non-empty str, got {principal!r}")
        amount = check_amount(amount)
        with self._lock:
            entry = self._entries.get(principal)
            if entry is None:
                zero: Amount = Decimal(0) if isinstance(amount, Decimal) else 0
                floor = zero
                if len(self._entries) >= self._capacity:
                    floor = self._evict_smallest()
                entry = self._entries[principal] = _Entry(floor, floor, zero, 0)
            entry.total += amount
            entry.count += 1
            entry.peak = max(entry.peak, amount)
            self._high_water = max(self._high_water, entry.total)
            heapq.heappush(self._heap, (entry.total, next(self._seq), principal))
            if len(self._heap) > 4 * self._capacity + 64:
                self._compact()

    def get(self, principal: str) -> LedgerEntry | None:
        """The figures of ``principal``, or ``None`` if it is not (or no longer) kept."""
        with self._lock:
            entry = self._entries.get(principal)
            return None if entry is None else _public(principal, entry)

    def top(self, n: int = 10) -> list[LedgerEntry]:
        """The ``n`` biggest entries by total, biggest first (ties by principal)."""
        check_count(n, "n")
        with self._lock:
            items = list(self._entries.items())
        biggest = heapq.nsmallest(n, items, key=lambda kv: (-kv[1].total, kv[0]))
        return [_public(p, e) for p, e in biggest]

    def statistics(self) -> LedgerStatistics:
        with self._lock:
            return LedgerStatistics(len(self._entries), self._capacity, self._evicted,
                                    self._evicted_peak, self._high_water, len(self._heap))

    # -- helpers (lock held) ---------------------------------------------------------------

    def _evict_smallest(self) -> Amount:
        heap = self._heap
        while heap:
            total, _, principal = heapq.heappop(heap)
            entry = self._entries.get(principal)
            if entry is not None and entry.total == total:
                del self._entries[principal]
                self._evicted += 1
                self._evicted_peak = max(self._evicted_peak, total)
                return total
        raise AssertionError("ledger heap lost track of its entries")  # pragma: no cover

    def _compact(self) -> None:
        self._heap = [(e.total, next(self._seq), p) for p, e in self._entries.items()]
        heapq.heapify(self._heap)


def _public(principal: str, entry: _Entry) -> LedgerEntry:
    return LedgerEntry(principal, entry.total, entry.error, entry.peak, entry.count)
