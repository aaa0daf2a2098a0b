"""Twilio: the inbound SMS webhook and the Messages REST API.

Twilio posts an incoming SMS as a form (From, To, Body, MessageSid, NumMedia,
MediaUrlN, ...) and signs it in ``X-Twilio-Signature``: base64 HMAC-SHA1, keyed with the
account's auth token, over the full URL Twilio called followed by every POST parameter
name and value, sorted by name. That URL is the public one (``web.public_url``), not the
one this process sees behind a proxy. The verifier does exactly what Twilio's own
``RequestValidator`` does, including trying the URL with and without its default port
(Twilio's signing is inconsistent about it) and the algorithm named in
``X-Twilio-Webhooks-Signature-Settings``. We answer with empty TwiML: the
acknowledgement goes out later through the outbox, like every message.

Outbound, a message is a POST to ``/2010-04-01/Accounts/{AccountSid}/Messages.json``
under the gateway's API URL (Twilio's by default), with Basic auth (Account SID, auth
token) and the form fields To, From and Body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, urlencode, urlparse

import aiohttp
from aiohttp import web

from channels.sms.common import (Gateway, ReceivedSms, Refused, StatusReport, basic_auth, count, fail,
                                 required_text, retry_after)
from contract.messages import Attachment

CONTENT_TYPE = "application/x-www-form-urlencoded"
SIGNATURE_HEADER = "X-Twilio-Signature"
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}
MAX_MEDIA = 10  # Twilio delivers at most 10 media items with one message
# Twilio's message statuses as our delivery states (queued, accepted, sending: not final yet).
STATES = {"sent": "sent", "delivered": "delivered", "read": "delivered", "undelivered": "undelivered",
          "failed": "failed"}


def signature(token: str, url: str, params: list[tuple[str, str]], algorithm: str = "HMAC_SHA1") -> str:
    """The signature Twilio sends for a request to url with these POST parameters."""
    # Twilio's validator takes each distinct value of a repeated parameter once, sorted.
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(token.encode("utf-8"), data.encode("utf-8"), ALGORITHMS[algorithm]).digest()
    return base64.b64encode(digest).decode("ascii").strip()


def _url_variants(url: str) -> tuple[str, str]:
    """The URL without and with its scheme's default port, as Twilio's validator tries both."""
    parts = urlparse(url)
    if parts.port:
        without = parts._replace(netloc=parts.netloc.split(":")[0]).geturl()
        return without, parts.geturl()
    port = 443 if parts.scheme == "https" else 80
    return parts.geturl(), parts._replace(netloc=f"{parts.netloc}:{port}").geturl()


def algorithm_of(settings: str | None) -> str:
    """The algorithm named in X-Twilio-Webhooks-Signature-Settings; HMAC_SHA1 when none is."""
    for part in (settings or "").split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return "HMAC_SHA1"


def is_signed(token: str, url: str, params: list[tuple[str, str]], given: str, algorithm: str) -> bool:
    """Whether ``given`` is Twilio's signature of this request (URL with or without its port)."""
    if algorithm not in ALGORITHMS:
        return False
    return any(hmac.compare_digest(signature(token, variant, params, algorithm).encode(), given.encode())
               for variant in _url_variants(url))


