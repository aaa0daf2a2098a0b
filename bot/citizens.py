"""What a channel may ask about a citizen it talks to: their complaints, their language,
and a draft they are still composing (kept in the store, so any process can continue it).
"""

from __future__ import annotations

import json

from sqlalchemy import or_, select

from bot import outbox
from bot.core import Core
from bot.status import public_status
from contract.messages import Outgoing
from contract.results import PublicStatus
from storage.db import insert_ignoring_conflicts
from storage.models import Complaint, Contact, Setting

DRAFT_PREFIX = "draft:"


async def complaints_of(core: Core, channel: str, address: str, limit: int = 10) -> list[PublicStatus]:
    """The citizen's latest complaints (reached on this channel and address), newest first."""
    async with core.sessions() as session:
        contact_id = await session.scalar(select(Contact.id).where(Contact.channel == channel,
                                                                   Contact.address == address))
        if contact_id is None:
            return []
        codes = (await session.scalars(
            select(Complaint.tracking_code)
            .where(or_(Complaint.contact_id == contact_id, Complaint.alternate_contact_id == contact_id))
            .order_by(Complaint.created_at.desc(), Complaint.id.desc()).limit(limit))).all()
    return [status for code in codes if (status := await public_status(core, code)) is not None]


async def owns(core: Core, channel: str, address: str, code: str) -> bool:
    """True when this complaint belongs to the citizen at this address."""
    async with core.sessions() as session:
        return bool(await session.scalar(
            select(Complaint.id).join(Contact, or_(Contact.id == Complaint.contact_id,
                                                   Contact.id == Complaint.alternate_contact_id))
            .where(Complaint.tracking_code == code, Contact.channel == channel, Contact.address == address)))


async def language_of(core: Core, channel: str, address: str) -> str | None:
    """The language the citizen chose, if we know them."""
    async with core.sessions() as session:
        return await session.scalar(select(Contact.language).where(Contact.channel == channel,
                                                                   Contact.address == address))


async def set_language(core: Core, channel: str, address: str, language: str) -> str:
    """Remember the citizen's language for every later message; return the one set."""
    language = core.texts.language(language)
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        await session.execute(insert_ignoring_conflicts(session, Contact).values(
            channel=channel, address=address, language=language, created_at=now))
        contact = await session.scalar(select(Contact).where(Contact.channel == channel, Contact.address == address))
        contact.language = language
        # Messages already queued keep their language; complaints still open follow the choice.
        await session.execute(Complaint.__table__.update()
                              .where(Complaint.contact_id == contact.id).values(language=language))
    return language


async def reply(core: Core, message: Outgoing) -> None:
    """Queue an answer that belongs to no complaint (a status query's reply) to a citizen."""
    async with core.sessions() as session, session.begin():
        await outbox.enqueue(session, core.clock.now(), message)
    core.outbox_ready.set()


def _draft_key(channel: str, address: str) -> str:
    return f"{DRAFT_PREFIX}{channel}:{address}"[:64]


async def load_draft(core: Core, channel: str, address: str) -> dict | None:
    """The citizen's unfinished message, if any."""
    async with core.sessions() as session:
        stored = await session.get(Setting, _draft_key(channel, address))
    return json.loads(stored.value) if stored else None


async def save_draft(core: Core, channel: str, address: str, draft: dict) -> None:
    """Keep the citizen's unfinished message (JSON-serialisable) until sent or cancelled."""
    async with core.sessions() as session, session.begin():
        stored = await session.get(Setting, _draft_key(channel, address))
        if stored is None:
            session.add(Setting(key=_draft_key(channel, address), value=json.dumps(draft, ensure_ascii=False)))
        else:
            stored.value = json.dumps(draft, ensure_ascii=False)


async def delete_draft(core: Core, channel: str, address: str) -> None:
    """Forget the citizen's unfinished message."""
    async with core.sessions() as session, session.begin():
        stored = await session.get(Setting, _draft_key(channel, address))
        if stored is not None:
            await session.delete(stored)
