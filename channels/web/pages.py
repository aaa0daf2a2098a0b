"""The citizen's pages: the complaint form (with photos and documents), the status page
(with the files of the answers: proof of the work done) and, once a complaint is
resolved, its satisfaction rating and "not fixed".

They translate and hand off: a posted form becomes an ``Inbound`` and one awaited call to
the port's ``receive``; the answer (a redirect to the status page) is sent only after the
complaint and its files are committed, in one transaction. A resubmitted form (double
click, browser resend) carries the same submission id, which intake dedupes, so it shows
the same complaint again. Nothing is stored until every file has passed its checks.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
from urllib.parse import urlencode

from aiohttp import web

from channels.web import csrf, uploads
from channels.web.clients import retry_after
from channels.web.form import validate
from channels.web.site import SITE, csrf_nonce, error_page, language_of, render, with_csrf_cookie
from contract.fields import clean_text
from contract.messages import Inbound
from contract.results import IntakeError, LifecycleError, Lookup, PublicStatus, RatingError

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
SUBMISSION_ID = re.compile(r"^[0-9a-f]{32}$")
RATINGS = ("1", "2", "3", "4", "5")
COMMENT_MAX = 1000


def redirect(status: int, location: str) -> web.Response:
    """A redirect, returned rather than raised: a raised ``web.HTTPSeeOther`` ties its
    traceback, its frames and the request in a cycle that only a full collection frees, and
    under a storm of form posts those were kept by the thousand (bench/README.md, 2026-12-07,
    thirteenth session)."""
    return web.Response(status=status, headers={"Location": location})


def _limits(request: web.Request) -> uploads.Limits:
    web_config = request.app[SITE].web
    return uploads.Limits(web_config.max_body_bytes, web_config.max_attachments, web_config.max_attachment_bytes,
                          web_config.max_image_pixels)


def _form_page(request: web.Request, language: str, *, values: dict | None = None, errors: dict | None = None,
               status_code: int = 200, notice: str | None = None) -> web.Response:
    site = request.app[SITE]
    web_config = site.web
    nonce = csrf_nonce(request)
    response = render(
        request, "form.html", language, status_code,
        values=values or {}, errors=errors or {}, notice=notice,
        csrf_field=csrf.FIELD, csrf_token=csrf.token_for(request.app[SITE].csrf_key, nonce),
        submission_id=(values or {}).get("submission_id") or secrets.token_hex(16),
        categories=[(c.slug, c.name_en or c.name if language == "en" else c.name) for c in site.port.config.categories],
        max_attachments=web_config.max_attachments, accept=uploads.ACCEPT,
        attachments_hint=site.port.texts.get(language, "web.attachments_hint", count=web_config.max_attachments,
                                        max_mb=uploads.megabytes(web_config.max_attachment_bytes)),
    )
    return with_csrf_cookie(request, response, nonce)


async def show_form(request: web.Request) -> web.Response:
    """GET /: the complaint form."""
    return _form_page(request, language_of(request, request.app[SITE]))


async def _read_form(request: web.Request, language: str) -> uploads.PostedForm | web.Response:
    """The posted form, or the error page that answers it (413, 415, 400)."""
    site = request.app[SITE]
    limits = _limits(request)
    texts = site.port.texts
    if request.content_type not in FORM_TYPES:
        return error_page(request, 415, texts.get(language, "web.error_bad_request"), language)
    multipart = request.content_type == "multipart/form-data"

    # The refusals are pages, rendered only when one is the answer (rendering both for every
    # post was 7 % of a form's CPU in a storm: bench/README.md, fifteenth session).
    def too_large() -> web.Response:
        if multipart and limits.max_files:
            message = texts.get(language, "web.error_upload_too_large", count=limits.max_files,
                                max_mb=uploads.megabytes(limits.max_file_bytes))
        else:
            message = texts.get(language, "web.error_too_large", max_kb=limits.max_field_bytes // 1024)
        return error_page(request, 413, message, language)

    def bad_request() -> web.Response:
        return error_page(request, 400, texts.get(language, "web.error_bad_request"), language)

    most = limits.max_total_bytes if multipart else limits.max_field_bytes
    if request.content_length is not None and request.content_length > most:
        return too_large()
    if multipart:
        try:
            return await uploads.read_multipart(request, limits)
        except uploads.TooLarge:
            return too_large()
        except uploads.BadForm:
            return bad_request()
    try:
        posted = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return too_large()
    except (ValueError, LookupError):  # LookupError: a charset Python does not know
        return bad_request()
    return uploads.PostedForm({k: v for k, v in posted.items() if isinstance(v, str)}, [])


async def _check_files(request: web.Request, posted: uploads.PostedForm, language: str):
    """The posted files as Attachments, or the message that refuses them."""
    site = request.app[SITE]
    problem = posted.problem
    attachments = []
    if problem is None:
        for upload in posted.files:
            # Decoding a photo is CPU work: off the event loop, so other requests go on.
            checked = await asyncio.to_thread(uploads.inspect, upload, site.web.max_image_pixels)
            if isinstance(checked, uploads.Problem):
                problem = checked
                break
            attachments.append(checked)
    if problem is not None:
        return site.port.texts.get(language, f"web.{problem.key}", **problem.params)
    return tuple(attachments)


async def _flooded(request: web.Request, language: str) -> web.Response | None:
    """The 429 page when this client or this browser session has posted too often, else None."""
    site = request.app[SITE]
    web_config = site.web
    checks = [("web-form", site.client(request), web_config.form_limit_per_client)]
    session = request.cookies.get(csrf.COOKIE)
    if session:
        checks.append(("web-session", session[:64], web_config.form_limit_per_session))
    wait = await site.port.admit_all(checks, web_config.form_limit_window_seconds)
    if wait is None:
        return None
    response = error_page(request, 429, site.port.texts.get(
        language, "limits.web_too_many", minutes=max(1, math.ceil(wait / 60))), language)
    response.headers["Retry-After"] = retry_after(wait)
    return response


async def submit_form(request: web.Request) -> web.Response:
    """POST /: file a complaint from the form, then redirect to its status page."""
    site = request.app[SITE]
    language = language_of(request, site)
    flooded = await _flooded(request, language)
    if flooded is not None:
        return flooded  # before the body is read: a flood costs a counter, nothing else
    posted = await _read_form(request, language)
    if isinstance(posted, web.Response):
        return posted
    fields = posted.fields
    if fields.get("lang") in site.port.texts.texts:
        language = fields["lang"]
    submission_id = fields.get("submission_id", "")
    if not SUBMISSION_ID.match(submission_id):
        return error_page(request, 400, site.port.texts.get(language, "web.error_bad_request"), language)
    form = validate(fields, texts=site.port.texts, language=language,
                    categories={c.slug for c in site.port.config.categories},
                    phone_region=site.port.config.service.phone_region)
    kept = dict(form.values, submission_id=submission_id)
    errors = dict(form.errors)
    if not csrf.is_valid(request.app[SITE].csrf_key, request.cookies.get(csrf.COOKIE), fields.get(csrf.FIELD)):
        if posted.files:
            errors[uploads.FIELD] = site.port.texts.get(language, "web.error_attachments_again")
        return _form_page(request, language, values=kept, errors=errors, status_code=403,
                          notice=site.port.texts.get(language, "web.error_csrf"))
    files = await _check_files(request, posted, language)
    if isinstance(files, str):
        errors[uploads.FIELD] = files
    elif errors and files:
        # A browser never fills a file field in again: say so, or the photo is silently lost.
        errors[uploads.FIELD] = site.port.texts.get(language, "web.error_attachments_again")
    if errors:
        return _form_page(request, language, values=kept, errors=errors, status_code=422)
    reply_to = tuple((channel, address) for channel, address in (("sms", form.phone_e164), ("email", form.email))
                     if address)
    inbound = Inbound(
        channel="web", external_id=submission_id, sender=None, sender_name=form.values["name"] or None,
        text=form.values["text"], received_at=site.port.clock.now(), language=language, attachments=files,
        category=form.values["category"] or None, area=form.values["area"] or None, reply_to=reply_to,
        public=form.public,
    )
    try:
        result = await site.port.receive(inbound)
    except IntakeError:
        return _form_page(request, language, values=kept, status_code=422)
    return redirect(303, f"/track/{result.tracking_code}?{urlencode({'filed': 1, 'lang': language})}")


async def lookup(request: web.Request) -> web.Response:
    """GET /track?code=...: the lookup form, or a redirect to the code's page."""
    site = request.app[SITE]
    language = language_of(request, site)
    code = request.query.get("code", "").strip()
    if not code:
        return render(request, "lookup.html", language)
    found = await site.port.lookup(code)
    if found.malformed:
        return render(request, "lookup.html", language, 400, code=code[:40],
                      error=site.port.texts.get(language, "web.error_bad_code", reason=found.problem(language)))
    return redirect(303, f"/track/{found.code}?{urlencode({'lang': language})}")


