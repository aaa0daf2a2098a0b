"""storage/checkpoint.py: SQLite's WAL copied back to the database file by a thread of its
own, not by whichever commit takes the log past 1,000 pages.

Whether a checkpoint ran is read from the files themselves: pages written in WAL mode are
in the ``-wal`` file only, and the database file grows when a checkpoint copies them back.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from sqlalchemy import text

from storage import checkpoint, db

ROWS, BLOB = 600, 16_384  # about 2,400 pages of 4 KiB: past SQLite's own threshold of 1,000


def _size(path) -> int:
    return os.path.getsize(path)


def _wait_for(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sqlite-checkpoint"]


async def test_the_service_s_commits_leave_the_checkpoint_to_the_thread(tmp_path):
    path = tmp_path / "store.db"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    checkpointer = engine.sync_engine.checkpointer
    async with engine.begin() as connection:
        # The connection's own automatic checkpoint is only a safety net now.
        assert (await connection.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one() == checkpoint.BACKSTOP_PAGES
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"))
    assert _wait_for(lambda: checkpointer.runs >= 1)  # the schema's commit was copied back
    before = _size(path)
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (b) VALUES (randomblob(:n))"), [{"n": BLOB}] * ROWS)
    # With SQLite's default this commit copied the log back itself; now the thread does.
    assert _wait_for(lambda: _size(path) >= before + ROWS * BLOB)
    assert checkpointer.failures == 0
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == ROWS
    await engine.dispose()
    assert not any(t.is_alive() for t in _threads())  # disposing of the engine ends the thread
    with sqlite3.connect(path) as plain:  # and the file holds every row on its own
        assert plain.execute("SELECT count(*), sum(length(b)) FROM t").fetchone() == (ROWS, ROWS * BLOB)


def test_the_thread_ends_when_idle_and_the_next_commit_starts_it_again(tmp_path):
    path = tmp_path / "store.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # nothing but the thread copies the log back
    writer.execute("CREATE TABLE t (b BLOB)")
    checkpointer = checkpoint.Checkpointer(str(path), interval=0.05, idle=0.3)
    for round_ in range(1, 3):
        before = _size(path)
        writer.executemany("INSERT INTO t VALUES (randomblob(?))", [(BLOB,)] * 100)
        checkpointer.wrote()
        assert _wait_for(lambda: _size(path) >= before + 100 * BLOB), f"round {round_}: the log was not copied back"
        assert _wait_for(lambda: checkpointer._thread is None), f"round {round_}: the idle thread did not end"
    assert checkpointer.runs >= 2 and checkpointer.failures == 0
    writer.close()


def test_a_checkpoint_never_creates_a_missing_database(tmp_path):
    checkpointer = checkpoint.Checkpointer(str(tmp_path / "gone.db"))
    assert checkpointer.checkpoint() is None and checkpointer.failures == 1
    assert not (tmp_path / "gone.db").exists()
