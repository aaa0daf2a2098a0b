"""How each message's sending ends, and what follows when it cannot reach its person.

Every outcome of an attempt is written on the message's own outbox row as soon as that
attempt returns (``sent``, ``retry``, ``unknown``, ``failed``). What a provider reports
later (Twilio's status callbacks, the Android gateway's ``sms:delivered``/``sms:failed``,
the generic gateway's status webhook, a bounce of our mail) is recorded on the row
(``report``). A message that fails for good or is reported undelivered goes out once on
the next contact point (``bot/reach.py``), written again for that channel; the complaint's
history records the fallback. When no contact point is left, the complaint is marked
"citizen unreachable", its officers are told, and the unit head sees it in the digest.
Messages to staff fall back the same way, from Telegram to email.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import messages, outbox, reach
from bot.core import Core
from bot.outbox import FAILED, QUEUED, SENT, Claim, Queued
from contract.messages import Attachment, DeliveryState, Outgoing
from storage.models import Complaint, Event, OutboxMessage, Staff

log = logging.getLogger(__name__)

# Provider reports that end a message's journey badly; "sent" and "delivered" do not.
UNDELIVERED: tuple[DeliveryState, ...] = ("undelivered", "failed")
# A later report never overrides a final one with an earlier state.
_RANK = {None: 0, "sent": 1, "delivered": 2, "undelivered": 2, "failed": 2}


async def sent(core: Core, claim: Claim, external_id: str | None, resent: bool) -> None:
    """The provider took the message."""
    await sent_many(core, [(claim, external_id, resent, core.clock.now())])


# The rows of one mark, by bound names (not the columns': an UPDATE's own).
_SENT = (update(OutboxMessage.__table__).where(OutboxMessage.__table__.c.id == bindparam("row_id"))
         .values(status=SENT, external_id=bindparam("row_external_id"), sent_at=bindparam("row_sent_at"),
                 last_error=None, claimed_by=None, unsure=False, resent=bindparam("row_resent")))


async def sent_many(core: Core, marks: list[tuple[Claim, str | None, bool, datetime]]) -> None:
    """Providers took these messages (claim, provider's id, resent, when): one transaction,
    one UPDATE for the rows (executemany), one for their complaints."""
    async with core.sessions() as session, session.begin():
        await _write_sent(session, marks)


async def _write_sent(session: AsyncSession, marks: list[tuple[Claim, str | None, bool, datetime]]) -> None:
    await session.execute(_SENT, [dict(row_id=claim.id, row_external_id=external_id, row_sent_at=at,
                                       row_resent=resent) for claim, external_id, resent, at in marks])
    citizens = [claim.id for claim, *_ in marks if claim.message.audience == "citizen"]
    if citizens:
        # A message got through: the citizen is reachable again.
        complaints, rows = Complaint.__table__, OutboxMessage.__table__
        await session.execute(update(complaints).where(
            complaints.c.unreachable_at.is_not(None),
            complaints.c.id.in_(select(rows.c.complaint_id).where(rows.c.id.in_(citizens))))
            .values(unreachable_at=None))


@dataclass(frozen=True)
class _Start:
    """Rows to mark as being sent (``outbox.start``), written with the marks before them."""

    holder: str
    ids: tuple[int, ...]


class SentMarks:
    """Writes "sent" on the rows whose sends returned, together (group commit); and the
    "being sent" of the dispatcher's next group, in the same write as the last one's.

    A send that returns hands its mark over and waits until it is written; a write takes
    every mark handed over until its transaction has begun (on SQLite the process's one
    connection is often busy filing complaints: the marks that come meanwhile wait with it),
    and marks handed over later go in the next one. Each row is so still marked as soon as
    its own send returns and the store lets it (no waiting for the rest of its round: issue
    12), and sends that return at about the same moment share one transaction instead of
    one each.
    """

    def __init__(self, core: Core):
        self.core = core
        self.waiting: list[tuple[tuple[Claim, str | None, bool, datetime] | _Start, asyncio.Future]] = []
        self.writing: list = []  # what the write under way took, until it commits
        self.task: asyncio.Task | None = None

    async def taken(self, claim: Claim, external_ids: list[str]) -> set[str]:
        """Which of these provider ids another row on the claim's channel is recorded with:
        in the store, or in a mark handed over and not yet committed (a look-up's answer that
        is one of them is another message's, not this one's)."""
        taken = {mark[1] for mark, _ in (*self.writing, *self.waiting)
                 if not isinstance(mark, _Start) and mark[0].channel == claim.channel and mark[0].id != claim.id}
        async with self.core.sessions() as session:
            taken.update(await session.scalars(select(OutboxMessage.external_id).where(
                OutboxMessage.channel == claim.channel, OutboxMessage.external_id.in_(external_ids),
                OutboxMessage.id != claim.id)))
        return taken

    async def start(self, holder: str, ids: list[int]) -> None:
        """Mark claimed rows as being sent once every mark handed over before is written, in
        the same transaction as the last of them; returns once committed."""
        error = await asyncio.shield(self._hand_over(_Start(holder, tuple(ids))))
        if error is not None:
            raise error

    async def mark(self, claim: Claim, external_id: str | None, resent: bool) -> None:
        """Mark one row sent; returns once it is committed (or raises what the store said)."""
        error = await asyncio.shield(self.hand_over(claim, external_id, resent))  # a cancelled send's mark is written
        if error is not None:
            raise error

    def hand_over(self, claim: Claim, external_id: str | None, resent: bool) -> asyncio.Future:
        """Hand one row's mark over without waiting: the future is done once it is written,
        with None or the store's error."""
        return self._hand_over((claim, external_id, resent, self.core.clock.now()))

    def _hand_over(self, mark: tuple[Claim, str | None, bool, datetime] | _Start) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((mark, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._write(), name="outbox-sent-marks")
        return future

    async def _write(self) -> None:
        while self.waiting:
            batch: list = []
            try:
                async with self.core.sessions() as session, session.begin():
                    await session.connection()  # begun: what was handed over meanwhile goes in too
                    batch, self.waiting = self.waiting, []
                    self.writing = batch
                    if sent := [mark for mark, _ in batch if not isinstance(mark, _Start)]:
                        await _write_sent(session, sent)
                    for start in (mark for mark, _ in batch if isinstance(mark, _Start)):
                        await outbox.start(self.core, start.holder, start.ids, session)
                error = None
            except Exception as failure:  # every waiter hears of it; the next marks go on
                error = failure
                if not batch:  # the transaction never began: these marks were not taken
                    batch, self.waiting = self.waiting, []
            self.writing = []
            for _, future in batch:
                if not future.done():
                    future.set_result(error)


async def retry(core: Core, claim: Claim, reason: str, at: datetime, unsure: bool) -> None:
    """Try again later; ``unsure``: the attempt's outcome is unknown (look it up first)."""
    async with core.sessions() as session, session.begin():
        await session.execute(update(OutboxMessage).where(OutboxMessage.id == claim.id).values(
            status=QUEUED, claimed_by=None, next_attempt_at=at, last_error=reason[:2000],
            unsure=unsure or claim.unsure).execution_options(synchronize_session=False))


async def failed(core: Core, claim: Claim, reason: str) -> None:
    """The message cannot go out on its channel: record why, and try the next contact point."""
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        row = await session.get(OutboxMessage, claim.id, with_for_update=True)
        row.status, row.last_error, row.claimed_by = FAILED, reason[:2000], None
        await _fall_back(core, session, now, row, reason)
    core.outbox_ready.set()


async def report(core: Core, channel: str, state: DeliveryState, *, reference: str | None = None,
                 external_id: str | None = None, reason: str | None = None) -> bool:
    """Record what a provider reported of one of our messages; False when it is not ours.

    The message is found by our reference (given to the provider with the send) or by
    the provider's id for it. An undelivered or failed message goes on to the citizen's
    next contact point, once.
    """
    if reference is None and external_id is None:
        return False
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        query = select(OutboxMessage).where(OutboxMessage.channel == channel)
        query = query.where(OutboxMessage.reference == reference) if reference is not None else \
            query.where(OutboxMessage.external_id == external_id)
        row = await session.scalar(query.limit(1).with_for_update())
        if row is None:
            return False
        if _RANK[state] < _RANK[row.delivery] or row.delivery in UNDELIVERED:
            return True  # an earlier state arriving late, or a repeat of a final one
        row.delivery, row.delivered_at = state, now
        row.delivery_reason = (reason or "")[:2000] or None
        if state in UNDELIVERED:
            await _fall_back(core, session, now, row, f"{state}: {reason or 'no reason given'}")
    core.outbox_ready.set()
    log.info("delivery report", extra={"fields": {"channel": channel, "id": row.id, "state": state}})
    return True


def _fallback_key(key: str, channel: str) -> str:
    key = f"{key}>{channel}"
    return key if len(key) <= 200 else f"fb:{hashlib.sha256(key.encode()).hexdigest()}>{channel}"


async def _tried(session: AsyncSession, row: OutboxMessage) -> tuple[OutboxMessage, set[str]]:
    """The first message of a fallback chain, and every channel the chain has tried."""
    first = row
    channels = {row.channel}
    while first.fallback_of is not None:
        first = await session.get(OutboxMessage, first.fallback_of)
        channels.add(first.channel)
    return first, channels


async def _fall_back(core: Core, session: AsyncSession, now: datetime, row: OutboxMessage, reason: str) -> None:
    render = (row.payload or {}).get("render") or {}
    if "staff_id" in render:
        await _staff_fall_back(core, session, now, row, render["staff_id"])
        return
    if not render.get("text_key") or row.complaint_id is None:
        return  # a message with no complaint behind it (a status request's answer): nothing else to try
    first, tried = await _tried(session, row)
    complaint = await session.get(Complaint, row.complaint_id)
    contacts = (await reach.contacts_of(session, [complaint]))[complaint.id]
    point = await reach.choose(core, session, contacts, render["text_key"].removeprefix("citizen."), now, tried)
    if point is None:
        await _unreachable(core, session, now, complaint, row, reason)
        return
    files = tuple(Attachment(name, kind, stored_id=id_) for id_, name, kind in render.get("files") or ())
    queued = messages.to_citizen(core, complaint, point, _fallback_key(first.key, point.channel),
                                 render["text_key"], render.get("thread"), render.get("origin", "system"), files,
                                 **render.get("params", {}))
    await outbox.enqueue_many(session, now, [Queued(queued.message, complaint.id, queued.render, fallback_of=row.id)])
    session.add(Event(complaint_id=complaint.id, at=now, actor="system", kind="fallback",
                      detail={"message": first.key, "from": row.channel, "to": point.channel,
                              "reason": reason[:300]}))
    core.metrics.fallbacks.labels(row.channel, point.channel).inc()


async def _unreachable(core: Core, session: AsyncSession, now: datetime, complaint: Complaint,
                       row: OutboxMessage, reason: str) -> None:
    session.add(Event(complaint_id=complaint.id, at=now, actor="system", kind="unreachable",
                      detail={"message": row.key, "channel": row.channel, "reason": reason[:300]}))
    if complaint.unreachable_at is not None:
        return  # the officers know already
    complaint.unreachable_at = now
    core.metrics.unreachable.inc()
    directory = await core.directory.staff(session)
    await outbox.enqueue_many(session, now, messages.to_staff(
        core, directory, directory.assignees(complaint), f"unreachable:{complaint.id}:{now.isoformat()}",
        "staff.citizen_unreachable", complaint, reason=reason[:300]))


async def _staff_fall_back(core: Core, session: AsyncSession, now: datetime, row: OutboxMessage,
                           staff_id: int) -> None:
    """A staff message that Telegram could not carry goes to the member's email."""
    member = await session.get(Staff, staff_id)
    first, tried = await _tried(session, row)
    if member is None or "email" in tried or not member.email:
        return
    message = Outgoing.from_payload(row.channel, row.recipient, row.key, row.payload)
    moved = Outgoing(**{**message.__dict__, "channel": "email", "recipient": member.email,
                        "key": _fallback_key(first.key, "email"), "actions": ()})
    await outbox.enqueue_many(session, now, [Queued(moved, row.complaint_id, {"staff_id": staff_id},
                                                    fallback_of=row.id)])
    core.metrics.fallbacks.labels(row.channel, "email").inc()
