"""The officer's pages: the queues with their filters and search, a complaint's page with its
whole story, the actions on it (answer, note, claim, reassign, resolve, reopen; ask the
citizen, change the urgency, extend, reject), and its files shown safely. An answer or a
resolution may carry photos or documents (proof of the work done), checked by content.

Every action goes through the port's staff actions, authorised in ``bot/staff.py`` exactly
as from Telegram, and the desk adds nothing of its own but the form: a case handled half
on the phone and half at the desk reads as one story. An answer carries a random id made
when the form was shown, so a form sent twice answers once.

Files: an image is decoded and encoded afresh (resized, its metadata dropped), so what the
browser gets is a picture and nothing else; any other file is a download
(``Content-Disposition: attachment``) that the browser never renders, under a sandboxing
Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from urllib.parse import quote, urlencode

from aiohttp import web

from channels.desk.site import DESK, PATH, check_csrf, current_session, error, language_of, redirect, render
from contract.desk import DeskSession, Filters
from contract.messages import Attachment

ACTIONS = ("answer", "note", "claim", "reassign", "resolve", "reopen", "ask", "urgency", "extend", "reject")
# Files an officer may attach to an answer or a resolution: the kinds a citizen's status
# page shows, recognised by their first bytes, not by what the browser says.
PROOF_KINDS = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"%PDF-", "application/pdf"))
PROOF_FILES = 3
PROOF_BYTES = 5 * 1024 * 1024
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif"}
THUMB_PIXELS = 480
FULL_PIXELS = 1600
MAX_SOURCE_PIXELS = 50_000_000
TEXT_LIMIT = 4000
FILTER_KEYS = ("status", "unit", "category", "channel", "area", "officer", "date_field", "date_from", "date_to",
               "rating_max", "q")


class SignInNeeded(Exception):
    """The page needs a signed-in staff member."""


async def signed_in(request: web.Request) -> DeskSession:
    """The signed-in staff member, or SignInNeeded (a GET goes to sign-in, anything else is refused)."""
    session = await current_session(request)
    if session is None:
        raise SignInNeeded()
    return session


def _filters(request: web.Request) -> Filters:
    query = request.query
    rating = query.get("rating_max", "").strip()
    return Filters(
        status=query.get("status", "")[:30], unit=query.get("unit", "")[:64], category=query.get("category", "")[:64],
        channel=query.get("channel", "")[:16], area=query.get("area", "")[:200], officer=query.get("officer", "")[:64],
        date_field=query.get("date_field", "") or "created", date_from=query.get("date_from", "")[:10],
        date_to=query.get("date_to", "")[:10], rating_max=int(rating) if rating.isdigit() and len(rating) < 3 else None,
        query=query.get("q", "")[:200])


def _units(request: web.Request, session: DeskSession) -> list[tuple[str, str]]:
    port = request.app[DESK].port
    language = language_of(request)
    if session.officer.role == "admin":
        return [(unit.slug, unit.name_en if language == "en" else unit.name) for unit in port.config.units]
    return [(unit.slug, unit.name_en if language == "en" else unit.name) for unit in port.config.units
            if unit.slug == port.unit_slug(session.officer.unit_id)]


async def queue(request: web.Request) -> web.Response:
    """GET /desk/queue/{queue}: a queue, narrowed by filters or a search, with every queue's count."""
    session = await signed_in(request)
    port = request.app[DESK].port
    name = request.match_info["queue"]
    if name not in port.desk_queues():
        return error(request, 404, "error_not_found", session)
    page_text = request.query.get("page", "0")
    page = int(page_text) if page_text.isdigit() and len(page_text) < 4 else 0
    filters = _filters(request)
    found = await port.desk_queue(session.officer, name, filters, page)
    kept = {key: request.query[key] for key in FILTER_KEYS if request.query.get(key)}
    return render(request, "queue.html", session=session, found=found, filters=filters, kept=kept,
                  statuses=port.desk_statuses(), units=_units(request, session),
                  categories=[(c.slug, c.name, c.name_en) for c in port.config.categories],
                  channels=("web", "sms", "email", "telegram", "zalo", "open311"),
                  page_url=lambda number: f"{PATH}/queue/{name}?{urlencode({**kept, 'page': number})}")


