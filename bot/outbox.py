"""The outbox: every outgoing message is queued in the store, then sent by a dispatcher
(``bot/dispatcher.py``); this module is the store's side of it.

A state change and the messages it causes are written in one transaction (``enqueue``).
A row then moves through::

    queued --claim--> claimed --start--> sending --> sent      (or back to queued: retry later)
                                                 --> failed    (permanent, or out of attempts)

``claimed`` rows belong to one worker incarnation and have not been handed to a sender: if that
process dies they go back to ``queued`` and nothing can be doubled. ``sending`` rows were handed to
a sender: if the process dies mid-send, or the provider did not say whether it took the message, the
outcome is unknown, and the row goes back to ``queued`` marked ``unsure``: its next attempt looks
the message up where the provider allows, else sends it again (``resent``). The window in which a
message can go out twice is so kept to the sends in flight. Rows are claimed with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL (SQLite has one writer at a time), so several processes share the queue.

What a provider reports after the send (delivered, undelivered) is recorded on the row by
``bot/delivery.py``, which also sends a message that cannot reach the citizen on their
next contact point.

The module is long (a little over 400 lines) on purpose: every change of a row's status is
written here, so the queue's rules read in one place.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from contract.messages import Outgoing, reference_of, with_files
from storage.db import insert_ignoring_conflicts, read_aside
from storage.models import Attachment, OutboxMessage

# Statuses of an outbox row (a message's own, not a complaint's).
QUEUED, CLAIMED, SENDING, SENT, FAILED = "queued", "claimed", "sending", "sent", "failed"
# Staff messages kept back outside working hours, and then sent as part of one summary.
HELD, SUMMED = "held", "summed"
IN_FLIGHT = (CLAIMED, SENDING)


@dataclass(frozen=True)
class Queued:
    """A message to queue, the complaint it is about, and how to write it again for another
    contact point (the catalogue key, its parameters, the staff member it is for)."""

    message: Outgoing
    complaint_id: int | None = None
    render: dict = field(default_factory=dict)
    fallback_of: int | None = None
    hold_until: datetime | None = None  # kept back until then, to go in one summary


@dataclass(frozen=True)
class Claim:
    """A claimed outbox row and its message, complete, ready for its sender."""

    id: int
    attempts: int
    unsure: bool  # the last attempt's outcome is unknown: look it up before sending again
    message: Outgoing
    queued_at: datetime  # no send of it is older: a look-up's bound
    started: bool = False  # marked as being sent when claimed (``claim``'s ``start_now``)

    @property
    def channel(self) -> str:
        """The channel it goes out on."""
        return self.message.channel


async def enqueue(session: AsyncSession, now: datetime, message: Outgoing, complaint_id: int | None = None) -> None:
    """Queue one message in the caller's transaction; a key already queued is left alone."""
    await enqueue_many(session, now, [Queued(message, complaint_id)])


# The channels whose providers report a message's delivery by our reference: the SMS gateways
# (a Twilio status callback's ``ref``, the Android gateway's message id, the generic gateway's
# Idempotency-Key; channels/sms/webhook.py hands it to ``bot.delivery.report``). Telegram,
# email and Zalo report by the provider's id, or not at all.
REPORTED_BY_REFERENCE = frozenset({"sms"})


def stored_reference(channel: str, key: str) -> str | None:
    """The reference an outbox row keeps: ours (``reference_of``) where delivery reports find
    the message by it, else none, so the index of references holds only those rows
    (migration 0013). A sender that hands a provider a reference works it out of the key."""
    return reference_of(key) if channel in REPORTED_BY_REFERENCE else None


def queued_on(session: AsyncSession) -> set[str]:
    """The channels the session queued messages on (for ``core.outbox_ready.set`` after its
    commit: the dispatcher claims for those)."""
    return session.info.setdefault("outbox_queued_on", set())


