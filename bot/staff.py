"""Staff commands, the same whatever channel an officer uses: claim, reply, note, reassign,
resolve, list their work, read a whole case; and linking a Telegram chat to a staff member.

Every command is authorised here, not in the channel: an officer (agent) acts only on
their unit's complaints; a unit head on their unit's, and may pass them to any unit; an
admin on all. A citizen is no staff member, so every command refuses them.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import decisions, lifecycle
from bot.core import Core
from bot.incidents import grouping
from bot.messages import load_case
from bot.statuses import FINISHED, Status
from contract.messages import Attachment as FileGiven
from contract.results import Case, CaseSummary, IncidentSummary, NotAllowed, Officer, StoredFile
from storage.models import Attachment, Complaint, Message, OutboxMessage, Setting, Staff

LINK_CODE_LIFETIME = timedelta(hours=24)
LINK_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"


def officer_of(member: Staff) -> Officer:
    """A staff row as commands see it."""
    return Officer(member.id, member.slug, member.name, member.role, member.unit_id, member.telegram_chat_id)


_officer = officer_of


async def by_telegram_chat(core: Core, chat_id: int) -> Officer | None:
    """The active staff member linked to this Telegram chat, if any."""
    async with core.sessions() as session:
        member = await session.scalar(select(Staff).where(Staff.telegram_chat_id == chat_id,
                                                          Staff.active.is_(True)))
    return _officer(member) if member else None


async def by_slug(core: Core, slug: str) -> Officer | None:
    """The active staff member with this slug, if any."""
    async with core.sessions() as session:
        member = await session.scalar(select(Staff).where(Staff.slug == slug, Staff.active.is_(True)))
    return _officer(member) if member else None


async def _complaint_for(session: AsyncSession, officer: Officer, code: str) -> Complaint:
    complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
    if complaint is None:
        raise lifecycle.LifecycleError(f"no complaint {code}")
    if not may_see(officer, complaint.unit_id):
        raise NotAllowed(f"{code} belongs to another unit")
    return complaint


async def authorise(core: Core, officer: Officer | None, code: str) -> None:
    """Raise NotAllowed unless this officer may act on this complaint."""
    if officer is None:
        raise NotAllowed("staff only")
    async with core.sessions() as session:
        await _complaint_for(session, officer, code)


async def claim(core: Core, officer: Officer | None, code: str) -> None:
    """The officer takes the complaint."""
    await authorise(core, officer, code)
    await lifecycle.assign(core, code, officer.slug)


async def reply(core: Core, officer: Officer | None, code: str, text: str, source_id: str | None = None,
                attachments: tuple[FileGiven, ...] = ()) -> None:
    """Answer the citizen, on the citizen's own channel (once per source_id), with any
    photos or documents."""
    await authorise(core, officer, code)
    await lifecycle.answer(core, code, officer.slug, text, source_id=source_id, attachments=attachments)


async def note(core: Core, officer: Officer | None, code: str, text: str, source_id: str | None = None) -> None:
    """Add an internal note (once per source_id)."""
    await authorise(core, officer, code)
    await lifecycle.note(core, code, officer.slug, text, source_id=source_id)


async def resolve(core: Core, officer: Officer | None, code: str, text: str | None = None,
                  source_id: str | None = None, attachments: tuple[FileGiven, ...] = ()) -> None:
    """Resolve the complaint, with a last answer and proof of the work if given."""
    await authorise(core, officer, code)
    await lifecycle.resolve(core, code, officer.slug, text, source_id=source_id, attachments=attachments)


async def code_for_message(core: Core, channel: str, external_id: str) -> str | None:
    """The tracking code of the complaint one of our sent messages was about, if any."""
    async with core.sessions() as session:
        return await session.scalar(
            select(Complaint.tracking_code).join(OutboxMessage, OutboxMessage.complaint_id == Complaint.id)
            .where(OutboxMessage.channel == channel, OutboxMessage.external_id == external_id).limit(1))


async def reassign(core: Core, officer: Officer | None, code: str, unit_slug: str, reason: str | None = None,
                   note: str = "") -> None:
    """Pass the complaint to another unit (agents, heads and admins of its current unit),
    with a reason from the configured list and free text, both told to the citizen."""
    await authorise(core, officer, code)
    await lifecycle.reassign(core, code, unit_slug, by=officer.slug, reason=reason, note=note)


async def reopen(core: Core, officer: Officer | None, code: str, reason: str | None = None) -> None:
    """Open a resolved or closed complaint again, with fresh deadlines, and tell the citizen."""
    await authorise(core, officer, code)
    await lifecycle.reopen_by_staff(core, code, officer.slug, reason)


def visible_units(officer: Officer | None) -> frozenset[int] | None:
    """The units whose complaints an officer may see and act on; None: every unit (an admin).

    The one rule behind ``authorise``: lists and search results use it, so nobody finds a
    complaint they could not open.
    """
    if officer is None:
        raise NotAllowed("staff only")
    return None if officer.role == "admin" else frozenset({officer.unit_id})


def may_see(officer: Officer | None, unit_id: int) -> bool:
    """Whether an officer may see and act on complaints of this unit."""
    units = visible_units(officer)
    return units is None or unit_id in units


async def _summaries(core: Core, query) -> list[CaseSummary]:
    now = core.clock.now()
    async with core.sessions() as session:
        rows = (await session.scalars(query.order_by(Complaint.first_response_due).limit(50))).all()
    return [CaseSummary(c.tracking_code, c.status, c.unit_id, c.first_response_due,
                        bool(c.first_response_due and c.first_response_due <= now and c.first_response_at is None),
                        " ".join(c.text.split())[:80]) for c in rows]


async def mine(core: Core, officer: Officer | None) -> list[CaseSummary]:
    """The officer's open complaints, soonest deadline first."""
    if officer is None:
        raise NotAllowed("staff only")
    return await _summaries(core, select(Complaint).where(Complaint.assignee_id == officer.id,
                                                          Complaint.status.not_in(FINISHED)))


