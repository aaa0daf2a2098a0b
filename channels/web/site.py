"""What every page of the web channel shares: the site (the port, the web channel's
configuration, the templates, the anti-forgery key), the page language, rendering a
template in the site's layout, error pages and the anti-forgery cookie.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from bot.port import Port
from channels.web import csrf
from channels.web.clients import Network, client_address
from channels.web.config import Open311Config, WebConfig


def templates() -> jinja2.Environment:
    """The Jinja2 environment for the web pages, autoescaping everything."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("channels.web", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )


@dataclass
class Site:
    """What the web channel's pages and APIs share, one per process."""

    port: Port
    web: WebConfig
    open311: Open311Config
    templates: jinja2.Environment = field(default_factory=templates)
    csrf_key: bytes = b""  # set at start: from web.csrf_secret_env, else shared through the store
    # The OpenAPI document of the whole service as configured; the wiring, which knows every
    # channel's routes, writes it.
    openapi: dict = field(default_factory=dict)
    # From [web], parsed once: the proxies whose X-Forwarded-For is believed, who may read
    # /metrics (addresses, and the bearer token from metrics_token_env).
    proxies: tuple[Network, ...] = ()
    metrics_networks: tuple[Network, ...] = ()
    metrics_token: str | None = None

    def client(self, request: web.Request) -> str:
        """The client's address, through the trusted proxies."""
        return client_address(request, self.proxies)


SITE = web.AppKey("site", Site)


def language_of(request: web.Request, site: Site) -> str:
    """The page language: ?lang=, else Accept-Language, else the service's default."""
    requested = request.query.get("lang")
    if requested in site.port.texts.texts:
        return requested
    for tag in accepted_languages(request.headers.get("Accept-Language", "")):
        if tag in site.port.texts.texts:
            return tag
    return site.port.config.service.default_language


def accepted_languages(header: str) -> list[str]:
    """The primary language tags of an Accept-Language header, most wanted first (q=0 left out)."""
    weighted = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            weighted.append((-quality, position, tag.strip().lower().split("-")[0]))
    return [tag for _, _, tag in sorted(weighted)]


def local_path(request: web.Request) -> str:
    """The request's path, safe to link to: "//evil.example/x" (or "/\\evil.example") would
    be a link to another site, so leading slashes and backslashes collapse to one."""
    return "/" + request.path.lstrip("/\\")


def render(request: web.Request, template: str, language: str, status_code: int = 200,
           **context: object) -> web.Response:
    """A page in the site's layout, in the given language."""
    site = request.app[SITE]
    env = site.templates
    other = "en" if language == "vi" else "vi"
    page = env.get_template(template).render(
        t=site.port.texts.table(language, "web."), lang=language, other_lang=other,
        switch_url=f"{local_path(request)}?{urlencode({'lang': other})}",
        service_name=site.port.config.service.name_en if language == "en" else site.port.config.service.name,
        **context,
    )
    response = web.Response(text=page, status=status_code, content_type="text/html", charset="utf-8")
    response.headers["Content-Language"] = language
    return response


def error_page(request: web.Request, status_code: int, message: str, language: str | None = None) -> web.Response:
    """An error page that says what went wrong, in the citizen's language."""
    language = language or language_of(request, request.app[SITE])
    return render(request, "error.html", language, status_code, message=message)


def csrf_nonce(request: web.Request) -> str:
    """The browser's anti-forgery nonce: the one its cookie holds, or a fresh one."""
    return request.cookies.get(csrf.COOKIE) or csrf.new_nonce()


def with_csrf_cookie(request: web.Request, response: web.Response, nonce: str) -> web.Response:
    """Set the nonce cookie when the browser does not hold it yet; never cache a page with a token."""
    site = request.app[SITE]
    if request.cookies.get(csrf.COOKIE) != nonce:
        response.set_cookie(csrf.COOKIE, nonce, httponly=True, samesite="Lax", path="/",
                            secure=site.web.public_url.startswith("https://"))
    response.headers["Cache-Control"] = "no-store"
    return response
