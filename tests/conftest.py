"""Shared fixtures: a real database (a SQLite file, or a PostgreSQL database made for the
test and dropped after it) and the real service on a free port.

Set FEEDBACK_TEST_POSTGRES to an admin URL (``postgresql://postgres@127.0.0.1:5432/postgres``)
to run the whole suite on PostgreSQL; without it the suite runs on SQLite files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from sqlalchemy import event

from service import edge
from service.app import build_app
from bot.clock import FrozenClock
from service.config import Config, parse_config
from bot.core import Core
from service.assembly import open_core
from bot.port import Port
from channels.web import SITE
from service.app import CORE
from storage import db

POSTGRES_ADMIN_URL = os.environ.get("FEEDBACK_TEST_POSTGRES")
# A Monday morning in Hà Nội (01:00 UTC = 08:00 local), far from any public holiday.
MONDAY_MORNING = datetime(2026, 11, 2, 1, 0, tzinfo=timezone.utc)


def _plain_pg_url(url: str) -> str:
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


@dataclass
class PostgresTemplate:
    """A migrated PostgreSQL database that each test's database is copied from."""

    admin_url: str
    name: str

    def url_for(self, database: str) -> str:
        base = _plain_pg_url(self.admin_url).rsplit("/", 1)[0]
        return f"{base}/{database}".replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="session")
def postgres_template() -> PostgresTemplate | None:
    """Create and migrate a template database once per session; drop it at the end."""
    if not POSTGRES_ADMIN_URL:
        yield None
        return
    template = PostgresTemplate(POSTGRES_ADMIN_URL, f"fi_tmpl_{uuid.uuid4().hex[:10]}")

    async def create() -> None:
        admin = await asyncpg.connect(_plain_pg_url(POSTGRES_ADMIN_URL))
        try:
            await admin.execute(f'CREATE DATABASE "{template.name}"')
        finally:
            await admin.close()
        engine = db.create_engine(template.url_for(template.name))
        try:
            await db.upgrade(engine)
        finally:
            await engine.dispose()

    async def drop() -> None:
        admin = await asyncpg.connect(_plain_pg_url(POSTGRES_ADMIN_URL))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{template.name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    yield template
    asyncio.run(drop())


@pytest.fixture
async def database_url(tmp_path: Path, postgres_template: PostgresTemplate | None) -> AsyncIterator[str]:
    """A fresh, migrated database for one test: a SQLite file or a PostgreSQL database."""
    if postgres_template is None:
        yield f"sqlite+aiosqlite:///{tmp_path / 'feedback.db'}"
        return
    name = f"fi_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_plain_pg_url(postgres_template.admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template.name}"')
    finally:
        await admin.close()
    yield postgres_template.url_for(name)
    admin = await asyncpg.connect(_plain_pg_url(postgres_template.admin_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def merge(base: dict, extra: dict) -> dict:
    """Deep-merge two configuration dicts (extra wins)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def make_config(database_url: str) -> Callable[..., Config]:
    """Build a Config on the test's database, with overrides as nested dicts."""

    def make(overrides: dict | None = None, environ: dict | None = None) -> Config:
        # Incident grouping is off unless a test turns it on: tests of other features send
        # look-alike complaints in quick succession, which would otherwise join up.
        data = merge({"storage": {"url": database_url}, "web": {"port": 0},
                      "outbox": {"poll_seconds": 0.05, "backoff_base_seconds": 1},
                      "incidents": {"enabled": False}}, overrides or {})
        return parse_config(data, environ or {})

    return make


@pytest.fixture
def clock() -> FrozenClock:
    """A clock frozen on a working Monday morning in Hà Nội."""
    return FrozenClock(MONDAY_MORNING)


@pytest.fixture
async def core(make_config: Callable[..., Config], clock: FrozenClock) -> AsyncIterator[Core]:
    """A started Core on the test's database with the default configuration."""
    core = await open_core(make_config(), clock=clock)
    yield core
    await core.close()


@pytest.fixture
async def make_core(make_config: Callable[..., Config], clock: FrozenClock) -> AsyncIterator[Callable]:
    """Build and start Cores with configuration overrides; all are closed after the test."""
    started: list[Core] = []

    async def make(overrides: dict | None = None, clock_: FrozenClock | None = None) -> Core:
        core = await open_core(make_config(overrides), clock=clock_ or clock)
        started.append(core)
        return core

    yield make
    for core in started:
        await core.close()


@dataclass
class RunningService:
    """The real service listening on a free port."""

    url: str
    app: web.Application

    @property
    def core(self) -> Core:
        return self.app[CORE]

    @property
    def port(self) -> Port:
        """The port the channels are given (the same object every channel of the app holds)."""
        return self.app[SITE].port

    def client(self) -> aiohttp.ClientSession:
        """An HTTP client that keeps cookies like a browser (also for 127.0.0.1)."""
        return aiohttp.ClientSession(self.url, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def start_service(config: Config, **kwargs) -> tuple[RunningService, web.AppRunner]:
    """Start build_app(config) on 127.0.0.1 and a free port."""
    app = build_app(config, **kwargs)
    # The edge as `serve` sets it up (timeouts, the connection cap), on a free port.
    runner, site = await edge.start(app, config, "127.0.0.1", 0, lingering_time=1)
    return RunningService(f"http://127.0.0.1:{site.port}", app), runner


@pytest.fixture
async def service(make_config: Callable[..., Config], clock: FrozenClock) -> AsyncIterator[RunningService]:
    """The service with default configuration on a free port, on the frozen clock."""
    running, runner = await start_service(make_config(), clock=clock)
    yield running
    await runner.cleanup()


FORM_FIELDS = re.compile(r'name="(csrf_token|submission_id)" value="([^"]*)"')


async def get_form(client: aiohttp.ClientSession, path: str = "/") -> dict[str, str]:
    """GET the form as a browser would and return its hidden fields."""
    async with client.get(path) as response:
        assert response.status == 200
        page = await response.text()
    return dict(FORM_FIELDS.findall(page))


async def plan_of(core: Core, statement: str, parameters: object, tag: str = "") -> str:
    """How the store plans a statement the code ran: SQLite's EXPLAIN QUERY PLAN, or
    PostgreSQL's EXPLAIN with sequential scans off (test tables are tiny: whether an index
    serves it at all). ``tag`` makes the EXPLAIN a statement of its own: sqlite3 keeps
    prepared statements, and a kept plan can outlive the schema it was made for."""
    sqlite = core.engine.dialect.name == "sqlite"
    async with core.engine.connect() as conn:
        if not sqlite:
            await conn.exec_driver_sql("SET enable_seqscan = off")
        rows = (await conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement
                                           + (f" -- {tag}" if tag else ""), parameters)).all()
    return "\n".join(str(row[-1]) for row in rows)


@contextlib.contextmanager
def statements(core: Core, wanted: Callable[[str], bool]) -> Iterator[list[tuple[str, object]]]:
    """The statements the core's engine runs meanwhile that ``wanted`` picks, with their
    parameters (the first set of an executemany's)."""
    seen: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        if wanted(statement):
            seen.append((statement, parameters[0] if executemany and parameters else parameters))

    event.listen(core.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(core.engine.sync_engine, "before_cursor_execute", record)
