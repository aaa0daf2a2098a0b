"""How the store writes and reads its JSON columns (outbox payloads, audit events' details,
incident features, staff areas): orjson, with Vietnamese kept as UTF-8.

The standard library's ``json.dumps`` escaped every letter with a diacritic as ``\\uXXXX``
(six bytes for one): an escalation's payload took 1,411 bytes where 1,034 say the same, and
the encoding was the largest single cost of the sweep's writes (bench/README.md). orjson
writes the same JSON (the same keys in the same order, the same values when read back) in
a quarter of the time, and reads it in a third.

What orjson refuses and ``json`` takes is still written, by ``json``, as before: a string
with a lone surrogate (escaped, so the row stays valid UTF-8), an integer past 64 bits.
What ``json`` refuses (a time, a set, a dataclass) is refused as before, not turned into
text quietly. Reading falls back the same way for what older rows may hold (``NaN``, an
escaped lone surrogate). One difference is left: orjson writes a float that is not a
number (NaN, infinity) as ``null``; nothing here stores one.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Non-string keys as json writes them ("1", "true"); a time or a dataclass goes to json,
# which refuses it as it always did.
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any) -> str:
    """A JSON column's value as text."""
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value)


def loads(text: str | bytes) -> Any:
    """A JSON column's text as its value."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
