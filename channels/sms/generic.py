"""A generic JSON gateway, for any operator or aggregator that can post and receive JSON.

Inbound, the operator posts ``{"id", "from", "to", "text", "received_at"}`` (``to`` and
``received_at`` optional; ``received_at`` in ISO 8601) and signs the raw body in
``X-Signature``: hex HMAC-SHA256 keyed with the shared secret (a ``sha256=`` prefix, as
GitHub-style senders write it, is accepted). Operators retry: the same ``id`` twice
stores one message.

Outbound, a message is a JSON POST to the gateway's ``api_url``:
``{"id", "from", "to", "text"}``, signed the same way in ``X-Signature`` so the operator
can tell it came from us. The ``id`` is our reference for the message, the same on every
attempt, and goes in an ``Idempotency-Key`` header too: an operator that keeps idempotency
keys takes a retry after an unanswered attempt as the same message. Any 2xx is success;
``{"id": ...}`` in the answer, if there, is kept.

Delivery reports come signed the same way, to ``/webhooks/sms/{gateway}/status`` (or to
the inbound URL): ``{"event": "status", "id": <our id>, "status": "sent" | "delivered" |
"undelivered" | "failed", "reason": "..."}``.
"""

from __future__ import annotations

import json
from datetime import datetime

import aiohttp
from aiohttp import web

from channels.sms.common import (Gateway, ReceivedSms, Refused, StatusReport, fail, hmac_sha256_hex, parse_time,
                                 required_text, retry_after, same_signature)

CONTENT_TYPE = "application/json"
SIGNATURE_HEADER = "X-Signature"
STATES = ("sent", "delivered", "undelivered", "failed")


def signature(secret: str, body: bytes) -> str:
    """The X-Signature of a body: hex HMAC-SHA256 under the shared secret."""
    return hmac_sha256_hex(secret, body)


def parse(gateway: Gateway, request: web.Request, body: bytes, *, url: str, now: datetime,
          max_age: int) -> ReceivedSms | StatusReport | None:
    """The SMS (or delivery report) in a generic webhook; Refused(403) unless signed, Refused(400) if malformed."""
    given = request.headers.get(SIGNATURE_HEADER, "").strip()
    if given.lower().startswith("sha256="):
        given = given[len("sha256="):]
    if not given:
        raise Refused(403, f"no {SIGNATURE_HEADER} header")
    if not same_signature(signature(gateway.secret, body), given):
        raise Refused(403, "signature does not verify")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested thousands deep
        raise Refused(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "body is not a JSON object")
    if data.get("event") == "status":
        state = data.get("status")
        if state not in STATES:
            raise Refused(400, f"field 'status' must be one of {', '.join(STATES)}")
        reason = data.get("reason") if isinstance(data.get("reason"), str) else None
        return StatusReport(state, reference=required_text(data, "id"), reason=reason and reason[:500])
    if isinstance(data.get("id"), int) and not isinstance(data.get("id"), bool):
        data["id"] = str(data["id"])  # numeric ids are common; they are ids all the same
    return ReceivedSms(
        message_id=required_text(data, "id"),
        sender=required_text(data, "from", limit=64),
        text=required_text(data, "text", allow_empty=True, limit=None),
        recipient=data.get("to") if isinstance(data.get("to"), str) else None,
        received_at=parse_time(data.get("received_at"), "received_at"),
    )


def accepted() -> web.Response:
    """The answer for a message taken."""
    return web.json_response({"status": "ok"})


async def send(http: aiohttp.ClientSession, gateway: Gateway, recipient: str, text: str, reference: str,
               status_url: str) -> str | None:
    """Post one SMS to the operator's URL; return the operator's id for it, if it gives one."""
    payload = {"id": reference, "from": gateway.config.number, "to": recipient, "text": text}
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    headers = {"Content-Type": CONTENT_TYPE, SIGNATURE_HEADER: signature(gateway.secret, body),
               "Idempotency-Key": reference}
    async with http.post(gateway.config.base_url, data=body, headers=headers) as response:
        if 200 <= response.status < 300:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
            found = answer.get("id") if isinstance(answer, dict) else None
            return str(found) if found not in (None, "") else payload["id"]
        fail(gateway.name, response.status, (await response.text())[:300],
             retry_after(response.headers.get("Retry-After")))
