"""``POST /webhooks/sms/{gateway}``: an SMS from a gateway becomes an ``Inbound`` and one call to the port.

Everything that is not a signed, well-formed SMS is refused before anything is stored:
an unknown gateway name is 404; a body of the wrong content type, empty or larger than
``sms.max_body_bytes`` is 400; a missing or wrong signature is 403; a payload without the
fields an SMS needs is 400. A status request ("TT <code>") is answered through the
outbox; anything else goes to intake, which stores it (or finds it already stored: a
gateway's retry carries the same message id) and queues the acknowledgement. The gateway
gets its 2xx only after that is committed, so a failure makes it try again.

Phone numbers never reach the log in clear: they are masked (``bot.logs.mask_phone``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from bot.logs import mask_phone
from bot.port import Port
from channels.sms import commands
from channels.sms.common import Gateway, Refused, StatusReport, external_id, normalise_phone
from channels.sms.config import SmsConfig
from channels.sms.dialects import DIALECTS
from channels.sms.text import clean
from contract.messages import Inbound
from contract.results import IntakeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmsChannel:
    """What the webhook needs: the port, the channel's configuration and the gateways by name."""

    port: Port
    config: SmsConfig
    gateways: dict[str, Gateway]


CHANNEL = web.AppKey("sms_channel", SmsChannel)


def _refused(gateway: str, status: int, reason: str) -> web.Response:
    log.warning("sms webhook refused", extra={"fields": {"gateway": gateway[:40], "status": status,
                                                        "reason": reason}})
    return web.Response(status=status, text=reason + "\n")


async def _body(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it passes limit bytes (read no further)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(16384):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def webhook_url(public_url: str, gateway: Gateway, request: web.Request) -> str:
    """The URL the gateway was told to call: the public one, as a proxy in front does not change it."""
    query = f"?{request.query_string}" if request.query_string else ""
    status = "/status" if request.path.endswith("/status") else ""
    return f"{public_url.rstrip('/')}/webhooks/sms/{gateway.name}{status}{query}"


async def receive(request: web.Request) -> web.Response:
    """Take one SMS from a gateway: 2xx once it is stored (or was already), 4xx when refused."""
    channel = request.app[CHANNEL]
    port = channel.port
    name = request.match_info["gateway"]
    gateway = channel.gateways.get(name)
    if gateway is None:
        return _refused(name, 404, "unknown gateway")
    dialect = DIALECTS[gateway.kind]
    if request.content_type != dialect.CONTENT_TYPE:
        return _refused(name, 400, f"expected Content-Type {dialect.CONTENT_TYPE}")
    limit = channel.config.max_body_bytes
    body = await _body(request, limit)
    if body is None:
        return _refused(name, 400, f"body larger than {limit} bytes")
    if not body.strip():
        return _refused(name, 400, "empty body")
    try:
        sms = dialect.parse(gateway, request, body, url=webhook_url(port.public_url, gateway, request),
                            now=port.clock.now(), max_age=channel.config.signature_max_age_seconds)
    except Refused as refusal:
        return _refused(name, refusal.status, refusal.reason)
    if sms is None:
        return dialect.accepted()  # an event we do not take (a ping, a status not final yet): nothing to store
    if isinstance(sms, StatusReport):
        known = await port.delivery_report("sms", sms.state, reference=sms.reference, external_id=sms.external_id,
                                           reason=sms.reason)
        log.info("sms delivery report", extra={"fields": {"gateway": gateway.name, "state": sms.state,
                                                          "known": known}})
        return dialect.accepted()
    text = clean(sms.text).strip()
    if not text and not sms.attachments:
        return _refused(name, 400, "empty message")
    phone = normalise_phone(sms.sender, port.config.service.phone_region)
    message_id = external_id(gateway.name, sms.message_id)
    request_for_status = commands.parse(text, port.config.service.tracking_prefix) if phone.is_phone else None
    if request_for_status is not None:
        await commands.answer(port, request_for_status, gateway=gateway.name, phone=phone.address,
                              message_id=message_id)
        log.info("sms status request", extra={"fields": {"gateway": gateway.name, "from": mask_phone(phone.address),
                                                         "code": request_for_status.code or "-"}})
        return dialect.accepted()
    inbound = Inbound(
        channel="sms", external_id=message_id, sender=phone.address, text=text,
        received_at=sms.received_at or port.clock.now(), attachments=sms.attachments, via=gateway.name,
        # A sender name or short code is a machine (an operator's notice, an advert): kept, never answered.
        automated=not phone.is_phone,
        # SMS has no reply threading: a text soon after continues the sender's open complaint.
        continues_within_hours=channel.config.followup_window_hours,
    )
    try:
        result = await port.receive(inbound)
    except IntakeError as error:
        return _refused(name, 400, str(error))
    log.info("sms received", extra={"fields": {"gateway": gateway.name, "from": mask_phone(phone.address),
                                               "outcome": result.outcome, "code": result.tracking_code or "-"}})
    return dialect.accepted()
