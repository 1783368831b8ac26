"""``FakeClock``: time that moves only when a test moves it."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ("FakeClock",)


class FakeClock:
    """A clock for outlay's ``clock=`` parameters (stores, budgets, principals): calling it
    returns ``now``, UNIX seconds as a ``float``, which changes only by ``advance``, ``set`` or
    assigning ``now``. ``tick`` seconds are added after every reading (``0`` by default), for
    code that must see time pass between two readings. ``utcnow`` reads the same instant as a
    timezone-aware ``datetime`` (``ApprovalHook(clock=clock.utcnow)``).

    ``start`` is seconds or an aware ``datetime``; ``ValueError`` for a naive one.
    """

    __slots__ = ("now", "readings", "tick")

    def __init__(self, start: float | datetime = 1_000.0, *, tick: float = 0.0) -> None:
        self.now = _seconds(start)
        self.tick = float(tick)
        self.readings = 0
        """How many times the clock was read."""

    def __call__(self) -> float:
        value = self.now
        self.now += self.tick
        self.readings += 1
        return value

    def utcnow(self) -> datetime:
        """The clock's reading as an aware UTC ``datetime`` (counts as a reading)."""
        return datetime.fromtimestamp(self(), UTC)

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, with a negative ``seconds``)."""
        self.now += seconds

    def set(self, when: float | datetime) -> None:
        """Put the clock at ``when`` (seconds or an aware ``datetime``)."""
        self.now = _seconds(when)

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now!r}, tick={self.tick!r})"


def _seconds(when: float | datetime) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError("a FakeClock needs a timezone-aware datetime (e.g. tzinfo=UTC)")
        return when.timestamp()
    return float(when)
