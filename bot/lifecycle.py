"""Status changes of a complaint and the messages each one causes.

Every change is written with its audit event and the messages it causes to the citizen
in one transaction; the messages go out through the outbox on the citizen's channel.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import outbox
from bot.core import Core
from storage.models import Complaint, Contact, Event, Message, Staff


class LifecycleError(ValueError):
    """A status change that cannot be made (unknown complaint or officer)."""


async def queue_to_citizen(core: Core, session: AsyncSession, now: datetime, complaint: Complaint, key: str,
                           text_key: str, subject_key: str | None = None, subject: str | None = None,
                           **params: str) -> None:
    """Queue a catalogue text to the complaint's citizen, if they left a way to reach them."""
    if complaint.contact_id is None:
        return  # an anonymous web citizen reads everything on the status page
    contact = await session.get(Contact, complaint.contact_id)
    language = complaint.language
    fields = dict(code=complaint.tracking_code, unit=core.unit_name(complaint.unit_id, language),
                  track_url=core.track_url(complaint.tracking_code), **params)
    mail_subject = None
    if subject_key:
        mail_subject = core.texts.get(language, subject_key, **fields)
        if subject:
            mail_subject = f"[{complaint.tracking_code}] {subject}"[:300]
    await outbox.enqueue(session, now, key=key, channel=contact.channel, recipient=contact.address,
                         text=core.texts.get(language, text_key, **fields), language=language,
                         complaint_id=complaint.id, subject=mail_subject)


async def answer(core: Core, tracking_code: str, staff_slug: str, text: str) -> Message:
    """Record an officer's public answer and send it to the citizen on their channel."""
    if not text.strip():
        raise LifecycleError("empty answer")
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        complaint = await session.scalar(
            select(Complaint).where(Complaint.tracking_code == tracking_code).with_for_update())
        if complaint is None:
            raise LifecycleError(f"no complaint {tracking_code}")
        officer = await session.scalar(select(Staff).where(Staff.slug == staff_slug))
        if officer is None:
            raise LifecycleError(f"no staff member {staff_slug}")
        message = Message(complaint_id=complaint.id, direction="out", channel="staff", author_staff_id=officer.id,
                          text=text, public=True, created_at=now)
        session.add(message)
        await session.flush()
        previous = complaint.status
        complaint.status = "answered"
        complaint.updated_at = now
        complaint.first_response_at = complaint.first_response_at or now
        session.add(Event(complaint_id=complaint.id, at=now, actor=f"staff:{staff_slug}", kind="answered",
                          detail={"from": previous, "message_id": message.id}))
        await queue_to_citizen(core, session, now, complaint, f"answer:{message.id}", "citizen.answer", text=text)
    core.outbox_ready.set()
    return message
