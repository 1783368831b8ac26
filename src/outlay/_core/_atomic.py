"""``AtomicBudget``: the in-process reference ``BudgetGuard``.

A counter of whole units (calls, tokens, cents) guarded by one ``threading.Lock``. Every method
is one short critical section that never awaits while holding it, so the budget can be shared by
asyncio tasks, trio tasks and worker threads at once.

Waiting reservations queue in FIFO order and are *granted at release time*: the releasing call
moves units straight to the head waiter under the lock, so no ``*_nowait`` call can slip in
between a release and the woken waiter. A waiter cancelled after it was granted hands its grant
on to the next waiter instead of losing it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import anyio
import anyio.lowlevel

from . import _log
from ._amounts import check_count
from ._exceptions import BudgetExceeded
from ._log import config as _structlog


@dataclass(frozen=True, slots=True)
class BudgetStatistics:
    """A consistent snapshot of an ``AtomicBudget``, taken under its lock."""

    capacity: int
    available: int
    held: int
    tasks_waiting: int
    reserved: int
    denied: int
    released: int


class _Waiter:
    """One task waiting in ``AtomicBudget.acquire``; ``granted`` is set under the budget lock.

    ``wake`` may be called from any thread. On asyncio the waiter is a bare future of the running
    loop (the cheapest wake-up there is); elsewhere an ``anyio.Event`` woken through the loop's
    thread-safe scheduler.
    """

    __slots__ = ("_event", "_future", "_schedule", "cost", "granted", "thread")

    def __init__(self, cost: int) -> None:
        self.cost = cost
        self.granted = False
        self.thread = threading.get_ident()
        self._future: asyncio.Future[None] | None = None
        self._event: anyio.Event | None = None
        loop = asyncio._get_running_loop()  # None instead of an exception: cheaper
        if loop is None:  # not asyncio: trio, through anyio
            self._event = anyio.Event()
            native = anyio.lowlevel.current_token().native_token
            self._schedule: Callable[[Callable[[], object]], object] = native.run_sync_soon  # type: ignore[attr-defined]
        else:
            self._future = loop.create_future()
            self._schedule = loop.call_soon_threadsafe

    async def wait(self) -> None:
        if self._future is not None:
            await self._future
        else:
            assert self._event is not None
            await self._event.wait()

    def wake(self) -> None:
        if threading.get_ident() != self.thread:
            self._schedule(self._set)
            return
        future = self._future  # inlined _set: the common same-thread wake-up
        if future is None:
            assert self._event is not None
            self._event.set()
        elif not future.done():
            future.set_result(None)

    def _set(self) -> None:
        if self._future is not None:
            if not self._future.done():
                self._future.set_result(None)
        else:
            assert self._event is not None
            self._event.set()


class AtomicBudget:
    """A budget of whole units, exact under any interleaving of tasks and threads.

    Implements ``BudgetGuard``. ``try_reserve``/``try_reserve_nowait`` never wait and never yield
    to the event loop: they take ``cost`` now or return False; ``reserve`` takes now or raises
    ``BudgetExceeded`` (the vocabulary of every outlay budget). Waiting is asked for by name:
    ``acquire`` (and ``async with hold(cost)``) waits in FIFO order.
    ``release`` never raises ``available`` above ``capacity``. While tasks wait, the
    non-waiting calls are refused so a stream of small reservations cannot starve a large one.
    """

    __slots__ = (
        "_available", "_capacity", "_denied", "_lock", "_name", "_released", "_reserved",
        "_waiters",
    )

    def __init__(self, capacity: int, *, name: str | None = None) -> None:
        self._capacity = check_count(capacity, "capacity")
        self._available = self._capacity
        self._name = name
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self._reserved = 0
        self._denied = 0
        self._released = 0

    @property
    def capacity(self) -> int:
        """The most that can be held at once."""
        return self._capacity

    @property
    def available(self) -> int:
        """What can be reserved right now (waiters aside)."""
        return self._available

    @property
    def utilization(self) -> float:
        """The fraction of capacity held, 0.0 to 1.0 (0.0 for a zero-capacity budget)."""
        capacity = self._capacity
        return (capacity - self._available) / capacity if capacity else 0.0

    def try_reserve_nowait(self, cost: int) -> bool:
        """Take ``cost`` now if it fits and nobody is queued; otherwise return False.

        Raises ``TypeError`` for a non-``int`` cost and ``ValueError`` for a negative one.
        """
        with self._lock:
            # One chained test is the fast path; anything else is checked below, outside the
            # lock, and bad input raises there, having taken nothing.
            if cost.__class__ is int and 0 <= cost <= self._available and not self._waiters:
                self._available -= cost
                self._reserved += 1
                admitted = True
            else:
                admitted = False
        if not admitted:
            self._deny(cost)
        elif _structlog.is_configured:  # a grant is logged to structlog only: the hot path
            self._log_reservation(cost, True)
        return admitted

    async def try_reserve(self, cost: int) -> bool:
        """``BudgetGuard.try_reserve``: ``try_reserve_nowait`` without yielding to the loop."""
        return self.try_reserve_nowait(cost)

    async def reserve(self, cost: int) -> None:
        """Take ``cost`` now or raise ``BudgetExceeded``; never waits (``acquire`` waits).

        The same vocabulary as every outlay budget: ``reserve`` raises, ``try_reserve`` returns
        False instead. Raises ``TypeError``/``ValueError`` for a bad cost.
        """
        if not self.try_reserve_nowait(cost):
            raise self._exceeded(cost)

    def _exceeded(self, cost: int) -> BudgetExceeded:
        taken = self._capacity - self._available
        return BudgetExceeded(unit=None, requested=cost, cap=self._capacity, spent=0,
                              held=taken, key=self._name,
                              note="it can never fit" if cost > self._capacity else None)

    async def acquire(self, cost: int) -> None:
        """Take ``cost``, waiting in FIFO order until it fits.

        Raises ``BudgetExceeded`` at once if ``cost`` exceeds ``capacity`` (it could never fit).
        A checkpoint: cancellation is seen even when the units are free. Cancellation while
        waiting takes nothing; a cancellation that lands after the grant (native asyncio
        ``Task.cancel()`` included) gives the grant back, to the next waiter.
        """
        self._check_fits(cost)
        await anyio.lowlevel.checkpoint_if_cancelled()
        with self._lock:
            if cost <= self._available and not self._waiters:
                self._available -= cost
                self._reserved += 1
                waiter = None
            else:
                waiter = _Waiter(cost)
                self._waiters.append(waiter)
        if waiter is None:
            try:
                await anyio.lowlevel.cancel_shielded_checkpoint()
            except BaseException:
                # A native asyncio ``Task.cancel()`` passes the shielded checkpoint (anyio
                # #398): the grant was taken, so give it back before the cancellation goes on.
                self._ungrant(cost)
                raise
        else:
            await self._wait(waiter)
        if _structlog.is_configured:
            self._log_reservation(cost, True)

    async def _wait(self, waiter: _Waiter) -> None:
        """Wait until ``waiter`` (queued) is granted; on cancellation leave the queue, or give
        a grant that arrived meanwhile back to the next waiter."""
        try:
            await waiter.wait()
        except BaseException:
            with self._lock:
                if not waiter.granted:
                    self._waiters.remove(waiter)
                    woken = self._grant()
            if waiter.granted:
                self._ungrant(waiter.cost)
            else:
                for other in woken:
                    other.wake()
            raise

    def _check_fits(self, cost: int) -> None:
        """Raise for a bad ``cost``, or ``BudgetExceeded`` if it exceeds ``capacity``."""
        check_count(cost, "cost")
        if cost > self._capacity:
            with self._lock:
                self._denied += 1
            raise self._exceeded(cost)

    def release_nowait(self, cost: int) -> None:
        """Give ``cost`` back (capped at ``capacity``) and grant queued waiters that now fit."""
        if cost.__class__ is not int or cost < 0:
            check_count(cost, "cost")
        with self._lock:
            available = self._available + cost
            self._available = available if available < self._capacity else self._capacity
            self._released += 1
            woken = self._grant() if self._waiters else None
        if woken:
            for waiter in woken:
                waiter.wake()
        if _structlog.is_configured:
            _log.emit("outlay.budget.released", budget=self._name, cost=cost,
                      available=self._available)

    async def release(self, cost: int) -> None:
        """``BudgetGuard.release``: ``release_nowait`` without yielding to the loop."""
        self.release_nowait(cost)

    def refill(self) -> None:
        """Make the whole capacity available again and grant queued waiters."""
        with self._lock:
            self._available = self._capacity
            woken = self._grant()
        for waiter in woken:
            waiter.wake()
        if _structlog.is_configured:
            _log.emit("outlay.budget.refilled", budget=self._name, available=self._capacity)

    def hold(self, cost: int) -> _Hold:
        """``async with budget.hold(cost):`` ``acquire`` on entry (waiting in FIFO order), release
        on every exit.

        When ``cost`` fits and nobody waits, entry takes it without yielding to the event loop
        (as ``asyncio.Semaphore`` does), so a cancellation is seen at the body's first
        checkpoint; otherwise entry waits exactly like ``acquire``.
        """
        return _Hold(self, cost)

    def statistics(self) -> BudgetStatistics:
        """Return a frozen, self-consistent snapshot."""
        with self._lock:
            return BudgetStatistics(
                capacity=self._capacity,
                available=self._available,
                held=self._capacity - self._available,
                tasks_waiting=len(self._waiters),
                reserved=self._reserved,
                denied=self._denied,
                released=self._released,
            )

    def _deny(self, cost: object) -> None:
        """Raise for a bad ``cost``, else count a denial and log it (to structlog, or else to
        stdlib logging: a denial is off the hot path)."""
        check_count(cost, "cost")
        with self._lock:
            self._denied += 1
        if _log.enabled():
            self._log_reservation(cost, False)  # type: ignore[arg-type]  # checked above

    def _ungrant(self, cost: int) -> None:
        """Take back a grant whose task was cancelled, and hand it on to queued waiters."""
        with self._lock:
            self._available = min(self._capacity, self._available + cost)
            self._reserved -= 1
            woken = self._grant()
        for waiter in woken:
            waiter.wake()

    def _grant(self) -> list[_Waiter]:
        """Move units to queued waiters, head first, while the head fits. Lock held."""
        woken: list[_Waiter] = []
        waiters = self._waiters
        while waiters and waiters[0].cost <= self._available:
            waiter = waiters.popleft()
            self._available -= waiter.cost
            self._reserved += 1
            waiter.granted = True
            woken.append(waiter)
        return woken

    def _log_reservation(self, cost: int, admitted: bool) -> None:
        event = "outlay.budget.reserved" if admitted else "outlay.budget.denied"
        _log.emit(event, budget=self._name, cost=cost, available=self._available)

    def __repr__(self) -> str:
        return (f"<AtomicBudget {self._name or ''} available={self._available}"
                f"/{self._capacity} waiting={len(self._waiters)}>")


class _Hold:
    """What ``AtomicBudget.hold`` returns: an async context manager without a generator."""

    __slots__ = ("_budget", "_cost")

    def __init__(self, budget: AtomicBudget, cost: int) -> None:
        self._budget = budget
        self._cost = cost

    async def __aenter__(self) -> None:
        budget, cost = self._budget, self._cost
        with budget._lock:
            # The same chained test as try_reserve_nowait: the uncontended fast path; a cost
            # that cannot be taken now but could fit later queues in the same critical section.
            if cost.__class__ is int and 0 <= cost <= budget._available and not budget._waiters:
                budget._available -= cost
                budget._reserved += 1
                waiter: _Waiter | bool | None = None
            elif cost.__class__ is int and 0 <= cost <= budget._capacity:
                waiter = _Waiter(cost)
                budget._waiters.append(waiter)
            else:
                waiter = False
        if waiter is False:  # bad or oversized cost (or an int subclass): reserve says which
            await budget.reserve(cost)
            return
        if waiter is not None:
            assert isinstance(waiter, _Waiter)
            await budget._wait(waiter)
        if _structlog.is_configured:
            budget._log_reservation(cost, True)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._budget.release_nowait(self._cost)
