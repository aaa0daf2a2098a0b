"""Where the service reads the time. Everything else is handed a clock, never calls
``datetime.now()``, so tests can freeze time and jump over deadlines and weekends."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    """Tells the current time, always timezone-aware UTC."""

    def now(self) -> datetime:
        """The current time in UTC."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """The current time in UTC."""
        return datetime.now(timezone.utc)


class FrozenClock:
    """A clock that moves only when told to: for tests and for replaying history."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware start time")
        self._now = start.astimezone(timezone.utc)

    def now(self) -> datetime:
        """The frozen time in UTC."""
        return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move time forward by delta (or by timedelta keyword arguments)."""
        self._now += delta if delta is not None else timedelta(**kwargs)
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump to a moment (aware)."""
        if moment.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware time")
        self._now = moment.astimezone(timezone.utc)
