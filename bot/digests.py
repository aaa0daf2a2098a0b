"""Digests for unit heads: báo cáo tổng hợp hằng ngày (daily) and hằng tuần (weekly).

A digest tells a unit head what came in, what was answered and resolved in the period,
how fast and how punctually the unit answered, how satisfied citizens were (per
officer too), which complaints are overdue and which answers were rated lowest, with a
chart of the last 30 days. Figures come from SQL aggregates (``bot.stats``); citizens'
phone numbers and e-mail addresses in quoted texts are masked.

A daily digest covers the previous day in the service's time zone, a weekly one the
previous ISO week (Monday to Sunday). Each is sent once per (unit, kind, period), also
with several processes and across restarts: the ``digest_runs`` row (unique on unit,
kind and period start) and the outbox messages are written in one transaction, so a
second process's insert conflicts and it queues nothing, and a process that dies
before committing leaves nothing behind for the next run to trip over. On start the
scheduler catches up a digest whose time passed while the service was down.

The chart is an attachment of the queued message (stored base64 in the outbox's JSON
payload, with its content id and caption): for the Telegram sender a photo after the
text, for the email sender an inline image (``cid:``) in a multipart/related HTML part
beside the plain text.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import outbox, stats
from bot.charts import ChartLabels, digest_chart
from bot.core import Core
from bot.crontab import Crontab, last_fire
from bot.directory import StaffDirectory
from bot.logs import mask_personal_data
from bot.messages import format_time, summary
from bot.outbox import Queued
from bot.settings import Settings
from contract.messages import Attachment, Outgoing
from storage.db import insert_ignoring_conflicts
from storage.models import DigestRun, Staff

log = logging.getLogger(__name__)

KINDS = ("daily", "weekly")
CHART_DAYS = 30
SUMMARY_LENGTH = 80
COMMENT_LENGTH = 200
CHART_CONTENT_ID = "digest-chart"
# How far back the catch-up at start looks for a scheduled time that passed unsent.
CATCH_UP = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
_ISO_WEEK = re.compile(r"^(\d{4})-W(\d{1,2})$")


class DigestError(ValueError):
    """A digest that cannot be made: an unknown unit, a period that is not one or not over."""


# ---------------------------------------------------------------------------- periods

def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc)


@dataclass(frozen=True)
class Period:
    """The days a digest covers, first to last inclusive, in the service's time zone."""

    kind: str  # daily | weekly
    first_day: date
    last_day: date
    tz: ZoneInfo

    @property
    def start(self) -> datetime:
        """The first moment of the period (UTC)."""
        return _midnight(self.first_day, self.tz)

    @property
    def end(self) -> datetime:
        """The first moment after the period (UTC)."""
        return _midnight(self.last_day + timedelta(days=1), self.tz)

    @property
    def name(self) -> str:
        """``2026-11-01`` for a day, ``2026-W44`` for an ISO week."""
        if self.kind == "daily":
            return self.first_day.isoformat()
        year, week, _ = self.first_day.isocalendar()
        return f"{year}-W{week:02d}"

    def chart_days(self) -> list[datetime]:
        """The 31 local midnights that bound the chart's 30 days, ending with the period."""
        first = self.last_day - timedelta(days=CHART_DAYS - 1)
        return [_midnight(first + timedelta(days=n), self.tz) for n in range(CHART_DAYS + 1)]


def period_for(kind: str, moment: datetime, tz: ZoneInfo) -> Period:
    """The period a digest made at ``moment`` covers: the day before, or the ISO week before."""
    today = moment.astimezone(tz).date()
    if kind == "daily":
        yesterday = today - timedelta(days=1)
        return Period("daily", yesterday, yesterday, tz)
    if kind == "weekly":
        monday = today - timedelta(days=today.weekday())
        return Period("weekly", monday - timedelta(days=7), monday - timedelta(days=1), tz)
    raise DigestError(f"unknown digest kind {kind!r} (daily or weekly)")


