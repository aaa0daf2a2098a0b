"""One received email, as the bytes the SMTP server took, turned into what intake needs.

``parse_mail`` never fails on what a sender wrote: broken MIME, 8-bit junk in headers,
unknown charsets and empty attachments are read as well as they can be and leave a
``Note`` for staff. It refuses, with ``MailRejected`` carrying the SMTP answer that
says why, only a mail it will not take at all: too many parts, nested too deep, or
nothing in it. Anything else it raises is a bug (a property test looks for them).

The body is the plain-text alternative when there is one, else the HTML made into
text; every other part is an attachment, kept when its type and size are allowed. A
mail attached to the mail (``message/rfc822``, "forward as attachment") is read too,
its text below a marker and its files as attachments.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32 as COMPAT32

from channels.email.config import ATTACHMENT_TYPES, EmailConfig
from contract.messages import Attachment
from channels.email.headers import HEADER_ERRORS, POLICY, Headers, automated_reason, mailbox, message_ids, normal_id
from channels.email.notes import Note, phrase
from channels.email import parts as mime
from channels.email.text import clean, decode_bytes, html_to_text, one_line, trim_reply

MAX_THREAD_IDS = 50  # References can name a whole long thread; the newest are enough
SUBJECT_MAX = 300
NAME_MAX = 100
_REPLY_SUBJECT = re.compile(r"^\s*(re|tl|aw|sv|antw|vs|r)\s*(\[\d+\])?\s*:", re.IGNORECASE)
_FORWARD_SUBJECT = re.compile(r"^\s*(fwd?|tr|ct|wg|vb|i)\s*:", re.IGNORECASE)
# Signatures that cannot be checked here; a note about each would only be noise.
SILENT_TYPES = {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"}
# Parts of a bounce or a receipt that name the message they are about.
REPORT_HEADER_TYPES = {"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"}
MACHINE_TYPES = {"text/rfc822-headers", "message/rfc822-headers", "message/delivery-status",
                 "message/disposition-notification", "message/feedback-report"}
NOT_BODY_TEXT = {"text/calendar", "text/vcard", "text/x-vcard", "text/csv"}
EXTENSION_TYPES = {".heic": "image/heic", ".heif": "image/heif", ".webp": "image/webp", ".amr": "audio/amr",
                   ".m4a": "audio/mp4", ".3gp": "video/3gpp", ".mov": "video/quicktime"}
STRUCTURE_DEFECTS = ("NoBoundaryInMultipartDefect", "StartBoundaryNotFoundDefect", "CloseBoundaryNotFoundDefect",
                     "MultipartInvariantViolationDefect", "MissingHeaderBodySeparatorDefect",
                     "InvalidMultipartContentTransferEncodingDefect", "InvalidBase64PaddingDefect",
                     "InvalidBase64CharactersDefect", "InvalidBase64LengthDefect", "MisplacedEnvelopeHeaderDefect",
                     "FirstHeaderLineIsContinuationDefect")

REJECT_TOO_MANY_PARTS = "554 5.6.0 Message has {count} MIME parts; at most {max} are taken"
REJECT_TOO_DEEP = "554 5.6.0 MIME parts are nested more than {max} deep"
REJECT_EMPTY = "550 5.6.0 Message is empty: no text, no subject and no attachment that can be taken{why}"


class MailRejected(Exception):
    """A mail the server refuses; ``reply`` is the SMTP answer that says why."""

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True)
class Limits:
    """What one mail may hold."""

    max_parts: int = 100
    max_depth: int = 12
    max_forward_depth: int = 3
    max_attachments: int = 10
    max_attachment_bytes: int = 5_242_880
    attachment_types: tuple[str, ...] = ATTACHMENT_TYPES
    max_text_chars: int = 50_000

    @classmethod
    def from_config(cls, config: EmailConfig) -> Limits:
        """The limits the email configuration sets."""
        return cls(max_attachments=config.max_attachments, max_attachment_bytes=config.max_attachment_bytes,
                   attachment_types=tuple(config.attachment_types))

    def allows_type(self, content_type: str) -> bool:
        """Whether attachments of this media type are taken."""
        return content_type in self.attachment_types or f"{content_type.split('/')[0]}/*" in self.attachment_types


@dataclass(frozen=True)
class ParsedMail:
    """What a received mail says, ready to become an ``Inbound``."""

    message_id: str
    sender: str | None
    sender_name: str | None
    subject: str
    text: str
    attachments: tuple[Attachment, ...]
    thread_ids: tuple[str, ...]  # References then In-Reply-To: oldest first
    automated: str | None  # why it is taken as sent by a machine, or None
    language: str | None
    notes: tuple[Note, ...]
    # A delivery status notification (RFC 3464) saying a message failed: the ids of the
    # messages it is about, and the diagnostic; None for any other mail.
    bounced: tuple[tuple[str, ...], str] | None = None


@dataclass
class _Reading:
    """What the walk over the MIME tree has gathered so far."""

    limits: Limits
    language: str  # of the notes and markers, for staff
    attachments: list[Attachment] = field(default_factory=list)
    hashes: set[str] = field(default_factory=set)
    notes: list[Note] = field(default_factory=list)
    report_ids: list[str] = field(default_factory=list)
    failure: str | None = None  # a delivery-status part's diagnostic for a recipient whose Action is failed
    forwarded: list[str] = field(default_factory=list)  # mails attached to the mail, as text
    skipped_for_count: int = 0


def _filename(part: Message, content_type: str, number: int) -> str:
    # Only the last path component: a name is shown to staff and used when saving.
    name = one_line(re.split(r"[/\\]", mime.given_filename(part))[-1], 255).strip(". ")
    return name or f"attachment-{number}{mimetypes.guess_extension(content_type) or '.bin'}"


def _iter_parts(parts: list[Message]) -> Iterator[Message]:
    stack = list(parts)
    while stack:
        part = stack.pop()
        yield part
        stack.extend(mime.children(part))


def _check_structure(message: Message, limits: Limits) -> None:
    """Refuse a tree too large or too deep before it is walked with recursion."""
    count, stack = 0, [(message, 0)]
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > limits.max_parts:
            total = count + sum(1 for _ in _iter_parts([p for p, _ in stack]))
            raise MailRejected(REJECT_TOO_MANY_PARTS.format(count=total, max=limits.max_parts))
        if depth > limits.max_depth:
            raise MailRejected(REJECT_TOO_DEEP.format(max=limits.max_depth))
        stack.extend((child, depth + 1) for child in mime.children(part))


def _defects(message: Message) -> list[str]:
    names: list[str] = []
    for part in _iter_parts([message]):
        for defect in getattr(part, "defects", ()):
            name = type(defect).__name__
            if name in STRUCTURE_DEFECTS and name not in names:
                names.append(name)
    return names


def _text_of(part: Message, reading: _Reading) -> str:
    declared = mime.charset(part)
    text, used = decode_bytes(mime.payload(part), declared)
    if used:
        reading.notes.append(Note("charset", {"declared": declared or "-", "used": used}))
    if mime.content_type(part) == "text/html":
        text, readable = html_to_text(text)
        if not readable:
            reading.notes.append(Note("html_unreadable"))
        return text
    return clean(text)


def _attach(part: Message, reading: _Reading) -> None:
    limits = reading.limits
    content_type = mime.content_type(part)
    if content_type in SILENT_TYPES:
        return
    name = _filename(part, content_type, len(reading.attachments) + 1)
    if content_type in ("application/octet-stream", "application/x-octet-stream"):
        # Phones send photos as octet-stream; the name says what they are.
        extension = ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""
        content_type = EXTENSION_TYPES.get(extension) or mimetypes.guess_type(name)[0] or content_type
    data = mime.payload(part)
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        reading.notes.append(Note("empty_attachment", {"name": name}))
    elif not limits.allows_type(content_type):
        reading.notes.append(Note("type_refused", {"name": name, "type": content_type}))
    elif len(data) > limits.max_attachment_bytes:
        reading.notes.append(Note("too_big", {"name": name, "size_kb": len(data) // 1024,
                                              "max_kb": limits.max_attachment_bytes // 1024}))
    elif digest in reading.hashes:
        return  # the same photo in the plain and the HTML alternative
    elif len(reading.attachments) >= limits.max_attachments:
        reading.skipped_for_count += 1
    else:
        reading.hashes.add(digest)
        reading.attachments.append(Attachment(filename=name, content_type=content_type, data=data))


def _alternative(children: list[Message]) -> Message | None:
    """The alternative to read as text: plain text with something in it, else HTML, else the last."""
    for wanted in ("text/plain", "text/html"):
        for child in children:
            if mime.content_type(child) == wanted and mime.disposition(child) != "attachment" and mime.payload(child).strip():
                return child
    for child in reversed(children):
        if child.is_multipart():
            return child
    return children[-1] if children else None


def _walk(part: Message, reading: _Reading, forward_depth: int, texts: list[str]) -> None:
    """Gather the text and attachments of a part (depth already bounded by ``_check_structure``)."""
    content_type = mime.content_type(part)
    if content_type in REPORT_HEADER_TYPES:
        _report_ids(part, reading)
    if content_type == "message/rfc822":
        _forwarded(part, reading, forward_depth)
        return
    if content_type == "message/delivery-status":
        _delivery_status(part, reading)
    if content_type in MACHINE_TYPES:
        return  # the machine-readable half of a report: its ids were taken above
    if part.is_multipart():
        children = mime.children(part)
        if content_type == "multipart/alternative":
            chosen = _alternative(children)
            for child in children:
                # Text from the chosen alternative only; files (inline photos) from all of them.
                _walk(child, reading, forward_depth, texts if child is chosen else [])
        else:
            for child in children:
                _walk(child, reading, forward_depth, texts)
        return
    inline = mime.disposition(part) != "attachment"
    if content_type.startswith("multipart/"):
        # A multipart with no usable boundary: the parser kept it whole, so read it as text.
        texts.append(clean(decode_bytes(mime.payload(part), mime.charset(part))[0]))
    elif content_type in ("text/plain", "text/html") and inline:
        text = _text_of(part, reading)
        if text:
            texts.append(text)
    elif content_type.startswith("text/") and inline and content_type not in NOT_BODY_TEXT \
            and not mime.given_filename(part):
        texts.append(clean(decode_bytes(mime.payload(part), mime.charset(part))[0]))
    else:
        _attach(part, reading)


def _forwarded(part: Message, reading: _Reading, forward_depth: int) -> None:
    """A mail attached to the mail: its headers and text below a marker, its files as attachments."""
    inner = mime.children(part)
    if not inner:
        return
    if forward_depth >= reading.limits.max_forward_depth:
        reading.notes.append(Note("nested_too_deep", {"max": reading.limits.max_forward_depth}))
        return
    headers = Headers(inner[0])
    texts: list[str] = []
    _walk(inner[0], reading, forward_depth + 1, texts)
    summary = [f"{label}: {one_line(value, 300)}" for label, value in
               (("From", headers.text("from")), ("Date", headers.text("date")), ("Subject", headers.text("subject")))
               if value]
    reading.forwarded.append("\n".join([phrase("forwarded", reading.language), *summary, "", *texts]).strip())


def _report_ids(part: Message, reading: _Reading) -> None:
    """The id of the message a bounce or receipt is about, so that it threads onto its complaint."""
    inner = mime.children(part)
    if inner:
        value = Headers(inner[0]).raw("message-id")
    else:
        found = re.search(r"^message-id:\s*(.+)$", mime.payload(part).decode("utf-8", "replace"),
                          re.IGNORECASE | re.MULTILINE)
        value = found.group(1) if found else None
    reading.report_ids.extend(message_ids(value))


def _delivery_status(part: Message, reading: _Reading) -> None:
    """RFC 3464's per-recipient fields: a recipient whose Action is "failed" means our
    message did not reach them; its Diagnostic-Code (or Status) says why. The standard
    library reads the part as blocks of fields (sub-messages); a broken one as text."""
    blocks = part.get_payload()
    if isinstance(blocks, list):
        fields = [{name.lower(): str(value) for name, value in block.items()} for block in blocks
                  if isinstance(block, Message)]
    else:
        text = mime.payload(part).decode("utf-8", "replace")
        fields = [{match.group(1).lower(): match.group(2) for match in
                   re.finditer(r"^([\w-]+):[ \t]*(.*)$", block, re.MULTILINE)}
                  for block in re.split(r"\r?\n\s*\r?\n", text)]
    for block in fields:
        if block.get("action", "").strip().lower() == "failed":
            reading.failure = one_line(block.get("diagnostic-code") or block.get("status") or "failed", 300)
            return


def _message_id(headers: Headers, raw: bytes) -> str:
    value = (headers.raw("message-id") or "").strip()
    found = message_ids(value)
    if found:
        return found[0]
    if value and "@" in value and not any(char.isspace() for char in value):
        return normal_id(value)  # written without its angle brackets
    # None at all: one made from the bytes, so that a retried delivery is still one message.
    return f"<{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id.invalid>"


def _parse_tree(raw: bytes, notes: list[Note]) -> Message:
    """The MIME tree, by ``email.policy.default``; by the legacy policy when that one fails."""
    try:
        return BytesParser(policy=POLICY).parsebytes(raw)
    except HEADER_ERRORS as error:
        # The default policy parses Content-Type while building the tree and can raise on a
        # hostile one; compat32 reads headers as plain strings and does not.
        notes.append(Note("broken_mime", {"defects": f"{type(error).__name__} in a header"}))
        return BytesParser(policy=COMPAT32).parsebytes(raw)


def parse_mail(raw: bytes, envelope_sender: str | None = None, limits: Limits | None = None,
               own_address: str | None = None, language: str = "vi") -> ParsedMail:
    """Read a received mail; raise MailRejected only for one that is not taken at all."""
    limits = limits or Limits()
    notes: list[Note] = []
    try:
        message = _parse_tree(raw, notes)
        _check_structure(message, limits)
    except RecursionError:
        raise MailRejected(REJECT_TOO_DEEP.format(max=limits.max_depth)) from None
    headers = Headers(message)
    sender_name, from_address = headers.address("from")
    sender = mailbox(from_address)
    if sender is None:
        sender = mailbox(envelope_sender)
        notes.append(Note("no_from", {"address": envelope_sender}) if sender else Note("no_sender"))
    subject = one_line(headers.text("subject") or "", SUBJECT_MAX)
    thread = message_ids(headers.raw("references")) + message_ids(headers.raw("in-reply-to"))
    automated = automated_reason(headers, envelope_sender, sender, subject, mime.content_type(message), own_address)

    reading = _Reading(limits, language)
    texts: list[str] = []
    _walk(message, reading, 0, texts)
    if automated:
        thread += reading.report_ids
    thread = list(dict.fromkeys(thread))[-MAX_THREAD_IDS:]
    body = clean("\n\n".join(texts))
    if (thread or _REPLY_SUBJECT.match(subject)) and not _FORWARD_SUBJECT.match(subject):
        body, _ = trim_reply(body)
    text = clean("\n\n".join([body, *reading.forwarded]))
    if len(text) > limits.max_text_chars:
        text = text[:limits.max_text_chars].rstrip()
        notes.append(Note("truncated", {"max": limits.max_text_chars}))

    defects = _defects(message)
    if defects:
        notes.insert(0, Note("broken_mime", {"defects": ", ".join(defects)}))
    if headers.charset_used:
        notes.append(Note("header_charset", {"used": headers.charset_used}))
    notes += reading.notes
    if reading.skipped_for_count:
        notes.append(Note("too_many", {"count": reading.skipped_for_count, "max": limits.max_attachments}))
    if not text and not subject and not reading.attachments:
        dropped = sum(n.key in ("empty_attachment", "type_refused", "too_big") for n in reading.notes)
        why = f" ({dropped} attachment(s) left out: empty, of a type not taken, or too big)" if dropped else ""
        raise MailRejected(REJECT_EMPTY.format(why=why))
    if not text and reading.attachments:
        notes.append(Note("only_attachments"))
    return ParsedMail(
        message_id=_message_id(headers, raw), sender=sender, sender_name=one_line(sender_name or "", NAME_MAX) or None,
        subject=subject, text=text or subject, attachments=tuple(reading.attachments), thread_ids=tuple(thread),
        automated=automated, language=headers.language(), notes=tuple(notes),
        bounced=(tuple(reading.report_ids), reading.failure) if automated and reading.failure and reading.report_ids
        else None,
    )
