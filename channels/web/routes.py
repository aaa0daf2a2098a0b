"""The web channel's application: its routes, the machine-readable API (the public JSON
status, health, metrics, the OpenAPI description), and the middleware that puts security
headers on every answer and turns errors into pages (or JSON, or GeoReport errors).

The citizen's pages live in ``pages``, Open311 in ``open311``, the OpenAPI document in
``openapi``; what they share (app keys, rendering) in ``site``.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import jinja2
from aiohttp import web
from sqlalchemy import text as sql

from bot import outbox, status, tracking
from bot.config import secret
from bot.metrics import CONTENT_TYPE
from channels.web import georeport, open311, openapi, pages, scorecard
from channels.web.site import CORE, CSRF_KEY, TEMPLATES, error_page, language_of

__all__ = ["CORE", "CSRF_KEY", "TEMPLATES", "add_routes", "pages_for_errors", "templates"]

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


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


async def openapi_document(request: web.Request) -> web.Response:
    """GET /openapi.json: the OpenAPI 3.1 description of the HTTP API as configured."""
    return web.json_response(openapi.document(request.app[CORE].config),
                             dumps=lambda data: json.dumps(data, ensure_ascii=False))


@web.middleware
async def pages_for_errors(request: web.Request, handler) -> web.StreamResponse:
    """Security headers on every answer; errors as a page (or JSON, or GeoReport's), never a trace."""
    try:
        response = await handler(request)
    except web.HTTPException as error:
        if error.status < 400:  # a redirect: answer it, with the same headers
            for name, value in SECURITY_HEADERS.items():
                error.headers.setdefault(name, value)
            raise
        response = _http_error(request, error.status, error.reason)
        if "Allow" in error.headers:  # a 405 says which methods the resource takes
            response.headers["Allow"] = error.headers["Allow"]
    except Exception:
        log.exception("request failed", extra={"fields": {"path": request.path}})
        response = _http_error(request, 500, "Internal Server Error")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _http_error(request: web.Request, code: int, reason: str) -> web.Response:
    if request.path.startswith("/api/"):
        return web.json_response({"error": reason.lower().replace(" ", "_"), "message": reason}, status=code)
    if request.path.startswith(open311.PREFIX + "/"):
        return georeport.error(georeport.format_of(request.path), code, reason)
    core = request.app[CORE]
    language = language_of(request, core)
    message = core.texts.get(language, "web.error_server" if code >= 500 else "web.error_bad_request")
    if code == 404:
        message = reason
    if code == 413:
        message = core.texts.get(language, "web.error_too_large", max_kb=core.config.web.max_body_bytes // 1024)
    return error_page(request, code, message, language)


def add_routes(app: web.Application) -> None:
    """Register the web channel's routes and static files on the application."""
    config = app[CORE].config
    app.router.add_get("/", pages.show_form)
    app.router.add_post("/", pages.submit_form)
    app.router.add_get("/track", pages.lookup)
    app.router.add_get("/track/{code}", pages.track)
    app.router.add_post("/track/{code}/rating", pages.rate)
    app.router.add_get("/api/v1/complaints/{code}", api_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_document)
    scorecard.add_routes(app)
    if config.open311.enabled:
        open311.add_routes(app, open311.api_keys(secret(config.open311.api_keys_env)))
    app.router.add_static("/static/", Path(__file__).parent / "static", append_version=False)


def templates() -> jinja2.Environment:
    """The Jinja2 environment for the web pages, autoescaping everything."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("channels.web", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
