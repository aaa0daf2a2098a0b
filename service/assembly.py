"""Building a process's core and port from the configuration.

``open_core`` makes the store's engine, the calendar, the catalogue and the directory,
migrates the schema (unless configured not to) and syncs units, staff and rules from
the configuration; ``make_port`` gives the channels their port, with the process's one
intake writer (messages arriving together are written in one transaction).
"""

from __future__ import annotations

from bot.clock import Clock, SystemClock
from bot.core import Core
from bot.deadlines import WorkingCalendar
from bot.directory import Directory
from bot.intake import IntakeWriter
from bot.metrics import Metrics
from bot.port import Port
from bot.sync import sync_directory
from bot.texts import Catalogue
from service.config import Config
from storage import db


def build_core(config: Config, clock: Clock | None = None, metrics: Metrics | None = None) -> Core:
    """A core for this configuration, not yet started (no connection is opened)."""
    engine = db.create_engine(config.storage.url, busy_timeout_ms=config.storage.busy_timeout_ms,
                              pool_size=config.storage.pool_size)
    return Core(config=config, engine=engine, sessions=db.sessionmaker(engine), clock=clock or SystemClock(),
                texts=Catalogue(config.service.default_language),
                calendar=config.deadlines.calendar(config.service.timezone),
                around_the_clock=WorkingCalendar.from_config(config.service.timezone, ["00:00-24:00"],
                                                             range(1, 8), "", [], []),
                metrics=metrics or Metrics(),
                directory=Directory(), public_url=config.web.public_url)


async def start_core(core: Core, config: Config, upgrade: bool | None = None) -> None:
    """Migrate the schema (unless configured not to) and sync units, staff and rules."""
    if config.storage.auto_upgrade if upgrade is None else upgrade:
        await db.upgrade(core.engine)
    await sync_directory(core)


async def open_core(config: Config, clock: Clock | None = None, upgrade: bool | None = None) -> Core:
    """A started core; close it with ``core.close()``."""
    core = build_core(config, clock)
    await start_core(core, config, upgrade)
    return core


def make_port(core: Core) -> Port:
    """The port the channels are given, with this process's intake writer."""
    return Port(core, IntakeWriter(core))
