"""Reading one MIME part without tripping on a hostile header: its type, disposition,
charset, decoded bytes, children and file name. Every accessor answers something sane
when the standard library raises on a malformed header.
"""

from __future__ import annotations

import email.utils
from email.message import Message

from channels.email.headers import HEADER_ERRORS, repair_8bit


def content_type(part: Message) -> str:
    """The part's media type, lower case (octet-stream when its header cannot be read)."""
    # Asked several times per part; the stdlib parses the header anew each time.
    cached = getattr(part, "_intake_content_type", None)
    if cached is None:
        try:
            cached = part.get_content_type()
        except HEADER_ERRORS:
            cached = "application/octet-stream"
        part._intake_content_type = cached  # type: ignore[attr-defined]
    return cached


def disposition(part: Message) -> str | None:
    """inline, attachment, or None."""
    try:
        return part.get_content_disposition()
    except HEADER_ERRORS:
        return None


def charset(part: Message) -> str | None:
    """The charset the part declares, if any."""
    try:
        value = part.get_param("charset")
        if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
            value = email.utils.collapse_rfc2231_value(value)
        return str(value) if value is not None else None
    except HEADER_ERRORS:
        return None


def payload(part: Message) -> bytes:
    """The part's decoded bytes (empty when they cannot be decoded)."""
    try:
        data = part.get_payload(decode=True)
    except HEADER_ERRORS:
        return b""
    return data if isinstance(data, bytes) else b""


def children(part: Message) -> list[Message]:
    """The parts of a multipart part."""
    payload = part.get_payload() if part.is_multipart() else None
    return [child for child in payload if isinstance(child, Message)] if isinstance(payload, list) else []


def given_filename(part: Message) -> str:
    """The file name the sender gave the part, read as UTF-8 or Windows-1258."""
    try:
        name = part.get_filename()
    except HEADER_ERRORS:
        return ""
    return repair_8bit(str(name))[0] if name else ""
