"""Satisfaction ("Khách về, được hài lòng"): the citizen rates the answer from 1 to 5.

A rating comes as a button (Telegram), a reply that is just a digit with an optional
comment (SMS, email, chat), or a form on the status page. One rating counts per
complaint: a later one replaces it, and the audit trail keeps both. A low rating (1 or
2) reopens the complaint for the unit head's review when the configuration says so.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import outbox
from bot.core import Core
from bot.lifecycle import queue_to_citizen, reopen
from bot.messages import to_staff
from bot.statuses import RATEABLE, schedule_checks
from contract.results import LifecycleError, RatingError
from storage.models import Complaint, Event

# "5", "2. chưa xử lý triệt để", "1 - tệ", "4, cán bộ nhiệt tình": a digit alone, or a
# digit, a separator, then a comment. A digit followed by words ("5 giờ chiều vẫn mất
# điện") is a new message, not a rating: taking it as one would lose a complaint.
_REPLY = re.compile(r"^\s*([1-5])\s*(?:[.,:;/)\-–]\s*(.*))?$", re.DOTALL)
LOW = 2


def parse_reply(text: str) -> tuple[int, str | None] | None:
    """(rating, comment) when a message is a rating reply, else None."""
    match = _REPLY.match(text or "")
    if not match:
        return None
    comment = (match.group(2) or "").strip()
    return int(match.group(1)), comment or None


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
