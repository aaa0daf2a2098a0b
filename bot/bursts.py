"""Bursts of new complaints: an officer is told of each new complaint, until too many come
at once; then the rest wait for one summary.

A flood from the web (or a real event everyone reports at once) would otherwise page the
same officers a hundred times. Per staff address and fixed window of
``[notifications] burst_window_minutes``, the first ``burst_after`` new-complaint
notifications go out as usual; each one past that is held, its tracking code added to
the window's record (``notification_bursts``), and one summary message for the window is
queued, due at the window's end and rewritten while it waits, so it names every code
held. It is written in the transaction that files the complaints, so it is exact with
several processes: the upsert of the window's record locks it until commit (on SQLite
every write transaction is alone anyway).

Only notifications of new complaints are grouped: a citizen's follow-up, a deadline, an
escalation is about a case already known and always goes out.

Quiet hours are the other way staff messages are grouped: outside working hours, what
concerns a complaint that is not urgent is kept back (``bot/messages.py``, ``held``
outbox rows) until the next working morning, when ``release_quiet`` (run by the sweep)
turns each person's kept messages into one summary.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from datetime import datetime, timezone

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import outbox
from bot.core import Core
from bot.messages import format_time
from bot.outbox import HELD, SUMMED, Queued
from contract.messages import Outgoing
from storage.db import upsert
from storage.models import NotificationBurst, OutboxMessage

KIND = "new_complaint"
SUMMARY_KIND = "new_complaints_summary"
CODES_LISTED = 30  # in the summary; the rest are counted


def _window_end(core: Core, now: datetime) -> int:
    span = max(60, round(core.config.notifications.burst_window_minutes * 60))
    return (math.floor(now.timestamp()) // span + 1) * span


async def hold(core: Core, session: AsyncSession, now: datetime, notices: list[Queued]) -> list[Queued]:
    """The new-complaint notifications to send now; those past the burst limit are held for the summary."""
    limit = core.config.notifications.burst_after
    # Kept back for the night already: they go in the morning's summary, not a burst's.
    quiet = [notice for notice in notices if notice.hold_until is not None]
    notices = [notice for notice in notices if notice.hold_until is None]
    if limit <= 0 or not notices:
        return quiet + notices
    end = _window_end(core, now)
    by_address: dict[tuple[str, str], list[Queued]] = defaultdict(list)
    for notice in notices:
        by_address[(notice.message.channel, notice.message.recipient)].append(notice)
    statement = upsert(session, NotificationBurst)
    statement = statement.on_conflict_do_update(
        index_elements=["channel", "recipient", "window_end"],
        set_={"total": NotificationBurst.total + statement.excluded.total})
    totals = {(channel, recipient): total for channel, recipient, total in (await session.execute(
        statement.returning(NotificationBurst.channel, NotificationBurst.recipient, NotificationBurst.total),
        [dict(channel=channel, recipient=recipient, window_end=end, total=len(queued), held=[])
         for (channel, recipient), queued in by_address.items()])).all()}
    send: list[Queued] = []
    for address, queued in by_address.items():
        before = totals[address] - len(queued)
        room = max(0, limit - before)
        send += queued[:room]
        if queued[room:]:
            await _hold(core, session, now, end, address, queued[room:])
    return quiet + send


async def _hold(core: Core, session: AsyncSession, now: datetime, end: int, address: tuple[str, str],
                held: list[Queued]) -> None:
    """Add the held codes to the window's record and (re)write its summary, due at the window's end."""
    channel, recipient = address
    where = (NotificationBurst.channel == channel, NotificationBurst.recipient == recipient,
             NotificationBurst.window_end == end)
    codes = list(await session.scalar(select(NotificationBurst.held).where(*where)) or [])
    codes += [notice.message.tracking_code for notice in held if notice.message.tracking_code]
    await session.execute(update(NotificationBurst).where(*where).values(held=codes))
    summary = _summary(core, end, address, codes, held[0].message.language)
    due = datetime.fromtimestamp(end, timezone.utc)
    statement = upsert(session, OutboxMessage).values(
        key=summary.key, channel=channel, recipient=recipient, complaint_id=None, payload=summary.to_payload(),
        status="queued", attempts=0, next_attempt_at=due, created_at=now)
    # Rewritten only while it waits: once the dispatcher has taken it, it is what was sent.
    await session.execute(statement.on_conflict_do_update(
        index_elements=["key"], set_={"payload": statement.excluded.payload}, where=OutboxMessage.status == "queued"))


def _summary(core: Core, end: int, address: tuple[str, str], codes: list[str], language: str) -> Outgoing:
    span = max(60, round(core.config.notifications.burst_window_minutes * 60))
    start_at, end_at = datetime.fromtimestamp(end - span, timezone.utc), datetime.fromtimestamp(end, timezone.utc)
    listed = ", ".join(codes[:CODES_LISTED])
    if len(codes) > CODES_LISTED:
        listed += " " + core.texts.get(language, "limits.burst_more", count=len(codes) - CODES_LISTED)
    text = core.texts.get(language, "limits.burst_summary", count=len(codes), codes=listed,
                          start=format_time(core, start_at, language), end=format_time(core, end_at, language))
    who = hashlib.blake2b(f"{address[0]}\x00{address[1]}".encode(), digest_size=8).hexdigest()
    return Outgoing(channel=address[0], recipient=address[1], text=text, key=f"burst:{end}:{who}", kind=SUMMARY_KIND,
                    audience="staff", origin="system", language=language, subject=text.split(":")[0][:300])


async def release_quiet(core: Core) -> int:
    """The morning after: each staff member's messages kept back outside working hours go
    as one summary, listing each (its first line); return how many summaries were queued."""
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        rows = (await session.scalars(
            select(OutboxMessage).where(OutboxMessage.status == HELD, OutboxMessage.next_attempt_at <= now)
            .order_by(OutboxMessage.id).with_for_update(skip_locked=True))).all()
        if not rows:
            return 0
        by_address: dict[tuple[str, str], list[OutboxMessage]] = defaultdict(list)
        for row in rows:
            by_address[(row.channel, row.recipient)].append(row)
        summaries = []
        for (channel, recipient), held in by_address.items():
            language = held[0].payload.get("language") or core.config.service.default_language
            lines = [(row.payload.get("subject") or row.payload.get("text", "").split("\n")[0])[:200]
                     for row in held]
            text = "\n".join([core.texts.get(language, "staff.quiet_summary", count=len(held),
                                              since=format_time(core, held[0].created_at, language)),
                              *(f"- {line}" for line in lines)])
            who = hashlib.blake2b(f"{channel}\x00{recipient}".encode(), digest_size=8).hexdigest()
            key = f"quiet:{int(now.timestamp())}:{who}"
            summaries.append(Queued(Outgoing(channel=channel, recipient=recipient, key=key, kind="quiet_summary",
                                             audience="staff", language=language, text=text,
                                             subject=text.split("\n")[0][:300]), None,
                                    dict(held[0].payload.get("render") or {})))
            await session.execute(update(OutboxMessage).where(OutboxMessage.id.in_([row.id for row in held]))
                                  .values(status=SUMMED, external_id=key).execution_options(synchronize_session=False))
        await outbox.enqueue_many(session, now, summaries)
    core.outbox_ready.set()
    return len(summaries)
