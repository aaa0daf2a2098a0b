"""Figures about how units answer complaints, computed by the database in SQL.

The digests and the public scorecard read the same figures: complaints new, answered
and resolved in a period; how long the first answer took (median and 90th percentile);
the share answered on time; satisfaction ratings, per unit and per officer.

A unit may have a million complaints. One read, through per-unit indexes (migration 0009),
copies the few rows the digest's period figures and chart need (those with anything
happening since the start of the chart's 30 days) into a temporary table, narrow and
without text, and those figures are aggregates over that. What stands open now (how many
open, how many overdue) is counted from the desk's queue index alone (migration 0008: it
holds every column the overdue test reads), and the oldest overdue ones are found walking
the open complaints' partial index by age (migration 0007): the stale open rows, half the
unit's open ones and spread over the whole table, are never copied or read from the table.
Percentiles are ``percentile_cont`` on PostgreSQL; SQLite has none, so there they are
the same linear interpolation over ``row_number()`` of the sorted subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import (Column, Float, Integer, MetaData, Table, and_, case, cast, func, insert, literal, or_, select,
                        text)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.statuses import FINISHED, OPEN, Status
from storage.models import Complaint, Event, Staff, UTCDateTime

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Ratings shown among "the lowest-rated answers": below 4 (hài lòng).
LOW_RATING = 3
OVERDUE_SHOWN = 10
LOWEST_SHOWN = 5

_metadata = MetaData()
# The rows a digest works on. Temporary: each transaction makes its own and drops it.
WORKING_SET = Table(
    "digest_working_set", _metadata,
    # No key and no index: it is read whole, a few times, and then dropped.
    Column("id", Integer),
    Column("created_at", UTCDateTime),
    Column("first_response_at", UTCDateTime),
    Column("resolved_at", UTCDateTime),
    Column("rated_at", UTCDateTime),
    Column("rating", Integer),
    Column("assignee_id", Integer),
    Column("on_time", Integer),
    Column("response_seconds", Float),
    # Incidents: a member's answer is its incident's, counted once (on the lead).
    Column("member", Integer),
    Column("incident_id", Integer),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)


@dataclass(frozen=True)
class Span:
    """A stretch of time [start, end), timezone-aware."""

    start: datetime
    end: datetime

    def holds(self, column):
        """SQL: the column's time falls in this span."""
        return and_(column >= self.start, column < self.end)


@dataclass
class PeriodFigures:
    """What happened in a unit in one period, and where it stands now."""

    new: int = 0
    answered: int = 0
    answered_on_time: int = 0
    resolved: int = 0
    open: int = 0
    overdue: int = 0
    ratings: int = 0
    rating_average: float | None = None
    response_median_seconds: float | None = None
    response_p90_seconds: float | None = None
    # Incidents with reports in the period, and how many reports they had in it.
    incidents: int = 0
    incident_reports: int = 0

    @property
    def on_time_rate(self) -> float | None:
        """Share of the period's first answers given on time, or None without answers
        (an incident's answer is one answer, however many reported it)."""
        return self.answered_on_time / self.answered if self.answered else None

    @property
    def quiet(self) -> bool:
        """Nothing happened in the period and nothing is waiting."""
        return not (self.new or self.answered or self.resolved or self.ratings or self.open)


@dataclass(frozen=True)
class OverdueComplaint:
    """An open complaint past a deadline, for the unit head's list."""

    code: str
    created_at: datetime
    assignee: str | None
    text: str


@dataclass(frozen=True)
class RatedAnswer:
    """A rating the citizen gave an answer."""

    code: str
    rating: int
    comment: str | None
    assignee: str | None


@dataclass(frozen=True)
class OfficerRating:
    """Satisfaction with one officer's answers (None: complaints nobody was assigned)."""

    name: str | None
    ratings: int
    average: float


@dataclass(frozen=True)
class Day:
    """One day of the chart: complaints new and resolved, first answers and how many on time."""

    start: datetime
    new: int
    resolved: int
    answered: int
    answered_on_time: int

    @property
    def on_time_rate(self) -> float | None:
        """Share of the day's first answers given on time, or None without answers."""
        return self.answered_on_time / self.answered if self.answered else None


