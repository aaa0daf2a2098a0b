"""Public status of a complaint by tracking code: what the status page and the JSON API
show. It carries no personal data: no name, phone, email, or the citizen's own text."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from bot import tracking
from bot.core import Core
from storage.models import Complaint, Message


@dataclass(frozen=True)
class PublicReply:
    """An answer the unit made public."""

    at: datetime
    text: str


@dataclass(frozen=True)
class PublicStatus:
    """Where a complaint stands, as anyone holding its code may see."""

    code: str
    status: str
    unit_slug: str
    unit_name: str
    unit_name_en: str
    category: str | None
    created_at: datetime
    first_response_due: datetime | None
    resolution_due: datetime | None
    replies: tuple[PublicReply, ...]


def code_problem(core: Core, error: tracking.TrackingCodeError, language: str) -> str:
    """What is wrong with a tracking code, in the citizen's language."""
    return core.texts.get(language, f"tracking.{error.reason}", **error.params)


def parse_code(core: Core, text: str) -> str:
    """The tracking code in normal form; raises tracking.TrackingCodeError saying what is wrong."""
    return tracking.normalise(text, core.config.service.tracking_prefix)


async def public_status(core: Core, code: str) -> PublicStatus | None:
    """The public status of the complaint with this (normalised) code, or None."""
    async with core.sessions() as session:
        complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
        if complaint is None:
            return None
        replies = (await session.scalars(
            select(Message).where(Message.complaint_id == complaint.id, Message.public.is_(True))
            .order_by(Message.created_at, Message.id))).all()
    vi, en = core.unit_names.get(complaint.unit_id, ("", ""))
    return PublicStatus(
        code=complaint.tracking_code, status=complaint.status, unit_slug=core.unit_slug(complaint.unit_id), unit_name=vi, unit_name_en=en,
        category=complaint.category, created_at=complaint.created_at,
        first_response_due=complaint.first_response_due, resolution_due=complaint.resolution_due,
        replies=tuple(PublicReply(m.created_at, m.text) for m in replies),
    )


def status_text(core: Core, found: PublicStatus, language: str, channel: str = "web") -> str:
    """One complaint's status as a short message (an SMS "TT <code>" answer, a chat reply)."""
    from bot.messages import citizen_text

    return citizen_text(core, channel, language, "citizen.status_reply", code=found.code,
                        status=core.texts.get(language, f"status.{found.status}"),
                        unit=found.unit_name_en if language == "en" else found.unit_name,
                        due=core.format_time(found.first_response_due, language))
