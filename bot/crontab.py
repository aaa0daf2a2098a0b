"""Five-field crontab expressions as APScheduler triggers, read the way cron reads them.

APScheduler 3 counts day-of-week numbers from 0 = Monday, where crontab counts from
0 = Sunday (7 is Sunday too): a crontab's "1-5" passed through as is would fire Tuesday
to Saturday. Day numbers are turned into names, which both read alike. One difference
stays: when both day fields are restricted, cron fires on either, APScheduler on both.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

_CRON_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day(name: str) -> int:
    lowered = name.lower()
    return _CRON_DAY_NAMES.index(lowered) if lowered in _CRON_DAY_NAMES else int(lowered)


def cron_weekdays(field: str) -> str:
    """A crontab day-of-week field (0 and 7 Sunday, 1 Monday) as day names, for APScheduler."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        spec, _, step = part.partition("/")
        if spec == "*":
            low, high = 0, 6
        else:
            bounds = [_cron_day(bound) for bound in spec.split("-")]
            low, high = bounds[0], bounds[-1]
            if step and len(bounds) == 1:
                high = 7  # "1/2": from Monday, every second day to the end of the week
        days.update(n % 7 for n in range(low, high + 1, int(step or 1)))
    return ",".join(_CRON_DAY_NAMES[n] for n in sorted(days))


def cron_trigger(expression: str, tz: ZoneInfo) -> CronTrigger:
    """An APScheduler trigger for a five-field crontab expression in the given time zone."""
    minute, hour, day, month, weekday = expression.split()
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=cron_weekdays(weekday),
                       timezone=tz)


def last_fire(trigger: CronTrigger, now: datetime, within: timedelta) -> datetime | None:
    """The trigger's latest time strictly before ``now`` and after ``now - within``, if any."""
    last = None
    fire = trigger.get_next_fire_time(None, now - within + timedelta(microseconds=1))
    while fire is not None and fire < now:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return last