@dataclass
class UnitFigures:
    """Everything a digest reports about one unit."""

    period: PeriodFigures
    overdue: list[OverdueComplaint]
    lowest: list[RatedAnswer]
    officers: list[OfficerRating]
    days: list[Day]


async def unreachable(session: AsyncSession, unit_id: int, limit: int = 10) -> tuple[int, list[str]]:
    """The unit's open complaints whose citizen no contact point reaches: how many, and the
    codes of the longest unreachable (a few)."""
    # Through unreachable_at's index: a range (SQLite cannot search "IS NOT NULL"), and "+ 0"
    # keeps SQLite from walking a per-unit index whole instead (1.6 s at 1,000,000 complaints).
    open_unreachable = and_((Complaint.unit_id + 0) == unit_id, Complaint.unreachable_at >= EPOCH,
                            Complaint.status.not_in(FINISHED))
    count = await session.scalar(select(func.count()).select_from(Complaint).where(open_unreachable))
    codes = (await session.scalars(select(Complaint.tracking_code).where(open_unreachable)
                                   .order_by(Complaint.unreachable_at).limit(limit))).all() if count else []
    return int(count or 0), list(codes)


def seconds_between(dialect: str, later, earlier):
    """SQL: seconds from ``earlier`` to ``later`` (two timestamp columns)."""
    if dialect == "postgresql":
        return func.extract("epoch", later - earlier)
    # SQLite keeps timestamps as text; julianday() reads them as fractional days.
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def answered_on_time():
    """SQL: the first answer came by its deadline, and no apology was needed for it."""
    # After an apology the deadline moves later; the mark is what says it was missed.
    return and_(Complaint.first_response_at.is_not(None), Complaint.first_response_at <= Complaint.first_response_due,
                Complaint.apologised_for_due.is_(None))


def overdue(now: datetime):
    """SQL: an open complaint past its first-response or its resolution deadline (one waiting
    for the citizen's answer is not late: its clock is paused)."""
    unanswered_late = and_(Complaint.first_response_at.is_(None),
                           or_(Complaint.first_response_due <= now, Complaint.apologised_for_due.is_not(None)))
    return and_(Complaint.status.not_in((*FINISHED, Status.WAITING)),
                or_(unanswered_late, Complaint.resolution_due <= now))


def not_member():
    """SQL: the complaint is no member riding on an incident (alone, or the incident's lead)."""
    return or_(Complaint.incident_role.is_(None), Complaint.incident_role != "member")


def _count(condition):
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


async def _fill_working_set(session: AsyncSession, unit_id: int, since: datetime, now: datetime) -> None:
    """One read of the unit's complaints: those with any event since ``since``."""
    await session.run_sync(lambda sync: WORKING_SET.create(sync.connection(), checkfirst=False))
    await session.execute(insert(WORKING_SET).from_select(
        [c.name for c in WORKING_SET.columns], working_set_query(session.bind.dialect.name, unit_id, since, now)))


def working_set_query(dialect: str, unit_id: int, since: datetime, now: datetime):
    """SQL: the working set's rows, a union of per-unit index ranges."""
    # Each branch whole (the unit and one column), so each is a range of a per-unit index
    # (PostgreSQL: a BitmapOr; SQLite: a MULTI-INDEX OR), and the unit's old rows are not
    # read. The open ones are not here: open_counts and oldest_overdue read those.
    mine = Complaint.unit_id == unit_id
    return select(
        Complaint.id, Complaint.created_at, Complaint.first_response_at, Complaint.resolved_at, Complaint.rated_at,
        Complaint.rating, Complaint.assignee_id, case((answered_on_time(), 1), else_=0),
        seconds_between(dialect, Complaint.first_response_at, Complaint.created_at),
        case((not_member(), 0), else_=1), Complaint.incident_id,
    ).where(or_(and_(mine, Complaint.created_at >= since),
                and_(mine, Complaint.first_response_at >= since), and_(mine, Complaint.resolved_at >= since),
                and_(mine, Complaint.rated_at >= since)))


