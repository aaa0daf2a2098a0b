"""Status changes of a complaint and the messages each one causes.

Every change is written with its audit event and the messages it causes to the citizen
in one transaction ("Khách cần, được thông báo": assigned, answered, resolved, reopened,
passed to another unit); the messages go out through the outbox on the citizen's own
channel. Staff commands (Telegram, CLI) call these functions and nothing lower.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import messages, outbox, reach, urgency
from bot.core import Core
from bot.incidents import grouping
from bot.folding import fold
from bot.messages import format_time, to_staff
from bot.statuses import CLAIMABLE, FINISHED, Status, schedule_checks
from contract.messages import Attachment, Origin
from contract.messages import Attachment as ContractAttachment
from contract.results import LifecycleError
from storage.models import Attachment as StoredAttachment
from storage.models import Complaint, Event, Message, Staff, Unit

__all__ = ["LifecycleError", "answer", "assign", "note", "notify_staff", "queue_to_citizen", "reassign", "reopen",
           "reopen_by_staff", "resolve"]


async def queue_to_citizen(core: Core, session: AsyncSession, now: datetime, complaint: Complaint, key: str,
                           text_key: str, origin: Origin = "system", attachments: tuple[Attachment, ...] = (),
                           **params: str) -> None:
    """Queue a catalogue text to the complaint's citizen, on the contact point that can
    carry it now (``bot/reach.py``), if they left a way to reach them."""
    if complaint.contact_id is None:
        return  # an anonymous web citizen reads everything on the status page
    contacts = (await reach.contacts_of(session, [complaint]))[complaint.id]
    point = await reach.choose(core, session, contacts, text_key.removeprefix("citizen."), now)
    if point is None:
        return
    thread = None
    if any(contact.channel in messages.THREADED_CHANNELS for contact in contacts):
        thread = (await messages.thread_ids(session, [complaint.id])).get(complaint.id)
    await outbox.enqueue_many(session, now, [messages.to_citizen(core, complaint, point, key, text_key, thread,
                                                                 origin, attachments, **params)])


async def notify_staff(core: Core, session: AsyncSession, now: datetime, complaint: Complaint, key: str,
                       text_key: str, *, with_case: bool = False, **params: object) -> None:
    """Tell the people working on a complaint (assignee, else the unit's officers) about it.

    ``with_case``: the notification carries the case's history and photos.
    """
    directory = await core.directory.staff(session)
    case = await messages.load_case(session, complaint) if with_case else None
    await outbox.enqueue_many(session, now, to_staff(core, directory, directory.assignees(complaint), key, text_key,
                                                     complaint, case, **params))


def reopen(core: Core, session: AsyncSession, now: datetime, complaint: Complaint, actor: str,
           **detail: object) -> None:
    """Open a finished complaint again with fresh deadlines (caller's transaction)."""
    previous = complaint.status
    complaint.status, complaint.resolved_at, complaint.first_response_at = Status.REOPENED, None, None
    # A fresh round: its deadlines, reminders and apology are new (the events keep the old).
    complaint.apologised_for_due = complaint.reminded_for_due = None
    complaint.paused_at = complaint.waiting_reminded_at = None
    urgency.set_deadlines(core, complaint, now, core.directory.unit_slug(complaint.unit_id))
    complaint.updated_at = now
    schedule_checks(core, complaint)
    session.add(Event(complaint_id=complaint.id, at=now, actor=actor, kind=Status.REOPENED,
                      detail={"from": previous, "first_response_due": complaint.first_response_due.isoformat(),
                              **detail}))


@dataclass
class _Change:
    session: AsyncSession
    complaint: Complaint
    actor: Staff | None
    now: datetime

    @property
    def actor_name(self) -> str:
        return f"staff:{self.actor.slug}" if self.actor else "system"

    def event(self, kind: str, **detail: object) -> None:
        self.session.add(Event(complaint_id=self.complaint.id, at=self.now, actor=self.actor_name, kind=kind,
                               detail=detail))


def _event(change: _Change, complaint: Complaint, kind: str, **detail: object) -> None:
    """An audit event on another complaint of the same change (a report of the same incident)."""
    change.session.add(Event(complaint_id=complaint.id, at=change.now, actor=change.actor_name, kind=kind,
                             detail=detail))


@asynccontextmanager
async def _change(core: Core, tracking_code: str, staff_slug: str | None) -> AsyncIterator[_Change]:
    """One transaction on one complaint, locked against concurrent changes."""
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        complaint = await session.scalar(
            select(Complaint).where(Complaint.tracking_code == tracking_code).with_for_update())
        if complaint is None:
            raise LifecycleError(f"no complaint {tracking_code}")
        actor = None
        if staff_slug is not None:
            actor = await session.scalar(select(Staff).where(Staff.slug == staff_slug, Staff.active.is_(True)))
            if actor is None:
                raise LifecycleError(f"no staff member {staff_slug}")
        change = _Change(session, complaint, actor, now)
        yield change
        complaint.updated_at = now
        schedule_checks(core, complaint)
    core.outbox_ready.set()


async def assign(core: Core, tracking_code: str, staff_slug: str, by: str | None = None) -> None:
    """Give a complaint to an officer of its unit (an officer claiming it, or a head assigning)."""
    async with _change(core, tracking_code, by or staff_slug) as change:
        complaint = change.complaint
        officer = await change.session.scalar(select(Staff).where(Staff.slug == staff_slug,
                                                                  Staff.active.is_(True)))
        if officer is None:
            raise LifecycleError(f"no staff member {staff_slug}")
        if complaint.status in FINISHED:
            raise LifecycleError(f"complaint {tracking_code} is {complaint.status}")
        previous = complaint.status
        complaint.assignee_id = officer.id
        if complaint.status in CLAIMABLE:
            complaint.status = Status.ASSIGNED
        change.event(Status.ASSIGNED, officer=officer.slug, **{"from": previous})
        # An incident has one owner: every report of it is the officer's, each citizen told once.
        for target in [complaint, *await grouping.members(change.session, complaint)]:
            if target is not complaint:
                was, target.assignee_id, target.updated_at = target.status, officer.id, change.now
                if target.status in CLAIMABLE:
                    target.status = Status.ASSIGNED
                _event(change, target, Status.ASSIGNED, officer=officer.slug, incident=complaint.incident_id,
                       **{"from": was})
            if (previous if target is complaint else was) == Status.NEW:
                await queue_to_citizen(core, change.session, change.now, target, f"assigned:{target.id}",
                                       "citizen.status_changed",
                                       status=core.texts.get(target.language, f"status.{Status.ASSIGNED}"))


def reason_given(core: Core, slug: str | None, action: str, language: str) -> str:
    """The name of a configured reason for an action, in a language; LifecycleError without one."""
    found = core.config.reason(slug or "", action)
    if found is None:
        choices = ", ".join(r.slug for r in core.config.reasons if action in r.actions)
        raise LifecycleError(f"{action} needs a reason, one of {choices}", "reason_needed", action=action,
                             reasons=choices)
    return found.name_en or found.name if language == "en" else found.name


async def reassign(core: Core, tracking_code: str, unit_slug: str, by: str | None = None,
                   restart_deadlines: bool = True, reason: str | None = None, note: str = "") -> None:
    """Pass a complaint to another unit, with a reason from the configured list (and free
    text); deadlines are recomputed and the citizen told the reason and the new date."""
    async with _change(core, tracking_code, by) as change:
        complaint = change.complaint
        why = reason_given(core, reason, "transfer", complaint.language)
        unit = await change.session.scalar(select(Unit).where(Unit.slug == unit_slug, Unit.active.is_(True)))
        if unit is None:
            raise LifecycleError(f"no unit {unit_slug}")
        if unit.id == complaint.unit_id:
            raise LifecycleError(f"complaint {tracking_code} is already with {unit_slug}")
        previous = core.directory.unit_slug(complaint.unit_id)
        complaint.unit_id, complaint.assignee_id = unit.id, None
        if complaint.status == Status.ASSIGNED:
            complaint.status = Status.NEW
        old_due = complaint.first_response_due
        start = change.now if restart_deadlines else complaint.created_at
        urgency.set_deadlines(core, complaint, start, unit_slug, first_response=complaint.first_response_at is None)
        complaint.routing_reason = f"reassigned from {previous} by {change.actor_name}"[:300]
        change.event("reassigned", reason=reason, note=note[:500], **{
            "from": previous, "to": unit_slug, "first_response_due": {"from": old_due and old_due.isoformat(),
                                                                      "to": complaint.first_response_due.isoformat()}})
        await queue_to_citizen(core, change.session, change.now, complaint,
                               f"reassigned:{complaint.id}:{change.now.isoformat()}", "citizen.reassigned",
                               due=format_time(core, complaint.first_response_due, complaint.language),
                               reason=" — ".join(filter(None, [why, note.strip()])))
        # The incident moves whole: every report to the new unit, with the lead's deadlines.
        for other in await grouping.members(change.session, complaint):
            other.unit_id, other.assignee_id, other.updated_at = unit.id, None, change.now
            if other.status == Status.ASSIGNED:
                other.status = Status.NEW
            if other.first_response_at is None:
                other.first_response_due = complaint.first_response_due
            other.resolution_due = complaint.resolution_due
            _event(change, other, "reassigned", incident=complaint.incident_id, reason=reason,
                   **{"from": previous, "to": unit_slug})
            await queue_to_citizen(core, change.session, change.now, other,
                                   f"reassigned:{other.id}:{change.now.isoformat()}", "citizen.reassigned",
                                   due=format_time(core, other.first_response_due, other.language),
                                   reason=" — ".join(filter(None, [reason_given(core, reason, "transfer",
                                                                                other.language), note.strip()])))
        await notify_staff(core, change.session, change.now, complaint,
                           f"reassigned-staff:{complaint.id}:{change.now.isoformat()}", "staff.reassigned_in",
                           with_case=True)


async def answer(core: Core, tracking_code: str, staff_slug: str, text: str,
                 source_id: str | None = None, attachments: tuple[Attachment, ...] = ()) -> Message | None:
    """Record an officer's public answer and send it to the citizen on their channel.

    ``source_id`` names where the answer came from (a Telegram chat and message): the same
    answer delivered again, to this process or another, is recorded and sent once; the
    repeat returns None.
    """
    if not text.strip() and not attachments:
        raise LifecycleError("empty answer")
    try:
        async with _change(core, tracking_code, staff_slug) as change:
            complaint = change.complaint
            message = Message(complaint_id=complaint.id, direction="out", channel="staff", external_id=source_id,
                              author_staff_id=change.actor.id, text=text, public=True, created_at=change.now,
                              folded=fold(text))
            change.session.add(message)
            await change.session.flush()
            # Photos or documents that show the work done: kept with the answer, shown on the
            # status page, and sent to the citizen where their channel can carry them.
            sent = []
            for item in attachments:
                stored = StoredAttachment(message_id=message.id, filename=item.filename[:255],
                                          content_type=item.content_type[:127], size=len(item.data),
                                          sha256=hashlib.sha256(item.data).hexdigest() if item.data else None,
                                          data=item.data or None, reference=item.reference)
                change.session.add(stored)
                await change.session.flush()
                sent.append(ContractAttachment(stored.filename, stored.content_type, stored_id=stored.id))
            previous = complaint.status
            if complaint.status not in FINISHED:
                complaint.status = Status.ANSWERED
            complaint.first_response_at = complaint.first_response_at or change.now
            complaint.assignee_id = complaint.assignee_id or change.actor.id
            change.event(Status.ANSWERED, message_id=message.id, **{"from": previous})
            told = text
            if sent:
                # Every channel says where the files are; one that can carry them sends them too.
                told = "\n".join(filter(None, [text.strip(), core.texts.get(
                    complaint.language, "citizen.answer_files", count=len(sent),
                    track_url=messages.track_url(core, complaint.tracking_code))]))
            await queue_to_citizen(core, change.session, change.now, complaint, f"answer:{message.id}",
                                   "citizen.answer", origin="person", attachments=tuple(sent), text=told)
            # One answer to an incident reaches every reporter, each on their own channel, once.
            for other in await grouping.members(change.session, complaint):
                copy = Message(complaint_id=other.id, direction="out", channel="staff", author_staff_id=change.actor.id,
                               text=text, public=True, created_at=change.now)
                change.session.add(copy)
                await change.session.flush()
                # The files too, shown on each reporter's own page: the bytes stay with the first.
                for item in sent:
                    change.session.add(StoredAttachment(
                        message_id=copy.id, filename=item.filename, content_type=item.content_type, size=0,
                        reference=f"{messages.SHARED_FILE}{item.stored_id}"))
                was = other.status
                other.status = Status.ANSWERED
                other.first_response_at = other.first_response_at or change.now
                other.assignee_id = other.assignee_id or change.actor.id
                other.updated_at = change.now
                _event(change, other, Status.ANSWERED, message_id=copy.id, incident=complaint.incident_id,
                       **{"from": was})
                theirs = text if not sent else "\n".join(filter(None, [text.strip(), core.texts.get(
                    other.language, "citizen.answer_files", count=len(sent),
                    track_url=messages.track_url(core, other.tracking_code))]))
                await queue_to_citizen(core, change.session, change.now, other, f"answer:{copy.id}", "citizen.answer",
                                       origin="person", attachments=tuple(sent), text=theirs)
    except IntegrityError:
        if source_id is None:
            raise
        return None  # delivered again: the first delivery was recorded and sent
    return message


async def has_proof(session: AsyncSession, complaint: Complaint) -> bool:
    """Whether an answer of the complaint carries a photo or document."""
    return await session.scalar(
        select(StoredAttachment.id).join(Message, Message.id == StoredAttachment.message_id)
        .where(Message.complaint_id == complaint.id, Message.direction == "out", Message.public.is_(True))
        .limit(1)) is not None


async def resolve(core: Core, tracking_code: str, staff_slug: str, text: str | None = None,
                  source_id: str | None = None, attachments: tuple[Attachment, ...] = ()) -> None:
    """Close a complaint as resolved (with a final answer if given) and tell the citizen.

    A category that needs proof (``proof_required``) is resolved only with a photo or
    document the citizen can check: given now, or with an earlier answer.
    """
    if not attachments:
        async with core.sessions() as session:
            complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == tracking_code))
            category = core.config.category(complaint.category) if complaint and complaint.category else None
            if category is not None and category.proof_required and not await has_proof(session, complaint):
                raise LifecycleError(f"{category.slug} needs a photo or document of the work done to be resolved",
                                     "proof_required", code=tracking_code)
    if (text and text.strip()) or attachments:
        await answer(core, tracking_code, staff_slug, text or "", source_id=source_id, attachments=attachments)
    async with _change(core, tracking_code, staff_slug) as change:
        complaint = change.complaint
        if complaint.status in FINISHED:
            raise LifecycleError(f"complaint {tracking_code} is already {complaint.status}")
        previous = complaint.status
        complaint.status = Status.RESOLVED
        complaint.resolved_at = change.now
        complaint.first_response_at = complaint.first_response_at or change.now
        change.event(Status.RESOLVED, **{"from": previous})
        for target in [complaint, *await grouping.members(change.session, complaint)]:
            if target is not complaint:  # the incident resolved: every report of it is
                was, target.status, target.resolved_at = target.status, Status.RESOLVED, change.now
                target.first_response_at = target.first_response_at or change.now
                target.updated_at = change.now
                schedule_checks(core, target)
                _event(change, target, Status.RESOLVED, incident=complaint.incident_id, **{"from": was})
            await queue_to_citizen(core, change.session, change.now, target,
                                   f"resolved:{target.id}:{change.now.isoformat()}", "citizen.status_changed",
                                   status=core.texts.get(target.language, f"status.{Status.RESOLVED}"))
            # Khách về, được hài lòng: ask how the answer was.
            await queue_to_citizen(core, change.session, change.now, target,
                                   f"survey:{target.id}:{change.now.isoformat()}", "citizen.survey")


