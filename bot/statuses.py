"""A complaint's statuses, in one home: the names, which are open, finished or rateable,
and what the sweep still owes a complaint in each (``pending``, ``schedule_checks``).

The store keeps a status as its name, and a CHECK constraint (migration 0002) lets no
other value in. Every other module uses these names and sets; none writes a status out.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from bot.core import Core
from storage.models import Complaint


class Status(StrEnum):
    """Where a complaint stands."""

    NEW = "new"  # filed and routed, nobody on it yet
    ASSIGNED = "assigned"  # an officer has it
    ANSWERED = "answered"  # the citizen has had an answer
    RESOLVED = "resolved"  # the unit closed it as resolved; the citizen may rate it
    REOPENED = "reopened"  # the citizen came back, or a low rating sent it back
    CLOSED = "closed"  # finished without a resolution of ours


FINISHED = frozenset({Status.RESOLVED, Status.CLOSED})
OPEN = frozenset(Status) - FINISHED
RATEABLE = FINISHED
# What an officer's claim turns into "assigned"; a reassignment takes "assigned" back to "new".
CLAIMABLE = frozenset({Status.NEW, Status.REOPENED})


def pending(core: Core, complaint: Complaint) -> dict[str, datetime]:
    """What the complaint is still owed, and when: reminder or deadline, per deadline.

    A member of an incident owes nothing of its own: its lead's deadline is the incident's,
    and the sweep tells every reporter from there (``bot/sweep.py``).
    """
    if complaint.status in FINISHED or complaint.incident_role == "member":
        return {}
    remind = core.config.deadlines.remind_before_hours
    owed: dict[str, datetime] = {}
    due = complaint.first_response_due
    if complaint.first_response_at is None and due is not None and complaint.apologised_for_due != due:
        if remind and complaint.reminded_for_due != due:
            owed["remind"] = core.calendar.subtract_working_hours(due, remind)
        owed["apologise"] = due
    due = complaint.resolution_due
    if complaint.resolved_at is None and due is not None and complaint.resolution_escalated_for_due != due:
        if remind and complaint.resolution_reminded_for_due != due:
            owed["remind_resolution"] = core.calendar.subtract_working_hours(due, remind)
        owed["escalate_resolution"] = due
    return owed


def schedule_checks(core: Core, complaint: Complaint) -> None:
    """Set ``next_check_at``: the earliest pending reminder or deadline, or None."""
    complaint.next_check_at = min(pending(core, complaint).values(), default=None)
