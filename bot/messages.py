"""Every message the service sends, built the same way from every caller: to citizens
(the catalogue text in their language and channel's short variant, a subject with the
tracking code, the thread ids for email) and to staff (the notification text, with the
case's history and the citizen's photos for those that show the whole case).

A citizen's message is the catalogue text in their language, in its short variant for a
channel that has one (``sms.*`` texts: an SMS with Vietnamese diacritics holds only 70
characters a segment). Messages are queued complete (``outbox.Queued``): what a sender
needs to send one is in it, and no sender reads the store.

It is long (over 400 lines) because the sweep's ``Composer`` builds the same messages as
``to_citizen`` and ``to_staff``, byte for byte, many at once: it sits beside them so that
the two ways are read and changed together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from bot.directory import StaffDirectory, staff_address, staff_addresses
from bot.outbox import HELD, QUEUED, Queued, stored_reference
from bot.reach import Point
from contract.messages import Attachment, Origin, Outgoing
from contract.results import Case, CaseDelivery, CaseMessage
from storage.models import Attachment as StoredAttachment
from storage.models import Complaint, Contact, Message, OutboxMessage, Staff

THREADED_CHANNELS = ("email",)
SUMMARY_LENGTH = 300
# What an officer can do from a notification (buttons in a chat).
STAFF_ACTIONS = ("claim", "reply", "reassign", "resolve")
# One chat message (Telegram holds 4096 characters): what a notification may use.
NOTIFICATION_BUDGET = 4096
HISTORY_ENTRY_LIMIT = 1000
PHOTOS_PER_NOTIFICATION = 3
CAPTION_LIMIT = 1024
# An answer's file shown on another reporter's page of the same incident: its bytes are the
# first answer's file, which this reference names (``bot/status.py`` follows it).
SHARED_FILE = "stored:"
# Notifications that show the whole case: the officer starts work on it from the chat.
DETAILED_KINDS = ("new_complaint", "reassigned_in", "followup", "urgent_page")


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_time(core: Core, moment: datetime | None, language: str) -> str:
    """A time as citizens read it, in the service's time zone."""
    if moment is None:
        return "-"
    local = moment.astimezone(core.config.tz)
    # Written out, not by strftime (a sweep formats one a complaint; strftime took twice as long),
    # and the month's name is English whatever the process's locale.
    if language == "en":
        return f"{local.day:02d} {_MONTHS[local.month - 1]} {local.year}, {local.hour:02d}:{local.minute:02d}"
    return f"{local.hour:02d}:{local.minute:02d} ngày {local.day:02d}/{local.month:02d}/{local.year}"


def unit_name(core: Core, unit_id: int, language: str) -> str:
    """A unit's name in a language."""
    return core.directory.unit_name(unit_id, language)


def track_url(core: Core, code: str) -> str:
    """The public status page of a complaint."""
    return f"{core.public_url.rstrip('/')}/track/{code}"


def shorten(value: str, limit: int) -> str:
    """At most ``limit`` characters, marking a cut with an ellipsis."""
    return value if len(value) <= limit else value[:limit - 1] + "…"


def summary(text: str, length: int = SUMMARY_LENGTH) -> str:
    """A complaint's text on one line, shortened for a notification."""
    return shorten(" ".join(text.split()), length)


def citizen_text(core: Core, channel: str, language: str, key: str, **params: object) -> str:
    """The text for a ``citizen.*`` key, in the channel's short variant when it has one."""
    short = f"{channel}.{key.removeprefix('citizen.')}"
    if short in core.texts.texts["vi"]:
        return core.texts.get(language, short, **params)
    return core.texts.get(language, key, **params)


async def thread_ids(session: AsyncSession, complaint_ids: Iterable[int]) -> dict[int, list[str]]:
    """The citizen's own message ids per complaint (email), oldest first, for References."""
    ids = list(set(complaint_ids))
    if not ids:
        return {}
    rows = (await session.execute(
        select(Message.complaint_id, Message.external_id)
        .where(Message.complaint_id.in_(ids), Message.channel.in_(THREADED_CHANNELS), Message.direction == "in",
               Message.external_id.is_not(None))
        .order_by(Message.id))).all()
    threads: dict[int, list[str]] = {}
    for complaint_id, external_id in rows:
        threads.setdefault(complaint_id, []).append(external_id)
    return threads


