"""The email channel's section of the configuration, ``[email]``: the SMTP server that
takes citizens' mail, and the relay that carries our answers."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from contract.schema import EmailAddress, OptionalEnvName, Problems, Section

# What a citizen may attach to a complaint by email: photos, video and voice notes from
# phones, PDFs and office documents. Not archives or programs, which staff cannot check.
ATTACHMENT_TYPES = (
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif",
    "application/pdf", "text/plain", "video/mp4", "video/quicktime", "video/3gpp",
    "audio/mpeg", "audio/mp4", "audio/aac", "audio/amr", "audio/ogg", "audio/wav",
    "application/msword", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
)


class EmailConfig(Section):
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
    client_rate_limit_messages: int = Field(60, ge=0)
    client_rate_limit_window_seconds: float = Field(600.0, gt=0)
    session_timeout_seconds: float = Field(300.0, gt=0)
    max_sessions: int = Field(100, ge=1)
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
            raise Problems(problems)
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
            raise Problems(problems)
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
            raise Problems(problems)
        return self

    def secrets_needed(self) -> list[tuple[str, str | None]]:
        """The relay login's variables, when the channel is on."""
        if not self.enabled:
            return []
        return [("relay_username_env", self.relay_username_env), ("relay_password_env", self.relay_password_env)]
