"""Intake: one ``Inbound`` from any channel becomes a stored complaint or a follow-up.

The steps, in one transaction: dedupe on (channel, channel message id), enforced by a
unique constraint so two concurrent deliveries still store one message; a rating reply
after a survey is a rating; a message that replies to one of our messages, names one of
the sender's tracking codes, or (SMS) comes soon after from the same phone joins that
complaint; anything else is a new complaint with a fresh tracking code, routed to its
unit with its deadlines, acknowledged through the outbox, told to the officers, and
recorded in the audit trail. The channel answers its sender only after this returns
(committed).

Messages arriving together are written together (group commit, ``IntakeWriter``): one
transaction and multi-row INSERTs for the batch, so a burst costs about as many round
trips to the database as one message. SQLite has one writer at a time, and per-message
transactions made intake wait on each other's round trips.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import and_, func, insert, or_, select
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
# Messages written in one transaction at most; more wait for the next one.
BATCH = 64


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
    return await core.intake_writer.submit(inbound)


class IntakeWriter:
    """Writes the messages waiting at a moment in one transaction, one batch at a time."""

    def __init__(self, core: Core):
        self.core = core
        self.waiting: list[tuple[Inbound, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def submit(self, inbound: Inbound) -> IntakeResult:
        """Queue one message for the next batch and wait until it is committed."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((inbound, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._write(), name="intake-writer")
        # Shielded: a caller that goes away (a client hanging up) does not cancel the
        # batch; its message is stored all the same, and a retry finds it.
        result = await asyncio.shield(future)
        if isinstance(result, Exception):
            raise result
        return result

    async def _write(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[:BATCH], self.waiting[BATCH:]
            try:
                results = await receive_batch(self.core, [inbound for inbound, _ in batch])
            except Exception as error:  # every waiter hears of it; the next batch goes on
                log.exception("intake batch failed")
                results = [error] * len(batch)
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)


async def receive_batch(core: Core, inbounds: list[Inbound]) -> list[IntakeResult | Exception]:
    """Store messages that arrived together in one transaction; results in the same order.

    When the batch fails (a unique constraint hit by a concurrent redelivery on another
    process or a tracking-code collision, or one message that cannot be stored) it is
    rolled back and each message is taken alone, with retries after a unique-constraint
    race, so one message's trouble never costs another its place.
    """
    try:
        async with core.sessions() as session, session.begin():
            results: list[IntakeResult | Exception] = list(await _receive_many(core, session, inbounds))
    except Exception as error:  # noqa: BLE001 - whatever it was, it must not fail the others
        if len(inbounds) == 1 and not isinstance(error, IntegrityError):
            results = [error]
        else:
            log.info("intake batch taken one by one", extra={"fields": {"size": len(inbounds),
                                                                         "error": type(error).__name__}})
            results = [await _receive_alone(core, inbound) for inbound in inbounds]
    for inbound, result in zip(inbounds, results):
        if isinstance(result, IntakeResult):
            _after_commit(core, inbound, result)
    return results


async def _receive_alone(core: Core, inbound: Inbound) -> IntakeResult | Exception:
    for attempt in range(ATTEMPTS):
        try:
            async with core.sessions() as session, session.begin():
                [result] = await _receive_many(core, session, [inbound])
            return result
        except IntegrityError as error:
            if attempt == ATTEMPTS - 1:
                return error
            log.info("intake retry after a concurrent write", extra={"fields": {"channel": inbound.channel}})
        except Exception as error:  # handed to the waiting channel, which answers its sender
            return error
    raise AssertionError("unreachable")


def _after_commit(core: Core, inbound: Inbound, result: IntakeResult) -> None:
    core.metrics.messages_received.labels(inbound.channel, result.outcome).inc()
    if result.outcome == "created":
        core.metrics.complaints_received.labels(inbound.channel).inc()
    if result.outcome in ("created", "followup", "rated"):
        core.outbox_ready.set()
    log.info("message received", extra={"fields": {"channel": inbound.channel, "outcome": result.outcome,
                                                   "code": result.tracking_code or "-"}})


def _result(core: Core, outcome: Outcome, complaint: Complaint | None, language: str = "vi") -> IntakeResult:
    if complaint is None:
        return IntakeResult(outcome, None, None, language, "", None)
    return IntakeResult(outcome, complaint.tracking_code, complaint.id, complaint.language,
                        core.unit_name(complaint.unit_id, complaint.language), complaint.first_response_due)


