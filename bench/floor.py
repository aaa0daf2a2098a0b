"""The floor: the least work an SMS intake must do, with the service's own libraries (aiohttp,
aiosqlite), as a measuring stick for bench/sms.py --floor. Not a product.

    python bench/floor.py --port 8081 --db /tmp/floor.db --twilio-api http://127.0.0.1:9000 \\
        --token TOKEN --account-sid AC... --public-url http://127.0.0.1:8080

POST /webhooks/sms/twilio: check X-Twilio-Signature (HMAC-SHA1 over public URL + path and the
sorted form fields, base64; 403 if wrong), hand the message to the one writer task, and answer
empty TwiML only after the transaction holding it committed. The store is bench/floor_store.py's
group commit: in one transaction a complaint (tracking code, phone, text, time), its message
(unique MessageSid: a replay is answered 200 and not stored again) and an outbox row (the
acknowledgement) per request, executemany, COMMIT. A sender task posts each committed
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

import aiohttp
from aiohttp import web

from floor_store import GroupCommit

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
COLUMNS = {"complaint": "phone TEXT NOT NULL, text TEXT NOT NULL", "message": "phone TEXT NOT NULL, text TEXT NOT NULL",
           "outbox": "phone TEXT NOT NULL, body TEXT NOT NULL"}


def signature(token: str, url: str, form) -> str:
    """Twilio's: base64 HMAC-SHA1 of the URL and each field name + value, sorted by name."""
    data = url + "".join(name + value for name, value in sorted(form.items()))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class Floor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.public_url = args.public_url.rstrip("/")
        self.store = GroupCommit(args.db, COLUMNS, self.rows)
        self.tasks: list[asyncio.Task] = []

    def rows(self, code: str, fields: tuple) -> tuple[tuple, tuple, tuple]:
        phone, text = fields
        return (phone, text), (phone, text), (phone, f"Đã nhận phản ánh của bạn, mã {code}. Tra cứu: "
                                                     f"{self.public_url}/track/{code}")

    async def open(self, _app) -> None:
        await self.store.open()
        auth = base64.b64encode(f"{self.args.account_sid}:{self.args.token}".encode()).decode()
        self.session = aiohttp.ClientSession(  # one, long-lived: keep-alive connections to the API
            connector=aiohttp.TCPConnector(limit=self.args.connections), headers={"Authorization": "Basic " + auth},
            timeout=aiohttp.ClientTimeout(total=30))
        self.tasks = [asyncio.create_task(self.sender())]

    async def close(self, _app) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.session.close()
        await self.store.close()

    async def webhook(self, request: web.Request) -> web.Response:
        form = await request.post()
        given = request.headers.get("X-Twilio-Signature", "")
        expected = signature(self.args.token, self.public_url + request.path_qs, form)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            return web.Response(status=403, text="bad signature")
        sid, phone, text = form.get("MessageSid"), form.get("From"), form.get("Body", "")
        if not sid or not phone:
            return web.Response(status=400, text="MessageSid and From required")
        await self.store.add(sid, phone, text)  # committed (a replay: not stored again)
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

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
                self.store.sent(outbox_id)
            elif attempt < 5:  # stays queued in the store meanwhile
                await asyncio.sleep(2 ** attempt)
                await slots.acquire()
                await send(outbox_id, phone, body, attempt + 1)

        while True:
            row = await self.store.outbox.get()
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
