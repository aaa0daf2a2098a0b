"""Open311 GeoReport v2 under ``/open311/v2/``: city apps, FixMyStreet and CRMs file
complaints and read their status with no custom integration.

Each complaint category is a service (``service_code`` is its slug). A posted request is
a complaint like any other: it becomes an ``Inbound`` on channel "open311" and one call
to ``bot.intake.receive``, and its ``service_request_id`` is the tracking code, so the
citizen can also read it at ``/track/{code}``. Answers and errors follow the path's
format, JSON or XML (see ``georeport``).

Who may do what:
- reading services, and a request by its id, is public: whoever holds a tracking code
  may read its status anyway;
- posting a request needs an ``api_key`` from ``[open311] api_keys_env`` (in the form
  body, as the specification has it, or in the query string);
- listing requests without naming their ids needs a key too: a public list would hand
  out every tracking code, and a code is what lets a person rate the answer.

A client that may send the same request twice (a retry after a timeout) should send an
``Idempotency-Key`` header: the same key from the same API key files one complaint.
Without it every POST is a new complaint, since GeoReport gives a request no id of the
client's own.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import phonenumbers
from aiohttp import web
from email_validator import EmailNotValidError, validate_email
from multidict import MultiMapping

from channels.web import georeport
from channels.web.clients import retry_after
from channels.web.form import AREA_MAX, NAME_MAX, TEXT_MAX
from contract.fields import clean_text
from channels.web.site import SITE, Site
from contract.messages import Attachment, Inbound, Location
from contract.results import IntakeError

OPEN311_KEYS = web.AppKey("open311_keys", tuple)
PREFIX = "/open311/v2"
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-11-25T00:00:00+00:00"  # when this endpoint's behaviour last changed
DEFAULT_WINDOW = timedelta(days=90)  # GeoReport's default span for GET requests
MAX_IDS = 200
URL_MAX = 1000
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,100}$")
# A decimal number as GeoReport's examples write it: ASCII digits, an optional sign and point.
DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,3}(?:\.[0-9]{1,15})?|\.[0-9]{1,15})", re.ASCII)
FORMAT = "{format:json|xml}"


class Refusal(Exception):
    """A request GeoReport answers with an error: HTTP status and description (and when to retry)."""

    def __init__(self, status_code: int, description: str, retry_after: str | None = None):
        super().__init__(description)
        self.status_code = status_code
        self.description = description
        self.retry_after = retry_after


def _guarded(handler):
    """Answer a Refusal as GeoReport's error, in the format the path asks for."""

    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except Refusal as refusal:
            response = georeport.error(georeport.format_of(request.path), refusal.status_code, refusal.description)
            if refusal.retry_after:
                response.headers["Retry-After"] = refusal.retry_after
            return response

    guarded.__doc__ = handler.__doc__
    return guarded


def _jurisdiction(site: Site, params: MultiMapping[str]) -> None:
    given = params.get("jurisdiction_id")
    if given and given != site.open311.jurisdiction_id:
        raise Refusal(404, f"jurisdiction_id {given[:100]!r} is not served here; "
                           f"this endpoint serves {site.open311.jurisdiction_id!r}")


def _authorised(request: web.Request, given: str | None) -> str:
    """The caller's API key when it is one of ours (compared in constant time); else Refusal 403."""
    if not given:
        raise Refusal(403, "api_key is required")
    matches = [hmac.compare_digest(given.encode("utf-8", "replace"), key.encode()) for key in request.app[OPEN311_KEYS]]
    if not any(matches):
        raise Refusal(403, "api_key is not valid")
    return given


def _text(params: MultiMapping[str], name: str, limit: int) -> str:
    value = clean_text(params.get(name) or "")
    if len(value) > limit:
        raise Refusal(400, f"{name} is longer than {limit} characters")
    return value


def _location(params: MultiMapping[str]) -> Location | None:
    lat, long = (params.get("lat") or "").strip(), (params.get("long") or "").strip()
    if not lat and not long:
        return None
    if not lat or not long:
        raise Refusal(400, "lat and long go together: send both, in decimal degrees (WGS 84)")
    if not (DECIMAL.fullmatch(lat) and DECIMAL.fullmatch(long)):
        # Python's float() would also take "1_0" (as 10), "٢١" (Arabic-Indic digits, as 21),
        # "1e1", "inf" and "nan": none of them is a decimal degree as GeoReport writes it.
        raise Refusal(400, "lat and long must be decimal degrees (WGS 84) in ASCII digits, "
                           "e.g. lat=21.0285&long=105.8542")
    latitude, longitude = float(lat), float(long)
    if abs(latitude) > 90 or abs(longitude) > 180:
        raise Refusal(400, "lat must be between -90 and 90 and long between -180 and 180 (decimal degrees, WGS 84)")
    return Location(latitude, longitude)


