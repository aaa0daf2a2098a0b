"""The staff desk: officers, unit heads and admins work in a browser, under /desk, on the same
complaints and by the same rules as from Telegram.

Server-rendered pages (Jinja2), no script needed and none served; every form works with
the keyboard alone. ``setup`` is what the wiring calls: it puts the desk (the port, the
``[desk]`` section, the templates) on the application, adds its routes, its static files
and the middleware that answers the domain's refusals as pages, and reads the signing key
when the service starts. The desk sends nothing itself: sign-in links and answers go
through the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from bot.port import Port
from channels.desk import heads, pages, signin
from channels.desk.config import DeskConfig
from channels.desk.site import DESK, PATH, Desk, current_session, error, language_of, redirect
from contract.delivery import Sender
from contract.desk import FilterError
from contract.results import LifecycleError, NotAllowed, StoreUnavailable
from contract.schema import secret

__all__ = ["DESK", "Desk", "setup"]

log = logging.getLogger(__name__)


@web.middleware
async def desk_errors(request: web.Request, handler) -> web.StreamResponse:
    """Under /desk: the domain's refusals and errors as desk pages in the person's language."""
    if not request.path.startswith(PATH):
        return await handler(request)
    try:
        return await handler(request)
    except pages.SignInNeeded:
        if request.method in ("GET", "HEAD"):
            return redirect(f"{PATH}/sign-in")
        return error(request, 403, "error_signed_out")
    except NotAllowed:
        return error(request, 403, "error_not_allowed", await current_session(request))
    except FilterError as problem:
        return error(request, 400, "error_filter", await current_session(request), problem=str(problem))
    except LifecycleError as problem:
        session = await current_session(request)
        if str(problem).startswith(("no complaint", "no attachment")):
            return error(request, 404, "error_not_found", session)
        # The catalogue says why in the officer's words when the domain named it.
        told = request.app[DESK].port.texts.get(language_of(request), f"staff.{problem.key}",
                                                **{"code": request.match_info.get("code", ""), **problem.params}) \
            if problem.key else str(problem)
        return error(request, 409, "error_conflict", session, problem=told)
    except StoreUnavailable:
        return error(request, 503, "error_unavailable")
    except web.HTTPForbidden as refused:
        if refused.reason == "csrf":
            return error(request, 403, "error_csrf", await current_session(request))
        raise
    except web.HTTPNotFound:
        return error(request, 404, "error_not_found", await current_session(request))
    except web.HTTPMethodNotAllowed:
        raise


def setup(app: web.Application, port: Port, config: DeskConfig) -> dict[str, Sender]:
    """Add the desk's routes, static files and middleware to the app; it has no sender."""
    desk = Desk(port, config)
    app[DESK] = desk
    app.middlewares.append(desk_errors)

    async def signing_key(app: web.Application) -> AsyncIterator[None]:
        key = secret(config.secret_env)
        desk.key = key.encode() if key else await port.shared_key("desk")
        yield

    app.cleanup_ctx.append(signing_key)
    signin.add_routes(app)
    pages.add_routes(app)
    heads.add_routes(app)
    app.router.add_static(f"{PATH}/static/", Path(__file__).parent / "static", append_version=False)
    return {}
