"""The officers' side of the Telegram channel: notifications with the whole case and action
buttons, staff commands, and answering a citizen by replying to a notification.

Everything an officer does goes through ``bot.staff``, which decides who may do what; this
module only reads the command or the button and says how it went. Button data is
``action:CODE[:unit[:reason]]`` and, like everything a client sends, untrusted: a forged
press is refused by the same authorisation as a typed command.

A photo or document an officer sends with ``/resolve`` or ``/reply`` in its caption, or as
a reply to a notification, goes with the answer: proof of the work done, shown to the
citizen.
"""

from __future__ import annotations

from telegram import CallbackQuery, Chat, ForceReply, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.error import TelegramError

from bot import tracking
from bot.port import Port
from contract.results import LifecycleError, NotAllowed, Officer
from channels.telegram.incidents import IncidentDesk
from channels.telegram.common import (
    CALLBACK_DATA_LIMIT,
    CHANNEL,
    CAPTION_LIMIT,
    MESSAGE_LIMIT,
    Command,
    answer_button,
    clean,
    download,
    edit,
    file_of,
    log,
    message_key,
    say,
    shorten,
    split_code,
    split_text,
    text,
)

# Buttons an officer may press; a citizen's press of one (a forged callback) is refused.
ACTIONS = ("claim", "reply", "reassign", "resolve", "move", "why", "done", "keep", "ijoin", "isep")
COMMANDS = ("reply", "note", "resolve", "reassign", "claim", "case", "mine", "overdue", "attachment", "ask", "urgent",
            "complex", "normal", "extend", "reject", "merge", "split", "incident", "reopen")
# Commands whose text after the code is required: what they say or why.
NEEDS_TEXT = ("reply", "note", "reassign", "ask", "urgent", "complex", "normal", "extend", "reject")
# A notification's action that offers Join / Keep separate for a suggested incident.
SUGGESTION = "incident:"


def _language(port: Port) -> str:
    return port.config.service.default_language


def action_markup(port: Port, language: str, code: str, actions: tuple[str, ...] = ()) -> InlineKeyboardMarkup:
    """Claim, Reply, Reassign, Resolve for one complaint; Join / Keep separate for a suggestion."""
    rows = [
        [InlineKeyboardButton(text(port, language, "button_claim"), callback_data=f"claim:{code}"),
         InlineKeyboardButton(text(port, language, "button_reply"), callback_data=f"reply:{code}")],
        [InlineKeyboardButton(text(port, language, "button_reassign"), callback_data=f"reassign:{code}"),
         InlineKeyboardButton(text(port, language, "button_resolve"), callback_data=f"resolve:{code}")],
    ]
    for action in actions:
        candidate = action.removeprefix(SUGGESTION)
        if action.startswith(SUGGESTION) and len(f"ijoin:{code}:{candidate}".encode()) <= CALLBACK_DATA_LIMIT:
            rows.append([
                InlineKeyboardButton(port.texts.get(language, "incidents.button_join"),
                                     callback_data=f"ijoin:{code}:{candidate}"),
                InlineKeyboardButton(port.texts.get(language, "incidents.button_separate"),
                                     callback_data=f"isep:{code}:{candidate}")])
    return InlineKeyboardMarkup(rows)