async def enqueue_many(session: AsyncSession, now: datetime, queued: Sequence[Queued]) -> None:
    """Queue many messages in one statement; keys already queued are left alone."""
    if not queued:
        return
    queued_on(session).update(q.message.channel for q in queued)
    rows = [dict(key=q.message.key, reference=stored_reference(q.message.channel, q.message.key),
                 channel=q.message.channel,
                 recipient=q.message.recipient, complaint_id=q.complaint_id,
                 payload={**q.message.to_payload(), "render": q.render}, status=HELD if q.hold_until else QUEUED,
                 attempts=0, next_attempt_at=q.hold_until or now, created_at=now, fallback_of=q.fallback_of,
                 unsure=False, resent=False)
            for q in queued]
    await session.execute(insert_ignoring_conflicts(session, OutboxMessage), rows)


# The columns of an outbox row as ``enqueue_rows`` takes it (``messages.Composer`` builds them).
ROW_COLUMNS = ("key", "reference", "channel", "recipient", "complaint_id", "payload", "status", "attempts",
               "next_attempt_at", "created_at", "fallback_of", "unsure", "resent")


async def enqueue_rows(session: AsyncSession, rows: Sequence[dict]) -> None:
    """Queue many messages given as outbox rows (dicts of ``ROW_COLUMNS``; the payload as
    ``enqueue_many`` stores it), in one statement, in the order given; keys already queued
    are left alone. For a backlog's batch (the sweep writes thousands): see ``insert_rows``."""
    queued_on(session).update(row["channel"] for row in rows)
    await insert_rows(session, OutboxMessage.__table__, ROW_COLUMNS, rows, ignore_conflicts=True)


def driver_values(dialect: Any, column: Any, values: Sequence[object]) -> list[object]:
    """Values of a column as its type hands them to the driver, each distinct value processed
    once (a batch's rows share their times, flags and statuses); JSON each time."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return list(values)
    if isinstance(column.type, JSON):
        return [process(value) for value in values]
    done: dict[object, object] = {}
    out = []
    for value in values:
        try:
            out.append(done[value])
        except KeyError:
            out.append(done.setdefault(value, process(value)))
        except TypeError:  # not hashable: processed each time
            out.append(process(value))
    return out


def array_of(dialect: Any, column: Any, name: str) -> str:
    """A PostgreSQL array parameter of a column's type (JSON travels as text)."""
    kind = "TEXT" if isinstance(column.type, JSON) else column.type.compile(dialect=dialect)
    return f"CAST(:{name} AS {kind}[])"


async def insert_rows(session: AsyncSession, table: Any, names: Sequence[str], rows: Sequence[dict],
                      ignore_conflicts: bool = False) -> None:
    """Many rows (dicts of these columns) in one statement, in the order given, the values
    processed by the columns' types as an ORM or Core insert would, without the per-row work
    of either: on PostgreSQL one INSERT ... SELECT FROM unnest(one array per column) (an
    executemany runs the INSERT once per row, and its executor start and index probes are
    most of the time); on SQLite one executemany of the driver's own values (sqlite3 loops
    in C). ``ignore_conflicts``: rows that would break a unique key are skipped."""
    if not rows:
        return
    dialect = session.bind.dialect
    columns = [table.c[name] for name in names]
    values = [driver_values(dialect, column, list(map(itemgetter(column.name), rows))) for column in columns]
    quoted = ", ".join(dialect.identifier_preparer.quote(name) for name in names)
    target = dialect.identifier_preparer.format_table(table)
    if dialect.name == "postgresql":
        picked = ", ".join(f"v.{dialect.identifier_preparer.quote(c.name)}" + ("::json" if isinstance(c.type, JSON)
                                                                               else "") for c in columns)
        typed = ", ".join(array_of(dialect, column, f"a{n}") for n, column in enumerate(columns))
        await session.execute(text(
            f"INSERT INTO {target} ({quoted}) SELECT {picked} FROM unnest({typed}) WITH ORDINALITY AS v({quoted}, n) "
            f"ORDER BY v.n{' ON CONFLICT DO NOTHING' if ignore_conflicts else ''}"),
            {f"a{n}": column_values for n, column_values in enumerate(values)})
        return
    connection = await session.connection()
    await connection.exec_driver_sql(
        f"INSERT INTO {target} ({quoted}) VALUES ({', '.join('?' for _ in names)})"
        f"{' ON CONFLICT DO NOTHING' if ignore_conflicts else ''}", list(zip(*values)))


