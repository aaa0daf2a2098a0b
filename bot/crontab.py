"""Five-field crontab expressions, parsed once into a value the scheduler runs.

APScheduler 3 counts day-of-week numbers from 0 = Monday, where crontab counts from
0 = Sunday (7 is Sunday too): a crontab's "1-5" passed through as is would fire Tuesday
to Saturday. The day-of-week field is read here, the crontab way, into day names, which
both read alike; every other field is read by APScheduler's own parser. One difference
stays: when both day fields are restricted, cron fires on either, APScheduler on both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_FIELD_NAMES = {"minute": "minute", "hour": "hour", "day": "day of month", "month": "month",
                "day_of_week": "day of week"}


class CrontabError(ValueError):
    """An expression that is not a five-field crontab; the message says what is wrong."""


def _day(name: str, field: str) -> int:
    lowered = name.lower()
    if lowered in _DAY_NAMES:
        return _DAY_NAMES.index(lowered)
    if not lowered.isdigit() or not 0 <= int(lowered) <= 7:
        raise CrontabError(f"day of week {name!r} is outside 0-7")
    return int(lowered)


def weekdays(field: str) -> str:
    """A crontab day-of-week field (0 and 7 Sunday, 1 Monday) as day names, for APScheduler."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        match = re.fullmatch(r"(\*|\w+(?:-\w+)?)(?:/(\d+))?", part)
        if not match or (match[2] is not None and int(match[2]) == 0):
            raise CrontabError(f"day of week field {field!r} is not valid crontab syntax")
        spec, step = match[1], int(match[2] or 1)
        if spec == "*":
            low, high = 0, 6
        else:
            bounds = [_day(bound, field) for bound in spec.split("-")]
            if bounds != sorted(bounds):
                raise CrontabError(f"day of week range {spec!r} runs backwards")
            low, high = bounds[0], bounds[-1]
            if match[2] and len(bounds) == 1:
                high = 7  # "1/2": from Monday, every second day to the end of the week
        days.update(n % 7 for n in range(low, high + 1, step))
    return ",".join(_DAY_NAMES[n] for n in sorted(days))


@dataclass(frozen=True)
class Crontab:
    """A crontab schedule: the expression as written and the fields APScheduler takes."""

    expression: str
    fields: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, expression: str) -> Crontab:
        """Read "minute hour day-of-month month day-of-week"; CrontabError says what is wrong."""
        parts = expression.split()
        if len(parts) != 5:
            raise CrontabError("must have five fields: minute hour day-of-month month day-of-week "
                               "(e.g. '0 8 * * 1-5')")
        values = dict(zip(_FIELDS, parts))
        values["day_of_week"] = weekdays(values["day_of_week"])
        for name in _FIELDS[:4]:
            try:
                CronTrigger(**{name: values[name]})
            except ValueError as error:
                raise CrontabError(f"{_FIELD_NAMES[name]} field {values[name]!r}: {error}") from None
        return cls(expression, tuple(values.items()))

    def trigger(self, tz: ZoneInfo) -> CronTrigger:
        """An APScheduler trigger firing on this schedule in the given time zone."""
        return CronTrigger(**dict(self.fields), timezone=tz)

    def __str__(self) -> str:
        return self.expression


def last_fire(trigger: CronTrigger, now: datetime, within: timedelta) -> datetime | None:
    """The trigger's latest time strictly before ``now`` and after ``now - within``, if any."""
    last = None
    fire = trigger.get_next_fire_time(None, now - within + timedelta(microseconds=1))
    while fire is not None and fire < now:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return last