async def _drop_working_set(session: AsyncSession) -> None:
    await session.execute(text(f"DROP TABLE IF EXISTS {WORKING_SET.name}"))


async def _percentiles(session: AsyncSession, period: Span, fractions: tuple[float, ...]) -> list[float | None]:
    """Percentiles (continuous, interpolated) of the period's times to first answer."""
    ws = WORKING_SET.c
    answered = period.holds(ws.first_response_at)
    if session.bind.dialect.name == "postgresql":
        row = (await session.execute(select(
            *[func.percentile_cont(p).within_group(ws.response_seconds) for p in fractions]).where(answered))).one()
        return [float(v) if v is not None else None for v in row]
    ranked = select(ws.response_seconds.label("seconds"),
                    func.row_number().over(order_by=ws.response_seconds).label("rank"),
                    func.count().over().label("n")).where(answered).subquery()
    values = []
    for fraction in fractions:
        # percentile_cont: position h = (n - 1) * p counted from 0; between the values at
        # floor(h) and floor(h) + 1, in proportion to h's fraction.
        position = (ranked.c.n - 1) * literal(fraction)
        below = cast(position, Integer)
        share = position - below
        values.append(func.sum(case(
            (ranked.c.rank == below + 1, ranked.c.seconds * (1 - share)),
            (ranked.c.rank == below + 2, ranked.c.seconds * share), else_=0.0)))
    row = (await session.execute(select(*values))).one()
    return [float(v) if v is not None else None for v in row]


def _day_index(column, boundaries: list[datetime]):
    """SQL: which of the days between the boundaries a time falls on (0 for the first; NULL
    past the last boundary, and before the first only where the caller's WHERE lets it in:
    it counts as day 0).

    A search tree of CASEs, not one CASE of 30 tests: five comparisons a row rather than
    fifteen on average (on SQLite the chart's three series took 30-90 ms each)."""
    def within(low: int, high: int):  # days low..high-1, the time known to be before boundaries[high]
        if high - low == 1:
            return literal(low)
        middle = (low + high) // 2
        return case((column < boundaries[middle], within(low, middle)), else_=within(middle, high))

    days = len(boundaries) - 1
    return case((column < boundaries[-1], within(0, days)), else_=None)


async def unit_figures(session: AsyncSession, unit_id: int, period: Span, days: list[datetime],
                       now: datetime) -> UnitFigures:
    """A unit's figures for a period, and per day between the ``days`` boundaries (local midnights)."""
    since = min(period.start, days[0])
    open_now, overdue_now = await open_counts(session, unit_id, now)
    late = await oldest_overdue(session, unit_id, now) if overdue_now else []
    await _fill_working_set(session, unit_id, since, now)
    try:
        figures = await _figures(session, period, days)
    finally:
        await _drop_working_set(session)
    figures.period.open, figures.period.overdue = open_now, overdue_now
    figures.overdue = late
    return figures


async def open_counts(session: AsyncSession, unit_id: int, now: datetime) -> tuple[int, int]:
    """How many of the unit's complaints are open now, and how many of those overdue.

    Read from the queue index ``(unit_id, status, assignee_id, first_response_due,
    first_response_at, resolution_due, apologised_for_due, id)`` alone: a range of it per
    open status, never the table (SQLite: a covering index; PostgreSQL: an index-only scan
    where the visibility map allows)."""
    row = (await session.execute(
        select(func.count(), _count(overdue(now)))
        .where(Complaint.unit_id == unit_id, Complaint.status.in_(sorted(OPEN))))).one()
    return int(row[0] or 0), int(row[1] or 0)


# The open statuses written out, as the open complaints' partial indexes (migration 0007)
# have them: with bound parameters neither database can tell the query is within the index.
_OPEN_CONDITION = "complaints.status IN (" + ", ".join(f"'{status}'" for status in sorted(OPEN)) + ")"


