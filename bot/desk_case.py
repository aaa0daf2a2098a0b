"""A complaint as the desk shows it: where it stands, who wrote it, and its whole story across
channels in one timeline: the citizen's messages, the answers and internal notes, every
change from the audit trail (routed, claimed, reassigned, apologised, escalated, resolved,
reopened, rated), and every message we sent the citizen with how its sending went, read
from its outbox row (status, attempts, last error, when sent).

The citizen's addresses are shown only to the roles the desk's configuration allows;
others see them masked, the way the logs mask them.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import staff
from bot.core import Core
from bot.logs import mask_email, mask_phone
from bot.statuses import FINISHED, Status
from contract.desk import CaseView, Delivery, TimelineEntry
from contract.results import LifecycleError, NotAllowed, Officer
from storage.models import Attachment, Complaint, Contact, Event, Message, OutboxMessage, Staff

# Events that repeat what a message in the timeline already says.
_SHOWN_BY_MESSAGE = frozenset({"note", "followup", "created"})


def mask_address(channel: str, address: str) -> str:
    """A citizen's or officer's address as someone who may not see it reads it."""
    if "@" in address:
        return mask_email(address)
    if channel in ("sms", "zalo") or address.startswith("+"):
        return mask_phone(address)
    return address[:2] + "*" * max(len(address) - 2, 3)


def _delivery(row: OutboxMessage, masked: bool) -> Delivery:
    recipient = mask_address(row.channel, row.recipient) if masked else row.recipient
    return Delivery(row.channel, recipient, (row.payload or {}).get("kind") or "message", row.status, row.attempts,
                    row.last_error, row.sent_at)


async def _complaint(session: AsyncSession, officer: Officer | None, code: str) -> Complaint:
    if officer is None:
        raise NotAllowed("staff only")
    complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
    if complaint is None:
        raise LifecycleError(f"no complaint {code}")
    if not staff.may_see(officer, complaint.unit_id):
        raise NotAllowed(f"{code} belongs to another unit")
    return complaint


def _said(core: Core, event: Event) -> dict:
    """An event's detail as staff read it: a configured reason by its name, the note after it."""
    detail = dict(event.detail or {})
    reason = detail.get("reason")
    configured = next((r for r in core.config.reasons if r.slug == reason), None) if isinstance(reason, str) else None
    if configured is not None:
        detail["reason"] = " — ".join(filter(None, [configured.name, str(detail.get("note") or "").strip()]))
    return detail


async def case_view(core: Core, officer: Officer | None, code: str, contact_roles: frozenset[str]) -> CaseView:
    """The complaint's page for an officer who may see it (NotAllowed otherwise)."""
    masked = officer is None or officer.role not in contact_roles
    now = core.clock.now()
    async with core.sessions() as session:
        complaint = await _complaint(session, officer, code)
        contacts = []
        for contact_id in (complaint.contact_id, complaint.alternate_contact_id):
            contact = await session.get(Contact, contact_id) if contact_id else None
            if contact is not None:
                contacts.append((contact.channel, mask_address(contact.channel, contact.address) if masked
                                 else contact.address))
        assignee = await session.get(Staff, complaint.assignee_id) if complaint.assignee_id else None
        messages = (await session.execute(
            select(Message, Staff.name).outerjoin(Staff, Staff.id == Message.author_staff_id)
            .where(Message.complaint_id == complaint.id).order_by(Message.created_at, Message.id))).all()
        files: dict[int, list[tuple[int, str, str, int]]] = {}
        if messages:
            for message_id, *details in (await session.execute(
                    select(Attachment.message_id, Attachment.id, Attachment.filename, Attachment.content_type,
                           Attachment.size).where(Attachment.message_id.in_([m.id for m, _ in messages]))
                    .order_by(Attachment.id))).all():
                files.setdefault(message_id, []).append(tuple(details))
        events = (await session.scalars(select(Event).where(Event.complaint_id == complaint.id)
                                        .order_by(Event.at, Event.id))).all()
        sent = (await session.scalars(select(OutboxMessage).where(OutboxMessage.complaint_id == complaint.id)
                                      .order_by(OutboxMessage.created_at, OutboxMessage.id))).all()
    answers = {row.key.split(":", 1)[1]: row for row in sent if row.key.startswith("answer:")}
    timeline = [TimelineEntry(at=m.created_at, kind=m.direction, text=m.text, author=name,
                              channel=m.channel, attachments=tuple(files.get(m.id, ())),
                              delivery=_delivery(answers[str(m.id)], masked) if str(m.id) in answers else None)
                for m, name in messages]
    timeline += [TimelineEntry(at=e.at, kind="event", author=e.actor, event=e.kind, detail=_said(core, e))
                 for e in events if e.kind not in _SHOWN_BY_MESSAGE]
    timeline += [TimelineEntry(at=row.created_at, kind="sent", text=(row.payload or {}).get("text") or "",
                               channel=row.channel, delivery=_delivery(row, masked))
                 for row in sent if not row.key.startswith("answer:")
                 and (row.payload or {}).get("audience", "citizen") == "citizen"]
    order = {"in": 0, "event": 1, "out": 2, "note": 2, "sent": 3}
    timeline.sort(key=lambda entry: (entry.at, order.get(entry.kind, 4)))
    is_open = complaint.status not in FINISHED
    overdue = is_open and (
        (complaint.first_response_at is None and complaint.first_response_due is not None
         and complaint.first_response_due <= now)
        or (complaint.resolution_due is not None and complaint.resolution_due <= now))
    return CaseView(
        code=complaint.tracking_code, status=complaint.status, open=is_open, channel=complaint.channel,
        unit_id=complaint.unit_id, unit_slug=core.directory.unit_slug(complaint.unit_id),
        assignee=assignee.name if assignee else None, assignee_slug=assignee.slug if assignee else None,
        category=complaint.category, area=complaint.area, subject=complaint.subject, text=complaint.text,
        created_at=complaint.created_at, first_response_due=complaint.first_response_due,
        resolution_due=complaint.resolution_due, first_response_at=complaint.first_response_at,
        resolved_at=complaint.resolved_at, overdue=bool(overdue), rating=complaint.rating,
        rating_comment=complaint.rating_comment, latitude=complaint.latitude, longitude=complaint.longitude,
        contacts=tuple(contacts), contacts_masked=masked, timeline=tuple(timeline), urgency=complaint.urgency,
        waiting=complaint.status == Status.WAITING,
        extendable=is_open and complaint.urgency == "complex" and complaint.extended_at is None)
