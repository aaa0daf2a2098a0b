"""A fake of Zalo's servers for the tests: a real aiohttp app on 127.0.0.1 and a free port that
the Zalo channel talks HTTP to, as it would to openapi.zalo.me (OA API), oauth.zaloapp.com
(OAuth v4) and business.openapi.zalo.me (ZNS). Point all three base URLs at ``fake.url``.

It serves ``POST /v3.0/oa/message/cs`` (consultation message, header ``access_token``),
``GET /v2.0/oa/conversation?data={"user_id", "offset", "count"}`` (the OA's conversation with a
user, newest first: the messages it accepted from the OA and the texts the user sent here),
``POST /v4/oa/access_token`` (refresh: header ``secret_key``, form ``refresh_token``, ``app_id``,
``grant_type``), ``POST /message/template`` (ZNS, header ``access_token``) and ``GET /media/<name>``
(files a citizen "sent", so the channel can download attachments). It records every request and
answers as Zalo does: HTTP 200 and an envelope whose ``error`` is 0 or a negative code below.
It plays Zalo's side of the webhook too: events shaped like tests/fixtures/zalo/, signed as Zalo
signs them. tests/fixtures/zalo/README.md says where every shape and code comes from.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.clock import FrozenClock
from tests.conftest import MONDAY_MORNING

APP_ID = "4318726409871532817"
APP_SECRET = "kT3vQ9sWmZ1xR7pLbN4c"  # the app's secret key: header secret_key of the refresh call
OA_ID = "1180429937510628413"
OA_SECRET = "Hn8qWv2EzR5tYb1KmP0s"  # the OA secret key: signs webhook deliveries (not the app secret)
CITIZEN = "5816257339045276103"
CITIZEN_BY_APP = "7754010238826164951"
FIXTURES = Path(__file__).parent / "fixtures" / "zalo"

# Official Account API (developers.zalo.me/docs/official-account/phu-luc/ma-loi).
RATE_LIMITED, PARAM_INVALID, PARAM_TOO_LONG, OUT_OF_QUOTA = -32, -201, -210, -211
NOT_FOLLOWER, TOKEN_INVALID, TOKEN_EXPIRED, USER_BANNED = -213, -216, -220, -227
NO_INTERACTION_7_DAYS, NO_INTERACTION, USER_RESTRICTED = -230, -232, -244
# ZNS ("ZBS Template Message" since 2026): zalo.cloud/zns/guidelines/handle-error-code.
ZNS_PHONE_INVALID, ZNS_TEMPLATE_ID_INVALID, ZNS_TEMPLATE_DATA_EMPTY = -108, -109, -111
ZNS_TEMPLATE_DATA_INVALID, ZNS_PARAM_MISSING, ZNS_OUT_OF_QUOTA = -112, -1122, -115
ZNS_NO_ZALO_ACCOUNT, ZNS_TOKEN_INVALID, ZNS_DAILY_QUOTA = -118, -124, -144
# OAuth v4 (oauth.zaloapp.com): answered with HTTP 200 and error_name/error_description.
OAUTH_APP_ID_INVALID, OAUTH_SECRET_INVALID, OAUTH_REFRESH_INVALID, OAUTH_GRANT_INVALID = (
    -14002, -14004, -14014, -14018)

MESSAGES = {
    RATE_LIMITED: "Your application reached limit call api",
    PARAM_INVALID: "{} is invalid!",
    PARAM_TOO_LONG: "Parameter exceeds allowable limit",
    OUT_OF_QUOTA: "Out of quota",
    NOT_FOLLOWER: "User has not followed OA",
    TOKEN_INVALID: "Access token is invalid",
    TOKEN_EXPIRED: "access_token is expired or removed",
    USER_BANNED: "User is banned or has been inactive for more than 45 days",
    NO_INTERACTION_7_DAYS: "User has not interacted with the OA in the past 7 days",
    NO_INTERACTION: "User has not interacted with the OA, or the last interaction has expired",
    USER_RESTRICTED: "User has restricted this message type from your OA",
    ZNS_PHONE_INVALID: "Phone number invalid",
    ZNS_TEMPLATE_ID_INVALID: "Template ID invalid",
    ZNS_TEMPLATE_DATA_EMPTY: "Template data empty",
    ZNS_TEMPLATE_DATA_INVALID: "Template data invalid",
    ZNS_PARAM_MISSING: "{} is missing",
    ZNS_OUT_OF_QUOTA: "Out of quota",
    ZNS_NO_ZALO_ACCOUNT: "Zalo account not existed",
    ZNS_TOKEN_INVALID: "Access token invalid",
    ZNS_DAILY_QUOTA: "OA has exceeded daily quota",
    OAUTH_APP_ID_INVALID: "Invalid appId",
    OAUTH_SECRET_INVALID: "Invalid secret key",
    OAUTH_REFRESH_INVALID: "Invalid refresh token",
    OAUTH_GRANT_INVALID: "Invalid grant type",
}
OAUTH_DOC = "https://developers.zalo.me/docs/official-account/bat-dau/xac-thuc-va-uy-quyen-cho-ung-dung-new"


def fixture(name: str) -> dict:
    """A recorded webhook payload from tests/fixtures/zalo/."""
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def ms(moment: datetime) -> str:
    """A time as Zalo writes it in payloads: milliseconds since the epoch, as a string."""
    return str(int(moment.timestamp() * 1000))


def signature(app_id: str, body: bytes, timestamp: str, oa_secret: str) -> str:
    """Zalo's webhook MAC: plain SHA-256 (not HMAC) of app_id + raw body + timestamp + OA secret."""
    return hashlib.sha256(app_id.encode() + body + str(timestamp).encode() + oa_secret.encode()).hexdigest()


