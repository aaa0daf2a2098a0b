"""Sending the outbox's Telegram messages: render, send within Telegram's limits, and
translate the Bot API's answers into the outbox's terms.

Forbidden (the citizen blocked the bot, or left the group) and BadRequest (no such chat,
a text Telegram refuses) can never succeed: permanent, and the outbox tries the citizen's
next contact point. A request that timed out may have reached the chat: its outcome is
unknown (Telegram cannot be asked, so the next attempt sends again, and the chat may show
the message twice). Flood control (RetryAfter),
network errors and anything unexpected are transient: the outbox tries again later,
no sooner than Telegram asked. Short flood waits are sat out in place by the rate
limiter, so one busy second does not cost a message a backoff of minutes.

What comes back is ``"<chat id>:<message id>"``: the outbox keeps it, and a reply to that
message later names it, whichever chat it is in.
"""

from __future__ import annotations

import asyncio
import warnings
from datetime import timedelta

from telegram import InlineKeyboardMarkup, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, RetryAfter, TelegramError, TimedOut
from telegram.ext import AIORateLimiter, ExtBot

from bot.port import Port
from channels.telegram import citizen, staff
from channels.telegram.common import CAPTION_LIMIT, CHANNEL, log, message_key, split_text
from contract.delivery import PermanentDeliveryError, TransientDeliveryError, UnknownDeliveryError
from contract.messages import Attachment, Outgoing

# Flood waits up to this long are waited out inside the send (and inside a chat answer);
# longer ones go back to the outbox, which must not sit blocked for minutes.
LONGEST_WAIT_IN_PLACE = 5.0
RETRIES_IN_PLACE = 2


def retry_seconds(error: RetryAfter) -> float:
    """How long Telegram asked us to wait, in seconds."""
    with warnings.catch_warnings():
        # PTB 22 warns that retry_after will become a timedelta; accept either.
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class _LongWait(Exception):
    def __init__(self, error: RetryAfter):
        super().__init__(str(error))
        self.error = error


class FloodAwareRateLimiter(AIORateLimiter):
    """AIORateLimiter (Telegram's overall and per-group limits) that retries only short
    flood waits in place and hands long ones back to the caller at once."""

    def __init__(self, longest_wait: float = LONGEST_WAIT_IN_PLACE, max_retries: int = RETRIES_IN_PLACE):
        super().__init__(max_retries=max_retries)
        self.longest_wait = longest_wait

    async def process_request(self, callback, args, kwargs, endpoint, data, rate_limit_args):
        """Send through the limiter; a flood wait longer than ``longest_wait`` is not retried."""
        async def bounded(*call_args, **call_kwargs):
            try:
                return await callback(*call_args, **call_kwargs)
            except RetryAfter as error:
                if retry_seconds(error) > self.longest_wait:
                    raise _LongWait(error) from None  # not a RetryAfter: the limiter lets it through
                raise

        try:
            return await super().process_request(bounded, args, kwargs, endpoint, data, rate_limit_args)
        except _LongWait as wait:
            raise wait.error from None


class TelegramSender:
    """Sends outbox messages to Telegram chats (citizens, officers, units' group chats)."""

    channel = CHANNEL

    def __init__(self, port: Port, bot: ExtBot, token: str, ready: asyncio.Event):
        self.port = port
        self.bot = bot
        self._token = token
        self._ready = ready  # set once the bot is connected (getMe answered, updates arriving)

    def _scrub(self, reason: str) -> str:
        # The token is part of every Bot API URL; an error that quotes a URL must not carry it.
        return reason.replace(self._token, "***") if self._token else reason

    async def send(self, message: Outgoing) -> str | None:
        """Send one message; return ``chat:message`` of the (first) Telegram message."""
        if not self._ready.is_set():
            raise TransientDeliveryError("telegram is not connected yet")
        try:
            chat_id = int(message.recipient)
        except ValueError:
            raise PermanentDeliveryError(f"not a Telegram chat id: {message.recipient[:40]!r}") from None
        code = message.tracking_code
        markup = None
        if code and message.audience == "staff" and message.actions:
            markup = staff.action_markup(self.port, message.language, code, message.actions)
        elif code and "rate" in message.actions:
            markup = citizen.rating_markup(self.port, message.language, code)
        # The files that go with the message (a citizen's photos, a digest's chart) follow it.
        photos = [item for item in message.attachments if item.content_type.startswith("image/") and item.data]
        try:
            first = await self._send_text(chat_id, message.text, markup, code)
            for photo in photos:
                await self._send_extra(chat_id, first, photo)
        except Forbidden as error:
            raise PermanentDeliveryError(f"forbidden: {self._scrub(str(error))}") from None
        except ChatMigrated as error:
            # A group became a supergroup; its staff entry needs the new chat id.
            raise PermanentDeliveryError(f"chat migrated to {error.new_chat_id}") from None
        except BadRequest as error:
            raise PermanentDeliveryError(f"refused: {self._scrub(str(error))}") from None
        except RetryAfter as error:
            raise TransientDeliveryError("telegram flood control", retry_after=retry_seconds(error)) from None
        except TimedOut:
            # The request may have reached Telegram: the message may be in the chat already.
            raise UnknownDeliveryError("telegram did not answer in time") from None
        except InvalidToken:
            # A configuration fault, not the message's: keep it queued until someone fixes the token.
            raise TransientDeliveryError("telegram refused the bot token") from None
        except TelegramError as error:  # NetworkError, TimedOut, Conflict, 5xx
            raise TransientDeliveryError(f"{type(error).__name__}: {self._scrub(str(error))}") from None
        return message_key(chat_id, first)

    async def _send_text(self, chat_id: int, body: str, markup: InlineKeyboardMarkup | None,
                         code: str | None) -> int:
        parts = split_text(body or "-", continued=f"[{code}] " if code else "")
        first = None
        for index, part in enumerate(parts):
            sent = await self.bot.send_message(chat_id, part,
                                               reply_markup=markup if index == len(parts) - 1 else None)
            first = first or sent.message_id
        return first

    async def _send_extra(self, chat_id: int, reply_to: int, photo: Attachment) -> None:
        """A photo after a notification; losing one must not re-send the notification."""
        try:
            await self.bot.send_photo(chat_id, photo.data, caption=photo.caption[:CAPTION_LIMIT],
                                      filename=photo.filename,
                                      reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True))
        except TelegramError as error:
            log.warning("telegram photo not sent", extra={"fields": {"error": self._scrub(str(error))[:200]}})
