"""APScheduler in the service's own loop: the deadline sweep every ``sweep_seconds``.

Jobs are in memory and read the database, the only source of truth: there is no job
per complaint and nothing is pickled, so any process can die or start at any time. The
first sweep runs at start, catching up on whatever came due while the service was down.
"""

from __future__ import annotations

import asyncio
import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.clock import SystemClock
from bot.core import Core
from bot.sweep import sweep

log = logging.getLogger(__name__)


class Scheduler:
    """The service's periodic jobs."""

    def __init__(self, core: Core):
        self.core = core
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
            self._sweep, IntervalTrigger(seconds=self.core.config.scheduler.sweep_seconds), id="sweep",
            max_instances=1, coalesce=True, misfire_grace_time=None,
            # At once, to catch up after downtime. APScheduler fires on the real clock
            # (an injected test clock in the past would make it count every missed run).
            next_run_time=SystemClock().now(),
        )
        self.scheduler.start()

    async def stop(self) -> None:
        """Stop scheduling and let a sweep in progress finish its transaction."""
        self.scheduler.shutdown(wait=False)
        if self._running:
            await asyncio.wait(self._running, timeout=30)
