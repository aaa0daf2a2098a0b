"""The SMTP floor: the least work an email intake must do, with the service's own libraries
(aiosmtpd, the email package, aiosqlite, aiosmtplib), as a measuring stick for
bench/smtp.py --floor. Not a product.

    python bench/smtp_floor.py --port 2525 --db /tmp/floor.db --relay-port 2526

An aiosmtpd server started as bench/smtp.py's bare one (loop.create_server, the same size limit,
SMTPUTF8). DATA: parse the mail with the email package (policy default) for the sender, the
subject, the Message-ID and the text body, hand it to the one writer task, and answer 250 only
after the transaction holding it committed. The store is bench/floor_store.py's group commit:
one SELECT for the Message-IDs already stored (a repeat is answered 250 and not stored
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
import signal
from email.parser import BytesParser
from email.policy import default as DEFAULT_POLICY
from email.utils import formatdate

import aiosmtplib

from floor_store import GroupCommit

MAX_MESSAGE_BYTES = 10_485_760  # bench/smtp.py's
FROM_ADDRESS = "phananh@feedback.example.gov.vn"
COLUMNS = {"complaint": "sender TEXT NOT NULL, subject TEXT NOT NULL, text TEXT NOT NULL",
           "message": "sender TEXT NOT NULL, subject TEXT NOT NULL, text TEXT NOT NULL",
           "outbox": "recipient TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL"}
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
        self.store = GroupCommit(args.db, COLUMNS, self.rows)
        self.tasks: list[asyncio.Task] = []

    @staticmethod
    def rows(code: str, fields: tuple) -> tuple[tuple, tuple, tuple]:
        sender, subject, text = fields
        return fields, fields, (sender, f"Đã nhận phản ánh {code}: {subject}"[:200],
                                f"Đã nhận phản ánh của bạn, mã {code}.\r\nTra cứu: https://feedback.example.gov.vn/"
                                f"track/{code}")

    async def open(self) -> None:
        await self.store.open()
        self.tasks = [asyncio.create_task(self.sender()) for _ in range(self.args.connections)]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.store.close()

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
        code = await self.store.add(message_id, sender, subject, text)  # committed
        return f"250 2.0.0 Stored as {code}"

    async def sender(self) -> None:
        """One long-lived session with the relay; mail after mail from the outbox queue."""
        client: aiosmtplib.SMTP | None = None
        while True:
            outbox_id, recipient, subject, body = row = await self.store.outbox.get()
            for attempt in range(6):
                try:
                    if client is None or not client.is_connected:
                        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.args.relay_port,
                                                 local_hostname="floor.bench", timeout=30)
                        await client.connect()
                    await client.sendmail(FROM_ADDRESS, [recipient], ack_bytes(*row),
                                          mail_options=[] if recipient.isascii() else ["SMTPUTF8"])
                    self.store.sent(outbox_id)
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
