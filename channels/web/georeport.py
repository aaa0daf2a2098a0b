"""GeoReport v2's wire format: the same answers in JSON and in XML, and its errors.

The format is the path's extension (``services.json``, ``services.xml``). XML is the
format the specification requires and JSON the one most clients use; both come from one
tree of plain values, so they cannot drift apart: a list becomes repeated elements named
by ``ITEM_TAGS``, None an empty element. Errors are GeoReport's own list of
``{code, description}``, in the request's format.
"""

from __future__ import annotations

import json
from datetime import datetime
from xml.etree import ElementTree

from aiohttp import web

from channels.web.site import Site
from contract.results import PublicStatus

FORMATS = {"json": "application/json", "xml": "text/xml"}
# In XML a list is an element holding one child per item, named after the list.
ITEM_TAGS = {"services": "service", "service_requests": "request", "errors": "error", "endpoints": "endpoint",
             "formats": "format", "attributes": "attribute"}
# GeoReport v2's two statuses (its own words, not ours): a finished complaint is closed.
OPEN = "open"
CLOSED = "closed"


def format_of(path: str) -> str:
    """The answer format a path asks for: "xml" for a .xml path, else "json"."""
    return "xml" if path.endswith(".xml") else "json"


def w3c(site: Site, moment: datetime | None) -> str | None:
    """A time as GeoReport writes it: ISO 8601 with the service's UTC offset (2026-11-02T08:00:00+07:00)."""
    return moment.astimezone(site.port.config.tz).isoformat(timespec="seconds") if moment else None


def _xml(tag: str, value: object) -> ElementTree.Element:
    element = ElementTree.Element(tag)
    if isinstance(value, dict):
        for key, item in value.items():
            element.append(_xml(key, item))
    elif isinstance(value, list):
        for item in value:
            element.append(_xml(ITEM_TAGS.get(tag, "item"), item))
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = str(value)
    return element


def answer(fmt: str, root: str, value: object, status_code: int = 200) -> web.Response:
    """A GeoReport answer: value as JSON, or as XML under the root element ``root``."""
    if fmt == "xml":
        body = ElementTree.tostring(_xml(root, value), encoding="unicode")
        return web.Response(text='<?xml version="1.0" encoding="UTF-8"?>\n' + body, status=status_code,
                            content_type=FORMATS["xml"], charset="utf-8")
    return web.Response(text=json.dumps(value, ensure_ascii=False), status=status_code,
                        content_type=FORMATS["json"], charset="utf-8")


def error(fmt: str, status_code: int, description: str) -> web.Response:
    """GeoReport's error answer: a list of one {code, description}."""
    return answer(fmt, "errors", [{"code": status_code, "description": description}], status_code)


def open_or_closed(found: PublicStatus) -> str:
    """GeoReport's two statuses: finished complaints (resolved or closed) are closed, the rest open."""
    return CLOSED if found.finished else OPEN


def service(site: Site, slug: str) -> dict:
    """One complaint category as a GeoReport service."""
    category = site.port.config.category(slug)
    return {"service_code": category.slug, "service_name": category.name,
            "description": category.name_en or category.name, "metadata": False, "type": "realtime",
            "keywords": "", "group": ""}


def request(site: Site, found: PublicStatus) -> dict:
    """A complaint's public status as a GeoReport service request.

    Only the public status: no address, position or media, which could identify the
    citizen (the status page shows none of them either); the description only when the
    citizen let it be public, with phone numbers and e-mail addresses taken out. ``urgency``
    is our extension: urgent, normal or complex.
    """
    category = site.port.config.category(found.category) if found.category else None
    label = site.port.texts.get(site.port.config.service.default_language, f"status.{found.status}")
    return {
        "service_request_id": found.code,
        "status": open_or_closed(found),
        "status_notes": found.replies[-1].text if found.replies else label,
        "service_name": category.name if category else None,
        "service_code": found.category,
        "agency_responsible": found.unit_name,
        "service_notice": None,
        "requested_datetime": w3c(site, found.created_at),
        "updated_datetime": w3c(site, found.updated_at),
        "expected_datetime": w3c(site, found.first_response_due),
        "description": found.description,
        "urgency": found.urgency,
    }
