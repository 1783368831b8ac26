"""Windows: calendar-aligned periods in a time zone, with stable period ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outlay import ConfigurationError, Window


def ts(*args: int, tz: str = "UTC") -> float:
    return datetime(*args, tzinfo=ZoneInfo(tz)).timestamp()  # type: ignore[arg-type, misc]


def test_month_is_a_real_calendar_month_across_the_year_end() -> None:
    month = Window.month()
    nov = month.period(ts(2026, 11, 30, 23, 59, 59))
    assert nov.id == "month:2026-11"
    assert (nov.start, nov.end) == (ts(2026, 11, 1), ts(2026, 12, 1))
    assert month.period(ts(2026, 12, 1)).id == "month:2026-12"
    dec = month.period(ts(2026, 12, 31, 23, 59))
    assert dec.end == ts(2027, 1, 1)
    assert month.period(dec.end).id == "month:2027-01"  # the end belongs to the next period


def test_february_of_a_leap_year_has_29_days() -> None:
    month, day = Window.month(), Window.day()
    feb = month.period(ts(2028, 2, 15))
    assert feb.end is not None
    assert feb.start is not None
    assert (feb.end - feb.start) == 29 * 86400
    assert day.period(ts(2028, 2, 29, 12)).id == "day:2028-02-29"
    assert day.period(ts(2028, 2, 29, 23, 59, 59)).end == ts(2028, 3, 1)
    feb_2027 = month.period(ts(2027, 2, 15))
    assert feb_2027.end is not None
    assert feb_2027.start is not None
    assert feb_2027.end - feb_2027.start == 28 * 86400


def test_month_follows_the_chosen_time_zone() -> None:
    instant = ts(2026, 11, 30, 16, 30)  # 01:30 on 1 December in Tokyo
    assert Window.month().period(instant).id == "month:2026-11"
    tokyo = Window.month("Asia/Tokyo").period(instant)
    assert tokyo.id == "month:2026-12"
    assert tokyo.start == ts(2026, 12, 1, tz="Asia/Tokyo")
    assert Window.day("America/Los_Angeles").period(instant).id == "day:2026-11-30"


def test_dst_days_last_23_and_25_hours() -> None:
    day = Window.day("America/New_York")
    spring = day.period(ts(2026, 3, 8, 12, tz="America/New_York"))
    assert spring.end is not None
    assert spring.start is not None
    assert spring.end - spring.start == 23 * 3600
    fall = day.period(ts(2026, 11, 1, 12, tz="America/New_York"))
    assert fall.end is not None
    assert fall.start is not None
    assert fall.end - fall.start == 25 * 3600


def test_a_skipped_midnight_starts_the_day_at_its_first_real_instant() -> None:
    # Santiago springs forward at midnight: 2026-09-06 00:00 does not exist locally.
    day = Window.day("America/Santiago")
    period = day.period(ts(2026, 9, 6, 12, tz="America/Santiago"))
    assert period.id == "day:2026-09-06"
    assert period.start is not None
    assert datetime.fromtimestamp(period.start, ZoneInfo("America/Santiago")).hour == 1
    assert day.period(period.start - 1).id == "day:2026-09-05"


def test_the_two_fall_back_hours_are_two_periods() -> None:
    hour = Window.hour("America/New_York")
    first = hour.period(datetime(2026, 11, 1, 5, 30, tzinfo=UTC))  # 01:30 EDT
    second = hour.period(datetime(2026, 11, 1, 6, 30, tzinfo=UTC))  # 01:30 EST
    assert first.id == "hour:2026-11-01T01:00-04:00"
    assert second.id == "hour:2026-11-01T01:00-05:00"
    assert first.end == second.start


def test_hours_in_a_half_hour_zone_start_on_the_local_hour() -> None:
    period = Window.hour("Asia/Kolkata").period(datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    assert period.id == "hour:2026-11-23T15:00+05:30"
    assert period.start == datetime(2026, 11, 23, 9, 30, tzinfo=UTC).timestamp()


def test_weeks_start_on_the_chosen_day() -> None:
    monday_weeks = Window.week()
    sunday_weeks = Window.week(week_start=6)
    wednesday = ts(2026, 11, 25)
    assert monday_weeks.period(wednesday).id == "week:2026-11-23"
    assert sunday_weeks.period(wednesday).id == "week:2026-11-22"
    across_year = monday_weeks.period(ts(2027, 1, 1))
    assert across_year.id == "week:2026-12-28"
    assert across_year.end == ts(2027, 1, 4)


def test_custom_periods_count_from_the_anchor() -> None:
    six_hours = Window.every(timedelta(hours=6), name="6h")
    period = six_hours.period(ts(2026, 11, 23, 14, 5))
    assert period.id == "6h:2026-11-23T12:00+00:00"
    assert (period.start, period.end) == (ts(2026, 11, 23, 12), ts(2026, 11, 23, 18))
    anchored = Window.every(timedelta(days=7), anchor=datetime(2026, 11, 4, tzinfo=UTC))
    assert anchored.name == "604800s"
    assert anchored.period(ts(2026, 11, 23)).start == ts(2026, 11, 18)


def test_run_window_is_keyed_by_run_id() -> None:
    period = Window.run().period(0, run_id="abc")
    assert (period.id, period.start, period.end) == ("run:abc", None, None)
    assert period.contains(1e12)
    with pytest.raises(ValueError, match="run id"):
        Window.run().period(0)


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="time zone"):
        Window.day("Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="whole number of seconds"):
        Window.every(timedelta(milliseconds=10))
    with pytest.raises(ValueError, match="whole number of seconds"):
        Window.every(timedelta(seconds=1.5))
    with pytest.raises(ValueError, match="window name"):
        Window.every(timedelta(hours=1), name="a b")
    with pytest.raises(ValueError, match="naive"):
        Window.day().period(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="week_start"):
        Window.week(week_start=7)


ZONES = ["UTC", "America/New_York", "Europe/Paris", "Asia/Kolkata", "America/Santiago",
         "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Tokyo"]


def transitions_2026(zone: str) -> list[int]:
    """The instants (to the 15 minutes) at which ``zone`` changed its UTC offset in 2026."""
    tz = ZoneInfo(zone)
    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    found, last = [], datetime.fromtimestamp(start, tz).utcoffset()
    for at in range(start, start + 366 * 86400, 900):
        offset = datetime.fromtimestamp(at, tz).utcoffset()
        if offset != last:
            found.append(at)
            last = offset
    return found


NEAR_SHIFTS = st.sampled_from([(zone, t) for zone in ZONES for t in transitions_2026(zone)])


@st.composite
def instants(draw: st.DrawFn) -> tuple[str, int]:
    """Any instant in any zone, or one within two hours of that zone's clock change."""
    if draw(st.booleans()):
        return draw(st.sampled_from(ZONES)), draw(st.integers(0, 4_102_444_800))
    zone, shift = draw(NEAR_SHIFTS)
    return zone, shift + draw(st.integers(-7200, 7200))


