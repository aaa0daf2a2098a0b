"""Satisfaction ("Khách về, được hài lòng"): the citizen rates the answer from 1 to 5.

A rating comes as a button (Telegram), a reply that is just a digit with an optional
comment (SMS, email, chat), or a form on the status page. One rating counts per
complaint: a later one replaces it, and the audit trail keeps both. A low rating (1 or
2) reopens the complaint for the unit head's review when the configuration says so.

After a resolution the citizen may also say it did not fix the problem ("chưa xong",
"CHUA XONG" by SMS, "not fixed"; a button on Telegram; a link on the status page) within
``satisfaction.dispute_days``: the complaint reopens, goes to the unit head, and the
scorecard counts the resolution as disputed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import outbox
from bot.core import Core
from bot.folding import fold
from bot.lifecycle import queue_to_citizen, reopen
from bot.messages import format_time, to_staff
from bot.statuses import DISPUTABLE, RATEABLE, schedule_checks
from contract.results import LifecycleError, RatingError
from storage.models import Complaint, Event

# "5", "2. chưa xử lý triệt để", "1 - tệ", "4, cán bộ nhiệt tình": a digit alone, or a
# digit, a separator, then a comment. A digit followed by words ("5 giờ chiều vẫn mất
# điện") is a new message, not a rating: taking it as one would lose a complaint.
_REPLY = re.compile(r"^\s*([1-5])\s*(?:[.,:;/)\-–]\s*(.*))?$", re.DOTALL)
LOW = 2
# Said as the message's first words, with or without diacritics, then what is still wrong.
_NOT_FIXED = ("chua xong", "chuaxong", "chua xu ly xong", "chua duoc xu ly", "chua khac phuc", "not fixed", "not resolved")


def parse_reply(text: str) -> tuple[int, str | None] | None:
    """(rating, comment) when a message is a rating reply, else None."""
    match = _REPLY.match(text or "")
    if not match:
        return None
    comment = (match.group(2) or "").strip()
    return int(match.group(1)), comment or None


def parse_dispute(text: str) -> tuple[bool, str | None]:
    """(True, what the citizen added) when a message says the problem is not fixed."""
    folded = fold(text or "")
    for phrase in _NOT_FIXED:
        if folded == phrase or folded.startswith(phrase + " "):
            words = len(phrase.split())
            rest = text.strip().split(None, words)
            comment = rest[words].lstrip(" .,:;-–!") if len(rest) > words else ""
            return True, comment or None
    return False, None


async def awaiting_dispute(session: AsyncSession, core: Core, contact_ids: list[int], now: datetime,
                           codes: tuple[str, ...] = ()) -> Complaint | None:
    """The contact's complaint most recently resolved within the dispute window, if any."""
    if not contact_ids:
        return None
    window = timedelta(days=core.config.satisfaction.dispute_days)
    query = select(Complaint).where(
        or_(Complaint.contact_id.in_(contact_ids), Complaint.alternate_contact_id.in_(contact_ids)),
        Complaint.status.in_(DISPUTABLE), Complaint.resolved_at >= now - window)
    if codes:
        query = query.where(Complaint.tracking_code.in_(codes))
    return await session.scalar(query.order_by(Complaint.resolved_at.desc()).limit(1).with_for_update())


async def record_dispute(core: Core, session: AsyncSession, now: datetime, complaint: Complaint,
                         comment: str | None, via: str) -> None:
    """The citizen says the resolution did not fix it (caller's transaction): the complaint
    reopens with fresh deadlines, its unit's heads are told, the citizen hears when to expect
    an answer."""
    window = timedelta(days=core.config.satisfaction.dispute_days)
    if complaint.status not in DISPUTABLE or complaint.resolved_at is None or complaint.resolved_at < now - window:
        raise LifecycleError(f"complaint {complaint.tracking_code} cannot be disputed now", "cannot_dispute")
    resolved_at = complaint.resolved_at
    complaint.disputed_at = now
    reopen(core, session, now, complaint, "citizen", reason="not fixed", via=via, comment=bool(comment))
    session.add(Event(complaint_id=complaint.id, at=now, actor="citizen", kind="disputed",
                      detail={"via": via, "resolved_at": resolved_at.isoformat()}))
    directory = await core.directory.staff(session)
    members = list({m.id: m for m in directory.heads_of(complaint) + directory.assignees(complaint)}.values())
    await outbox.enqueue_many(session, now, to_staff(
        core, directory, members, f"not-fixed:{complaint.id}:{now.isoformat()}", "staff.not_fixed", complaint,
        comment=comment or "-"))
    await queue_to_citizen(core, session, now, complaint, f"not-fixed:{complaint.id}:{now.isoformat()}",
                           "citizen.not_fixed", origin="reply",
                           due=format_time(core, complaint.first_response_due, complaint.language))


