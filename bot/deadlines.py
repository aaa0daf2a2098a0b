"""Working-hours calendar used to compute when a complaint must be answered.

The administration's answer deadlines are counted in *working* hours: time only runs
inside the office's working intervals (by default 08:00-12:00 and 13:00-17:00), on
working weekdays, and not on public holidays or declared days off. Make-up working
days (a Saturday worked in exchange for a bridge day) can be added explicitly.

``WorkingCalendar`` answers four questions: is a date a working day, when does a
deadline of N working hours starting at some moment fall, how many working hours lie
between two moments, and when does the next working moment start. It never reads the
clock; the caller always passes the moment in. Inputs may be in any timezone, results
are always in UTC.

Working hours are parsed once (``working_hours.WorkingHours.parse``): the configuration
holds the parsed value, and "24:00" ends a day, so an office open around the clock is
``00:00-24:00``. The deadline policy (how many working hours a unit and category get)
lives here, beside the calendar that counts them.

Intervals are half-open, ``[start, end)``: 17:00 is not itself a working moment, so
``next_working_moment`` at 17:00 is the next morning. A deadline that uses up the
last minute of an interval is still due at the interval's end (8 working hours from
Monday 08:00 is Monday 17:00), because the time is spent by then.
"""

from __future__ import annotations

import math
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Iterable, Iterator

import holidays

from bot.working_hours import DAY, WorkingHours, hhmm

_DEFAULT_WORKING_HOURS = WorkingHours().intervals
_DEFAULT_WORKINGDAYS: frozenset[int] = frozenset({1, 2, 3, 4, 5})

# A calendar whose working weekdays are all cancelled by days off would otherwise make
# the search for the next working day loop forever; ten years without a single
# working day can only be a configuration mistake.
_MAX_IDLEDAYS = 3660
_ANSWERS_KEPT = 4096

