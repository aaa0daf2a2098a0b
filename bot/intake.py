"""Intake: one ``Inbound`` from any channel becomes a stored complaint or a follow-up.

The steps, in one transaction: dedupe on (channel, channel message id), enforced by a
unique constraint so two concurrent deliveries still store one message; thread onto an
existing complaint when the message names one of the sender's tracking codes or replies
to one of our messages; otherwise file a new complaint with a fresh tracking code,
assign it to its unit, set its deadlines, queue the acknowledgement and record the
audit event. The channel acknowledges its sender only after this returns (committed).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import messages, outbox, routing, satisfaction, tracking
from bot.core import Core
from bot.directory import to_staff
from bot.lifecycle import notify_staff, queue_to_citizen, reopen
from bot.sweep import schedule_checks
from channels.base import Inbound
from storage.db import upsert
from storage.models import Attachment, Complaint, Contact, Event, Message, OutboxMessage

log = logging.getLogger(__name__)

Outcome = Literal["created", "followup", "duplicate", "ignored", "rated"]
CLOSED_STATUSES = ("resolved", "closed")
# A unique-constraint race (a concurrent delivery, or a tracking-code collision) is
# retried from the start; more than a few in a row means something else is wrong.
ATTEMPTS = 4


class IntakeError(ValueError):
    """The message cannot be taken as it is (empty, unknown category); says why."""


@dataclass(frozen=True)
class IntakeResult:
    """What intake did with a message, for the channel's answer to its sender."""

    outcome: Outcome
    tracking_code: str | None  # None when an automated message was recorded on no complaint
    complaint_id: int | None
    language: str
    unit: str
    due: datetime | None


async def receive(core: Core, inbound: Inbound) -> IntakeResult:
    """Store an inbound message and queue what it causes; return once committed."""
    if not inbound.text.strip() and not inbound.attachments:
        raise IntakeError("empty message")
    if inbound.category is not None and core.config.category(inbound.category) is None:
        raise IntakeError(f"unknown category {inbound.category!r}")
    for attempt in range(ATTEMPTS):
        try:
            async with core.sessions() as session, session.begin():
                # The unique (channel, external id) constraint catches a redelivery; look
                # first only when retrying after it fired, to keep the common path short.
                result = await _receive(core, session, inbound, check_duplicate=attempt > 0)
            break
        except IntegrityError:
            if attempt == ATTEMPTS - 1:
                raise
            log.info("intake retry after a concurrent write", extra={"fields": {"channel": inbound.channel}})
    core.metrics.messages_received.labels(inbound.channel, result.outcome).inc()
    if result.outcome == "created":
        core.metrics.complaints_received.labels(inbound.channel).inc()
    if result.outcome in ("created", "followup", "rated"):
        core.outbox_ready.set()
    log.info("message received", extra={"fields": {"channel": inbound.channel, "outcome": result.outcome,
                                                   "code": result.tracking_code or "-"}})
    return result


def _result(core: Core, outcome: Outcome, complaint: Complaint | None, language: str = "vi") -> IntakeResult:
    if complaint is None:
        return IntakeResult(outcome, None, None, language, "", None)
    return IntakeResult(outcome, complaint.tracking_code, complaint.id, complaint.language,
                        core.unit_name(complaint.unit_id, complaint.language), complaint.first_response_due)