def _contact(site: Site, params: MultiMapping[str]) -> tuple[tuple[str, str], ...]:
    """Where answers go, best first: the email address, then the phone (as SMS)."""
    reply_to = []
    email = (params.get("email") or "").strip()
    if email:
        try:
            reply_to.append(("email", validate_email(email[:320], check_deliverability=False).normalized))
        except EmailNotValidError:
            raise Refusal(400, "email is not a valid email address") from None
    phone = (params.get("phone") or "").strip()
    if phone:
        try:
            number = phonenumbers.parse(phone[:40], site.port.config.service.phone_region)
            if not phonenumbers.is_valid_number(number):
                raise ValueError
        except (phonenumbers.NumberParseException, ValueError):
            raise Refusal(400, "phone is not a valid phone number") from None
        reply_to.append(("sms", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)))
    return tuple(reply_to)


def _name(site: Site, params: MultiMapping[str]) -> str | None:
    first, last = _text(params, "first_name", NAME_MAX), _text(params, "last_name", NAME_MAX)
    # Vietnamese names are written family name first: last_name "Nguyễn", first_name "Văn An".
    parts = (last, first) if site.port.config.service.default_language == "vi" else (first, last)
    return " ".join(part for part in parts if part) or None


def _media(params: MultiMapping[str]) -> tuple[Attachment, ...]:
    """media_url kept as a link for staff; never fetched (it could point anywhere, inside too)."""
    url = (params.get("media_url") or "").strip()
    if not url:
        return ()
    parts = urlsplit(url) if len(url) <= URL_MAX and url.isprintable() and " " not in url else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refusal(400, f"media_url must be an http or https URL of at most {URL_MAX} characters")
    return (Attachment(filename="media_url", content_type="text/uri-list", reference=url),)


def _external_id(request: web.Request, api_key: str) -> str | None:
    """The client's Idempotency-Key, scoped to its API key so two partners never collide."""
    given = request.headers.get("Idempotency-Key")
    if given is None:
        return None
    if not IDEMPOTENCY_KEY.match(given):
        raise Refusal(400, "Idempotency-Key must be 1 to 100 printable ASCII characters")
    return f"{hashlib.sha256(api_key.encode()).hexdigest()[:12]}:{given}"


async def discovery(request: web.Request) -> web.Response:
    """GET discovery.{format}: where this GeoReport v2 endpoint is and what it speaks."""
    site = request.app[SITE]
    return georeport.answer(request.match_info["format"], "discovery", {
        "changeset": CHANGESET,
        "contact": f"{site.port.config.service.name} ({site.web.public_url})",
        "key_service": "API keys for posting requests are issued by the service's operator.",
        "endpoints": [{"specification": SPECIFICATION, "url": site.web.public_url + PREFIX,
                       "changeset": CHANGESET, "type": "production",
                       "formats": list(georeport.FORMATS.values())}],
    })


async def services(request: web.Request) -> web.Response:
    """GET services.{format}: one service per complaint category."""
    site = request.app[SITE]
    _jurisdiction(site, request.query)
    return georeport.answer(request.match_info["format"], "services",
                            [georeport.service(site, c.slug) for c in site.port.config.categories])


async def service_definition(request: web.Request) -> web.Response:
    """GET services/{service_code}.{format}: a service's definition (no extra attributes)."""
    site = request.app[SITE]
    _jurisdiction(site, request.query)
    code = request.match_info["service_code"]
    if site.port.config.category(code) is None:
        raise Refusal(404, f"service_code {code[:100]!r} not found")
    return georeport.answer(request.match_info["format"], "service_definition",
                            {"service_code": code, "attributes": []})


async def post_request(request: web.Request) -> web.Response:
    """POST requests.{format}: file a complaint (form-encoded; api_key required)."""
    site = request.app[SITE]
    wait = await site.port.admit("open311", site.client(request), site.open311.limit_per_client,
                                 site.open311.limit_window_seconds)
    if wait is not None:
        # Before the body is read: a flood costs one counter each, and nothing else.
        raise Refusal(429, f"too many requests from this address; try again in {retry_after(wait)} seconds",
                      retry_after(wait))
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Refusal(400, "send the request form-encoded (application/x-www-form-urlencoded)")
    try:
        params = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise Refusal(413, f"the request is larger than {site.web.max_body_bytes} bytes") from None
    except (ValueError, LookupError):
        raise Refusal(400, "the request body is not a valid form") from None
    if any(not isinstance(value, str) for value in params.values()):
        raise Refusal(400, "send text fields only; a photo goes by media_url")
    api_key = _authorised(request, params.get("api_key") or request.query.get("api_key"))
    _jurisdiction(site, params)
    service_code = (params.get("service_code") or "").strip()
    if not service_code:
        raise Refusal(400, "service_code is required")
    if site.port.config.category(service_code) is None:
        raise Refusal(404, f"service_code {service_code[:100]!r} not found")
    location = _location(params)
    area = _text(params, "address_string", AREA_MAX)
    if location is None and not area:
        raise Refusal(400, "a location is required: lat and long, or address_string")
    text = _text(params, "description", TEXT_MAX)
    media = _media(params)
    if not text and not media:
        raise Refusal(400, "description is required")
    inbound = Inbound(
        channel="open311", external_id=_external_id(request, api_key), sender=None,
        sender_name=_name(site, params), text=text, received_at=site.port.clock.now(), attachments=media,
        location=location, category=service_code, area=area or None, reply_to=_contact(site, params),
        public=_public(params),
    )
    try:
        result = await site.port.receive(inbound)
    except IntakeError as error:
        raise Refusal(400, str(error)) from None
    if result.tracking_code is None:
        raise Refusal(400, "the request was recorded but is not a complaint")
    language = site.port.config.service.default_language
    notice = site.port.texts.get(language, "web.open311_notice", code=result.tracking_code, unit=result.unit,
                            due=site.port.format_time(result.due, language), url=site.port.track_url(result.tracking_code))
    return georeport.answer(request.match_info["format"], "service_requests", [
        {"service_request_id": result.tracking_code, "service_notice": notice, "account_id": None}])


