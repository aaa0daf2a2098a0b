"""The SMTP floor: the least work an email intake must do, with the service's own libraries
(aiosmtpd, the email package, aiosqlite, aiosmtplib), as a measuring stick for
bench/smtp.py --floor. Not a product.

    python bench/smtp_floor.py --port 2525 --db /tmp/floor.db --relay-port 2526

An aiosmtpd server started as bench/smtp.py's bare one (loop.create_server, the same size limit,
SMTPUTF8). DATA: parse the mail with the email package (policy default) for the sender, the
subject, the Message-ID and the text body, hand it to the one writer task, and answer 250 only
after the transaction holding it committed. The writer takes whatever is waiting (a group
commit): one SELECT for the Message-IDs already stored (a repeat is answered 250 and not stored
again; a unique index besides), then in one transaction a complaint (tracking code, sender,
subject, text, time), its message and an outbox row (the acknowledgement) per mail, executemany,
COMMIT. Sender tasks, one per connection of a small pool of long-lived aiosmtplib sessions to
the relay, send each committed acknowledgement (written from a template, not by the email
package); the writer marks the sent ones in its next transaction (one executemany UPDATE).
SQLite pragmas as storage/db.py sets them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import secrets
import signal
import time
from email.parser import BytesParser
from email.policy import default as DEFAULT_POLICY
from email.utils import formatdate

import aiosmtplib
import aiosqlite

MAX_MESSAGE_BYTES = 10_485_760  # bench/smtp.py's
FROM_ADDRESS = "phananh@feedback.example.gov.vn"
ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"  # bot/tracking.py's
SCHEMA = """
CREATE TABLE IF NOT EXISTS complaints (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, sender TEXT NOT NULL,
    subject TEXT NOT NULL, text TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, complaint_id INTEGER NOT NULL REFERENCES complaints(id),
    message_id TEXT NOT NULL, sender TEXT NOT NULL, subject TEXT NOT NULL, text TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, complaint_id INTEGER NOT NULL REFERENCES complaints(id),
    recipient TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued',
    created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (status) WHERE status <> 'sent';
"""
MAX_BATCH = 500
PARSER = BytesParser(policy=DEFAULT_POLICY)


def ack_bytes(outbox_id: int, recipient: str, subject: str, body: str) -> bytes:
    """The acknowledgement as a mail, from a template: UTF-8 subject as an encoded word, 8bit body."""
    encoded = "=?utf-8?b?" + base64.b64encode(subject.encode()).decode() + "?="
    return (f"From: {FROM_ADDRESS}\r\nTo: {recipient}\r\nSubject: {encoded}\r\nDate: {formatdate()}\r\n"
            f"Message-ID: <ack.{outbox_id}@feedback.example.gov.vn>\r\nAuto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            f"\r\n{body}\r\n").encode()


class Floor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.inbox: asyncio.Queue = asyncio.Queue()  # ("in", message_id, sender, subject, text, future) | ("sent", id)
        self.outbox: asyncio.Queue = asyncio.Queue()  # (outbox id, recipient, subject, body), committed
        self.tasks: list[asyncio.Task] = []

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.args.db, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
            await self.db.execute(f"PRAGMA {pragma}")
        await self.db.executescript(SCHEMA)
        self.complaint_id = (await (await self.db.execute("SELECT coalesce(max(id), 0) FROM complaints")).fetchone())[0]
        self.outbox_id = (await (await self.db.execute("SELECT coalesce(max(id), 0) FROM outbox")).fetchone())[0]
        for row in await self.db.execute_fetchall("SELECT id, recipient, subject, body FROM outbox "
                                                  "WHERE status <> 'sent'"):
            self.outbox.put_nowait(tuple(row))  # left unsent by an earlier run
        self.tasks = [asyncio.create_task(self.writer())]
        self.tasks += [asyncio.create_task(self.sender()) for _ in range(self.args.connections)]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.db.close()

    async def handle_DATA(self, server, session, envelope) -> str:
        mail = PARSER.parsebytes(envelope.content)
        sender = mail["From"]
        sender = sender.addresses[0].addr_spec if sender is not None and sender.addresses else envelope.mail_from
        subject = str(mail["Subject"] or "")
        message_id = str(mail["Message-ID"] or "").strip()
        if not message_id:  # none given: one made from the content (a repeat is still a repeat)
            message_id = "<sha256." + hashlib.sha256(envelope.content).hexdigest() + ">"
        body = mail.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        done = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait(("in", message_id, sender, subject, text, done))
        code = await done  # committed
        return f"250 2.0.0 Stored as {code}"

    async def writer(self) -> None:
        while True:
            items = [await self.inbox.get()]
            while not self.inbox.empty() and len(items) < MAX_BATCH:
                items.append(self.inbox.get_nowait())
            incoming = [item for item in items if item[0] == "in"]
            sent = [(item[1],) for item in items if item[0] == "sent"]
            try:
                codes, queued = await self.commit(incoming, sent)
            except Exception as error:  # noqa: BLE001 - every waiting mail gets the error (aiosmtpd: 500)
                if self.db.in_transaction:
                    await self.db.execute("ROLLBACK")
                for item in incoming:
                    item[5].done() or item[5].set_exception(error)
                for (outbox_id,) in sent:  # marked again with the next batch
                    self.inbox.put_nowait(("sent", outbox_id))
                continue
            for item, code in zip(incoming, codes):
                item[5].done() or item[5].set_result(code)
            for row in queued:
                self.outbox.put_nowait(row)

    async def commit(self, incoming: list, sent: list) -> tuple[list[str], list]:
        """One transaction for the batch; each mail's tracking code ("repeat" for a repeat), the
        outbox rows it queued."""
        now = time.time()
        known: set = set()
        if incoming:
            ids = [item[1] for item in incoming]
            known = {row[0] for row in await self.db.execute_fetchall(
                f"SELECT message_id FROM messages WHERE message_id IN ({','.join('?' * len(ids))})", ids)}
        complaints, messages, outbox, codes = [], [], [], []
        for _, message_id, sender, subject, text, _done in incoming:
            if message_id in known:  # a repeat (or twice in this batch): answered, not stored again
                codes.append("repeat")
                continue
            known.add(message_id)
            self.complaint_id += 1
            self.outbox_id += 1
            code = "PA-" + "".join(secrets.choice(ALPHABET) for _ in range(8))
            codes.append(code)
            complaints.append((self.complaint_id, code, sender, subject, text, now))
            messages.append((self.complaint_id, message_id, sender, subject, text, now))
            outbox.append((self.outbox_id, self.complaint_id, sender, f"Đã nhận phản ánh {code}: {subject}"[:200],
                           f"Đã nhận phản ánh của bạn, mã {code}.\r\nTra cứu: https://feedback.example.gov.vn/"
                           f"track/{code}", now))
        first_complaint, first_outbox = self.complaint_id - len(complaints), self.outbox_id - len(outbox)
        try:
            await self.db.execute("BEGIN IMMEDIATE")
            if complaints:
                await self.db.executemany("INSERT INTO complaints (id, code, sender, subject, text, created_at) "
                                          "VALUES (?, ?, ?, ?, ?, ?)", complaints)
                await self.db.executemany("INSERT OR IGNORE INTO messages (complaint_id, message_id, sender, "
                                          "subject, text, created_at) VALUES (?, ?, ?, ?, ?, ?)", messages)
                await self.db.executemany("INSERT INTO outbox (id, complaint_id, recipient, subject, body, "
                                          "created_at) VALUES (?, ?, ?, ?, ?, ?)", outbox)
            if sent:
                await self.db.executemany("UPDATE outbox SET status = 'sent' WHERE id = ?", sent)
            await self.db.execute("COMMIT")
        except BaseException:
            self.complaint_id, self.outbox_id = first_complaint, first_outbox
            raise
        return codes, [(row[0], row[2], row[3], row[4]) for row in outbox]

    async def sender(self) -> None:
        """One long-lived session with the relay; mail after mail from the outbox queue."""
        client: aiosmtplib.SMTP | None = None
        while True:
            outbox_id, recipient, subject, body = row = await self.outbox.get()
            for attempt in range(6):
                try:
                    if client is None or not client.is_connected:
                        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.args.relay_port,
                                                 local_hostname="floor.bench", timeout=30)
                        await client.connect()
                    await client.sendmail(FROM_ADDRESS, [recipient], ack_bytes(*row),
                                          mail_options=[] if recipient.isascii() else ["SMTPUTF8"])
                    self.inbox.put_nowait(("sent", outbox_id))
                    break
                except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                    if client is not None:
                        client.close()
                    client = None
                    await asyncio.sleep(min(2 ** attempt, 8))  # stays queued in the store meanwhile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="SQLite file")
    parser.add_argument("--relay-port", type=int, required=True, help="the relay (bench/smtp.py's sink) on 127.0.0.1")
    parser.add_argument("--connections", type=int, default=4, help="sessions with the relay (default 4)")
    args = parser.parse_args()
    from aiosmtpd.smtp import SMTP

    async def serve() -> None:
        floor = Floor(args)
        await floor.open()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(floor, data_size_limit=MAX_MESSAGE_BYTES, enable_SMTPUTF8=True, hostname="floor.bench",
                         ident="floor", loop=loop), "127.0.0.1", args.port)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        server.close()
        await floor.close()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
