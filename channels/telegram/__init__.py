"""The Telegram channel: citizens file and follow their complaints in a chat, officers get
notifications with the whole case and act on them, all through python-telegram-bot.

``setup`` is what the wiring calls when ``[telegram] enabled`` is true: it adds the
webhook route (webhook mode) and the bot's lifecycle to the application and returns the
sender the outbox uses. The bot runs only when its token's environment variable is set.

Modules: ``runtime`` (the Application, polling or webhook, routing updates), ``citizen``
(the conversation with citizens), ``staff`` (notifications and staff commands), ``sender``
(outbox messages to Bot API calls, Telegram's errors to delivery errors), ``common``.
"""

from __future__ import annotations

from aiohttp import web

from bot.port import Port
from channels.telegram.common import CHANNEL, log
from channels.telegram.config import TelegramConfig
from channels.telegram.runtime import WEBHOOK_PATH, TelegramChannel, quiet_http_loggers
from contract.delivery import Sender
from contract.schema import secret

TELEGRAM = web.AppKey("telegram", TelegramChannel)


def setup(app: web.Application, port: Port, config: TelegramConfig, primary: bool = True) -> dict[str, Sender]:
    """Add the Telegram bot to the application; return its sender (none when it is off).

    ``primary``: False in the workers of ``serve --workers N`` after the first: only
    worker 0 polls Telegram for updates (two pollers of one bot conflict) or registers
    the webhook; every worker sends, and in webhook mode any of them takes updates.
    """
    token = secret(config.token_env)
    if not token:
        log.warning("telegram off: environment variable is not set", extra={"fields": {"token_env": config.token_env}})
        return {}
    quiet_http_loggers()
    channel = TelegramChannel(port, config, token, primary=primary)
    app[TELEGRAM] = channel
    if channel.webhook_mode:
        app.router.add_post(WEBHOOK_PATH, channel.webhook)
    app.cleanup_ctx.append(channel.lifecycle)
    return {CHANNEL: channel.sender}
