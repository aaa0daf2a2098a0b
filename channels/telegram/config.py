"""The Telegram channel's section of the configuration, ``[telegram]``."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from contract.schema import EnvName, OptionalEnvName, Section, http_url

# Telegram delivers webhooks only over HTTPS and only to these ports (Bot API, setWebhook).
WEBHOOK_PORTS = (443, 80, 88, 8443)


class TelegramConfig(Section):
    enabled: bool = False
    token_env: EnvName = "TELEGRAM_BOT_TOKEN"
    mode: Literal["polling", "webhook"] = "polling"
    api_base_url: str = "https://api.telegram.org/bot"
    webhook_secret_env: OptionalEnvName = None

    @field_validator("api_base_url")
    @classmethod
    def _bot_api(cls, value: str) -> str:
        parts = http_url(value)
        # python-telegram-bot appends the token to this URL (or fills in "{token}").
        if not (parts.path.endswith("/bot") or "{token}" in value):
            raise ValueError("must end in /bot (the token is appended to it) or contain {token}, "
                             f"e.g. 'https://api.telegram.org/bot'; got {value[:100]!r}")
        return value

    def secrets_needed(self) -> list[tuple[str, str | None]]:
        """The bot's token and, for webhooks, the secret Telegram sends with each update."""
        if not self.enabled:
            return []
        needed: list[tuple[str, str | None]] = [("token_env", self.token_env)]
        if self.mode == "webhook":
            needed.append(("webhook_secret_env", self.webhook_secret_env))
        return needed