async def overdue(core: Core, officer: Officer | None) -> list[CaseSummary]:
    """Unanswered complaints past their deadline: the unit's, or all for an admin."""
    if officer is None:
        raise NotAllowed("staff only")
    # One waiting for the citizen's answer is not late: its clock is paused.
    query = select(Complaint).where(Complaint.status.not_in((*FINISHED, Status.WAITING)),
                                    Complaint.first_response_at.is_(None), Complaint.first_response_due <= core.clock.now())
    if officer.role != "admin":
        query = query.where(Complaint.unit_id == officer.unit_id)
    return await _summaries(core, query)


async def case(core: Core, officer: Officer | None, code: str) -> Case:
    """The whole case for an officer who may see it."""
    if officer is None:
        raise NotAllowed("staff only")
    async with core.sessions() as session:
        return await load_case(session, await _complaint_for(session, officer, code))


async def attachment(core: Core, officer: Officer | None, attachment_id: int) -> StoredFile:
    """An attachment's name, type and bytes (or where they are) for an officer who may see its case."""
    if officer is None:
        raise NotAllowed("staff only")
    async with core.sessions() as session:
        found = (await session.execute(
            select(Attachment, Complaint.tracking_code).join(Message, Message.id == Attachment.message_id)
            .join(Complaint, Complaint.id == Message.complaint_id).where(Attachment.id == attachment_id))).first()
        if found is None:
            raise lifecycle.LifecycleError(f"no attachment {attachment_id}")
        item, code = found
        await _complaint_for(session, officer, code)
    return StoredFile(item.filename, item.content_type, item.data, item.reference)


def _link_key(code: str) -> str:
    return "link:" + hashlib.sha256(code.encode()).hexdigest()[:48]


