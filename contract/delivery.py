"""Sending: the protocol every channel's sender follows, and the errors it raises.

The outbox hands a ``Sender`` one ``Outgoing`` at a time. The sender returns the
provider's id for it, or raises a transient error (the outbox tries again later) or a
permanent one (the outbox gives up and records why).
"""

from __future__ import annotations

from typing import Protocol

from contract.messages import Outgoing


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
