"""The status request by SMS: "TT <code>" or "STATUS <code>" texts back where a complaint stands.

The keyword is read the way people type on phones: any case, with or without diacritics
("TT", "tt", "Status", "Trạng thái", "TRANG THAI", "tra cứu"), then a tracking code in any
spacing ("PA-7KQ4-M9XS", "pa 7kq4m9xs"). A text is only taken as a request when what
follows the keyword is a code or nothing at all: "TT Đông Anh ..." (TT also abbreviates
"thị trấn", a township) is a complaint like any other. A code with a typo gets an answer
saying so; "TT" alone gets the status of the sender's latest complaint, or how to ask.

The answer is queued in the outbox like every message, keyed by the request's message
id, so a gateway's retry of the request does not send a second answer.
"""

from __future__ import annotations

import hashlib

from bot import tracking
from bot.tracking import StatusRequest
from bot.port import Port
from contract.messages import Outgoing


def parse(text: str, prefix: str) -> StatusRequest | None:
    """The status request in an SMS text, or None when the text is something else."""
    return tracking.status_request(text, prefix)


async def answer(port: Port, request: StatusRequest, *, gateway: str, phone: str, message_id: str) -> None:
    """Queue the answer to a status request to the phone it came from."""
    language = request.language
    prefix = port.config.service.tracking_prefix
    example = f"{prefix}-7KQ4-M9XS"
    code = request.code
    if request.problem is not None:
        text = port.texts.get(language, "sms.status_bad_code", example=example)
    elif code is not None:
        found = (await port.lookup(code)).status
        text = (port.status_text(found, language, "sms") if found is not None
                else port.texts.get(language, "sms.status_not_found", code=code))
    else:
        latest = await port.complaints_of("sms", phone, limit=1)
        code = latest[0].code if latest else None
        text = (port.status_text(latest[0], language, "sms") if latest
                else port.texts.get(language, "sms.status_help", example=example))
    key = f"sms-status:{message_id}"
    if len(key) > 200:
        key = f"sms-status:{hashlib.sha256(message_id.encode()).hexdigest()}"
    await port.reply(Outgoing(channel="sms", recipient=phone, text=text, key=key, kind="status_reply",
                              origin="reply", language=language, tracking_code=code,
                              status_url=port.track_url(code) if code else None, via=gateway))
