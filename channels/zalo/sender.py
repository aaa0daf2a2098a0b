"""The outbox's senders for Zalo: consultation messages to a citizen's Zalo id (channel
"zalo") and ZNS template messages to a phone number (channel "zns").

A consultation message (``POST {api_base}/v3.0/oa/message/cs``) reaches a citizen who wrote
to the OA: free within ``zalo.window_hours`` (48) of their last interaction, billed after
that, refused by Zalo after 7 days (-230). The sender declares that window
(``window = ReplyWindow(window_hours, free_replies or None)``) so the domain chooses another
way outside it; when Zalo refuses anyway (window closed, out of quota, the citizen blocked
the OA or left it), the error is permanent for this message on this channel, with Zalo's
reason. Texts go up to Zalo's 2000 characters (longer ones are shortened, ending with the
status page); a photo with a web address goes as an image attachment after the text. A
send whose outcome is unknown is looked up in the OA's conversation with the citizen before
it goes again (``ZaloSender.lookup``).

A ZNS message (ZBS Template Message, ``POST {zns_base}/message/template``) carries only the
kinds of message that have an approved template in ``[zalo.zns_templates]`` (``kinds``); its
``template_data`` is filled from the message's fields as configured, and its
``tracking_id`` is derived from the outbox key, so Zalo's delivery reports name our message.
The last quota Zalo reported is kept for ``feedback-intake zalo status``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timedelta

from bot.logs import mask_phone
from bot.port import Port
from channels.zalo.api import ZaloApi
from channels.zalo.config import ZaloConfig
from contract.delivery import PermanentDeliveryError, ReplyWindow
from contract.messages import Outgoing

log = logging.getLogger(__name__)

TEXT_LIMIT = 2000  # Zalo's limit for a consultation text (-210 beyond it)
# Asking what became of a send: the conversation's latest messages, ten a page (Zalo
# refuses more, -210), at most this many pages and no further back than this.
LOOKUP_PAGE, LOOKUP_PAGES, LOOKUP_SPAN = 10, 5, timedelta(days=2)
QUOTA_KEY = "zalo-zns-quota"  # the last ZNS quota Zalo reported, as a stored value
# What Zalo's refusals mean, for the reason the outbox records.
MEANINGS = {
    -211: "out of quota for consultation replies",
    -213: "the citizen does not follow the OA",
    -227: "the citizen's Zalo account is banned or inactive",
    -230: "reply window closed: no interaction with the OA in the past 7 days",
    -232: "reply window closed: the citizen has not interacted with the OA",
    -244: "the citizen has blocked this kind of message from the OA",
    -108: "not a phone number ZNS accepts",
    -109: "the ZNS template id is not approved for this OA (check [zalo.zns_templates])",
    -111: "the ZNS template data is empty",
    -112: "the ZNS template data does not match the template (check [zalo.zns_templates] params)",
    -1122: "a ZNS template parameter is missing (check [zalo.zns_templates] params)",
    -115: "out of ZBS balance",
    -118: "no Zalo account with this phone number",
    -144: "the OA's daily ZNS quota is used up",
}


def _explained(error: PermanentDeliveryError) -> PermanentDeliveryError:
    found = re.search(r"\((-\d+)\)", str(error))
    meaning = MEANINGS.get(int(found[1])) if found else None
    return PermanentDeliveryError(f"{error} [{meaning}]") if meaning else error


def shorten(text: str, limit: int, tail: str = "") -> str:
    """The text within limit characters, cut between words, ending with tail when cut."""
    if len(text) <= limit:
        return text
    room = limit - len(tail) - 2 if tail else limit - 1  # the ellipsis, and a line break before the tail
    cut = text[:room]
    if not text[room].isspace() and " " in cut:
        cut = cut.rsplit(None, 1)[0]  # not inside a word
    cut = cut.rstrip()
    return f"{cut}…\n{tail}".rstrip() if tail else f"{cut}…"


class ZaloSender:
    """The outbox's sender for channel "zalo": consultation messages to a citizen's Zalo id."""

    channel = "zalo"

    def __init__(self, port: Port, config: ZaloConfig, api: ZaloApi):
        self.port = port
        self.config = config
        self.api = api
        self.window = ReplyWindow(config.window_hours, config.free_replies or None)

    def text_for(self, message: Outgoing) -> str:
        """The text as it goes out: at most Zalo's 2000 characters, ending with the status page when cut."""
        url = message.status_url
        tail = self.port.texts.get(message.language, "sms.more", track_url=url) if url else ""
        return shorten(message.text, TEXT_LIMIT, tail)

    async def send(self, message: Outgoing) -> str | None:
        """Send one consultation message (and its photos with a web address); return Zalo's id."""
        if not re.fullmatch(r"\d{1,40}", message.recipient):
            raise PermanentDeliveryError("zalo: not a Zalo user id")
        url = f"{self.config.api_base_url}/v3.0/oa/message/cs"
        recipient = {"user_id": message.recipient}
        try:
            data = await self.api.call(url, {"recipient": recipient, "message": {"text": self.text_for(message)}})
            for image in (a for a in message.attachments if a.content_type.startswith("image/")
                          and (a.reference or "").startswith(("https://", "http://"))):
                await self.api.call(url, {"recipient": recipient, "message": {"attachment": {
                    "type": "template", "payload": {"template_type": "media", "elements": [
                        {"media_type": "image", "url": image.reference}]}}}})
        except PermanentDeliveryError as error:
            raise _explained(error) from None
        log.info("zalo sent", extra={"fields": {"key": message.key, "kind": message.kind}})
        found = data.get("message_id")
        return str(found) if found else None

    def looks_up(self, message: Outgoing) -> bool:
        """Whether a lost send of this message can be looked up: not one whose photos follow
        its text (the dispatcher sends such messages a few at a time, as on channels that
        cannot be asked, so a crash sends at most those again)."""
        return not any(a.content_type.startswith("image/") and (a.reference or "").startswith(("https://", "http://"))
                       for a in message.attachments)

    async def lookup(self, message: Outgoing, since: datetime) -> list[str]:
        """After an attempt with no answer (or a crash while sending): Zalo's ids of the
        messages the OA's conversation with the citizen shows with this text, sent no earlier
        than ``since``, newest first; none: send it.

        Zalo takes no key of ours to recognise a message sent twice, but it lists the
        conversation (``GET {api_base}/v2.0/oa/conversation``, newest first, ten a page): a
        message the OA sent there (``src`` 0) with this text, no older than ``since`` nor
        ``LOOKUP_SPAN``, may be this one; the outbox takes the newest that no other row of ours
        is recorded with. Because it can be asked, the dispatcher sends a whole batch of Zalo
        messages at once, as it does SMS.

        A message whose photos follow its text is not asked about: its text found would not
        say whether the photos went, so it is sent again whole (its text may arrive twice).
        When Zalo refuses the listing (the app lacks the permission to read conversations),
        the message is sent again, as before there was a look-up; the network or Zalo's rate
        limit leaves it unsure for the next attempt.
        """
        if not self.looks_up(message):
            return []
        if not re.fullmatch(r"\d{1,40}", message.recipient):
            return []  # never sent: send() refuses it for good
        text = self.text_for(message)
        bound = max(since, self.port.clock.now() - LOOKUP_SPAN).timestamp() * 1000
        url = f"{self.config.api_base_url}/v2.0/oa/conversation"
        found: list[str] = []
        for page in range(LOOKUP_PAGES):
            try:
                items = await self.api.read(url, {"user_id": message.recipient, "offset": page * LOOKUP_PAGE,
                                                  "count": LOOKUP_PAGE})
            except PermanentDeliveryError as error:
                log.warning("zalo: cannot read the conversation to look a message up; sending it again",
                            extra={"fields": {"key": message.key, "error": str(_explained(error))}})
                return []
            for item in items:
                if not isinstance(item, dict):
                    continue
                at = _ms(item.get("time"))
                if at is not None and at < bound:
                    return found
                if item.get("src") in (0, "0") and item.get("message") == text and item.get("message_id"):
                    found.append(str(item["message_id"]))
            if len(items) < LOOKUP_PAGE:
                break
        return found


