"""Budget windows: run, hour, day, week, month and custom periods, keyed by a period id.

A window maps an instant to the ``Period`` that contains it. Calendar windows (hour, day, week,
month) are aligned to the wall clock of a time zone (``zoneinfo``; UTC by default), so a day in
a zone that springs forward lasts 23 hours and a month is a real calendar month. Each period has
an id such as ``month:2026-11``; a budget keys its limits by that id, so a new period starts
fresh on first use with no sweeper and no reset job. The store may forget a finished period's
limit after ``Period.end`` (see ``Store.reserve(expire_at=...)``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._exceptions import ConfigurationError

__all__ = ("Period", "Window")

_KINDS = ("run", "hour", "day", "week", "month", "every")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _zone(tz: str | tzinfo) -> tzinfo:
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise TypeError(f"tz must be a zone name or tzinfo, got {type(tz).__name__}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown time zone {tz!r}") from exc


@dataclass(frozen=True, slots=True)
class Period:
    """One period of a window: ``id`` (``"month:2026-11"``), and its ``start`` and ``end`` as
    UNIX seconds (``end`` is ``None`` for a run, which lasts until the program starts another).
    """

    id: str
    start: float | None
    end: float | None

    def contains(self, at: float) -> bool:
        """True if the instant ``at`` (UNIX seconds) falls in this period."""
        return (self.start is None or at >= self.start) and (self.end is None or at < self.end)


@dataclass(frozen=True, slots=True)
class Window:
    """How a budget is divided in time. Build one with ``Window.run()``, ``Window.hour()``,
    ``Window.day()``, ``Window.week()``, ``Window.month()`` or ``Window.every(length)``.

    ``name`` is the prefix of every period id and is how caps refer to the window.
    """

    kind: str
    name: str
    tz: tzinfo = UTC
    length: timedelta | None = None
    anchor: datetime = _EPOCH
    week_start: int = 0
    # The last period computed: most lookups fall in it, and reusing it skips the zone math.
    _last: list[Period] = field(default_factory=list, init=False, repr=False, compare=False,
                                hash=False)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown window kind {self.kind!r}; expected one of {_KINDS}")
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"window name must match {_NAME.pattern}, got {self.name!r}")
        if not 0 <= self.week_start <= 6:
            raise ValueError(f"week_start must be 0 (Monday) .. 6 (Sunday), got "
                             f"{self.week_start}")
        if self.kind == "every":
            if not isinstance(self.length, timedelta):
                raise TypeError("a custom window needs a timedelta length")
            if self.length < timedelta(seconds=1) or self.length % timedelta(seconds=1):
                raise ValueError(f"a custom window lasts a whole number of seconds >= 1, got "
                                 f"{self.length}")
            if self.anchor.tzinfo is None:
                raise ValueError("the anchor of a custom window must be timezone-aware")

    # -- constructors --------------------------------------------------------------------

    @classmethod
    def run(cls) -> Window:
        """The run window: one period per run id, which lasts until the program starts a new
        run (``Principals.new_run()``). Its period id is ``run:<run id>``."""
        return cls("run", "run")

    @classmethod
    def hour(cls, tz: str | tzinfo = "UTC") -> Window:
        """Wall-clock hours in ``tz``; ids carry the UTC offset (``hour:2026-11-01T01:00-04:00``)
        so the two 1 a.m. hours of a fall-back night are two periods."""
        return cls("hour", "hour", _zone(tz))

    @classmethod
    def day(cls, tz: str | tzinfo = "UTC") -> Window:
        """Calendar days in ``tz`` (``day:2026-11-23``); 23 or 25 hours across DST changes."""
        return cls("day", "day", _zone(tz))

    @classmethod
    def week(cls, tz: str | tzinfo = "UTC", *, week_start: int = 0) -> Window:
        """Calendar weeks in ``tz`` starting on ``week_start`` (0 Monday .. 6 Sunday), keyed by
        the date they start (``week:2026-11-23``)."""
        return cls("week", "week", _zone(tz), week_start=week_start)

    @classmethod
    def month(cls, tz: str | tzinfo = "UTC") -> Window:
        """Calendar months in ``tz`` (``month:2026-11``): 28 to 31 days, never a fixed 30."""
        return cls("month", "month", _zone(tz))

    @classmethod
    def every(
        cls,
        length: timedelta,
        *,
        name: str | None = None,
        anchor: datetime = _EPOCH,
        tz: str | tzinfo = "UTC",
    ) -> Window:
        """Fixed-length periods of ``length`` counted from ``anchor`` (the UNIX epoch by
        default), in elapsed time, not wall clock. ``name`` defaults to the length in seconds
        (``"21600s"``); ids are ``<name>:<start in tz>`` (``6h:2026-11-23T12:00+00:00``)."""
        if not isinstance(length, timedelta):
            raise TypeError(f"length must be a timedelta, got {type(length).__name__}")
        label = name if name is not None else f"{int(length.total_seconds())}s"
        return cls("every", label, _zone(tz), length=length, anchor=anchor)

    # -- periods -------------------------------------------------------------------------

    def period(self, at: float | datetime, run_id: str = "") -> Period:
        """The period containing ``at`` (UNIX seconds or an aware ``datetime``).

        ``run_id`` names the run for a run window and is ignored by the others.
        """
        if self.kind == "run":
            if not run_id:
                raise ValueError("a run window needs a run id")
            return Period(f"run:{run_id}", None, None)
        instant = _instant(at)
        last = self._last
        if last:
            cached = last[0]
            if cached.contains(instant.timestamp()):
                return cached
        period = self._compute(instant)
        last[:] = [period]
        return period

    def _compute(self, instant: datetime) -> Period:
        local = instant.astimezone(self.tz)
        if self.kind == "every":
            assert self.length is not None
            step = int(self.length.total_seconds())
            anchor = self.anchor.timestamp()
            start = anchor + ((instant.timestamp() - anchor) // step) * step
            label = datetime.fromtimestamp(start, self.tz).isoformat(timespec="minutes")
            return Period(f"{self.name}:{label}", start, start + step)
        if self.kind == "hour":
            return self._hour(instant, local)
        day = local.date()
        if self.kind == "day":
            return Period(f"day:{day.isoformat()}", self._midnight(day),
                          self._midnight(day + timedelta(days=1)))
        if self.kind == "week":
            first_day = day - timedelta(days=(day.weekday() - self.week_start) % 7)
            return Period(f"week:{first_day.isoformat()}", self._midnight(first_day),
                          self._midnight(first_day + timedelta(days=7)))
        first_day = day.replace(day=1)
        following = (first_day.replace(year=first_day.year + 1, month=1)
                     if first_day.month == 12 else first_day.replace(month=first_day.month + 1))
        return Period(f"month:{first_day:%Y-%m}", self._midnight(first_day),
                      self._midnight(following))

    def _hour(self, instant: datetime, local: datetime) -> Period:
        # The wall-clock hour around ``instant``, measured back and forward in elapsed time at
        # the offset in force. A shift of part of an hour (Lord Howe's 30 minutes) inside that
        # hour cuts it at the shift, so hours still tile time with no gap and no overlap.
        at = instant.timestamp()
        begin = at - (local.minute * 60 + local.second + local.microsecond / 1e6)
        end = begin + 3600
        offset = local.utcoffset()
        if self._offset(begin) != offset:
            begin = self._shift(begin, at)
        if self._offset(end - 1) != offset:
            end = self._shift(at, end)
        # The id carries the offset in force at the start, which tells the two 1 a.m. hours of
        # a fall-back night apart.
        label = datetime.fromtimestamp(begin, self.tz).isoformat(timespec="minutes")
        return Period(f"hour:{label}", begin, end)

    def _offset(self, at: float) -> timedelta | None:
        return datetime.fromtimestamp(at, self.tz).utcoffset()

    def _shift(self, low: float, high: float) -> float:
        """The first whole second in ``(low, high]`` with the offset in force at ``high``."""
        target = self._offset(high)
        lo, hi = math.floor(low), math.ceil(high)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._offset(mid) == target:
                hi = mid
            else:
                lo = mid
        return float(hi)

    def _midnight(self, day: date) -> float:
        # A midnight skipped by a DST jump resolves (fold=0) to the first real instant of the day.
        return datetime(day.year, day.month, day.day, tzinfo=self.tz).timestamp()

    def __repr__(self) -> str:
        zone = getattr(self.tz, "key", str(self.tz))
        if self.kind == "run":
            return "Window.run()"
        if self.kind == "every":
            return f"Window.every({self.length!r}, name={self.name!r}, tz={zone!r})"
        return f"Window.{self.kind}(tz={zone!r})"


def _instant(at: float | datetime) -> datetime:
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("a naive datetime is ambiguous; pass an aware datetime or "
                             "UNIX seconds")
        return at.astimezone(UTC)
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise TypeError(f"at must be UNIX seconds or a datetime, got {type(at).__name__}")
    return datetime.fromtimestamp(at, UTC)
