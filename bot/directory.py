"""Who works where: staff by unit and role, and the messages the service sends them.

Officers are reminded and told of new work; unit heads are told when a deadline is
missed (and admins when a unit has no head). A staff member is reached on their
Telegram chat, else by email; one with neither is skipped (the audit event still says
who should have been told).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from storage.models import Complaint, Staff

SUMMARY_LENGTH = 300


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


def staff_address(member: Staff) -> tuple[str, str] | None:
    """Where a staff member gets messages: their Telegram chat, else their email."""
    if member.telegram_chat_id is not None:
        return "telegram", str(member.telegram_chat_id)
    if member.email:
        return "email", member.email
    return None


def summary(text: str, length: int = SUMMARY_LENGTH) -> str:
    """A complaint's text on one line, shortened for a notification."""
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[:length - 1] + "…"


def to_staff(core: Core, directory: StaffDirectory, members: list[Staff], key: str, text_key: str,
             complaint: Complaint, **params: object) -> list[dict]:
    """Outbox messages (for ``enqueue_many``) telling these staff members about a complaint."""
    language = core.config.service.default_language
    assignee = directory.by_id.get(complaint.assignee_id) if complaint.assignee_id else None
    fields = dict(code=complaint.tracking_code, unit=core.unit_name(complaint.unit_id, language),
                  summary=summary(complaint.text), channel=complaint.channel,
                  due=core.format_time(complaint.first_response_due, language),
                  assignee=assignee.name if assignee else core.texts.get(language, "staff.nobody"))
    fields.update(params)
    text = core.texts.get(language, text_key, **fields)
    out = []
    for member in members:
        address = staff_address(member)
        if address is not None:
            out.append(dict(key=f"{key}:{member.id}", channel=address[0], recipient=address[1], text=text,
                            language=language, complaint_id=complaint.id,
                            subject=f"[{complaint.tracking_code}] {text.splitlines()[0]}"[:300],
                            metadata={"code": complaint.tracking_code, "audience": "staff",
                                      "kind": text_key.removeprefix("staff.")}))
    return out