def _ms(value: object) -> float | None:
    """A time in a Zalo listing (milliseconds since the epoch, a number or a string), if readable."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def zns_phone(recipient: str) -> str | None:
    """A Vietnamese mobile number as ZNS takes it (84xxxxxxxxx), from +84…, 84… or 0…."""
    digits = re.sub(r"\D", "", recipient)
    if digits.startswith("84") and len(digits) == 11:
        national = digits[2:]
    elif digits.startswith("0") and len(digits) == 10:
        national = digits[1:]
    else:
        return None
    return f"84{national}" if re.fullmatch(r"[35789]\d{8}", national) else None


def tracking_id(key: str) -> str:
    """Our id for a ZNS message, from its outbox key (the same key gives the same id)."""
    return key if len(key) <= 48 and re.fullmatch(r"[\w:.-]+", key) else \
        "fi-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


class ZnsSender:
    """The outbox's sender for channel "zns": template messages to a phone number."""

    channel = "zns"

    def __init__(self, port: Port, config: ZaloConfig, api: ZaloApi):
        self.port = port
        self.config = config
        self.api = api
        self.kinds = frozenset(config.zns_templates)

    def template_data(self, message: Outgoing) -> dict[str, str]:
        """The template's parameters, filled from the message as ``params`` says."""
        template = self.config.zns_templates[message.kind]
        service = self.port.config.service
        values = {
            "code": message.tracking_code or "",
            "status_url": message.status_url or "",
            "text": message.text,
            "subject": message.subject or "",
            "service": service.name_en if message.language == "en" else service.name,
            "date": self.port.clock.now().astimezone(self.port.config.tz).strftime("%d/%m/%Y"),
        }
        return {parameter: shorten(values[field], template.max_length) for field, parameter in template.params.items()}

    async def send(self, message: Outgoing) -> str | None:
        """Send one template message; return Zalo's id for it."""
        template = self.config.zns_templates.get(message.kind)
        if template is None:
            raise PermanentDeliveryError(f"zns: no template for messages of kind {message.kind!r}")
        phone = zns_phone(message.recipient)
        if phone is None:
            raise PermanentDeliveryError("zns: not a Vietnamese mobile number")
        body = {"phone": phone, "template_id": template.template_id, "template_data": self.template_data(message),
                "tracking_id": tracking_id(message.key)}
        try:
            data = await self.api.call(f"{self.config.zns_base_url}/message/template", body)
        except PermanentDeliveryError as error:
            raise _explained(error) from None
        quota = data.get("quota")
        if isinstance(quota, dict):
            await self.port.store_credential(QUOTA_KEY, {
                "daily": quota.get("dailyQuota"), "remaining": quota.get("remainingQuota"),
                "at": self.port.clock.now().isoformat()})
        log.info("zns sent", extra={"fields": {"key": message.key, "kind": message.kind, "to": mask_phone(phone)}})
        found = data.get("msg_id")
        return str(found) if found else None
