"""Builds and runs everything in one asyncio loop: the aiohttp application with every
channel, the outbox dispatcher and the scheduler.

The channels are set up from one registry, ``CHANNELS``: each entry names the channel,
says when the configuration turns it on, and hands the channel the port and its own
sections of the configuration; the channel adds its routes and lifecycles to the app and
returns its senders. Each part opens and closes in the application's ``cleanup_ctx``,
closed in reverse order: on SIGTERM aiohttp stops accepting connections, lets requests
in flight finish (so no complaint a citizen submitted is lost), then the dispatcher
finishes the message it is sending and stops (queued messages stay queued), then the
database closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

import channels.desk
import channels.email
import channels.sms
import channels.telegram
import channels.web
from bot.clock import Clock
from bot.core import Core
from bot.outbox import Dispatcher
from bot.port import Port
from contract.delivery import Sender
from service import openapi
from service.assembly import build_core, make_port, start_core
from service.config import Config
from service.scheduler import Scheduler

log = logging.getLogger(__name__)

CORE = web.AppKey("core", Core)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)


@dataclass(frozen=True)
class Channel:
    """A channel as the wiring sets it up."""

    name: str
    enabled: Callable[[Config], bool]
    setup: Callable[[web.Application, Port, Config], Mapping[str, Sender]]


CHANNELS: tuple[Channel, ...] = (
    Channel("web", lambda c: True,
            lambda app, port, c: channels.web.setup(app, port, c.web, c.open311)),
    Channel("sms", lambda c: bool(c.sms.gateways),
            lambda app, port, c: channels.sms.setup(app, port, c.sms, send_timeout=c.outbox.send_timeout_seconds)),
    Channel("email", lambda c: c.email.enabled,
            lambda app, port, c: channels.email.setup(app, port, c.email,
                                                      send_timeout=c.outbox.send_timeout_seconds,
                                                      shutdown_timeout=c.web.shutdown_timeout_seconds)),
    Channel("telegram", lambda c: c.telegram.enabled,
            lambda app, port, c: channels.telegram.setup(app, port, c.telegram)),
    Channel("desk", lambda c: c.desk.enabled,
            lambda app, port, c: channels.desk.setup(app, port, c.desk)),
)


def build_app(config: Config, *, clock: Clock | None = None, senders: Mapping[str, Sender] | None = None,
              run_dispatcher: bool = True, run_scheduler: bool = True) -> web.Application:
    """The whole service as one aiohttp application, not yet started."""
    app = web.Application(client_max_size=config.web.max_body_bytes)
    core = build_core(config, clock=clock)
    app[CORE] = core
    port = make_port(core)

    async def database(app: web.Application) -> AsyncIterator[None]:
        await start_core(core, config)
        yield
        await core.close()

    app.cleanup_ctx.append(database)
    channel_senders: dict[str, Sender] = {}
    for channel in CHANNELS:
        if channel.enabled(config):
            channel_senders.update(channel.setup(app, port, config))
        else:
            log.info("channel off by configuration", extra={"fields": {"channel": channel.name}})
    channel_senders.update(senders or {})
    app[channels.web.SITE].openapi = openapi.document(config)

    async def dispatcher(app: web.Application) -> AsyncIterator[None]:
        app[DISPATCHER] = Dispatcher(core, channel_senders)
        task = asyncio.create_task(app[DISPATCHER].run(), name="outbox-dispatcher") if run_dispatcher else None
        yield
        app[DISPATCHER].stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=config.outbox.send_timeout_seconds + 5)

    async def scheduler(app: web.Application) -> AsyncIterator[None]:
        jobs = Scheduler(core, config.scheduler.sweep_seconds)
        if run_scheduler:
            jobs.start()
        yield
        if run_scheduler:
            await jobs.stop()

    app.cleanup_ctx.append(dispatcher)
    app.cleanup_ctx.append(scheduler)
    return app


def serve(config: Config) -> None:
    """Run the service until SIGTERM or Ctrl-C, then shut down cleanly."""
    app = build_app(config)
    log.info("starting", extra={"fields": {"host": config.web.host, "port": config.web.port,
                                           "database": config.storage.url.split("://")[0]}})
    web.run_app(app, host=config.web.host, port=config.web.port, print=None, access_log=None,
                shutdown_timeout=config.web.shutdown_timeout_seconds, handle_signals=True)
    log.info("stopped")