def _public(params: MultiMapping[str]) -> bool:
    """Our extension ``public``: whether the complaint's text may be shown publicly (default no)."""
    value = (params.get("public") or "").strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise Refusal(400, "public must be true or false")


def _codes(site: Site, value: str) -> list[str]:
    codes = [part.strip() for part in value.split(",") if part.strip()]
    if len(codes) > MAX_IDS:
        raise Refusal(400, f"at most {MAX_IDS} service_request_id values at once")
    normal = []
    for code in codes:
        found = site.port.parse_code(code)
        if found.malformed:
            raise Refusal(400, f"service_request_id is not valid: {found.error}")
        normal.append(found.code)
    return list(dict.fromkeys(normal))


def _moment(site: Site, params: MultiMapping[str], name: str) -> datetime | None:
    value = (params.get(name) or "").strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Refusal(400, f"{name} must be a W3C date and time, e.g. 2026-11-02T08:00:00+07:00") from None
    # The specification asks for an offset; a time without one is taken in the city's zone.
    return moment if moment.tzinfo else moment.replace(tzinfo=site.port.config.tz)


async def get_requests(request: web.Request) -> web.Response:
    """GET requests.{format}: requests by id (public), or by filters (api_key required)."""
    site = request.app[SITE]
    params = request.query
    _jurisdiction(site, params)
    fmt = request.match_info["format"]
    ids = params.get("service_request_id", "")
    if ids.strip():
        # The specification: service_request_id overrides every other filter.
        listed = await site.port.search(codes=_codes(site, ids))
    else:
        _authorised(request, params.get("api_key"))
        categories = None
        if (params.get("service_code") or "").strip():
            categories = [code.strip() for code in params["service_code"].split(",") if code.strip()]
            unknown = [code for code in categories if site.port.config.category(code) is None]
            if unknown:
                raise Refusal(404, f"service_code {unknown[0][:100]!r} not found")
        closed = None
        if (params.get("status") or "").strip():
            wanted = {part.strip().lower() for part in params["status"].split(",") if part.strip()}
            if not wanted <= {georeport.OPEN, georeport.CLOSED}:
                raise Refusal(400, "status must be open, closed, or both comma-separated")
            closed = None if len(wanted) == 2 else georeport.CLOSED in wanted
        start, end = _moment(site, params, "start_date"), _moment(site, params, "end_date")
        if start is None and end is None:
            start = site.port.clock.now() - DEFAULT_WINDOW
        elif start is None:
            start = end - DEFAULT_WINDOW
        if end is not None and start > end:
            raise Refusal(400, "start_date must not be after end_date")
        # A listing shows only what the citizens let be public: a private complaint is
        # found by its own code, never by browsing.
        listed = await site.port.search(categories=categories, received_from=start, received_until=end,
                                        closed=closed, public_only=True)
    return georeport.answer(fmt, "service_requests",
                            [georeport.request(site, item) for item in listed])


async def get_request(request: web.Request) -> web.Response:
    """GET requests/{service_request_id}.{format}: one request by its id (the tracking code)."""
    site = request.app[SITE]
    _jurisdiction(site, request.query)
    found = site.port.parse_code(request.match_info["service_request_id"])
    if found.malformed:
        raise Refusal(400, f"service_request_id is not valid: {found.error}")
    code = found.code
    listed = await site.port.search(codes=[code])
    if not listed:
        raise Refusal(404, f"service_request_id {code} not found")
    return georeport.answer(request.match_info["format"], "service_requests",
                            [georeport.request(site, item) for item in listed])


def add_routes(app: web.Application, keys: tuple[str, ...]) -> None:
    """Serve GeoReport v2 under /open311/v2/, taking posts from holders of these API keys."""
    app[OPEN311_KEYS] = keys
    app.router.add_get(f"{PREFIX}/discovery.{FORMAT}", _guarded(discovery))
    app.router.add_get(f"{PREFIX}/services.{FORMAT}", _guarded(services))
    app.router.add_get(f"{PREFIX}/services/{{service_code}}.{FORMAT}", _guarded(service_definition))
    app.router.add_post(f"{PREFIX}/requests.{FORMAT}", _guarded(post_request))
    app.router.add_get(f"{PREFIX}/requests.{FORMAT}", _guarded(get_requests))
    app.router.add_get(f"{PREFIX}/requests/{{service_request_id}}.{FORMAT}", _guarded(get_request))