def parse_period(value: str, moment: datetime, tz: ZoneInfo) -> Period:
    """``daily``, ``weekly`` (the last one before ``moment``), ``2026-11-01`` or ``2026-W44``."""
    value = value.strip()
    if value in KINDS:
        return period_for(value, moment, tz)
    week = _ISO_WEEK.match(value)
    try:
        if week:
            monday = date.fromisocalendar(int(week[1]), int(week[2]), 1)
            return Period("weekly", monday, monday + timedelta(days=6), tz)
        day = date.fromisoformat(value)
    except ValueError:
        raise DigestError(f"not a period: {value!r}") from None
    return Period("daily", day, day, tz)


# ---------------------------------------------------------------------------- schedule

def schedules(config: Settings) -> list[tuple[str, Crontab]]:
    """(kind, schedule) of each digest the configuration turns on."""
    pairs = [("daily", config.digests.schedule), ("weekly", config.digests.weekly_schedule)]
    return [(kind, schedule) for kind, schedule in pairs if schedule is not None]


# ---------------------------------------------------------------------------- composing

@dataclass
class Digest:
    """One unit's digest for one period, as its head reads it."""

    unit_slug: str
    unit_name: str
    period: Period
    made_at: datetime
    language: str
    figures: stats.UnitFigures
    subject: str
    text: str


def _unit_id(core: Core, unit_slug: str) -> int:
    unit_id = core.directory.unit_ids.get(unit_slug)
    if unit_id is None:
        raise DigestError(f"no unit {unit_slug!r}; units: {', '.join(sorted(core.directory.unit_ids))}")
    return unit_id


def _date(day: date, language: str) -> str:
    return day.strftime("%d %b %Y") if language == "en" else day.strftime("%d/%m/%Y")


def _period_label(core: Core, period: Period, language: str) -> str:
    if period.kind == "daily":
        return core.texts.get(language, "digest.period_daily", date=_date(period.first_day, language))
    year, week, _ = period.first_day.isocalendar()
    return core.texts.get(language, "digest.period_weekly", week=week, year=year,
                          first=_date(period.first_day, language), last=_date(period.last_day, language))


def _number(core: Core, language: str, value: float) -> str:
    return f"{value:.1f}".replace(".", core.texts.get(language, "digest.decimal_point"))


def duration(core: Core, language: str, seconds: float) -> str:
    """A span of time as people say it: "3 ngày 2 giờ", "2 giờ 15 phút", "40 phút"."""
    minutes = max(0, round(seconds / 60))
    if minutes >= 24 * 60:
        minutes = round(minutes / 60) * 60  # beyond a day, minutes are noise
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [core.texts.get(language, f"digest.{unit}", count=count)
             for unit, count in (("days", days), ("hours", hours), ("minutes", minutes)) if count]
    return " ".join(parts) or core.texts.get(language, "digest.minutes", count=0)


