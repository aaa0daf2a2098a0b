"""The SMS channel: citizens text the city's number; a gateway posts each SMS to us and
sends our answers.

One module per gateway dialect (``twilio``, ``android``, ``generic``), each configured as
an ``[[sms.gateways]]`` table and reached at ``POST /webhooks/sms/{name}``; ``webhook``
turns a signed SMS into an ``Inbound`` for intake (or answers a "TT <code>" status
request), ``sender`` sends the outbox's SMS through the right gateway, ``text`` fits
outgoing texts to SMS parts. ``setup`` wires it into the application.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bot.port import Port
from channels.sms.common import Gateway
from channels.sms.config import SmsConfig
from channels.sms.sender import SmsSender
from channels.sms.webhook import CHANNEL, SmsChannel, receive
from contract.delivery import Sender

__all__ = ("setup",)


def setup(app: web.Application, port: Port, config: SmsConfig, *, send_timeout: float) -> dict[str, Sender]:
    """Add the SMS webhook route and the gateways' HTTP client to the app; return the SMS sender.

    ``send_timeout``: the outbox's limit for one send.
    """
    gateways = {gateway.name: Gateway.from_config(index, gateway) for index, gateway in enumerate(config.gateways)}
    app[CHANNEL] = SmsChannel(port, config, gateways)
    app.router.add_post("/webhooks/sms/{gateway}", receive)
    app.router.add_post("/webhooks/sms/{gateway}/status", receive)
    sender = SmsSender(port, config, gateways)
    # A little under the outbox's own limit, so that a slow gateway reads as "no answer in time".
    timeout = aiohttp.ClientTimeout(total=send_timeout * 0.9)

    async def http_client(app: web.Application) -> AsyncIterator[None]:
        """One HTTP client for every gateway, open while the app runs (closed after the dispatcher stops)."""
        sender.http = aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "feedback-intake"})
        yield
        await sender.http.close()
        sender.http = None

    app.cleanup_ctx.append(http_client)
    return {"sms": sender}