async def _receive(core: Core, session: AsyncSession, inbound: Inbound, check_duplicate: bool) -> IntakeResult:
    now = core.clock.now()
    if inbound.external_id is not None and check_duplicate:
        existing = (await session.execute(
            select(Message.id, Complaint).outerjoin(Complaint, Message.complaint_id == Complaint.id)
            .where(Message.channel == inbound.channel, Message.external_id == inbound.external_id)
        )).first()
        if existing is not None:
            return _result(core, "duplicate", existing[1])
    language = core.texts.language(inbound.language)
    contacts = [(inbound.channel, inbound.sender)] if inbound.sender else []
    contacts += [pair for pair in inbound.reply_to if pair[1]]
    contacts = contacts[:2]
    contact_ids = [await _contact_id(session, now, channel, address, inbound.sender_name, language)
                   for channel, address in contacts]
    reply = None if inbound.automated else satisfaction.parse_reply(inbound.text)
    if reply is not None:
        # "5" after a survey is a rating, not a new complaint.
        rated = await satisfaction.awaiting_rating(session, core, contact_ids, now)
        if rated is not None:
            await _store_message(session, now, rated, inbound)
            await satisfaction.record(core, session, now, rated, reply[0], reply[1], via=inbound.channel)
            return _result(core, "rated", rated)
    complaint = await _thread_target(core, session, now, inbound, contact_ids)
    if inbound.automated:
        await _record_automated(session, now, complaint, inbound)
        return _result(core, "ignored", complaint, language)
    if complaint is not None:
        await _follow_up(core, session, now, complaint, inbound)
        return _result(core, "followup", complaint)
    complaint = await _file(core, session, now, inbound, language, contact_ids, contacts)
    return _result(core, "created", complaint)


async def _contact_id(session: AsyncSession, now: datetime, channel: str, address: str,
                      name: str | None, language: str) -> int:
    statement = upsert(session, Contact).values(
        channel=channel, address=address, display_name=name, language=language, created_at=now)
    # A no-op update on conflict, so that RETURNING gives the id of an existing contact too.
    statement = statement.on_conflict_do_update(index_elements=["channel", "address"],
                                                set_={"channel": statement.excluded.channel})
    return await session.scalar(statement.returning(Contact.id))


async def _thread_target(core: Core, session: AsyncSession, now: datetime, inbound: Inbound,
                         contact_ids: list[int]) -> Complaint | None:
    """The complaint this message continues: one it replies to, or one of the sender's it names."""
    if inbound.in_reply_to:
        replied = await session.scalar(
            select(Complaint).join(OutboxMessage, OutboxMessage.complaint_id == Complaint.id)
            .where(OutboxMessage.channel == inbound.channel, OutboxMessage.external_id.in_(inbound.in_reply_to))
            .limit(1)
        ) or await session.scalar(
            select(Complaint).join(Message, Message.complaint_id == Complaint.id)
            .where(Message.channel == inbound.channel, Message.external_id.in_(inbound.in_reply_to)).limit(1)
        )
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
    window = core.config.sms.followup_window_hours
    if inbound.channel == "sms" and window > 0:
        # SMS has no reply threading: a text soon after from the same phone continues the
        # open conversation rather than starting a new complaint.
        return await session.scalar(
            select(Complaint).where(
                Complaint.contact_id == contact_ids[0], Complaint.status.not_in(CLOSED_STATUSES),
                Complaint.updated_at >= now - timedelta(hours=window),
            ).order_by(Complaint.updated_at.desc()).limit(1)
        )
    return None


async def _record_automated(session: AsyncSession, now: datetime, complaint: Complaint | None,
                            inbound: Inbound) -> None:
    """Keep a machine's message (on its complaint if it threads) and answer nothing."""
    message_id = await _store_message(session, now, complaint, inbound)
    session.add(Event(complaint_id=complaint.id if complaint else None, at=now, actor="system",
                      kind="automated_message", detail={"channel": inbound.channel, "message_id": message_id}))


async def _store_message(session: AsyncSession, now: datetime, complaint: Complaint | None,
                         inbound: Inbound) -> int:
    message_id = await session.scalar(insert(Message).values(
        complaint_id=complaint.id if complaint else None, direction="in", channel=inbound.channel,
        external_id=inbound.external_id, text=inbound.text, subject=inbound.subject, sender=inbound.sender,
        automated=inbound.automated, public=False, created_at=now).returning(Message.id))
    if inbound.attachments:
        await session.execute(insert(Attachment), [dict(
            message_id=message_id, filename=item.filename[:255], content_type=item.content_type[:127],
            size=len(item.data), sha256=hashlib.sha256(item.data).hexdigest() if item.data else None,
            data=item.data or None, reference=item.reference) for item in inbound.attachments])
    return message_id


