"""Outgoing SMS text: what a message costs in parts, its plain-letter form, and shortening.

An SMS part holds 160 characters of the GSM 7-bit alphabet (153 when a message has
several parts: the rest of each part carries the header that joins them). A single
character outside that alphabet, and every Vietnamese letter with a diacritic is one,
turns the whole message into UCS-2: 70 characters a part, 67 when there are several.
"Phản ánh" therefore costs more than twice "Phan anh". With ``sms.ascii_only`` the
diacritics come off (đ becomes d) and what is left is mapped into GSM-7.

Gateways send a multi-part message as one (the phone joins the parts), so a text that
fits ``sms.max_segments`` parts goes out whole. A longer one (an officer's long answer)
is shortened on purpose: cut between words, never inside a tracking code, a link or a
phone number, and ended with the link to the status page where the whole text is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from bot.tracking import ALPHABET
from contract.fields import clean_text

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Reached through an escape character, so each costs two of a part's 160 places.
GSM_EXTENDED = frozenset("^{}\\[~]|€\f")
GSM_SINGLE, GSM_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67
ELLIPSIS = "..."  # not "…": that one character alone would make a plain message UCS-2

# What phones and word processors put in place of plain punctuation, and what it becomes
# in GSM-7; anything else outside GSM-7 becomes "?".
_PLAIN = str.maketrans({
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'", "`": "'", "´": "'",
    "“": '"', "”": '"', "„": '"', "″": '"', "«": '"', "»": '"',
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-",
    "…": "...", "•": "-", "·": ".", "×": "x", "\t": " ",
    "\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ", "\u3000": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "",
    "đ": "d", "Đ": "D", "ð": "d", "Ð": "D",
})
_DASHES = "\\-\u2010\u2011\u2012\u2013\u2014\u2212"
_URL = r"(?:https?://|www\.)\S+"
_PHONE = r"\+?\d[\d .\-]{5,}\d"


def clean(text: str) -> str:
    """Text as it may be sent or stored: the cleaning every channel shares, tabs as spaces."""
    return clean_text(text.replace("\t", " "))


def is_gsm(text: str) -> bool:
    """Whether the text fits the GSM 7-bit alphabet (else the message is UCS-2)."""
    return all(char in GSM_BASIC or char in GSM_EXTENDED for char in text)


def to_gsm(text: str) -> str:
    """The text without diacritics and in the GSM 7-bit alphabet: "Phản ánh" becomes "Phan anh"."""
    decomposed = unicodedata.normalize("NFD", text.translate(_PLAIN))
    bare = unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))
    return "".join(c if c in GSM_BASIC or c in GSM_EXTENDED else "?" for c in bare.translate(_PLAIN))


def encoding(text: str) -> str:
    """How a gateway will encode this text: "GSM-7", or "UCS-2" as soon as one character is outside GSM-7."""
    return "GSM-7" if is_gsm(text) else "UCS-2"


def segments(text: str) -> int:
    """How many SMS parts the text takes (at least 1)."""
    if is_gsm(text):
        costs = [2 if char in GSM_EXTENDED else 1 for char in text]
        single, multi = GSM_SINGLE, GSM_MULTI
    else:
        # UCS-2 is really UTF-16 on phones: a character beyond the BMP (an emoji) takes two places.
        costs = [2 if ord(char) > 0xFFFF else 1 for char in text]
        single, multi = UCS2_SINGLE, UCS2_MULTI
    if sum(costs) <= single:
        return 1
    # Parts are filled one after another; an escape pair or a surrogate pair is never split.
    count, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            count, used = count + 1, 0
        used += cost
    return count


def protected_spans(text: str, prefix: str) -> list[tuple[int, int]]:
    """Where the text must not be cut: links, tracking codes (however spaced) and phone numbers."""
    group = f"[{ALPHABET}]{{4}}"
    separator = rf"[\s{_DASHES}]*"
    code = rf"(?<![^\W_]){re.escape(prefix)}{separator}{group}{separator}{group}(?![^\W_])" \
           rf"|(?<![^\W_]){group}[{_DASHES}]{group}(?![^\W_])"
    pattern = re.compile(rf"{_URL}|{code}|{_PHONE}", re.IGNORECASE)
    return [match.span() for match in pattern.finditer(text)]


def _cuts(text: str, spans: list[tuple[int, int]], anywhere: bool) -> list[int]:
    """Positions the text may be cut at: before a space (or anywhere), outside protected spans."""
    inside = bytearray(len(text) + 1)
    for start, end in spans:
        inside[start + 1:end] = b"\x01" * (end - start - 1)
    return [i for i in range(1, len(text) + 1)
            if not inside[i] and (anywhere or i == len(text) or text[i].isspace())]


def _longest(cuts: list[int], fits: Callable[[int], bool]) -> int | None:
    """The largest cut that fits (fitting only shrinks as the cut grows), or None."""
    low, high, best = 0, len(cuts) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if fits(cuts[middle]):
            best, low = cuts[middle], middle + 1
        else:
            high = middle - 1
    return best


def shorten(text: str, max_segments: int, tail: str = "", prefix: str = "PA") -> str:
    """The text within ``max_segments`` parts: whole if it fits, else cut between words and ended with tail."""
    if segments(text) <= max_segments:
        return text
    ending = f"{ELLIPSIS}\n{tail}" if tail else ELLIPSIS

    def candidate(cut: int) -> str:
        return text[:cut].rstrip() + ending

    def fits(cut: int) -> bool:
        return segments(candidate(cut)) <= max_segments

    spans = protected_spans(text, prefix)
    best = _longest(_cuts(text, spans, anywhere=False), fits)
    if best is None or not text[:best].strip():
        # One long unbroken word: cut inside it rather than lose the whole text (never inside a span).
        best = _longest(_cuts(text, spans, anywhere=True), fits)
    if best is not None and text[:best].strip():
        return candidate(best)
    # Nothing of the text fits beside the link: the link alone says where to read it; with no
    # link, the text goes whole rather than cut through what must stay whole.
    return tail or text


def prepare(text: str, *, ascii_only: bool, max_segments: int, tail: str = "", prefix: str = "PA") -> str:
    """An outgoing SMS as it is sent: cleaned, plain letters if asked for, shortened if too long."""
    text, tail = clean(text).strip(), clean(tail).strip()
    if ascii_only:
        text, tail = to_gsm(text), to_gsm(tail)
    return shorten(text, max_segments, tail, prefix)
