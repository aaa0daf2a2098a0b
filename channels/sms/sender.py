"""Sends the outbox's SMS through the configured gateways.

Each message goes through the gateway it names (``via``: the one the citizen wrote
through, so an answer goes back the way the request came) and otherwise through the
first configured gateway. Its text is
prepared for SMS on the way: plain letters when ``sms.ascii_only`` is on, and shortened
to ``sms.max_segments`` parts, ending with the complaint's status link, when too long.
A gateway that could not be reached is a transient failure (the outbox retries); one that
took the request and gave no answer in time, or dropped the connection before answering,
may have taken the message: its outcome is unknown (``UnknownDeliveryError``). The next
attempt then looks the message up where the gateway allows (Twilio's message list), and
otherwise sends it again with the same reference, which the Android app (our message id)
and the generic gateway (``Idempotency-Key``) take as the same message. What an
operator's HTTP answer means is decided in ``common.fail``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta

import aiohttp

from bot.logs import mask_phone
from bot.port import Port
from contract.delivery import PermanentDeliveryError, TransientDeliveryError, UnknownDeliveryError
from contract.messages import Outgoing
from channels.sms.common import Gateway
from channels.sms.config import SmsConfig
from channels.sms.dialects import DIALECTS
from channels.sms.text import prepare

log = logging.getLogger(__name__)

E164 = re.compile(r"\+[1-9]\d{6,14}")
# How far back a look-up searches: beyond any attempt's backoff.
LOOKUP_SPAN = timedelta(days=2)


class SmsSender:
    """The outbox's sender for channel "sms"."""

    channel = "sms"

    def __init__(self, port: Port, config: SmsConfig, gateways: Mapping[str, Gateway]):
        self.port = port
        self.config = config
        self.gateways = dict(gateways)
        self.default = next(iter(self.gateways.values()))
        self.http: aiohttp.ClientSession | None = None  # opened and closed by the app's lifecycle

    def gateway_for(self, message: Outgoing) -> Gateway:
        """The gateway the message names, else the first configured one."""
        return self.gateways.get(message.via or "", self.default)

    def text_for(self, message: Outgoing) -> str:
        """The message's text as it goes out by SMS."""
        url = message.status_url
        tail = self.port.texts.get(message.language, "sms.more", track_url=url) if url else ""
        return prepare(message.text, ascii_only=self.config.ascii_only, max_segments=self.config.max_segments,
                       tail=tail, prefix=self.port.config.service.tracking_prefix)

    def status_url(self, gateway: Gateway) -> str:
        """Where the gateway reports what became of our messages."""
        return f"{self.port.public_url.rstrip('/')}/webhooks/sms/{gateway.name}/status"

    async def send(self, message: Outgoing) -> str | None:
        """Send one SMS; return the gateway's id for it."""
        if not E164.fullmatch(message.recipient):
            # A sender name or short code: messages from those are recorded, never answered.
            raise PermanentDeliveryError("not a phone number that can receive SMS")
        if self.http is None:
            raise TransientDeliveryError("the SMS channel is not started")
        gateway = self.gateway_for(message)
        text = self.text_for(message)
        try:
            external_id = await DIALECTS[gateway.kind].send(self.http, gateway, message.recipient, text,
                                                            message.reference, self.status_url(gateway))
        except (asyncio.TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError):
            raise UnknownDeliveryError(f"{gateway.name}: the gateway gave no answer in time") from None
        except aiohttp.ClientError as error:
            # The error names the gateway's host, never the recipient.
            raise TransientDeliveryError(f"{gateway.name}: cannot reach the gateway: {type(error).__name__}") from None
        log.info("sms sent", extra={"fields": {"gateway": gateway.name, "to": mask_phone(message.recipient),
                                               "key": message.key, "chars": len(text)}})
        return external_id

    async def lookup(self, message: Outgoing, since: datetime) -> list[str]:
        """After an attempt with no answer: the gateway's ids of the messages it sent to the
        recipient with this text no earlier than ``since`` (nor ``LOOKUP_SPAN`` ago), newest
        first; the outbox takes the newest no other row of ours is recorded with.

        Only Twilio can be asked; the other gateways recognise the message when it is sent
        again with the same reference, so "not found" (send again) is right for them.
        """
        gateway = self.gateway_for(message)
        dialect = DIALECTS[gateway.kind]
        if self.http is None or not hasattr(dialect, "lookup"):
            return []
        since = max(since, self.port.clock.now() - LOOKUP_SPAN)
        try:
            return await dialect.lookup(self.http, gateway, message.recipient, self.text_for(message), since)
        except (asyncio.TimeoutError, aiohttp.ClientError) as error:
            raise TransientDeliveryError(f"{gateway.name}: cannot ask the gateway: {type(error).__name__}") from None