def _status_page(request: web.Request, language: str, found: PublicStatus, *, status_code: int = 200,
                 rating_error: str | None = None, notice: str | None = None, comment: str = "") -> web.Response:
    site = request.app[SITE]
    nonce = csrf_nonce(request)
    response = render(
        request, "track.html", language, status_code, status=found, is_new=request.query.get("filed") == "1",
        status_label=site.port.texts.get(language, f"status.{found.status}"),
        unit=found.unit_name_en if language == "en" else found.unit_name,
        fmt=lambda moment: site.port.format_time(moment, language),
        rateable=found.finished, rated=request.query.get("rated") == "1",
        urgency_label=site.port.texts.get(language, f"urgency.{found.urgency}"),
        disputable=found.disputable_until is not None and site.port.clock.now() < found.disputable_until,
        disputed=request.query.get("disputed") == "1",
        ratings=RATINGS, rating_error=rating_error, notice=notice, comment=comment, comment_max=COMMENT_MAX,
        csrf_field=csrf.FIELD, csrf_token=csrf.token_for(request.app[SITE].csrf_key, nonce),
    )
    return with_csrf_cookie(request, response, nonce)


def _found(request: web.Request, language: str, found: Lookup) -> PublicStatus | web.Response:
    """The complaint looked up, or the page that says why there is none."""
    texts = request.app[SITE].port.texts
    if found.malformed:
        return error_page(request, 400, texts.get(language, "web.error_bad_code", reason=found.problem(language)),
                          language)
    if found.status is None:
        return error_page(request, 404, texts.get(language, "web.error_not_found", code=found.code), language)
    return found.status


