"""aiosqlite with one hand-off to its thread per statement instead of four.

SQLAlchemy's aiosqlite adapter runs a statement as four calls on aiosqlite's thread (open
a cursor, execute, fetch the rows, close the cursor), and each call is a trip there and
back: a queue put, the thread woken, the event loop woken through its self-pipe. Under
load those hand-offs were about a sixth of the service's CPU on SQLite (bench/README.md,
the SMS profile). Here the cursor SQLAlchemy is given runs all four in one call on the
same thread, keeps what SQLite answered (rows, description, rowcount, last row id) and
hands it back from memory. SQLite does the same work on the same thread; only the trips
are fewer. Everything else (the connection, its thread, transactions, errors) is
aiosqlite's own: SQLAlchemy is handed this connection through its documented
``async_creator_fn`` connect argument (``storage.db.create_engine``).

Every result is read whole when its statement runs, as SQLAlchemy's adapter does for
all but server-side cursors; this service does not stream results from SQLite.

``BEGIN IMMEDIATE`` (how every transaction here begins, ``storage.db``) waits for another
process's write lock by trying again every millisecond, up to the connection's busy
timeout, instead of in SQLite's own busy handler. That handler sleeps 1, 2, 5, ... ms and
then 100 ms between tries, so beside a process that takes the lock back to back (a
service sweeping a backlog: one transaction after another, a fraction of a millisecond
apart) it rarely tries inside a gap: another process on the same file waited through
nearly all of a 10,000-complaint sweep for a lock that was free every 0.3 s, and during a
longer one failed with "database is locked" past its 5 s timeout (bench/README.md,
``sweep.py --contender``). Every other statement waits as before.
"""

from __future__ import annotations

import sqlite3
import time
from functools import partial
from typing import Any

import aiosqlite


BEGIN = "BEGIN IMMEDIATE"
# Between two tries of BEGIN IMMEDIATE while another connection holds the write lock.
RETRY_SECONDS = 0.001


def _begin(connection: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, tried every ``RETRY_SECONDS`` while another connection writes, until
    the connection's busy timeout has passed (then SQLite's "database is locked", as before)."""
    (timeout_ms,) = connection.execute("PRAGMA busy_timeout").fetchone()
    connection.execute("PRAGMA busy_timeout=0")  # a try that finds the lock taken returns at once
    try:
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            try:
                connection.execute(BEGIN)
                return
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(RETRY_SECONDS)
    finally:
        connection.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")


def _run(connection: sqlite3.Connection, many: bool, sql: str, parameters: Any) -> tuple:
    """On aiosqlite's thread: execute, read every row, close; what the cursor said."""
    if sql == BEGIN and not many and not parameters:
        _begin(connection)
        return None, -1, None, []
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class Cursor:
    """The part of aiosqlite's cursor SQLAlchemy's adapter uses, each statement one call."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self._rows: list = []

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _call(self, many: bool, sql: str, parameters: Any) -> Cursor:
        self.description, self.rowcount, self.lastrowid, self._rows = await self._connection._execute(
            _run, self._connection._conn, many, sql, parameters)
        return self

    async def execute(self, sql: str, parameters: Any = None) -> Cursor:
        return await self._call(False, sql, parameters)

    async def executemany(self, sql: str, parameters: Any) -> Cursor:
        return await self._call(True, sql, parameters)

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list:
        size = self.arraysize if size is None else size
        taken, self._rows = self._rows[:size], self._rows[size:]
        return taken

    async def fetchall(self) -> list:
        taken, self._rows = self._rows, []
        return taken

    async def close(self) -> None:
        self._rows = []


class Connection(aiosqlite.Connection):
    """aiosqlite's connection whose cursors run each statement in one call on its thread."""

    def cursor(self) -> Cursor:  # type: ignore[override]
        return Cursor(self)


def connect(database: str, *, iter_chunk_size: int = 64, **kwargs: Any) -> Connection:
    """As ``aiosqlite.connect`` (what SQLAlchemy's adapter calls), with this connection."""
    connection = Connection(partial(sqlite3.connect, database, **kwargs), iter_chunk_size)
    connection._thread.daemon = True  # as SQLAlchemy's adapter does for aiosqlite's own
    return connection
