"""Shared parts of the SMS tests (this module holds no tests itself).

The recorded payloads under tests/fixtures/sms/, signing as each gateway signs (Twilio's
signature with the official ``twilio`` package, so our verifier is checked against
Twilio's own code), a fake operator and the real service on a real socket with the three
gateways configured.

The fake operator is an aiohttp app on a free port speaking each gateway's outbound API:
Twilio's ``POST /2010-04-01/Accounts/{sid}/Messages.json`` (form, Basic auth, 201 with a
sid), the Android app's ``POST /message`` (JSON, Basic auth, 202 with an id) and the
generic gateway's signed JSON ``POST /send``. It records what it accepted and fails on
demand: ``fail_next(503, 400, "slow")``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from service.config import Config
from bot.clock import FrozenClock
from bot.core import Core
from storage.models import Complaint, Message, OutboxMessage
from tests.conftest import RunningService, merge, start_service

FIXTURES = Path(__file__).parent / "fixtures" / "sms"
PUBLIC_URL = "https://phananh.example.gov.vn/hn"  # behind a proxy: not the address the test server listens on
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token-6d1f0c2b9a8e"
ANDROID_KEY = "android-signing-key-3f9a1c"
ANDROID_PASSWORD = "android-api-password-7b2e"
GENERIC_SECRET = "generic-hmac-secret-0c4d8e"
SECRETS = {"FI_TEST_TWILIO_TOKEN": TWILIO_TOKEN, "FI_TEST_ANDROID_KEY": ANDROID_KEY,
           "FI_TEST_ANDROID_PASSWORD": ANDROID_PASSWORD, "FI_TEST_GENERIC_SECRET": GENERIC_SECRET}
CITIZEN = "+84912345678"  # the recorded payloads' sender, as 0912345678 normalises
STAFF = {"slug": "can-bo-an", "name": "Nguyễn Văn An", "unit": "tiep-nhan"}


def fixture(path: str, **values: str) -> bytes:
    """A recorded payload, with __NAME__ placeholders filled in."""
    text = (FIXTURES / path).read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace(f"__{name.upper()}__", value)
    return text.encode("utf-8")


def twilio_url(gateway: str = "twilio") -> str:
    """The URL Twilio is told to call (and signs)."""
    return f"{PUBLIC_URL}/webhooks/sms/{gateway}"


def twilio_signature(url: str, body: bytes, token: str = TWILIO_TOKEN) -> str:
    """X-Twilio-Signature as Twilio computes it, by Twilio's own library."""
    params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return RequestValidator(token).compute_signature(url, params)


