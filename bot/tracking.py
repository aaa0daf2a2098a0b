"""Tracking codes that citizens quote back to follow up on a complaint.

A code looks like ``PA-7KQ4-M9XS``: the configured prefix, then seven random characters and
one check character, shown in two groups of four. Citizens read codes aloud over the phone
and type them on keypads, so the alphabet leaves out characters that are easy to confuse
(0/O, 1/I/L) and, as Crockford's base 32 does, U. The seven characters come from
:mod:`secrets`, so a code cannot be guessed from the codes issued before it. Issued codes
always mix letters and digits, which lets :func:`find_codes` trust a bare ``7KQ4-M9XS`` in
free text without taking ``3823-4567`` (a landline) or ``BACK-SEAT`` for a code.

The check character is a weighted sum modulo 31, not 30. With an even modulus no choice
of weights can catch every adjacent transposition: every weight must be odd to catch
substitutions, so neighbouring weights differ by an even number and swapping two characters
whose values differ by 15 goes unnoticed. With the prime 31 and the distinct weights
8, 7, ..., 2 on the body and 1 on the check character, any single substitution and any swap
of two characters (adjacent or not) changes the sum. The one check value with no character
(30) is never issued: such bodies are drawn again.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from types import MappingProxyType

from bot.folding import fold

__all__ = ("ALPHABET", "TrackingCodeError", "new_code", "normalise", "is_valid", "find_codes", "StatusRequest",
           "status_request")

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"

_BODY_LENGTH = 7
_CODE_LENGTH = _BODY_LENGTH + 1
_MODULUS = 31
_WEIGHTS = tuple(range(_CODE_LENGTH, 1, -1))  # 8..2 for the body; the check character weighs 1
# Every body is equally likely: one draw below their number, not a draw a character (seven
# reads of the system's random source took 7.7 µs a code, about 1 % of intake's work).
_BODIES = len(ALPHABET) ** _BODY_LENGTH
_VALUES = MappingProxyType({char: value for value, char in enumerate(ALPHABET)})
_DIGITS = frozenset("23456789")
_PREFIX_RE = re.compile(r"[A-Z]{1,4}")
# Hyphen, non-breaking hyphen, figure dash, en dash, em dash, minus: phones and word
# processors substitute these for "-" on their own. For use inside a regex character class.
_DASHES = r"\-" "\u2010\u2011\u2012\u2013\u2014\u2212"
_SEPARATORS_RE = re.compile(rf"[\s{_DASHES}]+")
_NOT_USED = "0, 1, I, L, O and U are never used"


class TrackingCodeError(ValueError):
    """A text that is not a tracking code; the message says what is wrong with it.

    ``reason`` and ``params`` name the problem for the message catalogue (``tracking.*``),
    so a citizen reads it in their own language.
    """

    def __init__(self, message: str, reason: str, **params: object):
        super().__init__(message)
        self.reason = reason
        self.params = params


def _check_prefix(prefix: str) -> None:
    # A bad prefix is a configuration bug, not a citizen's typo, so it is a plain ValueError
    # that is_valid() does not swallow.
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"tracking code prefix must be 1-4 letters A-Z, got {prefix!r}")


def _check_value(body: str) -> int:
    """The check value (0-30) that makes the weighted sum of ``body`` a multiple of 31."""
    total = sum(weight * _VALUES[char] for weight, char in zip(_WEIGHTS, body))
    return -total % _MODULUS


def _format(prefix: str, chars: str) -> str:
    """The display form ``PREFIX-XXXX-XXXX`` of an eight-character code."""
    return f"{prefix}-{chars[:4]}-{chars[4:]}"


def _body(number: int) -> str:
    """The body whose characters are the digits of ``number`` in base 30 (``ALPHABET``)."""
    chars = []
    for _ in range(_BODY_LENGTH):
        number, digit = divmod(number, len(ALPHABET))
        chars.append(ALPHABET[digit])
    return "".join(chars)


def new_code(prefix: str) -> str:
    """A fresh random tracking code such as ``PA-7KQ4-M9XS``."""
    _check_prefix(prefix)
    while True:
        body = _body(secrets.randbelow(_BODIES))
        check = _check_value(body)
        if check >= len(ALPHABET):
            continue
        chars = body + ALPHABET[check]
        # find_codes() only trusts an unprefixed "XXXX-XXXX" that mixes letters and digits
        # (so "3823-4567" or "BACK-SEAT" are not codes); issue only codes it will find.
        if _DIGITS.isdisjoint(chars) or _DIGITS.issuperset(chars):
            continue
        return _format(prefix, chars)


def normalise(text: str, prefix: str) -> str:
    """The canonical ``PREFIX-XXXX-XXXX`` form of a code as typed, or TrackingCodeError."""
    _check_prefix(prefix)
    # NFKC turns full-width letters from Asian keyboards into ASCII.
    text = unicodedata.normalize("NFKC", text).strip()
    groups = [group for group in _SEPARATORS_RE.split(text) if group]
    if not groups:
        raise TrackingCodeError("the tracking code is empty", "empty")
    for char in "".join(groups):
        if not (char.isascii() and char.isalnum()):
            raise TrackingCodeError(f"{char!r} is not used in tracking codes", "character", character=char)
    compact = "".join(groups).upper()
    if len(compact) == len(prefix) + _CODE_LENGTH and compact.startswith(prefix):
        chars = compact[len(prefix):]
    elif len(compact) == _CODE_LENGTH:
        chars = compact
    else:
        first = groups[0].upper()
        if (len(groups) > 1 and first.isalpha() and len(first) <= 4
                and len(compact) - len(first) == _CODE_LENGTH):
            raise TrackingCodeError(f"tracking codes start with {prefix}-, not {first}-", "prefix",
                                    prefix=prefix, given=first)
        body_length = len(compact)
        if body_length > _CODE_LENGTH and compact.startswith(prefix):
            body_length -= len(prefix)
        example = _format(prefix, "7KQ4M9XS")
        raise TrackingCodeError(
            f"a tracking code has {_CODE_LENGTH} characters after {prefix}- "
            f"(like {example}), this one has {body_length}", "length",
            prefix=prefix, expected=_CODE_LENGTH, example=example, given=body_length)
    for char in chars:
        if char not in _VALUES:
            raise TrackingCodeError(f"{char!r} is not used in tracking codes ({_NOT_USED})", "character",
                                    character=char)
    if _check_value(chars[:-1]) != _VALUES[chars[-1]]:
        raise TrackingCodeError(
            f"{_format(prefix, chars)} is not a valid tracking code: the check character does "
            "not match, probably a typo", "typo", code=_format(prefix, chars))
    return _format(prefix, chars)


def is_valid(text: str, prefix: str) -> bool:
    """Whether ``text`` is a tracking code with a matching check character."""
    try:
        normalise(text, prefix)
    except TrackingCodeError:
        return False
    return True


def _finder(prefix: str) -> re.Pattern[str]:
    """A pattern for codes in free text: with the prefix, or hyphenated as XXXX-XXXX."""
    group = f"[{ALPHABET}]{{4}}"
    dash = f"[{_DASHES}]"
    separator = rf"(?:\s*{dash}\s*|\s+)?"
    return re.compile(
        # Not inside a longer run of letters or digits (Vietnamese letters included).
        r"(?<![^\W_])(?:"
        rf"{re.escape(prefix)}{separator}(?P<a>{group}){separator}(?P<b>{group})"
        # Without the prefix only the hyphenated form counts, and not as part of a longer
        # dashed or dotted number such as a landline "028-3823-4567" or a date.
        rf"|(?<![^\W_][{_DASHES}./])(?P<c>{group}){dash}(?P<d>{group})(?![{_DASHES}./][^\W_])"
        r")(?![^\W_])",
        re.IGNORECASE)


def find_codes(text: str, prefix: str) -> list[str]:
    """Every valid code quoted in free text (an SMS, an e-mail subject), in order, once each."""
    _check_prefix(prefix)
    found: list[str] = []
    for match in _finder(prefix).finditer(unicodedata.normalize("NFKC", text)):
        if match["a"]:
            chars = (match["a"] + match["b"]).upper()
        else:
            chars = (match["c"] + match["d"]).upper()
            if _DIGITS.isdisjoint(chars) or _DIGITS.issuperset(chars):
                continue
        # IGNORECASE also lets a few non-ASCII look-alikes through; they are not codes.
        if not all(char in _VALUES for char in chars):
            continue
        if _check_value(chars[:-1]) != _VALUES[chars[-1]]:
            continue
        code = _format(prefix, chars)
        if code not in found:
            found.append(code)
    return found


# ---------------------------------------------------------------------- status requests
# "TT <code>" on the channels without buttons (SMS, Zalo): folded keywords (bot.folding.fold:
# lower case, no diacritics) and the language of the answer.
KEYWORDS = {("tt",): "vi", ("status",): "en", ("trang", "thai"): "vi", ("tra", "cuu"): "vi"}
_WORDS = re.compile(r"\s*([^\W\d_]+)(?:[^\S\n]+([^\W\d_]+))?")
_CODE_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")


@dataclass(frozen=True)
class StatusRequest:
    """A citizen asking where a complaint stands."""

    language: str
    code: str | None = None  # the normalised code asked for; None when no code was given
    problem: str | None = None  # why the code given is not a tracking code


def status_request(text: str, prefix: str) -> StatusRequest | None:
    """The status request in a message ("TT <code>", "STATUS <code>", "tra cứu ..."), or None
    when the text is something else.

    The keyword is read the way people type on phones: any case, with or without diacritics,
    then a tracking code in any spacing. A text is only a request when what follows the
    keyword is a code or nothing at all: "TT Đông Anh ..." (TT also abbreviates "thị trấn", a
    township) is a complaint like any other.
    """
    match = _WORDS.match(text)
    if match is None:
        return None
    first = fold(match[1])
    second = fold(match[2]) if match[2] else ""
    if (first, second) in KEYWORDS:
        language, rest = KEYWORDS[(first, second)], text[match.end(2):]
    elif (first,) in KEYWORDS:
        language, rest = KEYWORDS[(first,)], text[match.end(1):]
    else:
        return None
    rest = rest.strip().lstrip(":.#-").strip().rstrip(".!?").strip()
    if not rest:
        return StatusRequest(language)
    compact = _CODE_SEPARATORS.sub("", rest)
    # Only what looks like a code (8 characters, with or without the prefix; codes always mix
    # letters and digits) makes this a request; other words after "TT" make it a complaint.
    if not (compact.isascii() and compact.isalnum() and any(c.isdigit() for c in compact)
            and len(compact) in (8, len(prefix) + 8)):
        return None
    try:
        return StatusRequest(language, code=normalise(rest, prefix))
    except TrackingCodeError as error:
        return StatusRequest(language, problem=str(error))
