"""The application core that every part of ``bot/`` works through.

One ``Core`` per process holds the configuration, the session factory, the clock, the
message catalogue, the working-hours calendar and the metrics. Channels reach it through
the functions of ``bot/`` (intake, status, lifecycle), never through ``storage/``.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import routing
from bot.clock import Clock, SystemClock
from bot.config import Config
from bot.deadlines import WorkingCalendar
from bot.metrics import Metrics
from bot.texts import Catalogue
from storage import db
from storage.models import RoutingRule, Setting, Staff, Unit

# Rules admins add with the CLI, and staff linking their chats, reach running processes
# within this many seconds.
RULES_TTL = 30.0


def calendar_from(config: Config) -> WorkingCalendar:
    """The working-hours calendar the configuration describes."""
    d = config.deadlines
    return WorkingCalendar.from_config(
        timezone=config.service.timezone,
        working_hours=d.working_hours,
        working_days=d.working_days,
        holidays_country=d.holidays_country,
        extra_days_off=d.extra_days_off,
        extra_working_days=d.extra_working_days,
    )


@dataclass
class Core:
    """What the application needs at hand: config, store, clock, texts, calendar, metrics."""

    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    texts: Catalogue
    calendar: WorkingCalendar
    metrics: Metrics
    # Set after a commit that queued messages, so the dispatcher need not wait for its poll.
    outbox_ready: asyncio.Event = field(default_factory=asyncio.Event)
    unit_ids: dict[str, int] = field(default_factory=dict)
    unit_names: dict[int, tuple[str, str]] = field(default_factory=dict)
    _rules: tuple[float, list[routing.Rule]] | None = None
    _staff: tuple[float, object] | None = None
    _intake_writer: object | None = None

    @classmethod
    def build(cls, config: Config, clock: Clock | None = None, metrics: Metrics | None = None) -> Core:
        """A core for this configuration; call ``start`` before use."""
        engine = db.create_engine(
            config.storage.url, busy_timeout_ms=config.storage.busy_timeout_ms, pool_size=config.storage.pool_size
        )
        return cls(
            config=config,
            engine=engine,
            sessions=db.sessionmaker(engine),
            clock=clock or SystemClock(),
            texts=Catalogue(config.service.default_language),
            calendar=calendar_from(config),
            metrics=metrics or Metrics(),
        )

    async def start(self, upgrade: bool | None = None) -> None:
        """Migrate the schema (unless configured not to) and sync units and staff from config."""
        if self.config.storage.auto_upgrade if upgrade is None else upgrade:
            await db.upgrade(self.engine)
        await self.sync_directory()

    async def close(self) -> None:
        """Release the database connections."""
        await self.engine.dispose()

    async def sync_directory(self) -> None:
        """Make the units and staff tables match the configuration (by slug; never deletes)."""
        async with self.sessions() as session, session.begin():
            units = {u.slug: u for u in (await session.scalars(select(Unit))).all()}
            for unit_config in self.config.units:
                unit = units.get(unit_config.slug)
                if unit is None:
                    unit = Unit(slug=unit_config.slug)
                    session.add(unit)
                    units[unit.slug] = unit
                unit.name, unit.name_en, unit.active = unit_config.name, unit_config.name_en, True
            configured = {u.slug for u in self.config.units}
            for slug, unit in units.items():
                # Complaints keep pointing at a unit removed from config, so it stays, inactive.
                if slug not in configured:
                    unit.active = False
            await session.flush()
            staff = {s.slug: s for s in (await session.scalars(select(Staff))).all()}
            for member_config in self.config.staff:
                member = staff.get(member_config.slug)
                if member is None:
                    member = Staff(slug=member_config.slug)
                    session.add(member)
                member.name = member_config.name
                member.unit_id = units[member_config.unit].id
                member.role = member_config.role
                member.email = member_config.email
                member.active = True
                if member_config.telegram_chat_id is not None:
                    member.telegram_chat_id = member_config.telegram_chat_id
            for slug, member in staff.items():
                if slug not in {m.slug for m in self.config.staff}:
                    member.active = False
            # Config rules are replaced as a whole; rules admins added (source "db") stay.
            await session.execute(delete(RoutingRule).where(RoutingRule.source == "config"))
            for rule in routing.rules_from_config(self.config.routing.rules):
                session.add(RoutingRule(unit_id=units[rule.unit].id, priority=rule.priority, source="config",
                                        keywords=list(rule.keywords), areas=list(rule.areas),
                                        categories=list(rule.categories), channels=list(rule.channels)))
        self.forget_rules()
        self.unit_ids = {slug: unit.id for slug, unit in units.items()}
        self.unit_names = {unit.id: (unit.name, unit.name_en or unit.name) for unit in units.values()}

    async def shared_key(self, name: str) -> bytes:
        """A random key made once and kept in the store, the same for every process."""
        async with self.sessions() as session, session.begin():
            await session.execute(db.insert_ignoring_conflicts(session, Setting).values(
                key=name, value=secrets.token_hex(32)))
            value = await session.scalar(select(Setting.value).where(Setting.key == name))
        return bytes.fromhex(value)

    async def routing_rules(self, session: AsyncSession) -> list[routing.Rule]:
        """The routing rules, read from the store at most every RULES_TTL seconds."""
        loop_time = asyncio.get_running_loop().time()
        if self._rules is None or loop_time - self._rules[0] > RULES_TTL:
            self._rules = (loop_time, await routing.load_rules(session))
        return self._rules[1]

    @property
    def intake_writer(self):
        """The group-commit writer for intake (one per process)."""
        from bot.intake import IntakeWriter

        if self._intake_writer is None:
            self._intake_writer = IntakeWriter(self)
        return self._intake_writer

    def forget_rules(self) -> None:
        """Read the routing rules and the staff afresh on next use (after an admin changed them)."""
        self._rules = None
        self._staff = None

    async def staff_directory(self, session: AsyncSession):
        """Active staff by unit and role, read from the store at most every RULES_TTL seconds."""
        from bot.directory import StaffDirectory

        loop_time = asyncio.get_running_loop().time()
        if self._staff is None or loop_time - self._staff[0] > RULES_TTL:
            self._staff = (loop_time, await StaffDirectory.load(session))
        return self._staff[1]

    def deadline_hours(self, unit: str, category: str | None) -> tuple[float, float]:
        """Working hours to the first response and to resolution, for a unit and category.

        The most specific override wins: unit and category, then category, then unit.
        """
        d = self.config.deadlines
        best = None
        for override in d.overrides:
            if override.unit not in (None, unit) or override.category not in (None, category):
                continue
            rank = (override.unit is not None) + 2 * (override.category is not None)
            if best is None or rank > best[0]:
                best = (rank, override)
        if best is None:
            return d.first_response_hours, d.resolution_hours
        override = best[1]
        return (override.first_response_hours or d.first_response_hours,
                override.resolution_hours or d.resolution_hours)

    def unit_slug(self, unit_id: int) -> str:
        """The slug of a unit known by its id."""
        return next((slug for slug, id_ in self.unit_ids.items() if id_ == unit_id), "")

    def unit_name(self, unit_id: int, language: str) -> str:
        """A unit's name in the citizen's language."""
        vi, en = self.unit_names.get(unit_id, ("", ""))
        return en if language == "en" else vi

    def format_time(self, moment: datetime | None, language: str) -> str:
        """A time as citizens read it, in the service's time zone."""
        if moment is None:
            return "-"
        local = moment.astimezone(self.config.tz)
        if language == "en":
            return local.strftime("%d %b %Y, %H:%M")
        return local.strftime("%H:%M ngày %d/%m/%Y")

    def track_url(self, code: str) -> str:
        """The public status page of a complaint."""
        return f"{self.config.web.public_url.rstrip('/')}/track/{code}"