async def oldest_overdue(session: AsyncSession, unit_id: int, now: datetime,
                         limit: int = OVERDUE_SHOWN) -> list[OverdueComplaint]:
    """The unit's oldest overdue complaints, oldest first, with their text.

    Through ``ix_complaints_open_created`` (every unit's open complaints by age): the walk
    stops at the ``limit``-th overdue one of this unit, so it reads the oldest open
    complaints, not the unit's open ones all (half of which, stale, are spread over the
    whole table)."""
    oldest = select(Complaint.id, Complaint.created_at).where(
        text(_OPEN_CONDITION), Complaint.unit_id == unit_id, overdue(now)) \
        .order_by(Complaint.created_at, Complaint.id).limit(limit)
    if session.bind.dialect.name == "sqlite":
        oldest = oldest.with_hint(Complaint, "INDEXED BY ix_complaints_open_created", "sqlite")
    oldest = oldest.subquery()
    rows = (await session.execute(
        select(Complaint.tracking_code, Complaint.created_at, Staff.name, Complaint.text)
        .select_from(oldest).join(Complaint, Complaint.id == oldest.c.id)
        .outerjoin(Staff, Staff.id == Complaint.assignee_id)
        .order_by(oldest.c.created_at, oldest.c.id))).all()
    return [OverdueComplaint(code, created, name, body) for code, created, name, body in rows]


async def _figures(session: AsyncSession, period: Span, days: list[datetime]) -> UnitFigures:
    ws = WORKING_SET.c
    rated = and_(period.holds(ws.rated_at), ws.rating.is_not(None))
    answered = and_(period.holds(ws.first_response_at), ws.member == 0)
    reported = and_(period.holds(ws.created_at), ws.incident_id.is_not(None))
    row = (await session.execute(select(
        _count(period.holds(ws.created_at)), _count(answered),
        _count(and_(answered, ws.on_time == 1)), _count(period.holds(ws.resolved_at)), _count(rated),
        func.avg(case((rated, ws.rating), else_=None)),
        func.count(func.distinct(case((reported, ws.incident_id), else_=None))), _count(reported),
    ))).one()
    new, answered_count, on_time, resolved, ratings = (int(v) for v in row[:5])
    figures = PeriodFigures(new=new, answered=answered_count, answered_on_time=on_time, resolved=resolved,
                            ratings=ratings, rating_average=float(row[5]) if row[5] is not None else None,
                            incidents=int(row[6]), incident_reports=int(row[7]))
    figures.response_median_seconds, figures.response_p90_seconds = await _percentiles(session, period, (0.5, 0.9))

    # The few rows shown are chosen in the working set first, then joined for their text:
    # joining every rated row before the LIMIT costs a lookup per row.
    worst = select(ws.id, ws.rating, ws.rated_at).where(rated, ws.rating <= LOW_RATING) \
        .order_by(ws.rating, ws.rated_at, ws.id).limit(LOWEST_SHOWN).subquery()
    lowest = (await session.execute(
        select(Complaint.tracking_code, worst.c.rating, Complaint.rating_comment, Staff.name)
        .select_from(worst).join(Complaint, Complaint.id == worst.c.id)
        .outerjoin(Staff, Staff.id == Complaint.assignee_id)
        .order_by(worst.c.rating, worst.c.rated_at, worst.c.id))).all()
    by_officer = (await session.execute(
        select(Staff.name, func.count(), func.avg(ws.rating))
        .select_from(WORKING_SET).outerjoin(Staff, Staff.id == ws.assignee_id)
        .where(rated).group_by(ws.assignee_id, Staff.name)
        .order_by(func.avg(ws.rating), Staff.name))).all()
    return UnitFigures(
        period=figures,
        overdue=[],  # unit_figures fills it in (from the complaints themselves, not the working set)
        lowest=[RatedAnswer(code, rating, comment, name) for code, rating, comment, name in lowest],
        officers=[OfficerRating(name, int(count), float(average)) for name, count, average in by_officer],
        days=await _days(session, days),
    )


