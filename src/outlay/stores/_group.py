"""Group commit in the event loop, for the stores that run their engine in a worker thread
(SQLite, PostgreSQL): one rule for queueing, leading, cancelling and answering.

The operations of one store in one event loop queue behind the run in flight; the oldest one
leads the next run, which takes the queue (``Group.take``) into one worker-thread call, and so
into one transaction. A lone operation leads at once: it is a run of its own.

Cancellation: an operation cancelled while queued was never taken into a run, so nothing
happened and it leaves the queue (handing the lead on if it had it). Once taken, it is never
abandoned: its caller waits, shielded, for the run to end (the transaction commits or rolls
back), then sees the cancellation. The operation may have taken effect; every store operation
is idempotent by reservation id.
"""

from __future__ import annotations

import threading
from asyncio import _get_running_loop
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

from .._core import StoreError

T = TypeVar("T")

_MISSING: Any = object()


class Queued:
    """One operation of a group: whether it was taken into a run (``taken``), leads the next
    one (``lead``) or is answered (``done``); ``wake`` (only for one that waits) is set when it
    is to lead or is answered. The run records ``result`` or ``error``. Stores subclass it
    with what the operation is."""

    __slots__ = ("done", "error", "lead", "result", "taken", "wake")

    def __init__(self) -> None:
        self.lead = self.taken = self.done = False
        self.wake: anyio.Event | None = None
        self.result: Any = _MISSING
        self.error: BaseException | None = None

    def reset(self) -> None:
        """Forget the outcome of an attempt that did not commit."""
        self.result, self.error = _MISSING, None

    def outcome(self) -> Any:
        """The result, or raise the error; a run that recorded neither is a ``StoreError``."""
        if self.error is not None:
            raise self.error
        if self.result is _MISSING:
            raise StoreError("the store's worker thread did not run the operation")
        return self.result


Q = TypeVar("Q", bound=Queued)


class Group(Generic[Q]):
    """The operations of one store in one event loop, queued or in the run in flight.

    ``most``: the most operations one run takes. ``distinct(op)``: a run takes at most one
    operation per value (a later one waits for the next run). ``limiter``: the worker-thread
    slots runs take (anyio's default without one). ``settle``: a leader that follows a run
    which answered several callers lets the loop turn twice first, so those callers' next
    operations join its run instead of trailing it one by one.
    """

    def __init__(self, *, most: int, distinct: Callable[[Q], Hashable] | None = None,
                 limiter: anyio.CapacityLimiter | None = None, settle: bool = False) -> None:
        self.most = most
        self.limiter = limiter
        self._distinct = distinct
        self._settle = settle
        self._queue: list[Q] = []
        self._running = False
        self._woken = 0
        #: Guards the queue and ``Queued.taken``: a run may ``take`` from its worker thread.
        self._lock = threading.Lock()
        self._event = type(anyio.Event())  # the loop's own Event class: no lookup per op

    async def submit(self, item: Q, run: Callable[[list[Q]], object]) -> Any:
        """Run ``item`` in the next run of this group and return its outcome.

        The leader calls ``run(ops)`` in a worker thread with the operations it took (``item``
        first); ``run`` records each one's ``result`` or ``error``, must not raise, and may
        ``take`` more into the same list before it commits.
        """
        with self._lock:
            self._queue.append(item)
        waiting: Callable[[], Any] | None = None
        if self._running:
            item.wake = self._event()
            waiting = item.wake.wait
        else:
            self._running = True
            if self._settle and self._woken > 1:
                item.lead = True
                waiting = _two_turns  # trio runs the tasks ready in one turn in either order
        if waiting is not None:
            try:
                await waiting()
            except BaseException:
                with self._lock:
                    untaken = not item.taken
                    if untaken:  # never taken into a run: nothing happened
                        self._queue.remove(item)
                if untaken:
                    if item.lead:  # it was to lead the next run: hand that on
                        self._hand_on()
                    raise
                assert item.wake is not None  # taken into another's run: wait for its end
                with anyio.CancelScope(shield=True):
                    await item.wake.wait()
                raise
            if item.done:
                return item.outcome()
        taken: list[Q] = []
        self.take(taken)
        assert taken[0] is item  # the leader is the oldest queued operation
        try:
            with anyio.CancelScope(shield=True):  # every operation taken runs, once
                await anyio.to_thread.run_sync(run, taken, limiter=self.limiter)
        finally:
            for queued in taken:
                queued.done = True
                if queued.wake is not None:
                    queued.wake.set()
            self._woken = len(taken)
            self._hand_on()
        await anyio.lowlevel.checkpoint_if_cancelled()
        return item.outcome()

    def take(self, into: list[Q]) -> bool:
        """Move queued operations into the run ``into``, oldest first, up to ``most`` in all
        and by ``distinct``; the rest stay queued. Whether any were taken. Callable from the
        run's worker thread."""
        with self._lock:
            room = self.most - len(into)
            if room <= 0 or not self._queue:
                return False
            if self._distinct is None:
                more = self._queue[:room]
                del self._queue[:room]
            else:
                seen = {self._distinct(op) for op in into}
                more, rest = [], []
                for op in self._queue:
                    value = self._distinct(op)
                    if len(more) < room and value not in seen:
                        seen.add(value)
                        more.append(op)
                    else:
                        rest.append(op)
                self._queue[:] = rest
            for op in more:
                op.taken = True
        into.extend(more)
        return bool(more)

    def _hand_on(self) -> None:
        """The oldest queued operation leads the next run; with none, no run is going."""
        with self._lock:
            first = self._queue[0] if self._queue else None
            if first is None:
                self._running = False
                return
            first.lead = True
        assert first.wake is not None  # queued behind a run: it waits
        first.wake.set()


class PerLoop(Generic[T]):
    """One ``T`` for the event loop running now (a store may be used from one loop, then
    another: each gets its own, made by ``make``). The loop is known by asyncio's running
    loop where there is one (a C call, once per operation), else by anyio's token."""

    __slots__ = ("_bound", "_make")

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._bound: tuple[object, T] | None = None

    def get(self, loop: object | None = None) -> T:
        """The running loop's ``T``; ``loop``, if given, is the running asyncio loop (a caller
        that has it need not look it up again)."""
        loop = loop or _get_running_loop() or anyio.lowlevel.current_token().native_token
        bound = self._bound
        if bound is None or bound[0] is not loop:
            bound = self._bound = (loop, self._make())
        return bound[1]


async def _two_turns() -> None:
    await anyio.lowlevel.checkpoint()
    await anyio.lowlevel.checkpoint()
