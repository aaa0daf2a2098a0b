"""Typed configuration, loaded once from TOML and checked before anything starts.

Every key has a default equal to ``config.example.toml``, so ``feedback-intake serve``
runs with no file at all. Unknown keys, wrong types and missing secrets are errors that
name the key (``sms.gateways[0].secret_env: environment variable X is not set``).
Secrets never live in the file: the file names the environment variable that holds them.
"""

from __future__ import annotations

import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceConfig(_Section):
    name: str = Field("Cổng tiếp nhận phản ánh, kiến nghị", min_length=1)
    name_en: str = "Citizens' Feedback Desk"
    timezone: str = "Asia/Ho_Chi_Minh"
    default_language: Literal["vi", "en"] = "vi"
    tracking_prefix: str = Field("PA", pattern=r"^[A-Z]{1,4}$")
    phone_region: str = Field("VN", pattern=r"^[A-Z]{2}$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
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
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(1_048_576, ge=4096)
    csrf_secret_env: EnvName | None = None
    shutdown_timeout_seconds: float = Field(10.0, ge=0)


class EmailConfig(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(2525, ge=0, le=65535)
    accept_domains: list[str] = ["feedback.example.gov.vn"]
    from_address: str = "phananh@feedback.example.gov.vn"
    relay_host: str = "127.0.0.1"
    relay_port: int = Field(25, ge=0, le=65535)
    relay_starttls: bool = False
    relay_username_env: EnvName | None = None
    relay_password_env: EnvName | None = None
    max_message_bytes: int = Field(10_485_760, ge=1024)


class SmsGatewayConfig(_Section):
    name: Slug
    kind: Literal["twilio", "android", "generic"]
    number: str = ""
    api_url: str = ""
    secret_env: EnvName
    account_sid: str = ""


class SmsConfig(_Section):
    gateways: list[SmsGatewayConfig] = []
    followup_window_hours: float = Field(72.0, ge=0)
    ascii_only: bool = False


class TelegramConfig(_Section):
    enabled: bool = False
    token_env: EnvName = "TELEGRAM_BOT_TOKEN"
    mode: Literal["polling", "webhook"] = "polling"
    api_base_url: str = "https://api.telegram.org/bot"
    webhook_secret_env: EnvName | None = None


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
    email: str | None = None


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


class RoutingConfig(_Section):
    default_unit: Slug = "tiep-nhan"
    rules: list[RoutingRuleConfig] = []


class DeadlinesConfig(_Section):
    first_response_hours: float = Field(16.0, gt=0)
    resolution_hours: float = Field(80.0, gt=0)
    remind_before_hours: float = Field(2.0, ge=0)
    working_hours: list[str] = ["08:00-12:00", "13:00-17:00"]
    working_days: list[Annotated[int, Field(ge=1, le=7)]] = [1, 2, 3, 4, 5]
    holidays_country: str | None = "VN"
    extra_days_off: list[date] = []
    extra_working_days: list[date] = []

    @field_validator("working_hours")
    @classmethod
    def _interval_syntax(cls, value: list[str]) -> list[str]:
        for interval in value:
            if not re.fullmatch(r"\d{2}:\d{2}-\d{2}:\d{2}", interval):
                raise ValueError(f"{interval!r} is not of the form HH:MM-HH:MM")
        return value


class Open311Config(_Section):
    enabled: bool = False
    api_keys_env: EnvName = "OPEN311_API_KEYS"
    jurisdiction_id: str = "feedback.example.gov.vn"


class SchedulerConfig(_Section):
    sweep_seconds: float = Field(60.0, gt=0)


class OutboxConfig(_Section):
    poll_seconds: float = Field(2.0, gt=0)
    batch_size: int = Field(20, ge=1)
    max_attempts: int = Field(8, ge=1)
    backoff_base_seconds: float = Field(30.0, gt=0)
    backoff_max_seconds: float = Field(3600.0, gt=0)
    send_timeout_seconds: float = Field(30.0, gt=0)


class DigestsConfig(_Section):
    schedule: str = "0 8 * * 1-5"
    channels: list[Literal["telegram", "email"]] = ["telegram", "email"]


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

    @model_validator(mode="after")
    def _references(self) -> Config:
        units = {u.slug for u in self.units}
        problems: list[str] = []
        if len(units) != len(self.units):
            problems.append("units: unit slugs must be unique")
        if self.routing.default_unit not in units:
            problems.append(f"routing.default_unit: no unit {self.routing.default_unit!r} in [[units]]")
        for i, member in enumerate(self.staff):
            if member.unit not in units:
                problems.append(f"staff[{i}].unit: no unit {member.unit!r} in [[units]]")
        if len({m.slug for m in self.staff}) != len(self.staff):
            problems.append("staff: staff slugs must be unique")
        categories = {c.slug for c in self.categories}
        if len(categories) != len(self.categories):
            problems.append("categories: category slugs must be unique")
        for i, rule in enumerate(self.routing.rules):
            if rule.unit not in units:
                problems.append(f"routing.rules[{i}].unit: no unit {rule.unit!r} in [[units]]")
            for category in rule.categories:
                if category not in categories:
                    problems.append(f"routing.rules[{i}].categories: no category {category!r}")
        if len({g.name for g in self.sms.gateways}) != len(self.sms.gateways):
            problems.append("sms.gateways: gateway names must be unique")
        if problems:
            raise ValueError("; ".join(problems))
        return self

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


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` names each bad key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _key_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith("literal"):
            continue
        else:
            path += ("." if path else "") + str(part)
    return path


def _validation_problems(error: ValidationError) -> list[str]:
    problems = []
    for detail in error.errors():
        path = _key_path(detail["loc"])
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            message = "unknown key"
        if path:
            problems.extend(f"{path}: {m}" if not m.startswith(path) else m for m in message.split("; "))
        else:
            problems.extend(message.split("; "))
    return problems


def _secret_problems(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Every secret a feature needs must be in the environment when the feature is on."""
    needed: list[tuple[str, str | None]] = [("web.csrf_secret_env", config.web.csrf_secret_env)]
    for i, gateway in enumerate(config.sms.gateways):
        needed.append((f"sms.gateways[{i}].secret_env", gateway.secret_env))
    if config.email.enabled:
        needed.append(("email.relay_username_env", config.email.relay_username_env))
        needed.append(("email.relay_password_env", config.email.relay_password_env))
    if config.telegram.enabled:
        needed.append(("telegram.token_env", config.telegram.token_env))
        if config.telegram.mode == "webhook":
            needed.append(("telegram.webhook_secret_env", config.telegram.webhook_secret_env))
            if not config.telegram.webhook_secret_env:
                return [f"telegram.webhook_secret_env: required when telegram.mode is 'webhook'"]
    if config.open311.enabled:
        needed.append(("open311.api_keys_env", config.open311.api_keys_env))
    return [
        f"{key}: environment variable {name} is not set"
        for key, name in needed
        if name and not environ.get(name)
    ]


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
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from None
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
             config.telegram.token_env, config.telegram.webhook_secret_env, config.open311.api_keys_env]
    names += [g.secret_env for g in config.sms.gateways]
    values: list[str] = []
    for name in names:
        value = secret(name, environ)
        if value:
            values.extend(v for v in value.split(",") if v) if name == config.open311.api_keys_env else [value]
    return values
