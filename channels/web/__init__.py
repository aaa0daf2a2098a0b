"""The web channel: the complaint form and status pages, the public JSON status, Open311
GeoReport v2, the scorecard, health and metrics, all on the service's one HTTP port.

``setup`` is what the wiring calls: it puts the site (the port, this channel's sections of
the configuration, the templates) on the application, adds the routes and the middleware
that answers errors as pages, and reads the anti-forgery key when the service starts.
The web channel sends nothing itself: citizens read the status page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from bot.port import Port
from channels.web import clients, routes
from channels.web.config import Open311Config, WebConfig
from channels.web.site import SITE, Site
from contract.delivery import Sender
from contract.schema import secret

__all__ = ["SITE", "Site", "setup"]


def setup(app: web.Application, port: Port, config: WebConfig, open311: Open311Config) -> dict[str, Sender]:
    """Add the web channel's routes and middleware to the app; it has no sender."""
    site = Site(port, config, open311, proxies=clients.networks(config.trusted_proxies),
                metrics_networks=clients.networks(config.metrics_allow), metrics_token=secret(config.metrics_token_env))
    app[SITE] = site
    app.middlewares.append(routes.pages_for_errors)

    async def csrf_key(app: web.Application) -> AsyncIterator[None]:
        # A key from the environment, else one made once and shared through the store, so
        # that any process can check a form another one served.
        key = secret(config.csrf_secret_env)
        site.csrf_key = key.encode() if key else await port.shared_key("csrf")
        yield

    app.cleanup_ctx.append(csrf_key)
    routes.add_routes(app)
    return {}