def to_citizen(core: Core, complaint: Complaint, contact: Contact | Point, key: str, text_key: str,
               thread: list[str] | None = None, origin: Origin = "system", attachments: tuple[Attachment, ...] = (),
               **params: object) -> Queued:
    """One message to the complaint's citizen at a contact point (their channel and address).

    ``origin``: "reply" for what answers the citizen's own message at once (the
    acknowledgement, "added to your complaint"), "person" for an officer's answer.
    """
    language = complaint.language
    url = track_url(core, complaint.tracking_code)
    fields = dict(code=complaint.tracking_code, unit=unit_name(core, complaint.unit_id, language),
                  track_url=url, **params)
    topic = complaint.subject or core.texts.get(language, "citizen.subject_default")
    kind = text_key.removeprefix("citizen.")
    # How to write it again for another contact point, should this one not reach the citizen.
    again = {"text_key": text_key, "params": {name: str(value) for name, value in params.items()},
             "origin": origin, "thread": list(thread or ())[-20:],
             "files": [[item.stored_id, item.filename, item.content_type] for item in attachments
                       if item.stored_id is not None]}
    return Queued(Outgoing(
        channel=contact.channel, recipient=contact.address, key=key, kind=kind, audience="citizen",
        origin=origin, language=language,
        text=citizen_text(core, contact.channel, language, text_key, **fields),
        subject=f"[{complaint.tracking_code}] {topic}"[:300], tracking_code=complaint.tracking_code, status_url=url,
        # The last of the citizen's messages is the one this answers; all of them thread it.
        in_reply_to=tuple(thread or ())[-20:], via=contact.via, attachments=attachments,
        actions=("rate", "not_fixed") if kind == "survey" else ()), complaint.id, again)


def to_staff(core: Core, directory: StaffDirectory, members: list[Staff], key: str, text_key: str,
             complaint: Complaint, case: Case | None = None, *, every_channel: bool = False,
             **params: object) -> list[Queued]:
    """Messages telling these staff members about a complaint.

    With the ``case``, a notification that shows the whole case carries its history and
    the citizen's photos to staff who read it in a chat. ``every_channel``: a page, sent
    on every channel each member has, at once. Otherwise, outside working hours, what
    concerns a complaint that is not urgent waits for the next working morning
    (``notifications.quiet_hours``), to go as one summary.
    """
    language = core.config.service.default_language
    assignee = directory.by_id.get(complaint.assignee_id) if complaint.assignee_id else None
    fields = dict(code=complaint.tracking_code, unit=unit_name(core, complaint.unit_id, language),
                  summary=summary(complaint.text), channel=complaint.channel,
                  due=format_time(core, complaint.first_response_due, language),
                  assignee=assignee.name if assignee else core.texts.get(language, "staff.nobody"))
    fields.update(params)
    text = core.texts.get(language, text_key, **fields)
    kind = text_key.removeprefix("staff.")
    detailed = notification(core, case, kind, text, language) if case is not None and kind in DETAILED_KINDS \
        else None
    hold_until = None if every_channel else quiet_until(core, complaint)
    out = []
    for member in members:
        addresses = staff_addresses(member) if every_channel else [a for a in [staff_address(member)] if a]
        for channel, recipient in addresses:
            body, photos = detailed if detailed and channel == "telegram" else (text, ())
            out.append(Queued(Outgoing(
                channel=channel, recipient=recipient,
                key=f"{key}:{member.id}:{channel}" if every_channel else f"{key}:{member.id}", kind=kind,
                audience="staff", language=language, text=body,
                subject=f"[{complaint.tracking_code}] {text.splitlines()[0]}"[:300],
                tracking_code=complaint.tracking_code, attachments=photos, actions=STAFF_ACTIONS), complaint.id,
                {"staff_id": member.id}, hold_until=hold_until))
    return out