async def search(request: web.Request) -> web.Response:
    """GET /desk/search?q=: every complaint one may see that the words are found in."""
    await signed_in(request)
    return redirect(f"{PATH}/queue/all?{urlencode({'q': request.query.get('q', '')[:200]})}")


async def case(request: web.Request, session: DeskSession | None = None, status_code: int = 200,
               problem: str | None = None, draft: dict | None = None) -> web.Response:
    """GET /desk/case/{code}: a complaint, its whole story, and what may be done with it."""
    session = session or await signed_in(request)
    desk = request.app[DESK]
    port = desk.port
    found = port.parse_code(request.match_info["code"])
    if found.code is None:
        return error(request, 404, "error_not_found", session)
    view = await port.desk_case(session.officer, found.code, frozenset(desk.config.contact_roles))
    units = [(u.slug, u.name, u.name_en) for u in port.config.units if u.slug != view.unit_slug]
    reasons = {action: [(r.slug, r.name, r.name_en or r.name) for r in port.config.reasons if action in r.actions]
               for action in ("transfer", "reject")}
    return render(request, "case.html", status_code, session=session, case=view, units=units, problem=problem,
                  draft=draft or {}, submission=secrets.token_urlsafe(12), done=request.query.get("done", "")[:20],
                  categories={c.slug: (c.name, c.name_en) for c in port.config.categories}, reasons=reasons,
                  urgencies=("urgent", "normal", "complex"),
                  urgency_label=lambda level: port.texts.get(language_of(request), f"urgency.{level}"))


def _proof(form) -> tuple[Attachment, ...] | str:
    """The files attached to an answer or resolution, or the key of what is wrong with them."""
    files = [item for item in form.getall("files", []) if isinstance(item, web.FileField) and item.filename]
    if len(files) > PROOF_FILES:
        return "error_files_count"
    found = []
    for item in files:
        data = item.file.read(PROOF_BYTES + 1)
        if len(data) > PROOF_BYTES:
            return "error_file_large"
        kind = next((kind for magic, kind in PROOF_KINDS if data.startswith(magic)), None)
        if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = "image/webp"
        if kind is None or not data:
            return "error_file_kind"
        name = "".join(c for c in item.filename if c.isprintable() and c not in '/\\:')[:200] or "file"
        found.append(Attachment(name, kind, data))
    return tuple(found)


async def act(request: web.Request) -> web.Response:
    """POST /desk/case/{code}/{action}: answer, note, claim, reassign, resolve or reopen."""
    session = await signed_in(request)
    port = request.app[DESK].port
    form = await request.post()
    await check_csrf(request, form, session)
    action = request.match_info["action"]
    found = port.parse_code(request.match_info["code"])
    if action not in ACTIONS or found.code is None:
        return error(request, 404, "error_not_found", session)
    code, officer = found.code, session.officer
    text = str(form.get("text") or "").strip()
    reason = str(form.get("reason") or "").strip()[:500]
    submission = str(form.get("submission") or "")[:40]
    source = f"desk:{submission}" if submission else None
    if len(text) > TEXT_LIMIT:
        return await case(request, session, 400, "error_too_long", {action: text[:TEXT_LIMIT]})
    if action in ("note", "ask") and not text:
        # Nothing is changed by an empty form; checked here and again in the domain.
        await port.authorise(officer, code)
        return await case(request, session, 400, "error_empty", {})
    files = _proof(form) if action in ("answer", "resolve") else ()
    if isinstance(files, str):
        await port.authorise(officer, code)
        return await case(request, session, 400, files, {action: text})
    if action == "answer" and not text and not files:
        await port.authorise(officer, code)
        return await case(request, session, 400, "error_empty", {})
    if action == "answer":
        await port.answer(officer, code, text, source, files)
    elif action == "note":
        await port.note(officer, code, text, source)
    elif action == "claim":
        await port.claim(officer, code)
    elif action == "resolve":
        await port.resolve(officer, code, text or None, source, files)
    elif action == "reopen":
        await port.reopen(officer, code, reason or None)
    elif action == "reassign":
        unit = str(form.get("unit") or "")[:64]
        if not reason:
            await port.authorise(officer, code)
            return await case(request, session, 400, "error_reason", {"reason": ""})
        await port.reassign(officer, code, unit, reason, text)
    elif action == "ask":
        await port.ask(officer, code, text, source)
    elif action == "urgency":
        await port.set_urgency(officer, code, str(form.get("level") or "")[:16], text)
    elif action == "extend":
        await port.extend(officer, code, text)
    elif action == "reject":
        await port.reject(officer, code, reason or None, text)
    return redirect(f"{PATH}/case/{code}?{urlencode({'done': action})}")


