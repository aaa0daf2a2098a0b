"""Building the messages the service sends to citizens, the same way from every caller.

A citizen's message is the catalogue text in their language, in its short variant for a
channel that has one (``sms.*`` texts: an SMS with Vietnamese diacritics holds only 70
characters a segment), with a subject that carries the tracking code and, for email, the
ids of the citizen's own messages so that mail clients show one thread.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from storage.models import Complaint, Contact, Message

THREADED_CHANNELS = ("email",)


def citizen_text(core: Core, channel: str, language: str, key: str, **params: object) -> str:
    """The text for a ``citizen.*`` key, in the channel's short variant when it has one."""
    short = f"{channel}.{key.removeprefix('citizen.')}"
    if short in core.texts.texts["vi"]:
        return core.texts.get(language, short, **params)
    return core.texts.get(language, key, **params)


async def thread_ids(session: AsyncSession, complaint_ids: Iterable[int]) -> dict[int, list[str]]:
    """The citizen's own message ids per complaint (email), oldest first, for References."""
    ids = list(set(complaint_ids))
    if not ids:
        return {}
    rows = (await session.execute(
        select(Message.complaint_id, Message.external_id)
        .where(Message.complaint_id.in_(ids), Message.channel.in_(THREADED_CHANNELS), Message.direction == "in",
               Message.external_id.is_not(None))
        .order_by(Message.id))).all()
    threads: dict[int, list[str]] = {}
    for complaint_id, external_id in rows:
        threads.setdefault(complaint_id, []).append(external_id)
    return threads


def to_citizen(core: Core, complaint: Complaint, contact: Contact, key: str, text_key: str,
               thread: list[str] | None = None, **params: object) -> dict:
    """One outbox message to the complaint's citizen on their channel (for ``enqueue_many``)."""
    language = complaint.language
    fields = dict(code=complaint.tracking_code, unit=core.unit_name(complaint.unit_id, language),
                  track_url=core.track_url(complaint.tracking_code), **params)
    topic = complaint.subject or core.texts.get(language, "citizen.subject_default")
    return dict(
        key=key, channel=contact.channel, recipient=contact.address, language=language, complaint_id=complaint.id,
        text=citizen_text(core, contact.channel, language, text_key, **fields),
        subject=f"[{complaint.tracking_code}] {topic}"[:300],
        # The last of the citizen's messages is the one this answers; all of them thread it.
        in_reply_to=list(thread or [])[-20:],
        # The kind lets a channel add what helps: rating buttons under a survey.
        metadata={"code": complaint.tracking_code, "kind": text_key.removeprefix("citizen."),
                  **({"gateway": contact.via} if contact.via else {})},
    )
