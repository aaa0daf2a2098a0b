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
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

import channels.desk
import channels.email
import channels.sms
import channels.telegram
import channels.web
import channels.zalo
from bot.clock import Clock
from bot.core import Core, SenderTerms
from bot.dispatcher import Dispatcher, worker_name
from bot.port import Port
from contract.delivery import Sender
from service import edge, heap, openapi
from service.assembly import build_core, make_port, start_core
from storage.upgrade import upgrade_apart
from service.config import Config
from service.scheduler import Scheduler
from service.workers import Slot

log = logging.getLogger(__name__)

CORE = web.AppKey("core", Core)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
SLOT = web.AppKey("slot", Slot)


@dataclass(frozen=True)
class Channel:
    """A channel as the wiring sets it up."""

    name: str
    enabled: Callable[[Config], bool]
    # (app, port, config, primary): primary is False in the workers after the first of
    # `serve --workers N`, which run no listener or poller that cannot be shared.
    setup: Callable[[web.Application, Port, Config, bool], Mapping[str, Sender]]


CHANNELS: tuple[Channel, ...] = (
    Channel("web", lambda c: True,
            lambda app, port, c, primary: channels.web.setup(app, port, c.web, c.open311)),
    Channel("sms", lambda c: bool(c.sms.gateways),
            lambda app, port, c, primary: channels.sms.setup(app, port, c.sms,
                                                             send_timeout=c.outbox.send_timeout_seconds)),
    Channel("email", lambda c: c.email.enabled,
            lambda app, port, c, primary: channels.email.setup(app, port, c.email,
                                                               send_timeout=c.outbox.send_timeout_seconds,
                                                               shutdown_timeout=c.web.shutdown_timeout_seconds,
                                                               listen=primary)),
    Channel("telegram", lambda c: c.telegram.enabled,
            lambda app, port, c, primary: channels.telegram.setup(app, port, c.telegram, primary=primary)),
    Channel("zalo", lambda c: c.zalo.enabled,
            lambda app, port, c, primary: channels.zalo.setup(app, port, c.zalo,
                                                              send_timeout=c.outbox.send_timeout_seconds)),
    Channel("desk", lambda c: c.desk.enabled,
            lambda app, port, c, primary: channels.desk.setup(app, port, c.desk)),
)


def build_app(config: Config, *, clock: Clock | None = None, senders: Mapping[str, Sender] | None = None,
              run_dispatcher: bool = True, run_scheduler: bool = True, slot: Slot = Slot(),
              upgrade: bool | None = None) -> web.Application:
    """The whole service as one aiohttp application, not yet started.

    ``slot``: which of ``serve --workers N`` this process is; only the primary (worker 0)
    runs the scheduler, the SMTP server and Telegram polling (``service/workers.py``).
    ``upgrade``: migrate the schema at start (default: as ``[storage] auto_upgrade`` says).
    """
    app = web.Application(client_max_size=config.web.max_body_bytes)
    app[SLOT] = slot
    run_scheduler = run_scheduler and slot.primary
    if slot.shared_port:
        app.on_response_prepare.append(_worker_header)
    core = build_core(config, clock=clock)
    app[CORE] = core
    port = make_port(core)

    async def database(app: web.Application) -> AsyncIterator[None]:
        await start_core(core, config, upgrade)
        yield
        await core.close()

    app.cleanup_ctx.append(database)
    channel_senders: dict[str, Sender] = {}
    for channel in CHANNELS:
        if channel.enabled(config):
            channel_senders.update(channel.setup(app, port, config, slot.primary))
        else:
            log.info("channel off by configuration", extra={"fields": {"channel": channel.name}})
    channel_senders.update(senders or {})
    core.senders = {name: SenderTerms(getattr(sender, "window", None), getattr(sender, "kinds", None))
                    for name, sender in channel_senders.items()}
    app[channels.web.SITE].openapi = openapi.document(config)

    async def dispatcher(app: web.Application) -> AsyncIterator[None]:
        name = worker_name(config.outbox.worker_name, config.web.port)
        if slot.shared_port:
            name = f"{name}#{slot.index}"  # each worker takes back only its own claims after a restart
        app[DISPATCHER] = Dispatcher(core, channel_senders, name)
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


async def _worker_header(request: web.Request, response: web.StreamResponse) -> None:
    """Which worker answered (``--workers N``): for operators and tests, never a pid."""
    response.headers["X-Worker"] = str(request.app[SLOT].index)


async def _serve(config: Config, slot: Slot, ready_fd: int | None, upgrade: bool | None) -> None:
    app = build_app(config, slot=slot, upgrade=upgrade)
    app_runner, _ = await edge.start(app, config, config.web.host, config.web.port, handle_signals=True,
                                     reuse_port=slot.shared_port)
    # Started: what start-up built lives as long as the process; full collections no longer
    # walk it (about 100 ms a time under load before, ``service/heap.py``).
    # Young collections spaced out: more of a request's objects are freed before one walks them.
    frozen = heap.freeze()
    young, middle, old = heap.tune()
    app[CORE].metrics.gc_frozen_objects.set(frozen)
    pauses = heap.Pauses(app[CORE].metrics.gc_pauses)
    pauses.install()
    log.info("started", extra={"fields": {"frozen_objects": frozen, "gc_thresholds": f"{young}/{middle}/{old}"}})
    if ready_fd is not None:  # the parent of --workers N waits for this before starting the others
        with contextlib.suppress(OSError):  # a parent gone or stopping: nothing to tell
            os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    try:
        await asyncio.Event().wait()  # until SIGTERM or Ctrl-C raises GracefulExit
    finally:
        pauses.remove()
        await app_runner.cleanup()


def serve(config: Config, slot: Slot = Slot(), ready_fd: int | None = None) -> None:
    """Run the service until SIGTERM or Ctrl-C, then shut down cleanly.

    As aiohttp's ``run_app`` does, with the edge's site (``service/edge.py``) in its place.
    ``slot`` and ``ready_fd`` come from the parent of ``serve --workers N``.
    """
    log.info("starting", extra={"fields": {"host": config.web.host, "port": config.web.port,
                                           "database": config.storage.url.split("://")[0],
                                           "worker": f"{slot.index}/{slot.count}"}})
    upgrade = None
    if config.storage.auto_upgrade:
        # In a process of its own: Alembic never loads into this one (storage/upgrade.py).
        upgrade_apart(config.storage.url, config.storage.busy_timeout_ms)
        upgrade = False
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(config, slot, ready_fd, upgrade))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main)  # the runner's cleanup: requests in flight finish
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
    log.info("stopped")