def backoff(attempts: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before the next try: exponential with jitter, at least retry_after."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    delay = delay * random.uniform(0.8, 1.2)  # jitter: many failures at once must not retry at once
    return max(delay, retry_after or 0.0)


async def claim(core: Core, holder: str, channels: Iterable[str], limit: int,
                start_now: Callable[[list[Claim]], Collection[int]] | None = None) -> list[Claim]:
    """Claim up to ``limit`` due messages on these channels for a worker incarnation; the ids
    ``start_now`` picks of them (those that go at once) are marked being sent in this transaction."""
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        # The ids are read first and the UPDATE names them: PostgreSQL may plan
        # "UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)" as a semi
        # join that runs the LIMIT again for every outer row, and with statistics from a
        # quiet outbox one claim of 20 took the whole queue of 300.
        due = list((await session.scalars(
            select(OutboxMessage.id)
            .where(OutboxMessage.status == QUEUED, OutboxMessage.next_attempt_at <= now,
                   OutboxMessage.channel.in_(list(channels)))
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )).all())
        if not due:
            return []
        table = OutboxMessage.__table__  # the table's UPDATE: no ORM bulk-update machinery on the hot path
        # By id alone: the rows were read FOR UPDATE in this transaction (on SQLite, under its
        # write lock), so they are still queued. With "AND status = 'queued'" SQLite, which has
        # no statistics, went through the status index and read every queued row instead of
        # the ids': 5 ms a claim with 50,000 queued, 0.08 ms by id (a storm or a sweep's
        # backlog queues that many).
        await session.execute(update(table).where(table.c.id.in_(due)).values(status=CLAIMED, claimed_by=holder))
        rows = (await session.scalars(
            select(OutboxMessage).where(OutboxMessage.id.in_(due), OutboxMessage.claimed_by == holder,
                                        OutboxMessage.status == CLAIMED).order_by(OutboxMessage.id))).all()
        claims = await _claims(session, rows)  # their attempts as before this one, as for any claim
        if start_now is not None and (started := sorted(start_now(claims))):
            await start(core, holder, started, session)
            chosen = set(started)
            claims = [replace(claim, started=True) if claim.id in chosen else claim for claim in claims]
        return claims


async def _claims(session: AsyncSession, rows: Sequence[OutboxMessage]) -> list[Claim]:
    """The claimed rows as messages, with the bytes of the stored files they name."""
    messages = [Outgoing.from_payload(row.channel, row.recipient, row.key, row.payload) for row in rows]
    stored = {item.stored_id for message in messages for item in message.attachments if item.stored_id is not None}
    files: dict[int, bytes] = {}
    if stored:
        files = {id_: data for id_, data in (await session.execute(
            select(Attachment.id, Attachment.data).where(Attachment.id.in_(stored)))).all() if data}
    return [Claim(row.id, row.attempts, row.unsure, with_files(m, files), row.created_at) for row, m in zip(rows, messages)]


async def start(core: Core, holder: str, ids: Sequence[int], session: AsyncSession | None = None) -> None:
    """Mark claimed rows as being sent, just before they are handed to their senders (in the
    transaction of ``session`` when given)."""
    if session is None:
        async with core.sessions() as session, session.begin():
            return await start(core, holder, ids, session)
    await session.execute(
        update(table := OutboxMessage.__table__).where(table.c.id.in_(list(ids)), table.c.claimed_by == holder)
        .values(status=SENDING, attempts=table.c.attempts + 1))


async def release(core: Core, holder: str) -> int:
    """Give back the rows a worker claimed and has not started (it is stopping)."""
    async with core.sessions() as session, session.begin():
        result = await session.execute(
            update(OutboxMessage).where(OutboxMessage.claimed_by == holder, OutboxMessage.status == CLAIMED)
            .values(status=QUEUED, claimed_by=None).execution_options(synchronize_session=False))
    return result.rowcount


async def recover(session: AsyncSession, holders: Sequence[str]) -> tuple[int, int]:
    """Take back the rows of worker incarnations that are gone; (requeued, unsure).

    A claimed row was never handed to a sender: it is simply queued again. A row being
    sent may or may not have left: it is queued again marked unsure, so its next attempt
    looks it up first (or sends it again, as a resend).
    """
    if not holders:
        return 0, 0
    claimed = await session.execute(
        update(OutboxMessage).where(OutboxMessage.claimed_by.in_(list(holders)), OutboxMessage.status == CLAIMED)
        .values(status=QUEUED, claimed_by=None).execution_options(synchronize_session=False))
    sending = await session.execute(
        update(OutboxMessage).where(OutboxMessage.claimed_by.in_(list(holders)), OutboxMessage.status == SENDING)
        .values(status=QUEUED, claimed_by=None, unsure=True,
                last_error="its process stopped while sending; outcome unknown")
        .execution_options(synchronize_session=False))
    return claimed.rowcount, sending.rowcount


async def recover_own(session: AsyncSession, holder: str, in_flight: Iterable[int]) -> tuple[int, int]:
    """Take back a live worker's rows that it no longer holds in memory (a round of sending
    that failed halfway, the store gone between the claim and the results); (requeued, unsure)."""
    keep = list(in_flight)
    claimed = update(OutboxMessage).where(OutboxMessage.claimed_by == holder, OutboxMessage.status == CLAIMED)
    sending = update(OutboxMessage).where(OutboxMessage.claimed_by == holder, OutboxMessage.status == SENDING)
    if keep:
        claimed, sending = claimed.where(OutboxMessage.id.not_in(keep)), sending.where(OutboxMessage.id.not_in(keep))
    first = await session.execute(claimed.values(status=QUEUED, claimed_by=None)
                                  .execution_options(synchronize_session=False))
    second = await session.execute(sending.values(status=QUEUED, claimed_by=None, unsure=True,
                                                  last_error="its send's outcome was not recorded; outcome unknown")
                                   .execution_options(synchronize_session=False))
    return first.rowcount, second.rowcount


async def requeue(core: Core, *, ids: Sequence[int] = (), channel: str | None = None) -> int:
    """Queue failed messages again for a fresh round of attempts (an operator fixed the cause)."""
    conditions = [OutboxMessage.status == FAILED]
    if ids:
        conditions.append(OutboxMessage.id.in_(list(ids)))
    if channel is not None:
        conditions.append(OutboxMessage.channel == channel)
    async with core.sessions() as session, session.begin():
        result = await session.execute(
            update(OutboxMessage).where(*conditions)
            .values(status=QUEUED, attempts=0, next_attempt_at=core.clock.now(), claimed_by=None)
            .execution_options(synchronize_session=False))
    if result.rowcount:
        core.outbox_ready.set()
    return result.rowcount


@dataclass(frozen=True)
class Listed:
    """An outbox message as the operator's listing shows it (no text: it may be personal)."""

    id: int
    key: str
    channel: str
    status: str
    delivery: str | None
    attempts: int
    created_at: datetime
    last_error: str | None


async def listing(core: Core, *, failed: bool = False, channel: str | None = None, limit: int = 50) -> list[Listed]:
    """The newest outbox messages, or only those that failed (for good or by the provider's report)."""
    query = select(OutboxMessage)
    if failed:
        query = query.where((OutboxMessage.status == FAILED) | OutboxMessage.delivery.in_(("undelivered", "failed")))
    if channel is not None:
        query = query.where(OutboxMessage.channel == channel)
    async with core.sessions() as session:
        found = (await session.scalars(query.order_by(OutboxMessage.id.desc()).limit(limit))).all()
    return [Listed(row.id, row.key, row.channel, row.status, row.delivery, row.attempts, row.created_at,
                   row.last_error or row.delivery_reason) for row in found]


# The gauges of the outbox's whole history (sent and failed messages, their final states,
# resends) are read at most this often, and aside from the process's one SQLite connection:
# counting them reads every message ever sent (at 1,000,000 rows about 1.5 s on SQLite). The
# work in hand (queued, in flight, held) is a range of the status index, read at every scrape.
HISTORY_EVERY = timedelta(minutes=5)
ACTIVE = (QUEUED, CLAIMED, SENDING, HELD, SUMMED)


async def refresh_gauges(core: Core) -> None:
    """Read the outbox's state from the store into the metrics gauges: the work in hand at
    every call, the history at most every ``HISTORY_EVERY``."""
    metrics, now = core.metrics, core.clock.now()
    history = metrics.history_read_at is None or now - metrics.history_read_at >= HISTORY_EVERY
    async with core.sessions() as session:
        counts = dict((await session.execute(
            select(OutboxMessage.status, func.count()).where(OutboxMessage.status.in_(ACTIVE))
            .group_by(OutboxMessage.status))).all())
        oldest_queued = await session.scalar(
            select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status == QUEUED))
        # Not yet handed to its provider, whatever the reason: queued, waiting to retry, in flight.
        oldest_undelivered = await session.scalar(
            select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status.in_((QUEUED, *IN_FLIGHT))))
    for status in ACTIVE:
        metrics.outbox_messages.labels(status).set(counts.get(status, 0))
    metrics.outbox_oldest_queued_age.set(_age(now, oldest_queued))
    metrics.outbox_oldest_undelivered_age.set(_age(now, oldest_undelivered))
    if history:
        await _refresh_history(core, now)


