"""Figures about how units answer complaints, computed by the database in SQL.

The digests and the public scorecard read the same figures: complaints new, answered
and resolved in a period; how long the first answer took (median and 90th percentile);
the share answered on time; satisfaction ratings, per unit and per officer.

A unit may have a million complaints. Each of the digest's figures is read straight from a
per-unit index range (migrations 0001 and 0009: ``(unit_id, created_at)``, ``(unit_id,
first_response_at)``, ``(unit_id, resolved_at)``, ``(unit_id, rated_at)``): the period's
days for its counts, ratings and percentiles, the chart's 30 days for its three series
(new and resolved from the index alone). What stands open now (how many open, how many
overdue) is counted from the desk's queue index alone (migration 0008: it holds every column
the overdue test reads), and the oldest overdue ones are found walking the open complaints'
partial index by age (migration 0007): the stale open rows, half the unit's open ones and
spread over the whole table, are not read from the table. No statement scans the unit, let
alone the table (tests/test_digest.py checks the plans).
Percentiles are ``percentile_cont`` on PostgreSQL; SQLite has none, so there they are
the same linear interpolation over ``row_number()`` of the sorted subset. The module is long
(about 400 lines) because each figure is its own index-range statement, written for both
databases where they differ; the figures are one thing, read together by digest and scorecard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Integer, and_, case, cast, func, literal, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from bot.statuses import FINISHED, OPEN, Status
from storage.models import Complaint, Event, Staff

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Ratings shown among "the lowest-rated answers": below 4 (hài lòng).
LOW_RATING = 3
OVERDUE_SHOWN = 10
LOWEST_SHOWN = 5


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


def _mine(unit_id: int, column, span: Span):
    """SQL: the unit's complaints whose ``column`` falls in ``span``: a range of the per-unit
    index on (unit_id, column) (migrations 0001 and 0009)."""
    return and_(Complaint.unit_id == unit_id, span.holds(column))


async def _percentiles(session: AsyncSession, unit_id: int, period: Span,
                       fractions: tuple[float, ...]) -> tuple[int, int, list[float | None]]:
    """The period's first answers counted once per incident, how many of those on time, and
    percentiles (continuous, interpolated) of all the period's times to first answer."""
    dialect = session.bind.dialect.name
    answered = _mine(unit_id, Complaint.first_response_at, period)
    seconds = seconds_between(dialect, Complaint.first_response_at, Complaint.created_at)
    once, on_time = not_member(), and_(not_member(), answered_on_time())
    if dialect == "postgresql":
        row = (await session.execute(select(
            _count(once), _count(on_time),
            *[func.percentile_cont(p).within_group(seconds) for p in fractions]).where(answered))).one()
    else:
        # The seconds worked out once a row, then ranked (ranking the expression works it out
        # twice: 25 ms rather than 17 for a week's 8,000 answers).
        rows = select(seconds.label("seconds"), case((once, 1), else_=0).label("once"),
                      case((on_time, 1), else_=0).label("on_time")).where(answered).subquery()
        ranked = select(rows.c.seconds, func.row_number().over(order_by=rows.c.seconds).label("rank"),
                        func.count().over().label("n"), rows.c.once, rows.c.on_time).subquery()
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
        row = (await session.execute(select(func.coalesce(func.sum(ranked.c.once), 0),
                                            func.coalesce(func.sum(ranked.c.on_time), 0), *values))).one()
    return int(row[0] or 0), int(row[1] or 0), [float(v) if v is not None else None for v in row[2:]]


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
    open_now, overdue_now = await open_counts(session, unit_id, now)
    new, incidents, reports = (int(v or 0) for v in (await session.execute(select(
        func.count(), func.count(func.distinct(Complaint.incident_id)), _count(Complaint.incident_id.is_not(None)))
        .where(_mine(unit_id, Complaint.created_at, period)))).one())
    resolved = await session.scalar(select(func.count()).where(_mine(unit_id, Complaint.resolved_at, period)))
    answered, on_time, (median, p90) = await _percentiles(session, unit_id, period, (0.5, 0.9))
    rated = and_(_mine(unit_id, Complaint.rated_at, period), Complaint.rating.is_not(None))
    ratings, average = (await session.execute(select(func.count(), func.avg(Complaint.rating)).where(rated))).one()
    figures = PeriodFigures(new=new, answered=answered, answered_on_time=on_time, resolved=int(resolved or 0),
                            open=open_now, overdue=overdue_now, ratings=int(ratings or 0),
                            rating_average=float(average) if average is not None else None,
                            response_median_seconds=median, response_p90_seconds=p90,
                            incidents=incidents, incident_reports=reports)

    # The few rows shown are chosen first, then joined for their text: joining every rated
    # row before the LIMIT costs a lookup per row.
    worst = select(Complaint.id, Complaint.rating, Complaint.rated_at).where(rated, Complaint.rating <= LOW_RATING) \
        .order_by(Complaint.rating, Complaint.rated_at, Complaint.id).limit(LOWEST_SHOWN).subquery()
    shown = aliased(Complaint)
    lowest = (await session.execute(
        select(shown.tracking_code, worst.c.rating, shown.rating_comment, Staff.name)
        .select_from(worst).join(shown, shown.id == worst.c.id)
        .outerjoin(Staff, Staff.id == shown.assignee_id)
        .order_by(worst.c.rating, worst.c.rated_at, worst.c.id))).all()
    by_officer = (await session.execute(
        select(Staff.name, func.count(), func.avg(Complaint.rating))
        .select_from(Complaint).outerjoin(Staff, Staff.id == Complaint.assignee_id)
        .where(rated).group_by(Complaint.assignee_id, Staff.name)
        .order_by(func.avg(Complaint.rating), Staff.name))).all()
    return UnitFigures(
        period=figures,
        overdue=await oldest_overdue(session, unit_id, now) if overdue_now else [],
        lowest=[RatedAnswer(code, rating, comment, name) for code, rating, comment, name in lowest],
        officers=[OfficerRating(name, int(count), float(average)) for name, count, average in by_officer],
        days=await _days(session, unit_id, days),
    )


