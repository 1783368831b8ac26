"""A bounded per-principal usage ledger for high-cardinality principals.

Thousands of ephemeral sub-agents must not grow memory without bound, yet the biggest spenders
must stay visible. ``UsageLedger`` keeps at most ``capacity`` principals using the Space-Saving
algorithm (Metwally, Agrawal, El Abbadi 2005): when full, the smallest entry is evicted and the
newcomer inherits its total as a bound on its error. A principal whose true total exceeds
``(everything recorded) / capacity`` is never evicted, and every kept ``total`` overstates the
truth by at most ``error``.

Beside the totals it keeps **high-water marks**: the most each principal ever held at once
(concurrent holds through ``hold``/``unhold``, or any level reported with ``level``: context
size, a stage's memory). They live in a table of their own, at most ``capacity`` principals,
under a rule that keeps the big users: when it is full, a principal not in it enters only if
its peak is bigger than the lowest peak kept, which it evicts; otherwise it is dropped. The
lowest kept peak therefore never falls, every principal left out peaked at or below it, and
every kept peak is the principal's true maximum, so a flood of small ephemeral sub-agents
cannot push out the big users.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from dataclasses import dataclass
from decimal import Decimal

from ._core import Amount, check_amount, check_count

__all__ = ("HeldPeak", "LedgerEntry", "LedgerStatistics", "UsageLedger")


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
    #: The most it ever held at once (its high-water mark), ``None`` if that is not kept.
    held_peak: Amount | None = None


@dataclass(frozen=True, slots=True)
class HeldPeak:
    """A principal's high-water mark: the most it ever held at once (``peak``), and what it
    holds now (``current``, through ``hold``/``unhold``; the last ``level`` reported)."""

    principal: str
    peak: Amount
    current: Amount


@dataclass(frozen=True, slots=True)
class LedgerStatistics:
    """Counts for diagnostics: ``size`` entries of ``capacity``; ``evicted`` so far; the largest
    total ever evicted (``evicted_peak``); the largest total any entry ever reached
    (``high_water``); ``heap_size`` bounded by ``4 * capacity + 64``. For the high-water
    table: ``peaks_size`` entries, ``peaks_evicted`` pushed out by a bigger newcomer,
    ``peaks_dropped`` newcomers not admitted (their peak was not above the lowest kept)."""

    size: int
    capacity: int
    evicted: int
    evicted_peak: Amount
    high_water: Amount
    heap_size: int
    peaks_size: int = 0
    peaks_evicted: int = 0
    peaks_dropped: int = 0


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
        # High-water marks: principal -> peak, a lazy min-heap over it, and the current level
        # of every principal holding something now (bounded by what is held at once).
        self._peaks: dict[str, Amount] = {}
        self._peak_heap: list[tuple[Amount, int, str]] = []
        self._current: dict[str, Amount] = {}
        self._peaks_evicted = 0
        self._peaks_dropped = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, principal: str, amount: Amount) -> None:
        """Add ``amount`` to ``principal``'s total, evicting the smallest entry if full."""
        principal, amount = _checked(principal, amount)
        with self._lock:
            entry = self._entries.get(principal)
            if entry is None:
                zero = _zero(amount)
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

    def hold(self, principal: str, amount: Amount) -> None:
        """``principal`` holds ``amount`` more from now (a reservation began): its current
        level rises and, if it is a new high, its high-water mark."""
        principal, amount = _checked(principal, amount)
        with self._lock:
            level = self._current.get(principal, 0) + amount
            if level:
                self._current[principal] = level
            self._observe(principal, level)

    def unhold(self, principal: str, amount: Amount) -> None:
        """``principal`` holds ``amount`` less (a reservation ended). The level never goes
        below zero; a principal holding nothing is forgotten here (its peak stays)."""
        principal, amount = _checked(principal, amount)
        with self._lock:
            level = self._current.get(principal, 0) - amount
            if level > 0:
                self._current[principal] = level
            else:
                self._current.pop(principal, None)

    def level(self, principal: str, value: Amount) -> None:
        """Report what ``principal`` holds now (a gauge: context size, a stage's memory); its
        high-water mark is the largest value reported."""
        principal, value = _checked(principal, value)
        with self._lock:
            self._observe(principal, value)

    def held_peak(self, principal: str) -> HeldPeak | None:
        """The high-water mark of ``principal``, or ``None`` if the table does not keep it."""
        with self._lock:
            peak = self._peaks.get(principal)
            if peak is None:
                return None
            return HeldPeak(principal, peak, self._current.get(principal, _zero(peak)))

    def held_peaks(self, n: int = 10) -> list[HeldPeak]:
        """The ``n`` highest high-water marks, highest first (ties by principal)."""
        check_count(n, "n")
        with self._lock:
            items = list(self._peaks.items())
            current = dict(self._current)
        biggest = heapq.nsmallest(n, items, key=lambda kv: (-kv[1], kv[0]))
        return [HeldPeak(p, peak, current.get(p, _zero(peak))) for p, peak in biggest]

    def get(self, principal: str) -> LedgerEntry | None:
        """The figures of ``principal``, or ``None`` if it is not (or no longer) kept."""
        with self._lock:
            entry = self._entries.get(principal)
            return None if entry is None else self._public(principal, entry)

    def top(self, n: int = 10) -> list[LedgerEntry]:
        """The ``n`` biggest entries by total, biggest first (ties by principal), each with
        its high-water mark beside its spend."""
        check_count(n, "n")
        with self._lock:
            items = list(self._entries.items())
            biggest = heapq.nsmallest(n, items, key=lambda kv: (-kv[1].total, kv[0]))
            return [self._public(p, e) for p, e in biggest]

    def statistics(self) -> LedgerStatistics:
        with self._lock:
            return LedgerStatistics(len(self._entries), self._capacity, self._evicted,
                                    self._evicted_peak, self._high_water, len(self._heap),
                                    len(self._peaks), self._peaks_evicted, self._peaks_dropped)

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

    def _public(self, principal: str, entry: _Entry) -> LedgerEntry:
        return LedgerEntry(principal, entry.total, entry.error, entry.peak, entry.count,
                           self._peaks.get(principal))

    def _observe(self, principal: str, level: Amount) -> None:
        """Raise ``principal``'s high-water mark to ``level`` under the admission rule."""
        peaks = self._peaks
        known = peaks.get(principal)
        if known is not None:
            if level > known:
                peaks[principal] = level
                self._push_peak(principal, level)
            return
        if len(peaks) >= self._capacity:
            lowest, lowest_name = self._lowest_peak()
            if not level > lowest:
                self._peaks_dropped += 1
                return
            del peaks[lowest_name]
            self._peaks_evicted += 1
        peaks[principal] = level
        self._push_peak(principal, level)

    def _lowest_peak(self) -> tuple[Amount, str]:
        heap = self._peak_heap
        while heap:
            peak, _, principal = heap[0]
            if self._peaks.get(principal) == peak:
                return peak, principal
            heapq.heappop(heap)  # stale: raised or evicted since
        raise AssertionError("ledger peak heap lost track of its entries")  # pragma: no cover

    def _push_peak(self, principal: str, peak: Amount) -> None:
        heapq.heappush(self._peak_heap, (peak, next(self._seq), principal))
        if len(self._peak_heap) > 4 * self._capacity + 64:
            self._peak_heap = [(v, next(self._seq), p) for p, v in self._peaks.items()]
            heapq.heapify(self._peak_heap)


def _checked(principal: str, amount: Amount) -> tuple[str, Amount]:
    if not isinstance(principal, str) or not principal:
        raise TypeError(f"principal must be a non-empty str, got {principal!r}")
    return principal, check_amount(amount)


def _zero(like: Amount) -> Amount:
    return Decimal(0) if isinstance(like, Decimal) else 0
