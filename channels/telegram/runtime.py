"""The python-telegram-bot Application inside the service's event loop: building it, starting
and stopping it, receiving updates (long polling, or the webhook route), and routing each
update to the citizen or the staff side.

The Application is initialised and started, never ``run_polling``: that would take over the
loop the web server, the dispatcher and the scheduler share. In webhook mode an update is
processed inside its POST and answered 200 only after what it caused is committed; when
handling fails the answer is 500 and Telegram delivers it again (dedupe makes that safe).
Telegram being unreachable at start does not stop the service: it keeps trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator

from aiohttp import web
from telegram import Message, Update, User
from telegram.error import Conflict, InvalidToken, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatMemberHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.port import Port
from channels.telegram import citizen, staff
from channels.telegram.common import Command, answer_button, log, parse_command, say, text
from channels.telegram.config import TelegramConfig
from channels.telegram.sender import FloodAwareRateLimiter, TelegramSender
from contract.results import Officer
from contract.schema import secret

WEBHOOK_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
POLL_TIMEOUT_SECONDS = 10
RETRY_START_MAX_SECONDS = 300.0
# Update ids answered lately, per process: Telegram sends an update again when our answer was
# slow; the store's dedupe covers the rest, across processes.
RECENT_UPDATES = 1000


def quiet_http_loggers() -> None:
    """Keep the bot token out of the logs: httpx logs every request URL, and the token is in it."""
    for name in ("httpx", "httpcore", "telegram"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def file_base_url(api_base_url: str) -> str:
    """Where the Bot API serves files: ``.../bot`` becomes ``.../file/bot``."""
    if "{token}" in api_base_url:
        return api_base_url.replace("/bot{token}", "/file/bot{token}")
    return api_base_url.removesuffix("/bot") + "/file/bot"


class TelegramChannel:
    """One process's Telegram bot: the Application, its sender and its webhook."""

    def __init__(self, port: Port, config: TelegramConfig, token: str, primary: bool = True):
        self.port = port
        self.config = config
        self.webhook_mode = self.config.mode == "webhook"
        self.primary = primary  # polls, or registers the webhook (serve --workers N: worker 0 only)
        self.ready = asyncio.Event()
        self.citizens = citizen.CitizenDesk(port)
        self.staff = staff.StaffDesk(port)
        self._failed: set[int] = set()
        self._in_flight: set[int] = set()
        self._recent: OrderedDict[int, None] = OrderedDict()
        self._secret = secret(self.config.webhook_secret_env) if self.webhook_mode else None
        builder = (ApplicationBuilder().token(token).base_url(self.config.api_base_url)
                   .base_file_url(file_base_url(self.config.api_base_url))
                   .rate_limiter(FloodAwareRateLimiter())
                   .job_queue(None))  # the service's scheduler does the timed work
        if self.webhook_mode or not primary:
            builder = builder.updater(None)
        self.application: Application = builder.build()
        self.sender = TelegramSender(port, self.application.bot, token, self.ready)
        self.application.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self.on_message))
        self.application.add_handler(MessageHandler(filters.UpdateType.EDITED_MESSAGE, self.on_edited))
        self.application.add_handler(CallbackQueryHandler(self.on_button))
        self.application.add_handler(ChatMemberHandler(self.on_membership, ChatMemberHandler.MY_CHAT_MEMBER))
        self.application.add_error_handler(self.on_error)

    # ------------------------------------------------------------------ lifecycle

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """Start with the service (retrying in the background if Telegram is away); stop with it."""
        retry = None
        if not await self._start_once():
            retry = asyncio.create_task(self._keep_starting(), name="telegram-start")
        yield
        if retry is not None:
            retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retry
        await self._stop()

    async def _start_once(self) -> bool:
        """One attempt to connect; True when running (or when retrying cannot help)."""
        try:
            await self.application.initialize()  # getMe: checks the token
            if not self.primary:
                pass  # another worker polls or registered the webhook; this one sends (and takes webhooks)
            elif self.webhook_mode:
                url = f"{self.port.public_url.rstrip('/')}{WEBHOOK_PATH}"
                await self.application.bot.set_webhook(url, secret_token=self._secret, allowed_updates=ALLOWED_UPDATES)
            else:
                await self.application.updater.start_polling(
                    timeout=POLL_TIMEOUT_SECONDS, allowed_updates=ALLOWED_UPDATES, error_callback=self._polling_error)
            await self.application.start()
        except InvalidToken:
            log.error("telegram off: Telegram refused the bot token", extra={"fields": {
                "token_env": self.config.token_env}})
            return True
        except (TelegramError, OSError) as error:
            log.warning("telegram not reachable; will retry", extra={"fields": {"error": type(error).__name__}})
            return False
        self.ready.set()
        log.info("telegram started", extra={"fields": {"mode": self.config.mode,
                                                       "bot": self.application.bot.username}})
        return True

    async def _keep_starting(self) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            if await self._start_once():
                return
            delay = min(delay * 2, RETRY_START_MAX_SECONDS)

    async def _stop(self) -> None:
        self.ready.clear()
        updater = self.application.updater
        try:
            if updater is not None and updater.running:
                await updater.stop()
            if self.application.running:
                await self.application.stop()  # lets updates being handled finish
            await self.application.shutdown()
        except TelegramError as error:
            log.warning("telegram did not stop cleanly", extra={"fields": {"error": type(error).__name__}})
        # The webhook stays set: other processes behind the same URL still serve it.

    def _polling_error(self, error: TelegramError) -> None:
        if isinstance(error, Conflict):
            log.error("telegram: another process polls with this token; use webhook mode for several processes")
        else:
            log.warning("telegram polling failed; retrying", extra={"fields": {"error": type(error).__name__}})

    # ------------------------------------------------------------------ webhook

    async def webhook(self, request: web.Request) -> web.Response:
        """POST /webhooks/telegram: one update, checked by its secret, handled before the answer."""
        given = request.headers.get(SECRET_HEADER, "").encode()
        # Constant time: the answer's timing must not tell a forger how much of the secret matched.
        if not self._secret or not hmac.compare_digest(given, self._secret.encode()):
            log.warning("telegram webhook refused: bad secret")
            return web.Response(status=403, text="forbidden")
        if not self.ready.is_set():
            return web.Response(status=503, text="starting", headers={"Retry-After": "5"})
        try:
            data = await request.json()
            update = Update.de_json(data, self.application.bot) if isinstance(data, dict) else None
        except Exception:  # not JSON, or JSON that is no update: nothing Telegram would send
            update = None
        if update is None or not isinstance(update.update_id, int):
            return web.Response(status=400, text="not an update")
        update_id = update.update_id
        if update_id in self._recent or update_id in self._in_flight:
            return web.Response(text="ok")
        self._in_flight.add(update_id)
        try:
            await self.application.process_update(update)
        finally:
            self._in_flight.discard(update_id)
        if update_id in self._failed:
            self._failed.discard(update_id)
            return web.Response(status=500, text="not handled; send it again")
        self._recent[update_id] = None
        while len(self._recent) > RECENT_UPDATES:
            self._recent.popitem(last=False)
        return web.Response(text="ok")

    # ------------------------------------------------------------------ routing

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Every new message: a command, an officer's reply, or a citizen's words."""
        message, user = update.message, update.message.from_user
        chat = message.chat
        if user is None or user.is_bot or chat.type == "channel":
            return
        private = chat.type == "private"
        # A photo's caption may carry a command: "/resolve CODE text" with the proof of the work.
        command = parse_command(message.text or message.caption, context.bot.username)
        officer = await self.staff.officer_for(chat, user.id)
        if command is not None:
            await self._command(message, user, officer, command, private)
        elif officer is not None:
            replied = message.reply_to_message
            if replied is not None and replied.from_user is not None and replied.from_user.id == context.bot.id:
                await self.staff.reply_by_telegram(message, officer)
            elif private:
                await say(message, self._staff_text("staff_hint"))
        elif private:
            await self.citizens.on_message(message, user)
        # Anything else is talk in a group the bot was added to: not for us.

    def _staff_text(self, key: str, **params: object) -> str:
        return text(self.port, self.port.config.service.default_language, key, **params)

    async def _command(self, message: Message, user: User, officer: Officer | None, command: Command,
                       private: bool) -> None:
        if command.name == "link":
            await self.staff.link(message, command)  # also links a unit's group chat
        elif not private and officer is None:
            await say(message, text(self.port, await self.citizens.language(message.chat_id, user), "private_only"))
        elif command.name in staff.COMMANDS:
            if officer is None:
                await say(message, self._staff_text("staff_only"))
            else:
                await self.staff.command(message, officer, command)
        elif officer is not None and command.name in ("start", "help"):
            await self.staff.help(message, officer)
        elif not private:
            return  # a unit's group chat: other commands are for other bots or people
        elif command.name in ("start", "help"):
            await self.citizens.start(message, user)
        elif command.name == "status":
            await self.citizens.status(message, user, command.rest)
        elif command.name == "lang":
            await self.citizens.lang(message, user, command.rest)
        else:
            await say(message, text(self.port, await self.citizens.language(message.chat_id, user),
                                    "unknown_command"))

    async def on_edited(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """An edited message: only a citizen's draft can take it."""
        message = update.edited_message
        user = message.from_user
        if user is None or message.chat.type != "private" or message.text and message.text.startswith("/"):
            return
        if await self.staff.officer_for(message.chat, user.id) is None:
            await self.citizens.on_edited(message, user)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A button press: staff actions are checked as staff, everything else as a citizen's."""
        query = update.callback_query
        action, _, rest = (query.data or "").partition(":")
        if action in staff.ACTIONS:
            officer = await self.staff.officer_for(query.message.chat if query.message else None, query.from_user.id)
            await self.staff.on_button(query, officer, action, rest)
        elif action in citizen.ACTIONS:
            await self.citizens.on_button(query, query.from_user, action, rest)
        else:  # a button of an older version, or forged data
            language = await self.citizens.language(query.from_user.id, query.from_user)
            await answer_button(query, text(self.port, language, "button_expired"))

    async def on_membership(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Added to a group: a group that is no unit's staff chat is told to write privately."""
        change = update.my_chat_member
        if change.chat.type not in ("group", "supergroup") or change.new_chat_member.status not in (
                "member", "administrator"):
            return
        if await self.staff.officer_for(change.chat, None) is None:
            language = self.port.texts.language(change.from_user.language_code if change.from_user else None)
            try:
                await context.bot.send_message(change.chat.id, text(self.port, language, "private_only"))
            except TelegramError as error:
                log.warning("telegram answer not sent", extra={"fields": {"error": type(error).__name__}})

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A handler failed (the store is away, a bug): log it; the update is to be handled again."""
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("telegram update failed", exc_info=context.error, extra={"fields": {"update_id": update_id}})
        if update_id is None:
            return
        if self.webhook_mode:
            self._failed.add(update_id)  # the webhook answers 500 and Telegram delivers it again
            return
        # A polled update is not fetched again: tell the citizen to try once more.
        chat = update.effective_chat
        if chat is not None and chat.type == "private":
            language = await self._safe_language(chat.id, update.effective_user)
            with contextlib.suppress(TelegramError):
                await context.bot.send_message(chat.id, text(self.port, language, "busy"))

    async def _safe_language(self, chat_id: int, user: User | None) -> str:
        try:
            return await self.citizens.language(chat_id, user)
        except Exception:  # the store may be what failed
            return self.port.config.service.default_language