async def _find(request: web.Request, language: str) -> PublicStatus | web.Response:
    """The complaint the path names, or the page that says why there is none."""
    return _found(request, language, await request.app[SITE].port.lookup(request.match_info["code"]))


async def track(request: web.Request) -> web.Response:
    """GET /track/{code}: the public status page of one complaint (never its files)."""
    site = request.app[SITE]
    language = language_of(request, site)
    raw = request.match_info["code"]
    found = await site.port.lookup(raw)
    if found.code is not None and found.code != raw:
        query = f"?{request.query_string}" if request.query_string else ""
        return redirect(301, f"/track/{found.code}{query}")
    found = _found(request, language, found)
    if isinstance(found, web.Response):
        return found
    return _status_page(request, language, found)


async def _read_small_form(request: web.Request, language: str) -> tuple[dict[str, str], str] | web.Response:
    """A short form posted from the status page: its text fields and the language to answer in."""
    site = request.app[SITE]
    if request.content_type != "application/x-www-form-urlencoded":
        return error_page(request, 415, site.port.texts.get(language, "web.error_bad_request"), language)
    try:
        posted = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return error_page(request, 413, site.port.texts.get(language, "web.error_too_large",
                                                       max_kb=site.web.max_body_bytes // 1024), language)
    except (ValueError, LookupError):
        return error_page(request, 400, site.port.texts.get(language, "web.error_bad_request"), language)
    fields = {k: v for k, v in posted.items() if isinstance(v, str)}
    if fields.get("lang") in site.port.texts.texts:
        language = fields["lang"]
    return fields, language


async def rate(request: web.Request) -> web.Response:
    """POST /track/{code}/rating: the citizen rates a resolved complaint from 1 to 5."""
    site = request.app[SITE]
    read = await _read_small_form(request, language_of(request, site))
    if isinstance(read, web.Response):
        return read
    fields, language = read
    found = await _find(request, language)
    if isinstance(found, web.Response):
        return found
    comment = clean_text(fields.get("comment", ""))
    if not csrf.is_valid(request.app[SITE].csrf_key, request.cookies.get(csrf.COOKIE), fields.get(csrf.FIELD)):
        return _status_page(request, language, found, status_code=403, comment=comment,
                            notice=site.port.texts.get(language, "web.error_csrf"))
    if not found.finished:
        return error_page(request, 409, site.port.texts.get(language, "web.error_rating_not_resolved"), language)
    rating = fields.get("rating", "")
    error = None
    if rating not in RATINGS:
        error = site.port.texts.get(language, "web.error_rating_choose")
    elif len(comment) > COMMENT_MAX:
        error = site.port.texts.get(language, "web.error_rating_comment_long", max=COMMENT_MAX)
    if error:
        return _status_page(request, language, found, status_code=422, rating_error=error, comment=comment)
    try:
        await site.port.rate(found.code, int(rating), comment or None, via="web")
    except RatingError:
        return error_page(request, 409, site.port.texts.get(language, "web.error_rating_not_resolved"), language)
    except LifecycleError:
        return error_page(request, 404, site.port.texts.get(language, "web.error_not_found", code=found.code), language)
    return redirect(303, f"/track/{found.code}?{urlencode({'rated': 1, 'lang': language})}#rating-thanks")


async def not_fixed(request: web.Request) -> web.Response:
    """POST /track/{code}/not-fixed: the citizen says the resolution did not fix the problem;
    the complaint reopens and goes to the unit head."""
    site = request.app[SITE]
    read = await _read_small_form(request, language_of(request, site))
    if isinstance(read, web.Response):
        return read
    fields, language = read
    found = await _find(request, language)
    if isinstance(found, web.Response):
        return found
    comment = clean_text(fields.get("comment", ""))
    if not csrf.is_valid(request.app[SITE].csrf_key, request.cookies.get(csrf.COOKIE), fields.get(csrf.FIELD)):
        return _status_page(request, language, found, status_code=403, notice=site.port.texts.get(language,
                                                                                             "web.error_csrf"))
    try:
        await site.port.not_fixed(found.code, comment[:COMMENT_MAX] or None, via="web")
    except LifecycleError:
        return error_page(request, 409, site.port.texts.get(language, "web.error_not_fixed_late"), language)
    return redirect(303, f"/track/{found.code}?{urlencode({'disputed': 1, 'lang': language})}#disputed")


# What a file of an answer may be shown as in the browser; anything else is downloaded.
INLINE_TYPES = ("image/jpeg", "image/png", "image/webp", "application/pdf")


async def answer_file(request: web.Request) -> web.Response:
    """GET /track/{code}/files/{id}: a photo or document of one of the complaint's public
    answers (never a citizen's own file)."""
    site = request.app[SITE]
    language = language_of(request, site)
    found = site.port.parse_code(request.match_info["code"])
    file_id = request.match_info["file_id"]
    if found.malformed or not file_id.isdigit():
        return error_page(request, 404, site.port.texts.get(language, "web.error_file_not_found"), language)
    try:
        stored = await site.port.public_file(found.code, int(file_id))
    except LifecycleError:
        stored = None
    if stored is None or not stored.data:
        return error_page(request, 404, site.port.texts.get(language, "web.error_file_not_found"), language)
    inline = stored.content_type in INLINE_TYPES
    name = re.sub(r'[^\w.\- ]', "_", stored.filename)[:100] or "file"
    return web.Response(body=stored.data, content_type=stored.content_type if inline else "application/octet-stream",
                        headers={"Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
                                 "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600",
                                 "Content-Security-Policy": "default-src 'none'; sandbox"})