def _safe_image(data: bytes, limit: int) -> tuple[bytes, str]:
    """The picture decoded and drawn again, at most ``limit`` pixels a side, as JPEG or PNG."""
    from PIL import Image  # loaded with the first picture shown, not with the service

    with Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > MAX_SOURCE_PIXELS:
            raise ValueError("too many pixels")
        image.thumbnail((limit, limit))
        alpha = image.mode in ("RGBA", "LA", "P")
        picture = image.convert("RGBA" if alpha else "RGB")
        out = io.BytesIO()
        picture.save(out, format="PNG" if alpha else "JPEG", quality=85)
    return out.getvalue(), "image/png" if alpha else "image/jpeg"


def _disposition(kind: str, filename: str) -> str:
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in filename)[:100] or "file"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename[:100])}"


async def file(request: web.Request) -> web.StreamResponse:
    """GET /desk/file/{id}: a case's file, an image redrawn (``?size=thumb`` for a small one)."""
    session = await signed_in(request)
    port = request.app[DESK].port
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        return error(request, 404, "error_not_found", session)
    stored = await port.attachment(session.officer, int(raw))
    if not stored.data:
        return error(request, 404, "error_file_elsewhere", session)
    headers = {"Cache-Control": "private, no-store", "Content-Security-Policy": "default-src 'none'; sandbox",
               "X-Content-Type-Options": "nosniff"}
    if stored.content_type in IMAGE_TYPES:
        from PIL import Image, UnidentifiedImageError  # loaded with the first picture, not with the service

        limit = THUMB_PIXELS if request.query.get("size") == "thumb" else FULL_PIXELS
        try:
            body, content_type = await asyncio.get_running_loop().run_in_executor(None, _safe_image, stored.data,
                                                                                 limit)
        except (UnidentifiedImageError, ValueError, OSError, Image.DecompressionBombError):
            return error(request, 415, "error_bad_image", session)
        headers["Content-Disposition"] = _disposition("inline", stored.filename)
        return web.Response(body=body, content_type=content_type, headers=headers)
    content_type = "application/pdf" if stored.content_type == "application/pdf" else "application/octet-stream"
    headers["Content-Disposition"] = _disposition("attachment", stored.filename)
    return web.Response(body=stored.data, content_type=content_type, headers=headers)


def add_routes(app: web.Application) -> None:
    """The officer's routes."""
    app.router.add_get(f"{PATH}/queue/{{queue}}", queue)
    app.router.add_get(f"{PATH}/search", search)
    app.router.add_get(f"{PATH}/case/{{code}}", case)
    app.router.add_post(f"{PATH}/case/{{code}}/{{action}}", act)
    app.router.add_get(f"{PATH}/file/{{id}}", file)
