"""Logging for the service: one line per event, no secrets, no readable personal data.

Log lines leave the service (log shippers, support tickets, screenshots), and complaints
arrive with citizens' phone numbers and e-mail addresses in them. So every line is masked as
a whole, after the message, its ``fields`` and any traceback have been put together: that
catches personal data no matter which argument or exception carried it. Secrets (gateway
keys, bot tokens, passwords) are replaced outright. Newlines are escaped so that one event
is one line and a citizen's text cannot forge extra log lines.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import IO

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

__all__ = ("mask_phone", "mask_email", "mask_personal_data", "MaskingFormatter",
           "configure_logging")

_MIN_SECRET_LENGTH = 4

_EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9\-])"
_SEP = r"[ .\-]?"  # people group digits with spaces, dots or dashes
_PHONE = (
    # Not the tail of a longer number, a decimal fraction, a time or an IP address (the
    # milliseconds of a timestamp must survive). Letters may precede: "SĐT0912345678".
    r"(?<!\d)(?<!\d[.:])"
    r"(?:"
    rf"(?:\+|00)84{_SEP}(?:\(0\){_SEP})?[1-9](?:{_SEP}\d){{7,9}}"       # +84 912 345 678
    rf"|\(\+84\){_SEP}[1-9](?:{_SEP}\d){{7,9}}"                          # (+84) 912 345 678
    rf"|\+[1-9](?:{_SEP}\d){{7,14}}"                                      # any E.164 number
    rf"|0[1-9](?:{_SEP}\d){{8,9}}"                                        # 0912 345 678
    rf"|\(0\d{{2,3}}\){_SEP}\d(?:{_SEP}\d){{6,7}}"                        # (028) 3823 4567
    r")"
    # Not followed by a letter or digit, so hex digests and identifiers are left alone.
    r"(?![^\W_])"
)
_PERSONAL_DATA_RE = re.compile(rf"(?P<email>{_EMAIL})|(?P<phone>{_PHONE})")
# What every match of it holds: an "@", or seven digits in a row with at most one separator
# between two (each kind of number above has that many after its prefix). A log line
# without either is written as it is, not searched through with the pattern above: most
# lines hold only ids and codes, and the search was a fifth of a line's cost.
_MAYBE_PERSONAL = re.compile(rf"@|\d(?:{_SEP}\d){{6}}")
# A line's time stamp (``MaskingFormatter.formatTime``): no part of any match, as its
# digits are grouped by dashes, "T" and colons; the search for the above starts after it.
_STAMP_LENGTH = len("2026-11-25T10:00:00.123Z")

# Every character str.splitlines() breaks on, so a log reader sees one event per line.
_ESCAPE_LINE_BREAKS = MappingProxyType(str.maketrans({
    "\n": "\\n", "\r": "\\r", "\v": "\\v", "\f": "\\f", "\x1c": "\\x1c", "\x1d": "\\x1d",
    "\x1e": "\\x1e", "\x85": "\\x85", "\u2028": "\\u2028", "\u2029": "\\u2029"}))
_LINE_BREAK = re.compile("[" + re.escape("".join(map(chr, _ESCAPE_LINE_BREAKS))) + "]")


def _country_code_length(digits: str) -> int:
    """How many leading digits of an international number are its country code."""
    # Country codes are prefix-free, so the first match is the only one.
    for length in (1, 2, 3):
        if int(digits[:length] or 0) in COUNTRY_CODE_TO_REGION_CODE:
            return length
    return 1


def _mask_national(digits: str) -> str:
    """Mask a national significant number, keeping its first two and last three digits."""
    if len(digits) < 7:
        # Too short to show five of its digits and still hide anything worth hiding.
        return "*" * max(len(digits) - 2, 0) + digits[-2:]
    return f"{digits[:2]}* {'*' * (len(digits) - 6)} {digits[-3:]}"


def mask_phone(number: str) -> str:
    """``+84912345678`` as ``+84 91* *** 678``, ``0912345678`` as ``091* *** 678``."""
    stripped = number.strip()
    digits = re.sub(r"\D", "", stripped)
    if not digits:
        return "***"
    international = stripped.startswith(("+", "(+"))
    if not international and digits.startswith("00"):
        # "00" is how international numbers are dialled from Vietnam: 0084... is +84...
        international, digits = True, digits[2:]
    if international:
        split = _country_code_length(digits)
        return f"+{digits[:split]} {_mask_national(digits[split:])}".rstrip()
    if digits.startswith("0"):
        return "0" + _mask_national(digits[1:])
    return _mask_national(digits)


def mask_email(address: str) -> str:
    """``nguyen.van.a@example.com`` as ``n***@example.com``."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def _mask_match(match: re.Match[str]) -> str:
    if match["email"]:
        return mask_email(match["email"])
    return mask_phone(match["phone"])


