"""Urgency, as Hà Nội's rules for citizens' reports grade it (Quyết định 1207/QĐ-UBND,
2025): urgent, normal or complex; and the clock each one runs on.

A routing rule may set it (keywords such as "cháy", "sập", "điện giật", "ngập", folded like
other keywords; categories; a rule's ``urgency``), and an officer may change it. An urgent
complaint's deadlines run around the clock, counted from receipt (``[deadlines.urgent]``:
handled within 4 hours), its reminders too, and it pages the officer of its area and the
unit head at once, on every channel they have, at any hour. A complex one has more time
(``[deadlines.complex]``) and may be extended once, the citizen told the new date and why.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from bot.core import Core
from bot.deadlines import WorkingCalendar
from bot.directory import StaffDirectory
from bot.folding import contains_phrase, fold
from storage.models import Complaint, Staff


class Urgency(StrEnum):
    """How fast a complaint must be handled."""

    URGENT = "urgent"
    NORMAL = "normal"
    COMPLEX = "complex"


def calendar(core: Core, urgency: str) -> WorkingCalendar:
    """The calendar a complaint's deadlines are counted on."""
    if urgency == Urgency.URGENT and core.config.deadlines.urgent.around_the_clock:
        return core.around_the_clock
    return core.calendar


def set_deadlines(core: Core, complaint: Complaint, start: datetime, unit_slug: str,
                  first_response: bool = True) -> None:
    """Set the complaint's deadlines from ``start`` for its unit, category and urgency."""
    first_hours, resolution_hours = core.config.deadlines.hours_for(unit_slug, complaint.category,
                                                                    complaint.urgency)
    clock = calendar(core, complaint.urgency)
    if first_response:
        complaint.first_response_due = clock.add_working_hours(start, first_hours)
    complaint.resolution_due = clock.add_working_hours(start, resolution_hours)


def officers_of_area(directory: StaffDirectory, complaint: Complaint) -> list[Staff]:
    """The unit's officers who cover the complaint's area (by their ``areas``), else all
    of the unit's officers."""
    officers = directory.agents[complaint.unit_id]
    place = fold(f"{complaint.area or ''} {complaint.text}")
    covering = [member for member in officers
                if any(contains_phrase(place, fold(area)) for area in (member.areas or []))]
    return covering or officers


def paged(directory: StaffDirectory, complaint: Complaint) -> list[Staff]:
    """Who is paged at once for an urgent complaint: its area's officers and the unit's heads."""
    members = officers_of_area(directory, complaint) + directory.heads_of(complaint)
    return list({member.id: member for member in members}.values())