async def note(core: Core, tracking_code: str, staff_slug: str, text: str,
               source_id: str | None = None) -> Message | None:
    """Add an internal note: kept in the history, never shown or sent to the citizen."""
    if not text.strip():
        raise LifecycleError("empty note")
    try:
        async with _change(core, tracking_code, staff_slug) as change:
            message = Message(complaint_id=change.complaint.id, direction="note", channel="staff",
                              external_id=source_id, author_staff_id=change.actor.id, text=text, public=False,
                              created_at=change.now, folded=fold(text))
            change.session.add(message)
            await change.session.flush()
            change.event("note", message_id=message.id)
    except IntegrityError:
        if source_id is None:
            raise
        return None  # delivered again
    return message


async def reopen_by_staff(core: Core, tracking_code: str, staff_slug: str, reason: str | None = None) -> None:
    """An officer opens a finished complaint again (fresh deadlines) and the citizen is told."""
    async with _change(core, tracking_code, staff_slug) as change:
        complaint = change.complaint
        if complaint.status not in FINISHED:
            raise LifecycleError(f"complaint {tracking_code} is {complaint.status}, not finished")
        extra = {"reason": reason.strip()[:500]} if reason and reason.strip() else {}
        reopen(core, change.session, change.now, complaint, change.actor_name, **extra)
        await queue_to_citizen(core, change.session, change.now, complaint,
                               f"reopened:{complaint.id}:{change.now.isoformat()}", "citizen.status_changed",
                               status=core.texts.get(complaint.language, f"status.{Status.REOPENED}"))
