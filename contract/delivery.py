"""Sending: the protocol every channel's sender follows, and the errors it raises.

The outbox hands a ``Sender`` one ``Outgoing`` at a time. The sender returns the
provider's id for it, or raises a transient error (the outbox tries again later) or a
permanent one (the outbox gives up and records why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from contract.messages import Outgoing


class DeliveryError(Exception):
    """A message could not be sent."""


class TransientDeliveryError(DeliveryError):
    """Sending failed for now (network, 5xx, rate limit); the outbox tries again later."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class UnknownDeliveryError(TransientDeliveryError):
    """The provider did not say whether it took the message (no answer in time, the
    connection dropped after the request was sent). The outbox does not count it failed:
    before the next attempt it looks the message up where the sender can (``lookup``),
    else sends it again, with our reference so that a provider that dedupes does."""


class PermanentDeliveryError(DeliveryError):
    """Sending can never succeed (bad number, blocked bot); the outbox gives up and
    tries the citizen's next contact point."""


@dataclass(frozen=True)
class ReplyWindow:
    """How long after a citizen's last message a channel may still write to them, and how
    many messages it may send in that time (Zalo's consultation window). The domain
    chooses another way to reach a citizen outside it."""

    hours: float
    messages: int | None = None  # None: no limit on the number inside the window


class Sender(Protocol):
    """Sends outgoing messages for one channel.

    A sender may also have ``window`` (a ``ReplyWindow``: the channel may write to a
    citizen only for a while after their last message) and ``kinds`` (a set of message
    kinds: the only ones it can carry, as a template message service has templates for
    some); the domain reads both when it chooses how to reach a citizen. And it may have
    ``async lookup(message, since) -> Sequence[str]``: after an attempt whose outcome is
    unknown, the provider's ids of the messages it sent to the recipient with this
    message's content no earlier than ``since`` (a moment before the row was queued), newest
    first, none when it has no such message (raise when it cannot tell). The outbox takes
    the first that no other row of ours is recorded with, so the message is not sent twice,
    and a message that only looks the same (the same reply to the same citizen earlier) is
    not taken for it.
    With ``lookup`` it may have ``looks_up(message) -> bool``: False for a message the
    provider cannot be asked about (a Zalo message with photos), which the outbox sends
    with those of the channels that cannot be asked, a few at a time.
    """

    channel: str

    async def send(self, message: Outgoing) -> str | None:
        """Send one message; return the channel's id for it."""
        ...
