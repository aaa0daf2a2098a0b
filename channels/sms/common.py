"""What the SMS gateway dialects share: a configured gateway with its secrets, a received
SMS as a dialect understood it, refusals in HTTP terms, phone numbers, and turning an
operator's HTTP answer into the outbox's delivery errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

import phonenumbers

from bot.logs import mask_personal_data
from channels.sms.config import SmsGatewayConfig
from contract import fields
from contract.schema import secret
from contract.delivery import PermanentDeliveryError, TransientDeliveryError
from contract.messages import Attachment, DeliveryState

MAX_ID_LENGTH = 200  # a provider's message id longer than this is not one


class Refused(Exception):
    """A webhook request we do not take; ``status`` is the HTTP answer (400, 403)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Gateway:
    """One configured gateway with its secrets read from the environment."""

    config: SmsGatewayConfig
    secret: str  # Twilio auth token, Android signing key, generic HMAC secret
    password: str | None = None  # Android: the app's API password

    @property
    def name(self) -> str:
        """The gateway's configured name, as in its webhook address."""
        return self.config.name

    @property
    def kind(self) -> str:
        """The dialect it speaks: "twilio", "android" or "generic"."""
        return self.config.kind

    @classmethod
    def from_config(cls, index: int, config: SmsGatewayConfig) -> Gateway:
        """The gateway with its secrets; a missing one is named the way configuration errors are."""
        found = secret(config.secret_env)
        if not found:
            raise RuntimeError(f"sms.gateways[{index}].secret_env: environment variable {config.secret_env} is not set")
        password = None
        if config.kind == "android":
            password = secret(config.api_password_env)
            if not password:
                raise RuntimeError(f"sms.gateways[{index}].password_env: environment variable "
                                   f"{config.api_password_env} is not set")
        return cls(config, found, password)


@dataclass(frozen=True)
class ReceivedSms:
    """An SMS as a gateway delivered it, before anything is normalised."""

    message_id: str
    sender: str
    text: str
    recipient: str | None = None
    received_at: datetime | None = None
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class StatusReport:
    """What a gateway reports of one of our messages after it was sent."""

    state: DeliveryState  # sent | delivered | undelivered | failed
    reference: str | None = None  # our reference for the message (we gave it with the send)
    external_id: str | None = None  # the gateway's own id for it
    reason: str | None = None


@dataclass(frozen=True)
class Phone:
    """A sender's address: E.164 when it is a phone number, else what the operator gave."""

    address: str
    is_phone: bool


def normalise_phone(raw: str, region: str) -> Phone:
    """``0912345678`` (region VN) as ``+84912345678``; a sender name ("VIETTEL") or short code stays as given."""
    cleaned = raw.strip()[:64]
    # Letters mean a sender name, never a person: phonenumbers would read them as a keypad number.
    if not cleaned or re.search(r"[^\d\s+().\-]", cleaned):
        return Phone(cleaned, False)
    try:
        number = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException:
        return Phone(cleaned, False)
    if not phonenumbers.is_possible_number(number):
        return Phone(cleaned, False)  # a short code: an operator's or a service's, not a citizen's
    return Phone(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), True)


def hmac_sha256_hex(key: str, data: bytes) -> str:
    """Hex HMAC-SHA256 of data under key (UTF-8)."""
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest()


def same_signature(expected: str, given: str) -> bool:
    """Constant-time comparison of two signatures (hex is compared case-insensitively)."""
    return hmac.compare_digest(expected.lower().encode(), given.strip().lower().encode("utf-8", "replace"))


def required_text(data: dict, key: str, *, allow_empty: bool = False, limit: int | None = MAX_ID_LENGTH) -> str:
    """A string field of a payload, or 400 naming it.

    With a ``limit`` the field is an id or an address: refused when it cannot be stored as
    it is (``contract.fields.identifier``), never altered; without one it is free text,
    cleaned later.
    """
    value = data.get(key)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise Refused(400, f"missing field {key!r}")
    if limit is None:
        return value
    try:
        return fields.identifier(value, f"field {key!r}", limit)
    except fields.FieldError as error:
        raise Refused(400, str(error)) from None


def external_id(gateway: str, message_id: str) -> str:
    """Our id for dedupe of a gateway's message id; one too long for the store is hashed, never cut
    (two ids cut to the same prefix would be taken as one message)."""
    joined = f"{gateway}:{message_id}"
    if len(joined) <= fields.EXTERNAL_ID_MAX:
        return joined
    return f"{gateway}:sha256:{hashlib.sha256(message_id.encode('utf-8')).hexdigest()}"


def count(value: str | None, key: str, limit: int) -> int:
    """A small count written in ASCII digits ("2", not "٢" or "1_0"), at most ``limit``; else 400."""
    value = (value or "0").strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 6):
        raise Refused(400, f"{key} is not a number")
    return min(int(value), limit)


def parse_time(value: object, key: str) -> datetime | None:
    """An ISO 8601 time from a payload (None when absent); 400 when it is not one."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Refused(400, f"field {key!r} is not a time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(400, f"field {key!r} is not an ISO 8601 time") from None
    # A time without an offset cannot be placed; the time of arrival will do instead.
    return moment if moment.tzinfo is not None else None


def basic_auth(user: str, password: str) -> str:
    """An Authorization header value for HTTP Basic auth (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (a date form is ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def fail(gateway: str, status: int, detail: str, retry_after_seconds: float | None = None) -> NoReturn:
    """Raise the delivery error an operator's HTTP error answer means."""
    # Operators quote the number they refused; the reason is stored and logged, so it is masked.
    detail = mask_personal_data(" ".join(detail.split()))[:300] or "no detail"
    if status >= 500 or status in (408, 425, 429):
        raise TransientDeliveryError(f"{gateway}: gateway answered {status}: {detail}", retry_after_seconds)
    if status in (401, 403, 404):
        # Our credentials or address are wrong, not the message: retried (with backoff) so that
        # the queue survives until an operator fixes the configuration.
        raise TransientDeliveryError(f"{gateway}: gateway refused our request ({status}), check its "
                                     f"api_url and credentials: {detail}", retry_after_seconds)
    raise PermanentDeliveryError(f"{gateway}: gateway refused the message ({status}): {detail}")
