"""What the citizen and staff sides of the Telegram channel share: catalogue texts, input
cleaning (``contract.fields``, the same for every channel), command parsing, chat-scoped
message ids, and answering without failing.

Telegram numbers messages per chat, so a message id alone names nothing: message 5 of
one chat and message 5 of another are different messages. Every id this channel hands
to ``bot/`` (for dedupe, for threading, as the outbox's record of what it sent) is
therefore ``"<chat id>:<message id>"``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from telegram import CallbackQuery, ForceReply, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.error import TelegramError

from bot import tracking
from bot.port import Port
from contract.fields import clean_text as clean  # noqa: F401 - the channel's modules take it from here
from contract.messages import Attachment

log = logging.getLogger("channels.telegram")

CHANNEL = "telegram"
# Telegram's own limits (Bot API): a message holds 4096 characters, a caption 1024,
# callback data 64 bytes.
MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64
# Files up to this size are copied into the store; bigger ones are kept as a Telegram file id.
DOWNLOAD_LIMIT = 5 * 1024 * 1024
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{1,64}))?(?:\s+|$)")


def message_key(chat_id: int | str, message_id: int | str) -> str:
    """The channel-wide id of one Telegram message: chat id and message id."""
    return f"{chat_id}:{message_id}"


def text(port: Port, language: str | None, key: str, **params: object) -> str:
    """A text of the catalogue's [telegram] table in the given language."""
    return port.texts.get(language, f"telegram.{key}", **params)


def shorten(value: str, limit: int) -> str:
    """At most ``limit`` characters, marking a cut with an ellipsis."""
    return value if len(value) <= limit else value[:limit - 1] + "…"


@dataclass(frozen=True)
class Command:
    """A bot command as typed: ``/reply@bot PA-7KQ4-M9XS text`` -> name, rest."""

    name: str
    rest: str


def parse_command(message_text: str | None, bot_username: str | None) -> Command | None:
    """The command at the start of a message, or None (also when addressed to another bot)."""
    if not message_text:
        return None
    match = _COMMAND.match(message_text)
    if match is None:
        return None
    # In a group, "/start@other_bot" is for another bot sharing the chat.
    if match[2] and bot_username and match[2].lower() != bot_username.lower():
        return None
    return Command(match[1].lower(), message_text[match.end():].strip())


def split_code(port: Port, rest: str) -> tuple[str | None, str]:
    """The tracking code a command's arguments start with (typed any way: ``pa 7kq4 m9xs``),
    normalised, and the text after it; (None, rest) when they start with no valid code."""
    prefix = port.config.service.tracking_prefix
    for words in (3, 2, 1):
        pieces = re.split(r"\s+", rest.strip(), maxsplit=words)
        if len(pieces) >= words and tracking.is_valid(" ".join(pieces[:words]), prefix):
            return tracking.normalise(" ".join(pieces[:words]), prefix), pieces[words] if len(pieces) > words else ""
    return None, rest


def split_text(value: str, limit: int = MESSAGE_LIMIT, continued: str = "") -> list[str]:
    """A long text as messages of at most ``limit`` characters, cut at line ends where possible.

    Each later part starts with ``continued`` (the tracking code), so a reply to any part
    still names its complaint.
    """
    parts: list[str] = []
    rest, prefix = value.rstrip(), ""
    while True:
        room = limit - len(prefix)
        if len(rest) <= room:
            parts.append(prefix + rest)
            return parts
        cut = rest.rfind("\n", room // 2, room)
        if cut <= 0:
            cut = room
        parts.append(prefix + rest[:cut])
        rest, prefix = rest[cut:].lstrip("\n"), continued


async def say(message: Message, answer: str, *, markup: InlineKeyboardMarkup | ForceReply | None = None,
              quote: bool = False) -> Message | None:
    """Answer in the message's chat; a failure is logged, never raised.

    Whatever the answer was about is already committed: failing the update now would make
    Telegram deliver it again and, for a staff action, do it twice.
    """
    try:
        return await message.get_bot().send_message(
            message.chat_id, shorten(answer, MESSAGE_LIMIT), reply_markup=markup,
            reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True) if quote else None)
    except TelegramError as error:
        log.warning("telegram answer not sent", extra={"fields": {"error": type(error).__name__}})
        return None


async def answer_button(query: CallbackQuery, reply: str | None, alert: bool = False) -> None:
    """Answer a button press (Telegram shows a spinner until then); failures only logged."""
    try:
        await query.answer(shorten(reply, 200) if reply else None, show_alert=alert and bool(reply))
    except TelegramError as error:
        log.warning("telegram button answer not sent", extra={"fields": {"error": type(error).__name__}})


async def edit(message: Message, new_text: str, markup: InlineKeyboardMarkup | None = None, *,
               message_id: int | None = None) -> None:
    """Replace the text and buttons (none: a summary once sent, a choice once made) of a message,
    or of another message (``message_id``) in its chat; failures only logged."""
    try:
        await message.get_bot().edit_message_text(
            shorten(new_text, MESSAGE_LIMIT), chat_id=message.chat_id, message_id=message_id or message.message_id,
            reply_markup=markup)
    except TelegramError as error:
        log.warning("telegram message not edited", extra={"fields": {"error": type(error).__name__}})


def file_of(message: Message) -> dict | None:
    """The photo or document of a message, as the draft keeps it."""
    if message.photo:
        # Sizes come smallest first; take the largest we would still copy.
        sizes = [p for p in message.photo if (p.file_size or 0) <= DOWNLOAD_LIMIT] or list(message.photo[:1])
        photo = sizes[-1]
        return {"id": message.message_id, "file_id": photo.file_id, "name": f"photo-{photo.file_unique_id}.jpg",
                "type": "image/jpeg", "size": photo.file_size or 0}
    if message.document:
        document = message.document
        return {"id": message.message_id, "file_id": document.file_id,
                "name": clean(document.file_name)[:200] or f"file-{document.file_unique_id}",
                "type": document.mime_type or "application/octet-stream", "size": document.file_size or 0}
    return None


async def download(message: Message, file: dict) -> Attachment:
    """The file's bytes (when small enough), and its Telegram file id either way."""
    reference = f"telegram:{file['file_id']}"
    data = b""
    if file.get("size", 0) <= DOWNLOAD_LIMIT:
        try:
            telegram_file = await message.get_bot().get_file(file["file_id"])
            data = bytes(await telegram_file.download_as_bytearray())
        except TelegramError as error:
            # The message still goes in; the file id lets an officer fetch the file later.
            log.warning("telegram file not downloaded", extra={"fields": {"error": type(error).__name__}})
    return Attachment(file["name"], file["type"], data[:DOWNLOAD_LIMIT] if data else b"", reference)
