"""The Zalo channel: citizens write to the city's Official Account (OA), where most Vietnamese
already chat; answers go back as consultation messages, and what a citizen must not miss
goes by ZNS template message when the chat's free window is closed.

``setup`` is what the wiring calls when ``[zalo] enabled`` is true: it adds
``POST /webhooks/zalo`` and one HTTP client for Zalo to the application and returns two
senders, "zalo" (consultation messages, with the reply window the domain reads) and "zns"
(template messages by phone, for the kinds that have a template).

Modules: ``events`` (the signature and Zalo's event shapes), ``webhook`` (events to intake
and answers), ``api`` (authenticated calls, token renewal, Zalo's error envelope),
``sender`` (the two senders), ``config`` ([zalo]).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bot.port import Port
from channels.zalo.api import ZaloApi
from channels.zalo.config import ZaloConfig
from channels.zalo.sender import ZaloSender, ZnsSender
from channels.zalo.webhook import PATH, ZaloWebhook
from contract.delivery import Sender
from contract.schema import secret

__all__ = ("WEBHOOK", "setup")

WEBHOOK = web.AppKey("zalo_webhook", ZaloWebhook)


def setup(app: web.Application, port: Port, config: ZaloConfig, *, send_timeout: float) -> dict[str, Sender]:
    """Add the Zalo webhook and its HTTP client to the app; return the "zalo" and "zns" senders.

    ``send_timeout``: the outbox's limit for one send (a refresh and a retry fit in it).
    """
    oa_secret, app_secret = secret(config.oa_secret_env), secret(config.app_secret_env)
    if not oa_secret or not app_secret:
        missing = "oa_secret_env" if not oa_secret else "app_secret_env"
        raise RuntimeError(f"zalo.{missing}: environment variable {getattr(config, missing)} is not set")
    webhook = ZaloWebhook(port, config, oa_secret)
    app[WEBHOOK] = webhook
    app.router.add_post(PATH, webhook.receive)
    api = ZaloApi(port, config, app_secret, port.clock)
    # A third of the outbox's limit per call: a call, a refresh and the call again fit in one send.
    timeout = aiohttp.ClientTimeout(total=send_timeout / 3)

    async def http_client(app: web.Application) -> AsyncIterator[None]:
        """One HTTP client for Zalo, open while the app runs (closed after the dispatcher stops)."""
        http = aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "feedback-intake"})
        api.http = webhook.http = http
        yield
        api.http = webhook.http = None
        await http.close()

    app.cleanup_ctx.append(http_client)
    senders: dict[str, Sender] = {"zalo": ZaloSender(port, config, api)}
    if config.zns_templates:
        senders["zns"] = ZnsSender(port, config, api)
    return senders