async def link_code(core: Core, staff_slug: str) -> str:
    """A one-time code the staff member sends as ``/link CODE`` to link their chat (24 hours)."""
    code = "".join(secrets.choice(LINK_ALPHABET) for _ in range(8))
    expires = core.clock.now() + LINK_CODE_LIFETIME
    async with core.sessions() as session, session.begin():
        member = await session.scalar(select(Staff).where(Staff.slug == staff_slug, Staff.active.is_(True)))
        if member is None:
            raise lifecycle.LifecycleError(f"no staff member {staff_slug}")
        # Only the code's hash is kept: a copy of the database does not let anyone link.
        session.add(Setting(key=_link_key(code), value=f"{member.id} {expires.isoformat()}"))
    return code


async def link(core: Core, code: str, telegram_chat_id: int) -> Officer | None:
    """Link a chat to the staff member a valid, unused code was made for; None if invalid."""
    normal = "".join(code.split()).upper()
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        stored = await session.get(Setting, _link_key(normal), with_for_update=True)
        if stored is None:
            return None
        member_id, expires = stored.value.split(" ", 1)
        await session.delete(stored)  # one use, valid or expired
        if datetime.fromisoformat(expires) < now:
            return None
        # A chat belongs to one staff member: unlink it from anyone who had it.
        await session.execute(update(Staff).where(Staff.telegram_chat_id == telegram_chat_id)
                              .values(telegram_chat_id=None))
        member = await session.get(Staff, int(member_id))
        member.telegram_chat_id = telegram_chat_id
    core.directory.forget()  # this process sees the new chat at once; others within directory.TTL
    return _officer(member)



# ---------------------------------------------------------------- decisions (bot/decisions.py)

async def ask(core: Core, officer: Officer | None, code: str, question: str, source_id: str | None = None) -> None:
    """Ask the citizen for more; the complaint's clock waits for their answer."""
    await authorise(core, officer, code)
    await decisions.ask(core, code, officer.slug, question, source_id=source_id)


async def set_urgency(core: Core, officer: Officer | None, code: str, level: str, reason: str) -> None:
    """Make the complaint urgent, normal or complex, with a reason."""
    await authorise(core, officer, code)
    await decisions.set_urgency(core, code, officer.slug, level, reason)


async def extend(core: Core, officer: Officer | None, code: str, reason: str) -> None:
    """Give a complex complaint more time, once, telling the citizen why."""
    await authorise(core, officer, code)
    await decisions.extend(core, code, officer.slug, reason)


async def reject(core: Core, officer: Officer | None, code: str, reason: str | None, note: str = "") -> None:
    """Close the complaint without acting on it, with a configured reason and free text."""
    await authorise(core, officer, code)
    await decisions.reject(core, code, officer.slug, reason, note)
# ---------------------------------------------------------------------------- incidents

async def incident_merge(core: Core, officer: Officer | None, codes: list[str]) -> IncidentSummary:
    """Merge complaints (and their incidents) into the first one's incident."""
    for code in codes:
        await authorise(core, officer, code)
    return await grouping.merge(core, codes, f"staff:{officer.slug}")


async def incident_split(core: Core, officer: Officer | None, code: str) -> IncidentSummary | None:
    """Take a complaint out of its incident; the incident as it is after (None if it ended)."""
    await authorise(core, officer, code)
    return await grouping.split(core, code, f"staff:{officer.slug}")


async def incident_join(core: Core, officer: Officer | None, code: str, candidate: str) -> IncidentSummary:
    """Join a suggested complaint to its candidate's incident (the officer pressed Join)."""
    return await incident_merge(core, officer, [candidate, code])


async def incident_keep(core: Core, officer: Officer | None, code: str, candidate: str) -> None:
    """Keep a suggested complaint separate (recorded, so the suggestion is answered)."""
    await authorise(core, officer, code)
    await grouping.keep_separate(core, code, candidate, f"staff:{officer.slug}")


async def incident_of(core: Core, officer: Officer | None, code: str) -> IncidentSummary | None:
    """The incident a complaint is in, for an officer who may see the complaint."""
    await authorise(core, officer, code)
    return await grouping.describe(core, code)
