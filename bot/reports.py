"""Reports: every complaint with its timings, for analysis; and the public scorecard.

``export`` writes the complaints received between two dates (in the service's time
zone), as CSV or JSON: tracking code, unit, category, status, officer, deadlines, first
answer and resolution with the hours each took, whether the answer was on time,
apologies, and the rating. Citizens' contacts and texts are left out unless asked
for; the free text that stays (area, rating comment) has phone numbers and e-mail
addresses masked.

Rows are read in chunks, each its own short transaction ordered by the index on
(unit, received), so a million-row export neither holds SQLite's write lock for minutes
nor keeps the rows in memory.

``scorecard`` is what the public ``/scorecard`` page shows: per unit, the on-time rate
of first answers and the citizens' satisfaction over the last 30 and 90 days.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TextIO

from sqlalchemy import func, or_, select

from bot import stats
from bot.core import Core
from bot.logs import mask_personal_data
from storage.models import Complaint, Contact, Staff

CHUNK = 2000
FORMATS = ("csv", "json")
COLUMNS = ("code", "received_at", "unit", "category", "area", "channel", "status", "officer",
           "first_response_due", "first_response_at", "response_hours", "answered_on_time",
           "resolution_due", "resolved_at", "resolution_hours", "apologies", "rating", "rated_at", "rating_comment",
           "incident")
CONTACT_COLUMNS = ("contact_channel", "contact_address", "contact_name", "text")
SCORECARD_WINDOWS = (30, 90)


class ReportError(ValueError):
    """A report that cannot be made: an unknown unit or format, dates the wrong way round."""


@dataclass(frozen=True)
class Selection:
    """Which complaints a report holds: received from ``since`` to ``until`` (inclusive)."""

    since: date
    until: date
    unit: str | None = None
    with_contacts: bool = False

    def span(self, core: Core) -> stats.Span:
        """The selection's first and after-last moments, local midnights in UTC."""
        tz = core.config.tz
        return stats.Span(datetime.combine(self.since, time(0), tzinfo=tz),
                          datetime.combine(self.until + timedelta(days=1), time(0), tzinfo=tz))


def unit_ids(core: Core, selection: Selection) -> list[int]:
    """The ids of the units a selection covers; ReportError when it names no unit or no days."""
    if selection.until < selection.since:
        raise ReportError(f"--until {selection.until} is before --since {selection.since}")
    if selection.unit is None:
        return [core.directory.unit_ids[slug] for slug in sorted(core.directory.unit_ids)]
    if selection.unit not in core.directory.unit_ids:
        raise ReportError(f"no unit {selection.unit!r}; units: {', '.join(sorted(core.directory.unit_ids))}")
    return [core.directory.unit_ids[selection.unit]]


async def count(core: Core, selection: Selection) -> int:
    """How many complaints the report will hold."""
    span = selection.span(core)
    async with core.sessions() as session:
        return await session.scalar(select(func.count()).where(
            Complaint.unit_id.in_(unit_ids(core, selection)), span.holds(Complaint.created_at)))


async def complaints(core: Core, selection: Selection, chunk: int = CHUNK) -> AsyncIterator[dict]:
    """The report's rows as dicts (COLUMNS, then CONTACT_COLUMNS if asked for), unit by unit."""
    span = selection.span(core)
    columns = [Complaint, Staff.slug]
    if selection.with_contacts:
        columns += [Contact.channel, Contact.address, Contact.display_name]
    for unit_id in unit_ids(core, selection):
        after: tuple[datetime, int] | None = None
        while True:
            query = select(*columns).outerjoin(Staff, Staff.id == Complaint.assignee_id) \
                .where(Complaint.unit_id == unit_id, span.holds(Complaint.created_at))
            if selection.with_contacts:
                query = query.outerjoin(Contact, Contact.id == Complaint.contact_id)
            if after is not None:
                # Keyset paging: the next rows after the last one read, on the (unit, received) index.
                query = query.where(Complaint.created_at >= after[0],
                                    or_(Complaint.created_at > after[0], Complaint.id > after[1]))
            query = query.order_by(Complaint.created_at, Complaint.id).limit(chunk)
            async with core.sessions() as session:
                rows = (await session.execute(query)).all()
            for row in rows:
                yield _row(core, row, selection.with_contacts)
            if len(rows) < chunk:
                break
            after = (rows[-1][0].created_at, rows[-1][0].id)


