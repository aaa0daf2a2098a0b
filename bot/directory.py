"""Who works where, as the process knows it: units, staff by unit and role, and the
routing rules, read from the store and kept for a short while.

Units are read at start (they change only with the configuration); staff and rules are
read again at most every ``TTL`` seconds, so a chat an officer links or a rule an admin
adds reaches every process within that time, and at once in the process that made the
change (``forget``). A staff member is reached on their Telegram chat, else by email;
one with neither is skipped (the audit event still says who should have been told).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import routing
from storage.models import Complaint, Staff, Unit

TTL = 30.0


@dataclass
class StaffDirectory:
    """Active staff by unit and role, loaded once per unit of work."""

    by_id: dict[int, Staff] = field(default_factory=dict)
    agents: dict[int, list[Staff]] = field(default_factory=lambda: defaultdict(list))
    heads: dict[int, list[Staff]] = field(default_factory=lambda: defaultdict(list))
    admins: list[Staff] = field(default_factory=list)

    @classmethod
    async def load(cls, session: AsyncSession) -> StaffDirectory:
        """Read every active staff member."""
        directory = cls()
        for member in (await session.scalars(select(Staff).where(Staff.active.is_(True)))).all():
            directory.by_id[member.id] = member
            {"agent": directory.agents[member.unit_id], "head": directory.heads[member.unit_id],
             "admin": directory.admins}[member.role].append(member)
        return directory

    def assignees(self, complaint: Complaint) -> list[Staff]:
        """Who works on a complaint: its assignee, else its unit's officers, else its heads."""
        member = self.by_id.get(complaint.assignee_id) if complaint.assignee_id else None
        return [member] if member else self.agents[complaint.unit_id] or self.heads[complaint.unit_id]

    def heads_of(self, complaint: Complaint) -> list[Staff]:
        """Who answers for a complaint's unit: its heads, else the admins."""
        return self.heads[complaint.unit_id] or self.admins


def staff_addresses(member: Staff) -> list[tuple[str, str]]:
    """Every way to reach a staff member: their Telegram chat, then their email."""
    found = [("telegram", str(member.telegram_chat_id))] if member.telegram_chat_id is not None else []
    return found + ([("email", member.email)] if member.email else [])


def staff_address(member: Staff) -> tuple[str, str] | None:
    """Where a staff member gets messages: their Telegram chat, else their email."""
    found = staff_addresses(member)
    return found[0] if found else None


class Directory:
    """Units, staff and routing rules for one process."""

    def __init__(self, ttl: float = TTL):
        self.ttl = ttl
        self.unit_ids: dict[str, int] = {}
        self.unit_names: dict[int, tuple[str, str]] = {}
        self._rules: tuple[float, list[routing.Rule]] | None = None
        self._staff: tuple[float, StaffDirectory] | None = None

    async def load_units(self, session: AsyncSession) -> None:
        """Read the units (after the configuration was synced into the store)."""
        units = (await session.scalars(select(Unit))).all()
        self.unit_ids = {unit.slug: unit.id for unit in units}
        self.unit_names = {unit.id: (unit.name, unit.name_en or unit.name) for unit in units}
        self.forget()

    def unit_slug(self, unit_id: int) -> str:
        """The slug of a unit known by its id."""
        return next((slug for slug, id_ in self.unit_ids.items() if id_ == unit_id), "")

    def unit_name(self, unit_id: int, language: str) -> str:
        """A unit's name in a language."""
        vi, en = self.unit_names.get(unit_id, ("", ""))
        return en if language == "en" else vi

    async def rules(self, session: AsyncSession) -> list[routing.Rule]:
        """The routing rules, read from the store at most every ``ttl`` seconds."""
        now = asyncio.get_running_loop().time()
        if self._rules is None or now - self._rules[0] > self.ttl:
            self._rules = (now, await routing.load_rules(session))
        return self._rules[1]

    async def staff(self, session: AsyncSession) -> StaffDirectory:
        """Active staff by unit and role, read from the store at most every ``ttl`` seconds."""
        now = asyncio.get_running_loop().time()
        if self._staff is None or now - self._staff[0] > self.ttl:
            self._staff = (now, await StaffDirectory.load(session))
        return self._staff[1]

    def forget(self) -> None:
        """Read the routing rules and the staff afresh on next use (after a change)."""
        self._rules = None
        self._staff = None
