"""The Zalo channel's section of the configuration, ``[zalo]``, with one table per message kind
under ``[zalo.zns_templates]`` (the ZNS template that carries it and how its parameters are filled)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from contract.schema import EnvName, Problems, Section, Slug, http_url

# What a ZNS template's parameters can be filled with, from the message being sent.
TEMPLATE_FIELDS = {
    "code": "the complaint's tracking code",
    "status_url": "the complaint's public status page",
    "text": "the message's text, shortened to the parameter's limit",
    "subject": "the message's subject",
    "service": "the service's name, in the message's language",
    "date": "the day the message is sent (dd/mm/yyyy, service time zone)",
}
# Zalo refuses a consultation reply when the citizen has not interacted for 7 days (-230).
HARD_LIMIT_HOURS = 7 * 24


class ZnsTemplate(Section):
    """One ZNS (ZBS Template Message) template: its id and, for each parameter, what fills it."""

    template_id: str
    # Our field (a key of TEMPLATE_FIELDS) -> the template's parameter name, as approved by Zalo.
    params: dict[str, str] = {}
    # Zalo caps a parameter's value (30 characters for most kinds of parameter); longer values are cut.
    max_length: int = Field(30, ge=1, le=2000)

    @field_validator("template_id")
    @classmethod
    def _template_id(cls, value: str) -> str:
        if not re.fullmatch(r"\d{1,20}", value):
            raise ValueError(f"must be the template's numeric id from the ZBS console, got {value[:30]!r}")
        return value

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, str]) -> dict[str, str]:
        problems = []
        for field, parameter in value.items():
            if field not in TEMPLATE_FIELDS:
                problems.append((field, f"unknown field; one of {', '.join(TEMPLATE_FIELDS)}"))
            elif not re.fullmatch(r"[A-Za-z0-9_]{1,64}", parameter):
                problems.append((field, f"must be the template's parameter name (letters, digits, '_'), "
                                        f"got {parameter[:70]!r}"))
        if not value:
            problems.append(("", "name at least one parameter (Zalo refuses an empty template_data)"))
        if problems:
            raise Problems(problems)
        return value


class ZaloConfig(Section):
    enabled: bool = False
    app_id: str = ""
    oa_id: str = ""
    # The OA secret key of the webhook page: signs what Zalo posts to us.
    oa_secret_env: EnvName = "ZALO_OA_SECRET"
    # The app's secret key: authenticates our token refreshes.
    app_secret_env: EnvName = "ZALO_APP_SECRET"
    api_base_url: str = "https://openapi.zalo.me"
    oauth_base_url: str = "https://oauth.zaloapp.com"
    zns_base_url: str = "https://business.openapi.zalo.me"
    # Consultation replies are free for window_hours after the citizen's last interaction; 0:
    # no limit on their number (Zalo's rule since 2026-01-01; it was 8).
    free_replies: int = Field(0, ge=0, le=1000)
    window_hours: float = Field(48.0, gt=0, le=HARD_LIMIT_HOURS)
    # Zalo retries a delivery for up to about two hours with the same body (and timestamp).
    signature_max_age_seconds: int = Field(7200, ge=60, le=86400)
    # A photo or file is copied into the store if it comes within this time; else its Zalo
    # link is kept. Zalo wants the webhook's answer within about 2 s.
    download_timeout_seconds: float = Field(1.0, gt=0, le=1.5)
    max_download_bytes: int = Field(5 * 1024 * 1024, ge=0, le=50 * 1024 * 1024)
    max_body_bytes: int = Field(65536, ge=4096, le=1048576)
    zns_templates: dict[Slug, ZnsTemplate] = {}

    @field_validator("api_base_url", "oauth_base_url", "zns_base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        http_url(value)
        return value.rstrip("/")

    @model_validator(mode="after")
    def _ids(self) -> ZaloConfig:
        problems = []
        for key in ("app_id", "oa_id"):
            value = getattr(self, key)
            if self.enabled and not value:
                problems.append((key, "required when zalo.enabled is true (from the Zalo for Developers console)"))
            elif value and not re.fullmatch(r"\d{1,24}", value):
                problems.append((key, f"must be Zalo's numeric id, got {value[:30]!r}"))
        if problems:
            raise Problems(problems)
        return self

    def secrets_needed(self) -> list[tuple[str, str | None]]:
        """The OA secret key (webhook signatures) and the app secret (token refresh)."""
        if not self.enabled:
            return []
        return [("oa_secret_env", self.oa_secret_env), ("app_secret_env", self.app_secret_env)]
