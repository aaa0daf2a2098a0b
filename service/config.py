"""The whole configuration: the domain's settings and every channel's section, loaded
once from TOML and checked before anything starts.

Every key has a default equal to ``config.example.toml``, so ``feedback-intake serve``
runs with no file at all. Unknown keys, wrong types, bad references and missing secrets
are errors that name the key (``sms.gateways[0].secret_env: environment variable X is
not set``), as many as can be found in one pass, so an operator fixes a file at once.
Each part owns its sections' schema (``bot/settings.py``, ``channels/*/config.py``);
this module puts them together, checks what ties sections of different parts, and asks
each section which secrets it needs. Secrets never live in the file: the file names the
environment variable that holds them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from bot.settings import Settings, duplicates
from channels.desk.config import DeskConfig
from channels.email.config import EmailConfig
from channels.sms.config import SmsConfig
from channels.telegram.config import WEBHOOK_PORTS, TelegramConfig
from channels.web.config import Open311Config, WebConfig
from channels.zalo.config import ZaloConfig
from contract.schema import Problems, Section, api_keys, join_key, secret
from service.config_errors import ConfigError, validation_problems

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "secret", "secret_values"]


class StorageConfig(Section):
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


class SchedulerConfig(Section):
    sweep_seconds: float = Field(60.0, gt=0)


class Config(Settings):
    """The whole configuration: the domain's settings, the store, the scheduler, the channels."""

    storage: StorageConfig = StorageConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    web: WebConfig = WebConfig()
    email: EmailConfig = EmailConfig()
    sms: SmsConfig = SmsConfig()
    telegram: TelegramConfig = TelegramConfig()
    open311: Open311Config = Open311Config()
    zalo: ZaloConfig = ZaloConfig()
    desk: DeskConfig = DeskConfig()

    @model_validator(mode="after")
    def _references(self) -> Config:  # replaces Settings' check: all problems in one pass
        problems = self.reference_problems()
        problems += duplicates([g.name for g in self.sms.gateways], "sms.gateways[{}].name", "gateway name")
        problems += self._telegram_problems()
        if self.email.enabled and self.email.port and self.email.port == self.web.port and \
                self.email.host == self.web.host:
            problems.append(("email.port", f"{self.email.port} is also web.port on the same host"))
        if problems:
            raise Problems(problems)
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
            if public.scheme != "https" or port not in WEBHOOK_PORTS:
                problems.append(("web.public_url", "Telegram delivers webhooks only to https:// on port "
                                                   f"{', '.join(map(str, WEBHOOK_PORTS))}; "
                                                   "use telegram.mode = 'polling' otherwise"))
        return problems

    def secrets_needed(self) -> list[tuple[str, str | None]]:
        """(key, environment variable) of every secret a section that is on needs."""
        needed: list[tuple[str, str | None]] = []
        for name in type(self).model_fields:
            section = getattr(self, name)
            if isinstance(section, Section):
                needed += [(join_key(name, key), variable) for key, variable in section.secrets_needed()]
        return needed


def _secret_problems(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Every secret a feature needs must be in the environment when the feature is on."""
    problems = [f"{key}: environment variable {name} is not set" for key, name in config.secrets_needed()
                if name and not environ.get(name)]
    # Values are never echoed: they are the secrets.
    webhook_secret = secret(config.telegram.webhook_secret_env, environ)
    if config.telegram.enabled and config.telegram.mode == "webhook" and webhook_secret and \
            not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", webhook_secret):
        problems.append(f"telegram.webhook_secret_env: the value of {config.telegram.webhook_secret_env} must be "
                        "1-256 characters A-Z, a-z, 0-9, '_' and '-' (Telegram's rule for a webhook secret token)")
    if config.open311.enabled and environ.get(config.open311.api_keys_env) and not api_keys(
            environ[config.open311.api_keys_env]):
        problems.append(f"open311.api_keys_env: environment variable {config.open311.api_keys_env} "
                        "holds no keys (expected comma-separated keys)")
    return problems


def parse_config(data: Mapping, environ: Mapping[str, str] | None = None) -> Config:
    """Validate already-parsed TOML data; raise ConfigError naming every bad key."""
    environ = os.environ if environ is None else environ
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(validation_problems(Config, error)) from None
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


def secret_values(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """All secret values the configuration names, so logs can redact them."""
    names = [name for _, name in config.secrets_needed()]
    # Variables of sections that are off are redacted too: a value may still reach a log.
    names += [config.telegram.token_env, config.telegram.webhook_secret_env, config.email.relay_username_env,
              config.email.relay_password_env, config.zalo.oa_secret_env, config.zalo.app_secret_env]
    values = [value for value in dict.fromkeys(secret(name, environ) for name in names if name) if value]
    values += api_keys(secret(config.open311.api_keys_env, environ))
    # A password written into the database URL is a secret too, wherever the URL gets logged.
    try:
        password = urlsplit(config.storage.url).password
    except ValueError:
        password = None
    if password:
        values.append(password)
    return values