async def _receive_many(core: Core, session: AsyncSession, inbounds: list[Inbound]) -> list[IntakeResult]:
    """Take a batch of messages in the caller's transaction."""
    now = core.clock.now()
    keys = {(i.channel, i.external_id) for i in inbounds if i.external_id is not None}
    existing: dict[tuple[str, str], Complaint | None] = {}
    if keys:
        rows = (await session.execute(
            select(Message.channel, Message.external_id, Complaint)
            .outerjoin(Complaint, Message.complaint_id == Complaint.id)
            .where(or_(*(and_(Message.channel == c, Message.external_id == e) for c, e in keys))))).all()
        existing = {(channel, external_id): complaint for channel, external_id, complaint in rows}
    contact_pairs = [_contacts_of(inbound) for inbound in inbounds]
    contact_ids = await _contact_ids(session, now, inbounds, contact_pairs)
    results: list[IntakeResult | None] = [None] * len(inbounds)
    first_of: dict[tuple[str, str], int] = {}
    new: list[int] = []
    for index, inbound in enumerate(inbounds):
        key = (inbound.channel, inbound.external_id)
        if inbound.external_id is not None and key in existing:
            results[index] = _result(core, "duplicate", existing[key])
            continue
        if inbound.external_id is not None and key in first_of:
            continue  # the same delivery twice in one batch: answered below, from the first
        if inbound.external_id is not None:
            first_of[key] = index
        if _plain_new(core, inbound, contact_pairs[index]):
            new.append(index)
        else:
            results[index] = await _receive_one(core, session, now, inbound, contact_pairs[index], contact_ids)
    if new:
        filed = await _file_many(core, session, now, [inbounds[i] for i in new], [contact_pairs[i] for i in new],
                                 contact_ids)
        for index, complaint in zip(new, filed):
            results[index] = _result(core, "created", complaint)
    for index, inbound in enumerate(inbounds):
        if results[index] is None:
            results[index] = replace(results[first_of[(inbound.channel, inbound.external_id)]], outcome="duplicate")
    return results


def _contacts_of(inbound: Inbound) -> list[tuple[str, str]]:
    """Where answers go, best first: the sender, then what a form gave; two at most."""
    pairs = [(inbound.channel, inbound.sender)] if inbound.sender else []
    pairs += [pair for pair in inbound.reply_to if pair[1]]
    return list(dict.fromkeys(pairs))[:2]


def _plain_new(core: Core, inbound: Inbound, contacts: list[tuple[str, str]]) -> bool:
    """True for a message that can only be a new complaint, so needs no look-up first."""
    if inbound.automated or inbound.in_reply_to or inbound.tracking_codes:
        return False
    if inbound.channel == "sms" and core.config.sms.followup_window_hours > 0 and contacts:
        return False
    if contacts and satisfaction.parse_reply(inbound.text) is not None:
        return False
    prefix = core.config.service.tracking_prefix
    return not (tracking.find_codes(inbound.subject or "", prefix) or tracking.find_codes(inbound.text, prefix))


async def _contact_ids(session: AsyncSession, now: datetime, inbounds: list[Inbound],
                       pairs: list[list[tuple[str, str]]]) -> dict[tuple[str, str], int]:
    """Find or create every contact of a batch in one statement; ids by (channel, address)."""
    rows: dict[tuple[str, str], dict] = {}
    for inbound, contacts in zip(inbounds, pairs):
        language = (inbound.language or "").split("-")[0].lower()
        for channel, address in contacts:
            rows.setdefault((channel, address), dict(
                channel=channel, address=address, display_name=inbound.sender_name,
                language=language if language in ("vi", "en") else "vi", created_at=now,
                via=inbound.via if channel == inbound.channel else None))
    if not rows:
        return {}
    statement = upsert(session, Contact)
    # On conflict, keep the gateway the citizen last wrote through; the update also makes
    # RETURNING give the id of an existing contact.
    statement = statement.on_conflict_do_update(
        index_elements=["channel", "address"], set_={"via": func.coalesce(statement.excluded.via, Contact.via)})
    found = await session.execute(statement.returning(Contact.channel, Contact.address, Contact.id,
                                                      sort_by_parameter_order=True), list(rows.values()))
    return {(channel, address): id_ for channel, address, id_ in found.all()}


async def _receive_one(core: Core, session: AsyncSession, now: datetime, inbound: Inbound,
                       contacts: list[tuple[str, str]], contact_ids: dict[tuple[str, str], int]) -> IntakeResult:
    """A message that may be a rating, a follow-up or a machine's: look before filing."""
    ids = [contact_ids[pair] for pair in contacts]
    reply = None if inbound.automated else satisfaction.parse_reply(inbound.text)
    if reply is not None:
        # "5" after a survey is a rating, not a new complaint.
        rated = await satisfaction.awaiting_rating(session, core, ids, now, inbound.tracking_codes)
        if rated is not None:
            await _store_messages(session, now, [rated], [inbound])
            await satisfaction.record(core, session, now, rated, reply[0], reply[1], via=inbound.channel)
            return _result(core, "rated", rated)
    complaint = await _thread_target(core, session, now, inbound, ids)
    if inbound.automated:
        [message_id] = await _store_messages(session, now, [complaint], [inbound])
        session.add(Event(complaint_id=complaint.id if complaint else None, at=now, actor="system",
                          kind="automated_message", detail={"channel": inbound.channel, "message_id": message_id}))
        return _result(core, "ignored", complaint, core.texts.language(inbound.language))
    if complaint is not None:
        await _follow_up(core, session, now, complaint, inbound)
        return _result(core, "followup", complaint)
    [complaint] = await _file_many(core, session, now, [inbound], [contacts], contact_ids)
    return _result(core, "created", complaint)


