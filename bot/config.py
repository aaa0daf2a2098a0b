"""Typed configuration, loaded once from TOML and checked before anything starts.

Every key has a default equal to ``config.example.toml``, so ``feedback-intake serve``
runs with no file at all. Unknown keys, wrong types, bad references and missing secrets
are errors that name the key (``sms.gateways[0].secret_env: environment variable X is
not set``), as many as can be found in one pass, so an operator fixes a file at once
(references between sections are checked once the sections themselves are valid).
Secrets never live in the file: the file names the environment variable that holds them.

Values are checked strictly: TOML has real types, so ``port = "8080"`` or
``enabled = "false"`` is a mistake to report, not a string to guess at.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
import zoneinfo
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

import email_validator
import holidays
import phonenumbers
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

TWILIO_API_URL = "https://api.twilio.com"  # what an empty ``api_url`` means for a Twilio gateway
CHANNELS = ("web", "sms", "email", "telegram", "open311")
# Telegram delivers webhooks only over HTTPS and only to these ports (Bot API, setWebhook).
TELEGRAM_WEBHOOK_PORTS = (443, 80, 88, 8443)
_OWN_ROUTES = {"track", "webhooks", "open311", "api", "healthz", "metrics", "openapi.json", "scorecard", "static"}


class _Problems(ValueError):
    """Several problems found by one validator, each as (key relative to the model, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{key}: {message}" if key else message for key, message in problems))


def _join(path: str, key: str) -> str:
    if not key:
        return path
    if not path or key.startswith("["):
        return path + key
    return f"{path}.{key}"


# ---------------------------------------------------------------------------- value types

def _slug(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", value):
        raise ValueError("must be a short identifier of lowercase ASCII letters, digits, '-' and '_' "
                         f"(e.g. 'tiep-nhan'), got {value[:70]!r}")
    return value


def _env_name(value: str) -> str:
    # Upper case only: it is the convention, and it catches a pasted token or key, which
    # would otherwise pass for a variable name and put a secret into the file.
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]{0,127}", value):
        raise ValueError("must be the NAME of an environment variable (A-Z, 0-9 and '_', e.g. 'TWILIO_AUTH_TOKEN'), "
                         "never the secret itself")
    return value


def _empty_is_none(value: Any) -> Any:
    """TOML has no null: an empty string is how a file says 'none'."""
    return None if value == "" else value


def _iso_date(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"must be a date like 2026-09-02, got {value[:40]!r}") from None
    return value


def _email_address(value: str) -> str:
    try:
        email_validator.validate_email(value, check_deliverability=False, globally_deliverable=False,
                                       test_environment=True)
    except email_validator.EmailNotValidError as error:
        raise ValueError(f"{value[:80]!r} is not an e-mail address: {error}") from None
    return value


Slug = Annotated[str, AfterValidator(_slug)]
EnvName = Annotated[str, AfterValidator(_env_name)]
OptionalEnvName = Annotated[EnvName | None, BeforeValidator(_empty_is_none)]
EmailAddress = Annotated[str, AfterValidator(_email_address)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]


def _http_url(value: str, *, query: bool = False) -> SplitResult:
    """Check that value is an absolute http(s) URL with no credentials in it."""
    if value != value.strip() or any(c.isspace() for c in value):
        raise ValueError("must not contain spaces")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {value[:100]!r}")
    if "@" in parts.netloc:
        # Not echoed: whatever sits before the @ is probably a password.
        raise ValueError("must not contain a user name or password; secrets come from environment variables")
    if parts.fragment or value.endswith("#"):
        raise ValueError("must not have a #fragment")
    if (parts.query or value.endswith("?")) and not query:
        raise ValueError("must not have a ?query")
    return parts



# ---------------------------------------------------------------------------- sections

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ServiceConfig(_Section):
    name: str = Field("Cổng tiếp nhận phản ánh, kiến nghị", min_length=1)
    name_en: str = "Citizens' Feedback Desk"
    timezone: str = "Asia/Ho_Chi_Minh"
    default_language: Literal["vi", "en"] = "vi"
    tracking_prefix: str = "PA"
    phone_region: str = "VN"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Asia/Ho_Chi_Minh')") from None
        return value

    @field_validator("tracking_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{1,4}", value):
            raise ValueError(f"must be 1 to 4 capital letters A-Z (e.g. 'PA'), got {value[:20]!r}")
        return value

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"must be a two-letter region code that phone numbers use (e.g. 'VN'), got {value[:20]!r}")
        return value


