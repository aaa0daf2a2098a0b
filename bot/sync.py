"""What the store must hold before the service serves: the units, staff and routing rules
the configuration names, and the keys every process shares.

Run by the wiring at start (``serve`` and every CLI command that works on the store).
Units and staff are matched by slug and never deleted (complaints keep pointing at them);
those gone from the configuration are kept inactive. Rules from the configuration are
replaced as a whole; rules admins added with the CLI stay.
"""

from __future__ import annotations

import secrets

from sqlalchemy import delete, select

from bot import routing
from bot.core import Core
from storage import db
from storage.models import RoutingRule, Setting, Staff, Unit


async def sync_directory(core: Core) -> None:
    """Make the units, staff and config rules in the store match the configuration."""
    config = core.config
    async with core.sessions() as session, session.begin():
        units = {u.slug: u for u in (await session.scalars(select(Unit))).all()}
        for unit_config in config.units:
            unit = units.get(unit_config.slug)
            if unit is None:
                unit = Unit(slug=unit_config.slug)
                session.add(unit)
                units[unit.slug] = unit
            unit.name, unit.name_en, unit.active = unit_config.name, unit_config.name_en, True
        configured = {u.slug for u in config.units}
        for slug, unit in units.items():
            # Complaints keep pointing at a unit removed from config, so it stays, inactive.
            if slug not in configured:
                unit.active = False
        await session.flush()
        staff = {s.slug: s for s in (await session.scalars(select(Staff))).all()}
        for member_config in config.staff:
            member = staff.get(member_config.slug)
            if member is None:
                member = Staff(slug=member_config.slug)
                session.add(member)
            member.name = member_config.name
            member.unit_id = units[member_config.unit].id
            member.role = member_config.role
            member.email = member_config.email
            member.areas = list(member_config.areas)
            member.active = True
            if member_config.telegram_chat_id is not None:
                member.telegram_chat_id = member_config.telegram_chat_id
        for slug, member in staff.items():
            if slug not in {m.slug for m in config.staff}:
                member.active = False
        await session.execute(delete(RoutingRule).where(RoutingRule.source == "config"))
        for rule in routing.rules_from_config(config.routing.rules):
            session.add(RoutingRule(unit_id=units[rule.unit].id if rule.unit else None, priority=rule.priority,
                                    source="config", keywords=list(rule.keywords), areas=list(rule.areas),
                                    categories=list(rule.categories), channels=list(rule.channels),
                                    urgency=rule.urgency))
    async with core.sessions() as session:
        await core.directory.load_units(session)


async def shared_key(core: Core, name: str) -> bytes:
    """A random key made once and kept in the store, the same for every process."""
    async with core.sessions() as session, session.begin():
        await session.execute(db.insert_ignoring_conflicts(session, Setting).values(
            key=name, value=secrets.token_hex(32)))
        value = await session.scalar(select(Setting.value).where(Setting.key == name))
    return bytes.fromhex(value)
