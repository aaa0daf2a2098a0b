"""The desk's queues and lists: an officer's own complaints, the unit's open ones, the
unassigned, the overdue, those due today, and any complaint by filters or by search, each
with the counts of every queue.

Who sees what is ``bot.staff.visible_units``, the rule the staff commands are authorised
by: an officer and a unit head see their unit's complaints, an admin every unit's, so a
complaint that cannot be opened is never listed or found either.

Every queue reads through an index: a unit's open complaints by (unit, status, deadline),
an officer's by (assignee, status), the search through the text index
(``bot.desk_search``); a status other than the open ones or a date range narrows a
unit's complaints read newest first by (unit, created).
"Waiting for the citizen" lists the complaints whose officer asked the citizen for more
(``Status.WAITING``; their clock is paused).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import desk_search, staff, stats, tracking
from bot.core import Core
from bot.statuses import FINISHED, OPEN, Status
from contract.desk import FilterError, Filters, QueuePage, QueueRow
from contract.results import Officer
from storage.models import Complaint, Staff

PAGE_SIZE = 50
MAX_PAGE = 50
WAITING_STATUS = Status.WAITING
QUEUES = ("mine", "unit", "unassigned", "overdue", "today", "waiting", "all")
# Which date a range applies to: receipt, first answer, resolution, rating.
DATE_FIELDS = {"created": Complaint.created_at, "first_answer": Complaint.first_response_at,
               "resolution": Complaint.resolved_at, "rated": Complaint.rated_at}
SUMMARY_LENGTH = 140


def _open_statuses() -> list[str]:
    return sorted(OPEN)


def _local_day(core: Core, value: str, name: str) -> datetime:
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise FilterError(f"{name}: not a date (YYYY-MM-DD): {value[:20]!r}") from None
    return datetime.combine(day, time(0), tzinfo=core.config.tz).astimezone(timezone.utc)


def _today(core: Core, now: datetime) -> tuple[datetime, datetime]:
    today = now.astimezone(core.config.tz).date()
    start = datetime.combine(today, time(0), tzinfo=core.config.tz)
    return start.astimezone(timezone.utc), (start + timedelta(days=1)).astimezone(timezone.utc)


def queue_conditions(core: Core, officer: Officer, queue: str, now: datetime, unit_id: int | None = None) -> list:
    """SQL conditions of a queue, for an officer (the units they may see included).

    The unit's queues are of the officer's own unit, or of ``unit_id`` (an admin looking at
    another unit); "all" is every complaint they may see.
    """
    units = staff.visible_units(officer)
    seen = [] if units is None else [Complaint.unit_id.in_(sorted(units))]
    is_open = Complaint.status.in_(_open_statuses())
    if queue == "mine":
        return [Complaint.assignee_id == officer.id, is_open]
    if queue == "all":
        return seen
    seen.append(Complaint.unit_id == (officer.unit_id if unit_id is None else unit_id))
    if queue == "unit":
        return seen + [is_open]
    if queue == "unassigned":
        return seen + [is_open, Complaint.assignee_id.is_(None)]
    if queue == "overdue":
        return seen + [is_open, stats.overdue(now)]
    if queue == "today":
        start, end = _today(core, now)
        return seen + [is_open, Complaint.first_response_at.is_(None), Complaint.first_response_due >= start,
                       Complaint.first_response_due < end]
    if queue == "waiting" and WAITING_STATUS:
        return seen + [Complaint.status == WAITING_STATUS]
    raise FilterError(f"no queue {queue!r}")


async def filter_conditions(core: Core, session: AsyncSession, filters: Filters) -> list:
    """SQL conditions of the filters (the query's text is searched apart)."""
    conditions = []
    if filters.status:
        if filters.status not in {s.value for s in Status}:
            raise FilterError(f"status: no status {filters.status[:30]!r}")
        conditions.append(Complaint.status == filters.status)
    if filters.unit:
        unit_id = core.directory.unit_ids.get(filters.unit)
        if unit_id is None:
            raise FilterError(f"unit: no unit {filters.unit[:64]!r}")
        conditions.append(Complaint.unit_id == unit_id)
    if filters.category:
        conditions.append(Complaint.category == filters.category[:64])
    if filters.channel:
        conditions.append(Complaint.channel == filters.channel[:16])
    if filters.area:
        conditions.append(func.lower(Complaint.area).contains(filters.area.strip().lower()[:200], autoescape=True))
    if filters.officer:
        officer_id = await session.scalar(select(Staff.id).where(Staff.slug == filters.officer[:64]))
        conditions.append(Complaint.assignee_id == (officer_id or -1))
    column = DATE_FIELDS.get(filters.date_field)
    if column is None:
        raise FilterError(f"date_field: one of {', '.join(DATE_FIELDS)}")
    if filters.date_from:
        conditions.append(column >= _local_day(core, filters.date_from, "date_from"))
    if filters.date_to:
        conditions.append(column < _local_day(core, filters.date_to, "date_to") + timedelta(days=1))
    if filters.rating_max is not None:
        conditions.append(Complaint.rating <= filters.rating_max)
    return conditions


def _order(queue: str) -> list:
    if queue in ("all", "waiting"):
        return [Complaint.created_at.desc(), Complaint.id.desc()]
    # Soonest deadline first; an officer works the queue from the top.
    return [Complaint.first_response_due.asc().nulls_last(), Complaint.id]


def _count(condition):
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


async def counts(core: Core, session: AsyncSession, officer: Officer, now: datetime,
                 unit_id: int | None = None) -> dict[str, int]:
    """How many complaints each queue holds (but "all", which would count every row).

    The unit's queues are counted in one pass over its open complaints, read from the
    index that holds every column the conditions need; the officer's own from theirs.
    """
    start, end = _today(core, now)
    unit, unassigned, late, today = (await session.execute(
        select(func.count(), _count(Complaint.assignee_id.is_(None)), _count(stats.overdue(now)),
               _count(and_(Complaint.first_response_at.is_(None), Complaint.first_response_due >= start,
                           Complaint.first_response_due < end)))
        .where(*queue_conditions(core, officer, "unit", now, unit_id)))).one()
    found = {"unit": unit, "unassigned": unassigned, "overdue": late, "today": today}
    for queue in ("mine", "waiting"):
        if queue in QUEUES:
            found[queue] = await session.scalar(select(func.count()).select_from(Complaint).where(
                *queue_conditions(core, officer, queue, now, unit_id)))
    return {queue: int(found[queue] or 0) for queue in QUEUES if queue != "all"}


def _row(complaint: Complaint, assignee: str | None, now: datetime) -> QueueRow:
    overdue = complaint.status not in FINISHED and (
        (complaint.first_response_at is None and complaint.first_response_due is not None
         and complaint.first_response_due <= now)
        or (complaint.resolution_due is not None and complaint.resolution_due <= now))
    return QueueRow(complaint.tracking_code, complaint.status, complaint.unit_id, complaint.category,
                    complaint.channel, complaint.area, assignee, complaint.created_at, complaint.first_response_due,
                    bool(overdue), " ".join(complaint.text.split())[:SUMMARY_LENGTH])


async def queue_page(core: Core, officer: Officer | None, queue: str, filters: Filters, page: int = 0,
                     page_size: int = PAGE_SIZE) -> QueuePage:
    """A page of a queue (or of search results) with the counts of every queue."""
    if officer is None:
        staff.visible_units(officer)  # raises NotAllowed
    page = max(0, min(page, MAX_PAGE))
    now = core.clock.now()
    query_text = filters.query.strip()[:200]
    if query_text:
        await desk_search.index_pending(core)
    unit_id = None
    if filters.unit:
        unit_id = core.directory.unit_ids.get(filters.unit)
        if unit_id is None:
            raise FilterError(f"unit: no unit {filters.unit[:64]!r}")
    async with core.sessions() as session:
        conditions = queue_conditions(core, officer, queue, now, unit_id) + \
            await filter_conditions(core, session, filters)
        queue_counts = await counts(core, session, officer, now, unit_id)
        if query_text:
            code = tracking.find_codes(query_text, core.config.service.tracking_prefix)
            if code:
                ids = list((await session.scalars(select(Complaint.id).where(
                    Complaint.tracking_code.in_(code), *conditions))).all())
            else:
                ids = await desk_search.matching_complaints(
                    session, desk_search.phrase(query_text), conditions, (page + 1) * page_size + 1)
            more = len(ids) > (page + 1) * page_size
            chosen = ids[page * page_size:(page + 1) * page_size]
        else:
            # The page's ids first, from the index alone; then their rows. Selecting whole rows
            # in the sorted query would read every matching row before the sort keeps 50.
            ids = list((await session.scalars(select(Complaint.id).where(*conditions).order_by(*_order(queue))
                                              .offset(page * page_size).limit(page_size + 1))).all())
            more = len(ids) > page_size
            chosen = ids[:page_size]
        rows = (await session.execute(
            select(Complaint, Staff.name).outerjoin(Staff, Staff.id == Complaint.assignee_id)
            .where(Complaint.id.in_(chosen)))).all() if chosen else []
    order = {id_: index for index, id_ in enumerate(chosen)}
    rows = sorted(rows, key=lambda row: order[row[0].id])
    return QueuePage(queue, tuple(_row(c, name, now) for c, name in rows), queue_counts, page, more,
                     searched=bool(query_text))

