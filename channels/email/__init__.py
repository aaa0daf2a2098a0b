"""The email channel: an SMTP server that takes citizens' complaints, and a relay sender
that carries answers to citizens and notifications to staff.

``setup`` adds the SMTP server's lifecycle to the application (it starts after the
database and stops before it, so every mail being stored finishes) and returns the
sender the outbox dispatcher uses for the "email" channel. Parsing lives in
``parse`` (MIME) with ``headers`` and ``text``; the SMTP side in ``server``; sending
in ``relay``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bot.core import Core
from channels.base import Sender
from channels.email.relay import RelaySender
from channels.email.server import MailServer

MAIL_SERVER = web.AppKey("mail_server", MailServer)


def setup(app: web.Application, core: Core) -> dict[str, Sender]:
    """Add the SMTP server to the application; return the email sender."""
    server = MailServer(core)
    app[MAIL_SERVER] = server
    # aiosmtpd logs every SMTP command line at INFO: noise, and citizens' addresses in it.
    smtp_log = logging.getLogger("mail.log")
    if smtp_log.level == logging.NOTSET:
        smtp_log.setLevel(logging.WARNING)

    relay = RelaySender(core.config, core.clock)

    async def smtp_server(app: web.Application) -> AsyncIterator[None]:
        await server.start()
        yield
        await server.stop(core.config.web.shutdown_timeout_seconds)
        await relay.close()  # the dispatcher, which sends through it, has stopped by now

    app.cleanup_ctx.append(smtp_server)
    return {"email": relay}