class StorageConfig(_Section):
    url: str = "sqlite+aiosqlite:///feedback.db"
    auto_upgrade: bool = True
    busy_timeout_ms: int = Field(5000, ge=0)
    pool_size: int = Field(5, ge=1)

    @field_validator("url")
    @classmethod
    def _supported_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value


class WebConfig(_Section):
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(1_048_576, ge=4096)
    csrf_secret_env: OptionalEnvName = None
    shutdown_timeout_seconds: float = Field(10.0, ge=0)
    # Photos and documents a citizen attaches on the web form (JPEG, PNG, WebP, PDF),
    # counted apart from max_body_bytes: 0 attachments turns the file field off.
    max_attachments: int = Field(3, ge=0, le=10)
    max_attachment_bytes: int = Field(5_242_880, ge=1024, le=52_428_800)
    # Width x height: a small file can claim a huge picture (a decompression bomb). At most
    # what Pillow itself opens without calling the image a bomb.
    max_image_pixels: int = Field(50_000_000, ge=10_000, le=89_000_000)

    @field_validator("public_url")
    @classmethod
    def _base_address(cls, value: str) -> str:
        parts = _http_url(value)
        path = parts.path.rstrip("/")
        last = path.rsplit("/", 1)[-1]
        if last in _OWN_ROUTES or "." in last or "//" in path:
            raise ValueError("must be the service's base address (scheme, host, port and at most a path prefix), "
                             f"not a page: links are made by adding /track/<code> to it; got {value[:100]!r}")
        # "https://phananh.example.vn/" means the same as without the slash; links must not get "//".
        return value.rstrip("/") if path != parts.path else value


# What a citizen may attach to a complaint by email: photos, video and voice notes from
# phones, PDFs and office documents. Not archives or programs, which staff cannot check.
ATTACHMENT_TYPES = (
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif",
    "application/pdf", "text/plain", "video/mp4", "video/quicktime", "video/3gpp",
    "audio/mpeg", "audio/mp4", "audio/aac", "audio/amr", "audio/ogg", "audio/wav",
    "application/msword", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
)


