"""``POST /webhooks/zalo``: what Zalo posts about the OA's citizens, turned into intake and answers.

Nothing is stored before the delivery's signature and timestamp check out (``events``): a
missing, forged or stale signature is 403, a body that is not a Zalo event 400. Zalo wants
its 200 within about 2 s and otherwise retries, then disables the webhook, so the handler
stores and answers, and never sends: every answer (the greeting, the acknowledgement, a
status, a note) is queued in the outbox. A photo or file is copied into the store only if
it arrives within ``zalo.download_timeout_seconds``; otherwise its Zalo link is kept.

What each event does (the conversation is the Telegram one, without buttons):
- ``user_send_text``: "TT <code>" answers with the complaint's status; anything else goes to
  intake: a new complaint, acknowledged with its code, or, within ``zalo.window_hours`` of
  the citizen's open complaint, a follow-up of it; a lone digit after a survey is a rating.
- ``user_send_image``/``_gif``/``_file``/``_location``/``_link``: the same, with the photos, the
  file, the point on the map or the link.
- ``user_send_sticker``/``_audio``/``_video``: recorded (on the open complaint, if any, never
  filed as one) and answered with a short note of what we can read.
- ``follow``, and a citizen's first message: the charter's greeting.
- ``user_submit_info``: the phone number a citizen chose to share goes to the domain as a
  way to reach them (``reply_to`` ("sms", E.164)), on their open complaint if they have one.
- ``unfollow``, ``user_seen_message`` and the OA's own events: nothing to store.

A Zalo user id is the citizen's address for this OA: kept, never shown, never logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

import aiohttp
import phonenumbers
from aiohttp import web

from bot import tracking
from bot.logs import mask_phone
from bot.port import Port
from channels.zalo import events
from channels.zalo.config import ZaloConfig
from channels.zalo.events import Event, Refused
from contract.messages import Attachment, Inbound, Location, Outgoing
from contract.results import IntakeError, StoreUnavailable

log = logging.getLogger(__name__)

CHANNEL = "zalo"
PATH = "/webhooks/zalo"
TEXT_LIMIT = 4000  # the web form's limit: a complaint reads the same whatever channel it came by
UNREADABLE = {"user_send_sticker": "sticker", "user_send_audio": "audio", "user_send_video": "video"}
FILE_TYPES = {"pdf": "application/pdf", "doc": "application/msword", "docx": "application/vnd.openxmlformats-"
              "officedocument.wordprocessingml.document", "xls": "application/vnd.ms-excel",
              "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "txt": "text/plain"}


@dataclass
class ZaloWebhook:
    """What the webhook needs: the port, [zalo], the OA secret key and an HTTP client for files."""

    port: Port
    config: ZaloConfig
    oa_secret: str
    http: aiohttp.ClientSession | None = None

    def _t(self, language: str, key: str, **params: object) -> str:
        return self.port.texts.get(language, f"zalo.{key}", **params)

    async def receive(self, request: web.Request) -> web.Response:
        """Take one delivery: 200 once what it carries is stored (or was already), 4xx when refused."""
        try:
            event = await self._verified(request)
        except Refused as refusal:
            log.warning("zalo webhook refused", extra={"fields": {"status": refusal.status, "reason": refusal.reason}})
            return web.json_response({"error": refusal.reason}, status=refusal.status)
        try:
            await self.handle(event)
        except StoreUnavailable:
            # Zalo tries again later; nothing was stored.
            return web.json_response({"error": "store unavailable"}, status=503)
        except IntakeError as error:
            log.warning("zalo event not taken", extra={"fields": {"event": event.name, "reason": str(error)}})
        return web.json_response({"status": "ok"})

    async def _verified(self, request: web.Request) -> Event:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Refused(400, f"body larger than {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(16384):
            size += len(chunk)
            if size > limit:  # read no further
                raise Refused(400, f"body larger than {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        data = events.verify(body, request.headers.get(events.SIGNATURE_HEADER, ""), app_id=self.config.app_id,
                             oa_secret=self.oa_secret, now=self.port.clock.now(),
                             max_age=self.config.signature_max_age_seconds)
        return events.read(data)

    async def handle(self, event: Event) -> None:
        """Do what one verified event asks."""
        if event.name == "follow":
            await self._greet(event.user, f"zalo-greeting:{event.user}:{event.timestamp}")
        elif event.name == "user_submit_info":
            await self._shared_info(event)
        elif event.msg_id is not None:
            await self._message(event)
        else:
            log.debug("zalo event without a message", extra={"fields": {"event": event.name}})

    async def _greet(self, user: str, key: str) -> None:
        await self.port.reply(self._greeting(user, key))

    def _greeting(self, user: str, key: str) -> Outgoing:
        language = self.port.texts.language(None)
        service = self.port.config.service
        text = self.port.texts.get(language, "citizen.greeting",
                                   service=service.name_en if language == "en" else service.name)
        return Outgoing(channel=CHANNEL, recipient=user, text=text, key=key, kind="greeting", origin="reply",
                        language=language)

    def _inbound(self, event: Event, text: str, **extra: object) -> Inbound:
        fields: dict = dict(channel=CHANNEL, external_id=f"zalo:{event.msg_id}", sender=event.user, text=text,
                            received_at=min(event.at, self.port.clock.now()),
                            # No reply threading on Zalo: a message within the window continues the open complaint.
                            continues_within_hours=self.config.window_hours)
        return Inbound(**{**fields, **extra})

    async def _message(self, event: Event) -> None:
        user = event.user
        text = _clean(event.text)[:TEXT_LIMIT]
        asked = tracking.status_request(text, self.port.config.service.tracking_prefix) \
            if event.name == "user_send_text" else None
        # Khách đến, được chào hỏi: a first contact is greeted. With a complaint the greeting
        # goes to intake, which queues it in the transaction that files it when the citizen
        # is new (``Inbound.greeting``): one commit. Words alone, the common case, need no
        # look-up first (a read transaction of its own for each message cost as much CPU as
        # a third of the rest: bench/README.md, 2026-12-06, seventh session); what is
        # answered here or labelled in the citizen's language (a sticker, a status request,
        # a photo, a place) looks the citizen up.
        words_only = event.name not in UNREADABLE and asked is None and not event.attachments and bool(text)
        known = None if words_only else await self.port.language_of(CHANNEL, user)
        language = known or self.port.texts.language(None)
        greeting = self._greeting(user, f"zalo-greeting:{event.msg_id}") if known is None else None
        inbound = None if event.name in UNREADABLE or asked is not None else await self._content(event, text, language)
        if greeting is not None and inbound is None:
            await self.port.reply(greeting)
        if event.name in UNREADABLE:
            await self._unreadable(event, language)
            return
        if asked is not None:
            await self._status(event, asked)
            return
        if inbound is None:
            log.info("zalo message with nothing to keep", extra={"fields": {"event": event.name}})
            return
        result = await self.port.receive(replace(inbound, greeting=greeting))
        log.info("zalo received", extra={"fields": {"event": event.name, "outcome": result.outcome,
                                                    "code": result.tracking_code or "-"}})

    async def _content(self, event: Event, text: str, language: str) -> Inbound | None:
        """The Inbound of a message with words, photos, a file, a location or a link."""
        images = [a for a in event.attachments if a.type in ("image", "gif") and a.url]
        files = [a for a in event.attachments if a.type == "file" and a.url]
        places = [a for a in event.attachments if a.type == "location" and a.latitude is not None
                  and a.longitude is not None]
        links = [a for a in event.attachments if a.type == "link"]
        attachments = await self._download(images, files)
        lines = [text] if text else []
        for link in links:
            if link.url and link.url not in text:
                lines.append(link.url)
            if link.description:
                lines.append(_clean(link.description)[:500])
        location = None
        if places:
            location = Location(places[0].latitude, places[0].longitude)
            lines.append(self._t(language, "location", latitude=f"{location.latitude:.6f}",
                                 longitude=f"{location.longitude:.6f}"))
        if not lines and images:
            lines.append(self._t(language, "photos_only", count=len(images)))
        if not lines and files:
            lines.append(self._t(language, "file_only", name=files[0].name or "?"))
        if not lines:
            return None
        return self._inbound(event, "\n".join(lines)[:TEXT_LIMIT], attachments=attachments, location=location)

    async def _download(self, images: list[events.Attachment], files: list[events.Attachment]) -> tuple:
        """The photos and files, their bytes when they come in time, their Zalo links always."""
        items = []
        for index, item in enumerate(images + files):
            if item.type == "file":
                name = item.name or f"zalo-file-{index + 1}"
                kind = FILE_TYPES.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")
            else:
                name, kind = f"zalo-photo-{index + 1}.{'gif' if item.type == 'gif' else 'jpg'}", \
                    "image/gif" if item.type == "gif" else "image/jpeg"
            items.append((item, name, kind))
        if not items:
            return ()
        budget = self.config.download_timeout_seconds
        results = await asyncio.gather(*(self._fetch(item, budget) for item, _, _ in items))
        return tuple(Attachment(name, kind, data, item.url) for (item, name, kind), data in zip(items, results))

    async def _fetch(self, item: events.Attachment, budget: float) -> bytes:
        limit = self.config.max_download_bytes
        if self.http is None or (item.size is not None and item.size > limit) or not limit:
            return b""
        try:
            async with asyncio.timeout(budget), self.http.get(item.url) as response:
                if response.status != 200:
                    return b""
                data = b""
                async for chunk in response.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > limit:
                        return b""  # too big to copy: its link is kept
        except (TimeoutError, aiohttp.ClientError, ValueError) as error:
            # The complaint still goes in; its Zalo link lets an officer open the file.
            log.info("zalo file not copied", extra={"fields": {"error": type(error).__name__}})
            return b""
        return data

    async def _unreadable(self, event: Event, language: str) -> None:
        """A sticker, a voice message or a video: recorded (never a complaint of its own) and answered."""
        what = self._t(language, f"what_{UNREADABLE[event.name]}")
        media = tuple(Attachment(f"zalo-{UNREADABLE[event.name]}", _media_type(event.name), b"", item.url)
                      for item in event.attachments if item.url and event.name != "user_send_sticker")
        # "Automated" as intake means it: recorded on the open complaint if any, never acknowledged.
        await self.port.receive(self._inbound(event, self._t(language, "recorded", what=what), attachments=media,
                                              automated=True))
        await self.port.reply(Outgoing(channel=CHANNEL, recipient=event.user, key=f"zalo-note:{event.msg_id}",
                                       text=self._t(language, "unreadable", what=what), kind="unreadable",
                                       origin="reply", language=language))

    async def _status(self, event: Event, asked: tracking.StatusRequest) -> None:
        """Answer "TT <code>" through the outbox, like every message to the citizen."""
        language = asked.language
        example = f"{self.port.config.service.tracking_prefix}-7KQ4-M9XS"
        code = asked.code
        if asked.problem is not None:
            text = self.port.texts.get(language, "sms.status_bad_code", example=example)
        elif code is not None:
            found = (await self.port.lookup(code)).status
            text = (self.port.status_text(found, language, CHANNEL) if found is not None
                    else self.port.texts.get(language, "sms.status_not_found", code=code))
        else:
            latest = await self.port.complaints_of(CHANNEL, event.user, limit=1)
            code = latest[0].code if latest else None
            text = (self.port.status_text(latest[0], language, CHANNEL) if latest
                    else self.port.texts.get(language, "sms.status_help", example=example))
        await self.port.reply(Outgoing(channel=CHANNEL, recipient=event.user, text=text, key=f"zalo-status:{event.msg_id}",
                                       kind="status_reply", origin="reply", language=language, tracking_code=code,
                                       status_url=self.port.track_url(code) if code else None))

    async def _shared_info(self, event: Event) -> None:
        """A phone number the citizen shared: a way to reach them, handed to the domain."""
        phone = _e164(event.info.get("phone", ""), self.port.config.service.phone_region)
        if phone is None:
            log.info("zalo shared info without a usable phone number")
            return
        language = await self.port.language_of(CHANNEL, event.user) or self.port.texts.language(None)
        name = _clean(event.info.get("name", ""))[:100] or "-"
        latest = await self.port.complaints_of(CHANNEL, event.user, limit=1)
        open_code = latest[0].code if latest and not latest[0].finished else None
        inbound = self._inbound(replace(event, msg_id=f"info:{event.user}:{event.timestamp}"),
                                self._t(language, "shared_info", name=name, phone=phone),
                                reply_to=(("sms", phone),), tracking_codes=(open_code,) if open_code else (),
                                # With no open complaint it is kept, not filed as one.
                                automated=open_code is None, continues_within_hours=0.0)
        result = await self.port.receive(inbound)
        if result.outcome != "duplicate":
            await self.port.reply(Outgoing(channel=CHANNEL, recipient=event.user, key=f"zalo-info:{event.user}:"
                                           f"{event.timestamp}", text=self._t(language, "phone_thanks"),
                                           kind="phone_thanks", origin="reply", language=language))
        log.info("zalo phone shared", extra={"fields": {"phone": mask_phone(phone), "code": open_code or "-"}})


def _clean(text: str) -> str:
    """Text without control characters (but keeping line breaks), trimmed."""
    return "".join(c for c in text if c in "\n\t" or c.isprintable()).strip()


def _media_type(event_name: str) -> str:
    return {"user_send_audio": "audio/amr", "user_send_video": "video/mp4"}.get(event_name, "application/octet-stream")


def _e164(raw: str, region: str) -> str | None:
    """A shared phone number in E.164 (Zalo sends 84xxxxxxxxx), or None."""
    raw = raw.strip()
    if raw.startswith("84") and raw.isdigit():
        raw = "+" + raw
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