def render_text(core: Core, unit_name: str, period: Period, figures: stats.UnitFigures, now: datetime,
                language: str) -> tuple[str, str]:
    """The digest's subject and text, from the catalogue's ``[digest]`` table."""
    def t(key: str, **params: object) -> str:
        return core.texts.get(language, f"digest.{key}", **params)

    f = figures.period
    subject = t(f"subject_{period.kind}", unit=unit_name, period=_period_label(core, period, language))
    lines = [subject, t("made_at", time=format_time(core, now, language)), "",
             t("counts", new=f.new, answered=f.answered, resolved=f.resolved),
             t("open", open=f.open, overdue=f.overdue)]
    if f.response_median_seconds is None:
        lines.append(t("response_none"))
    else:
        lines.append(t("response", median=duration(core, language, f.response_median_seconds),
                       p90=duration(core, language, f.response_p90_seconds)))
    if f.on_time_rate is None:
        lines.append(t("on_time_none"))
    else:
        lines.append(t("on_time", rate=_number(core, language, 100 * f.on_time_rate), on_time=f.answered_on_time,
                       answered=f.answered))
    if f.incidents:  # many reports of one event: one case, counted once above
        lines.append(core.texts.get(language, "incidents.digest", incidents=f.incidents, reports=f.incident_reports,
                                    per=_number(core, language, f.incident_reports / f.incidents)))
    if f.rating_average is None:
        lines.append(t("satisfaction_none"))
    else:
        lines.append(t("satisfaction", average=_number(core, language, f.rating_average), count=f.ratings))
    if figures.overdue:
        lines += ["", t("overdue_title", count=f.overdue)]
        for late in figures.overdue:
            # Masked before shortening: a number cut in half would no longer look like one.
            lines.append(t("overdue_line", code=late.code, age=duration(core, language,
                                                                         (now - late.created_at).total_seconds()),
                           assignee=late.assignee or t("nobody"),
                           summary=summary(mask_personal_data(late.text), SUMMARY_LENGTH)))
        if f.overdue > len(figures.overdue):
            lines.append(t("overdue_more", count=f.overdue - len(figures.overdue)))
    if figures.lowest:
        lines += ["", t("lowest_title")]
        for rated in figures.lowest:
            comment = summary(mask_personal_data(rated.comment), COMMENT_LENGTH) if rated.comment else t("no_comment")
            lines.append(t("lowest_line", code=rated.code, rating=rated.rating, assignee=rated.assignee or t("nobody"),
                           comment=comment))
    if figures.officers:
        lines += ["", t("officers_title")]
        for officer in figures.officers:
            lines.append(t("officer_line", name=officer.name or t("nobody"),
                           average=_number(core, language, officer.average), count=officer.ratings))
    lines += ["", t("chart_note")]
    return subject, "\n".join(lines)


async def compose(core: Core, session: AsyncSession, unit_slug: str, period: Period, now: datetime,
                  language: str | None = None) -> Digest:
    """Compute a unit's digest for a period in the caller's transaction (nothing is recorded)."""
    unit_id = _unit_id(core, unit_slug)
    language = core.texts.language(language or core.config.service.default_language)
    figures = await stats.unit_figures(session, unit_id, stats.Span(period.start, period.end), period.chart_days(),
                                       now)
    unit_name = core.directory.unit_name(unit_id, language)
    subject, text = render_text(core, unit_name, period, figures, now, language)
    count, codes = await stats.unreachable(session, unit_id)
    if count:
        # The head answers for citizens the unit could not reach: say which, so someone calls them.
        text += "\n\n" + core.texts.get(language, "digest.unreachable", count=count, codes=", ".join(codes))
    return Digest(unit_slug, unit_name, period, now, language, figures, subject, text)


def chart_labels(core: Core, digest: Digest) -> ChartLabels:
    """The chart's title and legend in the digest's language."""
    def t(key: str, **params: object) -> str:
        return core.texts.get(digest.language, f"digest.{key}", **params)

    return ChartLabels(title=t("chart_title", unit=digest.unit_name, last=_date(digest.period.last_day,
                                                                                 digest.language)),
                       new=t("chart_new"), resolved=t("chart_resolved"), on_time=t("chart_on_time"),
                       count=t("chart_count"))


async def render_chart(core: Core, digest: Digest) -> bytes:
    """The digest's 30-day chart as PNG bytes, drawn in a worker thread (the loop keeps serving)."""
    return await asyncio.get_running_loop().run_in_executor(
        None, digest_chart, digest.figures.days, chart_labels(core, digest), core.config.tz)


async def preview(core: Core, unit_slug: str, period: Period, language: str | None = None) -> tuple[Digest, bytes]:
    """A digest and its chart as they would be sent now, recording and queueing nothing."""
    async with core.sessions() as session, session.begin():
        digest = await compose(core, session, unit_slug, period, core.clock.now(), language)
    return digest, await render_chart(core, digest)


# ---------------------------------------------------------------------------- sending

@dataclass(frozen=True)
class Outcome:
    """What became of one unit's digest: queued, already sent, quiet or no recipients."""

    unit: str
    period: Period
    result: str
    messages: int = 0