async def _file(core: Core, session: AsyncSession, now: datetime, inbound: Inbound, language: str,
                contact_ids: list[int], contacts: list[tuple[str, str]]) -> Complaint:
    config = core.config
    decision = routing.route(await core.routing_rules(session), config.routing.default_unit, text=inbound.text,
                             subject=inbound.subject, area=inbound.area, category=inbound.category,
                             channel=inbound.channel)
    first_hours, resolution_hours = core.deadline_hours(decision.unit, inbound.category)
    first_due = core.calendar.add_working_hours(now, first_hours)
    complaint = Complaint(
        tracking_code=tracking.new_code(config.service.tracking_prefix),
        contact_id=contact_ids[0] if contact_ids else None,
        alternate_contact_id=contact_ids[1] if len(contact_ids) > 1 else None,
        channel=inbound.channel, language=language, subject=(inbound.subject or None) and inbound.subject[:300],
        text=inbound.text, category=inbound.category, area=inbound.area,
        latitude=inbound.location.latitude if inbound.location else None,
        longitude=inbound.location.longitude if inbound.location else None,
        unit_id=core.unit_ids[decision.unit], routing_reason=decision.reason[:300], status="new",
        created_at=now, updated_at=now, first_response_due=first_due,
        resolution_due=core.calendar.add_working_hours(now, resolution_hours),
    )
    schedule_checks(core, complaint)
    # A Core INSERT, not an ORM flush: intake is the hot path. Columns left None take
    # their defaults.
    values = {column.key: getattr(complaint, column.key) for column in Complaint.__table__.columns
              if getattr(complaint, column.key) is not None}
    complaint.id = await session.scalar(insert(Complaint).values(**values).returning(Complaint.id))
    await _store_message(session, now, complaint, inbound)
    await session.execute(insert(Event), [
        dict(complaint_id=complaint.id, at=now, actor="citizen", kind="created",
             detail={"channel": inbound.channel, "first_response_due": first_due.isoformat()}),
        dict(complaint_id=complaint.id, at=now, actor="system", kind="routed",
             detail={"unit": decision.unit, "reason": decision.reason, "rule": decision.rule}),
    ])
    queued = []
    if contacts:
        channel, address = contacts[0]
        contact = Contact(id=contact_ids[0], channel=channel, address=address, language=language)
        thread = [inbound.external_id] if inbound.external_id and channel in messages.THREADED_CHANNELS else []
        queued.append(messages.to_citizen(core, complaint, contact, f"ack:{complaint.tracking_code}",
                                          "citizen.acknowledgement", thread, due=core.format_time(first_due, language)))
    directory = await core.staff_directory(session)
    queued += to_staff(core, directory, directory.assignees(complaint), f"new:{complaint.tracking_code}",
                       "staff.new_complaint", complaint)
    await outbox.enqueue_many(session, now, queued)
    return complaint


async def _follow_up(core: Core, session: AsyncSession, now: datetime, complaint: Complaint, inbound: Inbound) -> None:
    message_id = await _store_message(session, now, complaint, inbound)
    complaint.updated_at = now
    session.add(Event(complaint_id=complaint.id, at=now, actor="citizen", kind="followup",
                      detail={"channel": inbound.channel, "message_id": message_id}))
    # Khách phàn nàn, phải lắng nghe: what the citizen adds reaches whoever works on it.
    await notify_staff(core, session, now, complaint, f"followup-staff:{message_id}", "staff.followup",
                       text=inbound.text or "-")
    if complaint.status in CLOSED_STATUSES:
        reopen(core, session, now, complaint, "citizen")
        await queue_to_citizen(core, session, now, complaint, f"reopened:{message_id}", "citizen.reopened",
                                due=core.format_time(complaint.first_response_due, complaint.language))
    else:
        await queue_to_citizen(core, session, now, complaint, f"followup:{message_id}", "citizen.followup_received")
