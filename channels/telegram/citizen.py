"""The citizens' side of the Telegram channel: greeting, composing a complaint with a summary
to confirm, follow-ups, status look-ups, language, and rating buttons.

A citizen's messages gather in a draft (text, photos, a location, a shared phone) that is
kept in the store through the port, so whichever process gets the next update
continues it. The draft is filed when the citizen presses Send; its identity for dedupe is
its first message (``chat:message``), so a second press, or Telegram delivering the press
again, finds the complaint already filed. A message that names one of the citizen's
complaints (a reply to our message about it, or its tracking code) is a follow-up and
goes to intake at once.
"""

from __future__ import annotations

import phonenumbers
from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, User

from bot import tracking
from bot.port import Port
from contract.messages import Inbound, Location
from contract.results import IntakeError
from channels.telegram.common import (
    CHANNEL,
    MESSAGE_LIMIT,
    answer_button,
    clean,
    download,
    edit,
    file_of,
    message_key,
    say,
    shorten,
    text,
)

ACTIONS = ("draft", "lang", "rate", "notfixed")
TEXT_LIMIT = 4000  # the web form's limit: a complaint reads the same whatever channel it came by
FILES_PER_COMPLAINT = 10
SUMMARY_TEXT_LIMIT = 1500
SEEN_LIMIT = 50
# Kinds of message a complaint cannot be made of; they get a polite "please write".
_UNSUPPORTED = ("sticker", "voice", "video", "video_note", "animation", "audio", "dice", "poll", "game", "story",
                "paid_media", "invoice", "checklist")


def rating_markup(port: Port, language: str, code: str) -> InlineKeyboardMarkup:
    """1 to 5 under a satisfaction survey, and "not fixed"."""
    return InlineKeyboardMarkup([[InlineKeyboardButton(str(n), callback_data=f"rate:{code}:{n}")
                                  for n in range(1, 6)],
                                 [InlineKeyboardButton(text(port, language, "button_not_fixed"),
                                                       callback_data=f"notfixed:{code}")]])


def _summary_markup(port: Port, language: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(text(port, language, "button_send"), callback_data="draft:send"),
        InlineKeyboardButton(text(port, language, "button_edit"), callback_data="draft:edit"),
        InlineKeyboardButton(text(port, language, "button_cancel"), callback_data="draft:cancel"),
    ]])