class StaffDesk(IncidentDesk):
    """Staff commands and buttons in Telegram chats linked to staff members."""

    def __init__(self, port: Port):
        self.port = port

    def _t(self, key: str, **params: object) -> str:
        return text(self.port, _language(self.port), key, **params)

    async def officer_for(self, chat: Chat | None, user_id: int | None) -> Officer | None:
        """Who acts: in a private chat its linked officer; in a unit's linked group chat the
        member's own staff entry, else the group's; in any other chat nobody."""
        if chat is not None and chat.type in (Chat.GROUP, Chat.SUPERGROUP):
            group = await self.port.officer_by_chat(chat.id)
            if group is None:
                # A neighbourhood group an officer is also in: cases and answers never go there.
                return None
            own = await self.port.officer_by_chat(user_id) if user_id is not None else None
            return own or group
        if chat is not None and chat.type != Chat.PRIVATE or user_id is None:
            return None
        return await self.port.officer_by_chat(user_id)

    async def link(self, message: Message, command: Command) -> None:
        """/link CODE: link this chat to the staff member the one-time code was made for."""
        if not command.rest:
            await say(message, self._t("link_usage"))
            return
        officer = await self.port.link(command.rest.split()[0], message.chat_id)
        if officer is None:
            await say(message, self._t("link_bad"))
            return
        log.info("telegram chat linked", extra={"fields": {"staff": officer.slug}})
        await say(message, self._t("link_ok", name=officer.name,
                                   unit=self.port.unit_name(officer.unit_id, _language(self.port))))

    async def help(self, message: Message, officer: Officer) -> None:
        """The staff commands."""
        await say(message, self._t("help_staff", name=officer.name,
                                   unit=self.port.unit_name(officer.unit_id, _language(self.port)))
                  + "\n" + self._i("help"))

    async def _bad_code(self, message: Message, raw: str) -> None:
        """Say what is wrong with a code that is not one."""
        found = self.port.parse_code(raw)
        if found.malformed:
            await say(message, self._t("status_bad_code", reason=found.error))

    async def _act(self, report, code: str, action, done: str) -> bool:
        """Run one staff action and report how it went (``report(text, failed)``); True when done."""
        try:
            await action()
        except NotAllowed:
            await report(self._t("not_allowed", code=code), True)
        except LifecycleError as error:
            await report(self._t("cannot", code=code, reason=self._why(error, code)), True)
        else:
            await report(done, False)
            return True
        return False

    def _why(self, error: LifecycleError, code: str) -> str:
        """Why an action could not be done, in the officer's language when the catalogue says it."""
        if error.key is None:
            return str(error)
        return self.port.texts.get(_language(self.port), f"staff.{error.key}", **{"code": code, **error.params})

    async def _files(self, message: Message) -> tuple:
        """The photo or document sent with a message, as an attachment."""
        file = file_of(message)
        return (await download(message, file),) if file else ()

    def _reasons(self, action: str) -> str:
        return ", ".join(r.slug for r in self.port.config.reasons if action in r.actions)

    async def command(self, message: Message, officer: Officer, command: Command) -> None:
        """One staff command typed in a staff chat."""
        name, rest = command.name, command.rest
        if name in ("mine", "overdue"):
            await self._list(message, officer, name)
            return
        if name == "attachment":
            await self._attachment(message, officer, rest)
            return
        if name in ("merge", "split", "incident"):
            await self._incident(message, officer, name, rest)
            return
        code, argument = split_code(self.port, rest)
        argument = clean(argument)
        files = await self._files(message) if name in ("reply", "resolve") else ()
        usage = {"reply": "usage_reply", "note": "usage_note", "resolve": "usage_resolve", "reassign": "usage_reassign",
                 "ask": "usage_ask", "urgent": "usage_urgency", "complex": "usage_urgency", "normal": "usage_urgency",
                 "extend": "usage_extend", "reject": "usage_reject"}
        if not rest or (code is not None and name in NEEDS_TEXT and not argument and not files) or \
                (code is not None and name == "reassign" and len(argument.split()) < 2):
            key = usage.get(name, "usage_code")
            await say(message, self._t(key, command=name, units=", ".join(u.slug for u in self.port.config.units),
                                       reasons=self._reasons("reject" if name == "reject" else "transfer")))
            return
        if code is None:
            await self._bad_code(message, rest.split()[0])
            return
        async def answer(reply: str, failed: bool) -> None:
            await say(message, reply)

        # The same command delivered again (Telegram retries, another process) acts once.
        source = f"{CHANNEL}:{message_key(message.chat_id, message.message_id)}"
        if name == "reply":
            await self._act(answer, code, lambda: self.port.answer(officer, code, argument, source, files),
                            self._t("replied", code=code))
        elif name == "note":
            await self._act(answer, code, lambda: self.port.note(officer, code, argument, source),
                            self._t("noted", code=code))
        elif name == "resolve":
            await self._act(answer, code, lambda: self.port.resolve(officer, code, argument or None, source, files),
                            self._t("marked_resolved", code=code))
        elif name == "claim":
            await self._act(answer, code, lambda: self.port.claim(officer, code), self._t("claimed", code=code))
        elif name == "reassign":
            unit, reason, *note = argument.split(None, 2)
            await self._act(answer, code, lambda: self.port.reassign(officer, code, unit.lower(), reason.lower(),
                                                                     " ".join(note)),
                            self._t("moved", code=code, unit=self._unit_name(unit.lower())))
        elif name == "ask":
            await self._act(answer, code, lambda: self.port.ask(officer, code, argument, source),
                            self._t("asked", code=code))
        elif name in ("urgent", "complex", "normal"):
            level = self.port.texts.get(_language(self.port), f"urgency.{name}")
            await self._act(answer, code, lambda: self.port.set_urgency(officer, code, name, argument),
                            self._t("urgency_set", code=code, urgency=level))
        elif name == "extend":
            await self._act(answer, code, lambda: self.port.extend(officer, code, argument),
                            self._t("extended", code=code))
        elif name == "reject":
            reason, _, note = argument.partition(" ")
            await self._act(answer, code, lambda: self.port.reject(officer, code, reason.lower(), note.strip()),
                            self._t("rejected", code=code))
        elif name == "reopen":
            await self._act(answer, code, lambda: self.port.reopen(officer, code, argument or None),
                            self.port.texts.get(_language(self.port), "desk.telegram_reopened", code=code))
        elif name == "case":
            await self._case(message, officer, code)

    def _unit_name(self, slug: str) -> str:
        unit = self.port.config.unit(slug)
        return (unit.name_en or unit.name if _language(self.port) == "en" else unit.name) if unit else slug

    async def _list(self, message: Message, officer: Officer, which: str) -> None:
        language = _language(self.port)
        summaries = await (self.port.mine if which == "mine" else self.port.overdue)(officer)
        lines = [self._t("list_mine" if which == "mine" else "list_overdue")]
        lines += [self._t("list_line", code=s.code, status=self.port.texts.get(language, f"status.{s.status}"),
                          due=self.port.format_time(s.first_response_due, language), summary=s.summary,
                          overdue=self._t("overdue_mark") if s.overdue else "") for s in summaries]
        if not summaries:
            lines.append(self._t("list_empty"))
        for part in split_text("\n".join(lines)):
            await say(message, part)

    async def _case(self, message: Message, officer: Officer, code: str) -> None:
        language = _language(self.port)
        try:
            case = await self.port.case(officer, code)
        except NotAllowed:
            await say(message, self._t("not_allowed", code=code))
            return
        except LifecycleError:
            await say(message, self._t("no_complaint", code=code))
            return
        head = self._t("case_title", code=case.code, status=self.port.texts.get(language, f"status.{case.status}"),
                       channel=case.channel, unit=self.port.unit_name(case.unit_id, language),
                       assignee=case.assignee or self.port.texts.get(language, "staff.nobody"),
                       created=self.port.format_time(case.created_at, language),
                       due=self.port.format_time(case.first_response_due, language),
                       resolution_due=self.port.format_time(case.resolution_due, language))
        # A whole case may run to several messages; each later one names the code.
        parts = split_text(self.port.render_case(case, language, head, budget=4 * MESSAGE_LIMIT),
                           continued=f"[{code}] ")
        for index, part in enumerate(parts):
            await say(message, part, markup=action_markup(self.port, language, code) if index == len(parts) - 1
                      else None)

    async def _attachment(self, message: Message, officer: Officer, rest: str) -> None:
        if not rest.split() or not rest.split()[0].isdigit():
            await say(message, self._t("usage_attachment"))
            return
        file_id = int(rest.split()[0])
        try:
            stored = await self.port.attachment(officer, file_id)
        except NotAllowed:
            await say(message, self._t("not_allowed", code=f"#{file_id}"))
            return
        except LifecycleError:
            await say(message, self._t("attachment_missing", id=file_id))
            return
        # Without the bytes, a file the citizen sent on Telegram can still be sent by its file id.
        reference = stored.reference or ""
        payload = stored.data or (reference.removeprefix("telegram:") if reference.startswith("telegram:") else None)
        if not payload:
            await say(message, self._t("attachment_missing", id=file_id))
            return
        bot = message.get_bot()
        name = stored.filename
        try:
            if stored.content_type.startswith("image/"):
                await bot.send_photo(message.chat_id, payload, caption=shorten(name, CAPTION_LIMIT), filename=name)
            else:
                await bot.send_document(message.chat_id, payload, caption=shorten(name, CAPTION_LIMIT), filename=name)
        except TelegramError as error:
            log.warning("telegram attachment not sent", extra={"fields": {"error": type(error).__name__}})

    def _code_of(self, replied: Message) -> str | None:
        """The complaint a message of ours is about: its buttons say, else the one code it names.

        A list (/mine) names several codes: a reply to it answers nobody rather than the first.
        """
        markup = replied.reply_markup
        for row in markup.inline_keyboard if markup else ():
            for button in row:
                action, _, rest = (button.callback_data or "").partition(":")
                if action in ACTIONS and tracking.is_valid(rest, self.port.config.service.tracking_prefix):
                    return rest
        codes = tracking.find_codes(replied.text or replied.caption or "", self.port.config.service.tracking_prefix)
        return codes[0] if len(codes) == 1 else None

    async def reply_by_telegram(self, message: Message, officer: Officer) -> None:
        """An officer's Telegram reply to a notification (or a reply prompt) answers the citizen."""
        replied = message.reply_to_message
        code = (await self.port.code_for_message(CHANNEL, message_key(replied.chat_id, replied.message_id))
                or self._code_of(replied))
        if code is None:
            await say(message, self._t("no_code_in_reply"))
            return
        answer_text = clean(message.text or message.caption)
        files = await self._files(message)
        if not answer_text and not files:
            await say(message, self._t("usage_reply"))
            return
        async def answer(reply: str, failed: bool) -> None:
            await say(message, reply, quote=True)

        source = f"{CHANNEL}:{message_key(message.chat_id, message.message_id)}"
        await self._act(answer, code, lambda: self.port.answer(officer, code, answer_text, source, files),
                        self._t("replied", code=code))

    async def on_button(self, query: CallbackQuery, officer: Officer | None, action: str, rest: str) -> None:
        """A press of Claim, Reply, Reassign, Resolve (and the choices they offer)."""
        raw, _, unit = rest.partition(":")
        unit, _, reason = unit.partition(":")
        code = self.port.parse_code(raw).code
        if code is None:
            await answer_button(query, self._t("button_expired"))
            return

        async def alert(reply: str, failed: bool) -> None:
            # A refusal stays on screen until dismissed; a success is a passing notice.
            await answer_button(query, reply, alert=failed)

        if officer is None:
            await alert(self._t("staff_only"), True)
            return
        message = query.message if isinstance(query.message, Message) else None
        if action == "claim":
            await self._act(alert, code, lambda: self.port.claim(officer, code), self._t("claimed", code=code))
        elif action in ("reply", "reassign", "resolve"):
            # Each asks for one more step; only someone who may act is asked.
            if await self._act(alert, code, lambda: self.port.authorise(officer, code), "") and message:
                await self._next_step(message, action, code)
        elif action == "move":
            # The unit chosen: a transfer needs a reason, chosen next.
            if await self._act(alert, code, lambda: self.port.authorise(officer, code), "") and message:
                await self._reason_step(message, code, unit)
        elif action == "why":
            if await self._act(alert, code, lambda: self.port.reassign(officer, code, unit, reason),
                               self._t("moved", code=code, unit=self._unit_name(unit))) and message:
                await edit(message, self._t("moved", code=code, unit=self._unit_name(unit)))
        elif action == "done":
            if await self._act(alert, code, lambda: self.port.resolve(officer, code),
                               self._t("marked_resolved", code=code)) and message:
                await edit(message, self._t("marked_resolved", code=code))
        elif action in ("ijoin", "isep"):
            await self._suggestion(alert, message, officer, action, code, self.port.parse_code(unit).code)
        elif action == "keep":
            await answer_button(query, None)
            if message:
                await edit(message, self._t("resolve_kept", code=code))

    async def _reason_step(self, message: Message, code: str, unit: str) -> None:
        """The reasons a transfer may be given for, as buttons (those whose data fits)."""
        language = _language(self.port)
        buttons = [[InlineKeyboardButton(reason.name_en or reason.name if language == "en" else reason.name,
                                         callback_data=f"why:{code}:{unit}:{reason.slug}")]
                   for reason in self.port.config.reasons if "transfer" in reason.actions
                   and len(f"why:{code}:{unit}:{reason.slug}".encode()) <= CALLBACK_DATA_LIMIT]
        await edit(message, self._t("reassign_reason", code=code, unit=self._unit_name(unit)),
                   markup=InlineKeyboardMarkup(buttons))

    async def _next_step(self, message: Message, action: str, code: str) -> None:
        if action == "reply":
            # A reply to this prompt names the code, so it is taken as the answer.
            await say(message, self._t("reply_prompt", code=code), markup=ForceReply(selective=True))
        elif action == "reassign":
            buttons = [[InlineKeyboardButton(self._unit_name(unit.slug), callback_data=f"move:{code}:{unit.slug}")]
                       for unit in self.port.config.units
                       if len(f"move:{code}:{unit.slug}".encode()) <= CALLBACK_DATA_LIMIT]
            await say(message, self._t("reassign_choose", code=code), markup=InlineKeyboardMarkup(buttons))
        elif action == "resolve":
            await say(message, self._t("resolve_confirm", code=code), markup=InlineKeyboardMarkup([[
                InlineKeyboardButton(self._t("button_confirm"), callback_data=f"done:{code}"),
                InlineKeyboardButton(self._t("button_keep"), callback_data=f"keep:{code}")]]))