class Composer:
    """Messages for many complaints at once (the sweep's batch), as outbox rows (plain dicts
    for ``outbox.enqueue_rows``), the same byte for byte as ``to_citizen`` and ``to_staff``
    (without a case or attachments) build them, with what is the same for many complaints
    worked out once: unit names, templates, staff addresses, formatted times, when staff
    messages may go (reckoned at the first). One per batch: names and staff may change."""

    def __init__(self, core: Core, directory: StaffDirectory, now: datetime):
        self.core, self.directory, self.now = core, directory, now
        self.rows: list[dict] = []
        self.staff_language = core.config.service.default_language
        self._tz = core.config.tz
        self._track = f"{core.public_url.rstrip('/')}/track/"
        self._units: dict[tuple[int, str], str] = {}
        self._templates: dict[tuple[str, str], str] = {}
        self._citizen_keys: dict[tuple[str, str], str] = {}
        self._times: dict[tuple[datetime | None, str], str] = {}
        self._addresses: dict[int, tuple[str, str] | None] = {}
        self._quiet: dict[bool, datetime | None] = {}

    def time(self, moment: datetime | None, language: str) -> str:
        """``format_time``, once per moment and language."""
        if (found := self._times.get((moment, language))) is None:
            found = self._times[moment, language] = format_time(self.core, moment, language)
        return found

    def unit(self, unit_id: int, language: str) -> str:
        if (found := self._units.get((unit_id, language))) is None:
            found = self._units[unit_id, language] = unit_name(self.core, unit_id, language)
        return found

    def template(self, language: str | None, key: str) -> str:
        """The catalogue's template for a key, as ``Catalogue.get`` picks it (its language,
        else Vietnamese)."""
        if (found := self._templates.get((language, key))) is None:
            texts = self.core.texts
            found = texts.texts.get(texts.language(language), {}).get(key) or texts.texts["vi"][key]
            self._templates[language, key] = found
        return found

    def _citizen_key(self, channel: str, key: str) -> str:
        """The key ``citizen_text`` uses: the channel's short variant when there is one."""
        if (found := self._citizen_keys.get((channel, key))) is None:
            short = f"{channel}.{key.removeprefix('citizen.')}"
            found = self._citizen_keys[channel, key] = short if short in self.core.texts.texts["vi"] else key
        return found

    def _address(self, member: Staff) -> tuple[str, str] | None:
        if (found := self._addresses.get(member.id, False)) is False:
            found = self._addresses[member.id] = staff_address(member)
        return found

    def _hold_until(self, complaint: Complaint) -> datetime | None:
        if (urgent := complaint.urgency == "urgent") not in self._quiet:
            self._quiet[urgent] = quiet_until(self.core, complaint)
        return self._quiet[urgent]

    def _row(self, key: str, channel: str, recipient: str, complaint_id: int, payload: dict,
             hold_until: datetime | None) -> None:
        now = self.now
        self.rows.append(dict(key=key, reference=stored_reference(channel, key), channel=channel, recipient=recipient,
                              complaint_id=complaint_id, payload=payload, status=HELD if hold_until else QUEUED,
                              attempts=0, next_attempt_at=hold_until or now, created_at=now, fallback_of=None,
                              unsure=False, resent=False))

    def to_citizen(self, complaint: Complaint, contact: Point, key: str, text_key: str,
                   thread: list[str] | None = None, **params: object) -> None:
        """``to_citizen`` (origin "system", no attachments) as an outbox row."""
        language = complaint.language
        code = complaint.tracking_code
        url = self._track + code
        text = self.template(language, self._citizen_key(contact.channel, text_key)).format(
            code=code, unit=self.unit(complaint.unit_id, language), track_url=url, **params)
        topic = complaint.subject or self.template(language, "citizen.subject_default")
        kind = text_key.removeprefix("citizen.")
        thread = list(thread or ())[-20:]
        again = {"text_key": text_key, "params": {name: str(value) for name, value in params.items()},
                 "origin": "system", "thread": thread, "files": []}
        self._row(key, contact.channel, contact.address, complaint.id, {
            "text": text, "kind": kind, "audience": "citizen", "origin": "system", "language": language,
            "subject": f"[{code}] {topic}"[:300], "code": code, "status_url": url, "in_reply_to": list(thread),
            "via": contact.via, "actions": ["rate", "not_fixed"] if kind == "survey" else [], "attachments": [],
            "render": again}, None)

    def to_staff(self, members: list[Staff], key: str, text_key: str, complaint: Complaint,
                 **params: object) -> int:
        """``to_staff`` (no case, not on every channel) as outbox rows; how many."""
        language = self.staff_language
        code = complaint.tracking_code
        assignee = self.directory.by_id.get(complaint.assignee_id) if complaint.assignee_id else None
        fields = dict(code=code, unit=self.unit(complaint.unit_id, language), summary=summary(complaint.text),
                      channel=complaint.channel,
                      due=params["due"] if "due" in params else self.time(complaint.first_response_due, language),
                      assignee=assignee.name if assignee else self.template(language, "staff.nobody"))
        fields.update(params)
        text = self.template(language, text_key).format(**fields)
        kind = text_key.removeprefix("staff.")
        subject = f"[{code}] {text.splitlines()[0]}"[:300]
        hold_until = self._hold_until(complaint)
        told = 0
        for member in members:
            address = self._address(member)
            if address is None:
                continue
            channel, recipient = address
            self._row(f"{key}:{member.id}", channel, recipient, complaint.id, {
                "text": text, "kind": kind, "audience": "staff", "origin": "system", "language": language,
                "subject": subject, "code": code, "status_url": None, "in_reply_to": [], "via": None,
                "actions": list(STAFF_ACTIONS), "attachments": [], "render": {"staff_id": member.id}}, hold_until)
            told += 1
        return told


