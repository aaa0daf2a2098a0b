"""Zalo's webhook deliveries, checked and read: the signature, the timestamp, and the event.

Zalo signs each POST in ``X-ZEvent-Signature: mac=<hex>``, the hex being plain SHA-256 (not
HMAC) of ``app_id + raw body + timestamp + OA secret key``, app_id and timestamp as written
in the body (developers.zalo.me, webhook overview). So the body is read as JSON first, only
to find those two, then nothing of it is used until the MAC matches. The timestamp is in
milliseconds, as a string; a delivery older than ``zalo.signature_max_age_seconds`` is
refused (a replay), as is one from the future beyond a few minutes of clock skew. Zalo
resends an undelivered event with the same body for up to about two hours, so the age
limit is two hours by default, and a replay inside it is harmless: ``msg_id`` is the
message's id for dedupe.

The event's shape (tests/fixtures/zalo/README.md says where each comes from): ``user_send_*``
have ``sender.id`` (the citizen, as seen by this OA), ``recipient.id`` (the OA) and
``message`` (``msg_id``, ``text``, ``attachments[]``); ``follow``/``unfollow`` carry
``follower.id`` and ``oa_id``; ``user_seen_message`` comes from the OA's side (``sender`` is
the OA) with ``message.msg_ids``; ``user_submit_info`` carries ``info`` (name, phone, address)
a citizen chose to share.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

SIGNATURE_HEADER = "X-ZEvent-Signature"
FUTURE_SKEW_SECONDS = 300  # a delivery "from the future" beyond this is not Zalo's
MAX_ID = 100  # a Zalo id or msg_id longer than this is not one


class Refused(Exception):
    """A delivery we do not take; ``status`` is the HTTP answer (400, 403)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def mac(app_id: str, body: bytes, timestamp: str, oa_secret: str) -> str:
    """Zalo's webhook MAC: hex SHA-256 of app_id + raw body + timestamp + OA secret key."""
    return hashlib.sha256(app_id.encode() + body + timestamp.encode() + oa_secret.encode()).hexdigest()


@dataclass(frozen=True)
class Attachment:
    """One item of ``message.attachments[]`` as Zalo sent it."""

    type: str
    url: str | None = None
    name: str | None = None
    size: int | None = None
    description: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class Event:
    """A verified delivery: what happened, who did it, when."""

    name: str
    user: str | None  # the citizen's id for this OA (never shown to anyone)
    at: datetime
    timestamp: str  # as Zalo wrote it: part of the ids of events without a msg_id
    msg_id: str | None = None
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    info: dict[str, str] = field(default_factory=dict)  # user_submit_info: what the citizen shared


def _text(value: object, limit: int | None = None) -> str:
    return value[:limit] if isinstance(value, str) and limit else (value if isinstance(value, str) else "")


def _id(value: object) -> str | None:
    """A Zalo id: digits (or hex for a msg_id), sent as a string; numbers are taken too."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and re.fullmatch(r"[0-9A-Za-z_-]{1,%d}" % MAX_ID, value):
        return value
    return None


def _number(value: object) -> float | None:
    try:
        number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except ValueError:
        return None
    return number if number is not None and abs(number) <= 180 else None


def _attachment(item: object) -> Attachment | None:
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        return None
    payload = item.get("payload") if isinstance(item.get("payload"), dict) else {}
    coordinates = payload.get("coordinates") if isinstance(payload.get("coordinates"), dict) else {}
    url = payload.get("url") if isinstance(payload.get("url"), str) else None
    size = payload.get("size")
    return Attachment(
        type=item["type"][:32], url=url if url and url.startswith(("https://", "http://")) else None,
        name=_text(payload.get("name"), 200) or None,
        size=int(size) if isinstance(size, (str, int)) and str(size).isdigit() else None,
        description=_text(payload.get("description"), 1000) or None,
        latitude=_number(coordinates.get("latitude")), longitude=_number(coordinates.get("longitude")))


def verify(body: bytes, signature: str, *, app_id: str, oa_secret: str, now: datetime, max_age: int) -> dict:
    """The delivery's JSON object once its MAC and timestamp check out; Refused otherwise."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "body is not a JSON object")
    given = signature.strip()
    if not given.lower().startswith("mac="):
        raise Refused(403, f"no {SIGNATURE_HEADER} header of the form mac=<hex>")
    body_app_id, timestamp = data.get("app_id"), data.get("timestamp")
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)  # signed as its digits either way
    if not isinstance(body_app_id, str) or not isinstance(timestamp, str) or not timestamp.isdigit() \
            or len(timestamp) > 16:
        raise Refused(403, "no app_id and timestamp to check the signature with")
    expected = mac(app_id, body, timestamp, oa_secret)
    # Compared in constant time, and with our app id whatever the body says: a delivery for
    # another app (or signed with its secret) never verifies.
    if not hmac.compare_digest(expected.encode(), given[4:].strip().lower().encode("utf-8", "replace")) \
            or not hmac.compare_digest(body_app_id.encode("utf-8", "replace"), app_id.encode()):
        raise Refused(403, "signature does not verify")
    age = (now - datetime.fromtimestamp(int(timestamp) / 1000, UTC)).total_seconds()
    if age > max_age:
        raise Refused(403, "timestamp too old (a replay?)")
    if age < -FUTURE_SKEW_SECONDS:
        raise Refused(403, "timestamp in the future")
    return data


def read(data: dict) -> Event:
    """The event in a verified delivery; Refused(400) when it lacks what its kind needs."""
    name = data.get("event_name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z_]{1,64}", name):
        raise Refused(400, "no event_name")
    timestamp = str(data["timestamp"])
    at = datetime.fromtimestamp(int(timestamp) / 1000, UTC)
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    if name in ("follow", "unfollow"):
        follower = data.get("follower") if isinstance(data.get("follower"), dict) else {}
        user = _id(follower.get("id"))
        if user is None:
            raise Refused(400, "no follower.id")
        return Event(name, user, at, timestamp)
    if name == "user_seen_message":  # from the OA's side: the citizen is the recipient
        recipient = data.get("recipient") if isinstance(data.get("recipient"), dict) else {}
        ids = message.get("msg_ids") if isinstance(message.get("msg_ids"), list) else []
        return Event(name, _id(recipient.get("id")), at, timestamp, text=",".join(i for i in ids if _id(i)))
    sender = data.get("sender") if isinstance(data.get("sender"), dict) else {}
    user = _id(sender.get("id"))
    if name == "user_submit_info":
        info = data.get("info") if isinstance(data.get("info"), dict) else {}
        if user is None:
            raise Refused(400, "no sender.id")
        return Event(name, user, at, timestamp, info={k: _text(v, 200) for k, v in info.items()
                                                      if isinstance(k, str) and isinstance(v, str)})
    if not name.startswith("user_send_"):
        return Event(name, user, at, timestamp)  # the OA's own messages, reactions, receipts: not a citizen's word
    msg_id = _id(message.get("msg_id"))
    if user is None or msg_id is None:
        raise Refused(400, "no sender.id or message.msg_id")
    items = message.get("attachments") if isinstance(message.get("attachments"), list) else []
    attachments = tuple(found for item in items[:20] if (found := _attachment(item)) is not None)
    return Event(name, user, at, timestamp, msg_id=msg_id, text=_text(message.get("text")),
                 attachments=attachments)
