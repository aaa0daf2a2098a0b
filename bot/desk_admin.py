"""What the desk shows unit heads and admins beyond the queues: the digest's figures live for
a unit and period (the same computation the digest sends, ``bot.digests.preview``) with
the overdue complaints counted by officer; and for admins the units, staff and routing
rules as the store holds them (the configuration stays their source), the rules' route
test, and the outbox's failed messages with a retry.

Heads see their own unit, admins any; an agent sees neither (NotAllowed).
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from bot import digests, outbox, routing, stats
from bot.core import Core
from bot.desk_case import mask_address
from contract.desk import FailedMessage, StaffLine
from contract.results import LifecycleError, NotAllowed, Officer
from storage.models import Complaint, OutboxMessage, Staff

log = logging.getLogger(__name__)

FAILED_SHOWN = 100


def _unit_for(core: Core, officer: Officer | None, unit_slug: str | None) -> str:
    """The unit a head or admin looks at: a head only their own, an admin any (default: theirs)."""
    if officer is None or officer.role not in ("head", "admin"):
        raise NotAllowed("unit heads and admins only")
    own = core.directory.unit_slug(officer.unit_id)
    slug = unit_slug or own
    if slug not in core.directory.unit_ids:
        raise LifecycleError(f"no unit {slug!r}")
    if officer.role == "head" and slug != own:
        raise NotAllowed("a head sees their own unit")
    return slug


async def dashboard(core: Core, officer: Officer | None, unit_slug: str | None, period: str,
                    language: str) -> tuple[digests.Digest, bytes, list[tuple[str | None, str | None, int]]]:
    """The digest of a unit for a period as it would be sent now, its chart, and overdue by officer."""
    slug = _unit_for(core, officer, unit_slug)
    try:
        chosen = digests.parse_period(period or "daily", core.clock.now(), core.config.tz)
    except digests.DigestError as error:
        raise LifecycleError(str(error)) from None
    digest, chart = await digests.preview(core, slug, chosen, language)
    async with core.sessions() as session:
        by_officer = (await session.execute(
            select(Staff.slug, Staff.name, func.count()).select_from(Complaint)
            .outerjoin(Staff, Staff.id == Complaint.assignee_id)
            .where(Complaint.unit_id == core.directory.unit_ids[slug], stats.overdue(core.clock.now()))
            .group_by(Staff.slug, Staff.name).order_by(func.count().desc(), Staff.name))).all()
    return digest, chart, [(a, b, int(c)) for a, b, c in by_officer]


def _admin(officer: Officer | None) -> None:
    if officer is None or officer.role != "admin":
        raise NotAllowed("admins only")


async def staff_lines(core: Core, officer: Officer | None) -> list[StaffLine]:
    """Every staff member as the store holds them (from the configuration), addresses masked."""
    _admin(officer)
    async with core.sessions() as session:
        members = (await session.scalars(select(Staff).order_by(Staff.unit_id, Staff.role, Staff.slug))).all()
    return [StaffLine(m.slug, m.name, core.directory.unit_slug(m.unit_id), m.role, m.telegram_chat_id is not None,
                      mask_address("email", m.email) if m.email else None, m.active) for m in members]


async def rules(core: Core, officer: Officer | None) -> list[routing.Rule]:
    """The routing rules in the order they are tried."""
    _admin(officer)
    async with core.sessions() as session:
        return await routing.load_rules(session)


async def route_test(core: Core, officer: Officer | None, text: str, area: str | None, category: str | None,
                     channel: str) -> routing.Decision:
    """Which unit a complaint like this would go to, and why (nothing is stored)."""
    _admin(officer)
    async with core.sessions() as session:
        loaded = await routing.load_rules(session)
    return routing.route(loaded, core.config.routing.default_unit, text=text[:5000], area=area or None,
                         category=category or None, channel=channel or "web")


async def failed_messages(core: Core, officer: Officer | None) -> list[FailedMessage]:
    """The outbox's messages that failed for good, newest first (recipients masked)."""
    _admin(officer)
    async with core.sessions() as session:
        rows = (await session.execute(
            select(OutboxMessage, Complaint.tracking_code)
            .outerjoin(Complaint, Complaint.id == OutboxMessage.complaint_id)
            .where(OutboxMessage.status == "failed").order_by(OutboxMessage.id.desc()).limit(FAILED_SHOWN))).all()
    return [FailedMessage(row.id, row.channel, mask_address(row.channel, row.recipient),
                          (row.payload or {}).get("kind") or "message", code, row.attempts, row.last_error,
                          row.created_at) for row, code in rows]


async def retry(core: Core, officer: Officer | None, message_id: int) -> None:
    """Queue a failed message again; the dispatcher sends it as soon as it can."""
    _admin(officer)
    # The same as `feedback-intake outbox retry ID`: a fresh round of attempts.
    if not await outbox.requeue(core, ids=[message_id]):
        raise LifecycleError(f"no failed message {message_id}")
    log.info("outbox message retried from the desk", extra={"fields": {"id": message_id, "by": officer.slug}})