def signed_delivery(app_id: str, oa_secret: str, event: dict, *, retry: int = 0,
                    ascii_only: bool = False) -> tuple[bytes, dict[str, str]]:
    """One webhook POST as Zalo sends it: (raw body, headers). The event's app_id is set to
    ``app_id``; the timestamp signed is the body's. ``retry`` > 0 adds the num_retry header of a
    redelivery (same body, byte for byte)."""
    event = {**event, "app_id": app_id}
    body = json.dumps(event, ensure_ascii=ascii_only, separators=(",", ":")).encode()
    mac = signature(app_id, body, event["timestamp"], oa_secret)
    headers = {"Content-Type": "application/json", "X-ZEvent-Signature": f"mac={mac}"}
    if retry:
        headers["num_retry"] = str(retry)
    return body, headers


@dataclass
class Call:
    """One request made to the fake, and what it answered (None: an HTTP error or a hang)."""

    endpoint: str  # "cs", "conversation", "refresh", "zns" or "media"
    headers: dict[str, str]
    body: dict
    answer: dict | None = None

    @property
    def ok(self) -> bool:
        return self.answer is not None and self.answer.get("error", 0) == 0

    @property
    def user_id(self) -> str | None:
        return (self.body.get("recipient") or {}).get("user_id")

    @property
    def text(self) -> str:
        return (self.body.get("message") or {}).get("text") or ""


@dataclass
class Script:
    """A scripted misbehaviour for the next ``times`` calls of an endpoint (for one user/phone)."""

    endpoint: str
    times: int = 1
    code: int | None = None  # a Zalo error code in an HTTP 200 answer
    status: int | None = None  # an HTTP status instead (502 ...)
    hang: float | None = None  # hold the request this many seconds (then answer normally)
    lose: float | None = None  # take the request, then hold its answer this many seconds (a lost answer)
    target: str | None = None


