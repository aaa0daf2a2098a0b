"""Builds and runs everything in one asyncio loop: the aiohttp application, the outbox
dispatcher and, as they arrive, the SMTP server, Telegram and the scheduler.

Each part opens and closes in the application's ``cleanup_ctx``, closed in reverse
order: on SIGTERM aiohttp stops accepting connections, lets requests in flight finish
(so no complaint a citizen submitted is lost), then the dispatcher finishes the message
it is sending and stops (queued messages stay queued), then the database closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from aiohttp import web

from bot.clock import Clock
from bot.config import Config, secret
from bot.core import Core
from bot.outbox import Dispatcher
from bot.scheduler import Scheduler
from channels.base import Sender
from channels.web import routes

log = logging.getLogger(__name__)

DISPATCHER = web.AppKey("dispatcher", Dispatcher)

# The channels beside the web form, each on when its configuration says so. A channel's
# module has `setup(app, core) -> {channel name: Sender}`: it adds its routes and its
# lifecycles (servers, client sessions) to the app and returns its senders.
CHANNELS: tuple[tuple[str, Callable[[Config], bool]], ...] = (
    ("channels.sms", lambda config: bool(config.sms.gateways)),
    ("channels.email", lambda config: config.email.enabled),
    ("channels.telegram", lambda config: config.telegram.enabled),
)


def build_app(config: Config, *, clock: Clock | None = None, senders: Mapping[str, Sender] | None = None,
              run_dispatcher: bool = True, run_scheduler: bool = True) -> web.Application:
    """The whole service as one aiohttp application, not yet started."""
    app = web.Application(client_max_size=config.web.max_body_bytes, middlewares=[routes.pages_for_errors])
    core = Core.build(config, clock=clock)
    app[routes.CORE] = core
    app[routes.TEMPLATES] = routes.templates()

    async def database(app: web.Application) -> AsyncIterator[None]:
        await core.start()
        key = secret(config.web.csrf_secret_env)
        app[routes.CSRF_KEY] = key.encode() if key else await core.shared_key("csrf")
        yield
        await core.close()

    app.cleanup_ctx.append(database)
    channel_senders: dict[str, Sender] = {}
    for module, enabled in CHANNELS:
        if enabled(config):
            channel_senders.update(importlib.import_module(module).setup(app, core))
        else:
            log.info("channel off by configuration", extra={"fields": {"channel": module.rsplit(".", 1)[1]}})
    channel_senders.update(senders or {})

    async def dispatcher(app: web.Application) -> AsyncIterator[None]:
        app[DISPATCHER] = Dispatcher(core, channel_senders)
        task = asyncio.create_task(app[DISPATCHER].run(), name="outbox-dispatcher") if run_dispatcher else None
        yield
        app[DISPATCHER].stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=config.outbox.send_timeout_seconds + 5)

    async def scheduler(app: web.Application) -> AsyncIterator[None]:
        jobs = Scheduler(core)
        if run_scheduler:
            jobs.start()
        yield
        if run_scheduler:
            await jobs.stop()

    app.cleanup_ctx.append(dispatcher)
    app.cleanup_ctx.append(scheduler)
    routes.add_routes(app)
    return app


def serve(config: Config) -> None:
    """Run the service until SIGTERM or Ctrl-C, then shut down cleanly."""
    app = build_app(config)
    log.info("starting", extra={"fields": {"host": config.web.host, "port": config.web.port,
                                           "database": config.storage.url.split("://")[0]}})
    web.run_app(app, host=config.web.host, port=config.web.port, print=None, access_log=None,
                shutdown_timeout=config.web.shutdown_timeout_seconds, handle_signals=True)
    log.info("stopped")
