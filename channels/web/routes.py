"""The web channel's machine-readable answers (the public JSON status, health, metrics, the
OpenAPI description), the middleware that puts security headers on every answer and turns
errors into pages (or JSON, or GeoReport errors), and the table of the channel's routes.

The citizen's pages live in ``pages``, Open311 in ``open311``, the scorecard in
``scorecard``; what they share (the site, rendering) in ``site``.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from aiohttp import web

from bot.metrics import CONTENT_TYPE
from channels.web import georeport, open311, pages, scorecard
from channels.web.clients import may_read_metrics
from channels.web.site import SITE, error_page, language_of
from contract.results import StoreUnavailable
from contract.schema import api_keys, secret

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 10  # how soon to try again when the store is away

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
    found = await request.app[SITE].port.lookup(request.match_info["code"])
    if found.malformed:
        return web.json_response({"error": "invalid_code", "message": found.error}, status=400)
    if found.status is None:
        return web.json_response({"error": "not_found", "message": f"no complaint {found.code}"}, status=404)
    status = found.status
    return web.json_response({
        "code": status.code, "status": status.status,
        "unit": {"slug": status.unit_slug, "name": status.unit_name, "name_en": status.unit_name_en},
        "category": status.category, "created": _iso(status.created_at),
        "due": _iso(status.first_response_due), "resolution_due": _iso(status.resolution_due),
        "urgency": status.urgency, "description": status.description,
        "replies": [{"at": _iso(r.at), "text": r.text,
                     "files": [{"name": f.filename, "type": f.content_type,
                                "url": f"/track/{status.code}/files/{f.id}"} for f in r.files]}
                    for r in status.replies],
        "disputable_until": _iso(status.disputable_until),
    }, dumps=lambda data: json.dumps(data, ensure_ascii=False))


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 when the store answers, 503 when it does not."""
    if not await request.app[SITE].port.healthy():
        log.warning("health check failed")
        return web.json_response({"status": "unavailable", "database": "error"}, status=503)
    return web.json_response({"status": "ok", "database": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format, to the addresses or token [web] names (else to all)."""
    site = request.app[SITE]
    refused = may_read_metrics(request, site.metrics_networks, site.metrics_token, site.proxies)
    if refused == 401:
        return web.Response(status=401, text="a bearer token is required\n", headers={"WWW-Authenticate": "Bearer"})
    if refused is not None:
        return web.Response(status=403, text="not allowed from this address\n")
    body = await site.port.metrics()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def openapi_document(request: web.Request) -> web.Response:
    """GET /openapi.json: the OpenAPI 3.1 description of the HTTP API as configured."""
    return web.json_response(request.app[SITE].openapi, dumps=lambda data: json.dumps(data, ensure_ascii=False))


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
    except StoreUnavailable as error:
        # The store is away (a restart, a network cut): one line, no trace, and an answer
        # that tells gateways and browsers to come back.
        log.warning("store unavailable", extra={"fields": {"path": request.path, "error": str(error)}})
        response = _http_error(request, 503, "Service Unavailable")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
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
    site = request.app[SITE]
    language = language_of(request, site)
    message = site.port.texts.get(language, "web.error_server" if code >= 500 else "web.error_bad_request")
    if code == 404:
        message = reason
    if code == 413:
        message = site.port.texts.get(language, "web.error_too_large", max_kb=site.web.max_body_bytes // 1024)
    return error_page(request, code, message, language)


def add_routes(app: web.Application) -> None:
    """Register the web channel's routes and static files on the application."""
    site = app[SITE]
    app.router.add_get("/", pages.show_form)
    app.router.add_post("/", pages.submit_form)
    app.router.add_get("/track", pages.lookup)
    app.router.add_get("/track/{code}", pages.track)
    app.router.add_post("/track/{code}/rating", pages.rate)
    app.router.add_post("/track/{code}/not-fixed", pages.not_fixed)
    app.router.add_get("/track/{code}/files/{file_id}", pages.answer_file)
    app.router.add_get("/api/v1/complaints/{code}", api_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_document)
    scorecard.add_routes(app)
    if site.open311.enabled:
        open311.add_routes(app, tuple(api_keys(secret(site.open311.api_keys_env))))
    app.router.add_static("/static/", Path(__file__).parent / "static", append_version=False)
