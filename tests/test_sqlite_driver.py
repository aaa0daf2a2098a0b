"""storage/sqlite_driver.py: one hand-off to aiosqlite's thread per statement, the same answers.

Each case runs through the service's engine (``storage.db.create_engine``) and through
SQLAlchemy's plain aiosqlite engine on another file, and the two must agree: rows,
row counts, RETURNING, executemany, streamed results, errors and rollbacks.
"""

from __future__ import annotations

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
