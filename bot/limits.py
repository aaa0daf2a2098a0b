"""Flood control: how many requests one client may make in a window, the same count for every
process on one PostgreSQL database.

Fixed windows: a window of ``window`` seconds ends at a multiple of ``window`` (Unix time).
On PostgreSQL each request is one upsert of its client's counter for the current window
(``rate_counters``), which returns the count, so several processes share it; past
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

import hashlib
import logging
import math

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
        async with self.core.sessions() as session, session.begin():
            # A counter is not worth waiting for the disk: lost in a crash, a client gets a few
            # more requests in one window. Without this each request waited for a WAL flush.
            await session.execute(text("SET LOCAL synchronous_commit TO OFF"))
            statement = upsert(session, RateCounter)
            statement = statement.on_conflict_do_update(
                index_elements=["scope", "client", "window_end"], set_={"hits": RateCounter.hits + 1})
            found = (await session.execute(
                statement.returning(RateCounter.scope, RateCounter.client, RateCounter.hits),
                [dict(scope=scope, client=client, window_end=end, hits=1) for scope, client in keys])).all()
            if now - self._purged_at >= PURGE_EVERY_SECONDS:
                self._purged_at = now
                await session.execute(delete(RateCounter).where(RateCounter.window_end < now))
        hits = {(scope, client): count for scope, client, count in found}
        return [hits[key] for key in keys]
