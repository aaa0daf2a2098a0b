"""Decisions an officer takes about how a complaint is handled, beyond answering it:
asking the citizen for more (the clock waits), its urgency, a complex complaint's one
extension, and rejecting it with a reason.

Each is a change of ``bot/lifecycle.py``'s kind: one transaction with its audit event and
the messages it causes, through the outbox; authorised in ``bot/staff.py`` like every
staff action, whichever channel it comes from.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot import outbox, urgency
from bot.core import Core
from bot.lifecycle import _change, queue_to_citizen, reason_given
from bot.messages import format_time, load_case, to_staff
from bot.statuses import FINISHED, Status, schedule_checks
from contract.results import LifecycleError
from storage.models import Complaint, Message


async def ask(core: Core, tracking_code: str, staff_slug: str, question: str, source_id: str | None = None) -> None:
    """Ask the citizen for more (an address, a photo): the complaint waits for them, its
    deadlines paused, until they answer."""
    if not question.strip():
        raise LifecycleError("empty question")
    async with _change(core, tracking_code, staff_slug) as change:
        complaint = change.complaint
        if complaint.status in FINISHED or complaint.status == Status.WAITING:
            raise LifecycleError(f"complaint {tracking_code} is {complaint.status}", "cannot_ask",
                                 status=complaint.status)
        message = Message(complaint_id=complaint.id, direction="out", channel="staff", external_id=source_id,
                          author_staff_id=change.actor.id, text=question, public=True, created_at=change.now)
        change.session.add(message)
        await change.session.flush()
        previous = complaint.status
        complaint.status, complaint.paused_at, complaint.waiting_reminded_at = Status.WAITING, change.now, None
        complaint.assignee_id = complaint.assignee_id or change.actor.id
        change.event(Status.WAITING, message_id=message.id, **{"from": previous})
        await queue_to_citizen(core, change.session, change.now, complaint, f"question:{message.id}",
                               "citizen.question", origin="person", text=question)


async def resume(core: Core, session: AsyncSession, now: datetime, complaint: Complaint) -> float:
    """The citizen answered a question: the clock runs again, its deadlines moved on by the
    working time it waited (caller's transaction); return those hours."""
    clock = urgency.calendar(core, complaint.urgency)
    waited = max(0.0, clock.working_hours_between(complaint.paused_at, now))
    if complaint.first_response_due is not None and complaint.first_response_at is None:
        complaint.first_response_due = clock.add_working_hours(complaint.first_response_due, waited)
    if complaint.resolution_due is not None:
        complaint.resolution_due = clock.add_working_hours(complaint.resolution_due, waited)
    complaint.status = Status.ASSIGNED if complaint.assignee_id else Status.NEW
    complaint.paused_at = complaint.waiting_reminded_at = None
    schedule_checks(core, complaint)
    return waited


async def set_urgency(core: Core, tracking_code: str, staff_slug: str, level: str, reason: str) -> None:
    """Make a complaint urgent, normal or complex (with a reason): its deadlines are counted
    again from receipt on its new clock; made urgent, it pages its area's officers and the
    unit's heads at once."""
    if level not in tuple(urgency.Urgency):
        raise LifecycleError(f"no urgency {level!r}")
    if not reason.strip():
        raise LifecycleError("a change of urgency needs a reason", "urgency_reason")
    async with _change(core, tracking_code, staff_slug) as change:
        complaint = change.complaint
        if complaint.status in FINISHED:
            raise LifecycleError(f"complaint {tracking_code} is {complaint.status}")
        previous = complaint.urgency
        if previous == level:
            raise LifecycleError(f"complaint {tracking_code} is already {level}", "urgency_same", level=level)
        complaint.urgency = level
        urgency.set_deadlines(core, complaint, complaint.created_at, core.directory.unit_slug(complaint.unit_id),
                              first_response=complaint.first_response_at is None)
        complaint.extended_at = None if level != urgency.Urgency.COMPLEX else complaint.extended_at
        change.event("urgency", reason=reason[:500], **{"from": previous, "to": level,
                                                         "resolution_due": complaint.resolution_due.isoformat()})
        if level == urgency.Urgency.URGENT:
            directory = await core.directory.staff(change.session)
            case = await load_case(change.session, complaint)
            await outbox.enqueue_many(change.session, change.now, to_staff(
                core, directory, urgency.paged(directory, complaint),
                f"urgent:{complaint.tracking_code}:{change.now.isoformat()}", "staff.urgent_page", complaint, case,
                every_channel=True))


async def extend(core: Core, tracking_code: str, staff_slug: str, reason: str) -> None:
    """Give a complex complaint more time, once: the citizen is told the new date and why."""
    if not reason.strip():
        raise LifecycleError("an extension needs a reason", "extension_reason")
    async with _change(core, tracking_code, staff_slug) as change:
        complaint = change.complaint
        if complaint.urgency != urgency.Urgency.COMPLEX:
            raise LifecycleError(f"only a complex complaint may be extended; {tracking_code} is {complaint.urgency}",
                                 "extension_not_complex")
        if complaint.extended_at is not None:
            raise LifecycleError(f"complaint {tracking_code} was extended already", "extension_used")
        if complaint.status in FINISHED:
            raise LifecycleError(f"complaint {tracking_code} is {complaint.status}")
        old = complaint.resolution_due
        complaint.resolution_due = urgency.calendar(core, complaint.urgency).add_working_hours(
            old, core.config.deadlines.complex.extension_hours)
        complaint.extended_at = change.now
        change.event("extended", reason=reason[:500], **{"from": old.isoformat(),
                                                          "to": complaint.resolution_due.isoformat()})
        await queue_to_citizen(core, change.session, change.now, complaint, f"extended:{complaint.id}",
                               "citizen.extended", origin="person", reason=reason.strip(),
                               due=format_time(core, complaint.resolution_due, complaint.language))


async def reject(core: Core, tracking_code: str, staff_slug: str, reason: str | None, note: str = "") -> None:
    """Close a complaint without acting on it, with a reason from the configured list and
    free text, both told to the citizen."""
    async with _change(core, tracking_code, staff_slug) as change:
        complaint = change.complaint
        why = reason_given(core, reason, "reject", complaint.language)
        if complaint.status in FINISHED:
            raise LifecycleError(f"complaint {tracking_code} is already {complaint.status}")
        previous = complaint.status
        complaint.status, complaint.paused_at = Status.CLOSED, None
        complaint.first_response_at = complaint.first_response_at or change.now
        change.event(Status.CLOSED, reason=reason, note=note[:500], **{"from": previous})
        await queue_to_citizen(core, change.session, change.now, complaint, f"rejected:{complaint.id}",
                               "citizen.rejected", origin="person",
                               reason=" — ".join(filter(None, [why, note.strip()])))
