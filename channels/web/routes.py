"""The web channel: the complaint form, the status page, the public JSON status, health
and metrics, on aiohttp.

It translates and hands off: a posted form becomes an ``Inbound`` and one awaited call to
``bot.intake.receive``; the answer (a redirect to the status page) is sent only after the
complaint is committed. A resubmitted form (double click, browser resend) carries the
same submission id, which intake dedupes, so it shows the same complaint again.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from datetime import datetime
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from sqlalchemy import text as sql

from bot import intake, outbox, status, tracking
from bot.core import Core
from bot.metrics import CONTENT_TYPE
from channels.base import Inbound
from channels.web import csrf
from channels.web.form import validate

log = logging.getLogger(__name__)

CORE = web.AppKey("core", Core)
CSRF_KEY = web.AppKey("csrf_key", bytes)
TEMPLATES = web.AppKey("templates", jinja2.Environment)

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
SUBMISSION_ID = re.compile(r"^[0-9a-f]{32}$")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _language(request: web.Request, core: Core) -> str:
    """The page language: ?lang=, else the form's lang field, else Accept-Language."""
    requested = request.query.get("lang")
    if requested in core.texts.texts:
        return requested
    for tag in _accepted_languages(request.headers.get("Accept-Language", "")):
        if tag in core.texts.texts:
            return tag
    return core.config.service.default_language


def _accepted_languages(header: str) -> list[str]:
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


def _local_path(request: web.Request) -> str:
    """The request's path, safe to link to: "//evil.example/x" (or "/\\evil.example") would
    be a link to another site, so leading slashes and backslashes collapse to one."""
    return "/" + request.path.lstrip("/\\")


def _render(request: web.Request, template: str, language: str, status_code: int = 200,
            **context: object) -> web.Response:
    core = request.app[CORE]
    env = request.app[TEMPLATES]
    other = "en" if language == "vi" else "vi"
    page = env.get_template(template).render(
        t=core.texts.table(language, "web."), lang=language, other_lang=other,
        switch_url=f"{_local_path(request)}?{urlencode({'lang': other})}",
        service_name=core.config.service.name_en if language == "en" else core.config.service.name,
        **context,
    )
    response = web.Response(text=page, status=status_code, content_type="text/html", charset="utf-8")
    response.headers["Content-Language"] = language
    return response


def _error_page(request: web.Request, status_code: int, message: str, language: str | None = None) -> web.Response:
    language = language or _language(request, request.app[CORE])
    return _render(request, "error.html", language, status_code, message=message)


def _form_page(request: web.Request, language: str, *, values: dict | None = None, errors: dict | None = None,
               status_code: int = 200, notice: str | None = None) -> web.Response:
    core = request.app[CORE]
    nonce = request.cookies.get(csrf.COOKIE) or csrf.new_nonce()
    response = _render(
        request, "form.html", language, status_code,
        values=values or {}, errors=errors or {}, notice=notice,
        csrf_field=csrf.FIELD, csrf_token=csrf.token_for(request.app[CSRF_KEY], nonce),
        submission_id=(values or {}).get("submission_id") or secrets.token_hex(16),
        categories=[(c.slug, c.name_en or c.name if language == "en" else c.name) for c in core.config.categories],
    )
    if request.cookies.get(csrf.COOKIE) != nonce:
        response.set_cookie(csrf.COOKIE, nonce, httponly=True, samesite="Lax", path="/",
                            secure=core.config.web.public_url.startswith("https://"))
    response.headers["Cache-Control"] = "no-store"
    return response


async def show_form(request: web.Request) -> web.Response:
    """GET /: the complaint form."""
    return _form_page(request, _language(request, request.app[CORE]))