async def not_fixed(core: Core, code: str, comment: str | None = None, via: str = "web") -> None:
    """Dispute a resolution by its tracking code (the status page, a button)."""
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        complaint = await session.scalar(
            select(Complaint).where(Complaint.tracking_code == code).with_for_update())
        if complaint is None:
            raise LifecycleError(f"no complaint {code}")
        await record_dispute(core, session, now, complaint, comment[:2000] if comment else None, via)
    core.outbox_ready.set()


async def awaiting_rating(session: AsyncSession, core: Core, contact_ids: list[int], now: datetime,
                          codes: tuple[str, ...] = ()) -> Complaint | None:
    """The contact's complaint most recently resolved within the survey window, if any.

    ``codes`` narrows it to the complaint a rating names (a button under its survey).
    """
    if not contact_ids:
        return None
    window = timedelta(days=core.config.satisfaction.survey_window_days)
    query = select(Complaint).where(
        or_(Complaint.contact_id.in_(contact_ids), Complaint.alternate_contact_id.in_(contact_ids)),
        Complaint.status.in_(RATEABLE), Complaint.resolved_at >= now - window)
    if codes:
        query = query.where(Complaint.tracking_code.in_(codes))
    return await session.scalar(query.order_by(Complaint.resolved_at.desc()).limit(1).with_for_update())


async def record(core: Core, session: AsyncSession, now: datetime, complaint: Complaint, rating: int,
                 comment: str | None, via: str) -> None:
    """Store a rating in the caller's transaction, with its event, thanks and consequences."""
    if not 1 <= rating <= 5:
        raise RatingError("a rating is a whole number from 1 to 5")
    if complaint.status not in RATEABLE and complaint.rated_at is None:
        raise RatingError(f"complaint {complaint.tracking_code} is not resolved yet")
    previous = complaint.rating
    complaint.rating, complaint.rating_comment, complaint.rated_at = rating, comment, now
    complaint.updated_at = now
    session.add(Event(complaint_id=complaint.id, at=now, actor="citizen", kind="rated",
                      detail={"rating": rating, "previous": previous, "via": via, "comment": bool(comment)}))
    await queue_to_citizen(core, session, now, complaint, f"rated:{complaint.id}:{now.isoformat()}",
                           "citizen.rating_thanks", rating=str(rating))
    if rating <= LOW and core.config.satisfaction.reopen_on_low_rating and complaint.status in RATEABLE:
        reopen(core, session, now, complaint, "system", reason="low rating", rating=rating)
        directory = await core.directory.staff(session)
        await outbox.enqueue_many(session, now, to_staff(
            core, directory, directory.heads_of(complaint), f"low-rating:{complaint.id}:{now.isoformat()}",
            "staff.low_rating", complaint, rating=rating, comment=comment or "-"))
    schedule_checks(core, complaint)


async def rate(core: Core, code: str, rating: int, comment: str | None = None, via: str = "web") -> None:
    """Rate a resolved complaint by its tracking code (the status page, a survey link, a button)."""
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        complaint = await session.scalar(
            select(Complaint).where(Complaint.tracking_code == code).with_for_update())
        if complaint is None:
            raise LifecycleError(f"no complaint {code}")
        await record(core, session, now, complaint, rating, comment[:2000] if comment else None, via)
    core.outbox_ready.set()
