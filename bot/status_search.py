"""Public status of many complaints at once: what Open311's ``GET requests`` lists.

Filters by tracking code, category, time received and open or closed, newest first.
Like ``status.py`` it carries no personal data: no name, contact, address, location or
the citizen's own text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from bot.core import Core
from bot.status import PublicReply, PublicStatus
from storage.models import Complaint, Message

CLOSED = ("resolved", "closed")
LIMIT = 1000  # GeoReport v2's ceiling for one answer


@dataclass(frozen=True)
class Listed:
    """A complaint's public status and when it last changed."""

    status: PublicStatus
    updated_at: datetime


async def search(core: Core, *, codes: list[str] | None = None, categories: list[str] | None = None,
                 received_from: datetime | None = None, received_until: datetime | None = None,
                 closed: bool | None = None, limit: int = LIMIT) -> list[Listed]:
    """Complaints matching every filter given, newest first, at most ``limit``."""
    query = select(Complaint)
    if codes is not None:
        query = query.where(Complaint.tracking_code.in_(codes))
    if categories is not None:
        query = query.where(Complaint.category.in_(categories))
    if received_from is not None:
        query = query.where(Complaint.created_at >= received_from)
    if received_until is not None:
        query = query.where(Complaint.created_at <= received_until)
    if closed is not None:
        query = query.where(Complaint.status.in_(CLOSED) if closed else Complaint.status.not_in(CLOSED))
    query = query.order_by(Complaint.created_at.desc(), Complaint.id.desc()).limit(min(limit, LIMIT))
    async with core.sessions() as session:
        complaints = (await session.scalars(query)).all()
        replies: dict[int, list[PublicReply]] = {}
        if complaints:
            rows = await session.execute(
                select(Message.complaint_id, Message.created_at, Message.text)
                .where(Message.complaint_id.in_([c.id for c in complaints]), Message.public.is_(True))
                .order_by(Message.created_at, Message.id))
            for complaint_id, at, text in rows:
                replies.setdefault(complaint_id, []).append(PublicReply(at, text))
    listed = []
    for complaint in complaints:
        vi, en = core.unit_names.get(complaint.unit_id, ("", ""))
        listed.append(Listed(PublicStatus(
            code=complaint.tracking_code, status=complaint.status, unit_slug=core.unit_slug(complaint.unit_id),
            unit_name=vi, unit_name_en=en, category=complaint.category, created_at=complaint.created_at,
            first_response_due=complaint.first_response_due, resolution_due=complaint.resolution_due,
            replies=tuple(replies.get(complaint.id, ())),
        ), complaint.updated_at))
    return listed
