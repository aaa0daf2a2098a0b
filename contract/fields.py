"""One cleaning for every field that reaches the store from outside, on every channel.

Text a person wrote (a complaint, a name, a subject) is cleaned: NFC (phones and Macs
send decomposed Vietnamese, Windows-1258 mail writes tones as combining marks), Unix
newlines, and no control characters (NUL breaks PostgreSQL text columns and SQLite
keeps it, the rest mean nothing on a screen), no lone surrogates (they cannot be
encoded) and no Unicode non-characters.

An identifier (a provider's message id, used for dedupe) or an address (a phone number,
an email address, a chat id) is never silently changed: two different ids must not
become one, nor one id two. One with a control character, a lone surrogate, nothing in
it, or longer than its column is refused (``FieldError``), and the channel answers in
its own protocol (HTTP 400, SMTP 550). Only what NFC and trimming surrounding blanks do
is applied to it.

The limits are the store's column sizes (``storage/models.py``; a test checks they
match): the contract cannot import the store, and a channel must know them to refuse
before anything is stored.
"""

from __future__ import annotations

import re
import unicodedata

# The store's column sizes (messages.external_id, contacts.address, messages.sender, ...).
EXTERNAL_ID_MAX = 255
ADDRESS_MAX = 320
NAME_MAX = 200
SUBJECT_MAX = 300
AREA_MAX = 200
VIA_MAX = 64
CATEGORY_MAX = 64
FILENAME_MAX = 255
CONTENT_TYPE_MAX = 127
REFERENCE_MAX = 1000

# C0 controls but tab and newline, DEL, C1 controls, lone surrogates, and the
# non-characters U+FFFE/U+FFFF. \r goes with newlines, handled before.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# In an identifier nothing of that kind is allowed, nor tab, newline or carriage return.
_NOT_IN_IDENTIFIER = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


class FieldError(ValueError):
    """A field from outside that cannot be stored as it is; the message names the field."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


def clean_text(value: str | None) -> str:
    """Text a person wrote, as stored: NFC, "\\n" newlines, no control characters, trimmed."""
    if not value:
        return ""
    value = unicodedata.normalize("NFC", _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n")))
    return value.strip()


def clean_line(value: str | None, limit: int) -> str:
    """A short text on one line (a name, a subject, a ward): cleaned, blanks joined, at most ``limit``."""
    return " ".join(clean_text(value).split())[:limit].strip()


def identifier(value: str | None, field: str, limit: int) -> str:
    """An id or an address as stored: NFC and trimmed, else FieldError (never altered otherwise)."""
    if value is None:
        raise FieldError(field, "is missing")
    if _NOT_IN_IDENTIFIER.search(value):
        raise FieldError(field, "contains control characters")
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise FieldError(field, "is empty")
    if len(value) > limit:
        raise FieldError(field, f"is longer than {limit} characters")
    return value


def is_identifier(value: str, limit: int) -> bool:
    """Whether ``identifier`` would keep this value exactly as it is."""
    try:
        return identifier(value, "value", limit) == value
    except FieldError:
        return False


__all__ = ["ADDRESS_MAX", "AREA_MAX", "CATEGORY_MAX", "CONTENT_TYPE_MAX", "EXTERNAL_ID_MAX", "FILENAME_MAX",
           "FieldError", "NAME_MAX", "REFERENCE_MAX", "SUBJECT_MAX", "VIA_MAX", "clean_line", "clean_text",
           "identifier", "is_identifier"]
