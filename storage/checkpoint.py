"""SQLite's WAL checkpoints on a thread of their own, not inside a writer's commit.

In WAL mode SQLite appends each commit to the ``-wal`` file and, by default, the commit
that takes the log past 1,000 pages also copies the log back into the database file and
syncs both (an "automatic checkpoint"). This process has one SQLite connection, shared by
intake, the sweep, the dispatcher and the staff's pages, so whichever of them commits at
that moment waits for the copy and its two fsyncs, and everyone queued behind it waits
too: during the sweep of a backlog that was a sixth of its time (bench/README.md).

Here the connection's own automatic checkpoint is moved far out (``BACKSTOP_PAGES``, only
a safety net), and a thread with a short-lived connection of its own runs a PASSIVE
checkpoint shortly after commits: at most one every ``INTERVAL`` seconds, and none while
nothing commits. Every transaction here begins with ``BEGIN IMMEDIATE`` and commits, reads
too, so a read's commit also wakes the thread; with nothing new in the log its checkpoint
copies nothing and syncs nothing (a connection opened and a pragma run, at most four times
a second). A passive checkpoint never waits for a writer or a reader and never
blocks one; SQLite then restarts the log at the writer's next transaction, as before. The
thread's SQLite calls release the GIL, so the copy runs beside the event loop. The thread
ends after ``IDLE`` seconds without a commit and the next commit starts it again, so an
idle process (or a test's engine nobody disposed of) keeps no thread.

Durability is unchanged: a transaction is in the log once committed (``synchronous=NORMAL``),
whoever copies it back to the database file and whenever.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

INTERVAL = 0.25  # seconds between checkpoints while commits keep coming
IDLE = 30.0  # seconds without a commit before the thread ends
# The connection's own automatic checkpoint (pages of the log), for when this thread cannot
# keep up or is gone; SQLite's default is 1,000.
BACKSTOP_PAGES = 20_000
BUSY_TIMEOUT = 1.0  # seconds to wait to open the log (a PASSIVE checkpoint itself never waits)


class Checkpointer:
    """Checkpoints one SQLite file's log from a thread; ``wrote()`` after each commit."""

    def __init__(self, database: str, interval: float = INTERVAL, idle: float = IDLE) -> None:
        self.uri = f"file:{quote(str(Path(database).resolve()))}?mode=rw"  # never creates the file
        self.interval, self.idle = interval, idle
        self.runs = 0  # checkpoints run, complete or not (for tests and the benchmarks)
        self.failures = 0
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def wrote(self) -> None:
        """A transaction was committed (SQLAlchemy's commit event comes just before the commit
        itself: the thread waits ``INTERVAL`` first): checkpoint soon. A lock taken and an
        event set when the thread runs."""
        self._wake.set()
        with self._lock:  # uncontended but for the thread's start and end
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop the thread (the engine is disposed; SQLite checkpoints when its last connection
        closes). A later commit, should the engine be used again, starts it again."""
        with self._lock:
            thread = self._thread
            self._closed.set()
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            self._closed.clear()
            self._wake.clear()

    def _run(self) -> None:
        while True:
            woken = self._wake.wait(self.idle)
            with self._lock:
                if self._closed.is_set() or not (woken or self._wake.is_set()):
                    self._thread = None
                    return
                self._wake.clear()  # a commit from here on asks for another run
            # Let the commit that woke us land, and the ones right behind it join this run.
            if self._closed.wait(self.interval):
                with self._lock:
                    self._thread = None
                return
            self.checkpoint()

    def checkpoint(self) -> tuple[int, int, int] | None:
        """One PASSIVE checkpoint: (busy, pages in the log, pages copied), or None on an error."""
        try:
            with closing(sqlite3.connect(self.uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None,
                                         check_same_thread=False)) as connection:
                result = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as error:
            # Busy: another connection is closing (it checkpoints itself) or checkpointing;
            # the next run, or that one, copies what this one would have.
            self.failures += 1
            (log.debug if "locked" in str(error) or "busy" in str(error) else log.warning)(
                "sqlite checkpoint not run: %s", error)
            return None
        self.runs += 1
        return tuple(result)
