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

from bot.port import Port
from channels.email.config import EmailConfig
from channels.email.relay import RelaySender
from channels.email.server import MailServer
from contract.delivery import Sender

MAIL_SERVER = web.AppKey("mail_server", MailServer)


def setup(app: web.Application, port: Port, config: EmailConfig, *, send_timeout: float,
          shutdown_timeout: float, listen: bool = True) -> dict[str, Sender]:
    """Add the SMTP server to the application; return the email sender.

    ``send_timeout``: the outbox's limit for one send; ``shutdown_timeout``: how long the
    mails being stored may take to finish when the service stops; ``listen``: False in
    the workers of ``serve --workers N`` after the first, which send mail but leave the
    SMTP port to worker 0.
    """
    server = MailServer(port, config)
    app[MAIL_SERVER] = server
    # aiosmtpd logs every SMTP command line at INFO: noise, and citizens' addresses in it.
    smtp_log = logging.getLogger("mail.log")
    if smtp_log.level == logging.NOTSET:
        smtp_log.setLevel(logging.WARNING)

    relay = RelaySender(config, port.clock, display_name=port.config.service.name, timeout=send_timeout,
                        sessions=port.config.outbox.concurrency)  # the most the outbox sends at once

    async def smtp_server(app: web.Application) -> AsyncIterator[None]:
        if listen:
            await server.start()
        yield
        if listen:
            await server.stop(shutdown_timeout)
        await relay.close()  # the dispatcher, which sends through it, has stopped by now

    app.cleanup_ctx.append(smtp_server)
    return {"email": relay}