def quiet_until(core: Core, complaint: Complaint) -> datetime | None:
    """When staff messages about this complaint may go, if not now: the next working
    moment, outside working hours, unless the complaint is urgent."""
    if not core.config.notifications.quiet_hours or complaint.urgency == "urgent":
        return None
    now = core.clock.now()
    opens = core.calendar.next_working_moment(now)
    return opens if opens > now else None


def new_case(complaint: Complaint, text: str, files: Iterable[tuple[int, str, str, int]]) -> Case:
    """The case of a complaint just filed: its one message and files (no need to read it back)."""
    return Case(
        code=complaint.tracking_code, status=complaint.status, channel=complaint.channel, unit_id=complaint.unit_id,
        assignee=None, category=complaint.category, area=complaint.area, created_at=complaint.created_at,
        first_response_due=complaint.first_response_due, resolution_due=complaint.resolution_due,
        latitude=complaint.latitude, longitude=complaint.longitude,
        messages=(CaseMessage(complaint.created_at, "in", complaint.channel, text, None, tuple(files)),))


async def load_case(session: AsyncSession, complaint: Complaint) -> Case:
    """The complaint with its whole history, oldest first, and its files named (not read)."""
    rows = (await session.execute(
        select(Message, Staff.name).outerjoin(Staff, Staff.id == Message.author_staff_id)
        .where(Message.complaint_id == complaint.id).order_by(Message.created_at, Message.id))).all()
    files = (await session.execute(
        select(StoredAttachment.message_id, StoredAttachment.id, StoredAttachment.filename,
               StoredAttachment.content_type, StoredAttachment.size)
        .where(StoredAttachment.message_id.in_([m.id for m, _ in rows])))).all() if rows else []
    assignee = await session.get(Staff, complaint.assignee_id) if complaint.assignee_id else None
    sent = (await session.execute(
        select(OutboxMessage.created_at, OutboxMessage.channel, OutboxMessage.status, OutboxMessage.delivery,
               OutboxMessage.delivery_reason, OutboxMessage.last_error, OutboxMessage.fallback_of,
               OutboxMessage.payload)
        .where(OutboxMessage.complaint_id == complaint.id).order_by(OutboxMessage.id))).all()
    deliveries = tuple(
        CaseDelivery(at, payload.get("kind") or "message", channel, delivery or status,
                     delivery_reason or (last_error if status == "failed" else None), fallback_of is not None)
        for at, channel, status, delivery, delivery_reason, last_error, fallback_of, payload in sent
        if payload.get("audience") == "citizen")
    by_message: dict[int, list[tuple[int, str, str, int]]] = {}
    for message_id, *details in files:
        by_message.setdefault(message_id, []).append(tuple(details))
    return Case(
        code=complaint.tracking_code, status=complaint.status, channel=complaint.channel, unit_id=complaint.unit_id,
        assignee=assignee.name if assignee else None, category=complaint.category, area=complaint.area,
        created_at=complaint.created_at, first_response_due=complaint.first_response_due,
        resolution_due=complaint.resolution_due, latitude=complaint.latitude, longitude=complaint.longitude,
        messages=tuple(CaseMessage(m.created_at, m.direction, m.channel, m.text, name,
                                   tuple(by_message.get(m.id, ()))) for m, name in rows),
        deliveries=deliveries, unreachable=complaint.unreachable_at is not None,
    )


