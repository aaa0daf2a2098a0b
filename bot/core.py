"""What one process shares, in one plain container: the domain's settings, the store's
sessions, the clock, the message catalogue, the working-hours calendar, the metrics and
the directory of units, staff and rules.

The wiring (``service/``) builds it and starts what it needs; every function of
``bot/`` is handed it. Channels never see it: they are given a narrow port
(``bot/port.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.clock import Clock
from bot.deadlines import WorkingCalendar
from bot.directory import Directory
from bot.metrics import Metrics
from bot.settings import Settings
from bot.texts import Catalogue
from contract.delivery import ReplyWindow


class OutboxSignal(asyncio.Event):
    """Set after a commit that queued messages, so the dispatcher need not wait for its poll;
    with the channels they were queued on where the setter knows them (intake and the sweep
    do), so a dispatcher whose lane on one channel is busy does not claim for its idle
    channels in vain at every batch another channel queued."""

    def __init__(self) -> None:
        super().__init__()
        self._channels: set[str] | None = set()

    def set(self, channels: Iterable[str] | None = None) -> None:
        """Wake the dispatcher for these channels (None, the default: for any)."""
        if channels is None:
            self._channels = None
        elif self._channels is not None:
            self._channels.update(channels)
        super().set()

    def clear(self) -> None:
        self._channels = set()
        super().clear()

    def take(self) -> set[str] | None:
        """Clear; the channels named since the last clear (None: any)."""
        channels = self._channels
        self.clear()
        return channels


@dataclass(frozen=True)
class SenderTerms:
    """What the domain must know of a channel this process sends on, to choose it."""

    window: ReplyWindow | None = None  # it may write to a citizen only so long after their last message
    kinds: frozenset[str] | None = None  # the only kinds of message it carries (None: any)


@dataclass
class Core:
    """The process's shared parts; built by the wiring, one per process."""

    config: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    texts: Catalogue
    calendar: WorkingCalendar  # the offices' working hours and days
    around_the_clock: WorkingCalendar  # every hour of every day: urgent complaints' deadlines
    metrics: Metrics
    directory: Directory
    public_url: str  # the address citizens and gateways see; links to status pages start with it
    # Set after a commit that queued messages, so the dispatcher need not wait for its poll.
    outbox_ready: OutboxSignal = field(default_factory=OutboxSignal)
    # The channels this process sends on, filled by the wiring once the channels are set up.
    senders: dict[str, SenderTerms] = field(default_factory=dict)

    async def close(self) -> None:
        """Release the database connections."""
        await self.engine.dispose()
