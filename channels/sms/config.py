"""The SMS channel's section of the configuration, ``[sms]`` with one ``[[sms.gateways]]``
table per gateway (Twilio, SMS Gateway for Android, a generic signed JSON gateway)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from contract.schema import EnvName, OptionalEnvName, Problems, Section, Slug, http_url

TWILIO_API_URL = "https://api.twilio.com"  # what an empty ``api_url`` means for a Twilio gateway


class SmsGatewayConfig(Section):
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
            http_url(value, query=True)
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
            raise Problems(problems)
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


class SmsConfig(Section):
    gateways: list[SmsGatewayConfig] = []
    followup_window_hours: float = Field(72.0, ge=0)
    ascii_only: bool = False
    # Outgoing texts longer than this many SMS parts are shortened, ending with the status link.
    max_segments: int = Field(4, ge=1, le=10)
    # Webhook bodies above this are refused: a 10-part SMS is far below it, a flood is not.
    max_body_bytes: int = Field(8192, ge=1024, le=65536)
    # How far a signed webhook's timestamp (Android's X-Timestamp) may be from our clock.
    signature_max_age_seconds: int = Field(300, ge=10, le=3600)

    def secrets_needed(self) -> list[tuple[str, str | None]]:
        """Each gateway's secret (and the Android app's API password)."""
        needed: list[tuple[str, str | None]] = []
        for i, gateway in enumerate(self.gateways):
            needed.append((f"gateways[{i}].secret_env", gateway.secret_env))
            needed.append((f"gateways[{i}].password_env", gateway.password_env))
        return needed