async def open_counts(session: AsyncSession, unit_id: int, now: datetime) -> tuple[int, int]:
    """How many of the unit's complaints are open now, and how many of those overdue.

    Read from the queue index ``(unit_id, status, assignee_id, first_response_due,
    first_response_at, resolution_due, apologised_for_due, id)`` alone: a range of it per
    open status, never the table (SQLite: a covering index; PostgreSQL: an index-only scan
    where the visibility map allows)."""
    # '' is no status (the check constraint of migration 0002): it is there so that PostgreSQL
    # cannot prove the condition within the open complaints' partial indexes (migration 0007),
    # which it would otherwise walk, fetching each open row from the table (60-120 ms at
    # 1,000,000 complaints, instead of 13 ms).
    statuses = ["", *sorted(OPEN)]
    row = (await session.execute(
        select(func.count(), _count(overdue(now)))
        .where(Complaint.unit_id == unit_id, Complaint.status.in_(statuses)))).one()
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
    # On SQLite "+ 0": else it walks the whole unit by age through (unit_id, created_at),
    # which is as quick only while the unit's oldest open complaints are overdue.
    unit = Complaint.unit_id + 0 if session.bind.dialect.name == "sqlite" else Complaint.unit_id
    oldest = select(Complaint.id, Complaint.created_at).where(
        text(_OPEN_CONDITION), unit == unit_id, overdue(now)) \
        .order_by(Complaint.created_at, Complaint.id).limit(limit).subquery()
    shown = aliased(Complaint)
    rows = (await session.execute(
        select(shown.tracking_code, shown.created_at, Staff.name, shown.text)
        .select_from(oldest).join(shown, shown.id == oldest.c.id)
        .outerjoin(Staff, Staff.id == shown.assignee_id)
        .order_by(oldest.c.created_at, oldest.c.id))).all()
    return [OverdueComplaint(code, created, name, body) for code, created, name, body in rows]


async def _days(session: AsyncSession, unit_id: int, boundaries: list[datetime]) -> list[Day]:
    window = Span(boundaries[0], boundaries[-1])
    # Per day: complaints received, resolved (each from its per-unit index alone), and
    # answered (with how many of those on time).
    received, resolved, answered = ({}, {}, {})
    counts: list[tuple[dict[int, tuple[int, ...]], object, tuple]] = [
        (received, Complaint.created_at, ()), (resolved, Complaint.resolved_at, ()),
        (answered, Complaint.first_response_at, (_count(answered_on_time()),))]
    for found, column, extra in counts:
        day = _day_index(column, boundaries).label("day")
        # An incident's answer is one answer: its members' are not counted again.
        once = not_member() if found is answered else True
        rows = (await session.execute(
            select(day, func.count(), *extra).where(_mine(unit_id, column, window), once).group_by(day))).all()
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
