"""The floors' store (bench/floor.py, bench/smtp_floor.py): the least a channel's intake must
do to keep what it accepted, with aiosqlite and the service's SQLite pragmas. Not a product.

One writer task takes whatever is waiting (a group commit): one ``SELECT`` for the external
ids already stored (a repeat is answered and not stored again; a unique index besides), then
in one transaction a complaint, its message and an outbox row (the acknowledgement) per new
message, three ``executemany``, and the sent marks of acknowledgements that went out since,
one ``executemany`` ``UPDATE``; ``COMMIT``. Only then is each waiting ``add`` answered, with
the complaint's tracking code ("repeat" for a repeat), and the new outbox rows handed to the
floor's senders (``outbox``). Rows left unsent by an earlier run are handed over at start.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence

import aiosqlite

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"  # bot/tracking.py's
PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000")  # storage/db.py's
MAX_BATCH = 500
# The columns each floor adds to the common ones: complaints (id, code, ..., created_at),
# messages (complaint_id, external_id, ..., created_at), outbox (id, complaint_id, ..., created_at).
SCHEMA = """
CREATE TABLE IF NOT EXISTS complaints (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, {complaint},
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, complaint_id INTEGER NOT NULL REFERENCES complaints(id),
    external_id TEXT NOT NULL, {message}, created_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS messages_external_id ON messages (external_id);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, complaint_id INTEGER NOT NULL REFERENCES complaints(id),
    {outbox}, status TEXT NOT NULL DEFAULT 'queued', created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (status) WHERE status <> 'sent';
"""


def _names(columns: str) -> list[str]:
    return [column.split()[0] for column in columns.split(",")]


class GroupCommit:
    """A floor's store. ``columns``: each table's own columns as SQL (``complaint``,
    ``message``, ``outbox``); ``build(code, fields)``: the values of those columns for one
    new message (``fields`` as given to ``add``), as three tuples."""

    def __init__(self, path: str, columns: dict[str, str],
                 build: Callable[[str, tuple], tuple[tuple, tuple, tuple]]) -> None:
        self.path, self.build = path, build
        self.schema = SCHEMA.format(**columns)
        self.names = {table: _names(sql) for table, sql in columns.items()}
        self.inbox: asyncio.Queue = asyncio.Queue()  # ("in", external id, fields, future) | ("sent", outbox id)
        self.outbox: asyncio.Queue = asyncio.Queue()  # (outbox id, *the outbox's own columns), committed
        self.task: asyncio.Task | None = None

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in PRAGMAS:
            await self.db.execute(f"PRAGMA {pragma}")
        await self.db.executescript(self.schema)
        self.complaint_id = (await self.db.execute_fetchall("SELECT coalesce(max(id), 0) FROM complaints"))[0][0]
        self.outbox_id = (await self.db.execute_fetchall("SELECT coalesce(max(id), 0) FROM outbox"))[0][0]
        for row in await self.db.execute_fetchall(
                f"SELECT id, {', '.join(self.names['outbox'])} FROM outbox WHERE status <> 'sent'"):
            self.outbox.put_nowait(tuple(row))
        self.task = asyncio.create_task(self._writer())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.db.close()

    async def add(self, external_id: str, *fields: object) -> str:
        """Store one message; returns once committed: its tracking code, or "repeat"."""
        done = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait(("in", external_id, fields, done))
        return await done

    def sent(self, outbox_id: int) -> None:
        """An acknowledgement went out: marked in the next transaction."""
        self.inbox.put_nowait(("sent", outbox_id))

    async def _writer(self) -> None:
        while True:
            items = [await self.inbox.get()]
            while not self.inbox.empty() and len(items) < MAX_BATCH:
                items.append(self.inbox.get_nowait())
            incoming = [item for item in items if item[0] == "in"]
            sent = [(item[1],) for item in items if item[0] == "sent"]
            try:
                codes, queued = await self._commit(incoming, sent)
            except Exception as error:  # noqa: BLE001 - every waiting message gets the error
                if self.db.in_transaction:
                    await self.db.execute("ROLLBACK")
                for item in incoming:
                    item[3].done() or item[3].set_exception(error)
                for (outbox_id,) in sent:  # marked again with the next batch
                    self.sent(outbox_id)
                continue
            for item, code in zip(incoming, codes):
                item[3].done() or item[3].set_result(code)
            for row in queued:
                self.outbox.put_nowait(row)

    def _insert(self, table: str, own: str, first: Sequence[str], ignore: bool = False) -> str:
        names = [*first, *self.names[own], "created_at"]
        return (f"INSERT {'OR IGNORE ' if ignore else ''}INTO {table} ({', '.join(names)}) "
                f"VALUES ({', '.join('?' * len(names))})")

    async def _commit(self, incoming: list, sent: list) -> tuple[list[str], list]:
        """One transaction for the batch; each message's code ("repeat" for a repeat), the
        outbox rows it queued."""
        now = time.time()
        known: set = set()
        if incoming:
            ids = [item[1] for item in incoming]
            known = {row[0] for row in await self.db.execute_fetchall(
                f"SELECT external_id FROM messages WHERE external_id IN ({','.join('?' * len(ids))})", ids)}
        complaints, messages, outbox, codes = [], [], [], []
        for _, external_id, fields, _done in incoming:
            if external_id in known:  # a repeat (or twice in this batch): answered, not stored again
                codes.append("repeat")
                continue
            known.add(external_id)
            self.complaint_id += 1
            self.outbox_id += 1
            code = "PA-" + "".join(secrets.choice(ALPHABET) for _ in range(8))
            codes.append(code)
            complaint, message, ack = self.build(code, fields)
            complaints.append((self.complaint_id, code, *complaint, now))
            messages.append((self.complaint_id, external_id, *message, now))
            outbox.append((self.outbox_id, self.complaint_id, *ack, now))
        first_complaint, first_outbox = self.complaint_id - len(complaints), self.outbox_id - len(outbox)
        try:
            await self.db.execute("BEGIN IMMEDIATE")
            if complaints:
                await self.db.executemany(self._insert("complaints", "complaint", ("id", "code")), complaints)
                await self.db.executemany(self._insert("messages", "message", ("complaint_id", "external_id"),
                                                       ignore=True),
                                          messages)
                await self.db.executemany(self._insert("outbox", "outbox", ("id", "complaint_id")), outbox)
            if sent:
                await self.db.executemany("UPDATE outbox SET status = 'sent' WHERE id = ?", sent)
            await self.db.execute("COMMIT")
        except BaseException:
            self.complaint_id, self.outbox_id = first_complaint, first_outbox
            raise
        return codes, [(row[0], *row[2:-1]) for row in outbox]
