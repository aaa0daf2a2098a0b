"""Public status of complaints: one by tracking code (the status page, the JSON API, a
status request by SMS or chat), or many by filters (Open311's ``GET requests``).

A look-up answers found, malformed (with why, in the citizen's language) or unknown, in
one place for every channel. Nothing here carries personal data: no name, phone, email,
address, position, or the citizen's own text.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from bot import tracking
from bot.core import Core
from bot.messages import citizen_text, format_time
from bot.statuses import FINISHED
from contract.results import Lookup, PublicReply, PublicStatus
from storage.models import Complaint, Message

LIMIT = 1000  # GeoReport v2's ceiling for one answer


def _public(core: Core, complaint: Complaint, replies: tuple[PublicReply, ...]) -> PublicStatus:
    vi, en = core.directory.unit_names.get(complaint.unit_id, ("", ""))
    return PublicStatus(
        code=complaint.tracking_code, status=complaint.status, unit_slug=core.directory.unit_slug(complaint.unit_id),
        unit_name=vi, unit_name_en=en, category=complaint.category, created_at=complaint.created_at,
        first_response_due=complaint.first_response_due, resolution_due=complaint.resolution_due,
        replies=replies, updated_at=complaint.updated_at, finished=complaint.status in FINISHED)


async def public_status(core: Core, code: str) -> PublicStatus | None:
    """The public status of the complaint with this (normalised) code, or None."""
    async with core.sessions() as session:
        complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
        if complaint is None:
            return None
        replies = (await session.scalars(
            select(Message).where(Message.complaint_id == complaint.id, Message.public.is_(True))
            .order_by(Message.created_at, Message.id))).all()
    return _public(core, complaint, tuple(PublicReply(m.created_at, m.text) for m in replies))


def parse(core: Core, text: str) -> Lookup:
    """A tracking code as typed, in normal form, or malformed with why (nothing looked up)."""
    try:
        return Lookup(tracking.normalise(text, core.config.service.tracking_prefix))
    except tracking.TrackingCodeError as error:
        return Lookup(None, error=str(error), explanation={
            language: core.texts.get(language, f"tracking.{error.reason}", **error.params)
            for language in core.texts.texts})


async def lookup(core: Core, text: str) -> Lookup:
    """A tracking code as typed, looked up: found, malformed (and why) or unknown."""
    parsed = parse(core, text)
    if parsed.malformed:
        return parsed
    return Lookup(parsed.code, await public_status(core, parsed.code))


def status_text(core: Core, found: PublicStatus, language: str, channel: str = "web") -> str:
    """One complaint's status as a short message (an SMS "TT <code>" answer, a chat reply)."""
    return citizen_text(core, channel, language, "citizen.status_reply", code=found.code,
                        status=core.texts.get(language, f"status.{found.status}"),
                        unit=found.unit_in(language), due=format_time(core, found.first_response_due, language))


async def search(core: Core, *, codes: list[str] | None = None, categories: list[str] | None = None,
                 received_from: datetime | None = None, received_until: datetime | None = None,
                 closed: bool | None = None, limit: int = LIMIT) -> list[PublicStatus]:
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
        query = query.where(Complaint.status.in_(FINISHED) if closed else Complaint.status.not_in(FINISHED))
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
    return [_public(core, complaint, tuple(replies.get(complaint.id, ()))) for complaint in complaints]
