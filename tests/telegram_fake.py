"""A fake Telegram Bot API server for the tests: a real aiohttp app on a free port that
python-telegram-bot talks HTTP to, as it would to api.telegram.org.

It serves ``POST {base}/bot<token>/<method>`` for the methods the service calls (getMe,
getUpdates, setWebhook, deleteWebhook, sendMessage, sendPhoto, sendDocument, getFile,
answerCallbackQuery, editMessageText) and ``GET {base}/file/bot<token>/<path>``; reads the
form-encoded (or multipart) bodies PTB sends; records every call; and answers as Telegram
does: the Bot API's JSON envelope, 401 for a wrong token, 403 for a chat that never
started the bot or blocked it, 429 with ``retry_after`` when told to. It plays Telegram's
side of updates too: builds them from the recorded payloads in tests/fixtures/telegram/,
hands them out through getUpdates, or posts them to the webhook it was given, with the
secret header.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import RunningService, merge, start_service

TOKEN = "7012345678:AAFakeTokenForTests_abcdefghijklmnop"
BOT_ID = 7012345678
BOT_USERNAME = "phananh_hanoi_bot"
TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
SECRET_ENV = "TELEGRAM_WEBHOOK_SECRET"
WEBHOOK_SECRET = "s3cret-Webhook_token-42"
# Plain http: the web-form tests post over http, and an https address would make the CSRF cookie Secure.
PUBLIC_URL = "http://phananh.example.vn"
FIXTURES = Path(__file__).parent / "fixtures" / "telegram"
START_DATE = 1793581200  # 2026-11-02 08:00 in Hà Nội, the tests' frozen Monday

CITIZEN = 1001
CITIZEN_EN = 1002
OFFICER = 2001  # agent of the reception desk (the default unit)
HEAD = 2002  # head of the reception desk
OTHER_OFFICER = 3001  # agent of the urban management office
UNIT_GROUP = -100500  # the urban management office's group chat

UNITS = [{"slug": "tiep-nhan", "name": "Bộ phận tiếp nhận", "name_en": "Reception desk"},
         {"slug": "quan-ly-do-thi", "name": "Phòng Quản lý đô thị", "name_en": "Urban management office"}]
STAFF = [
    {"slug": "nguyen-van-an", "name": "Nguyễn Văn An", "unit": "tiep-nhan", "role": "agent",
     "telegram_chat_id": OFFICER},
    {"slug": "le-thi-hoa", "name": "Lê Thị Hoa", "unit": "tiep-nhan", "role": "head", "telegram_chat_id": HEAD},
    {"slug": "tran-van-binh", "name": "Trần Văn Bình", "unit": "quan-ly-do-thi", "role": "agent",
     "telegram_chat_id": OTHER_OFFICER},
]
PEOPLE = {
    CITIZEN: {"id": CITIZEN, "is_bot": False, "first_name": "Minh", "last_name": "Phạm", "language_code": "vi"},
    CITIZEN_EN: {"id": CITIZEN_EN, "is_bot": False, "first_name": "Anna", "language_code": "en"},
    OFFICER: {"id": OFFICER, "is_bot": False, "first_name": "An", "last_name": "Nguyễn", "language_code": "vi"},
    HEAD: {"id": HEAD, "is_bot": False, "first_name": "Hoa", "last_name": "Lê", "language_code": "vi"},
    OTHER_OFFICER: {"id": OTHER_OFFICER, "is_bot": False, "first_name": "Bình", "language_code": "vi"},
}
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "Phản ánh Hà Nội", "username": BOT_USERNAME}
# A 1x1 JPEG, as a citizen's phone would upload a (much larger) photo.
JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f"
    "141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b08000100010101"
    "1100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b5100002010303020403050504"
    "040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a2526"
    "2728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a83848586878889"
    "8a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4"
    "e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f00fbd3ffd9")


def fixture(name: str) -> dict:
    """A recorded Bot API update from tests/fixtures/telegram/."""
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


@dataclass
class Call:
    """One request the bot made to the fake Bot API."""

    method: str
    params: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)
    result: dict | None = None  # the message a send created, as Telegram keeps it

    def json(self, name: str):
        """A parameter PTB sent JSON-encoded (reply_markup, allowed_updates)."""
        return json.loads(self.params[name]) if name in self.params else None

    @property
    def chat_id(self) -> int | None:
        return int(self.params["chat_id"]) if "chat_id" in self.params else None

    @property
    def text(self) -> str:
        return self.params.get("text") or self.params.get("caption") or ""

    def buttons(self) -> list[tuple[str, str]]:
        """The inline buttons sent with the message, as (label, callback data)."""
        markup = self.json("reply_markup") or {}
        return [(b["text"], b.get("callback_data", "")) for row in markup.get("inline_keyboard", []) for b in row]


@dataclass
class Failure:
    """A scripted error answer."""

    method: str
    status: int
    description: str
    retry_after: int | None = None
    chat_id: int | None = None
    times: int = 1


class FakeBotApi:
    """Telegram's Bot API, as far as the service uses it."""

    def __init__(self, token: str = TOKEN):
        self.token = token
        self.calls: list[Call] = []
        self.failures: list[Failure] = []
        self.known_chats: set[int] = set()
        self.blocked: set[int] = set()
        self.files: dict[str, tuple[bytes, str]] = {}
        self.messages: dict[tuple[int, int], dict] = {}
        self.webhook: dict[str, str] = {}
        self.deliver_to: str | None = None  # where the webhook's host really is (the test service)
        self._updates: list[dict] = []
        self._update_ids = itertools.count(50001)
        self._message_ids: dict[int, itertools.count] = {}
        self._file_ids = itertools.count(1)
        self._callback_ids = itertools.count(900001)
        self._changed = asyncio.Condition()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---------------------------------------------------------------- server

    async def start(self) -> FakeBotApi:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        async with self._changed:
            self._closing = True  # a long poll still waiting answers now
            self._changed.notify_all()
        await self._runner.cleanup()

    @property
    def api_base_url(self) -> str:
        return f"{self.url}/bot"

    @staticmethod
    def _ok(result) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
        body = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return web.json_response(body, status=status)

    async def _method(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params: dict[str, str] = {}
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (await request.json()).items()}
        elif request.can_read_body:
            for name, value in (await request.post()).items():
                if isinstance(value, str):
                    params[name] = value
                else:
                    files[name] = value.file.read()
        call = Call(method, params, files)
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        failure = self._scripted(call)
        if failure is not None:
            return failure
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return self._error(404, "Not Found")
        return await handler(call)

    def _scripted(self, call: Call) -> web.Response | None:
        for failure in self.failures:
            if failure.method == call.method and failure.times > 0 and failure.chat_id in (None, call.chat_id):
                failure.times -= 1
                return self._error(failure.status, failure.description, failure.retry_after)
        if call.chat_id is not None and call.method.startswith("send"):
            if call.chat_id in self.blocked:
                return self._error(403, "Forbidden: bot was blocked by the user")
            if call.chat_id not in self.known_chats:
                return self._error(403, "Forbidden: bot can't initiate conversation with a user")
        return None

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        for data, path in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)

    # ---------------------------------------------------------------- Bot API methods

    async def _api_getMe(self, call: Call) -> web.Response:
        return self._ok(dict(BOT_USER, can_join_groups=True, can_read_all_group_messages=False,
                             supports_inline_queries=False))

    async def _api_deleteWebhook(self, call: Call) -> web.Response:
        self.webhook = {}
        return self._ok(True)

    async def _api_setWebhook(self, call: Call) -> web.Response:
        self.webhook = {"url": call.params["url"], "secret_token": call.params.get("secret_token", "")}
        return self._ok(True)

    async def _api_getUpdates(self, call: Call) -> web.Response:
        if self.webhook:
            return self._error(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(call.params.get("offset") or 0)
        timeout = float(call.params.get("timeout") or 0)
        async with self._changed:
            # Telegram forgets updates below the offset: the client has confirmed them.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if not self._updates and timeout:
                try:
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(self._updates) or self._closing),
                                           timeout)
                except TimeoutError:
                    pass
            return self._ok(list(self._updates))

    def _chat(self, chat_id: int) -> dict:
        if chat_id > 0:
            person = PEOPLE.get(chat_id, {"first_name": "Người dân"})
            return {"id": chat_id, "type": "private", "first_name": person["first_name"]}
        return {"id": chat_id, "type": "supergroup" if str(chat_id).startswith("-100") else "group",
                "title": "Nhóm cán bộ"}

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _bot_message(self, call: Call, **content) -> dict:
        chat_id = call.chat_id
        message = {"message_id": self._next_message_id(chat_id), "date": START_DATE, "chat": self._chat(chat_id),
                   "from": BOT_USER, **content}
        if (call.json("reply_markup") or {}).get("inline_keyboard"):
            # Telegram shows only inline keyboards in the message; a ForceReply is not kept.
            message["reply_markup"] = call.json("reply_markup")
        self.messages[(chat_id, message["message_id"])] = message
        call.result = message
        return message

    async def _api_sendMessage(self, call: Call) -> web.Response:
        if not call.params.get("text"):
            return self._error(400, "Bad Request: message text is empty")
        if len(call.params["text"]) > 4096:
            return self._error(400, "Bad Request: message is too long")
        return self._ok(self._bot_message(call, text=call.params["text"]))

    def _stored_file(self, data: bytes, prefix: str) -> dict:
        number = next(self._file_ids)
        file_id = f"AgAC-{prefix}-{number}"
        self.files[file_id] = (data, f"{prefix}s/file_{number}.jpg")
        return {"file_id": file_id, "file_unique_id": f"uniq{number}", "file_size": len(data)}

    def _upload(self, call: Call, name: str) -> dict | None:
        if name in call.files:
            return self._stored_file(call.files[name], name)
        if call.params.get(name) in self.files:  # sent again by file id
            data, _ = self.files[call.params[name]]
            return {"file_id": call.params[name], "file_unique_id": "again", "file_size": len(data)}
        return None

    async def _api_sendPhoto(self, call: Call) -> web.Response:
        photo = self._upload(call, "photo")
        if photo is None:
            return self._error(400, "Bad Request: wrong file identifier/HTTP URL specified")
        return self._ok(self._bot_message(call, photo=[dict(photo, width=1, height=1)],
                                          caption=call.params.get("caption", "")))

    async def _api_sendDocument(self, call: Call) -> web.Response:
        document = self._upload(call, "document")
        if document is None:
            return self._error(400, "Bad Request: wrong file identifier/HTTP URL specified")
        return self._ok(self._bot_message(call, document=document, caption=call.params.get("caption", "")))

    async def _api_getFile(self, call: Call) -> web.Response:
        file_id = call.params.get("file_id")
        if file_id not in self.files:
            return self._error(400, "Bad Request: invalid file_id")
        data, path = self.files[file_id]
        return self._ok({"file_id": file_id, "file_unique_id": f"u-{file_id}", "file_size": len(data),
                         "file_path": path})

    async def _api_answerCallbackQuery(self, call: Call) -> web.Response:
        return self._ok(True)

    async def _api_editMessageText(self, call: Call) -> web.Response:
        stored = self.messages.get((call.chat_id, int(call.params.get("message_id") or 0)))
        if stored is None:
            return self._error(400, "Bad Request: message to edit not found")
        stored["text"] = call.params["text"]
        stored.pop("reply_markup", None)
        if (call.json("reply_markup") or {}).get("inline_keyboard"):
            stored["reply_markup"] = call.json("reply_markup")
        return self._ok(dict(stored, edit_date=START_DATE))

    # ---------------------------------------------------------------- Telegram's side of updates

    def user(self, chat_id: int) -> dict:
        return dict(PEOPLE.get(chat_id, {"id": chat_id, "is_bot": False, "first_name": "Khách"}))

    def message(self, chat_id: int, text: str | None = None, *, sender: int | None = None,
                reply_to: dict | None = None, template: str | None = None, **content) -> dict:
        """An update carrying a new message in a chat (a private chat unless chat_id < 0)."""
        self.known_chats.add(chat_id)
        message = fixture(template)["message"] if template else {}
        message.update(message_id=self._next_message_id(chat_id), date=START_DATE, chat=self._chat(chat_id),
                       **{"from": self.user(sender or chat_id)})
        if text is not None:
            message["text"] = text
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        message.update(content)
        return {"update_id": next(self._update_ids), "message": message}

    def photo_message(self, chat_id: int, caption: str | None = None, data: bytes = JPEG) -> dict:
        """A message with a photo (in the sizes Telegram makes), stored for getFile."""
        small = self._stored_file(data[:64], "photo")
        large = self._stored_file(data, "photo")
        content = {"photo": [dict(small, width=90, height=90), dict(large, width=1280, height=960)]}
        if caption is not None:
            content["caption"] = caption
        return self.message(chat_id, **content)

    def edited(self, original: dict, text: str) -> dict:
        """An update saying a message was edited."""
        message = dict(copy.deepcopy(original["message"]), text=text, edit_date=START_DATE + 60)
        return {"update_id": next(self._update_ids), "edited_message": message}

    def press(self, chat_id: int, message: dict, data: str, *, sender: int | None = None,
              check: bool = True) -> dict:
        """An update for a press on an inline button of a message the bot sent."""
        if check:
            offered = [b.get("callback_data") for row in message.get("reply_markup", {}).get("inline_keyboard", [])
                       for b in row]
            assert data in offered, f"no button {data!r} on that message: {offered}"
        return {"update_id": next(self._update_ids), "callback_query": {
            "id": str(next(self._callback_ids)), "from": self.user(sender or chat_id),
            "chat_instance": f"ci{chat_id}", "data": data, "message": message}}

    def added_to_group(self, chat_id: int, by: int) -> dict:
        """An update saying someone added the bot to a group."""
        template = fixture("my_chat_member_added")
        change = template["my_chat_member"]
        change.update(chat=self._chat(chat_id), **{"from": self.user(by)}, date=START_DATE)
        change["new_chat_member"]["user"] = BOT_USER
        change["old_chat_member"]["user"] = BOT_USER
        return {"update_id": next(self._update_ids), "my_chat_member": change}

    def sent(self, chat_id: int, message_id: int) -> dict:
        """A message the bot sent, as Telegram keeps it (for replies and button presses)."""
        return self.messages[(chat_id, message_id)]

    async def push(self, update: dict) -> None:
        """Queue an update for the bot's next getUpdates (polling mode)."""
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()

    async def post(self, update: dict | bytes, *, secret: str | None = None) -> int:
        """POST an update to the webhook as Telegram does; return the HTTP status."""
        url = self.deliver_to + urlsplit(self.webhook["url"]).path
        headers = {"Content-Type": "application/json"}
        secret = self.webhook.get("secret_token") if secret is None else secret
        if secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        body = update if isinstance(update, bytes) else json.dumps(update, ensure_ascii=False).encode()
        async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as response:
            return response.status

    async def deliver(self, update: dict) -> None:
        """Hand an update to the bot: by webhook when one is set (expecting 200), else by getUpdates."""
        if self.webhook:
            assert await self.post(update) == 200
        else:
            await self.push(update)

    # ---------------------------------------------------------------- what the bot did

    def fail(self, method: str, status: int, description: str = "", *, retry_after: int | None = None,
             chat_id: int | None = None, times: int = 1) -> None:
        """Answer the next ``times`` calls of a method (for one chat) with an error."""
        defaults = {429: "Too Many Requests: retry after", 403: "Forbidden: bot was blocked by the user",
                    400: "Bad Request", 502: "Bad Gateway"}
        self.failures.append(Failure(method, status, description or defaults.get(status, "Error"), retry_after,
                                     chat_id, times))

    def mark(self) -> int:
        """A point in the call record to wait from."""
        return len(self.calls)

    def find(self, method: str, chat_id: int | None = None, after: int = 0,
             where: Callable[[Call], bool] | None = None) -> list[Call]:
        """Recorded calls of a method (to a chat, after a mark, matching a test)."""
        return [c for c in self.calls[after:] if c.method == method and (chat_id is None or c.chat_id == chat_id)
                and (where is None or where(c))]

    async def wait_for(self, method: str, chat_id: int | None = None, after: int = 0, *,
                       contains: str | None = None, where: Callable[[Call], bool] | None = None,
                       timeout: float = 15) -> Call:
        """The first call of a method (to a chat, after a mark, with a text) once it is made."""
        def match() -> list[Call]:
            return self.find(method, chat_id, after,
                             lambda c: (contains is None or contains in c.text) and (where is None or where(c)))

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: bool(match())), timeout)
            except TimeoutError:
                seen = [(c.method, c.chat_id, c.text[:80]) for c in self.calls[after:] if c.method != "getUpdates"]
                raise AssertionError(f"no {method} to {chat_id} containing {contains!r}; calls: {seen}") from None
            return match()[0]

    async def pressed(self, update: dict, timeout: float = 15) -> Call:
        """Deliver a button press (``press``) and return the bot's answer to that press, found
        by its callback query's id: another press's answer may come later than a test's mark
        (the citizen's Send is answered once intake has committed, and under load that was
        after the officer's notification)."""
        await self.deliver(update)
        query = update["callback_query"]["id"]
        return await self.wait_for("answerCallbackQuery", where=lambda c: c.params.get("callback_query_id") == query,
                                   timeout=timeout)

    def message_of(self, call: Call) -> dict:
        """The message a recorded send created (for replying to it or pressing its buttons)."""
        assert call.result is not None, f"{call.method} created no message"
        return call.result