def parse(gateway: Gateway, request: web.Request, body: bytes, *, url: str, now: datetime,
          max_age: int) -> ReceivedSms | StatusReport | None:
    """The SMS or status callback in a Twilio webhook; Refused(403) unless Twilio signed it, Refused(400) if
    malformed. A status callback's reference is the ``ref`` we put in its URL with the send."""
    try:
        params = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "body is not a UTF-8 form") from None
    given = request.headers.get(SIGNATURE_HEADER, "")
    if not given:
        raise Refused(403, f"no {SIGNATURE_HEADER} header")
    if not given.isascii() or not is_signed(gateway.secret, url, params, given,
                                            algorithm_of(request.headers.get(SETTINGS_HEADER))):
        raise Refused(403, "signature does not verify")
    fields = dict(params)  # Twilio sends each field once; a repeated one keeps its last value
    status = fields.get("MessageStatus", fields.get("SmsStatus"))
    if "Body" not in fields and status not in (None, "received"):
        if status not in STATES:
            return None  # queued, accepted, sending: not an outcome yet
        reason = f"Twilio error {fields['ErrorCode']}" if fields.get("ErrorCode") else None
        return StatusReport(STATES[status], reference=request.query.get("ref") or None,
                            external_id=fields.get("MessageSid") or fields.get("SmsSid") or None, reason=reason)
    # SmsSid is the older name of the same id.
    sid = required_text({"MessageSid": fields.get("MessageSid") or fields.get("SmsSid")}, "MessageSid")
    sender = required_text(fields, "From", limit=64)
    text = required_text(fields, "Body", allow_empty=True, limit=None)
    media = count(fields.get("NumMedia"), "NumMedia", MAX_MEDIA)
    attachments = tuple(
        Attachment(filename=f"media-{i}", content_type=fields.get(f"MediaContentType{i}") or "application/octet-stream",
                   reference=fields[f"MediaUrl{i}"])
        for i in range(media) if fields.get(f"MediaUrl{i}"))
    return ReceivedSms(message_id=sid, sender=sender, text=text, recipient=fields.get("To") or None,
                       attachments=attachments)


def accepted() -> web.Response:
    """Twilio's answer for a message taken: empty TwiML, so Twilio itself sends nothing."""
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


def _messages_url(gateway: Gateway) -> str:
    config = gateway.config
    return f"{config.base_url.rstrip('/')}/2010-04-01/Accounts/{config.account_sid}/Messages.json"


async def send(http: aiohttp.ClientSession, gateway: Gateway, recipient: str, text: str, reference: str,
               status_url: str) -> str | None:
    """Send one SMS through Twilio's Messages API; return its Message SID.

    ``StatusCallback`` asks Twilio to report the message's fate to ``status_url``, which
    carries our reference: the report finds its message even before we stored the SID.
    """
    config = gateway.config
    url = _messages_url(gateway)
    form = {"To": recipient, "From": config.number, "Body": text,
            "StatusCallback": f"{status_url}?{urlencode({'ref': reference})}"}
    headers = {"Authorization": basic_auth(config.account_sid, gateway.secret)}
    async with http.post(url, data=form, headers=headers) as response:
        if response.status in (200, 201):
            answer = await response.json(content_type=None)
            return str(answer.get("sid") or "") or None
        try:
            error = await response.json(content_type=None)
            # Twilio's errors: {"code": 21211, "message": "The 'To' number ... is not a valid phone number.", ...}
            detail = f"Twilio error {error.get('code')}: {error.get('message')}"
        except (ValueError, aiohttp.ContentTypeError, AttributeError):
            detail = (await response.text())[:300]
        fail(gateway.name, response.status, detail, retry_after(response.headers.get("Retry-After")))


async def lookup(http: aiohttp.ClientSession, gateway: Gateway, recipient: str, text: str,
                 since: datetime) -> list[str]:
    """The SIDs of the messages we sent to recipient with this text since then, newest first.

    After an attempt that got no answer, Twilio may have taken the message all the same:
    its message list, filtered by recipient, says so (Twilio keeps no id of ours). Not by
    ``DateSent``: a message Twilio holds in its queue (one a second per number) has no
    sent date yet, and would not be listed. A message made before ``since``
    (``date_created``, RFC 2822) is not this one; one whose time cannot be read is taken
    as a candidate. Only the latest 50 messages to the recipient are read.
    """
    config = gateway.config
    params = {"To": recipient, "PageSize": "50"}
    headers = {"Authorization": basic_auth(config.account_sid, gateway.secret)}
    async with http.get(_messages_url(gateway), params=params, headers=headers) as response:
        if response.status != 200:
            fail(gateway.name, response.status, (await response.text())[:300])
        listing = await response.json(content_type=None)
    return [str(message["sid"]) for message in listing.get("messages") or []
            if isinstance(message, dict) and message.get("sid") and message.get("to") == recipient
            and message.get("body") == text and str(message.get("direction", "")).startswith("outbound")
            and not _before(message.get("date_created"), since)]


def _before(value: object, since: datetime) -> bool:
    """Whether a time in Twilio's list (RFC 2822) is readable and earlier than since."""
    try:
        return parsedate_to_datetime(str(value)) < since
    except (TypeError, ValueError):
        return False
