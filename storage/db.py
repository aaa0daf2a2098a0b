"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with foreign keys on and a busy timeout, and every transaction
starts with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can
fail at once with "database is locked" when another connection wrote in between, which
the busy timeout does not cover. Taking the write lock up front makes writers queue.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import quote
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from storage import checkpoint, json_text, sqlite_driver

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number: PostgreSQL advisory lock that lets one process migrate at a time.
MIGRATION_LOCK = 0x46_49_4E_54  # "FINT"
# JSON columns written and read with orjson, Vietnamese as UTF-8 (storage/json_text.py).
_JSON = {"json_serializer": json_text.dumps, "json_deserializer": json_text.loads}


def create_engine(url: str, *, busy_timeout_ms: int = 5000, pool_size: int = 5) -> AsyncEngine:
    """An async engine for the configured URL, with the pragmas the service relies on.

    ``pool_size`` applies to PostgreSQL; SQLite always uses a single connection.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has one writer at a time anyway, and a second connection
        # waiting for the write lock sleeps in SQLite's busy handler (backing off up to
        # 100 ms a try) instead of queueing in the event loop. Measured with
        # bench/intake.py: the same throughput, half the p99 latency. Other processes on
        # the same file still wait through busy_timeout.
        # aiosqlite's connection with one hand-off to its thread per statement, not four
        # (storage/sqlite_driver.py).
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60,
                                     connect_args={"async_creator_fn": sqlite_driver.connect}, **_JSON)
        _configure_sqlite(engine, busy_timeout_ms)
        if database and database != ":memory:" and not database.startswith("file:"):
            engine.sync_engine.sqlite_file = str(Path(database).resolve())  # type: ignore[attr-defined]
            _checkpoint_aside(engine, checkpoint.Checkpointer(database))
        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, **_JSON)


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin (see `on_begin`).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable with WAL across process crashes
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        # The driver knows this statement: it waits for another process's lock its own way.
        connection.exec_driver_sql(sqlite_driver.BEGIN)


def _checkpoint_aside(engine: AsyncEngine, checkpointer: checkpoint.Checkpointer) -> None:
    """WAL checkpoints on a thread of their own (storage/checkpoint.py), not in a commit."""
    engine.sync_engine.checkpointer = checkpointer  # type: ignore[attr-defined]  # for tests and benchmarks

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA wal_autocheckpoint={checkpoint.BACKSTOP_PAGES}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "commit")
    def on_commit(_connection: Any) -> None:
        checkpointer.wrote()

    @event.listens_for(engine.sync_engine, "engine_disposed")
    def on_disposed(_engine: Any) -> None:
        checkpointer.close()


async def read_aside(engine: AsyncEngine, statement: Any) -> list[tuple]:
    """The rows of a long read-only statement (a count over a whole table) that must not
    hold the process's one SQLite connection: on a SQLite file, a read-only connection of
    its own on a thread, which reads the last commit (WAL), waits for no writer and holds
    up none, and meanwhile the event loop and the one connection go on. On PostgreSQL a
    pooled connection, as any read. Plain values, no column types applied: for aggregates."""
    path = getattr(engine.sync_engine, "sqlite_file", None)
    if path is None:
        async with engine.connect() as connection:
            return [tuple(row) for row in (await connection.execute(statement)).all()]
    sql = str(statement.compile(engine.sync_engine, compile_kwargs={"literal_binds": True}))
    return await asyncio.to_thread(_read_sqlite, path, sql)


def _read_sqlite(path: str, sql: str) -> list[tuple]:
    uri = f"file:{quote(path)}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=5, check_same_thread=False)) as connection:
        return connection.execute(sql).fetchall()


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """One AsyncSession per unit of work; objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def upsert(session: AsyncSession, table: Any) -> Any:
    """The database's own INSERT, which has ``on_conflict_do_nothing/do_update`` on either database."""
    module = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    return module.insert(table)


def insert_ignoring_conflicts(session: AsyncSession, table: Any) -> Any:
    """An INSERT that silently skips rows violating a unique constraint, on either database."""
    return upsert(session, table).on_conflict_do_nothing()


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to the newest migration; safe when several processes start at once.

    Alembic is imported here, not with this module: ``serve`` migrates in a process of its
    own (``storage/upgrade.py``), so the serving process never loads it (about 11 MiB).
    """
    from alembic import command

    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            await connection.commit()
        try:
            await connection.run_sync(lambda sync: command.upgrade(_alembic_config(sync), revision))
            await connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                await connection.commit()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


def run(coroutine: Any) -> Any:
    """Run a coroutine from synchronous code (the CLI)."""
    return asyncio.run(coroutine)
