"""Status changes of a complaint and the messages each one causes.

Every change is written with its audit event and the messages it causes to the citizen
in one transaction ("Khách cần, được thông báo": assigned, answered, resolved, reopened,
passed to another unit); the messages go out through the outbox on the citizen's own
channel. Staff commands (Telegram, CLI) call these functions and nothing lower.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import messages, outbox
from bot.core import Core
from bot.folding import fold
from bot.messages import format_time, to_staff
from bot.statuses import CLAIMABLE, FINISHED, Status, schedule_checks
from contract.messages import Origin
from contract.results import LifecycleError
from storage.models import Complaint, Contact, Event, Message, Staff, Unit

__all__ = ["LifecycleError", "answer", "assign", "note", "notify_staff", "queue_to_citizen", "reassign", "reopen",
           "reopen_by_staff", "resolve"]


async def queue_to_citizen(core: Core, session: AsyncSession, now: datetime, complaint: Complaint, key: str,
                           text_key: str, origin: Origin = "system", **params: str) -> None:
    """Queue a catalogue text to the complaint's citizen, if they left a way to reach them."""
    if complaint.contact_id is None:
        return  # an anonymous web citizen reads everything on the status page
    contact = await session.get(Contact, complaint.contact_id)
    thread = None
    if contact.channel in messages.THREADED_CHANNELS:
        thread = (await messages.thread_ids(session, [complaint.id])).get(complaint.id)
    await outbox.enqueue_many(session, now, [messages.to_citizen(core, complaint, contact, key, text_key, thread,
                                                                 origin, **params)])


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
    first_hours, resolution_hours = core.config.deadlines.hours_for(core.directory.unit_slug(complaint.unit_id),
                                                                    complaint.category)
    complaint.status, complaint.resolved_at, complaint.first_response_at = Status.REOPENED, None, None
    # A fresh round: its deadlines, reminders and apology are new (the events keep the old).
    complaint.apologised_for_due = complaint.reminded_for_due = None
    complaint.first_response_due = core.calendar.add_working_hours(now, first_hours)
    complaint.resolution_due = core.calendar.add_working_hours(now, resolution_hours)
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
        if previous == Status.NEW:
            await queue_to_citizen(core, change.session, change.now, complaint, f"assigned:{complaint.id}",
                                   "citizen.status_changed",
                                   status=core.texts.get(complaint.language, f"status.{Status.ASSIGNED}"))


async def reassign(core: Core, tracking_code: str, unit_slug: str, by: str | None = None,
                   restart_deadlines: bool = True, reason: str | None = None) -> None:
    """Pass a complaint to another unit; deadlines are recomputed and the citizen told."""
    async with _change(core, tracking_code, by) as change:
        complaint = change.complaint
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
        first_hours, resolution_hours = core.config.deadlines.hours_for(unit_slug, complaint.category)
        start = change.now if restart_deadlines else complaint.created_at
        if complaint.first_response_at is None:
            complaint.first_response_due = core.calendar.add_working_hours(start, first_hours)
        complaint.resolution_due = core.calendar.add_working_hours(start, resolution_hours)
        complaint.routing_reason = f"reassigned from {previous} by {change.actor_name}"[:300]
        extra = {"reason": reason.strip()[:500]} if reason and reason.strip() else {}
        change.event("reassigned", **extra, **{"from": previous, "to": unit_slug,
                                      "first_response_due": {"from": old_due and old_due.isoformat(),
                                                             "to": complaint.first_response_due.isoformat()}})
        await queue_to_citizen(core, change.session, change.now, complaint,
                               f"reassigned:{complaint.id}:{change.now.isoformat()}", "citizen.reassigned",
                               due=format_time(core, complaint.first_response_due, complaint.language))
        await notify_staff(core, change.session, change.now, complaint,
                           f"reassigned-staff:{complaint.id}:{change.now.isoformat()}", "staff.reassigned_in",
                           with_case=True)


async def answer(core: Core, tracking_code: str, staff_slug: str, text: str,
                 source_id: str | None = None) -> Message | None:
    """Record an officer's public answer and send it to the citizen on their channel.

    ``source_id`` names where the answer came from (a Telegram chat and message): the same
    answer delivered again, to this process or another, is recorded and sent once; the
    repeat returns None.
    """
    if not text.strip():
        raise LifecycleError("empty answer")
    try:
        async with _change(core, tracking_code, staff_slug) as change:
            complaint = change.complaint
            message = Message(complaint_id=complaint.id, direction="out", channel="staff", external_id=source_id,
                              author_staff_id=change.actor.id, text=text, public=True, created_at=change.now,
                              folded=fold(text))
            change.session.add(message)
            await change.session.flush()
            previous = complaint.status
            if complaint.status not in FINISHED:
                complaint.status = Status.ANSWERED
            complaint.first_response_at = complaint.first_response_at or change.now
            complaint.assignee_id = complaint.assignee_id or change.actor.id
            change.event(Status.ANSWERED, message_id=message.id, **{"from": previous})
            await queue_to_citizen(core, change.session, change.now, complaint, f"answer:{message.id}",
                                   "citizen.answer", origin="person", text=text)
    except IntegrityError:
        if source_id is None:
            raise
        return None  # delivered again: the first delivery was recorded and sent
    return message


async def resolve(core: Core, tracking_code: str, staff_slug: str, text: str | None = None,
                  source_id: str | None = None) -> None:
    """Close a complaint as resolved (with a final answer if given) and tell the citizen."""
    if text and text.strip():
        await answer(core, tracking_code, staff_slug, text, source_id=source_id)
    async with _change(core, tracking_code, staff_slug) as change:
        complaint = change.complaint
        if complaint.status in FINISHED:
            raise LifecycleError(f"complaint {tracking_code} is already {complaint.status}")
        previous = complaint.status
        complaint.status = Status.RESOLVED
        complaint.resolved_at = change.now
        complaint.first_response_at = complaint.first_response_at or change.now
        change.event(Status.RESOLVED, **{"from": previous})
        await queue_to_citizen(core, change.session, change.now, complaint,
                               f"resolved:{complaint.id}:{change.now.isoformat()}", "citizen.status_changed",
                               status=core.texts.get(complaint.language, f"status.{Status.RESOLVED}"))
        # Khách về, được hài lòng: ask how the answer was.
        await queue_to_citizen(core, change.session, change.now, complaint,
                               f"survey:{complaint.id}:{change.now.isoformat()}", "citizen.survey")


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
