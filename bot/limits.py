"""Flood control: how many requests one client may make in a window, the same count for every
process on one PostgreSQL database.

Fixed windows: a window of ``window`` seconds ends at a multiple of ``window`` (Unix time).
On PostgreSQL each request is an upsert of its client's counter for the current window
(``rate_counters``), which returns the count, so several processes share it (requests
arriving together are counted in one transaction, as intake writes them); past
``limit`` the request is refused until the window ends. A client once refused is
remembered in the process until then, so a flood beyond its limit costs no database
round trip at all, and a limit of 0 (off) costs nothing either. Windows past are
deleted, at most once a minute per process.

On SQLite the count is kept in the process. SQLite has one writer at a time: a counter
write per request, in a transaction of its own, queues behind every complaint being
filed, and measured (``bench/limits.py``) it made the web form several times slower.
SQLite is the one-process deployment; several processes are the PostgreSQL path.

Clients are kept as a hash (an IP address, a form session, a mail sender are personal
data, and of any length). When the store cannot count, the request is let through: a
flood limit must not turn a database hiccup into refusing citizens.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections import Counter

from sqlalchemy import delete, text
from sqlalchemy.exc import SQLAlchemyError

from bot.core import Core
from storage.db import upsert
from storage.models import RateCounter

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 60.0
MAX_REMEMBERED = 10_000  # refused clients remembered per process, at most


def client_key(scope: str, client: str) -> str:
    """The stored form of a client: a hash, 32 hex digits."""
    return hashlib.blake2b(f"{scope}\x00{client}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class Limiter:
    """Counts requests per client and window in the store; one per process."""

    def __init__(self, core: Core):
        self.core = core
        self._refused: dict[tuple[str, str], int] = {}  # (scope, key) -> end of the window it is refused in
        self._purged_at = -math.inf
        self._shared = core.engine.dialect.name == "postgresql"
        self._here: dict[tuple[str, str, int], int] = {}  # SQLite: (scope, key, window end) -> hits
        self._waiting: list[tuple[list[tuple[str, str, int]], asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def admit(self, scope: str, client: str, limit: int, window: float) -> float | None:
        """Count one request; None when within the limit, else the seconds until the window ends."""
        return await self.admit_all([(scope, client, limit)], window)

    async def admit_all(self, checks: list[tuple[str, str, int]], window: float) -> float | None:
        """Count one request against several (scope, client, limit) at once, in one round trip;
        None when within every limit, else the seconds until the longest refusal ends."""
        now = self.core.clock.now().timestamp()
        span = max(1, round(window))
        end = (math.floor(now) // span + 1) * span
        keys: list[tuple[tuple[str, str], int]] = []
        wait = 0.0
        for scope, client, limit in checks:
            if limit <= 0:
                continue
            key = (scope, client_key(scope, client))
            refused_until = self._refused.get(key)
            if refused_until is not None and now < refused_until:
                wait = max(wait, refused_until - now)
                continue
            self._refused.pop(key, None)
            keys.append((key, limit))
        if keys:
            try:
                counted = await self._count([key for key, _ in keys], end, now) if self._shared else \
                    [self._count_here(key, end, now) for key, _ in keys]
            except (SQLAlchemyError, OSError, TimeoutError) as error:
                log.warning("flood control could not count; request let through",
                            extra={"fields": {"scope": keys[0][0][0], "error": type(error).__name__}})
                counted = [0] * len(keys)
            for (key, limit), hits in zip(keys, counted):
                if hits > limit:
                    if len(self._refused) >= MAX_REMEMBERED:
                        self._refused = {k: v for k, v in self._refused.items() if v > now}
                    self._refused[key] = end
                    wait = max(wait, end - now)
                    log.info("flood control refused a request",
                             extra={"fields": {"scope": key[0], "hits": hits, "limit": limit}})
        return wait or None

    def _count_here(self, key: tuple[str, str], end: int, now: float) -> int:
        counter = (*key, end)
        self._here[counter] = hits = self._here.get(counter, 0) + 1
        if now - self._purged_at >= PURGE_EVERY_SECONDS:
            self._purged_at = now
            self._here = {k: v for k, v in self._here.items() if k[2] > now}
        return hits

    async def _count(self, keys: list[tuple[str, str]], end: int, now: float) -> list[int]:
        """The counts after this request, written with whatever other requests wait at this moment."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(([(*key, end) for key in keys], future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(now), name="flood-counters")
        # Shielded: a client hanging up does not cancel the others' counts.
        return await asyncio.shield(future)

    async def _write(self, now: float) -> None:
        """Group commit: every request waiting is counted in one transaction, one statement."""
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                totals = await self._upsert(Counter(counter for counters, _ in batch for counter in counters), now)
            except Exception as error:  # noqa: BLE001 - every waiter hears of it, and lets its request through
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            # Each request gets the count it made: the n-th of a batch's k requests, total - k + n.
            seen: Counter[tuple[str, str, int]] = Counter()
            for counters, future in batch:
                counts = []
                for counter in counters:
                    seen[counter] += 1
                    counts.append(totals[counter][0] - totals[counter][1] + seen[counter])
                if not future.done():
                    future.set_result(counts)

    async def _upsert(self, added: Counter[tuple[str, str, int]], now: float) -> dict[tuple[str, str, int],
                                                                                       tuple[int, int]]:
        async with self.core.sessions() as session, session.begin():
            # A counter is not worth waiting for the disk: lost in a crash, a client gets a few
            # more requests in one window. Without this each request waited for a WAL flush.
            await session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            statement = upsert(session, RateCounter)
            statement = statement.on_conflict_do_update(
                index_elements=["scope", "client", "window_end"],
                set_={"hits": RateCounter.hits + statement.excluded.hits})
            found = (await session.execute(
                statement.returning(RateCounter.scope, RateCounter.client, RateCounter.window_end, RateCounter.hits),
                [dict(scope=scope, client=client, window_end=end, hits=hits)
                 for (scope, client, end), hits in sorted(added.items())])).all()
            if now - self._purged_at >= PURGE_EVERY_SECONDS:
                self._purged_at = now
                await session.execute(delete(RateCounter).where(RateCounter.window_end < now))
        return {(scope, client, end): (hits, added[(scope, client, end)]) for scope, client, end, hits in found}