async def _refresh_history(core: Core, now: datetime) -> None:
    """The gauges of what was ever sent: a read of every such message, aside from the one
    SQLite connection intake waits for (``storage.db.read_aside``); one at a time."""
    metrics = core.metrics
    metrics.history_read_at = now  # a scrape meanwhile keeps the values it has
    try:
        outcomes = await read_aside(core.engine, select(
            OutboxMessage.channel, OutboxMessage.status, OutboxMessage.delivery, func.count())
            .where(OutboxMessage.status.in_((SENT, FAILED)))
            .group_by(OutboxMessage.channel, OutboxMessage.status, OutboxMessage.delivery))
        [(resent,)] = await read_aside(core.engine, select(func.count()).select_from(OutboxMessage)
                                       .where(OutboxMessage.resent.is_(True)))
    except BaseException:
        metrics.history_read_at = None  # the next scrape tries again
        raise
    metrics.outbox_delivery.clear()
    ended = {SENT: 0, FAILED: 0}
    for channel, status, delivery, count in outcomes:
        metrics.outbox_delivery.labels(channel, final_state(status, delivery)).inc(count)
        ended[status] += count
    for status, count in ended.items():
        metrics.outbox_messages.labels(status).set(count)
    metrics.outbox_resent_total_in_store.set(resent or 0)


def final_state(status: str, delivery: str | None) -> str:
    """A sent or failed message's state as operators read it: delivered, undelivered, sent, failed."""
    if status == FAILED:
        return FAILED
    return delivery or SENT


def _age(now: datetime, moment: datetime | None) -> float:
    return max(0.0, (now - moment).total_seconds()) if moment else 0.0


def next_attempt(core: Core, attempts: int, retry_after: float | None) -> datetime:
    """When a message that failed for now is tried again."""
    config = core.config.outbox
    delay = backoff(attempts, config.backoff_base_seconds, config.backoff_max_seconds, retry_after)
    return core.clock.now() + timedelta(seconds=delay)
