"""Credentials a channel keeps in the store and renews itself (an access token and its
one-use refresh token), shared by every process.

A renewal runs under a lock that holds across processes (``SELECT ... FOR UPDATE`` on
PostgreSQL; on SQLite every transaction already takes the write lock): it reads the
stored value again first, so of two processes that found a token expired, the second
finds the first one's new token and does not spend the refresh token a second time, and
the new value is saved in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from sqlalchemy import select

from bot.core import Core
from storage.db import insert_ignoring_conflicts
from storage.models import Setting

PREFIX = "credential:"


def _key(name: str) -> str:
    return f"{PREFIX}{name}"[:64]


async def read(core: Core, name: str) -> dict | None:
    """The stored credential, if any."""
    async with core.sessions() as session:
        stored = await session.get(Setting, _key(name))
    return json.loads(stored.value) if stored else None


async def store(core: Core, name: str, value: dict) -> None:
    """Keep a credential (an operator setting the first token pair)."""
    async with core.sessions() as session, session.begin():
        stored = await session.get(Setting, _key(name), with_for_update=True)
        if stored is None:
            session.add(Setting(key=_key(name), value=json.dumps(value)))
        else:
            stored.value = json.dumps(value)


async def renew(core: Core, name: str, stale: dict | None,
                renewal: Callable[[dict], Awaitable[dict]]) -> dict:
    """Renew a credential once across processes; return the current one.

    ``stale`` is the value the caller found no longer working: when the stored value is
    another one, another process renewed it meanwhile, and that one is returned. Else
    ``renewal(stored)`` makes the new value, which is saved before the lock is let go.
    """
    async with core.sessions() as session, session.begin():
        await session.execute(insert_ignoring_conflicts(session, Setting).values(key=_key(name), value="null"))
        stored = await session.scalar(select(Setting).where(Setting.key == _key(name)).with_for_update())
        current = json.loads(stored.value)
        if current is not None and current != stale:
            return current
        fresh = await renewal(current or {})
        stored.value = json.dumps(fresh)
    return fresh
