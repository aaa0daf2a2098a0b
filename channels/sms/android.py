"""SMS Gateway for Android (capcom6/android-sms-gateway): a phone with a SIM card as the gateway.

The app posts webhooks as JSON: ``{"event": "sms:received", "deviceId", "id", "webhookId",
"payload": {"messageId", "message", "sender", "recipient", "simNumber", "receivedAt"}}``
(apps before the ``sender`` field send the number as ``phoneNumber``). It signs each one:
``X-Signature`` is the hex HMAC-SHA256, keyed with the app's signing key, of the raw body
followed by ``X-Timestamp`` (Unix seconds). A timestamp further than
``sms.signature_max_age_seconds`` from our clock is refused, so a captured request cannot
be replayed later. ``sms:sent``, ``sms:delivered`` and ``sms:failed`` report on a message
we sent (its ``messageId`` is the id we gave it); other events (ping) are answered 200
and dropped: the app would otherwise retry them for two days.

The app's ``messageId`` is a 32-bit hash of the message, not unique across all messages
("do not rely on it as a unique identifier", its documentation says), so our id for
dedupe adds ``receivedAt``: a retry carries the same payload, another message does not.

Outbound, a message is ``POST {api_url}/message`` with Basic auth and
``{"id", "textMessage": {"text"}, "phoneNumbers": [...]}``; the app answers 202. The id
is derived from the outbox key, so the app can tell a retry from a new message.
"""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from channels.sms.common import (Gateway, ReceivedSms, Refused, StatusReport, basic_auth, fail, hmac_sha256_hex,
                                 parse_time, required_text, retry_after, same_signature)

CONTENT_TYPE = "application/json"
SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Timestamp"
RECEIVED = "sms:received"
REPORTS = {"sms:sent": "sent", "sms:delivered": "delivered", "sms:failed": "failed"}


def signature(key: str, body: bytes, timestamp: str) -> str:
    """The app's X-Signature for a body sent at timestamp."""
    return hmac_sha256_hex(key, body + timestamp.encode("ascii"))


def parse(gateway: Gateway, request: web.Request, body: bytes, *, url: str, now: datetime,
          max_age: int) -> ReceivedSms | StatusReport | None:
    """The SMS or delivery report in an app webhook (None for other events); Refused(403) unless signed and fresh."""
    given = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
    if not given or not timestamp:
        raise Refused(403, f"no {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise Refused(403, f"{TIMESTAMP_HEADER} is not Unix seconds")
    if not same_signature(signature(gateway.secret, body, timestamp), given):
        raise Refused(403, "signature does not verify")
    if abs(now.timestamp() - int(timestamp)) > max_age:
        raise Refused(403, f"{TIMESTAMP_HEADER} is more than {max_age} s from our clock (a replay, or a wrong clock)")
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested thousands deep
        raise Refused(400, "body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise Refused(400, "missing field 'event'")
    if event["event"] not in (RECEIVED, *REPORTS):
        return None
    payload = event.get("payload")
    if not isinstance(payload, dict):
        raise Refused(400, "missing field 'payload'")
    if event["event"] in REPORTS:
        reason = payload.get("reason") if isinstance(payload.get("reason"), str) else None
        return StatusReport(REPORTS[event["event"]], reference=required_text(payload, "messageId"),
                            reason=reason and reason[:500])
    sid = required_text(payload, "messageId")
    sender = payload.get("sender") or payload.get("phoneNumber")
    sender = required_text({"sender": sender}, "sender", limit=64)
    text = required_text(payload, "message", allow_empty=True, limit=None)
    received_raw = payload.get("receivedAt")
    received_at = parse_time(received_raw, "receivedAt")
    recipient = payload.get("recipient") if isinstance(payload.get("recipient"), str) else None
    external = f"{sid}:{received_raw}" if isinstance(received_raw, str) and received_raw else sid
    return ReceivedSms(message_id=external, sender=sender, text=text, recipient=recipient, received_at=received_at)


def accepted() -> web.Response:
    """The answer the app needs to stop retrying: any 2xx."""
    return web.json_response({"status": "ok"})


def message_url(base: str) -> str:
    """``{api_url}/message``, keeping a query string the URL may have."""
    parts = urlsplit(base)
    return parts._replace(path=parts.path.rstrip("/") + "/message").geturl()


async def send(http: aiohttp.ClientSession, gateway: Gateway, recipient: str, text: str, reference: str,
               status_url: str) -> str | None:
    """Send one SMS through the app's API; return the app's message id (our reference)."""
    config = gateway.config
    request = {"id": reference, "textMessage": {"text": text}, "phoneNumbers": [recipient]}
    headers = {"Authorization": basic_auth(config.api_username, gateway.password or "")}
    async with http.post(message_url(config.base_url), json=request, headers=headers) as response:
        if response.status in (200, 201, 202):
            answer = await response.json(content_type=None)
            return str(answer.get("id") or request["id"]) if isinstance(answer, dict) else request["id"]
        if response.status == 409:
            # The id is taken: our first try reached the app though its answer never reached us.
            return request["id"]
        try:
            detail = str((await response.json(content_type=None)).get("message"))
        except (ValueError, aiohttp.ContentTypeError, AttributeError):
            detail = (await response.text())[:300]
        fail(gateway.name, response.status, detail, retry_after(response.headers.get("Retry-After")))
