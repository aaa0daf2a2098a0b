"""A complaint's statuses, in one home: the names, which are open, finished or rateable,
and what the sweep still owes a complaint in each (``pending``, ``schedule_checks``).

The store keeps a status as its name, and a CHECK constraint (migration 0002) lets no
other value in. Every other module uses these names and sets; none writes a status out.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from bot import urgency
from bot.core import Core
from storage.models import Complaint


class Status(StrEnum):
    """Where a complaint stands."""

    NEW = "new"  # filed and routed, nobody on it yet
    ASSIGNED = "assigned"  # an officer has it
    ANSWERED = "answered"  # the citizen has had an answer
    RESOLVED = "resolved"  # the unit closed it as resolved; the citizen may rate it
    REOPENED = "reopened"  # the citizen came back, or a low rating sent it back
    WAITING = "waiting"  # the officer asked the citizen for more; the clock waits for the answer
    CLOSED = "closed"  # finished without a resolution of ours (rejected, or no answer to a question)


FINISHED = frozenset({Status.RESOLVED, Status.CLOSED})
OPEN = frozenset(Status) - FINISHED
RATEABLE = FINISHED
# A citizen may say a resolution did not fix it ("chưa xong"): only a resolution, not a rejection.
DISPUTABLE = frozenset({Status.RESOLVED})
# What an officer's claim turns into "assigned"; a reassignment takes "assigned" back to "new".
CLAIMABLE = frozenset({Status.NEW, Status.REOPENED})


def pending(core: Core, complaint: Complaint) -> dict[str, datetime]:
    """What the complaint is still owed, and when: reminder or deadline, per deadline.

    While it waits for the citizen its deadlines are paused: it is owed a reminder to the
    citizen, once, and then (when configured) its closing for want of an answer. A member
    of an incident owes nothing of its own: its lead's deadline is the incident's, and the
    sweep tells every reporter from there (``bot/sweep.py``).
    """
    if complaint.status in FINISHED or complaint.incident_role == "member":
        return {}
    if complaint.status == Status.WAITING:
        waiting = core.config.waiting
        owed = {}
        if complaint.waiting_reminded_at is None:
            owed["remind_citizen"] = core.calendar.add_working_hours(complaint.paused_at, waiting.remind_after_hours)
        if waiting.close_after_hours:
            owed["close_unanswered"] = core.calendar.add_working_hours(complaint.paused_at, waiting.close_after_hours)
        return owed
    # An urgent complaint's reminders run on the same clock as its deadlines: around the clock.
    clock = urgency.calendar(core, complaint.urgency)
    remind = core.config.deadlines.remind_before_hours
    owed: dict[str, datetime] = {}
    due = complaint.first_response_due
    if complaint.first_response_at is None and due is not None and complaint.apologised_for_due != due:
        if remind and complaint.reminded_for_due != due:
            owed["remind"] = clock.subtract_working_hours(due, remind)
        owed["apologise"] = due
    due = complaint.resolution_due
    if complaint.resolved_at is None and due is not None and complaint.resolution_escalated_for_due != due:
        if remind and complaint.resolution_reminded_for_due != due:
            owed["remind_resolution"] = clock.subtract_working_hours(due, remind)
        owed["escalate_resolution"] = due
    return owed


def schedule_checks(core: Core, complaint: Complaint) -> None:
    """Set ``next_check_at``: the earliest pending reminder or deadline, or None."""
    complaint.next_check_at = min(pending(core, complaint).values(), default=None)