def _history(core: Core, case: Case, language: str, budget: int) -> list[str]:
    """The case's messages, newest kept when the budget runs out, then oldest first."""
    lines: list[str] = []
    used = 0
    for index in range(len(case.messages) - 1, -1, -1):
        item = case.messages[index]
        values = {"time": format_time(core, item.at, language), "channel": item.channel, "name": item.author or "-",
                  "text": shorten(" ".join(item.text.split()), HISTORY_ENTRY_LIMIT)}
        key = {"in": "staff.history_citizen", "note": "staff.history_note"}.get(item.direction, "staff.history_staff")
        entry = [core.texts.get(language, key, **values)]
        entry += [core.texts.get(language, "staff.attachment_line", id=file_id, name=name,
                                 size=max(1, round(size / 1024)))
                  for file_id, name, _, size in item.attachments]
        cost = sum(len(line) + 1 for line in entry)
        if used + cost > budget:
            lines.append(core.texts.get(language, "staff.history_more", count=index + 1, code=case.code))
            break
        lines.extend(reversed(entry))
        used += cost
    return list(reversed(lines))


def render(core: Core, case: Case, language: str, head: str, budget: int = NOTIFICATION_BUDGET) -> str:
    """A notification or case text: the head, the location, then as much history as fits."""
    lines = [head]
    if case.latitude is not None and case.longitude is not None:
        lines.append(core.texts.get(language, "staff.location_line", latitude=f"{case.latitude:.6f}",
                                    longitude=f"{case.longitude:.6f}"))
    lines += _reach(core, case, language)
    room = budget - sum(len(line) + 1 for line in lines) - 40
    history = _history(core, case, language, room)
    if history:
        lines += ["", core.texts.get(language, "staff.history_title"), *history]
    return "\n".join(lines)


def _reach(core: Core, case: Case, language: str) -> list[str]:
    """How messages reached the citizen, when one did not by the first way: the failures and
    the fallbacks (the last few), and whether the citizen is unreachable now."""
    troubled = [d for d in case.deliveries if d.fallback or d.state in ("failed", "undelivered")][-6:]
    lines = [core.texts.get(language, "staff.delivery_line", time=format_time(core, d.at, language),
                            kind=d.kind, channel=d.channel, state=d.state,
                            reason=f" ({shorten(d.reason, 120)})" if d.reason else "") for d in troubled]
    if case.unreachable:
        lines.append(core.texts.get(language, "staff.unreachable_line"))
    return lines


def notification(core: Core, case: Case, kind: str, head: str, language: str) -> tuple[str, tuple[Attachment, ...]]:
    """A detailed notification's text and the citizen's photos that go with it."""
    first = case.messages[0] if case.messages else None
    if kind == "new_complaint" and len(case.messages) == 1 and first and len(first.text) <= SUMMARY_LENGTH \
            and not first.attachments:
        body = render(core, replace(case, messages=()), language, head)
    else:
        body = render(core, case, language, head)
    if kind == "followup":
        latest = [m for m in case.messages if m.direction == "in"][-1:]
        files = [f for m in latest for f in m.attachments]
    else:
        files = [f for m in case.messages if m.direction == "in" for f in m.attachments]
    photos = tuple(
        Attachment(filename=name, content_type=content_type, stored_id=file_id,
                   caption=shorten(core.texts.get(language, "staff.attachment_caption", code=case.code, name=name),
                                   CAPTION_LIMIT))
        for file_id, name, content_type, _ in files if content_type.startswith("image/"))
    return body, photos[:PHOTOS_PER_NOTIFICATION]
