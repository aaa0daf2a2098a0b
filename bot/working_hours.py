"""The office's working hours in a day, parsed once from "HH:MM-HH:MM" intervals.

"24:00" ends a day, so an office open around the clock is ``00:00-24:00``. Intervals are
offsets from local midnight; the calendar (``bot/deadlines.py``) turns them into moments
on each working day. Every problem in a list of intervals is reported at once, with its
index, so the configuration can name the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

DAY = timedelta(hours=24)
_DEFAULT = ((timedelta(hours=8), timedelta(hours=12)), (timedelta(hours=13), timedelta(hours=17)))
_INTERVAL = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")


class WorkingHoursError(ValueError):
    """Working hours that cannot be used; ``problems`` holds (index or None, message) pairs."""

    def __init__(self, problems: list[tuple[int | None, str]]):
        self.problems = problems
        super().__init__("; ".join(f"working_hours[{i}]: {m}" if i is not None else f"working_hours: {m}"
                                   for i, m in problems))


@dataclass(frozen=True)
class WorkingHours:
    """The working intervals of a working day, as offsets from midnight, sorted."""

    intervals: tuple[tuple[timedelta, timedelta], ...] = _DEFAULT

    @classmethod
    def parse(cls, texts: Iterable[str]) -> WorkingHours:
        """Intervals written "HH:MM-HH:MM" (00:00 to 24:00); every problem is reported at once."""
        if isinstance(texts, str):
            # A bare string would otherwise be parsed character by character.
            raise WorkingHoursError([(None, f"must be a list of 'HH:MM-HH:MM', got {texts!r}")])
        texts = list(texts)
        if not texts:
            raise WorkingHoursError([(None, "must list at least one interval such as '08:00-12:00'")])
        problems: list[tuple[int | None, str]] = []
        spans: list[tuple[timedelta, timedelta, int]] = []
        for i, text in enumerate(texts):
            match = _INTERVAL.fullmatch(text) if isinstance(text, str) else None
            start, end = (_offset(match[1], match[2]), _offset(match[3], match[4])) if match else (None, None)
            if start is None or end is None or start == DAY:
                problems.append((i, f"{str(text)[:30]!r} is not of the form HH:MM-HH:MM (00:00 to 24:00)"))
            elif start >= end:
                problems.append((i, f"{text!r} must end after it starts"))
            else:
                spans.append((start, end, i))
        spans.sort()
        for (_, end, i), (start, _, j) in zip(spans, spans[1:]):
            if start < end:
                problems.append((j, f"{texts[j]!r} overlaps {texts[i]!r}"))
        if problems:
            raise WorkingHoursError(problems)
        return cls(tuple((start, end) for start, end, _ in spans))

    def texts(self) -> list[str]:
        """The intervals as the configuration writes them ("08:00-12:00")."""
        return [f"{hhmm(start)}-{hhmm(end)}" for start, end in self.intervals]

    def __str__(self) -> str:
        return ", ".join(self.texts())


def _offset(hours: str, minutes: str) -> timedelta | None:
    h, m = int(hours), int(minutes)
    if m >= 60 or h > 24 or (h == 24 and m):
        return None
    return timedelta(hours=h, minutes=m)


def hhmm(offset: timedelta) -> str:
    """An offset from midnight as "HH:MM"."""
    minutes = int(offset / timedelta(minutes=1))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
