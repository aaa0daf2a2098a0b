"""The readable text of an email: charsets, HTML, quoted replies and signatures.

Vietnamese mail arrives in UTF-8 mostly, in Windows-1258 from older Outlook and Windows
machines, and now and then mislabelled (UTF-8 declared as ISO-8859-1, no charset at
all). Windows-1258 writes most tones as a base letter plus a combining mark, so every
text is brought to NFC, the form the web form and the routing keywords use. HTML is
turned into plain text locally; nothing it points to is ever fetched. Quoted earlier
messages and signatures are cut from replies only where the cut is unambiguous: a
trailing quote under an attribution line or an Outlook header block, a trailing block
of ``>`` lines, an RFC 3676 ``-- `` signature, a phone's "Sent from" line.
"""

from __future__ import annotations

import re
import unicodedata

import html2text

# What a part's text is tried as when its declared charset fails: UTF-8 is right for
# nearly all modern mail; Windows-1258 is the Vietnamese Windows charset and decodes
# almost any byte string, so it comes last.
FALLBACK_CHARSETS = ("utf-8", "cp1258")
# Declared charsets that mail software writes by default without checking; text that
# is valid UTF-8 is UTF-8 whatever they say.
WEAK_CHARSETS = {"us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1", "iso8859-1", "windows-1252", "cp1252"}
MAX_HTML_CHARS = 2_000_000  # html2text is linear but slow; past this the rest is cut

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]|[\ud800-\udfff]")
_BLANK_RUNS = re.compile(r"\n{3,}")
_ATTRIBUTION_START = re.compile(r"^>?\s*(On|Vào|Le|Am|El|Il|Op|W dniu|Em)\b", re.IGNORECASE)
_ATTRIBUTION_END = re.compile(r"(wrote|đã viết|viết|a écrit|schrieb|escribió|ha scritto|escreveu|napisał)\s*:\s*$",
                              re.IGNORECASE)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(Original Message|Thư gốc|Tin nhắn gốc|Ursprüngliche Nachricht)\s*-{2,}\s*$", re.IGNORECASE)
_HEADER_FROM = re.compile(r"^\s*\**\s*(From|Từ|De|Von)\s*:\**\s*\S", re.IGNORECASE)
_HEADER_DATE = re.compile(r"^\s*\**\s*(Sent|Date|Gửi|Đã gửi|Ngày|Ngày gửi|Envoyé|Gesendet)\s*:", re.IGNORECASE)
_HEADER_SUBJECT = re.compile(r"^\s*\**\s*(Subject|Chủ đề|Tiêu đề|Objet|Betreff)\s*:", re.IGNORECASE)
_FORWARD_MARK = re.compile(r"(Forwarded message|Thư được chuyển tiếp|Thư chuyển tiếp|Begin forwarded message)",
                           re.IGNORECASE)
_SEPARATOR = re.compile(r"^\s*(_{5,}|-{5,}|\* \* \*)\s*$")
_PHONE_FOOTER = re.compile(
    r"^\s*(Sent from my \w+|Sent from (Yahoo )?Mail for \w+|Sent from Mail for Windows|Get Outlook for \w+|"
    r"Gửi từ (iPhone|iPad|điện thoại)[\w ]*|Được gửi từ [\w ]+|Sent from Outlook|Sent from Gmail Mobile)\W*$",
    re.IGNORECASE)
SIGNATURE_MAX_LINES = 15  # a longer tail after "-- " is more likely text than a signature


def decode_bytes(data: bytes, declared: str | None) -> tuple[str, str | None]:
    """A part's bytes as text, and the charset used when the declared one could not be."""
    charset = (declared or "").strip().strip("\"'").lower()
    if charset in WEAK_CHARSETS or not charset:
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            if not charset:
                charset = "us-ascii"
    try:
        return data.decode(charset), None
    except (LookupError, UnicodeError, ValueError, TypeError):
        pass  # unknown to Python ("viscii", "x-unknown") or not what it says
    for fallback in FALLBACK_CHARSETS:
        try:
            return data.decode(fallback), fallback
        except UnicodeDecodeError:
            continue
    return data.decode("cp1258", errors="replace"), "cp1258"


