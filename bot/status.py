"""Public status of complaints: one by tracking code (the status page, the JSON API, a
status request by SMS or chat), or many by filters (Open311's ``GET requests``).

A look-up answers found, malformed (with why, in the citizen's language) or unknown, in
one place for every channel. Nothing here carries personal data: no name, phone, email,
address, position, or the citizen's own text, unless the citizen let it be public, and
then only the text, with phone numbers and e-mail addresses taken out. Listings (Open311's
``GET requests`` by filters) show only public complaints; a complaint's code shows its own.
The files of a public answer (proof of the work done) go to whoever holds the code.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import tracking
from bot.core import Core
from bot.messages import SHARED_FILE, citizen_text, format_time
from bot.logs import remove_personal_data
from bot.statuses import DISPUTABLE, FINISHED
from contract.results import LifecycleError, Lookup, PublicFile, PublicReply, PublicStatus, StoredFile
from storage.models import Attachment, Complaint, Message

LIMIT = 1000  # GeoReport v2's ceiling for one answer


def _public(core: Core, complaint: Complaint, replies: tuple[PublicReply, ...]) -> PublicStatus:
    vi, en = core.directory.unit_names.get(complaint.unit_id, ("", ""))
    disputable = None
    if complaint.status in DISPUTABLE and complaint.resolved_at is not None:
        disputable = complaint.resolved_at + timedelta(days=core.config.satisfaction.dispute_days)
    return PublicStatus(
        code=complaint.tracking_code, status=complaint.status, unit_slug=core.directory.unit_slug(complaint.unit_id),
        unit_name=vi, unit_name_en=en, category=complaint.category, created_at=complaint.created_at,
        first_response_due=complaint.first_response_due, resolution_due=complaint.resolution_due,
        replies=replies, updated_at=complaint.updated_at, finished=complaint.status in FINISHED,
        urgency=complaint.urgency, description=remove_personal_data(complaint.text) if complaint.public else None,
        disputable_until=disputable)


async def _replies(session: AsyncSession, complaint_ids: list[int]) -> dict[int, list[PublicReply]]:
    """The public answers of these complaints, oldest first, each with its files."""
    replies: dict[int, list[PublicReply]] = defaultdict(list)
    if not complaint_ids:
        return replies
    messages = (await session.execute(
        select(Message.id, Message.complaint_id, Message.created_at, Message.text)
        .where(Message.complaint_id.in_(complaint_ids), Message.public.is_(True))
        .order_by(Message.created_at, Message.id))).all()
    files: dict[int, list[PublicFile]] = defaultdict(list)
    if messages:
        for id_, message_id, filename, content_type in (await session.execute(
                select(Attachment.id, Attachment.message_id, Attachment.filename, Attachment.content_type)
                .where(Attachment.message_id.in_([m.id for m in messages])).order_by(Attachment.id))).all():
            files[message_id].append(PublicFile(id_, filename, content_type))
    for message_id, complaint_id, at, text in messages:
        replies[complaint_id].append(PublicReply(at, text, tuple(files.get(message_id, ()))))
    return replies


async def public_status(core: Core, code: str) -> PublicStatus | None:
    """The public status of the complaint with this (normalised) code, or None."""
    async with core.sessions() as session:
        complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
        if complaint is None:
            return None
        replies = await _replies(session, [complaint.id])
    return _public(core, complaint, tuple(replies.get(complaint.id, ())))


async def public_file(core: Core, code: str, attachment_id: int) -> StoredFile:
    """A file of one of the complaint's public answers; LifecycleError for any other."""
    async with core.sessions() as session:
        item = await session.scalar(
            select(Attachment).join(Message, Message.id == Attachment.message_id)
            .join(Complaint, Complaint.id == Message.complaint_id)
            .where(Attachment.id == attachment_id, Complaint.tracking_code == code, Message.public.is_(True),
                   Message.direction == "out"))
        if item is not None and item.data is None and (item.reference or "").startswith(SHARED_FILE):
            # Another reporter's copy of an incident's answer: the bytes are the first answer's.
            shared = await session.get(Attachment, int(item.reference.removeprefix(SHARED_FILE)))
            data = shared.data if shared is not None else None
            return StoredFile(item.filename, item.content_type, data, None)
    if item is None:
        raise LifecycleError(f"no public file {attachment_id} of {code}")
    return StoredFile(item.filename, item.content_type, item.data, item.reference)


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
                 closed: bool | None = None, public_only: bool = False, limit: int = LIMIT) -> list[PublicStatus]:
    """Complaints matching every filter given, newest first, at most ``limit``.

    ``public_only``: only complaints whose citizen let them be public (a listing).
    """
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
    if public_only:
        query = query.where(Complaint.public.is_(True))
    query = query.order_by(Complaint.created_at.desc(), Complaint.id.desc()).limit(min(limit, LIMIT))
    async with core.sessions() as session:
        complaints = (await session.scalars(query)).all()
        replies = await _replies(session, [c.id for c in complaints])
    return [_public(core, complaint, tuple(replies.get(complaint.id, ()))) for complaint in complaints]
