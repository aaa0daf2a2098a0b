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

from bot.core import Core
from channels.base import Sender
from channels.sms.common import Gateway
from channels.sms.sender import SmsSender
from channels.sms.webhook import CHANNEL, SmsChannel, receive

__all__ = ("setup",)


def setup(app: web.Application, core: Core) -> dict[str, Sender]:
    """Add the SMS webhook route and the gateways' HTTP client to the app; return the SMS sender."""
    gateways = {config.name: Gateway.from_config(index, config)
                for index, config in enumerate(core.config.sms.gateways)}
    app[CHANNEL] = SmsChannel(core, gateways)
    app.router.add_post("/webhooks/sms/{gateway}", receive)
    sender = SmsSender(core, gateways)
    # A little under the outbox's own limit, so that a slow gateway reads as "no answer in time".
    timeout = aiohttp.ClientTimeout(total=core.config.outbox.send_timeout_seconds * 0.9)

    async def http_client(app: web.Application) -> AsyncIterator[None]:
        """One HTTP client for every gateway, open while the app runs (closed after the dispatcher stops)."""
        sender.http = aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "feedback-intake"})
        yield
        await sender.http.close()
        sender.http = None

    app.cleanup_ctx.append(http_client)
    return {"sms": sender}