async def _days(session: AsyncSession, boundaries: list[datetime]) -> list[Day]:
    ws = WORKING_SET.c
    window = Span(boundaries[0], boundaries[-1])
    # Per day: complaints received, resolved, and answered (with how many of those on time).
    received, resolved, answered = ({}, {}, {})
    counts: list[tuple[dict[int, tuple[int, ...]], object, tuple]] = [
        (received, ws.created_at, ()), (resolved, ws.resolved_at, ()),
        (answered, ws.first_response_at, (func.sum(ws.on_time),))]
    for found, column, extra in counts:
        day = _day_index(column, boundaries).label("day")
        # An incident's answer is one answer: its members' are not counted again.
        once = ws.member == 0 if found is answered else True
        rows = (await session.execute(
            select(day, func.count(), *extra).where(window.holds(column), once).group_by(day))).all()
        found.update({int(index): tuple(int(v or 0) for v in values) for index, *values in rows if index is not None})
    return [Day(start=boundaries[i], new=received.get(i, (0,))[0], resolved=resolved.get(i, (0,))[0],
                answered=answered.get(i, (0, 0))[0], answered_on_time=answered.get(i, (0, 0))[1])
            for i in range(len(boundaries) - 1)]


@dataclass(frozen=True)
class UnitScore:
    """A unit's public record over the last N days: on-time first answers and satisfaction."""

    unit_id: int
    days: int
    answered: int
    answered_on_time: int
    ratings: int
    rating_average: float | None
    resolutions: int = 0  # times a complaint of the unit was resolved in the window
    disputed: int = 0  # of which the citizen said "not fixed"

    @property
    def on_time_rate(self) -> float | None:
        """Share of first answers given on time, or None without answers."""
        return self.answered_on_time / self.answered if self.answered else None

    @property
    def disputed_rate(self) -> float | None:
        """Share of resolutions the citizen said did not fix the problem, or None without any."""
        return self.disputed / self.resolutions if self.resolutions else None


async def scores(session: AsyncSession, now: datetime, windows: tuple[int, ...] = (30, 90)) -> list[UnitScore]:
    """Each unit's on-time rate and satisfaction over each window of days ending now (one scan)."""
    longest = now - timedelta(days=max(windows))
    columns = []
    for days in windows:
        since = now - timedelta(days=days)
        answered = and_(Complaint.first_response_at >= since, Complaint.first_response_at <= now, not_member())
        rated = and_(Complaint.rated_at >= since, Complaint.rated_at <= now, Complaint.rating.is_not(None))
        columns += [_count(answered), _count(and_(answered, answered_on_time())), _count(rated),
                    func.avg(case((rated, Complaint.rating), else_=None))]
    rows = (await session.execute(
        select(Complaint.unit_id, *columns)
        .where(or_(Complaint.first_response_at >= longest, Complaint.rated_at >= longest))
        .group_by(Complaint.unit_id))).all()
    # Resolutions and disputes are counted from the audit trail: a disputed resolution is
    # reopened, so the complaint's own columns no longer say it was resolved.
    outcomes = []
    for days in windows:
        since = now - timedelta(days=days)
        held = and_(Event.at >= since, Event.at <= now)
        outcomes += [_count(and_(held, Event.kind == Status.RESOLVED)), _count(and_(held, Event.kind == "disputed"))]
    disputes = {unit_id: values for unit_id, *values in (await session.execute(
        select(Complaint.unit_id, *outcomes).join(Complaint, Complaint.id == Event.complaint_id)
        .where(Event.kind.in_((Status.RESOLVED, "disputed")), Event.at >= longest)
        .group_by(Complaint.unit_id))).all()}
    scored = {unit_id: values for unit_id, *values in rows}
    out = []
    for unit_id in scored.keys() | disputes.keys():
        values = scored.get(unit_id) or [0, 0, 0, None] * len(windows)
        outcome = disputes.get(unit_id) or [0, 0] * len(windows)
        for i, days in enumerate(windows):
            answered, on_time, ratings, average = values[4 * i:4 * i + 4]
            out.append(UnitScore(unit_id, days, int(answered or 0), int(on_time or 0), int(ratings or 0),
                                 float(average) if average is not None else None,
                                 int(outcome[2 * i] or 0), int(outcome[2 * i + 1] or 0)))
    return out