class EmailConfig(_Section):
    enabled: bool = False
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(2525, ge=0, le=65535)
    accept_domains: list[str] = ["feedback.example.gov.vn"]
    from_address: EmailAddress = "phananh@feedback.example.gov.vn"
    relay_host: str = Field("127.0.0.1", min_length=1)
    relay_port: int = Field(25, ge=0, le=65535)
    relay_starttls: bool = False
    relay_username_env: OptionalEnvName = None
    relay_password_env: OptionalEnvName = None
    max_message_bytes: int = Field(10_485_760, ge=1024)
    relay_ca_file: str = ""
    rate_limit_messages: int = Field(30, ge=0)
    rate_limit_window_seconds: float = Field(3600.0, gt=0)
    max_attachments: int = Field(10, ge=0)
    max_attachment_bytes: int = Field(5_242_880, ge=1)
    attachment_types: list[str] = list(ATTACHMENT_TYPES)

    @field_validator("attachment_types")
    @classmethod
    def _media_types(cls, value: list[str]) -> list[str]:
        problems = [(f"[{i}]", f"{kind[:60]!r} is not a lowercase media type such as 'image/jpeg' or 'image/*'")
                    for i, kind in enumerate(value)
                    if not re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)", kind)]
        if problems:
            raise _Problems(problems)
        return value

    @field_validator("relay_ca_file")
    @classmethod
    def _ca_file(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"no file {value[:200]!r} (a PEM file of the certificate authorities to trust, "
                             "or \"\" for the system's)")
        return value

    @field_validator("accept_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one domain; with none, every message would be refused")
        problems: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        for i, domain in enumerate(value):
            if domain != domain.lower():
                problems.append((f"[{i}]", f"must be lowercase: write {domain.lower()!r}"))
            elif not re.fullmatch(r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
                                  r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*", domain):
                problems.append((f"[{i}]", f"{domain[:80]!r} is not a domain name (write only what follows the @; "
                                           "an internationalised name in its xn-- form)"))
            elif domain in seen:
                problems.append((f"[{i}]", f"{domain!r} is already listed as accept_domains[{seen[domain]}]"))
            seen.setdefault(domain, i)
        if problems:
            raise _Problems(problems)
        return value

    @model_validator(mode="after")
    def _relay_login(self) -> EmailConfig:
        problems: list[tuple[str, str]] = []
        if bool(self.relay_username_env) != bool(self.relay_password_env):
            missing = "relay_password_env" if self.relay_username_env else "relay_username_env"
            problems.append((missing, "relay_username_env and relay_password_env go together: set both or neither"))
        domain = self.from_address.rpartition("@")[2].lower()
        if self.enabled and domain not in self.accept_domains:
            # Citizens answer the address our mail comes from; their replies must reach this server.
            problems.append(("from_address", f"must be at one of accept_domains, so that citizens' replies come "
                                             f"back to this server; {domain!r} is not listed"))
        if problems:
            raise _Problems(problems)
        return self


class SmsGatewayConfig(_Section):
    name: Slug
    kind: Literal["twilio", "android", "generic"]
    number: str = ""
    api_url: str = ""
    secret_env: EnvName
    account_sid: str = ""
    # Android only: the app's API login (Basic auth). The webhook signing key stays in secret_env.
    username: str = ""
    password_env: OptionalEnvName = None

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if value:
            _http_url(value, query=True)
        return value

    @field_validator("number")
    @classmethod
    def _sender(cls, value: str) -> str:
        # An E.164 number, or an alphanumeric sender id ("brandname"), which networks cap at 11 characters.
        if value and not (re.fullmatch(r"\+[1-9]\d{6,14}", value)
                          or re.fullmatch(r"(?=.*[A-Za-z])[A-Za-z0-9 .-]{1,11}", value)):
            raise ValueError("must be an E.164 number such as '+84912345678' or a sender name of up to "
                             f"11 letters and digits, got {value[:30]!r}")
        return value

    @model_validator(mode="after")
    def _kind_needs(self) -> SmsGatewayConfig:
        problems: list[tuple[str, str]] = []
        if self.kind == "twilio":
            if not self.account_sid:
                problems.append(("account_sid", "required for a Twilio gateway (the AC... id on the Twilio console)"))
            elif not re.fullmatch(r"AC[0-9A-Za-z]{32}", self.account_sid):
                problems.append(("account_sid", "must be the 34-character Account SID that starts with 'AC' "
                                                "(the auth token goes in the environment variable named by secret_env)"))
            if not self.number:
                problems.append(("number", "required for a Twilio gateway: the number (or sender name) messages come from"))
        else:
            if not self.api_url:
                problems.append(("api_url", f"required for kind {self.kind!r}: where the service sends messages"))
            if self.account_sid:
                problems.append(("account_sid", "only used by kind 'twilio'"))
        if self.kind != "android":
            for key in ("username", "password_env"):
                if getattr(self, key):
                    problems.append((key, "only used by kind 'android' (the app's API login)"))
        elif self.username and not re.fullmatch(r"[^\s:]{1,128}", self.username):
            # Basic auth puts "user:password" in one header: a colon or a space would split it wrongly.
            problems.append(("username", "must be the app's user name, without spaces or ':'"))
        if problems:
            raise _Problems(problems)
        return self

    @property
    def base_url(self) -> str:
        """The gateway's API base URL, with Twilio's public API when api_url is empty."""
        return self.api_url or (TWILIO_API_URL if self.kind == "twilio" else "")

    @property
    def api_username(self) -> str:
        """The Android app's API user name: "sms" (the app's own default) when not set."""
        return self.username or "sms"

    @property
    def api_password_env(self) -> str:
        """Where the Android app's API password is: password_env, else the signing key's variable."""
        return self.password_env or self.secret_env


class SmsConfig(_Section):
    gateways: list[SmsGatewayConfig] = []
    followup_window_hours: float = Field(72.0, ge=0)
    ascii_only: bool = False
    # Outgoing texts longer than this many SMS parts are shortened, ending with the status link.
    max_segments: int = Field(4, ge=1, le=10)
    # Webhook bodies above this are refused: a 10-part SMS is far below it, a flood is not.
    max_body_bytes: int = Field(8192, ge=1024, le=65536)
    # How far a signed webhook's timestamp (Android's X-Timestamp) may be from our clock.
    signature_max_age_seconds: int = Field(300, ge=10, le=3600)


class TelegramConfig(_Section):
    enabled: bool = False
    token_env: EnvName = "TELEGRAM_BOT_TOKEN"
    mode: Literal["polling", "webhook"] = "polling"
    api_base_url: str = "https://api.telegram.org/bot"
    webhook_secret_env: OptionalEnvName = None

    @field_validator("api_base_url")
    @classmethod
    def _bot_api(cls, value: str) -> str:
        parts = _http_url(value)
        # python-telegram-bot appends the token to this URL (or fills in "{token}").
        if not (parts.path.endswith("/bot") or "{token}" in value):
            raise ValueError("must end in /bot (the token is appended to it) or contain {token}, "
                             f"e.g. 'https://api.telegram.org/bot'; got {value[:100]!r}")
        return value


class UnitConfig(_Section):
    slug: Slug
    name: str = Field(min_length=1)
    name_en: str = ""


class StaffConfig(_Section):
    slug: Slug
    name: str = Field(min_length=1)
    unit: Slug
    role: Literal["agent", "head", "admin"] = "agent"
    telegram_chat_id: int | None = None
    email: Annotated[EmailAddress | None, BeforeValidator(_empty_is_none)] = None


class CategoryConfig(_Section):
    slug: Slug
    name: str = Field(min_length=1)
    name_en: str = ""


class RoutingRuleConfig(_Section):
    unit: Slug
    keywords: list[str] = []
    areas: list[str] = []
    categories: list[Slug] = []
    channels: list[str] = []

    @model_validator(mode="after")
    def _conditions(self) -> RoutingRuleConfig:
        problems: list[tuple[str, str]] = []
        if not (self.keywords or self.areas or self.categories or self.channels):
            problems.append(("", "a rule needs keywords, areas, categories or channels; one with none never "
                                 "matches (complaints no rule takes go to routing.default_unit)"))
        for key in ("keywords", "areas"):
            for i, word in enumerate(getattr(self, key)):
                # Matching folds text to letters and digits; anything else can never match.
                if not re.search(r"[^\W_]", word):
                    problems.append((f"{key}[{i}]", f"{word[:30]!r} has no letters or digits, so it never matches"))
        for i, channel in enumerate(self.channels):
            if channel not in CHANNELS:
                problems.append((f"channels[{i}]", f"unknown channel {channel[:30]!r}; one of {', '.join(CHANNELS)}"))
        if problems:
            raise _Problems(problems)
        return self


class RoutingConfig(_Section):
    default_unit: Slug = "tiep-nhan"
    rules: list[RoutingRuleConfig] = []


def _minutes(text: str) -> int | None:
    hours, minutes = int(text[:2]), int(text[3:])
    return hours * 60 + minutes if hours < 24 and minutes < 60 else None


class DeadlineOverrideConfig(_Section):
    unit: Slug | None = None
    category: Slug | None = None
    first_response_hours: float | None = Field(None, gt=0)
    resolution_hours: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _says_something(self) -> DeadlineOverrideConfig:
        problems: list[tuple[str, str]] = []
        if self.unit is None and self.category is None:
            problems.append(("", "an override needs a unit, a category or both (the defaults cover everything else)"))
        if self.first_response_hours is None and self.resolution_hours is None:
            problems.append(("", "an override needs first_response_hours, resolution_hours or both"))
        if problems:
            raise _Problems(problems)
        return self


class DeadlinesConfig(_Section):
    first_response_hours: float = Field(16.0, gt=0)
    resolution_hours: float = Field(80.0, gt=0)
    remind_before_hours: float = Field(2.0, ge=0)
    extension_hours: float = Field(8.0, gt=0)
    working_hours: list[str] = ["08:00-12:00", "13:00-17:00"]
    working_days: list[Annotated[int, Field(ge=1, le=7)]] = [1, 2, 3, 4, 5]
    holidays_country: Annotated[str | None, BeforeValidator(_empty_is_none)] = "VN"
    extra_days_off: list[IsoDate] = []
    extra_working_days: list[IsoDate] = []
    overrides: list[DeadlineOverrideConfig] = []

    @field_validator("working_hours")
    @classmethod
    def _intervals(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one interval such as '08:00-12:00'")
        problems: list[tuple[str, str]] = []
        spans: list[tuple[int, int, int]] = []
        for i, interval in enumerate(value):
            match = re.fullmatch(r"(\d\d:\d\d)-(\d\d:\d\d)", interval)
            start, end = (_minutes(match[1]), _minutes(match[2])) if match else (None, None)
            if start is None or end is None:
                problems.append((f"[{i}]", f"{interval[:30]!r} is not of the form HH:MM-HH:MM (00:00 to 23:59)"))
            elif start >= end:
                problems.append((f"[{i}]", f"{interval!r} must end after it starts"))
            else:
                spans.append((start, end, i))
        spans.sort()
        for (_, end, i), (start, _, j) in zip(spans, spans[1:]):
            if start < end:
                problems.append((f"[{j}]", f"{value[j]!r} overlaps {value[i]!r}"))
        if problems:
            raise _Problems(problems)
        return value

    @field_validator("working_days")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("lists a weekday twice")
        return value

    @field_validator("holidays_country")
    @classmethod
    def _holidays(cls, value: str | None) -> str | None:
        if value is not None and value not in holidays.list_supported_countries():
            raise ValueError(f"{value[:20]!r} is not a country code the holidays package knows (e.g. 'VN'); "
                             "write \"\" for no public holidays")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeadlinesConfig:
        problems: list[tuple[str, str]] = []
        if not self.working_days and not self.extra_working_days:
            problems.append(("working_days", "is empty and there are no extra_working_days: deadlines would never fall"))
        if self.resolution_hours < self.first_response_hours:
            problems.append(("resolution_hours", f"({self.resolution_hours:g}) must not be shorter than "
                                                 f"first_response_hours ({self.first_response_hours:g})"))
        both = sorted(set(self.extra_days_off) & set(self.extra_working_days))
        for day in both:
            problems.append(("extra_working_days", f"{day.isoformat()} is also in extra_days_off"))
        seen: dict[tuple, int] = {}
        for i, override in enumerate(self.overrides):
            first = override.first_response_hours or self.first_response_hours
            resolution = override.resolution_hours or self.resolution_hours
            if resolution < first:
                problems.append((f"overrides[{i}].resolution_hours", f"({resolution:g}, with defaults filled in) must not "
                                                                     f"be shorter than first_response_hours ({first:g})"))
            scope = (override.unit, override.category)
            if scope in seen:
                problems.append((f"overrides[{i}]", f"covers the same unit and category as overrides[{seen[scope]}]"))
            seen.setdefault(scope, i)
        if problems:
            raise _Problems(problems)
        return self


class Open311Config(_Section):
    enabled: bool = False
    api_keys_env: EnvName = "OPEN311_API_KEYS"
    jurisdiction_id: str = Field("feedback.example.gov.vn", min_length=1)


class SchedulerConfig(_Section):
    sweep_seconds: float = Field(60.0, gt=0)


class OutboxConfig(_Section):
    poll_seconds: float = Field(2.0, gt=0)
    batch_size: int = Field(20, ge=1)
    max_attempts: int = Field(8, ge=1)
    backoff_base_seconds: float = Field(30.0, gt=0)
    backoff_max_seconds: float = Field(3600.0, gt=0)
    send_timeout_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _backoff(self) -> OutboxConfig:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise _Problems([("backoff_max_seconds", f"({self.backoff_max_seconds:g}) must not be less than "
                                                     f"backoff_base_seconds ({self.backoff_base_seconds:g})")])
        return self


_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_CRON_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
                ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
                ("day of week", 0, 7, {d: i for i, d in enumerate(_WEEKDAYS)}))


def _cron_problem(expression: str) -> str | None:
    """What is wrong with a standard five-field crontab expression, or None."""
    fields = expression.split()
    if len(fields) != 5:
        return "must have five fields: minute hour day-of-month month day-of-week (e.g. '0 8 * * 1-5')"
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        for part in text.split(","):
            match = re.fullmatch(r"(\*|\w+(?:-\w+)?)(?:/(\d+))?", part)
            if not match or (match[2] is not None and int(match[2]) == 0):
                return f"{name} field {text!r} is not valid crontab syntax"
            if match[1] == "*":
                continue
            bounds = []
            for bound in match[1].split("-"):
                number = names.get(bound.lower(), int(bound) if bound.isdigit() else None)
                if number is None or not low <= number <= high:
                    return f"{name} {bound!r} is outside {low}-{high}"
                bounds.append(number)
            if bounds != sorted(bounds):
                return f"{name} range {match[1]!r} runs backwards"
    return None


class DigestsConfig(_Section):
    # Names, not numbers, for the days: they read the same in every cron dialect.
    schedule: str = "0 8 * * mon-fri"
    weekly_schedule: str = "0 8 * * mon"  # "" turns the weekly digest off
    channels: list[Literal["telegram", "email"]] = ["telegram", "email"]

    @field_validator("schedule")
    @classmethod
    def _crontab(cls, value: str) -> str:
        problem = _cron_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("weekly_schedule")
    @classmethod
    def _weekly_crontab(cls, value: str) -> str:
        return value and cls._crontab(value)

    @field_validator("channels")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a channel twice")
        return value


class SatisfactionConfig(_Section):
    survey_window_days: float = Field(7.0, gt=0)
    reopen_on_low_rating: bool = True


def _default_units() -> list[UnitConfig]:
    return [UnitConfig(slug="tiep-nhan", name="Bộ phận tiếp nhận", name_en="Reception desk")]


def _default_categories() -> list[CategoryConfig]:
    return [
        CategoryConfig(slug="moi-truong", name="Môi trường, vệ sinh", name_en="Environment, sanitation"),
        CategoryConfig(slug="giao-thong", name="Giao thông, đường sá", name_en="Traffic, roads"),
        CategoryConfig(slug="dien-nuoc", name="Điện, nước", name_en="Electricity, water"),
        CategoryConfig(slug="trat-tu", name="Trật tự đô thị", name_en="Public order"),
        CategoryConfig(slug="thu-tuc", name="Thủ tục hành chính", name_en="Administrative procedures"),
        CategoryConfig(slug="khac", name="Khác", name_en="Other"),
    ]


def _duplicates(values: list, key: str, what: str) -> list[tuple[str, str]]:
    first: dict = {}
    problems = []
    for i, value in enumerate(values):
        if value is None:
            continue
        if value in first:
            problems.append((key.format(i), f"{what} {value!r} is already used by {key.format(first[value]).rsplit('.', 1)[0]}"))
        first.setdefault(value, i)
    return problems


class Config(_Section):
    """The whole configuration; every section has defaults."""

    service: ServiceConfig = ServiceConfig()
    storage: StorageConfig = StorageConfig()
    web: WebConfig = WebConfig()
    email: EmailConfig = EmailConfig()
    sms: SmsConfig = SmsConfig()
    telegram: TelegramConfig = TelegramConfig()
    units: list[UnitConfig] = Field(default_factory=_default_units)
    staff: list[StaffConfig] = []
    categories: list[CategoryConfig] = Field(default_factory=_default_categories)
    routing: RoutingConfig = RoutingConfig()
    deadlines: DeadlinesConfig = DeadlinesConfig()
    open311: Open311Config = Open311Config()
    scheduler: SchedulerConfig = SchedulerConfig()
    outbox: OutboxConfig = OutboxConfig()
    digests: DigestsConfig = DigestsConfig()
    satisfaction: SatisfactionConfig = SatisfactionConfig()

    @model_validator(mode="after")
    def _references(self) -> Config:
        units = {u.slug for u in self.units}
        categories = {c.slug for c in self.categories}
        problems = _duplicates([u.slug for u in self.units], "units[{}].slug", "unit")
        problems += _duplicates([c.slug for c in self.categories], "categories[{}].slug", "category")
        problems += _duplicates([m.slug for m in self.staff], "staff[{}].slug", "staff slug")
        # One chat, one officer: the bot tells who gives a command by the chat it comes from.
        problems += _duplicates([m.telegram_chat_id for m in self.staff], "staff[{}].telegram_chat_id", "chat id")
        problems += _duplicates([g.name for g in self.sms.gateways], "sms.gateways[{}].name", "gateway name")
        if self.routing.default_unit not in units:
            problems.append(("routing.default_unit", f"no unit {self.routing.default_unit!r} in [[units]]"))
        for i, member in enumerate(self.staff):
            if member.unit not in units:
                problems.append((f"staff[{i}].unit", f"no unit {member.unit!r} in [[units]]"))
        for i, rule in enumerate(self.routing.rules):
            if rule.unit not in units:
                problems.append((f"routing.rules[{i}].unit", f"no unit {rule.unit!r} in [[units]]"))
            for j, category in enumerate(rule.categories):
                if category not in categories:
                    problems.append((f"routing.rules[{i}].categories[{j}]", f"no category {category!r} in [[categories]]"))
        for i, override in enumerate(self.deadlines.overrides):
            if override.unit is not None and override.unit not in units:
                problems.append((f"deadlines.overrides[{i}].unit", f"no unit {override.unit!r} in [[units]]"))
            if override.category is not None and override.category not in categories:
                problems.append((f"deadlines.overrides[{i}].category", f"no category {override.category!r} in [[categories]]"))
        problems += self._telegram_problems()
        if self.email.enabled and self.email.port and self.email.port == self.web.port and \
                self.email.host == self.web.host:
            problems.append(("email.port", f"{self.email.port} is also web.port on the same host"))
        if problems:
            raise _Problems(problems)
        return self

    def _telegram_problems(self) -> list[tuple[str, str]]:
        telegram = self.telegram
        if not (telegram.enabled and telegram.mode == "webhook"):
            return []
        problems = []
        if not telegram.webhook_secret_env:
            # Without it anyone who guesses the URL can post fake updates as any citizen or officer.
            problems.append(("telegram.webhook_secret_env", "required when telegram.mode is 'webhook'"))
        if urlsplit(telegram.api_base_url).hostname == "api.telegram.org":
            public = urlsplit(self.web.public_url)
            port = public.port or (443 if public.scheme == "https" else 80)
            if public.scheme != "https" or port not in TELEGRAM_WEBHOOK_PORTS:
                problems.append(("web.public_url", "Telegram delivers webhooks only to https:// on port "
                                                   f"{', '.join(map(str, TELEGRAM_WEBHOOK_PORTS))}; "
                                                   "use telegram.mode = 'polling' otherwise"))
        return problems

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The service's time zone, for showing times and for working hours."""
        return zoneinfo.ZoneInfo(self.service.timezone)

    def unit(self, slug: str) -> UnitConfig | None:
        """The configured unit with this slug, if any."""
        return next((u for u in self.units if u.slug == slug), None)

    def category(self, slug: str) -> CategoryConfig | None:
        """The configured complaint category with this slug, if any."""
        return next((c for c in self.categories if c.slug == slug), None)


# ---------------------------------------------------------------------------- errors

class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` names each bad key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, directly or as list items; None for plain values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        model = _item_model(arg)
        if model is not None:
            return model
    return None


def _is_list_of_tables(model: type[BaseModel] | None, key: str) -> bool:
    if model is None or key not in model.model_fields:
        return False
    annotation = model.model_fields[key].annotation
    return typing.get_origin(annotation) is list and _item_model(annotation) is not None


def _locate(loc: tuple) -> tuple[str, type[BaseModel] | None, type[BaseModel] | None]:
    """The key path for a pydantic error location, the model at it, and the model holding its last key."""
    model: type[BaseModel] | None = Config
    parent: type[BaseModel] | None = None
    path = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif model is not None and part in model.model_fields:
            path = _join(path, part)
            parent, model = model, _item_model(model.model_fields[part].annotation)
        elif model is not None and index == len(loc) - 1:
            path = _join(path, str(part))  # an unknown key
            parent, model = model, None
        # else: a tag pydantic adds inside a type (a union member, a validator); not a key
    return path, model, parent


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems_for(detail: Mapping) -> list[str]:
    path, _, parent = _locate(tuple(detail["loc"]))
    key = path.rsplit(".", 1)[-1]
    kind = detail["type"]
    error = (detail.get("ctx") or {}).get("error")
    if isinstance(error, _Problems):
        return [f"{_join(path, sub)}: {message}" if _join(path, sub) else message for sub, message in error.problems]
    if kind in ("value_error", "assertion_error"):
        message = str(error) if error is not None else detail["msg"]
    elif kind == "extra_forbidden":
        message = "unknown key"
        if parent is not None:
            close = difflib.get_close_matches(key, list(parent.model_fields), n=1, cutoff=0.6)
            if close:
                message += f" (did you mean {close[0]!r}?)"
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"must be a table, got {_show(detail['input'])}"
    elif kind == "list_type" and _is_list_of_tables(parent, re.sub(r"\[\d+\]$", "", key)):
        message = f"must be a list of tables: write [[{path}]] once for each entry"
    else:
        message = detail["msg"].replace("Input should be", "must be", 1).replace("String should", "must", 1)
        message = message.replace("List should", "must", 1).replace("Value should", "must", 1)
        if not key.endswith("_env"):  # never echo what may be a secret pasted in the wrong place
            message += f" (got {_show(detail['input'])})"
    return [f"{path}: {message}" if path else message]


def _validation_problems(error: ValidationError) -> list[str]:
    problems: list[str] = []
    for detail in error.errors():
        for problem in _problems_for(detail):
            if problem not in problems:
                problems.append(problem)
    return problems


# ---------------------------------------------------------------------------- secrets

def _secret_problems(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Every secret a feature needs must be in the environment when the feature is on."""
    needed: list[tuple[str, str | None]] = [("web.csrf_secret_env", config.web.csrf_secret_env)]
    for i, gateway in enumerate(config.sms.gateways):
        needed.append((f"sms.gateways[{i}].secret_env", gateway.secret_env))
        needed.append((f"sms.gateways[{i}].password_env", gateway.password_env))
    if config.email.enabled:
        needed.append(("email.relay_username_env", config.email.relay_username_env))
        needed.append(("email.relay_password_env", config.email.relay_password_env))
    if config.telegram.enabled:
        needed.append(("telegram.token_env", config.telegram.token_env))
        if config.telegram.mode == "webhook":
            needed.append(("telegram.webhook_secret_env", config.telegram.webhook_secret_env))
    if config.open311.enabled:
        needed.append(("open311.api_keys_env", config.open311.api_keys_env))
    problems = [f"{key}: environment variable {name} is not set" for key, name in needed
                if name and not environ.get(name)]

    # Values are never echoed: they are the secrets.
    webhook_secret = secret(config.telegram.webhook_secret_env, environ)
    if config.telegram.enabled and config.telegram.mode == "webhook" and webhook_secret and \
            not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", webhook_secret):
        problems.append(f"telegram.webhook_secret_env: the value of {config.telegram.webhook_secret_env} must be "
                        "1-256 characters A-Z, a-z, 0-9, '_' and '-' (Telegram's rule for a webhook secret token)")
    if config.open311.enabled and environ.get(config.open311.api_keys_env) and not _api_keys(
            environ[config.open311.api_keys_env]):
        problems.append(f"open311.api_keys_env: environment variable {config.open311.api_keys_env} "
                        "holds no keys (expected comma-separated keys)")
    return problems


def _api_keys(value: str) -> list[str]:
    return [key.strip() for key in value.split(",") if key.strip()]


def parse_config(data: Mapping, environ: Mapping[str, str] | None = None) -> Config:
    """Validate already-parsed TOML data; raise ConfigError naming every bad key."""
    environ = os.environ if environ is None else environ
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_validation_problems(error)) from None
    problems = _secret_problems(config, environ)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the configuration file, or the built-in defaults when path is None."""
    if path is None:
        return parse_config({}, environ)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # Notepad writes a BOM
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 text (byte {error.start}); save the file as UTF-8"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None
    return parse_config(data, environ)


def secret(name: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of the secret held in the environment variable ``name``."""
    if not name:
        return None
    return (os.environ if environ is None else environ).get(name) or None


def secret_values(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """All secret values the configuration names, so logs can redact them."""
    names = [config.web.csrf_secret_env, config.email.relay_password_env, config.email.relay_username_env,
             config.telegram.token_env, config.telegram.webhook_secret_env]
    names += [g.secret_env for g in config.sms.gateways]
    names += [g.password_env for g in config.sms.gateways if g.password_env]
    values = [value for value in (secret(name, environ) for name in names) if value]
    keys = secret(config.open311.api_keys_env, environ)
    if keys:
        values += _api_keys(keys)
    # A password written into the database URL is a secret too, wherever the URL gets logged.
    try:
        password = urlsplit(config.storage.url).password
    except ValueError:
        password = None
    if password:
        values.append(password)
    return values
