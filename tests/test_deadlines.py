"""Tests for bot.deadlines: working-hours deadlines in Vietnam's calendar.

Expected values are written out as literal local datetimes (Asia/Ho_Chi_Minh, UTC+7,
no DST) so a wrong answer cannot hide behind the code under test. The random tests
compare against a deliberately naive minute-by-minute reference written here.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays
import pytest

from bot.deadlines import WorkingCalendar

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
ICT = timezone(timedelta(hours=7))  # Vietnam has kept a fixed +07:00 since 1975


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=HCM)


@pytest.fixture(scope="module")
def cal() -> WorkingCalendar:
    return WorkingCalendar(timezone=HCM)


# --- what the holidays package says about Vietnam ------------------------------------


def test_vn_tet_2026_and_2027_as_given_by_holidays_package():
    # Documents the data the deadlines rely on (holidays 0.109). If a newer release
    # changes these, the deadline tests below need revisiting, not just this one.
    vn = holidays.country_holidays("VN", years=[2026, 2027])
    tet_2026 = sorted(d for d, name in vn.items() if d.year == 2026 and "Lunar New Year" in name)
    tet_2027 = sorted(d for d, name in vn.items() if d.year == 2027 and "Lunar New Year" in name)
    # 2026: Mon 16 Feb (eve) .. Fri 20 Feb (4th day); Tết itself is Tue 17 Feb.
    assert tet_2026 == [date(2026, 2, 16) + timedelta(days=i) for i in range(5)]
    # 2027: Thu 4 Feb (29th of the last lunar month) .. Wed 10 Feb (5th day);
    # Tết itself is Sat 6 Feb.
    assert tet_2027 == [date(2027, 2, 4) + timedelta(days=i) for i in range(7)]
    assert vn[date(2027, 2, 6)] == "Lunar New Year"


def test_vn_other_public_holidays_2026_2027():
    vn = holidays.country_holidays("VN", years=[2026, 2027])
    for day in [
        date(2026, 4, 27),  # Hùng Kings (Sun 26 Apr) observed on Monday
        date(2026, 4, 30),
        date(2026, 5, 1),
        date(2026, 8, 31),  # bridge day, swapped with Saturday 22 Aug
        date(2026, 9, 1),
        date(2026, 9, 2),
        date(2026, 11, 24),  # Vietnam Cultural Day
        date(2027, 4, 30),
        date(2027, 5, 3),  # Labour Day falls on a Saturday, observed Monday
        date(2027, 9, 2),
        date(2027, 9, 3),
    ]:
        assert day in vn, day
    # The package records the bridge day off but not the Saturday worked for it:
    # that make-up day has to be configured through extra_working_days.
    assert date(2026, 8, 22) not in vn


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 11, 20), True),  # ordinary Friday
        (date(2026, 11, 21), False),  # Saturday
        (date(2026, 11, 22), False),  # Sunday
        (date(2026, 11, 24), False),  # Vietnam Cultural Day
        (date(2027, 2, 3), True),  # last working day before Tết 2027
        (date(2027, 2, 4), False),
        (date(2027, 2, 10), False),
        (date(2027, 2, 11), True),  # first working day after Tết 2027
        (date(2026, 9, 2), False),  # National Day
        (date(2026, 4, 30), False),  # Reunification Day
        (date(2026, 5, 1), False),  # Labour Day
        (date(2027, 5, 3), False),  # Labour Day observed
    ],
)
def test_is_working_day(cal, day, expected):
    assert cal.is_working_day(day) is expected


def test_is_working_day_rejects_datetime(cal):
    with pytest.raises(TypeError):
        cal.is_working_day(local(2026, 11, 20, 9))


# --- add_working_hours: table of exact answers ----------------------------------------


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        pytest.param(local(2026, 11, 20, 16, 30), 8, local(2026, 11, 23, 16, 30), id="fri-1630+8h->mon"),
        pytest.param(local(2026, 11, 16, 11, 30), 1, local(2026, 11, 16, 13, 30), id="across-lunch"),
        pytest.param(local(2026, 11, 16, 12, 30), 1, local(2026, 11, 16, 14, 0), id="filed-in-lunch"),
        pytest.param(local(2026, 11, 17, 18, 0), 2, local(2026, 11, 18, 10, 0), id="after-hours"),
        pytest.param(local(2026, 11, 18, 6, 0), 1, local(2026, 11, 18, 9, 0), id="before-hours"),
        pytest.param(local(2026, 11, 16, 8, 0), 8, local(2026, 11, 16, 17, 0), id="exactly-day-end"),
        pytest.param(local(2026, 11, 16, 8, 0), 4, local(2026, 11, 16, 12, 0), id="exactly-morning-end"),
        pytest.param(local(2026, 11, 16, 16, 0), 1, local(2026, 11, 16, 17, 0), id="last-hour"),
        pytest.param(local(2026, 11, 16, 8, 0), 16, local(2026, 11, 17, 17, 0), id="two-full-days"),
        pytest.param(local(2026, 11, 16, 9, 0), 0.5, local(2026, 11, 16, 9, 30), id="half-hour"),
        pytest.param(local(2026, 11, 16, 11, 45), 0.25, local(2026, 11, 16, 12, 0), id="quarter-to-noon"),
        pytest.param(local(2026, 11, 16, 11, 45), 0.5, local(2026, 11, 16, 13, 15), id="half-over-lunch"),
        pytest.param(local(2026, 11, 16, 9, 0, 17), 1 / 60, local(2026, 11, 16, 9, 1, 17), id="seconds-kept"),
        pytest.param(local(2026, 11, 16, 9, 0), 40, local(2026, 11, 23, 9, 0), id="one-week"),
        # Monday 16:30 + 8h would be Tuesday 16:30, but Tue 24 Nov is Vietnam Cultural Day.
        pytest.param(local(2026, 11, 23, 16, 30), 8, local(2026, 11, 25, 16, 30), id="cultural-day"),
    ],
)
def test_add_working_hours_table(cal, start, hours, due):
    result = cal.add_working_hours(start, hours)
    assert result == due
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("start", "due"),
    [
        pytest.param(local(2026, 11, 20, 20, 0), local(2026, 11, 23, 8, 0), id="fri-evening->mon-0800"),
        pytest.param(local(2026, 11, 21, 10, 0), local(2026, 11, 23, 8, 0), id="saturday"),
        pytest.param(local(2026, 11, 16, 8, 0), local(2026, 11, 16, 8, 0), id="exactly-opening"),
        pytest.param(local(2026, 11, 16, 10, 7, 3), local(2026, 11, 16, 10, 7, 3), id="inside-hours"),
        pytest.param(local(2026, 11, 16, 12, 0), local(2026, 11, 16, 13, 0), id="at-noon"),
        pytest.param(local(2026, 11, 16, 17, 0), local(2026, 11, 17, 8, 0), id="at-closing"),
        pytest.param(local(2027, 2, 3, 17, 0), local(2027, 2, 11, 8, 0), id="tet-2027"),
    ],
)
def test_zero_hours_is_next_working_moment(cal, start, due):
    assert cal.add_working_hours(start, 0) == due
    assert cal.next_working_moment(start) == due


def test_input_in_utc_gives_same_answer(cal):
    # Friday 16:30 in Hanoi is 09:30 UTC; due Monday 16:30 local = 09:30 UTC.
    start = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    assert cal.add_working_hours(start, 8) == datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    # Input in another zone: Friday 03:30 in Paris (UTC+1) is Friday 09:30 in Hanoi.
    paris = datetime(2026, 11, 20, 3, 30, tzinfo=ZoneInfo("Europe/Paris"))
    # 2.5h + 4h on Friday, the last 1.5h on Monday morning.
    assert cal.add_working_hours(paris, 8) == local(2026, 11, 23, 9, 30)


# --- holidays ---------------------------------------------------------------------------


def test_tet_2027_holiday_eve(cal):
    # Wed 3 Feb 2027 is the last working day before Tết (Thu 4 .. Wed 10 Feb are off).
    start = local(2027, 2, 3, 16, 0)
    # 1h on Wednesday (16-17), then 4h (08-12) + 3h (13-16) on Thu 11 Feb.
    assert cal.add_working_hours(start, 8) == local(2027, 2, 11, 16, 0)
    assert cal.add_working_hours(start, 1) == local(2027, 2, 3, 17, 0)
    assert cal.add_working_hours(start, 1.5) == local(2027, 2, 11, 8, 30)


def test_tet_2026_holiday_eve(cal):
    # Fri 13 Feb 2026 is the last working day; Mon 16 .. Fri 20 Feb are off.
    assert cal.add_working_hours(local(2026, 2, 13, 16, 0), 8) == local(2026, 2, 23, 16, 0)


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        # 2027: National Day Thu 2 + Fri 3 Sep -> straight to Monday.
        pytest.param(local(2027, 9, 1, 16, 0), 2, local(2027, 9, 6, 9, 0), id="national-day-2027"),
        # 2026: Mon 31 Aug (bridge), Tue 1 and Wed 2 Sep off.
        pytest.param(local(2026, 8, 28, 16, 0), 2, local(2026, 9, 3, 9, 0), id="national-day-2026"),
        # 2026: Thu 30 Apr + Fri 1 May off.
        pytest.param(local(2026, 4, 29, 16, 0), 2, local(2026, 5, 4, 9, 0), id="30-4-and-1-5-2026"),
        # 2027: Fri 30 Apr off, Sat 1 May observed on Mon 3 May.
        pytest.param(local(2027, 4, 29, 16, 0), 2, local(2027, 5, 4, 9, 0), id="30-4-and-1-5-2027"),
        # 2026: Hùng Kings observed on Mon 27 Apr.
        pytest.param(local(2026, 4, 24, 16, 0), 2, local(2026, 4, 28, 9, 0), id="hung-kings-observed"),
        # New Year's Day 2027 is a Friday.
        pytest.param(local(2026, 12, 31, 16, 0), 2, local(2027, 1, 4, 9, 0), id="new-year-2027"),
    ],
)
def test_public_holidays_are_skipped(cal, start, hours, due):
    assert cal.add_working_hours(start, hours) == due


def test_no_holidays_country_works_through_tet():
    plain = WorkingCalendar(timezone=HCM, holidays_country=None)
    assert plain.add_working_hours(local(2027, 2, 3, 16, 0), 8) == local(2027, 2, 4, 16, 0)


def test_make_up_saturday_counts():
    # The 2026 swap: Saturday 22 Aug is worked in exchange for Monday 31 Aug.
    swapped = WorkingCalendar(timezone=HCM, extra_working_days=frozenset({date(2026, 8, 22)}))
    assert swapped.is_working_day(date(2026, 8, 22))
    assert swapped.add_working_hours(local(2026, 8, 21, 16, 0), 2) == local(2026, 8, 22, 9, 0)
    # Filed on the make-up Saturday evening: Sunday is still off.
    assert swapped.add_working_hours(local(2026, 8, 22, 18, 0), 1) == local(2026, 8, 24, 9, 0)


def test_extra_working_day_overrides_holiday_and_day_off():
    day = date(2027, 2, 10)  # Fifth day of Tết
    cal = WorkingCalendar(
        timezone=HCM, extra_working_days=frozenset({day}), extra_days_off=frozenset({day})
    )
    assert cal.is_working_day(day)
    assert cal.add_working_hours(local(2027, 2, 3, 16, 0), 8) == local(2027, 2, 10, 16, 0)


def test_extra_day_off_is_skipped():
    cal = WorkingCalendar(timezone=HCM, extra_days_off=frozenset({date(2026, 11, 18)}))
    assert not cal.is_working_day(date(2026, 11, 18))
    assert cal.add_working_hours(local(2026, 11, 17, 16, 0), 2) == local(2026, 11, 19, 9, 0)
    # Monday extra off plus Tuesday Cultural Day: Friday 16:30 + 8h lands on Wednesday.
    cal2 = WorkingCalendar(timezone=HCM, extra_days_off=frozenset({date(2026, 11, 23)}))
    assert cal2.add_working_hours(local(2026, 11, 20, 16, 30), 8) == local(2026, 11, 25, 16, 30)


def test_only_extra_working_days_then_runs_out():
    days = frozenset({date(2026, 11, 21), date(2026, 11, 28)})
    cal = WorkingCalendar(timezone=HCM, working_days=frozenset(), extra_working_days=days)
    assert cal.add_working_hours(local(2026, 11, 16, 9, 0), 10) == local(2026, 11, 28, 10, 0)
    assert cal.working_hours_between(local(2026, 11, 1), local(2026, 12, 31)) == 16.0
    with pytest.raises(ValueError, match="no working day"):
        cal.add_working_hours(local(2026, 11, 16, 9, 0), 17)


def test_real_elapsed_time_across_dst_change():
    # Europe/Berlin skips 02:00-03:00 on Sun 29 Mar 2026: a 01:00-04:00 shift is 2 real hours.
    berlin = ZoneInfo("Europe/Berlin")
    cal = WorkingCalendar(
        timezone=berlin,
        working_hours=((time(1, 0), time(4, 0)),),
        working_days=frozenset(range(1, 8)),
        holidays_country=None,
    )
    start = datetime(2026, 3, 29, 1, 0, tzinfo=berlin)
    assert cal.add_working_hours(start, 2) == datetime(2026, 3, 29, 4, 0, tzinfo=berlin)
    assert cal.working_hours_between(start, datetime(2026, 3, 30, 1, 0, tzinfo=berlin)) == 2.0


# --- large counts and an independent reference ---------------------------------------

_REF_HOLIDAYS = frozenset(holidays.country_holidays("VN", years=range(2025, 2030)))
_MINUTE = timedelta(minutes=1)


def _ref_working_minute(t: datetime, days_off=frozenset(), make_up=frozenset()) -> bool:
    """Whether the minute starting at naive local time `t` is working time."""
    d = t.date()
    if d not in make_up and (d.isoweekday() > 5 or d in _REF_HOLIDAYS or d in days_off):
        return False
    return time(8) <= t.time() < time(12) or time(13) <= t.time() < time(17)


def _ref_add(start: datetime, minutes: int, **kw) -> datetime:
    """Naive reference: walk minute by minute in local wall-clock time."""
    t = start.astimezone(ICT).replace(tzinfo=None)
    assert t.second == 0 and t.microsecond == 0
    if minutes == 0:
        while not _ref_working_minute(t, **kw):
            t += _MINUTE
        return t.replace(tzinfo=ICT)
    counted = 0
    while True:
        if _ref_working_minute(t, **kw):
            counted += 1
            if counted == minutes:
                return (t + _MINUTE).replace(tzinfo=ICT)
        t += _MINUTE


def _ref_between(start: datetime, end: datetime) -> float:
    t = start.astimezone(ICT).replace(tzinfo=None)
    stop = end.astimezone(ICT).replace(tzinfo=None)
    minutes = 0
    while t < stop:
        minutes += _ref_working_minute(t)
        t += _MINUTE
    return minutes / 60


def _random_start(rng: random.Random, first: datetime, days: int) -> datetime:
    return first + timedelta(minutes=rng.randrange(days * 24 * 60))


def test_thousand_hours_matches_reference(cal):
    start = local(2026, 11, 20, 16, 30)
    due = cal.add_working_hours(start, 1000)
    assert due == _ref_add(start, 1000 * 60)
    # 125 working days of 8h across Tết 2027: 16:30 on Fri 28 May 2027.
    assert due == local(2027, 5, 28, 16, 30)
    assert cal.working_hours_between(start, due) == 1000.0


def test_very_large_count_terminates(cal):
    due = cal.add_working_hours(local(2026, 1, 5, 8, 0), 100_000)
    assert due.year > 2070
    assert cal.working_hours_between(local(2026, 1, 5, 8, 0), due) == 100_000.0


@pytest.mark.parametrize(
    ("first", "days"),
    [
        pytest.param(local(2027, 1, 25), 20, id="around-tet-2027"),
        pytest.param(local(2026, 4, 20), 16, id="around-30-4-2026"),
        pytest.param(local(2026, 8, 24), 14, id="around-2-9-2026"),
    ],
)
def test_random_starts_match_minute_reference(cal, first, days):
    rng = random.Random(f"deadlines-{first.date()}")
    for _ in range(25):
        start = _random_start(rng, first, days)
        minutes = rng.choice([0, 1, 15, 30, 60, 239, 240, 241, 480, rng.randrange(3001)])
        got = cal.add_working_hours(start, minutes / 60)
        assert got == _ref_add(start, minutes), (start, minutes)


def test_random_with_extra_days_match_reference():
    off = frozenset({date(2026, 11, 18), date(2026, 11, 27)})
    make_up = frozenset({date(2026, 11, 21), date(2026, 11, 24)})  # a Saturday and a holiday
    cal = WorkingCalendar(timezone=HCM, extra_days_off=off, extra_working_days=make_up)
    rng = random.Random(1124)
    for _ in range(40):
        start = _random_start(rng, local(2026, 11, 14), 14)
        minutes = rng.randrange(50 * 60 + 1)
        expected = _ref_add(start, minutes, days_off=off, make_up=make_up)
        assert cal.add_working_hours(start, minutes / 60) == expected, (start, minutes)


# --- working_hours_between --------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "hours"),
    [
        (local(2026, 11, 20, 16, 30), local(2026, 11, 23, 16, 30), 8.0),
        (local(2026, 11, 16, 11, 30), local(2026, 11, 16, 13, 30), 1.0),
        (local(2026, 11, 16, 12, 10), local(2026, 11, 16, 12, 50), 0.0),
        (local(2026, 11, 21), local(2026, 11, 22, 23, 59), 0.0),  # weekend
        (local(2027, 2, 3, 16, 0), local(2027, 2, 11, 16, 0), 8.0),  # across Tết
        (local(2026, 11, 16, 8, 0), local(2026, 11, 16, 8, 0), 0.0),
        (local(2026, 11, 23, 16, 30), local(2026, 11, 20, 16, 30), -8.0),  # overdue: signed
    ],
)
def test_working_hours_between_table(cal, start, end, hours):
    assert cal.working_hours_between(start, end) == hours


@pytest.mark.parametrize(
    "start",
    [
        local(2026, 11, 16, 8, 0),
        local(2026, 11, 16, 11, 59, 30),
        local(2026, 11, 16, 12, 30),
        local(2026, 11, 20, 20, 0),
        local(2027, 2, 3, 16, 0),
        local(2027, 2, 6, 10, 0),
        local(2026, 4, 29, 9, 17, 41),
        datetime(2026, 8, 31, 23, 5, tzinfo=UTC),
    ],
)
@pytest.mark.parametrize("hours", [0, 0.25, 1, 2.5, 4, 7.75, 8, 9, 40, 123.5, 1000])
def test_between_is_inverse_of_add(cal, start, hours):
    assert cal.working_hours_between(start, cal.add_working_hours(start, hours)) == hours


def test_between_inverse_random_fractions(cal):
    rng = random.Random(2027)
    for _ in range(200):
        start = local(2026, 1, 1) + timedelta(seconds=rng.randrange(2 * 365 * 86400))
        hours = rng.uniform(0, 300)
        due = cal.add_working_hours(start, hours)
        assert cal.working_hours_between(start, due) == pytest.approx(hours, abs=1e-9)


def test_between_matches_reference(cal):
    rng = random.Random(30_04)
    for _ in range(20):
        start = _random_start(rng, local(2026, 4, 20), 14)
        end = start + timedelta(minutes=rng.randrange(6 * 24 * 60))
        assert cal.working_hours_between(start, end) == pytest.approx(_ref_between(start, end), abs=1e-12)


# --- invalid input --------------------------------------------------------------------


def test_naive_datetimes_rejected(cal):
    naive = datetime(2026, 11, 16, 9, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.add_working_hours(naive, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.next_working_moment(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.working_hours_between(naive, local(2026, 11, 16, 10))
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.working_hours_between(local(2026, 11, 16, 10), naive)


@pytest.mark.parametrize("hours", [-1, -0.001, float("nan"), float("inf"), "8", True])
def test_bad_hours_rejected(cal, hours):
    with pytest.raises(ValueError):
        cal.add_working_hours(local(2026, 11, 16, 9), hours)


def test_from_config_builds_equal_calendar():
    built = WorkingCalendar.from_config(
        timezone="Asia/Ho_Chi_Minh",
        working_hours=["13:00-17:00", "08:00-12:00"],
        working_days=[1, 2, 3, 4, 5],
        holidays_country="VN",
        extra_days_off=["2026-11-18"],
        extra_working_days=[date(2026, 8, 22), "2026-11-21"],
    )
    direct = WorkingCalendar(
        timezone=HCM,
        extra_days_off=frozenset({date(2026, 11, 18)}),
        extra_working_days=frozenset({date(2026, 8, 22), date(2026, 11, 21)}),
    )
    assert built == direct
    assert hash(built) == hash(direct)
    assert built.add_working_hours(local(2026, 11, 17, 16, 0), 2) == local(2026, 11, 19, 9, 0)


def test_from_config_empty_country_means_no_holidays():
    cal = WorkingCalendar.from_config("Asia/Ho_Chi_Minh", ["08:00-17:00"], [1, 2, 3, 4, 5], "", [], [])
    assert cal.holidays_country is None
    assert cal.is_working_day(date(2027, 2, 8))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "Mars/Olympus_Mons"),
        ({"working_hours": ["08:00-12:00", "8-12"]}, "8-12"),
        ({"working_hours": ["08:00-25:00"]}, "08:00-25:00"),
        ({"working_hours": ["12:00-08:00"]}, "12:00-08:00"),
        ({"working_hours": ["08:00-08:00"]}, "08:00-08:00"),
        ({"working_hours": ["08:00-12:00", "11:00-13:00"]}, "11:00-13:00"),
        ({"working_hours": "08:00-12:00"}, "08:00-12:00"),
        ({"working_hours": []}, "working_hours"),
        ({"working_days": [1, 2, 8]}, "8"),
        ({"working_days": [0]}, "0"),
        ({"working_days": ["Mon"]}, "Mon"),
        ({"working_days": []}, "no working days"),
        ({"holidays_country": "XX"}, "XX"),
        ({"extra_days_off": ["2026-13-01"]}, "2026-13-01"),
        ({"extra_working_days": ["next saturday"]}, "next saturday"),
        ({"extra_days_off": [20261118]}, "20261118"),
    ],
)
def test_from_config_rejects_bad_values(kwargs, named):
    config = {
        "timezone": "Asia/Ho_Chi_Minh",
        "working_hours": ["08:00-12:00", "13:00-17:00"],
        "working_days": [1, 2, 3, 4, 5],
        "holidays_country": "VN",
        "extra_days_off": [],
        "extra_working_days": [],
    }
    config.update(kwargs)
    with pytest.raises(ValueError) as excinfo:
        WorkingCalendar.from_config(**config)
    assert named in str(excinfo.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"working_hours": ()},
        {"working_hours": ((time(12), time(8)),)},
        {"working_hours": ((time(8), time(12)), (time(11), time(13)))},
        {"working_days": frozenset()},
        {"working_days": frozenset({9})},
        {"holidays_country": "ZZ"},
    ],
)
def test_direct_construction_rejects_bad_config(kwargs):
    with pytest.raises(ValueError):
        WorkingCalendar(timezone=HCM, **kwargs)


def test_empty_working_days_allowed_with_make_up_days():
    cal = WorkingCalendar(
        timezone=HCM, working_days=frozenset(), extra_working_days=frozenset({date(2026, 11, 21)})
    )
    assert cal.is_working_day(date(2026, 11, 21))
    assert not cal.is_working_day(date(2026, 11, 20))


# --- subtract_working_hours: when to remind before a deadline --------------------------------

@pytest.mark.parametrize("due_local, hours, expected_local", [
    ((2026, 11, 24 + 1, 17, 0), 2, (2026, 11, 25, 15, 0)),     # same afternoon
    ((2026, 11, 25, 14, 0), 2, (2026, 11, 25, 11, 0)),         # across the lunch break
    ((2026, 11, 26, 9, 0), 2, (2026, 11, 25, 16, 0)),          # into the previous day
    ((2026, 11, 30, 9, 0), 2, (2026, 11, 27, 16, 0)),          # Monday morning -> Friday
    ((2026, 11, 25, 16, 0), 0, (2026, 11, 25, 16, 0)),         # zero hours: the deadline itself
])
def test_subtract_working_hours(due_local, hours, expected_local):
    cal = WorkingCalendar.from_config(timezone="Asia/Ho_Chi_Minh")
    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    due = datetime(*due_local, tzinfo=tz)
    assert cal.subtract_working_hours(due, hours) == datetime(*expected_local, tzinfo=tz)


def test_subtract_is_the_inverse_of_add():
    cal = WorkingCalendar.from_config(timezone="Asia/Ho_Chi_Minh")
    rng = random.Random(7)
    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    for _ in range(200):
        start = datetime(2026, 1, 1, tzinfo=tz) + timedelta(minutes=rng.randrange(0, 500 * 24 * 60))
        start = cal.next_working_moment(start)
        hours = rng.choice([0.5, 1, 2, 3.25, 8, 16, 40])
        due = cal.add_working_hours(start, hours)
        back = cal.subtract_working_hours(due, hours)
        assert cal.working_hours_between(back, due) == pytest.approx(hours)
        assert cal.next_working_moment(back) == start or back == start


# --- a desk open around the clock: "24:00" ends a day ----------------------------------------

def test_an_office_open_around_the_clock_counts_every_hour():
    cal = WorkingCalendar.from_config("Asia/Ho_Chi_Minh", ["00:00-24:00"], [1, 2, 3, 4, 5, 6, 7], "", [], [])
    # Saturday 21:00 + 4 hours is Sunday 01:00: nights and weekends count.
    assert cal.add_working_hours(local(2026, 11, 7, 21, 0), 4) == local(2026, 11, 8, 1, 0)
    assert cal.working_hours_between(local(2026, 11, 7, 21, 0), local(2026, 11, 9, 21, 0)) == 48.0
    assert cal.subtract_working_hours(local(2026, 11, 8, 1, 0), 4) == local(2026, 11, 7, 21, 0)
    # A deadline that uses up the day is due at midnight, the end of its last interval.
    assert cal.add_working_hours(local(2026, 11, 7, 20, 0), 4) == local(2026, 11, 8, 0, 0)


def test_an_evening_shift_may_end_at_midnight():
    cal = WorkingCalendar.from_config("Asia/Ho_Chi_Minh", ["08:00-12:00", "18:00-24:00"])
    assert cal.add_working_hours(local(2026, 11, 16, 23, 0), 2) == local(2026, 11, 17, 9, 0)


@pytest.mark.parametrize("interval", ["00:00-24:01", "24:00-24:00", "22:00-25:00", "12:00-24:60"])
def test_nothing_runs_past_the_end_of_the_day(interval):
    with pytest.raises(ValueError) as error:
        WorkingCalendar.from_config("Asia/Ho_Chi_Minh", [interval])
    assert interval in str(error.value)
