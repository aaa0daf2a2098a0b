"""Signing in and out of the desk: ask for a link, open it, confirm, sign out (here or
everywhere).

Opening a link (GET) only shows a button: chat apps and mail scanners fetch links to
preview them, and a link used up by a preview would sign nobody in. The button's POST
uses the link, once; only then is the session cookie set. The answer to a request for a
link is the same whether or not the name is a staff member's, so the page tells nobody
who works here.
"""

from __future__ import annotations

from aiohttp import web

from channels.desk.site import (DESK, NONCE_COOKIE, PATH, SESSION_COOKIE, check_csrf, current_session, error,
                                nonce_for, redirect, render, secure, session_cookie_value)


def client_address(request: web.Request) -> str:
    """The client's address, for the limits against guessing."""
    return request.remote or "unknown"


async def home(request: web.Request) -> web.Response:
    """GET /desk: the officer's own queue, or the sign-in page."""
    session = await current_session(request)
    return redirect(f"{PATH}/queue/mine" if session else f"{PATH}/sign-in")


async def sign_in_form(request: web.Request) -> web.Response:
    """GET /desk/sign-in: ask for a sign-in link."""
    session = await current_session(request)
    if session is not None:
        return redirect(f"{PATH}/queue/mine")
    return render(request, "sign_in.html", nonce=nonce_for(request), who="", problem=None)


async def request_link(request: web.Request) -> web.Response:
    """POST /desk/sign-in: send a link to the staff member named, if there is one."""
    desk = request.app[DESK]
    form = await request.post()
    await check_csrf(request, form, None)
    who = str(form.get("who") or "").strip()[:320]
    if not who:
        return render(request, "sign_in.html", 400, nonce=nonce_for(request), who="", problem="who_missing")
    outcome = await desk.port.desk_request_link(who, client_address(request), desk.config.policy())
    if outcome == "limited":
        response = error(request, 429, "error_limited", minutes=round(desk.config.window_minutes))
        response.headers["Retry-After"] = str(int(desk.config.window_minutes * 60))
        return response
    return render(request, "link_sent.html", nonce=nonce_for(request), minutes=round(desk.config.link_minutes))


async def link_page(request: web.Request) -> web.Response:
    """GET /desk/sign-in/{token}: a button that signs in with the link (the GET uses nothing)."""
    token = request.match_info["token"]
    if len(token) > 100:
        return error(request, 404, "error_link_unknown")
    return render(request, "confirm.html", nonce=nonce_for(request), token=token)


async def use_link(request: web.Request) -> web.Response:
    """POST /desk/sign-in/{token}: use the link once; set the session cookie."""
    desk = request.app[DESK]
    form = await request.post()
    await check_csrf(request, form, None)
    token = request.match_info["token"]
    if len(token) > 100:
        return error(request, 404, "error_link_unknown")
    outcome = await desk.port.desk_sign_in(token, client_address(request), desk.config.policy())
    if outcome.session is None:
        if outcome.refusal == "limited":
            response = error(request, 429, "error_limited", minutes=round(desk.config.window_minutes))
            response.headers["Retry-After"] = str(int(desk.config.window_minutes * 60))
            return response
        return error(request, 403 if outcome.refusal == "unknown" else 410, f"error_link_{outcome.refusal}")
    response = redirect(f"{PATH}/queue/mine")
    response.set_cookie(SESSION_COOKIE, session_cookie_value(desk, outcome.session.token), path=PATH,
                        httponly=True, samesite="Strict", secure=secure(request),
                        max_age=int(desk.config.session_hours * 3600))
    response.del_cookie(NONCE_COOKIE, path=PATH)
    return response


async def sign_out(request: web.Request) -> web.Response:
    """POST /desk/sign-out: end this session, or (everywhere=1) all of this person's sessions."""
    desk = request.app[DESK]
    session = await current_session(request)
    form = await request.post()
    if session is None:
        return redirect(f"{PATH}/sign-in")
    await check_csrf(request, form, session)
    await desk.port.desk_sign_out(session.token, client_address(request), everywhere=form.get("everywhere") == "1")
    response = redirect(f"{PATH}/sign-in")
    response.del_cookie(SESSION_COOKIE, path=PATH)
    return response


def add_routes(app: web.Application) -> None:
    """The sign-in routes."""
    app.router.add_get(PATH, home)
    app.router.add_get(f"{PATH}/", home)
    app.router.add_get(f"{PATH}/sign-in", sign_in_form)
    app.router.add_post(f"{PATH}/sign-in", request_link)
    app.router.add_get(f"{PATH}/sign-in/{{token}}", link_page)
    app.router.add_post(f"{PATH}/sign-in/{{token}}", use_link)
    app.router.add_post(f"{PATH}/sign-out", sign_out)