def clean(text: str) -> str:
    """Text as stored: NFC, Unix newlines, no control characters, no trailing spaces, no blank runs."""
    # Control characters out before NFC: a tone mark written after one (Windows-1258 writes
    # tones as combining marks) meets its letter only once it is gone.
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff"))
    text = unicodedata.normalize("NFC", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip()


def one_line(text: str, limit: int) -> str:
    """A header value as one clean line of at most ``limit`` characters."""
    return " ".join(clean(text).split())[:limit]


def html_to_text(html: str) -> tuple[str, bool]:
    """Readable text from an HTML body (no images, nothing fetched); and whether it was readable."""
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: staff read it in chat and on screens of any width
    converter.ignore_images = True  # remote images are trackers; inline ones are kept as attachments
    converter.ignore_emphasis = True
    converter.unicode_snob = True
    converter.single_line_break = False
    try:
        text = converter.handle(html[:MAX_HTML_CHARS])
    except Exception:  # html2text is not hardened against hostile markup; never lose the mail over it
        text = re.sub(r"<[^>]*>", " ", html[:MAX_HTML_CHARS])
        return clean(text), False
    # Markdown's two-space line breaks mean nothing in plain text.
    return clean(text), True


def is_quoted(line: str) -> bool:
    """Whether a line is quoted from an earlier message."""
    return line.lstrip().startswith(">")


def _attribution_end(lines: list[str], start: int) -> int | None:
    """The last line of an attribution ("On ... wrote:") starting at ``start``, if one does."""
    if not _ATTRIBUTION_START.match(lines[start]):
        return None
    # Gmail wraps a long attribution over two or three lines.
    for end in range(start, min(start + 3, len(lines))):
        if _ATTRIBUTION_END.search(lines[end].lstrip("> ")):
            return end
        if not lines[end].strip():
            return None
    return None


def _header_block(lines: list[str], start: int) -> bool:
    """Whether an Outlook-style "From: / Sent: / Subject:" block starts at ``start``."""
    if not _HEADER_FROM.match(lines[start]):
        return False
    window = lines[start + 1:start + 7]
    return any(_HEADER_DATE.match(line) for line in window) and any(_HEADER_SUBJECT.match(line) for line in window)


def _quote_start(lines: list[str]) -> int | None:
    """Where the quoted earlier message begins, when that is unambiguous."""
    for index, line in enumerate(lines):
        if _FORWARD_MARK.search(line):
            return None  # a forward: what follows is the point of the mail, not a quote
        end = _attribution_end(lines, index)
        if end is not None:
            rest = [line for line in lines[end + 1:] if line.strip()]
            if rest and all(is_quoted(line) for line in rest[:3]):
                return index
        if _ORIGINAL_MESSAGE.match(line) or _header_block(lines, index):
            return index - 1 if index and _SEPARATOR.match(lines[index - 1]) else index
    # No header: a trailing block of quoted lines.
    tail = len(lines)
    while tail and (not lines[tail - 1].strip() or is_quoted(lines[tail - 1])):
        tail -= 1
    if tail < len(lines) and any(is_quoted(line) for line in lines[tail:]):
        return tail
    return None


def _without_signature(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    while lines and _PHONE_FOOTER.match(lines[-1]):
        lines = lines[:-1]
        while lines and not lines[-1].strip():
            lines = lines[:-1]
    for index in range(len(lines) - 1, -1, -1):
        # RFC 3676's separator is "-- "; cleaning strips the space, and many write "--".
        if lines[index].strip() == "--" and len(lines) - index - 1 <= SIGNATURE_MAX_LINES:
            return lines[:index]
    return lines


def trim_reply(text: str) -> tuple[str, bool]:
    """A reply without the quoted earlier messages and signature; and whether anything was cut."""
    lines = text.split("\n")
    start = _quote_start(lines)
    kept = lines[:start] if start is not None else lines
    kept = _without_signature(kept)
    result = "\n".join(kept).strip()
    if not result:
        return text.strip(), False  # all quote: keep it rather than store nothing
    return result, result != text.strip()
