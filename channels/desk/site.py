"""What every desk page shares: the desk (the port, ``[desk]``, the templates, the signing
key), the page language, the signed-in staff member from the session cookie, the forms'
anti-forgery tokens, and rendering a page in the desk's layout.

The session cookie carries the session's random token and an HMAC of it under the desk's
key: a forged or altered cookie is refused before the store is asked. It is HttpOnly,
SameSite=Strict, limited to /desk, Secure when the service is served over https, and
expires with the session. Every form carries a token: with a session, an HMAC of the
session's token; before signing in, an HMAC of a random nonce the browser holds in a
cookie (the double-submit pattern). A page from another site can make the browser send
the cookies, but can neither read them nor compute the HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from bot.port import Port
from channels.desk.config import DeskConfig
from contract.desk import DeskSession

SESSION_COOKIE = "fi_desk"
NONCE_COOKIE = "fi_desk_nonce"
LANGUAGE_COOKIE = "fi_desk_lang"
CSRF_FIELD = "csrf_token"
PATH = "/desk"


def templates() -> jinja2.Environment:
    """The desk's Jinja2 environment, autoescaping everything."""
    return jinja2.Environment(loader=jinja2.PackageLoader("channels.desk", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass
class Desk:
    """What the desk's pages share, one per process."""

    port: Port
    config: DeskConfig
    templates: jinja2.Environment = field(default_factory=templates)
    key: bytes = b""  # set at start: from desk.secret_env, else shared through the store

    def sign(self, purpose: str, value: str) -> str:
        """An HMAC of a value for one purpose (cookie, form)."""
        return hmac.new(self.key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def verify(self, purpose: str, value: str, signature: str) -> bool:
        """Whether a signature is this desk's for the value (constant time)."""
        return hmac.compare_digest(self.sign(purpose, value).encode(), signature.encode("utf-8", "replace"))


DESK = web.AppKey("desk", Desk)
# The request's DeskSession (or None), once read; a plain key on an aiohttp without RequestKey.
SESSION = web.RequestKey("desk_session", object) if hasattr(web, "RequestKey") else "desk_session"


def language_of(request: web.Request) -> str:
    """Vietnamese unless the person chose English (?lang=, kept in a cookie)."""
    texts = request.app[DESK].port.texts.texts
    chosen = request.query.get("lang") or request.cookies.get(LANGUAGE_COOKIE)
    return chosen if chosen in texts else request.app[DESK].port.config.service.default_language


async def current_session(request: web.Request) -> DeskSession | None:
    """The signed-in staff member of this request, or None."""
    if SESSION in request:
        return request[SESSION]
    desk = request.app[DESK]
    found = None
    token, _, signature = request.cookies.get(SESSION_COOKIE, "").partition(".")
    if token and signature and len(token) < 100 and desk.verify("session", token, signature):
        found = await desk.port.desk_session(token)
    request[SESSION] = found
    return found


def session_cookie_value(desk: Desk, token: str) -> str:
    """What the session cookie holds: the token and its signature."""
    return f"{token}.{desk.sign('session', token)}"


def secure(request: web.Request) -> bool:
    """Whether cookies must be Secure (the service is served over https)."""
    return request.app[DESK].port.public_url.startswith("https://")


def csrf_token(request: web.Request, session: DeskSession | None, nonce: str | None = None) -> str:
    """The anti-forgery token a form carries: bound to the session, or to the browser's nonce."""
    desk = request.app[DESK]
    if session is not None:
        return desk.sign("csrf-session", session.token)
    return desk.sign("csrf-nonce", nonce or "")


async def check_csrf(request: web.Request, form, session: DeskSession | None) -> None:
    """Refuse a form (403) whose token is not the one this session or browser was given."""
    token = str(form.get(CSRF_FIELD) or "")
    desk = request.app[DESK]
    if session is not None:
        valid = desk.verify("csrf-session", session.token, token)
    else:
        nonce = request.cookies.get(NONCE_COOKIE) or ""
        valid = bool(nonce) and len(nonce) < 100 and desk.verify("csrf-nonce", nonce, token)
    if not valid:
        raise web.HTTPForbidden(reason="csrf")


def nonce_for(request: web.Request) -> str:
    """The browser's anti-forgery nonce (before signing in): its cookie's, or a fresh one."""
    return request.cookies.get(NONCE_COOKIE) or secrets.token_urlsafe(24)


def render(request: web.Request, template: str, status_code: int = 200, *, session: DeskSession | None = None,
           nonce: str | None = None, **context: object) -> web.Response:
    """A desk page in the desk's layout, in the person's language, never cached."""
    desk = request.app[DESK]
    port = desk.port
    language = language_of(request)
    other = "en" if language == "vi" else "vi"
    query = {k: v for k, v in request.query.items() if k != "lang"}
    page = desk.templates.get_template(template).render(
        t=port.texts.table(language, "desk."), status_label=lambda s: port.texts.get(language, f"status.{s}"),
        lang=language, other_lang=other, switch_url=f"{request.path}?{urlencode({**query, 'lang': other})}",
        service_name=port.config.service.name_en if language == "en" else port.config.service.name,
        session=session, officer=session.officer if session else None,
        csrf=csrf_token(request, session, nonce), when=lambda moment: port.format_time(moment, language),
        unit_name=lambda unit_id: port.unit_name(unit_id, language), queues=port.desk_queues(), **context)
    response = web.Response(text=page, status=status_code, content_type="text/html", charset="utf-8")
    response.headers["Content-Language"] = language
    response.headers["Cache-Control"] = "no-store"
    if request.query.get("lang") in port.texts.texts and request.cookies.get(LANGUAGE_COOKIE) != language:
        response.set_cookie(LANGUAGE_COOKIE, language, path=PATH, samesite="Strict", httponly=True,
                            secure=secure(request), max_age=365 * 86400)
    if nonce is not None and session is None and request.cookies.get(NONCE_COOKIE) != nonce:
        response.set_cookie(NONCE_COOKIE, nonce, path=PATH, samesite="Strict", httponly=True, secure=secure(request))
    return response


def redirect(location: str) -> web.Response:
    """303 See Other to a path of ours (after a form, the browser GETs the page)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def error(request: web.Request, status_code: int, message_key: str, session: DeskSession | None = None,
          **params: object) -> web.Response:
    """An error page that says what went wrong, in the person's language."""
    language = language_of(request)
    message = request.app[DESK].port.texts.get(language, f"desk.{message_key}", **params)
    return render(request, "error.html", status_code, session=session, message=message)
