"""The HTTP server at the edge: how long a client may take, how many may be connected, and
what a malformed request leaves in the log.

aiohttp on its own waits an hour for a request's head and forever for its body, takes any
number of connections, and logs every malformed request at ERROR with a traceback, so
anyone can hold sockets open or fill the log. Here, from ``[web]``:

* ``header_timeout_seconds``: a connection must deliver a complete request head within
  this time of opening, or of the previous answer (aiohttp's keep-alive timer, which also
  closes idle keep-alive connections);
* ``body_timeout_seconds``: once the head is in, the whole body must arrive within this
  time; a client still sending is answered 408 and disconnected (a middleware, innermost,
  so only reading is timed, never the work that follows);
* ``max_connections``: connections beyond this many open at once are answered 503 with
  Retry-After and closed at once (a thin protocol in front of aiohttp's own);
* a malformed request is one WARNING line, without a traceback.

``start`` is how both ``serve`` and the tests put the application on a socket, so tests
run with the same settings as production.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from service.config import Config

log = logging.getLogger(__name__)

BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n"
        b"Connection: close\r\nContent-Length: 30\r\n\r\nToo many connections; retry.\r\n")
# Written straight to the socket: the handler is still waiting for the body, and no answer
# can go through aiohttp while it does.
TOO_SLOW = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: 39\r\n\r\nThe request body did not arrive in time\r\n")
BUSY_LOG_SECONDS = 10.0  # at most one warning this often about refused connections


class MalformedRequests(logging.Filter):
    """aiohttp's log of a malformed request, as one WARNING line without the traceback.

    Anyone can send a malformed request; a traceback at ERROR for each would let them fill
    the log and drown real errors. What the client sent is not logged: it is theirs, and
    may be anything.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record of a malformed request; leave every other record alone."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
            record.msg, record.args = "malformed HTTP request refused", None
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.fields = {"status": error.code or 400, "error": type(error).__name__,  # type: ignore[attr-defined]
                             "reason": (error.message or "")[:80]}
        return True


MALFORMED = MalformedRequests()


def quiet_malformed_requests() -> None:
    """Put the filter on aiohttp's server logger (once, however many apps are built)."""
    logging.getLogger("aiohttp.server").addFilter(MALFORMED)


def body_deadline(seconds: float) -> Callable:
    """A middleware that answers 408 and disconnects a client whose body takes longer than ``seconds``."""

    @web.middleware
    async def deadline(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        if request.content.is_eof():
            return await handler(request)  # no body, or all of it read with the head
        expired = False

        def expire() -> None:
            nonlocal expired
            transport = request.transport
            if request.content.is_eof() or transport is None or transport.is_closing():
                return
            expired = True
            log.warning("request body too slow; connection closed",
                        extra={"fields": {"path": request.path[:100], "seconds": seconds}})
            transport.write(TOO_SLOW)
            request.protocol.force_close()  # the handler's read then fails, and is answered below

        timer = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            response = await handler(request)
        except Exception:
            if not expired:
                raise
            response = web.Response(status=408)  # never sent: the connection is closed
        finally:
            timer.cancel()
        return web.Response(status=408) if expired else response

    return deadline


class _Connection(asyncio.Protocol):
    """One accepted connection: aiohttp's handler behind it, unless the cap is reached."""

    def __init__(self, site: GuardedSite):
        self.site = site
        self.handler: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        site = self.site
        if site.open >= site.max_connections:
            site.busy(transport)
            return
        site.open += 1
        self.handler = site.protocol()
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handler is not None:
            self.site.open -= 1
            handler, self.handler = self.handler, None
            handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are counted, and refused past ``max_connections``."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int, backlog: int = 128,
                 reuse_port: bool = False):
        super().__init__(runner, backlog=backlog)
        self.host, self.port, self.max_connections = host, port, max_connections
        self.reuse_port = reuse_port  # serve --workers N: the workers share the port
        self.open = 0
        self.refused = 0
        self._last_busy_log = float("-inf")

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    def protocol(self) -> asyncio.Protocol:
        """aiohttp's own protocol for one connection."""
        assert self._runner.server is not None
        return self._runner.server()

    def busy(self, transport: asyncio.BaseTransport) -> None:
        """Answer a connection past the cap and close it."""
        self.refused += 1
        transport.write(BUSY)  # type: ignore[attr-defined]
        transport.close()
        now = asyncio.get_running_loop().time()
        if now - self._last_busy_log >= BUSY_LOG_SECONDS:
            self._last_busy_log = now
            log.warning("connections refused: too many open",
                        extra={"fields": {"open": self.open, "max": self.max_connections, "refused": self.refused}})

    async def start(self) -> None:
        """Listen, and register with the runner (which stops the site on cleanup)."""
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), self.host, self.port, backlog=self._backlog,
            reuse_port=self.reuse_port or None)
        if self._server.sockets:
            self.port = self._server.sockets[0].getsockname()[1]


def runner(app: web.Application, config: Config, **options: object) -> web.AppRunner:
    """The application's runner with the configured head timeout (and aiohttp options for tests)."""
    quiet_malformed_requests()
    app.middlewares.append(body_deadline(config.web.body_timeout_seconds))
    options.setdefault("keepalive_timeout", config.web.header_timeout_seconds)
    options.setdefault("shutdown_timeout", config.web.shutdown_timeout_seconds)
    options.setdefault("access_log", None)
    return web.AppRunner(app, **options)


async def start(app: web.Application, config: Config, host: str, port: int, reuse_port: bool = False,
                **options: object) -> tuple[web.AppRunner, GuardedSite]:
    """Set the application up and listen on host:port; returns the runner (to clean up) and the site.

    ``reuse_port``: other processes listen on the same port (``serve --workers N``).
    """
    app_runner = runner(app, config, **options)
    await app_runner.setup()
    site = GuardedSite(app_runner, host, port, max_connections=config.web.max_connections, reuse_port=reuse_port)
    await site.start()
    return app_runner, site
