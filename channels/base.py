"""What crosses between a channel and the application: two plain dataclasses and the
Sender protocol.

A channel turns its provider's payload into an ``Inbound`` and awaits one call into
``bot/``. The outbox hands each queued message to the channel's ``Sender`` as an
``Outgoing``; the sender returns the provider's id for it, or raises a transient error
(try again later) or a permanent one (give up and record why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Attachment:
    """A file that came with a message, or goes out with one."""

    filename: str
    content_type: str
    data: bytes = b""
    reference: str | None = None  # a URL or stored path, when the bytes stay elsewhere


@dataclass(frozen=True)
class Location:
    """A point the citizen gave, in WGS 84 degrees."""

    latitude: float
    longitude: float


@dataclass(frozen=True)
class Inbound:
    """One message from a citizen, as a channel understood it."""

    channel: str  # "web", "sms", "email", "telegram", "open311"
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


@dataclass(frozen=True)
class Outgoing:
    """One message to send on a channel, as the outbox queued it."""

    channel: str
    recipient: str
    text: str
    key: str  # idempotency key: the same key is never sent twice
    subject: str | None = None
    in_reply_to: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    language: str = "vi"
    metadata: dict = field(default_factory=dict)


class DeliveryError(Exception):
    """A message could not be sent."""


class TransientDeliveryError(DeliveryError):
    """Sending failed for now (network, 5xx, rate limit); the outbox tries again later."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Sending can never succeed (bad number, blocked bot); the outbox gives up."""


class Sender(Protocol):
    """Sends outgoing messages for one channel."""

    channel: str

    async def send(self, message: Outgoing) -> str | None:
        """Send one message; return the channel's id for it."""
        ...
