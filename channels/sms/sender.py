"""Sends the outbox's SMS through the configured gateways.

Each message goes through the gateway it names (``via``: the one the citizen wrote
through, so an answer goes back the way the request came) and otherwise through the
first configured gateway. Its text is
prepared for SMS on the way: plain letters when ``sms.ascii_only`` is on, and shortened
to ``sms.max_segments`` parts, ending with the complaint's status link, when too long.
Network failures and timeouts are transient (the outbox retries); what an operator's
HTTP answer means is decided in ``common.fail``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping

import aiohttp

from bot.logs import mask_phone
from bot.port import Port
from contract.delivery import PermanentDeliveryError, TransientDeliveryError
from contract.messages import Outgoing
from channels.sms.common import Gateway
from channels.sms.config import SmsConfig
from channels.sms.dialects import DIALECTS
from channels.sms.text import prepare

log = logging.getLogger(__name__)

E164 = re.compile(r"\+[1-9]\d{6,14}")


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
            external_id = await DIALECTS[gateway.kind].send(self.http, gateway, message.recipient, text, message.key)
        except asyncio.TimeoutError:
            raise TransientDeliveryError(f"{gateway.name}: no answer from the gateway in time") from None
        except aiohttp.ClientError as error:
            # The error names the gateway's host, never the recipient.
            raise TransientDeliveryError(f"{gateway.name}: cannot reach the gateway: {type(error).__name__}") from None
        log.info("sms sent", extra={"fields": {"gateway": gateway.name, "to": mask_phone(message.recipient),
                                               "key": message.key, "chars": len(text)}})
        return external_id