def _hours(later: datetime | None, earlier: datetime | None) -> float | None:
    return round((later - earlier).total_seconds() / 3600, 2) if later and earlier else None


def _row(core: Core, row, with_contacts: bool) -> dict:
    complaint: Complaint = row[0]

    def local(moment: datetime | None) -> str | None:
        return moment.astimezone(core.config.tz).isoformat(timespec="seconds") if moment else None

    answered = complaint.first_response_at
    on_time = None if answered is None else bool(
        complaint.first_response_due and answered <= complaint.first_response_due
        and complaint.apologised_for_due is None)
    out = {
        "code": complaint.tracking_code, "received_at": local(complaint.created_at),
        "unit": core.directory.unit_slug(complaint.unit_id), "category": complaint.category,
        "area": complaint.area if with_contacts or not complaint.area else mask_personal_data(complaint.area),
        "channel": complaint.channel, "status": complaint.status, "officer": row[1],
        "first_response_due": local(complaint.first_response_due), "first_response_at": local(answered),
        "response_hours": _hours(answered, complaint.created_at), "answered_on_time": on_time,
        "resolution_due": local(complaint.resolution_due), "resolved_at": local(complaint.resolved_at),
        "resolution_hours": _hours(complaint.resolved_at, complaint.created_at),
        "apologies": complaint.escalation_count, "rating": complaint.rating, "rated_at": local(complaint.rated_at),
        "rating_comment": complaint.rating_comment if with_contacts or not complaint.rating_comment
        else mask_personal_data(complaint.rating_comment),
        "incident": complaint.incident_id,
    }
    if with_contacts:
        out.update(contact_channel=row[2], contact_address=row[3], contact_name=row[4], text=complaint.text)
    return out


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


async def export(core: Core, selection: Selection, out: TextIO, fmt: str = "csv",
                 progress: Callable[[int], object] | None = None, chunk: int = CHUNK) -> int:
    """Write the report to ``out`` as CSV or JSON; return how many complaints it holds."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r} (csv or json)")
    unit_ids(core, selection)  # refuse a bad selection before writing anything
    fields = COLUMNS + (CONTACT_COLUMNS if selection.with_contacts else ())
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n") if fmt == "csv" else None
    if writer:
        writer.writeheader()
    else:
        out.write("[")
    written = 0
    async for row in complaints(core, selection, chunk):
        if writer:
            writer.writerow({key: _csv_value(value) for key, value in row.items()})
        else:
            out.write(("," if written else "") + "\n" + json.dumps(row, ensure_ascii=False))
        written += 1
        if progress and written % 500 == 0:
            progress(500)
    if not writer:
        out.write("\n]\n" if written else "]\n")
    if progress and written % 500:
        progress(written % 500)
    return written


@dataclass(frozen=True)
class UnitScorecard:
    """One unit's line on the public scorecard, with a score per window of days."""

    slug: str
    name: str
    name_en: str
    scores: dict[int, stats.UnitScore]


async def scorecard(core: Core) -> list[UnitScorecard]:
    """Each configured unit's on-time rate and satisfaction over the last 30 and 90 days."""
    now = core.clock.now()
    async with core.sessions() as session:
        scores = await stats.scores(session, now, SCORECARD_WINDOWS)
    by_unit: dict[int, dict[int, stats.UnitScore]] = {}
    for score in scores:
        by_unit.setdefault(score.unit_id, {})[score.days] = score
    out = []
    for unit in core.config.units:
        unit_id = core.directory.unit_ids[unit.slug]
        found = by_unit.get(unit_id, {})
        out.append(UnitScorecard(unit.slug, unit.name, unit.name_en or unit.name, {
            days: found.get(days) or stats.UnitScore(unit_id, days, 0, 0, 0, None) for days in SCORECARD_WINDOWS}))
    return out
