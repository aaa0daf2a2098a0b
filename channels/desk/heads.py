"""The unit head's and the admin's pages: the digest's figures live for a unit and period,
with its chart and a way down from every figure to the complaints behind it; the units,
staff and routing rules (read only: the configuration stays their source), the rules'
route test, and the outbox's failed messages with a retry.

Who may see what is decided in the domain (``bot/desk_admin.py``): a head their own unit,
an admin any; an officer neither.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from channels.desk.pages import signed_in
from channels.desk.site import DESK, PATH, check_csrf, language_of, redirect, render

DECIMALS = {"vi": ",", "en": "."}


def _period_fields(request: web.Request) -> tuple[str, str]:
    return request.query.get("unit", "")[:64], request.query.get("period", "daily")[:16].strip() or "daily"


def _drill(unit: str, queue: str = "all", **filters: str) -> str:
    """A link to the complaints behind a figure."""
    return f"{PATH}/queue/{queue}?{urlencode({'unit': unit, **filters})}"


async def dashboard(request: web.Request) -> web.Response:
    """GET /desk/dashboard?unit=&period=: the digest's figures for a unit and period, live."""
    session = await signed_in(request)
    port = request.app[DESK].port
    language = language_of(request)
    unit, period = _period_fields(request)
    digest, _, by_officer = await port.desk_dashboard(session.officer, unit or None, period, language)
    figures = digest.figures.period
    first = digest.period.first_day.isoformat()
    last = digest.period.last_day.isoformat()
    span = {"date_from": first, "date_to": last}

    def number(value: float) -> str:
        return f"{value:.1f}".replace(".", DECIMALS.get(language, "."))

    slug = digest.unit_slug
    drills = {
        "received": _drill(slug, date_field="created", **span),
        "first_answer": _drill(slug, date_field="first_answer", **span),
        "resolution": _drill(slug, date_field="resolution", **span),
        "rated": _drill(slug, date_field="rated", **span),
        "low": _drill(slug, date_field="rated", rating_max="3", **span),
        "open": _drill(slug, "unit"),
        "overdue": _drill(slug, "overdue"),
    }
    units = [(u.slug, u.name_en if language == "en" else u.name) for u in port.config.units
             if session.officer.role == "admin" or u.slug == slug]
    return render(
        request, "dashboard.html", session=session, digest=digest, figures=figures, by_officer=by_officer,
        drills=drills, units=units, unit=slug, period=period, number=number,
        duration=lambda seconds: port.duration(seconds, language),
        chart_url=f"{PATH}/dashboard/chart.png?{urlencode({'unit': slug, 'period': period})}",
        officer_url=lambda member: _drill(slug, "overdue", officer=member) if member else _drill(slug, "overdue"))


async def chart(request: web.Request) -> web.Response:
    """GET /desk/dashboard/chart.png: the digest's 30-day chart for the unit and period."""
    session = await signed_in(request)
    port = request.app[DESK].port
    unit, period = _period_fields(request)
    _, png, _ = await port.desk_dashboard(session.officer, unit or None, period, language_of(request))
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "private, no-store"})


async def admin(request: web.Request) -> web.Response:
    """GET /desk/admin: units, staff and routing rules, as configured."""
    session = await signed_in(request)
    port = request.app[DESK].port
    staff = await port.desk_staff(session.officer)
    rules = await port.desk_rules(session.officer)
    return render(request, "admin.html", session=session, staff=staff, rules=rules, units=port.config.units,
                  default_unit=port.config.routing.default_unit)


async def route_test(request: web.Request) -> web.Response:
    """GET and POST /desk/admin/route-test: which unit a complaint like this would go to, and why."""
    session = await signed_in(request)
    port = request.app[DESK].port
    decision, form = None, {"text": "", "area": "", "category": "", "channel": "web"}
    if request.method == "POST":
        posted = await request.post()
        await check_csrf(request, posted, session)
        form = {key: str(posted.get(key) or "")[:2000] for key in form}
        if form["text"].strip():
            decision = await port.desk_route_test(session.officer, form["text"], form["area"], form["category"],
                                                  form["channel"] or "web")
    else:
        await port.desk_rules(session.officer)  # admins only, as the POST
    return render(request, "route_test.html", session=session, decision=decision, form=form,
                  categories=[(c.slug, c.name, c.name_en) for c in port.config.categories],
                  channels=("web", "sms", "email", "telegram", "zalo", "open311"),
                  unit_label=lambda slug: next((u.name for u in port.config.units if u.slug == slug), slug))


async def outbox(request: web.Request) -> web.Response:
    """GET /desk/admin/outbox: the messages whose sending failed for good."""
    session = await signed_in(request)
    failed = await request.app[DESK].port.desk_failed_messages(session.officer)
    return render(request, "outbox.html", session=session, failed=failed,
                  done=request.query.get("done", "")[:20])


async def retry(request: web.Request) -> web.Response:
    """POST /desk/admin/outbox/{id}/retry: queue a failed message again."""
    session = await signed_in(request)
    form = await request.post()
    await check_csrf(request, form, session)
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound()
    await request.app[DESK].port.desk_retry(session.officer, int(raw))
    return redirect(f"{PATH}/admin/outbox?done=retried")


def add_routes(app: web.Application) -> None:
    """The heads' and admins' routes."""
    app.router.add_get(f"{PATH}/dashboard", dashboard)
    app.router.add_get(f"{PATH}/dashboard/chart.png", chart)
    app.router.add_get(f"{PATH}/admin", admin)
    app.router.add_get(f"{PATH}/admin/route-test", route_test)
    app.router.add_post(f"{PATH}/admin/route-test", route_test)
    app.router.add_get(f"{PATH}/admin/outbox", outbox)
    app.router.add_post(f"{PATH}/admin/outbox/{{id}}/retry", retry)
