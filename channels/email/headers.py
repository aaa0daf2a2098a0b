"""Reading an email's headers whatever a sender wrote in them, and telling robots apart.

Headers are read from their raw form: some Vietnamese mailers put raw UTF-8 or
Windows-1258 bytes straight into a From name or a Subject, which the stdlib parser
keeps only as surrogates; they are decoded here rather than dropped. Encoded words are
then decoded by ``email.policy.default``, whose parser has been seen to raise on
hostile input instead of recording a defect: such a header is read as plain text.

A mail sent by a machine (a bounce, an auto-reply, a list) is recorded and never
answered (RFC 3834), so that two robots never write to each other forever.
"""

from __future__ import annotations

import email.policy
import hashlib
import re
from email.errors import MessageError
from email.message import Message

import email_validator

from contract.fields import is_identifier

POLICY = email.policy.default
MAX_ID_LENGTH = 250  # message ids are stored in a 255-character column
# What the stdlib's header parser raises on hostile input instead of recording a defect
# (a Content-Type of "text/plain; a*" raises IndexError in Python 3.11, for one).
HEADER_ERRORS = (ValueError, IndexError, TypeError, AttributeError, LookupError, AssertionError, MessageError)

_MESSAGE_ID = re.compile(r"<([^<>\s]{1,1000})>")
_ADDRESS = re.compile(r"[^\s<>\"',;:()\[\]]+@[^\s<>\"',;:()\[\]]+")
# "Name <local@domain>", "\"Name, B\" <local@domain>" or a bare "local@domain"; anything
# else (comments, escapes, groups, several mailboxes) goes to the full parser.
_SIMPLE_MAILBOX = re.compile(r'\s*(?:(?:"(?P<quoted>[^"\\]*)"|(?P<plain>[^"<>@,;:()\\\[\]]*?))\s*'
                             r'<(?P<bracketed>[\w.+-]+@[\w.-]+)>|(?P<bare>[\w.+-]+@[\w.-]+))\s*')
_AUTO_SUBJECT = re.compile(r"^\s*(auto(matic)?[ -]?(reply|response)|autoreply|auto:|out of (the )?office|"
                           r"trả lời tự động|vắng mặt)", re.IGNORECASE)
# RFC 3834 section 2: senders no responder should answer; and the no-reply senders of
# notification systems, who would bounce or ignore an answer anyway.
_ROBOT_LOCAL_PARTS = re.compile(r"^(mailer-daemon|listserv|majordomo|owner-.*|.*-request|no-?reply|"
                                r"do-?not-?reply|bounces?(\+.*)?)$", re.IGNORECASE)


def normal_id(token: str) -> str:
    """A message id as stored: in angle brackets, at most MAX_ID_LENGTH long; one longer, or with
    characters the store must not hold (controls), is hashed: the same id always gives the same
    hash, so a retried delivery is still one message."""
    token = token.strip().strip("<>")
    if not is_identifier(token, MAX_ID_LENGTH - 2):
        return f"<{hashlib.sha256(token.encode('utf-8', 'surrogatepass')).hexdigest()}@long-id.invalid>"
    return f"<{token}>"


def message_ids(value: str | None) -> list[str]:
    """The message ids named in a Message-ID, In-Reply-To or References value, in order."""
    if not value:
        return []
    return [normal_id(token) for token in _MESSAGE_ID.findall(value)]


def repair_8bit(value: str) -> tuple[str, str | None]:
    """A raw value whose 8-bit bytes the parser kept as surrogates, decoded; and the fallback charset used."""
    if not any("\udc80" <= char <= "\udcff" for char in value):
        return value, None
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("cp1258", errors="replace"), "cp1258"


def mailbox(address: str | None) -> str | None:
    """An address as contacts are keyed (domain lowercased, as the web form does), or None if not one."""
    if not address or address == "<>":
        return None
    try:
        return email_validator.validate_email(address.strip("<>")[:320], check_deliverability=False,
                                              globally_deliverable=False).normalized
    except (email_validator.EmailNotValidError, *HEADER_ERRORS):
        return None


class Headers:
    """A message's headers, tolerant of anything a sender wrote."""

    def __init__(self, message: Message):
        self.message = message
        self.charset_used: str | None = None  # set when raw 8-bit bytes were read as Windows-1258

    def raw(self, name: str) -> str | None:
        """The first value of a header, unfolded and 8-bit bytes decoded; encoded words left as they are."""
        for key, value in self.message.raw_items():
            if key.lower() == name:
                value, used = repair_8bit("".join(value.splitlines()))
                self.charset_used = self.charset_used or used
                return value
        return None

    def text(self, name: str) -> str | None:
        """The first value of an unstructured header, encoded words decoded."""
        value = self.raw(name)
        if value is None or "=?" not in value:
            return value  # no encoded words: nothing for the (slow) header parser to decode
        try:
            return str(POLICY.header_factory(name, value))
        except HEADER_ERRORS:
            return value

    def address(self, name: str) -> tuple[str | None, str | None]:
        """The (display name, address) of the first mailbox in an address header."""
        value = self.raw(name)
        if not value:
            return None, None
        simple = _SIMPLE_MAILBOX.fullmatch(value) if "=?" not in value else None
        if simple:  # most mail: spare the (slow) structured parser
            name = (simple["quoted"] if simple["quoted"] is not None else simple["plain"] or "").strip()
            return name or None, simple["bracketed"] or simple["bare"]
        try:
            for box in POLICY.header_factory(name, value).addresses:
                if box.username and box.domain:
                    return box.display_name or None, f"{box.username}@{box.domain}"
        except HEADER_ERRORS:
            pass
        found = _ADDRESS.search(value)
        return None, found.group(0) if found else None

    def language(self) -> str | None:
        """The language the mail says it is in, when it is one the service speaks."""
        tag = (self.raw("content-language") or "").split(",")[0].strip().lower()
        return tag[:2] if tag[:2] in ("vi", "en") else None


def automated_reason(headers: Headers, envelope_sender: str | None, sender: str | None, subject: str,
                     content_type: str, own_address: str | None) -> str | None:
    """Why a mail is taken as sent by a machine (RFC 3834 and common practice), or None."""
    if envelope_sender in ("", "<>"):
        return "empty envelope sender (a bounce)"
    if content_type == "multipart/report":
        return "delivery or read report"
    auto_submitted = (headers.raw("auto-submitted") or "").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return f"Auto-Submitted: {auto_submitted[:40]}"
    precedence = (headers.raw("precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-reply"):
        value = headers.raw(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return f"{name}: {value.strip()[:40]}"
    if headers.raw("list-id") is not None:
        return "mailing list (List-Id)"
    for address in (sender, envelope_sender):
        local = (address or "").strip("<>").rpartition("@")[0]
        if local and _ROBOT_LOCAL_PARTS.match(local):
            return f"sent by {local[:40]}@..."
    if own_address:
        # Our own mail come back (a forwarding loop, a relay returning it): never answer it.
        if (sender or "").lower() == own_address.lower():
            return "from our own address"
        if own_address.lower() in (headers.raw("x-loop") or "").lower():
            return "X-Loop names our address"
    if _AUTO_SUBJECT.match(subject):
        return "auto-reply subject"
    return None
