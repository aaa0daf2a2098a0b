"""Which complaint a citizen's message continues, and what a follow-up causes.

A message joins a complaint when it replies to one of our messages about it (or to the
citizen's own earlier message), when it names one of the sender's own tracking codes, or,
on a channel without reply threading (SMS), when it comes soon after from the same sender
while their complaint is open. A code named by a stranger joins nothing: the answer would
go to someone else. A follow-up reaches whoever works on the complaint ("Khách phàn nàn,
phải lắng nghe") and reopens a finished one; on a complaint waiting for the citizen's
answer to a question, it is that answer: the clock runs again (``bot/decisions.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import decisions, tracking
from bot.core import Core
from bot.lifecycle import notify_staff, queue_to_citizen, reopen
from bot.messages import format_time
from bot.statuses import FINISHED, Status
from contract.messages import Inbound
from storage.models import Complaint, Event, Message, OutboxMessage


async def continued(core: Core, session: AsyncSession, now: datetime, inbound: Inbound,
                         contact_ids: list[int]) -> Complaint | None:
    """The complaint this message continues: one it replies to, or one of the sender's it names."""
    if inbound.in_reply_to:
        # Only a reply from the person we wrote to (or who wrote the message replied to)
        # joins: someone copied on the thread, or a staff member, is not the citizen. A
        # bounce comes from a mailer-daemon; it is only recorded, so it may join.
        ours = select(Complaint).join(OutboxMessage, OutboxMessage.complaint_id == Complaint.id).where(
            OutboxMessage.channel == inbound.channel, OutboxMessage.external_id.in_(inbound.in_reply_to))
        theirs = select(Complaint).join(Message, Message.complaint_id == Complaint.id).where(
            Message.channel == inbound.channel, Message.external_id.in_(inbound.in_reply_to))
        if not inbound.automated:
            ours = ours.where(OutboxMessage.recipient == inbound.sender)
            theirs = theirs.where(Message.sender == inbound.sender)
        replied = await session.scalar(ours.limit(1)) or await session.scalar(theirs.limit(1))
        if replied is not None:
            return replied
    prefix = core.config.service.tracking_prefix
    codes = list(inbound.tracking_codes)
    for text in (inbound.subject or "", inbound.text):
        codes += tracking.find_codes(text, prefix)
    if not contact_ids:
        return None
    if codes:
        # A code alone does not join a stranger's message to someone else's complaint: the
        # answer would go to the other person. A stranger's message becomes a new complaint.
        return await session.scalar(
            select(Complaint).where(
                Complaint.tracking_code.in_(codes),
                or_(Complaint.contact_id.in_(contact_ids), Complaint.alternate_contact_id.in_(contact_ids)),
            ).order_by(Complaint.created_at.desc()).limit(1)
        )
    window = inbound.continues_within_hours
    if window > 0:
        # A channel without reply threading (SMS): a message soon after from the same sender
        # continues the open conversation rather than starting a new complaint.
        # A complaint waiting for the citizen's answer to a question takes it however late.
        return await session.scalar(
            select(Complaint).where(
                Complaint.contact_id == contact_ids[0], Complaint.status.not_in(FINISHED),
                or_(Complaint.updated_at >= now - timedelta(hours=window), Complaint.status == Status.WAITING),
            ).order_by((Complaint.status == Status.WAITING).desc(), Complaint.updated_at.desc()).limit(1)
        )
    return None


async def follow_up(core: Core, session: AsyncSession, now: datetime, complaint: Complaint, inbound: Inbound,
                    message_id: int) -> None:
    """What a citizen's message added to their complaint causes: the officers are told, the
    citizen hears it was added, and a finished complaint opens again."""
    complaint.updated_at = now
    if inbound.location is not None and complaint.latitude is None:
        # On a chat without drafts (Zalo) the place often comes as the next message: it is where the problem is.
        complaint.latitude, complaint.longitude = inbound.location.latitude, inbound.location.longitude
    session.add(Event(complaint_id=complaint.id, at=now, actor="citizen", kind="followup",
                      detail={"channel": inbound.channel, "message_id": message_id}))
    if complaint.status == Status.WAITING:
        # The answer to the officer's question: the clock runs again from where it stopped.
        waited = await decisions.resume(core, session, now, complaint)
        session.add(Event(complaint_id=complaint.id, at=now, actor="citizen", kind="resumed",
                          detail={"message_id": message_id, "waited_hours": round(waited, 2)}))
        await notify_staff(core, session, now, complaint, f"answered-staff:{message_id}", "staff.citizen_replied",
                           with_case=True, text=inbound.text or "-",
                           due=format_time(core, complaint.resolution_due, core.config.service.default_language))
        await queue_to_citizen(core, session, now, complaint, f"followup:{message_id}", "citizen.followup_received",
                               origin="reply")
        return
    # Khách phàn nàn, phải lắng nghe: what the citizen adds reaches whoever works on it.
    await notify_staff(core, session, now, complaint, f"followup-staff:{message_id}", "staff.followup",
                       with_case=True, text=inbound.text or "-")
    if complaint.status in FINISHED:
        reopen(core, session, now, complaint, "citizen")
        await queue_to_citizen(core, session, now, complaint, f"reopened:{message_id}", "citizen.reopened",
                               origin="reply", due=format_time(core, complaint.first_response_due, complaint.language))
    else:
        await queue_to_citizen(core, session, now, complaint, f"followup:{message_id}", "citizen.followup_received",
                               origin="reply")