@dataclass(frozen=True)
class WorkingCalendar:
    """Office working time in one timezone, with public holidays and declared exceptions."""

    timezone: tzinfo  # normally a zoneinfo.ZoneInfo such as ZoneInfo("Asia/Ho_Chi_Minh")
    # Offsets from local midnight (``WorkingHours.intervals``); (time, time) pairs are taken too.
    working_hours: tuple[tuple[timedelta, timedelta], ...] = _DEFAULT_WORKING_HOURS
    working_days: frozenset[int] = _DEFAULT_WORKINGDAYS  # ISO weekdays, 1=Mon .. 7=Sun
    holidays_country: str | None = "VN"  # code for the `holidays` package; None = none
    extra_days_off: frozenset[date] = frozenset()
    extra_working_days: frozenset[date] = frozenset()  # worked with the normal hours
    # Public holidays per year, filled on first use. Kept out of eq/hash/repr so two
    # calendars with the same settings stay equal whatever they have looked up.
    _holiday_cache: dict[int, frozenset[date]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    # Answers already reckoned, keyed by (operation, moment, hours): a sweep of a backlog asks
    # the same few again and again (every complaint's new deadline starts now). Bounded.
    _answers: dict[tuple[str, datetime, float], datetime] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        """Normalise the collections and reject configurations that cannot work."""
        if not isinstance(self.timezone, tzinfo):
            raise ValueError(f"timezone must be a tzinfo such as ZoneInfo, got {self.timezone!r}")

        # Callers building the calendar by hand often pass lists or sets; freezing
        # them here keeps the dataclass hashable and immune to later mutation.
        pairs = [tuple(pair) for pair in self.working_hours]
        if not pairs:
            raise ValueError("working_hours is empty: a calendar needs at least one interval")
        offsets = []
        for interval in pairs:
            if len(interval) != 2 or not all(isinstance(t, (time, timedelta)) for t in interval):
                raise ValueError(f"working_hours entry {interval!r} is not a (time, time) pair")
            if any(isinstance(t, time) and t.tzinfo is not None for t in interval):
                raise ValueError(
                    f"working_hours entry {_fmt_interval(interval)} must use naive times; "
                    "the calendar's timezone applies"
                )
            start, end = (_as_offset(t) for t in interval)
            if not timedelta(0) <= start < end <= DAY:
                raise ValueError(
                    f"working_hours entry {_fmt_interval(interval)} does not end after it starts"
                )
            offsets.append((start, end))
        intervals = tuple(sorted(offsets))
        for previous, current in zip(intervals, intervals[1:]):
            if current[0] < previous[1]:
                raise ValueError(
                    f"working_hours entries {_fmt_interval(previous)} and "
                    f"{_fmt_interval(current)} overlap"
                )
        object.__setattr__(self, "working_hours", intervals)

        days = frozenset(self.working_days)
        for weekday in days:
            if isinstance(weekday, bool) or not isinstance(weekday, int) or not 1 <= weekday <= 7:
                raise ValueError(f"working_days entry {weekday!r} is not an ISO weekday 1..7")
        object.__setattr__(self, "working_days", days)

        for name in ("extra_days_off", "extra_working_days"):
            dates = frozenset(getattr(self, name))
            for day in dates:
                if isinstance(day, datetime) or not isinstance(day, date):
                    raise ValueError(f"{name} entry {day!r} is not a date")
            object.__setattr__(self, name, dates)

        if not self.working_days and not self.extra_working_days:
            raise ValueError("no working days: working_days and extra_working_days are both empty")

        if self.holidays_country is not None:
            # Fail at startup rather than on the first complaint filed in a new year.
            if self.holidays_country not in holidays.list_supported_countries():
                raise ValueError(
                    f"holidays_country {self.holidays_country!r} is not supported "
                    "by the holidays package"
                )

    @classmethod
    def from_config(
        cls,
        timezone: str,
        working_hours: Iterable[str] | WorkingHours | None = None,
        working_days: Iterable[int] | None = None,
        holidays_country: str | None = "VN",
        extra_days_off: Iterable[date | str] = (),
        extra_working_days: Iterable[date | str] = (),
    ) -> WorkingCalendar:
        """Build a calendar from plain config values, e.g. strings read from a TOML file."""
        try:
            tz = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(f"unknown timezone {timezone!r}") from exc

        if working_hours is None:
            intervals = _DEFAULT_WORKING_HOURS
        elif isinstance(working_hours, WorkingHours):
            intervals = working_hours.intervals
        else:
            intervals = WorkingHours.parse(working_hours).intervals

        # Weekday values are checked in __post_init__, with the same message.
        days = _DEFAULT_WORKINGDAYS if working_days is None else frozenset(working_days)

        # TOML has no null, so an empty string is how a config file says "no holidays".
        country = holidays_country.strip().upper() if holidays_country else None

        return cls(
            timezone=tz,
            working_hours=intervals,
            working_days=days,
            holidays_country=country or None,
            extra_days_off=frozenset(_parse_date(v, "extra_days_off") for v in extra_days_off),
            extra_working_days=frozenset(
                _parse_date(v, "extra_working_days") for v in extra_working_days
            ),
        )

    def is_working_day(self, day: date) -> bool:
        """Tell whether work happens on this calendar date (a date, not a datetime)."""
        if isinstance(day, datetime) or not isinstance(day, date):
            # A datetime's date depends on its timezone; make the caller choose.
            raise TypeError(f"is_working_day takes a date, got {day!r}")
        if day in self.extra_working_days:
            return True
        return (
            day.isoweekday() in self.working_days
            and day not in self.extra_days_off
            and day not in self._public_holidays(day.year)
        )

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """Return the UTC moment at which `hours` working hours after `start` are used up."""
        return self._remembered("add", start, hours, self._add_working_hours)

    def _remembered(self, operation: str, moment: datetime, hours: float, reckon) -> datetime:
        if type(hours) not in (int, float):
            return reckon(moment, hours)  # refused there, as it should be
        key = (operation, moment, hours)
        found = self._answers.get(key)
        if found is None:
            found = reckon(moment, hours)
            if len(self._answers) >= _ANSWERS_KEPT:
                self._answers.clear()
            self._answers[key] = found
        return found

    def _add_working_hours(self, start: datetime, hours: float) -> datetime:
        _require_aware(start, "start")
        if isinstance(hours, bool) or not isinstance(hours, (int, float)):
            raise ValueError(f"hours must be a number, got {hours!r}")
        if not math.isfinite(hours) or hours < 0:
            raise ValueError(f"hours must be a finite number >= 0, got {hours!r}")
        # Counting in a timedelta keeps the arithmetic exact to the microsecond instead
        # of accumulating float error over hundreds of intervals.
        remaining = timedelta(hours=hours)
        cursor = start.astimezone(UTC)
        for begin, end in self._intervals_from(cursor):
            begin = max(begin, cursor)
            available = end - begin
            # "<=" is the exactly-at-end rule: a deadline that spends the last minute
            # of an interval is due at its end, not at the start of the next one.
            if remaining <= available:
                return begin + remaining
            remaining -= available
        raise AssertionError("unreachable: _intervals_from never ends on its own")

    def working_hours_between(self, start: datetime, end: datetime) -> float:
        """Return the working hours from `start` to `end`; negative if `end` is earlier."""
        _require_aware(start, "start")
        _require_aware(end, "end")
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if end < start:
            # Signed so that an overdue complaint can report by how much it is late.
            return -self.working_hours_between(end, start)
        total = timedelta()
        for begin, finish in self._intervals_from(start, stop=end):
            total += min(finish, end) - max(begin, start)
        return total / timedelta(hours=1)

    def subtract_working_hours(self, end: datetime, hours: float) -> datetime:
        """Return the UTC moment `hours` working hours before `end` (for reminders)."""
        return self._remembered("subtract", end, hours, self._subtract_working_hours)

    def _subtract_working_hours(self, end: datetime, hours: float) -> datetime:
        _require_aware(end, "end")
        if isinstance(hours, bool) or not isinstance(hours, (int, float)):
            raise ValueError(f"hours must be a number, got {hours!r}")
        if not math.isfinite(hours) or hours < 0:
            raise ValueError(f"hours must be a finite number >= 0, got {hours!r}")
        cursor = end.astimezone(UTC)
        remaining = timedelta(hours=hours)
        if not remaining:
            return cursor
        day = cursor.astimezone(self.timezone).date()
        for _ in range(_MAX_IDLEDAYS):
            if self.is_working_day(day):
                for local_start, local_end in reversed(self.working_hours):
                    begin = self._at(day, local_start)
                    finish = min(self._at(day, local_end), cursor)
                    if begin >= finish:
                        continue
                    if remaining <= finish - begin:
                        return finish - remaining
                    remaining -= finish - begin
            day -= timedelta(days=1)
        raise ValueError(f"calendar has no working time within {_MAX_IDLEDAYS} days before {end.isoformat()}")

    def next_working_moment(self, moment: datetime) -> datetime:
        """Return the first UTC moment at or after `moment` that lies inside working time."""
        return self.add_working_hours(moment, 0)

    def _at(self, day: date, offset: timedelta) -> datetime:
        # Built from the local wall clock and converted to UTC so a DST change shortens or
        # lengthens an interval by the real elapsed time; 24:00 is the next day's midnight.
        extra_days, rest = divmod(offset, DAY)
        local = datetime.combine(day + timedelta(days=extra_days), time(0), tzinfo=self.timezone) + rest
        return local.astimezone(UTC)

    def _public_holidays(self, year: int) -> frozenset[date]:
        if self.holidays_country is None:
            return frozenset()
        cached = self._holiday_cache.get(year)
        if cached is None:
            found = holidays.country_holidays(self.holidays_country, years=year)
            cached = frozenset(found.keys())
            self._holiday_cache[year] = cached
        return cached

    def _intervals_from(
        self, cursor: datetime, stop: datetime | None = None
    ) -> Iterator[tuple[datetime, datetime]]:
        # Yields the working intervals, in UTC, that end after `cursor`, in order; it
        # ends once past `stop`, or never when no stop is given.
        day = cursor.astimezone(self.timezone).date()
        if not self.is_working_day(day):
            day = self._following_working_day(day, stop)
        while day is not None:
            for local_start, local_end in self.working_hours:
                begin = self._at(day, local_start)
                end = self._at(day, local_end)
                if stop is not None and begin >= stop:
                    return
                if end > cursor and end > begin:
                    yield begin, end
            day = self._following_working_day(day, stop)

    def _following_working_day(self, day: date, stop: datetime | None) -> date | None:
        # With a stop, running out of working days just means no more working time in
        # the range, which is an answer rather than an error.
        if stop is None:
            return self._next_working_day(day)
        try:
            return self._next_working_day(day)
        except ValueError:
            return None

    def _next_working_day(self, day: date) -> date:
        if not self.working_days:
            # Only the listed make-up days are worked, so jump straight to the next one.
            later = [d for d in self.extra_working_days if d > day]
            if not later:
                raise ValueError(f"calendar has no working day after {day.isoformat()}")
            return min(later)
        candidate = day
        for _ in range(_MAX_IDLEDAYS):
            candidate += timedelta(days=1)
            if self.is_working_day(candidate):
                return candidate
        raise ValueError(
            f"calendar has no working day within {_MAX_IDLEDAYS} days after {day.isoformat()}"
        )


def _require_aware(moment: datetime, name: str) -> None:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, got {moment!r}")
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        # A naive time from a server in one zone and a citizen in another would give
        # deadlines hours off without any error, so refuse to guess.
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")


def _as_offset(moment: time | timedelta) -> timedelta:
    if isinstance(moment, timedelta):
        return moment
    return timedelta(hours=moment.hour, minutes=moment.minute, seconds=moment.second,
                     microseconds=moment.microsecond)


def _fmt_interval(interval: Iterable[time | timedelta]) -> str:
    return "-".join(t.strftime("%H:%M") if isinstance(t, time) else hhmm(t) if isinstance(t, timedelta)
                    else repr(t) for t in interval)


def _parse_date(value: date | str, name: str) -> date:
    if isinstance(value, datetime):
        raise ValueError(f"{name} entry {value!r} is a datetime; give a date")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"{name} entry {value!r} is not an ISO date (YYYY-MM-DD)") from exc
    raise ValueError(f"{name} entry {value!r} is not a date or ISO date string")


def deadline_hours(defaults: tuple[float, float],
                   overrides: Iterable[tuple[str | None, str | None, float | None, float | None]],
                   unit: str, category: str | None) -> tuple[float, float]:
    """Working hours to the first response and to resolution, for a unit and category.

    ``overrides`` are (unit, category, first response hours, resolution hours), None where
    an override leaves a value alone. The most specific override wins: unit and category,
    then category, then unit.
    """
    best = None
    for override_unit, override_category, first, resolution in overrides:
        if override_unit not in (None, unit) or override_category not in (None, category):
            continue
        rank = (override_unit is not None) + 2 * (override_category is not None)
        if best is None or rank > best[0]:
            best = (rank, first, resolution)
    if best is None:
        return defaults
    return best[1] or defaults[0], best[2] or defaults[1]