async def submit_form(request: web.Request) -> web.Response:
    """POST /: file a complaint from the form, then redirect to its status page."""
    core = request.app[CORE]
    language = _language(request, core)
    max_bytes = core.config.web.max_body_bytes
    too_large = core.texts.get(language, "web.error_too_large", max_kb=max_bytes // 1024)
    if request.content_length is not None and request.content_length > max_bytes:
        return _error_page(request, 413, too_large, language)
    if request.content_type not in FORM_TYPES:
        return _error_page(request, 415, core.texts.get(language, "web.error_bad_request"), language)
    try:
        posted = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return _error_page(request, 413, too_large, language)
    except (ValueError, LookupError):  # LookupError: a charset Python does not know
        return _error_page(request, 400, core.texts.get(language, "web.error_bad_request"), language)
    fields = {k: v for k, v in posted.items() if isinstance(v, str)}
    if fields.get("lang") in core.texts.texts:
        language = fields["lang"]
    submission_id = fields.get("submission_id", "")
    if not SUBMISSION_ID.match(submission_id):
        return _error_page(request, 400, core.texts.get(language, "web.error_bad_request"), language)
    form = validate(fields, texts=core.texts, language=language,
                    categories={c.slug for c in core.config.categories},
                    phone_region=core.config.service.phone_region)
    kept = dict(form.values, submission_id=submission_id)
    if not csrf.is_valid(request.app[CSRF_KEY], request.cookies.get(csrf.COOKIE), fields.get(csrf.FIELD)):
        return _form_page(request, language, values=kept, errors=form.errors, status_code=403,
                          notice=core.texts.get(language, "web.error_csrf"))
    if form.errors:
        return _form_page(request, language, values=kept, errors=form.errors, status_code=422)
    reply_to = tuple((channel, address) for channel, address in (("sms", form.phone_e164), ("email", form.email))
                     if address)
    inbound = Inbound(
        channel="web", external_id=submission_id, sender=None, sender_name=form.values["name"] or None,
        text=form.values["text"], received_at=core.clock.now(), language=language,
        category=form.values["category"] or None, area=form.values["area"] or None, reply_to=reply_to,
    )
    try:
        result = await intake.receive(core, inbound)
    except intake.IntakeError:
        return _form_page(request, language, values=kept, status_code=422)
    raise web.HTTPSeeOther(f"/track/{result.tracking_code}?{urlencode({'new': 1, 'lang': language})}")


async def lookup(request: web.Request) -> web.Response:
    """GET /track?code=...: the lookup form, or a redirect to the code's page."""
    core = request.app[CORE]
    language = _language(request, core)
    code = request.query.get("code", "").strip()
    if not code:
        return _render(request, "lookup.html", language)
    try:
        normal = status.parse_code(core, code)
    except tracking.TrackingCodeError as error:
        return _render(request, "lookup.html", language, 400, code=code[:40],
                       error=core.texts.get(language, "web.error_bad_code", reason=str(error)))
    raise web.HTTPSeeOther(f"/track/{normal}?{urlencode({'lang': language})}")


async def track(request: web.Request) -> web.Response:
    """GET /track/{code}: the public status page of one complaint."""
    core = request.app[CORE]
    language = _language(request, core)
    raw = request.match_info["code"]
    try:
        code = status.parse_code(core, raw)
    except tracking.TrackingCodeError as error:
        return _error_page(request, 400, core.texts.get(language, "web.error_bad_code", reason=str(error)), language)
    if code != raw:
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPMovedPermanently(f"/track/{code}{query}")
    found = await status.public_status(core, code)
    if found is None:
        return _error_page(request, 404, core.texts.get(language, "web.error_not_found", code=code), language)
    response = _render(
        request, "track.html", language, status=found, is_new=request.query.get("new") == "1",
        status_label=core.texts.get(language, f"status.{found.status}"),
        unit=found.unit_name_en if language == "en" else found.unit_name,
        fmt=lambda moment: core.format_time(moment, language),
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


async def api_status(request: web.Request) -> web.Response:
    """GET /api/v1/complaints/{code}: public status as JSON, with no personal data."""
    core = request.app[CORE]
    try:
        code = status.parse_code(core, request.match_info["code"])
    except tracking.TrackingCodeError as error:
        return web.json_response({"error": "invalid_code", "message": str(error)}, status=400)
    found = await status.public_status(core, code)
    if found is None:
        return web.json_response({"error": "not_found", "message": f"no complaint {code}"}, status=404)
    return web.json_response({
        "code": found.code, "status": found.status,
        "unit": {"slug": found.unit_slug, "name": found.unit_name, "name_en": found.unit_name_en},
        "category": found.category, "created": _iso(found.created_at),
        "due": _iso(found.first_response_due), "resolution_due": _iso(found.resolution_due),
        "replies": [{"at": _iso(r.at), "text": r.text} for r in found.replies],
    }, dumps=lambda data: json.dumps(data, ensure_ascii=False))


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 when the store answers, 503 when it does not."""
    core = request.app[CORE]
    try:
        async with core.sessions() as session:
            await session.execute(sql("SELECT 1"))
    except Exception as error:  # any failure to reach the store means unhealthy
        log.warning("health check failed", extra={"fields": {"error": type(error).__name__}})
        return web.json_response({"status": "unavailable", "database": "error"}, status=503)
    return web.json_response({"status": "ok", "database": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    core = request.app[CORE]
    await outbox.refresh_gauges(core)
    return web.Response(body=core.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})


@web.middleware
async def pages_for_errors(request: web.Request, handler) -> web.StreamResponse:
    """Security headers on every answer; errors as a page (or JSON under /api/), never a trace."""
    try:
        response = await handler(request)
    except web.HTTPException as error:
        if error.status < 400:  # a redirect: answer it, with the same headers
            for name, value in SECURITY_HEADERS.items():
                error.headers.setdefault(name, value)
            raise
        response = _http_error(request, error.status, error.reason)
    except Exception:
        log.exception("request failed", extra={"fields": {"path": request.path}})
        response = _http_error(request, 500, "Internal Server Error")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _http_error(request: web.Request, code: int, reason: str) -> web.Response:
    if request.path.startswith("/api/"):
        return web.json_response({"error": reason.lower().replace(" ", "_"), "message": reason}, status=code)
    core = request.app[CORE]
    language = _language(request, core)
    message = core.texts.get(language, "web.error_server" if code >= 500 else "web.error_bad_request")
    if code == 404:
        message = reason
    if code == 413:
        message = core.texts.get(language, "web.error_too_large", max_kb=core.config.web.max_body_bytes // 1024)
    return _error_page(request, code, message, language)


def add_routes(app: web.Application) -> None:
    """Register the web channel's routes and static files on the application."""
    app.router.add_get("/", show_form)
    app.router.add_post("/", submit_form)
    app.router.add_get("/track", lookup)
    app.router.add_get("/track/{code}", track)
    app.router.add_get("/api/v1/complaints/{code}", api_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    from pathlib import Path

    app.router.add_static("/static/", Path(__file__).parent / "static", append_version=False)


def templates() -> jinja2.Environment:
    """The Jinja2 environment for the web pages, autoescaping everything."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("channels.web", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