class CitizenDesk:
    """The conversation with citizens in private chats."""

    def __init__(self, port: Port):
        self.port = port

    def _t(self, language: str, key: str, **params: object) -> str:
        return text(self.port, language, key, **params)

    async def language(self, chat_id: int, user: User | None) -> str:
        """The citizen's chosen language, else their Telegram app's, else the default."""
        chosen = await self.port.language_of(CHANNEL, str(chat_id))
        return chosen or self.port.texts.language(user.language_code if user else None)

    async def start(self, message: Message, user: User) -> None:
        """/start and /help: the greeting and how to send a complaint."""
        language = await self.language(message.chat_id, user)
        service = self.port.config.service
        await say(message, self._t(language, "start", service=service.name_en if language == "en" else service.name))

    async def status(self, message: Message, user: User, rest: str) -> None:
        """/status: the citizen's complaints; /status CODE: one complaint."""
        language = await self.language(message.chat_id, user)
        if rest:
            found = await self.port.lookup(rest)
            if found.malformed:
                await say(message, self._t(language, "status_bad_code", reason=found.error))
            elif found.status is None:
                await say(message, self._t(language, "status_not_found", code=found.code))
            else:
                await say(message, self.port.status_text(found.status, language, CHANNEL))
            return
        mine = await self.port.complaints_of(CHANNEL, str(message.chat_id))
        if not mine:
            await say(message, self._t(language, "status_none"))
            return
        lines = [self._t(language, "status_title")]
        lines += [self.port.status_text(found, language, CHANNEL) for found in mine]
        await say(message, "\n".join(lines))

    async def lang(self, message: Message, user: User, rest: str) -> None:
        """/lang vi|en switches; /lang alone offers both."""
        wanted = rest.strip().lower()
        if wanted in self.port.texts.texts:
            chosen = await self.port.set_language(CHANNEL, str(message.chat_id), wanted)
            await say(message, self._t(chosen, "lang_set"))
            return
        language = await self.language(message.chat_id, user)
        await say(message, self._t(language, "lang_prompt"), markup=InlineKeyboardMarkup([[
            InlineKeyboardButton("Tiếng Việt", callback_data="lang:vi"),
            InlineKeyboardButton("English", callback_data="lang:en")]]))

    async def _own_codes(self, message: Message, body: str) -> list[str]:
        """Codes of this citizen's complaints the message is about: the one it replies to, or named."""
        prefix = self.port.config.service.tracking_prefix
        codes = []
        replied = message.reply_to_message
        if replied is not None and replied.from_user is not None and replied.from_user.id == message.get_bot().id:
            codes += tracking.find_codes(replied.text or replied.caption or "", prefix)
        codes += tracking.find_codes(body, prefix)
        address = str(message.chat_id)
        return [code for code in dict.fromkeys(codes) if await self.port.owns(CHANNEL, address, code)]

    async def on_message(self, message: Message, user: User) -> None:
        """Anything a citizen writes: a follow-up, or a part of the complaint being composed."""
        language = await self.language(message.chat_id, user)
        full = clean(message.text or message.caption)
        body = shorten(full, TEXT_LIMIT)
        notices = [self._t(language, "draft_truncated", max=TEXT_LIMIT)] if len(full) > TEXT_LIMIT else []
        file = file_of(message)
        location = message.location or (message.venue.location if message.venue else None)
        if message.venue:
            body = "\n".join(filter(None, [body, clean(f"{message.venue.title}, {message.venue.address}")]))
        phone, own_phone = self._phone(message, user)
        if not (body or file or location or phone):
            if any(getattr(message, kind, None) for kind in _UNSUPPORTED):
                await say(message, self._t(language, "unsupported"))
            return  # a service message (a pin, a title change): nothing to answer
        contact = ""
        if phone:
            name = clean(" ".join(filter(None, [message.contact.first_name, message.contact.last_name])))
            contact = self._t(language, "contact_shared", name=name, phone=phone)
        codes = await self._own_codes(message, body)
        if codes:
            await self._follow_up(message, user, language, codes[0], "\n".join(filter(None, [body, contact])),
                                  file, location)
            return
        await self._compose(message, language, body, file, location, contact, phone if own_phone else None, notices)

    def _phone(self, message: Message, user: User) -> tuple[str | None, bool]:
        """A shared contact's number in E.164, and whether it is the sender's own (Telegram checked it)."""
        contact = message.contact
        if contact is None or not contact.phone_number:
            return None, False
        raw = contact.phone_number.strip()
        if not raw.startswith(("+", "0")):
            raw = "+" + raw  # Telegram sends its users' numbers in international form without the "+"
        try:
            number = phonenumbers.parse(raw, self.port.config.service.phone_region)
        except phonenumbers.NumberParseException:
            return None, False
        if not phonenumbers.is_possible_number(number):
            return None, False
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return e164, contact.user_id is not None and contact.user_id == user.id

    async def _follow_up(self, message: Message, user: User, language: str, code: str, body: str,
                         file: dict | None, location) -> None:
        replied = message.reply_to_message
        inbound = Inbound(
            channel=CHANNEL, external_id=message_key(message.chat_id, message.message_id),
            sender=str(message.chat_id), sender_name=user.full_name, text=body, received_at=self.port.clock.now(),
            language=language, tracking_codes=(code,),
            in_reply_to=(message_key(message.chat_id, replied.message_id),) if replied else (),
            attachments=tuple([await download(message, file)] if file else []),
            location=Location(location.latitude, location.longitude) if location else None,
        )
        try:
            await self.port.receive(inbound)  # the outbox tells the citizen it was added
        except IntakeError:
            await say(message, self._t(language, "unsupported"))

    async def _compose(self, message: Message, language: str, body: str, file: dict | None, location,
                       contact: str, phone: str | None, notices: list[str]) -> None:
        address = str(message.chat_id)
        draft = await self.port.load_draft(CHANNEL, address) or {
            "first": message_key(message.chat_id, message.message_id), "language": language, "parts": [],
            "files": [], "location": None, "contact": "", "phone": None, "editing": False, "seen": []}
        # Telegram delivers an update again when it got no answer; its part is already here.
        if message.message_id not in draft["seen"]:
            draft["seen"] = (draft["seen"] + [message.message_id])[-SEEN_LIMIT:]
            if body:
                if draft["editing"]:
                    draft["parts"], draft["editing"] = [], False
                draft["parts"].append({"id": message.message_id, "text": body})
            if file:
                if len(draft["files"]) < FILES_PER_COMPLAINT:
                    draft["files"].append(file)
                else:
                    notices.append(self._t(language, "draft_too_many_files", max=FILES_PER_COMPLAINT))
            if location:
                draft["location"] = [location.latitude, location.longitude]
            if contact:
                # Said in the complaint for the officer; a number that is the citizen's own
                # (Telegram checked it) also becomes a way to reach them.
                draft["contact"], draft["phone"] = contact, phone
            draft["language"] = language
            await self.port.save_draft(CHANNEL, address, draft)
        summary = self._summary(draft, language, notices)
        album = message.media_group_id
        if album and draft.get("album") == album and draft.get("summary"):
            # The photos of one album arrive as separate messages: one summary, kept up to date.
            await edit(message, summary, _summary_markup(self.port, language), message_id=draft["summary"])
            return
        sent = await say(message, summary, markup=_summary_markup(self.port, language))
        if album and sent is not None:
            draft["album"], draft["summary"] = album, sent.message_id
            await self.port.save_draft(CHANNEL, address, draft)

    def _draft_text(self, draft: dict) -> str:
        """The complaint's text as filed: the parts, then the shared contact."""
        if not draft["parts"]:
            return ""
        body = shorten("\n".join(part["text"] for part in draft["parts"]), TEXT_LIMIT)
        return "\n".join(filter(None, [body, draft.get("contact")]))

    def _summary(self, draft: dict, language: str, notices: list[str]) -> str:
        full = "\n".join(part["text"] for part in draft["parts"])
        lines = [self._t(language, "draft_title")]
        if full:
            lines.append(shorten(full, SUMMARY_TEXT_LIMIT))
        truncated = self._t(language, "draft_truncated", max=TEXT_LIMIT)
        if len(full) > TEXT_LIMIT and truncated not in notices:
            notices.append(truncated)
        if draft["files"]:
            lines.append(self._t(language, "draft_files", count=len(draft["files"])))
        if draft["location"]:
            lines.append(self._t(language, "draft_location", latitude=f"{draft['location'][0]:.5f}",
                                 longitude=f"{draft['location'][1]:.5f}"))
        if draft.get("contact"):
            lines.append(draft["contact"])
        lines += notices
        lines.append(self._t(language, "draft_hint" if full else "draft_needs_text"))
        return shorten("\n".join(lines), MESSAGE_LIMIT)

    async def on_edited(self, message: Message, user: User) -> None:
        """An edited message: it changes the draft it is part of, never a filed complaint."""
        language = await self.language(message.chat_id, user)
        address = str(message.chat_id)
        draft = await self.port.load_draft(CHANNEL, address)
        body = shorten(clean(message.text or message.caption), TEXT_LIMIT)
        part = next((p for p in (draft or {}).get("parts", []) if p["id"] == message.message_id), None)
        if part is None or not body:
            await say(message, self._t(language, "edited_ignored"))
            return
        part["text"] = body
        await self.port.save_draft(CHANNEL, address, draft)
        await say(message, self._summary(draft, language, []), markup=_summary_markup(self.port, language))

    async def on_button(self, query: CallbackQuery, user: User, action: str, rest: str) -> None:
        """Send, Edit, Cancel under a summary; a language; a rating."""
        message = query.message if isinstance(query.message, Message) else None
        # A citizen's buttons live in their private chat, whose id is theirs; a press from
        # anyone else is forged.
        if message is None or message.chat.type != "private" or message.chat.id != user.id:
            await answer_button(query, None)
            return
        language = await self.language(message.chat_id, user)
        if action == "draft" and rest in ("send", "edit", "cancel"):
            await getattr(self, f"_draft_{rest}")(query, message, user, language)
        elif action == "lang" and rest in self.port.texts.texts:
            chosen = await self.port.set_language(CHANNEL, str(message.chat_id), rest)
            await answer_button(query, None)
            await edit(message, self._t(chosen, "lang_set"))
        elif action == "rate":
            await self._rate(query, message, user, language, rest)
        elif action == "notfixed":
            await self._not_fixed(query, message, user, language, rest)
        else:
            await answer_button(query, self._t(language, "button_expired"))

    async def _draft_send(self, query: CallbackQuery, message: Message, user: User, language: str) -> None:
        address = str(message.chat_id)
        draft = await self.port.load_draft(CHANNEL, address)
        if draft is None:
            await answer_button(query, self._t(language, "draft_none"), alert=True)
            return
        body = self._draft_text(draft)
        if not body:
            await answer_button(query, self._t(language, "draft_needs_text"), alert=True)
            return
        attachments = tuple([await download(message, file) for file in draft["files"]])
        inbound = Inbound(
            channel=CHANNEL, external_id=draft["first"], sender=address, sender_name=user.full_name, text=body,
            received_at=self.port.clock.now(), language=draft.get("language") or language, attachments=attachments,
            location=Location(*draft["location"]) if draft["location"] else None,
            # A number Telegram confirmed as the citizen's own also reaches them by SMS.
            reply_to=(("sms", draft["phone"]),) if draft["phone"] else (),
        )
        result = await self.port.receive(inbound)
        await self.port.delete_draft(CHANNEL, address)
        # The acknowledgement (code, unit, deadline) follows through the outbox.
        await answer_button(query, None)
        await edit(message, self._t(language, "draft_sent", code=result.tracking_code))

    async def _draft_edit(self, query: CallbackQuery, message: Message, user: User, language: str) -> None:
        address = str(message.chat_id)
        draft = await self.port.load_draft(CHANNEL, address)
        if draft is None:
            await answer_button(query, self._t(language, "draft_none"), alert=True)
            return
        draft["editing"] = True
        await self.port.save_draft(CHANNEL, address, draft)
        await answer_button(query, None)
        await say(message, self._t(language, "draft_edit"))

    async def _draft_cancel(self, query: CallbackQuery, message: Message, user: User, language: str) -> None:
        await self.port.delete_draft(CHANNEL, str(message.chat_id))
        await answer_button(query, None)
        await edit(message, self._t(language, "draft_cancelled"))

    async def _not_fixed(self, query: CallbackQuery, message: Message, user: User, language: str,
                         rest: str) -> None:
        """"Not fixed" under a survey: the citizen's "chưa xong", as an SMS citizen would send it."""
        code = self.port.parse_code(rest).code
        if code is None or not await self.port.owns(CHANNEL, str(message.chat_id), code):
            await answer_button(query, self._t(language, "button_expired"))
            return
        result = await self.port.receive(Inbound(
            channel=CHANNEL, external_id=f"{message_key(message.chat_id, message.message_id)}:notfixed",
            sender=str(message.chat_id), sender_name=user.full_name, text="chưa xong",
            received_at=self.port.clock.now(), language=language, tracking_codes=(code,),
            in_reply_to=(message_key(message.chat_id, message.message_id),)))
        if result.outcome != "disputed":
            # Pressed again, or too late: the resolution can no longer be disputed here.
            await answer_button(query, self._t(language, "button_expired"))
            return
        await answer_button(query, self._t(language, "not_fixed_thanks"))
        await edit(message, "\n".join([shorten(message.text or "", MESSAGE_LIMIT - 200),
                                        self._t(language, "not_fixed_thanks")]))

    async def _rate(self, query: CallbackQuery, message: Message, user: User, language: str, rest: str) -> None:
        raw, _, rating = rest.rpartition(":")
        code = self.port.parse_code(raw).code
        if code is None or rating not in ("1", "2", "3", "4", "5") or \
                not await self.port.owns(CHANNEL, str(message.chat_id), code):
            await answer_button(query, self._t(language, "button_expired"))
            return
        # A press is the citizen's answer to the survey, as an SMS citizen's "4" would be:
        # one answer per survey message, however often it is pressed or delivered.
        result = await self.port.receive(Inbound(
            channel=CHANNEL, external_id=f"{message_key(message.chat_id, message.message_id)}:rating",
            sender=str(message.chat_id), sender_name=user.full_name, text=rating, received_at=self.port.clock.now(),
            language=language, tracking_codes=(code,), in_reply_to=(message_key(message.chat_id, message.message_id),)))
        if result.outcome == "duplicate":
            await answer_button(query, self._t(language, "button_expired"))  # this survey is answered already
            return
        await answer_button(query, self._t(language, "rating_thanks", rating=rating))
        await edit(message, "\n".join([shorten(message.text or "", MESSAGE_LIMIT - 100),
                                        self._t(language, "rating_thanks", rating=rating)]))

