"""Vietnamese text folded the way people type it on phones, for matching: lower case, no
diacritics, "đ" as "d", words only, single spaces ("Mất  ĐIỆN!" -> "mat dien").

Routing keywords, status-request keywords by SMS and (later) incident matching all
compare folded text, so "MAT DIEN", "mất điện" and "Mat dien" are one phrase.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_WORD = re.compile(r"\w+")


@lru_cache(maxsize=256)
def fold(text: str) -> str:
    """Text reduced for matching: lower case, no diacritics, đ→d, single spaces, words only.

    Kept for the last texts: intake folds one complaint's text for routing, the store and
    the incident matcher, several times each.
    """
    decomposed = unicodedata.normalize("NFD", text.lower().replace("đ", "d"))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_WORD.findall(bare)).replace("_", " ")


def contains_phrase(folded_text: str, folded_phrase: str) -> bool:
    """True when the phrase occurs in the text as whole words (both already folded)."""
    return bool(folded_phrase) and f" {folded_phrase} " in f" {folded_text} "