def android_headers(body: bytes, timestamp: int, key: str = ANDROID_KEY) -> dict[str, str]:
    """X-Signature and X-Timestamp as the Android app sends them."""
    signature = hmac.new(key.encode(), body + str(timestamp).encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Signature": signature, "X-Timestamp": str(timestamp)}


def generic_headers(body: bytes, secret: str = GENERIC_SECRET) -> dict[str, str]:
    """The generic gateway's signed headers."""
    return {"Content-Type": "application/json",
            "X-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


async def post(service: RunningService, gateway: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST a body to the gateway's webhook; return the status and the answer's text."""
    async with aiohttp.ClientSession() as http, http.post(
            f"{service.url}/webhooks/sms/{gateway}", data=body, headers=headers) as response:
        return response.status, await response.text()


async def post_twilio(service: RunningService, body: bytes, *, url: str | None = None,
                      token: str = TWILIO_TOKEN) -> tuple[int, str]:
    """POST a Twilio webhook signed for its public URL."""
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": twilio_signature(url or twilio_url(), body, token)}
    return await post(service, "twilio", body, headers)


async def post_android(service: RunningService, body: bytes, *, timestamp: int | None = None) -> tuple[int, str]:
    """POST an Android app webhook signed at the service's clock time (or at timestamp)."""
    if timestamp is None:
        timestamp = int(service.core.clock.now().timestamp())
    return await post(service, "android", body, android_headers(body, timestamp))


async def post_generic(service: RunningService, body: bytes) -> tuple[int, str]:
    """POST a signed generic-gateway webhook."""
    return await post(service, "nha-mang", body, generic_headers(body))


# ---------------------------------------------------------------------------- the fake operator

@dataclass
class Delivered:
    """One SMS the fake operator accepted."""

    api: str  # "twilio", "android" or "generic"
    to: str
    text: str
    sender: str | None
    request_id: str | None
    callback: str | None = None  # Twilio: where it reports the message's fate (StatusCallback)
    at: datetime | None = None  # Twilio: when it made the message (its list's date_created)
    queued: bool = False  # Twilio: still in its queue, not sent (no date_sent)


class FakeOperator:
    """The operator's side of all three gateways, on a free port of 127.0.0.1."""

    def __init__(self, clock: FrozenClock | None = None) -> None:
        self.clock = clock  # whose time Twilio's list gives (date_created); else the real time
        self.delivered: list[Delivered] = []
        self.script: list[int | str] = []
        self.slow_seconds = 1.5  # "slow": longer than the sender waits with send_timeout_seconds = 1
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._android_ids: set[str] = set()
        self._generic_keys: dict[str, str] = {}
        self.requested_ids: list[str] = []  # every generic request's id, a repeat included
        self.lookups = 0
        self.hold_in_queue = False  # Twilio keeps what it takes queued (as at one message a second)
        self.listed_too: list = []  # raw items Twilio's list shows after ours (for malformed ones)

    def fail_next(self, *answers: int | str) -> None:
        """The next requests get these answers (an HTTP status, or "slow": no answer in time)."""
        self.script.extend(answers)

    async def _scripted(self, made_at_once: bool = False) -> int | str | None:
        """The scripted answer for this request, if any. "slow": an operator that makes the
        message at once (Twilio: the Message resource exists, and its list shows it, from the
        moment the request is taken) only answers late; the others wait, then accept."""
        self.requests += 1
        if not self.script:
            return None
        answer = self.script.pop(0)
        if answer == "slow":
            if made_at_once:
                return "late"
            await asyncio.sleep(self.slow_seconds)  # then accepts, as a slow operator does
            return None
        return int(answer)

    @staticmethod
    def _basic(request: web.Request) -> tuple[str, str] | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password

    async def twilio(self, request: web.Request) -> web.Response:
        if request.match_info["sid"] != ACCOUNT_SID or self._basic(request) != (ACCOUNT_SID, TWILIO_TOKEN):
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        form = await request.post()
        status = await self._scripted(made_at_once=True)
        late, status = status == "late", (None if status == "late" else status)
        if status == 400:
            return web.json_response({"code": 21211, "message": f"The 'To' number {form['To']} is not a valid phone "
                                      "number.", "more_info": "https://www.twilio.com/docs/errors/21211",
                                      "status": 400}, status=400)
        if status is not None:
            return web.json_response({"code": 20500, "message": "Internal Server Error", "status": status},
                                     status=status)
        sid = "SM" + secrets.token_hex(16)
        self.delivered.append(Delivered("twilio", form["To"], form["Body"], form["From"], sid,
                                        form.get("StatusCallback"),
                                        self.clock.now() if self.clock else datetime.now(timezone.utc),
                                        self.hold_in_queue))
        if late:  # Twilio made the message when it took the request; only the answer is late
            await asyncio.sleep(self.slow_seconds)
        return web.json_response({"sid": sid, "status": "queued", "to": form["To"], "from": form["From"],
                                  "body": form["Body"], "account_sid": ACCOUNT_SID, "num_segments": "1"},
                                 status=201)

    async def twilio_list(self, request: web.Request) -> web.Response:
        """Twilio's message list, newest first, filtered by To, and by DateSent> as the
        documentation says: "messages sent on or after midnight" of that day, so none still
        queued. Times as Twilio writes them (RFC 2822)."""
        if request.match_info["sid"] != ACCOUNT_SID or self._basic(request) != (ACCOUNT_SID, TWILIO_TOKEN):
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        self.lookups += 1
        to, day = request.query.get("To"), request.query.get("DateSent>")
        found = [{"sid": d.request_id, "to": d.to, "from": d.sender, "body": d.text, "direction": "outbound-api",
                  "status": "queued" if d.queued else "sent", "date_created": format_datetime(d.at),
                  "date_sent": None if d.queued else format_datetime(d.at)}
                 for d in self.delivered if d.api == "twilio" and (to is None or d.to == to)
                 and (day is None or (not d.queued and f"{d.at:%Y-%m-%d}" >= day))]
        return web.json_response({"messages": [*reversed(found), *self.listed_too], "page": 0, "page_size": 50})

    async def android(self, request: web.Request) -> web.Response:
        if self._basic(request) != ("sms", ANDROID_PASSWORD):
            return web.json_response({"message": "Unauthorized"}, status=401)
        data = await request.json()
        kinds = [key for key in ("textMessage", "dataMessage", "message") if data.get(key) is not None]
        if len(kinds) != 1 or not data.get("phoneNumbers"):
            return web.json_response({"message": "Must specify exactly one of: textMessage, dataMessage, or "
                                                 "message"}, status=400)
        status = await self._scripted()
        if status is not None:
            return web.json_response({"message": "scripted failure"}, status=status)
        message_id = data.get("id") or secrets.token_urlsafe(16)
        if message_id in self._android_ids:
            return web.json_response({"message": "duplicate id"}, status=409)
        self._android_ids.add(message_id)
        self.delivered.append(Delivered("android", data["phoneNumbers"][0], data["textMessage"]["text"], None,
                                        message_id))
        return web.json_response({"id": message_id, "state": "Pending", "isEncrypted": False,
                                  "recipients": [{"phoneNumber": n, "state": "Pending"} for n in data["phoneNumbers"]]},
                                 status=202)

    async def generic(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = hmac.new(GENERIC_SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Signature", "")):
            return web.json_response({"error": "bad signature"}, status=401)
        data = json.loads(body)
        status = await self._scripted()
        if status is not None:
            return web.json_response({"error": "scripted failure"}, status=status)
        self.requested_ids.append(data["id"])
        # An operator that keeps idempotency keys answers a retry with the first answer.
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self._generic_keys:
            return web.json_response({"id": self._generic_keys[key]})
        self.delivered.append(Delivered("generic", data["to"], data["text"], data["from"], data["id"]))
        answer = f"op-{len(self.delivered)}"
        if key is not None:
            self._generic_keys[key] = answer
        return web.json_response({"id": answer})

    async def start(self) -> FakeOperator:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self.twilio)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages.json", self.twilio_list)
        app.router.add_post("/message", self.android)
        app.router.add_post("/send", self.generic)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def wait(self, count: int = 1, timeout: float = 10.0) -> list[Delivered]:
        """Wait until at least count messages arrived; return all that did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.delivered) < count and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert len(self.delivered) >= count, f"{len(self.delivered)} SMS arrived, expected {count}: {self.delivered}"
        return self.delivered


def gateways(operator_url: str, order: tuple[str, ...] = ("twilio", "android", "nha-mang")) -> list[dict]:
    """The three gateways, all sending to the fake operator, the first being the default."""
    known = {
        "twilio": {"name": "twilio", "kind": "twilio", "number": "+84241234567", "api_url": operator_url,
                   "secret_env": "FI_TEST_TWILIO_TOKEN", "account_sid": ACCOUNT_SID},
        "android": {"name": "android", "kind": "android", "number": "+84987654321", "api_url": operator_url,
                    "secret_env": "FI_TEST_ANDROID_KEY", "password_env": "FI_TEST_ANDROID_PASSWORD"},
        "nha-mang": {"name": "nha-mang", "kind": "generic", "number": "UBND.HN", "api_url": f"{operator_url}/send",
                     "secret_env": "FI_TEST_GENERIC_SECRET"},
    }
    return [known[name] for name in order]


@pytest.fixture
async def operator(clock) -> AsyncIterator[FakeOperator]:
    """The fake operator, started, on the test's clock."""
    fake = await FakeOperator(clock).start()
    yield fake
    await fake.stop()


@pytest.fixture
def sms_config(make_config, operator: FakeOperator, monkeypatch) -> Callable[..., Config]:
    """A configuration with the three gateways (secrets in the environment) and one officer."""

    def build(extra: dict | None = None, order: tuple[str, ...] = ("twilio", "android", "nha-mang")) -> Config:
        for name, value in SECRETS.items():
            monkeypatch.setenv(name, value)
        data = {"web": {"public_url": PUBLIC_URL}, "sms": {"gateways": gateways(operator.url, order)},
                "staff": [STAFF]}
        return make_config(merge(data, extra or {}), SECRETS)

    return build


@asynccontextmanager
async def running(config: Config, clock) -> AsyncIterator[RunningService]:
    """The real service with this configuration, on a free port, for the block."""
    service, runner = await start_service(config, clock=clock)
    try:
        yield service
    finally:
        await runner.cleanup()


@pytest.fixture
async def sms_service(sms_config, clock) -> AsyncIterator[RunningService]:
    """The service with the three gateways, Twilio first (the default for outgoing SMS)."""
    async with running(sms_config(), clock) as service:
        yield service


# ---------------------------------------------------------------------------- reading the store

async def inbound(core: Core) -> list[Message]:
    """The SMS stored, oldest first."""
    async with core.sessions() as session:
        return list((await session.scalars(select(Message).where(Message.channel == "sms", Message.direction == "in")
                                           .order_by(Message.id))).all())


async def complaints(core: Core) -> list[Complaint]:
    """The complaints, oldest first."""
    async with core.sessions() as session:
        return list((await session.scalars(select(Complaint).order_by(Complaint.id))).all())


async def outbox_rows(core: Core, channel: str = "sms") -> list[OutboxMessage]:
    """The outbox rows for a channel, oldest first."""
    async with core.sessions() as session:
        return list((await session.scalars(select(OutboxMessage).where(OutboxMessage.channel == channel)
                                           .order_by(OutboxMessage.id))).all())


async def row_when(core: Core, key_prefix: str, check: Callable[[OutboxMessage], bool],
                   timeout: float = 10.0) -> OutboxMessage:
    """Wait until the first SMS outbox row whose key starts with key_prefix passes check."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    rows: list[OutboxMessage] = []
    while loop.time() < deadline:
        rows = [row for row in await outbox_rows(core) if row.key.startswith(key_prefix)]
        if rows and check(rows[0]):
            return rows[0]
        await asyncio.sleep(0.02)
    found = [(row.key, row.status, row.attempts, row.last_error) for row in rows]
    raise AssertionError(f"no {key_prefix}* row as expected: {found}")


async def settled(core: Core, key_prefix: str, status: str, timeout: float = 10.0) -> OutboxMessage:
    """Wait until the SMS outbox row whose key starts with key_prefix has this status."""
    return await row_when(core, key_prefix, lambda row: row.status == status, timeout)


async def retrying(core: Core, key_prefix: str, timeout: float = 10.0) -> OutboxMessage:
    """Wait until the row was tried, failed for now, and waits for its next attempt."""
    return await row_when(core, key_prefix, lambda row: row.status == "queued" and row.attempts >= 1, timeout)