@settings(max_examples=400, deadline=None)
@given(case=instants(), kind=st.sampled_from(["hour", "day", "week", "month"]))
def test_periods_tile_time_without_gaps_or_overlaps(case: tuple[str, int], kind: str) -> None:
    zone, at = case
    window: Window = getattr(Window, kind)(zone)
    period = window.period(at)
    assert period.start is not None
    assert period.end is not None
    assert period.start <= at < period.end
    assert window.period(period.start) == period
    assert window.period(period.end - 0.001) == period
    following = window.period(period.end)
    assert following.start == period.end
    assert following.id != period.id
    assert window.period(period.start - 0.001).id != period.id


def test_a_half_hour_shift_cuts_the_hour_and_hours_still_tile() -> None:
    """Regression guard: Lord Howe Island moves its clocks by 30 minutes; the hour that
    contains the shift must still contain every instant given to it."""
    hour = Window.hour("Australia/Lord_Howe")
    fall_back = datetime(2026, 4, 4, 15, 0, tzinfo=UTC)  # 02:00 +11:00 -> 01:30 +10:30
    before = hour.period(fall_back.timestamp() - 60)
    fragment = hour.period(fall_back)
    after = hour.period(fall_back.timestamp() + 1800)
    assert before.id == "hour:2026-04-05T01:00+11:00"
    assert fragment.id == "hour:2026-04-05T01:30+10:30"
    assert (before.end, fragment.start) == (fall_back.timestamp(), fall_back.timestamp())
    assert fragment.end == after.start == fall_back.timestamp() + 1800
    assert after.id == "hour:2026-04-05T02:00+10:30"
    spring = datetime(2026, 10, 3, 15, 30, tzinfo=UTC)  # 02:00 +10:30 -> 02:30 +11:00
    cut = hour.period(spring.timestamp() + 60)
    assert (cut.id, cut.start, cut.end) == (
        "hour:2026-10-04T02:30+11:00", spring.timestamp(), spring.timestamp() + 1800)
    assert hour.period(spring.timestamp() - 1).end == spring.timestamp()
