"""storage/sqlite_driver.py: one hand-off to aiosqlite's thread per statement, the same answers.

Each case runs through the service's engine (``storage.db.create_engine``) and through
SQLAlchemy's plain aiosqlite engine on another file, and the two must agree: rows,
row counts, RETURNING, executemany, streamed results, errors and rollbacks.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from storage import db, sqlite_driver


async def _run(engine) -> list:
    seen: list = []
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        seen.append(type(raw.driver_connection).__module__.split(".")[0])
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER)"))
        result = await connection.execute(text("INSERT INTO t (name, n) VALUES ('a', 1), ('b', 2), ('c', 3)"))
        seen.append(result.rowcount)
        result = await connection.execute(text("INSERT INTO t (name, n) VALUES ('d', 4) RETURNING id, name"))
        seen.append(result.all())
        result = await connection.execute(text("INSERT INTO t (name, n) VALUES (:name, :n)"),
                                          [{"name": f"m{i}", "n": i} for i in range(5)])
        seen.append(result.rowcount)
        result = await connection.execute(text("UPDATE t SET n = n + 10 WHERE n < :limit"), {"limit": 3})
        seen.append(result.rowcount)
        seen.append((await connection.execute(text("SELECT name, n FROM t ORDER BY id"))).all())
        seen.append((await connection.execute(text("SELECT name FROM t WHERE n > 100"))).all())
        seen.append((await connection.execute(text("SELECT count(*) FROM t"))).scalar_one())
        streamed = await connection.stream(text("SELECT id FROM t ORDER BY id"))
        seen.append([row async for row in streamed])
        with pytest.raises(IntegrityError):
            await connection.execute(text("INSERT INTO t (name, n) VALUES ('a', 9)"))
        with pytest.raises(OperationalError):
            await connection.execute(text("SELECT nothing FROM nowhere"))
        await connection.commit()
        async with connection.begin():
            await connection.execute(text("DELETE FROM t"))
            await connection.rollback()
        seen.append((await connection.execute(text("SELECT count(*) FROM t"))).scalar_one())
    await engine.dispose()
    return seen


async def test_the_service_s_sqlite_connection_answers_as_aiosqlite_does(tmp_path):
    ours = await _run(db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/ours.db"))
    theirs = await _run(create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/theirs.db"))
    assert ours[0] == "storage" and theirs[0] == "aiosqlite"  # the engine really uses it
    assert ours[1:] == theirs[1:]
    assert ours[1:3] == [3, [(4, "d")]] and ours[-1] == 9


async def test_a_statement_is_one_trip_to_aiosqlite_s_thread(tmp_path):
    """Counted at aiosqlite's queue: the four calls SQLAlchemy's adapter makes are one."""
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert isinstance(raw, sqlite_driver.Connection)
        await connection.execute(text("SELECT 0"))  # the transaction's BEGIN IMMEDIATE goes first
        calls: list = []
        queue = raw._tx
        put = queue.put_nowait

        class Counting:
            def put_nowait(self, item):
                calls.append(item)
                put(item)

            def __getattr__(self, name):
                return getattr(queue, name)

        raw._tx = Counting()
        try:
            rows = (await connection.execute(text("SELECT 1 UNION ALL SELECT 2"))).all()
        finally:
            raw._tx = queue
    await engine.dispose()
    assert rows == [(1,), (2,)] and len(calls) == 1


# Another process on the same file that writes back to back, as a service sweeping a backlog
# does: it holds the write lock HOLD seconds, lets it go for GAP seconds, takes it again.
_WRITER = """
import sqlite3, sys, time
hold, gap, seconds = (float(x) for x in sys.argv[2:5])
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
end = time.monotonic() + seconds
first = True
while time.monotonic() < end:
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO t (who) VALUES ('writer')")
    if first:
        print("holding", flush=True)
        first = False
    time.sleep(hold)
    connection.execute("COMMIT")
    time.sleep(gap)
"""


async def _beside_writer(tmp_path, busy_timeout_ms: int, hold: float, gap: float):
    """The service's engine on a new file with a table ``t``, and the writer process on the
    same file, holding the lock (for 30 s at most)."""
    path = tmp_path / "shared.db"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=busy_timeout_ms)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)"))
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", _WRITER, str(path), str(hold), str(gap), "30",
                                                  stdout=asyncio.subprocess.PIPE)
    assert await writer.stdout.readline() == b"holding\n"
    return engine, writer


async def test_a_transaction_gets_in_beside_a_process_that_writes_back_to_back(tmp_path):
    """The writer lets the lock go for 2 ms every 200 ms. SQLite's own busy handler tries
    every 100 ms once it has waited a third of a second, so it rarely lands in a gap and
    gave up after its timeout ("database is locked"); tried every millisecond, each of our
    transactions gets in at a gap, well inside its timeout."""
    engine, writer = await _beside_writer(tmp_path, busy_timeout_ms=2000, hold=0.2, gap=0.002)
    try:
        for n in range(5):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (who) VALUES (:who)"), {"who": f"ours {n}"})
    finally:
        writer.kill()
        await writer.wait()
    async with engine.connect() as connection:
        ours = (await connection.execute(text("SELECT who FROM t WHERE who LIKE 'ours%' ORDER BY id"))).scalars().all()
        assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one() == 2000
    await engine.dispose()
    assert ours == [f"ours {n}" for n in range(5)]


async def test_a_lock_held_past_the_busy_timeout_is_still_database_is_locked(tmp_path):
    """Trying every millisecond keeps the configured timeout: a lock held throughout fails
    the transaction after it, not before, and the connection keeps its busy timeout."""
    engine, writer = await _beside_writer(tmp_path, busy_timeout_ms=300, hold=30, gap=0)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t (who) VALUES ('ours')"))
        waited = time.monotonic() - started
    finally:
        writer.kill()
        await writer.wait()
    async with engine.connect() as connection:
        assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one() == 300
        assert (await connection.execute(text("SELECT count(*) FROM t WHERE who = 'ours'"))).scalar_one() == 0
    await engine.dispose()
    assert waited >= 0.3
