"""The floor: the least work an SMS intake must do, with the service's own libraries (aiohttp,
aiosqlite), as a measuring stick for bench/sms.py --floor. Not a product.

    python bench/floor.py --port 8081 --db /tmp/floor.db --twilio-api http://127.0.0.1:9000 \\
        --token TOKEN --account-sid AC... --public-url http://127.0.0.1:8080

POST /webhooks/sms/twilio: check X-Twilio-Signature (HMAC-SHA1 over public URL + path and the
sorted form fields, base64; 403 if wrong), hand the message to the one writer task, and answer
empty TwiML only after the transaction holding it committed. The writer takes whatever is
waiting (a group commit): in one transaction a complaint (tracking code, phone, text, time),
its message (unique MessageSid: a replay is answered 200 and not stored again) and an outbox row
(the acknowledgement) per request, executemany, COMMIT. A sender task posts each committed
acknowledgement to the Twilio Messages API through one keep-alive ClientSession, up to 32 at
once; the writer marks the sent ones in its next transaction (one executemany UPDATE).
GET /healthz answers 200. SQLite pragmas as storage/db.py sets them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import secrets
import time

import aiohttp
import aiosqlite
from aiohttp import web

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"  # bot/tracking.py's
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
SCHEMA = """
CREATE TABLE IF NOT EXISTS complaints (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, phone TEXT NOT NULL,
    text TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, complaint_id INTEGER NOT NULL REFERENCES complaints(id),
    external_id TEXT NOT NULL, phone TEXT NOT NULL, text TEXT NOT NULL, created_at REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS messages_external_id ON messages (external_id);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, complaint_id INTEGER NOT NULL REFERENCES complaints(id),
    phone TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued', created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (status) WHERE status <> 'sent';
"""
MAX_BATCH = 500


def signature(token: str, url: str, form) -> str:
    """Twilio's: base64 HMAC-SHA1 of the URL and each field name + value, sorted by name."""
    data = url + "".join(name + value for name, value in sorted(form.items()))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class Floor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.public_url = args.public_url.rstrip("/")
        self.inbox: asyncio.Queue = asyncio.Queue()  # ("in", sid, phone, text, future) | ("sent", outbox id)
        self.outbox: asyncio.Queue = asyncio.Queue()  # (outbox id, phone, body), committed
        self.tasks: list[asyncio.Task] = []

    async def open(self, _app) -> None:
        self.db = await aiosqlite.connect(self.args.db, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
            await self.db.execute(f"PRAGMA {pragma}")
        await self.db.executescript(SCHEMA)
        self.complaint_id = (await (await self.db.execute("SELECT coalesce(max(id), 0) FROM complaints")).fetchone())[0]
        self.outbox_id = (await (await self.db.execute("SELECT coalesce(max(id), 0) FROM outbox")).fetchone())[0]
        for row in await self.db.execute_fetchall("SELECT id, phone, body FROM outbox WHERE status <> 'sent'"):
            self.outbox.put_nowait(tuple(row))  # left unsent by an earlier run
        auth = base64.b64encode(f"{self.args.account_sid}:{self.args.token}".encode()).decode()
        self.session = aiohttp.ClientSession(  # one, long-lived: keep-alive connections to the API
            connector=aiohttp.TCPConnector(limit=self.args.connections), headers={"Authorization": "Basic " + auth},
            timeout=aiohttp.ClientTimeout(total=30))
        self.tasks = [asyncio.create_task(self.writer()), asyncio.create_task(self.sender())]

    async def close(self, _app) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.session.close()
        await self.db.close()

    async def webhook(self, request: web.Request) -> web.Response:
        form = await request.post()
        given = request.headers.get("X-Twilio-Signature", "")
        expected = signature(self.args.token, self.public_url + request.path_qs, form)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            return web.Response(status=403, text="bad signature")
        sid, phone, text = form.get("MessageSid"), form.get("From"), form.get("Body", "")
        if not sid or not phone:
            return web.Response(status=400, text="MessageSid and From required")
        done = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait(("in", sid, phone, text, done))
        await done  # committed
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    async def writer(self) -> None:
        while True:
            items = [await self.inbox.get()]
            while not self.inbox.empty() and len(items) < MAX_BATCH:
                items.append(self.inbox.get_nowait())
            incoming = [item for item in items if item[0] == "in"]
            sent = [(item[1],) for item in items if item[0] == "sent"]
            try:
                queued = await self.commit(incoming, sent)
            except Exception as error:  # noqa: BLE001 - every waiting request gets the error
                if self.db.in_transaction:
                    await self.db.execute("ROLLBACK")
                for item in incoming:
                    item[4].done() or item[4].set_exception(error)
                for (outbox_id,) in sent:  # marked again with the next batch
                    self.inbox.put_nowait(("sent", outbox_id))
                continue
            for item in incoming:
                item[4].done() or item[4].set_result(None)
            for row in queued:
                self.outbox.put_nowait(row)

    async def commit(self, incoming: list, sent: list) -> list:
        """One transaction for the batch; the outbox rows it queued."""
        now = time.time()
        known = set()
        if incoming:
            sids = [item[1] for item in incoming]
            known = {row[0] for row in await self.db.execute_fetchall(
                f"SELECT external_id FROM messages WHERE external_id IN ({','.join('?' * len(sids))})", sids)}
        complaints, messages, outbox = [], [], []
        for _, sid, phone, text, _done in incoming:
            if sid in known:  # a replay (or twice in this batch): answered, not stored again
                continue
            known.add(sid)
            self.complaint_id += 1
            self.outbox_id += 1
            code = "PA-" + "".join(secrets.choice(ALPHABET) for _ in range(8))
            complaints.append((self.complaint_id, code, phone, text, now))
            messages.append((self.complaint_id, sid, phone, text, now))
            outbox.append((self.outbox_id, self.complaint_id, phone,
                           f"Đã nhận phản ánh của bạn, mã {code}. Tra cứu: {self.public_url}/track/{code}", now))
        first_complaint, first_outbox = self.complaint_id - len(complaints), self.outbox_id - len(outbox)
        try:
            await self.db.execute("BEGIN IMMEDIATE")
            if complaints:
                await self.db.executemany("INSERT INTO complaints (id, code, phone, text, created_at) "
                                          "VALUES (?, ?, ?, ?, ?)", complaints)
                await self.db.executemany("INSERT OR IGNORE INTO messages (complaint_id, external_id, phone, text, "
                                          "created_at) VALUES (?, ?, ?, ?, ?)", messages)
                await self.db.executemany("INSERT INTO outbox (id, complaint_id, phone, body, created_at) "
                                          "VALUES (?, ?, ?, ?, ?)", outbox)
            if sent:
                await self.db.executemany("UPDATE outbox SET status = 'sent' WHERE id = ?", sent)
            await self.db.execute("COMMIT")
        except BaseException:
            self.complaint_id, self.outbox_id = first_complaint, first_outbox
            raise
        return [(row[0], row[2], row[3]) for row in outbox]

    async def sender(self) -> None:
        url = f"{self.args.twilio_api.rstrip('/')}/2010-04-01/Accounts/{self.args.account_sid}/Messages.json"
        slots = asyncio.Semaphore(self.args.connections)
        running: set[asyncio.Task] = set()

        async def send(outbox_id: int, phone: str, body: str, attempt: int = 0) -> None:
            try:
                async with self.session.post(url, data={"To": phone, "From": self.args.number, "Body": body}) as r:
                    await r.read()
                    ok = r.status < 300
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            finally:
                slots.release()
            if ok:
                self.inbox.put_nowait(("sent", outbox_id))
            elif attempt < 5:  # stays queued in the store meanwhile
                await asyncio.sleep(2 ** attempt)
                await slots.acquire()
                await send(outbox_id, phone, body, attempt + 1)

        while True:
            row = await self.outbox.get()
            await slots.acquire()
            task = asyncio.create_task(send(*row))
            running.add(task)
            task.add_done_callback(running.discard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="SQLite file")
    parser.add_argument("--twilio-api", required=True, help="base URL of the Twilio REST API (the fake's)")
    parser.add_argument("--token", required=True, help="Twilio auth token: signs webhooks, authenticates sends")
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--public-url", required=True, help="the URL Twilio signs against, without the path")
    parser.add_argument("--number", default="+84241234567", help="From of the acknowledgements")
    parser.add_argument("--connections", type=int, default=32, help="outbound connection limit (default 32)")
    args = parser.parse_args()
    floor = Floor(args)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=1_048_576)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/webhooks/sms/twilio", floor.webhook)
    app.on_startup.append(floor.open)
    app.on_cleanup.append(floor.close)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