@dataclass(repr=False)
class FakeZalo:
    """Zalo's OA API, OAuth and ZNS servers, as far as the Zalo channel uses them.

    The free-window model: a citizen's last interaction (any user_send_* or follow event built
    here, or ``interacted()``) opens a window. Per the current docs a consultation reply is
    refused past ``interaction_window`` (7 days, -230) and free within ``free_window`` (48 h,
    answered with a ``quota`` of type "reply"; later ones carry no quota: billed). ``reply_limit``
    (None, as documented since 2026-01-01; 8 for the old rule) refuses the next reply with -211.
    """

    clock: FrozenClock = field(default_factory=lambda: FrozenClock(MONDAY_MORNING))
    app_id: str = APP_ID
    app_secret: str = APP_SECRET
    oa_id: str = OA_ID
    oa_secret: str = OA_SECRET
    token_lifetime: timedelta = timedelta(hours=25)  # expires_in "90000"
    expired_token_code: int = TOKEN_EXPIRED  # what an expired or replaced token answers
    interaction_window: timedelta = timedelta(days=7)
    free_window: timedelta = timedelta(hours=48)
    reply_limit: int | None = None
    zns_daily_quota: int = 500
    calls: list[Call] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)
    refreshes: int = 0
    last_interaction: dict[str, datetime] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)  # cs replies since the last interaction
    blocked: dict[str, int] = field(default_factory=dict)  # user id -> the code sends to them get
    templates: dict[str, set[str]] = field(default_factory=dict)  # ZNS template id -> its params
    no_zalo: set[str] = field(default_factory=set)  # phones (84...) without a Zalo account
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    conversations: dict[str, list[dict]] = field(default_factory=dict)  # user id -> items, oldest first
    url: str = ""

    def __post_init__(self) -> None:
        self._retired: set[str] = set()
        self._hex = lambda n: secrets.token_hex(n // 2)
        self._issue()
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    # ---------------------------------------------------------------- server

    async def start(self) -> FakeZalo:
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v3.0/oa/message/cs", self._endpoint("cs", self._cs))
        app.router.add_get("/v2.0/oa/conversation", self._endpoint("conversation", self._conversation))
        app.router.add_post("/v4/oa/access_token", self._endpoint("refresh", self._refresh))
        app.router.add_post("/message/template", self._endpoint("zns", self._zns))
        app.router.add_get("/media/{name}", self._media)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        self._closing.set()  # a hanging request answers now
        await self._runner.cleanup()

    @property
    def now(self) -> datetime:
        return self.clock.now()

    @property
    def sent(self) -> list[Call]:
        """Consultation messages Zalo accepted."""
        return [c for c in self.calls if c.endpoint == "cs" and c.ok]

    @property
    def zns_sent(self) -> list[Call]:
        """ZNS messages Zalo accepted."""
        return [c for c in self.calls if c.endpoint == "zns" and c.ok]

    def _endpoint(self, name, handler):
        async def run(request: web.Request) -> web.Response:
            if request.method == "GET":
                try:
                    body = json.loads(request.query.get("data", ""))
                except ValueError:
                    body = None
            elif request.content_type == "application/json":
                try:
                    body = json.loads(await request.text())
                except ValueError:
                    body = None
            else:
                body = dict(await request.post())
            call = Call(name, dict(request.headers), body if isinstance(body, dict) else {})
            self.calls.append(call)
            script = self._scripted(call)
            if script and script.lose:
                call.answer = handler(call) if isinstance(body, dict) else self._error(name, PARAM_INVALID)
                try:
                    await asyncio.wait_for(self._closing.wait(), script.lose)
                except TimeoutError:
                    pass
                return web.json_response(call.answer)
            if script and script.hang:
                try:
                    await asyncio.wait_for(self._closing.wait(), script.hang)
                except TimeoutError:
                    pass
            if script and script.status:
                return web.Response(status=script.status, text=f"<html><h1>{script.status}</h1></html>",
                                    content_type="text/html")
            if script and script.code is not None:
                call.answer = self._error(name, script.code)
            else:
                call.answer = handler(call) if isinstance(body, dict) else self._error(name, PARAM_INVALID)
            return web.json_response(call.answer)
        return run

    def _scripted(self, call: Call) -> Script | None:
        target = call.user_id or call.body.get("user_id") or call.body.get("phone")
        for script in self.scripts:
            if script.endpoint == call.endpoint and script.times > 0 and script.target in (None, target):
                script.times -= 1
                return script
        return None

    @staticmethod
    def _error(endpoint: str, code: int, field_name: str = "data") -> dict:
        message = MESSAGES.get(code, "Unknown error").format(field_name)
        if endpoint == "refresh":
            return {"error_name": message, "error_reason": "", "ref_doc": OAUTH_DOC,
                    "error_description": message, "error": code}
        return {"error": code, "message": message}

    async def _media(self, request: web.Request) -> web.Response:
        self.calls.append(Call("media", dict(request.headers), {"name": request.match_info["name"]}))
        if request.match_info["name"] not in self.media:
            return web.Response(status=404)
        data, content_type = self.media[request.match_info["name"]]
        return web.Response(body=data, content_type=content_type)

    # ---------------------------------------------------------------- OAuth v4

    def _issue(self) -> None:
        self.access_token, self.refresh_token = secrets.token_urlsafe(96), secrets.token_urlsafe(96)
        self._expires_at = self.now + self.token_lifetime
        self._refresh_expires_at = self.now + timedelta(days=90)  # three months

    def _refresh(self, call: Call) -> dict:
        form = call.body
        if call.headers.get("secret_key") != self.app_secret:
            return self._error("refresh", OAUTH_SECRET_INVALID)
        if form.get("app_id") != self.app_id:
            return self._error("refresh", OAUTH_APP_ID_INVALID)
        if form.get("grant_type") != "refresh_token":
            return self._error("refresh", OAUTH_GRANT_INVALID)
        if form.get("refresh_token") != self.refresh_token or self.now >= self._refresh_expires_at:
            return self._error("refresh", OAUTH_REFRESH_INVALID)  # single use: a reused one is dead
        self.refreshes += 1
        self._retired.add(self.access_token)  # the old access token dies with the new pair
        self._issue()
        return {"access_token": self.access_token, "refresh_token": self.refresh_token,
                "expires_in": str(int(self.token_lifetime.total_seconds()))}

    def _token_error(self, call: Call, expired: int, invalid: int) -> int | None:
        token = call.headers.get("access_token")
        if token == self.access_token and self.now < self._expires_at:
            return None
        return expired if token == self.access_token or token in self._retired else invalid

    # ---------------------------------------------------------------- OA: consultation message

    def _cs(self, call: Call) -> dict:
        if (code := self._token_error(call, self.expired_token_code, TOKEN_INVALID)) is not None:
            return self._error("cs", code)
        user, message = call.user_id, call.body.get("message")
        if not user:
            return self._error("cs", PARAM_INVALID, "recipient")
        if not isinstance(message, dict) or (message.get("text") is None and not message.get("attachment")):
            return self._error("cs", PARAM_INVALID, "message")
        if len(message.get("text") or "") > 2000:
            return self._error("cs", PARAM_TOO_LONG)
        if message.get("attachment") and not _valid_attachment(message["attachment"]):
            return self._error("cs", PARAM_INVALID, "attachment")
        if user in self.blocked:
            return self._error("cs", self.blocked[user])
        last = self.last_interaction.get(user)
        if last is None:
            return self._error("cs", NO_INTERACTION)
        if self.now - last > self.interaction_window:
            return self._error("cs", NO_INTERACTION_7_DAYS)
        used = self.replies.get(user, 0)
        if self.reply_limit is not None and used >= self.reply_limit:
            return self._error("cs", OUT_OF_QUOTA)
        self.replies[user] = used + 1
        data = {"message_id": self._hex(20), "user_id": user, "sent_time": ms(self.now)}
        self._said(user, 0, data["message_id"], message.get("text") if message.get("text") is not None else "",
                   "text" if message.get("text") is not None else "photo")
        if self.now - last <= self.free_window:
            data["quota"] = {"quota_type": "reply"}
            if self.reply_limit is not None:
                data["quota"].update(remain=str(self.reply_limit - used - 1), total=str(self.reply_limit))
        return {"data": data, "error": 0, "message": "Success"}

    # ---------------------------------------------------------------- OA: a conversation's messages

    def _said(self, user: str, src: int, message_id: str, text: str, kind: str) -> None:
        """One message in the OA's conversation with a user (src 0: the OA sent it; 1: the user)."""
        oa, them = (self.oa_id, user) if src == 0 else (user, self.oa_id)
        self.conversations.setdefault(user, []).append({
            "src": src, "time": int(self.now.timestamp() * 1000), "type": kind, "message": text,
            "message_id": message_id, "from_id": oa, "to_id": them, "from_display_name": "", "to_display_name": ""})

    def _conversation(self, call: Call) -> dict:
        if (code := self._token_error(call, self.expired_token_code, TOKEN_INVALID)) is not None:
            return self._error("conversation", code)
        query = call.body
        user = str(query.get("user_id") or "")
        try:
            offset, count = int(query.get("offset", 0)), int(query.get("count", 10))
        except (TypeError, ValueError):
            return self._error("conversation", PARAM_INVALID, "offset")
        if not user:
            return self._error("conversation", PARAM_INVALID, "user_id")
        if count > 10 or count < 1 or offset < 0:
            return self._error("conversation", PARAM_TOO_LONG)
        newest_first = list(reversed(self.conversations.get(user, [])))
        return {"data": newest_first[offset:offset + count], "error": 0, "message": "Success"}

    # ---------------------------------------------------------------- ZNS

    def add_template(self, template_id: str, *params: str) -> None:
        """Make a ZNS template approved, with exactly these parameters."""
        self.templates[str(template_id)] = set(params)

    def _zns(self, call: Call) -> dict:
        if self._token_error(call, ZNS_TOKEN_INVALID, ZNS_TOKEN_INVALID) is not None:
            return self._error("zns", ZNS_TOKEN_INVALID)
        body = call.body
        phone = zns_phone(body.get("phone"))
        template_id, data = str(body.get("template_id", "")), body.get("template_data")
        if phone is None:
            return self._error("zns", ZNS_PHONE_INVALID)
        if template_id not in self.templates:
            return self._error("zns", ZNS_TEMPLATE_ID_INVALID)
        if not isinstance(data, dict) or not data:
            return self._error("zns", ZNS_TEMPLATE_DATA_EMPTY)
        if missing := sorted(self.templates[template_id] - data.keys()):
            return self._error("zns", ZNS_PARAM_MISSING, missing[0])
        if set(data) - self.templates[template_id]:
            return self._error("zns", ZNS_TEMPLATE_DATA_INVALID)
        if phone in self.no_zalo:
            return self._error("zns", ZNS_NO_ZALO_ACCOUNT)
        used = len(self.zns_sent)
        if used >= self.zns_daily_quota:
            return self._error("zns", ZNS_DAILY_QUOTA)
        quota = {"dailyQuota": str(self.zns_daily_quota), "remainingQuota": str(self.zns_daily_quota - used - 1)}
        return {"error": 0, "message": "Success", "data": {
            "msg_id": self._hex(32), "sent_time": ms(self.now), "sending_mode": "1", "quota": quota}}

    # ---------------------------------------------------------------- scripting hooks

    def fail(self, endpoint: str, code: int, *, times: int = 1, target: str | None = None) -> None:
        """The next ``times`` calls of "cs", "conversation", "zns" or "refresh" (to one user id or phone) answer
        this Zalo error code (HTTP 200, Zalo's envelope)."""
        self.scripts.append(Script(endpoint, times, code=code, target=target))

    def fail_http(self, endpoint: str, status: int = 502, *, times: int = 1) -> None:
        """The next ``times`` calls of an endpoint answer an HTTP error (a proxy's HTML page)."""
        self.scripts.append(Script(endpoint, times, status=status))

    def hang(self, endpoint: str, seconds: float = 30, *, times: int = 1) -> None:
        """Hold the next ``times`` calls of an endpoint this long before answering (for timeouts)."""
        self.scripts.append(Script(endpoint, times, hang=seconds))

    def lose_answer(self, endpoint: str, seconds: float = 30, *, times: int = 1) -> None:
        """Take the next ``times`` calls of an endpoint (a message is sent), then hold their
        answers this long: the client times out not knowing that Zalo took them."""
        self.scripts.append(Script(endpoint, times, lose=seconds))

    def expire_access_token(self) -> None:
        """The current access token expires now (its refresh token still works, once)."""
        self._expires_at = self.now

    def interacted(self, user: str, at: datetime | None = None) -> None:
        """The citizen interacted with the OA (at a given time): a new window, the count restarts."""
        self.last_interaction[user] = at or self.now
        self.replies[user] = 0

    # ---------------------------------------------------------------- Zalo's side of the webhook

    def add_media(self, data: bytes, name: str, content_type: str = "application/octet-stream") -> str:
        """Serve a file the citizen sent; returns its URL for an attachment payload."""
        self.media[name] = (data, content_type)
        return f"{self.url}/media/{name}"

    def by_app(self, user: str) -> str:
        return CITIZEN_BY_APP if user == CITIZEN else str(int(hashlib.sha256(user.encode()).hexdigest(), 16))[:19]

    def event(self, name: str, user: str = CITIZEN, *, text: str | None = None,
              attachments: list[dict] | None = None, msg_id: str | None = None, at: datetime | None = None) -> dict:
        """A user_send_* event as Zalo posts it (shape of fixtures/zalo/user_send_*.json); the
        citizen's interaction is noted for the free window."""
        at = at or self.now
        message = {} if text is None else {"text": text}
        message["msg_id"] = msg_id or self._hex(20)
        if attachments:
            message["attachments"] = attachments
        self.interacted(user, at)
        if text is not None:
            self._said(user, 1, message["msg_id"], text, "text")
        return {"app_id": self.app_id, "sender": {"id": user}, "user_id_by_app": self.by_app(user),
                "recipient": {"id": self.oa_id}, "event_name": name, "message": message, "timestamp": ms(at)}

    def text(self, user: str, text: str, **kw) -> dict:
        return self.event("user_send_text", user, text=text, **kw)

    def images(self, user: str, *images: bytes, text: str | None = None, **kw) -> dict:
        urls = [self.add_media(data, f"{self._hex(20)}.jpg", "image/jpeg") for data in images]
        return self.event("user_send_image", user, text=text, **kw,
                          attachments=[{"payload": {"thumbnail": u, "url": u}, "type": "image"} for u in urls])

    def file(self, user: str, data: bytes, name: str, **kw) -> dict:
        url = self.add_media(data, name, "application/pdf" if name.endswith(".pdf") else "application/octet-stream")
        payload = {"size": str(len(data)), "name": name, "checksum": hashlib.md5(data).hexdigest(),
                   "type": name.rsplit(".", 1)[-1], "url": url}
        return self.event("user_send_file", user, attachments=[{"payload": payload, "type": "file"}], **kw)

    def location(self, user: str, latitude: float, longitude: float, **kw) -> dict:
        coordinates = {"latitude": str(latitude), "longitude": str(longitude)}
        return self.event("user_send_location", user, **kw,
                          attachments=[{"payload": {"coordinates": coordinates}, "type": "location"}])

    def sticker(self, user: str, sticker_id: str = "21479", **kw) -> dict:
        url = f"https://zalo-api.zadn.vn/api/emoticon/sticker/webpc?eid={sticker_id}&size=130"
        return self.event("user_send_sticker", user, **kw,
                          attachments=[{"payload": {"id": sticker_id, "url": url}, "type": "sticker"}])

    def link(self, user: str, url: str, description: str = "", **kw) -> dict:
        payload = {"thumbnail": f"{url}/thumb.jpg", "description": description, "url": url}
        return self.event("user_send_link", user, text=url, attachments=[{"payload": payload, "type": "link"}], **kw)

    def audio(self, user: str, data: bytes = b"#!AMR\n", **kw) -> dict:
        url = self.add_media(data, f"{self._hex(20)}.amr", "audio/amr")
        return self.event("user_send_audio", user, attachments=[{"payload": {"url": url}, "type": "audio"}], **kw)

    def video(self, user: str, data: bytes, description: str = "", **kw) -> dict:
        url = self.add_media(data, f"{self._hex(20)}.mp4", "video/mp4")
        payload = {"url": url, "thumbnail": self.add_media(b"", f"{self._hex(20)}.jpg", "image/jpeg"),
                   "description": description}
        return self.event("user_send_video", user, attachments=[{"payload": payload, "type": "video"}], **kw)

    def follow(self, user: str = CITIZEN, *, unfollow: bool = False, at: datetime | None = None) -> dict:
        """A follow (or unfollow) event: the user is under ``follower``, the OA under ``oa_id``."""
        at = at or self.now
        if not unfollow:
            self.interacted(user, at)
        return {"oa_id": self.oa_id, "follower": {"id": user}, "user_id_by_app": self.by_app(user),
                "event_name": "unfollow" if unfollow else "follow", "source": "oa_profile",
                "app_id": self.app_id, "timestamp": ms(at)}

    def seen(self, user: str, *msg_ids: str) -> dict:
        """user_seen_message: sender is the OA, recipient the user, message.msg_ids a list."""
        return {"app_id": self.app_id, "sender": {"id": self.oa_id}, "user_id_by_app": self.by_app(user),
                "recipient": {"id": user}, "event_name": "user_seen_message",
                "message": {"msg_ids": list(msg_ids)}, "timestamp": ms(self.now)}

    async def post(self, webhook_url: str, event: dict, *, retry: int = 0, oa_secret: str | None = None,
                   headers: dict[str, str] | None = None) -> int:
        """POST a signed event to the service's webhook as Zalo does; returns the HTTP status."""
        body, signed = signed_delivery(self.app_id, oa_secret or self.oa_secret, event, retry=retry)
        async with aiohttp.ClientSession() as http, \
                http.post(webhook_url, data=body, headers={**signed, **(headers or {})}) as response:
            return response.status


def zns_phone(phone) -> str | None:
    """A Vietnamese mobile number in ZNS's 84xxxxxxxxx form, from 84…, 0… or bare nine digits."""
    digits = re.sub(r"\D", "", str(phone or ""))
    national = digits[2:] if len(digits) == 11 and digits.startswith("84") else (
        digits[1:] if len(digits) == 10 and digits.startswith("0") else digits)
    return f"84{national}" if re.fullmatch(r"[35789]\d{8}", national) else None


def _valid_attachment(attachment: dict) -> bool:
    """An image by template "media" (url or attachment_id) or a file by upload token."""
    payload = attachment.get("payload") or {}
    if attachment.get("type") == "file":
        return bool(payload.get("token"))
    elements = payload.get("elements") or []
    return (attachment.get("type") == "template" and payload.get("template_type") == "media"
            and len(elements) == 1 and elements[0].get("media_type") in ("image", "gif")
            and bool(elements[0].get("url") or elements[0].get("attachment_id")))


@pytest.fixture
async def fake_zalo(clock) -> FakeZalo:
    """The fake Zalo servers on a free port, on the test's frozen clock."""
    fake = await FakeZalo(clock=clock).start()
    yield fake
    await fake.stop()