def mask_personal_data(text: str) -> str:
    """``text`` with every e-mail address and phone number in it masked."""
    return _PERSONAL_DATA_RE.sub(_mask_match, text)


def remove_personal_data(text: str) -> str:
    """``text`` with every e-mail address and phone number in it taken out, for a public page."""
    return _PERSONAL_DATA_RE.sub("***", text)


# What makes a field value need quotes: whitespace (\s is what str.isspace calls one), a quote, "=".
_NEEDS_QUOTES = re.compile(r'[\s"=]')


def _render_value(value: object) -> str:
    """A field value for ``key=value``, quoted when it would not read as one token."""
    text = str(value)
    if text and _NEEDS_QUOTES.search(text) is None:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MaskingFormatter(logging.Formatter):
    """Formats a record as one masked line: ``time LEVEL logger message key=value ...``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        """Mask the given secret values, ignoring empty and very short ones."""
        super().__init__()
        # Short values ("1", "abc") would blank out ordinary words all over the log.
        kept = sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH},
                      key=len, reverse=True)
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets_re = re.compile("|".join(map(re.escape, kept))) if kept else None
        self._second: tuple[int, str] = (-1, "")  # the last whole second written out, and how

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's time in UTC as ``2026-11-25T10:00:00.123Z``."""
        # A busy process logs many lines a second: the date and time are written once each.
        second = int(record.created)
        last, text = self._second
        if second != last:
            text = f"{datetime.fromtimestamp(second, tz=timezone.utc):%Y-%m-%dT%H:%M:%S}"
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single masked line."""
        parts = [self.formatTime(record), record.levelname, record.name, record.getMessage()]
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            parts += [f"{key}={_render_value(value)}" for key, value in fields.items()]
        elif fields is not None:
            parts.append(f"fields={_render_value(fields)}")
        line = " ".join(parts)
        if record.exc_info:
            # Not cached in record.exc_text as logging.Formatter does: another handler could
            # print the cached, unmasked traceback.
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        # Secrets first: masking phone-like digits inside a secret would stop it matching.
        if self._secrets_re is not None:
            line = self._secrets_re.sub("***", line)
        if _MAYBE_PERSONAL.search(line, _STAMP_LENGTH) is not None:
            line = mask_personal_data(line)
        return line.translate(_ESCAPE_LINE_BREAKS) if _LINE_BREAK.search(line) is not None else line


class _IntakeHandler(logging.StreamHandler):
    """The root handler configure_logging() installs, recognisable when it runs again."""

    def handleError(self, record: logging.LogRecord) -> None:
        """Report a record that could not be logged, without its unmasked arguments."""
        # logging's default prints the raw message and arguments to stderr, phone numbers
        # included; say only where the broken call is.
        if logging.raiseExceptions and sys.stderr:
            error = sys.exc_info()[0]
            sys.stderr.write(f"--- logging error: {getattr(error, '__name__', error)} for a record "
                             f"from {record.name} at {record.pathname}:{record.lineno} ---\n")


def configure_logging(level: str = "INFO", secrets: Iterable[str] = (),
                      stream: IO[str] | None = None) -> None:
    """Log to ``stream`` (standard error by default) through one masking handler on root."""
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        # Only our own handler is replaced: test harnesses and embedding apps keep theirs.
        if isinstance(handler, _IntakeHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _IntakeHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(MaskingFormatter(secrets))
    root.addHandler(handler)
    root.setLevel(numeric)
    # Alembic announces each of its plugins at INFO on every start: noise, not events.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(numeric, logging.WARNING))
