"""The two messages that cross between a channel and the domain.

A channel turns its provider's payload into an ``Inbound`` and hands it to the port. The
domain queues every message it sends as an ``Outgoing``, complete when queued: the text
in the recipient's language, what it is (``kind``), who it is for (``audience``), the
complaint it is about, the thread ids, the files, and the buttons a chat channel may
offer (``actions``). The outbox stores it as JSON (``to_payload``) and hands the channel's
``Sender`` the same value back (``from_payload``); a sender never reads the store.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

# Every channel's name, as stored on contacts, messages and outbox rows.
CHANNELS = ("web", "sms", "email", "telegram", "zalo", "open311")

Audience = Literal["citizen", "staff"]
# What a provider reported of a message after it was sent.
DeliveryState = Literal["sent", "delivered", "undelivered", "failed"]
# Who wrote it, as RFC 3834 asks mail to say: an officer ("person"), the service answering
# the citizen's own message at once ("reply"), or the service on its own ("system").
Origin = Literal["person", "reply", "system"]


@dataclass(frozen=True)
class Attachment:
    """A file that came with a message, or goes out with one."""

    filename: str
    content_type: str
    data: bytes = b""
    reference: str | None = None  # a URL or a provider's file id, when the bytes stay elsewhere
    # A file already in the store (a citizen's photo sent on to an officer): the outbox
    # loads its bytes when it hands the message to the sender.
    stored_id: int | None = None
    caption: str = ""
    content_id: str | None = None  # shown inline in an HTML mail (a digest's chart)


@dataclass(frozen=True)
class Location:
    """A point the citizen gave, in WGS 84 degrees."""

    latitude: float
    longitude: float


@dataclass(frozen=True)
class Inbound:
    """One message from a citizen, as a channel understood it."""

    channel: str  # one of CHANNELS
    external_id: str | None  # the channel's own message id: a retry carries the same one
    sender: str | None  # E.164 phone, email address, Telegram chat id; None for an anonymous web form
    text: str
    received_at: datetime
    sender_name: str | None = None
    subject: str | None = None
    language: str | None = None  # "vi" or "en" when the channel knows it
    attachments: tuple[Attachment, ...] = ()
    tracking_codes: tuple[str, ...] = ()  # codes the channel found outside the text (a form field)
    in_reply_to: tuple[str, ...] = ()  # ids of our own outgoing messages this replies to
    location: Location | None = None
    category: str | None = None
    area: str | None = None  # ward or district as the citizen wrote it
    # Where answers go when not to the sender, best first, as (channel, address): a web-form
    # citizen may leave a phone ("sms") and an email address ("email").
    reply_to: tuple[tuple[str, str], ...] = ()
    # Sent by a machine (a bounce, an auto-reply, a mailer-daemon): recorded, never
    # answered, so two robots never write to each other forever (RFC 3834).
    automated: bool = False
    # The gateway or account it came through (one of several SMS gateways): answers go
    # back the same way.
    via: str | None = None
    # A channel without reply threading (SMS): a message from the same sender within this
    # many hours of their open complaint's last change continues it. 0: never.
    continues_within_hours: float = 0.0
    # The citizen lets the complaint's text be shown publicly (personal data removed).
    public: bool = False
    # The channel's greeting, due only when the sender is new to the store (Zalo: a
    # citizen's first contact): intake queues it in the transaction that stores the
    # message, before its acknowledgement, when no contact of the sender's was stored
    # before it; once for a citizen's messages in one batch, never for a repeat delivery.
    # So the channel need not look the citizen up before handing the message over.
    greeting: Outgoing | None = None


@dataclass(frozen=True)
class Outgoing:
    """One message to send on a channel, complete as the outbox queued it."""

    channel: str
    recipient: str
    text: str
    key: str  # idempotency key: the same key is queued once
    kind: str = "message"  # what it is: "acknowledgement", "answer", "survey", "new_complaint", "digest", ...
    audience: Audience = "citizen"
    origin: Origin = "system"
    language: str = "vi"
    subject: str | None = None
    tracking_code: str | None = None  # the complaint it is about
    status_url: str | None = None  # the complaint's public status page
    in_reply_to: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    via: str | None = None  # the gateway or account to send through (the one the citizen used)
    # What the recipient may do from a chat, as buttons: "claim", "reply", "reassign",
    # "resolve" (an officer), "rate" (a citizen, under a survey).
    actions: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        """Our own id for the message, for providers that take one: see ``reference_of``."""
        return reference_of(self.key)

    def to_payload(self) -> dict:
        """The stored form (JSON): everything but the outbox row's own columns."""
        return {
            "text": self.text, "kind": self.kind, "audience": self.audience, "origin": self.origin,
            "language": self.language,
            "subject": self.subject, "code": self.tracking_code, "status_url": self.status_url,
            "in_reply_to": list(self.in_reply_to), "via": self.via, "actions": list(self.actions),
            "attachments": [_attachment_payload(item) for item in self.attachments],
        }

    @classmethod
    def from_payload(cls, channel: str, recipient: str, key: str, payload: dict) -> Outgoing:
        """The message as queued, from its stored form."""
        return cls(
            channel=channel, recipient=recipient, key=key, text=payload["text"],
            kind=payload.get("kind") or "message", audience=payload.get("audience") or "citizen",
            origin=payload.get("origin") or "system",
            language=payload.get("language") or "vi", subject=payload.get("subject"),
            tracking_code=payload.get("code"), status_url=payload.get("status_url"),
            in_reply_to=tuple(payload.get("in_reply_to") or ()), via=payload.get("via"),
            actions=tuple(payload.get("actions") or ()),
            attachments=tuple(_attachment_from(item) for item in payload.get("attachments") or ()),
        )


def reference_of(key: str) -> str:
    """Our id for the message queued under this key, stable across attempts and processes.

    A gateway that takes a message id of ours (SMS Gateway for Android), an Idempotency-Key
    (the generic gateway) or a reference in a status callback URL (Twilio) gets this, so a
    retry is recognised as the same message and a delivery report finds its message.
    """
    return "fi-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _attachment_payload(item: Attachment) -> dict:
    return {"filename": item.filename, "content_type": item.content_type, "reference": item.reference,
            "stored_id": item.stored_id, "caption": item.caption, "content_id": item.content_id,
            # Bytes travel base64 only for a file made for the message (a chart); a stored
            # file is named by its id.
            "base64": base64.b64encode(item.data).decode("ascii") if item.data and item.stored_id is None else None}


def _attachment_from(item: dict) -> Attachment:
    return Attachment(filename=item["filename"], content_type=item["content_type"],
                      data=base64.b64decode(item["base64"]) if item.get("base64") else b"",
                      reference=item.get("reference"), stored_id=item.get("stored_id"),
                      caption=item.get("caption") or "", content_id=item.get("content_id"))


def with_files(message: Outgoing, files: dict[int, bytes]) -> Outgoing:
    """The message with the bytes of its stored files filled in (those found)."""
    if not any(item.stored_id is not None for item in message.attachments):
        return message
    attachments = tuple(
        Attachment(item.filename, item.content_type, files.get(item.stored_id, b""), item.reference, item.stored_id,
                   item.caption, item.content_id) if item.stored_id is not None else item
        for item in message.attachments)
    return Outgoing(**{**message.__dict__, "attachments": attachments})


__all__ = ["CHANNELS", "Attachment", "Audience", "DeliveryState", "Inbound", "Location", "Origin", "Outgoing",
           "reference_of", "with_files"]