async def _thread_target(core: Core, session: AsyncSession, now: datetime, inbound: Inbound,
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




async def _store_messages(session: AsyncSession, now: datetime, complaints: list[Complaint | None],
                          inbounds: list[Inbound]) -> list[int]:
    """Insert the citizens' messages (and their attachments); return their ids."""
    message_ids = (await session.scalars(
        insert(Message).returning(Message.id, sort_by_parameter_order=True),
        [dict(complaint_id=complaint.id if complaint else None, direction="in", channel=inbound.channel,
              external_id=inbound.external_id, text=inbound.text, subject=inbound.subject, sender=inbound.sender,
              automated=inbound.automated, public=False, created_at=now)
         for complaint, inbound in zip(complaints, inbounds)])).all()
    files = [dict(message_id=message_id, filename=item.filename[:255], content_type=item.content_type[:127],
                  size=len(item.data), sha256=hashlib.sha256(item.data).hexdigest() if item.data else None,
                  data=item.data or None, reference=item.reference)
             for message_id, inbound in zip(message_ids, inbounds) for item in inbound.attachments]
    if files:
        await session.execute(insert(Attachment), files)
    return list(message_ids)


async def _file_many(core: Core, session: AsyncSession, now: datetime, inbounds: list[Inbound],
                     contacts: list[list[tuple[str, str]]], contact_ids: dict[tuple[str, str], int]) -> list[Complaint]:
    """File new complaints: route, set deadlines, insert, acknowledge, tell the officers.

    Multi-row Core INSERTs, not ORM flushes: intake is the hot path, and a batch costs
    about as many round trips to the database as one complaint.
    """
    config = core.config
    rules = await core.routing_rules(session)
    complaints, decisions = [], []
    for inbound, pairs in zip(inbounds, contacts):
        decision = routing.route(rules, config.routing.default_unit, text=inbound.text, subject=inbound.subject,
                                 area=inbound.area, category=inbound.category, channel=inbound.channel)
        first_hours, resolution_hours = core.deadline_hours(decision.unit, inbound.category)
        ids = [contact_ids[pair] for pair in pairs]
        complaint = Complaint(
            tracking_code=tracking.new_code(config.service.tracking_prefix),
            contact_id=ids[0] if ids else None, alternate_contact_id=ids[1] if len(ids) > 1 else None,
            channel=inbound.channel, language=core.texts.language(inbound.language),
            subject=(inbound.subject or None) and inbound.subject[:300],
            text=inbound.text, category=inbound.category, area=inbound.area,
            latitude=inbound.location.latitude if inbound.location else None,
            longitude=inbound.location.longitude if inbound.location else None,
            unit_id=core.unit_ids[decision.unit], routing_reason=decision.reason[:300], status="new",
            created_at=now, updated_at=now, escalation_count=0,
            first_response_due=core.calendar.add_working_hours(now, first_hours),
            resolution_due=core.calendar.add_working_hours(now, resolution_hours),
        )
        schedule_checks(core, complaint)
        complaints.append(complaint)
        decisions.append(decision)
    columns = [c.key for c in Complaint.__table__.columns if c.key != "id"]
    ids = (await session.scalars(insert(Complaint).returning(Complaint.id, sort_by_parameter_order=True),
                                 [{k: getattr(c, k) for k in columns} for c in complaints])).all()
    for complaint, id_ in zip(complaints, ids):
        complaint.id = id_
    await _store_messages(session, now, complaints, inbounds)
    events, queued = [], []
    directory = await core.staff_directory(session)
    for complaint, decision, inbound, pairs in zip(complaints, decisions, inbounds, contacts):
        events += [
            dict(complaint_id=complaint.id, at=now, actor="citizen", kind="created",
                 detail={"channel": inbound.channel, "first_response_due": complaint.first_response_due.isoformat()}),
            dict(complaint_id=complaint.id, at=now, actor="system", kind="routed",
                 detail={"unit": decision.unit, "reason": decision.reason, "rule": decision.rule}),
        ]
        if pairs:
            channel, address = pairs[0]
            contact = Contact(id=complaint.contact_id, channel=channel, address=address,
                              via=inbound.via if channel == inbound.channel else None)
            thread = [inbound.external_id] if inbound.external_id and channel in messages.THREADED_CHANNELS else []
            queued.append(messages.to_citizen(
                core, complaint, contact, f"ack:{complaint.tracking_code}", "citizen.acknowledgement", thread,
                due=core.format_time(complaint.first_response_due, complaint.language)))
        queued += to_staff(core, directory, directory.assignees(complaint), f"new:{complaint.tracking_code}",
                           "staff.new_complaint", complaint)
    await session.execute(insert(Event), events)
    await outbox.enqueue_many(session, now, queued)
    return complaints


async def _follow_up(core: Core, session: AsyncSession, now: datetime, complaint: Complaint, inbound: Inbound) -> None:
    [message_id] = await _store_messages(session, now, [complaint], [inbound])
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