def recipients(core: Core, directory: StaffDirectory, unit_id: int) -> list[tuple[Staff, str, str]]:
    """(member, channel, address) for each configured channel each unit head (else admin) has."""
    out = []
    for member in directory.heads.get(unit_id) or directory.admins:
        for channel in core.config.digests.channels:
            if channel == "telegram":
                address = str(member.telegram_chat_id) if member.telegram_chat_id is not None else None
            else:
                address = member.email
            if address:
                out.append((member, channel, address))
    return out


def _messages(digest: Digest, png: bytes, to: Iterable[tuple[Staff, str, str]]) -> list[Queued]:
    period = digest.period
    chart = Attachment(filename=f"digest-{digest.unit_slug}-{period.name}.png", content_type="image/png", data=png,
                       content_id=CHART_CONTENT_ID, caption=digest.subject[:1024])
    return [Queued(Outgoing(
        key=f"digest:{period.kind}:{period.name}:{digest.unit_slug}:{member.id}:{channel}", channel=channel,
        recipient=address, text=digest.text, kind="digest", audience="staff", language=digest.language,
        subject=digest.subject[:300], attachments=(chart,))) for member, channel, address in to]


async def _sent_before(session: AsyncSession, unit_id: int, period: Period) -> bool:
    return await session.scalar(select(DigestRun.id).where(
        DigestRun.unit_id == unit_id, DigestRun.kind == period.kind, DigestRun.period_start == period.start)) \
        is not None


async def send(core: Core, unit_slug: str, period: Period, *, skip_quiet: bool = False) -> Outcome:
    """Queue a unit's digest for its heads, once per period; ``skip_quiet``: not when nothing happened."""
    now = core.clock.now()
    if period.end > now:
        raise DigestError(f"the period {period.name} is not over yet")
    unit_id = _unit_id(core, unit_slug)
    async with core.sessions() as session, session.begin():
        # Cheap early exits; the insert below is what decides, should two race past here.
        if await _sent_before(session, unit_id, period):
            return Outcome(unit_slug, period, "already sent")
        digest = await compose(core, session, unit_slug, period, now)
        if skip_quiet and digest.figures.period.quiet:
            return Outcome(unit_slug, period, "quiet")
        to = recipients(core, await StaffDirectory.load(session), unit_id)
    if not to:
        log.warning("digest has no recipient", extra={"fields": {"unit": unit_slug, "period": period.name}})
        return Outcome(unit_slug, period, "no recipients")
    messages = _messages(digest, await render_chart(core, digest), to)
    async with core.sessions() as session, session.begin():
        claimed = (await session.execute(
            insert_ignoring_conflicts(session, DigestRun)
            .values(unit_id=unit_id, kind=period.kind, period_start=period.start, period_end=period.end,
                    created_at=now)
            .returning(DigestRun.id))).scalar()
        if claimed is None:
            return Outcome(unit_slug, period, "already sent")
        await outbox.enqueue_many(session, now, messages)
    core.outbox_ready.set()
    log.info("digest queued", extra={"fields": {"unit": unit_slug, "kind": period.kind, "period": period.name,
                                                "messages": len(messages)}})
    return Outcome(unit_slug, period, "queued", len(messages))


async def send_all(core: Core, kind: str, moment: datetime | None = None) -> list[Outcome]:
    """Every configured unit's digest of this kind for the period before ``moment`` (default now)."""
    period = period_for(kind, moment or core.clock.now(), core.config.tz)
    outcomes = []
    for unit in core.config.units:
        try:
            outcomes.append(await send(core, unit.slug, period, skip_quiet=True))
        except Exception:  # one unit's failure must not cost the others their digest
            log.exception("digest failed", extra={"fields": {"unit": unit.slug, "period": period.name}})
    return outcomes


async def catch_up(core: Core) -> list[Outcome]:
    """Send the digests whose scheduled time passed shortly before now (the service was down)."""
    now = core.clock.now()
    outcomes = []
    for kind, schedule in schedules(core.config):
        fired = last_fire(schedule.trigger(core.config.tz), now, CATCH_UP[kind])
        if fired is not None:
            outcomes += await send_all(core, kind, fired)
    return outcomes