async def eventually(check: Callable[[], Awaitable[object]], timeout: float = 15) -> object:
    """Wait until an async check gives something truthy (the store records a send just after it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still {result!r} after {timeout} s")
        await asyncio.sleep(0.02)


# -------------------------------------------------------------------- fixtures

def telegram_overrides(api: FakeBotApi, mode: str = "polling") -> dict:
    """Configuration for a service whose Telegram bot talks to the fake."""
    telegram = {"enabled": True, "token_env": TOKEN_ENV, "mode": mode, "api_base_url": api.api_base_url}
    if mode == "webhook":
        telegram["webhook_secret_env"] = SECRET_ENV
    return {"telegram": telegram, "units": UNITS, "staff": STAFF,
            "web": {"public_url": PUBLIC_URL}}


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeBotApi]:
    """The fake Bot API on a free port."""
    api = await FakeBotApi().start()
    yield api
    await api.stop()


@pytest.fixture
def bot_env(monkeypatch) -> dict[str, str]:
    """The secrets in the environment, where the service reads them."""
    environ = {TOKEN_ENV: TOKEN, SECRET_ENV: WEBHOOK_SECRET}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return environ


@dataclass
class BotWorld:
    """The running service with its Telegram bot, and the fake Telegram it talks to."""

    service: RunningService
    api: FakeBotApi

    @property
    def core(self):
        return self.service.core


@pytest.fixture
async def start_bot(make_config, fake_api, bot_env, clock):
    """Start the service in polling or webhook mode (extra config merged in); stopped after the test."""
    runners = []

    async def start(mode: str = "polling", extra: dict | None = None) -> BotWorld:
        config = make_config(merge(telegram_overrides(fake_api, mode), extra or {}), bot_env)
        running, runner = await start_service(config, clock=clock)
        runners.append(runner)
        fake_api.deliver_to = running.url
        fake_api.known_chats.update({OFFICER, HEAD, OTHER_OFFICER})  # the staff have started the bot
        return BotWorld(running, fake_api)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def bot(start_bot) -> AsyncIterator[BotWorld]:
    """The service with its bot polling the fake Bot API."""
    world = await start_bot("polling")
    yield world


@pytest.fixture
async def webhook_bot(start_bot) -> AsyncIterator[BotWorld]:
    """The service with its bot on a webhook the fake Bot API posts to."""
    world = await start_bot("webhook")
    yield world
