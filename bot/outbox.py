"""The outbox: every outgoing message is queued in the store, then sent by a dispatcher.

A state change and the messages it causes are written in one transaction (``enqueue``);
the dispatcher claims due rows, sends each through its channel's ``Sender``, retries
transient failures with exponential backoff and gives up on permanent ones, recording
why. Each row is sent at most once: a claim marks it ``sending`` with a lease, and rows
are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite has one writer at a
time, so the claiming UPDATE is atomic there). A row whose lease ran out was being sent
when its process died: whether it left is unknown, so it is marked failed, not re-sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from contract.delivery import PermanentDeliveryError, Sender, TransientDeliveryError
from contract.messages import Outgoing, with_files
from storage.db import insert_ignoring_conflicts
from storage.models import Attachment, OutboxMessage

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=10)
LEASE_CHECK = timedelta(minutes=1)


@dataclass(frozen=True)
class Queued:
    """A message to queue, and the complaint it is about (for the complaint's history)."""

    message: Outgoing
    complaint_id: int | None = None


@dataclass(frozen=True)
class Claim:
    """A claimed outbox row and its message, complete, ready for its sender."""

    id: int
    attempts: int
    message: Outgoing

    @property
    def channel(self) -> str:
        """The channel it goes out on."""
        return self.message.channel


async def enqueue(session: AsyncSession, now: datetime, message: Outgoing, complaint_id: int | None = None) -> None:
    """Queue one message in the caller's transaction; a key already queued is left alone."""
    await enqueue_many(session, now, [Queued(message, complaint_id)])


async def enqueue_many(session: AsyncSession, now: datetime, queued: Sequence[Queued]) -> None:
    """Queue many messages in one statement; keys already queued are left alone."""
    if not queued:
        return
    rows = [dict(key=q.message.key, channel=q.message.channel, recipient=q.message.recipient,
                 complaint_id=q.complaint_id, payload=q.message.to_payload(), status="queued", attempts=0,
                 next_attempt_at=now, created_at=now) for q in queued]
    await session.execute(insert_ignoring_conflicts(session, OutboxMessage), rows)


def backoff(attempts: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before the next try: exponential with jitter, at least retry_after."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    delay = delay * random.uniform(0.8, 1.2)  # jitter: many failures at once must not retry at once
    return max(delay, retry_after or 0.0)


async def _claims(session: AsyncSession, rows: Sequence[OutboxMessage]) -> list[Claim]:
    """The claimed rows as messages, with the bytes of the stored files they name."""
    messages = [Outgoing.from_payload(row.channel, row.recipient, row.key, row.payload) for row in rows]
    stored = {item.stored_id for message in messages for item in message.attachments if item.stored_id is not None}
    files: dict[int, bytes] = {}
    if stored:
        files = {id_: data for id_, data in (await session.execute(
            select(Attachment.id, Attachment.data).where(Attachment.id.in_(stored)))).all() if data}
    return [Claim(row.id, row.attempts, with_files(message, files)) for row, message in zip(rows, messages)]


class Dispatcher:
    """Sends queued outbox messages through the channels' senders."""

    def __init__(self, core: Core, senders: Mapping[str, Sender]):
        self.core = core
        self.senders = dict(senders)
        self._stopping = asyncio.Event()
        self._leases_checked: datetime | None = None

    async def claim(self, limit: int | None = None) -> list[Claim]:
        """Claim due messages for the channels this process can send on."""
        if not self.senders:
            return []
        now = self.core.clock.now()
        token = str(uuid.uuid4())
        limit = limit or self.core.config.outbox.batch_size
        async with self.core.sessions() as session, session.begin():
            # The ids are read first and the UPDATE names them: PostgreSQL may plan
            # "UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)" as a semi
            # join that runs the LIMIT again for every outer row, and with statistics from a
            # quiet outbox one claim of 20 took the whole queue of 300.
            due = list((await session.scalars(
                select(OutboxMessage.id)
                .where(OutboxMessage.status == "queued", OutboxMessage.next_attempt_at <= now,
                       OutboxMessage.channel.in_(list(self.senders)))
                .order_by(OutboxMessage.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )).all())
            if not due:
                return []
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(due), OutboxMessage.status == "queued")
                .values(status="sending", claim_token=token, lease_until=now + LEASE,
                        attempts=OutboxMessage.attempts + 1)
                .execution_options(synchronize_session=False)
            )
            rows = (await session.scalars(
                select(OutboxMessage).where(OutboxMessage.claim_token == token).order_by(OutboxMessage.id)
            )).all()
            return await _claims(session, rows)

    async def expire_leases(self) -> int:
        """Mark failed the messages whose sender died mid-send (unknown if they left)."""
        now = self.core.clock.now()
        async with self.core.sessions() as session, session.begin():
            result = await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.status == "sending", OutboxMessage.lease_until < now)
                .values(status="failed", last_error="interrupted while sending; not retried to avoid a duplicate")
                .execution_options(synchronize_session=False)
            )
        if result.rowcount:
            log.warning("outbox leases expired", extra={"fields": {"count": result.rowcount}})
        return result.rowcount

    async def send_one(self, row: Claim) -> str:
        """Send one claimed message and record the outcome: sent, retry or failed."""
        config = self.core.config.outbox
        values: dict = {"claim_token": None, "lease_until": None}
        try:
            external_id = await asyncio.wait_for(
                self.senders[row.channel].send(row.message), timeout=config.send_timeout_seconds
            )
        except PermanentDeliveryError as error:
            result, values["status"], values["last_error"] = "failed", "failed", f"permanent: {error}"[:2000]
        except Exception as error:  # transient by default: a bug in a sender must not drop mail
            retry_after = error.retry_after if isinstance(error, TransientDeliveryError) else None
            reason = str(error) or type(error).__name__
            values["last_error"] = reason[:2000]
            if row.attempts >= config.max_attempts:
                result, values["status"] = "failed", "failed"
                values["last_error"] = f"gave up after {row.attempts} attempts: {reason}"[:2000]
            else:
                result, values["status"] = "retry", "queued"
                delay = backoff(row.attempts, config.backoff_base_seconds, config.backoff_max_seconds, retry_after)
                values["next_attempt_at"] = self.core.clock.now() + timedelta(seconds=delay)
        else:
            result, values["status"] = "sent", "sent"
            values["external_id"], values["sent_at"], values["last_error"] = external_id, self.core.clock.now(), None
        async with self.core.sessions() as session, session.begin():
            await session.execute(
                update(OutboxMessage).where(OutboxMessage.id == row.id).values(**values)
                .execution_options(synchronize_session=False)
            )
        self.core.metrics.outbox_sends.labels(row.channel, result).inc()
        log.log(logging.INFO if result == "sent" else logging.WARNING, "outbox send",
                extra={"fields": {"id": row.id, "key": row.message.key, "channel": row.channel, "result": result,
                                  "attempt": row.attempts, "error": values.get("last_error")}})
        return result

    async def run_once(self) -> int:
        """Claim and send one batch; return how many were claimed."""
        now = self.core.clock.now()
        # Expired leases are rare (a process died mid-send): look once a minute, not on
        # every wake-up, since each look is a write transaction.
        if self._leases_checked is None or now - self._leases_checked >= LEASE_CHECK:
            await self.expire_leases()
            self._leases_checked = now
        rows = await self.claim()
        # One message at a time per process keeps within the providers' rate limits.
        for row in rows:
            await self.send_one(row)
        return len(rows)

    async def run(self) -> None:
        """Dispatch until stopped; wake on the core's signal or every poll interval."""
        poll = self.core.config.outbox.poll_seconds
        if not self.senders:
            # No channel to send on in this process: its messages wait in the outbox.
            await self._stopping.wait()
            return
        while not self._stopping.is_set():
            try:
                claimed = await self.run_once()
            except Exception:
                log.exception("outbox dispatch failed; retrying")
                claimed = 0
            if claimed:
                continue
            self.core.outbox_ready.clear()
            waiters = [asyncio.ensure_future(self.core.outbox_ready.wait()),
                       asyncio.ensure_future(self._stopping.wait())]
            await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    def stop(self) -> None:
        """Finish the message being sent, then stop; queued messages stay queued."""
        self._stopping.set()


async def refresh_gauges(core: Core) -> None:
    """Read the outbox's state from the store into the metrics gauges."""
    async with core.sessions() as session:
        counts = dict((await session.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))).all())
        oldest = await session.scalar(
            select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status == "queued"))
    for status in ("queued", "sending", "sent", "failed"):
        core.metrics.outbox_messages.labels(status).set(counts.get(status, 0))
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=core.clock.now().tzinfo)
    age = (core.clock.now() - oldest).total_seconds() if oldest else 0.0
    core.metrics.outbox_oldest_queued_age.set(max(0.0, age))
