"""APScheduler in the service's own loop: the deadline sweep every ``sweep_seconds``, and
the unit heads' digests on their crontab schedules (``[digests]``).

Jobs are in memory and read the database, the only source of truth: there is no job
per complaint and nothing is pickled, so any process can die or start at any time. The
first sweep runs at start, catching up on whatever came due while the service was down.
"""

from __future__ import annotations

import asyncio
import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot import digests
from bot.clock import SystemClock
from bot.core import Core
from bot.sweep import sweep

log = logging.getLogger(__name__)


class Scheduler:
    """The service's periodic jobs."""

    def __init__(self, core: Core, sweep_seconds: float):
        self.core = core
        self.sweep_seconds = sweep_seconds
        self.scheduler = AsyncIOScheduler(timezone=core.config.tz)
        self._running: set[asyncio.Task] = set()

    async def _sweep(self) -> None:
        task = asyncio.current_task()
        self._running.add(task)
        try:
            await sweep(self.core)
        except Exception:  # the next run tries again; the database holds what is left
            log.exception("sweep failed")
        finally:
            self._running.discard(task)

    def start(self) -> None:
        """Start the jobs in the running loop; the first sweep runs at once."""
        self.scheduler.add_job(
            self._sweep, IntervalTrigger(seconds=self.sweep_seconds), id="sweep",
            max_instances=1, coalesce=True, misfire_grace_time=None,
            # At once, to catch up after downtime. APScheduler fires on the real clock
            # (an injected test clock in the past would make it count every missed run).
            next_run_time=SystemClock().now(),
        )
        # Digests on their crontab schedules, and once at start for one whose time passed
        # while the service was down; digest_runs makes each go out once whoever runs it.
        for kind, schedule in digests.schedules(self.core.config):
            self.scheduler.add_job(self._digests, schedule.trigger(self.core.config.tz),
                                   args=[kind], id=f"digest-{kind}", max_instances=1, coalesce=True,
                                   misfire_grace_time=3600)
        self.scheduler.add_job(self._digests, args=[None], id="digest-catch-up", next_run_time=SystemClock().now())
        self.scheduler.start()

    async def _digests(self, kind: str | None) -> None:
        task = asyncio.current_task()
        self._running.add(task)
        try:
            await (digests.catch_up(self.core) if kind is None else digests.send_all(self.core, kind))
        except Exception:  # the next scheduled time tries again; digest_runs says what went out
            log.exception("digests failed")
        finally:
            self._running.discard(task)

    async def stop(self) -> None:
        """Stop scheduling and let a sweep in progress finish its transaction."""
        self.scheduler.shutdown(wait=False)
        if self._running:
            await asyncio.wait(self._running, timeout=30)
