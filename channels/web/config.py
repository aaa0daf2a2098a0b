"""The web channel's sections of the configuration: ``[web]`` (the one HTTP port, the
public address, the form's limits) and ``[open311]`` (GeoReport v2 for partners' apps)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from contract.schema import EnvName, OptionalEnvName, Problems, Section, http_url

# The first path segments the service itself answers: a public_url ending in one of them
# is a page, not the service's base address.
_OWN_ROUTES = {"track", "webhooks", "open311", "api", "healthz", "metrics", "openapi.json", "scorecard", "static",
               "desk"}


class WebConfig(Section):
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
    # The edge (issue 18): slow clients are cut off, open connections are capped.
    header_timeout_seconds: float = Field(15.0, gt=0)
    body_timeout_seconds: float = Field(60.0, gt=0)
    max_connections: int = Field(500, ge=1)
    # Flood control of the complaint form: posts per client address and per browser session
    # in a window (0: no limit); X-Forwarded-For is believed only from trusted_proxies.
    form_limit_per_client: int = Field(30, ge=0)
    form_limit_per_session: int = Field(10, ge=0)
    form_limit_window_seconds: float = Field(600.0, ge=1)
    trusted_proxies: list[str] = []
    # Who may read /metrics: addresses or networks, and/or a bearer token; neither: everyone.
    metrics_allow: list[str] = []
    metrics_token_env: OptionalEnvName = None

    @field_validator("trusted_proxies", "metrics_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        problems = []
        for index, item in enumerate(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                problems.append((f"[{index}]", f"{item[:60]!r} is not an IP address or network (e.g. '10.0.0.5' "
                                               "or '10.0.0.0/8')"))
        if problems:
            raise Problems(problems)
        return value

    @field_validator("public_url")
    @classmethod
    def _base_address(cls, value: str) -> str:
        parts = http_url(value)
        path = parts.path.rstrip("/")
        last = path.rsplit("/", 1)[-1]
        if last in _OWN_ROUTES or "." in last or "//" in path:
            raise ValueError("must be the service's base address (scheme, host, port and at most a path prefix), "
                             f"not a page: links are made by adding /track/<code> to it; got {value[:100]!r}")
        # "https://phananh.example.vn/" means the same as without the slash; links must not get "//".
        return value.rstrip("/") if path != parts.path else value

    def secrets_needed(self) -> list[tuple[str, str | None]]:
        """The CSRF key's variable, when one is named (else a key is made and kept in the store),
        and the /metrics token's."""
        return [("csrf_secret_env", self.csrf_secret_env), ("metrics_token_env", self.metrics_token_env)]


class Open311Config(Section):
    enabled: bool = False
    api_keys_env: EnvName = "OPEN311_API_KEYS"
    jurisdiction_id: str = Field("feedback.example.gov.vn", min_length=1)
    # Flood control: posted requests per client address in a window (0: no limit).
    limit_per_client: int = Field(60, ge=0)
    limit_window_seconds: float = Field(60.0, ge=1)

    def secrets_needed(self) -> list[tuple[str, str | None]]:
        """The partners' API keys, when Open311 is on."""
        return [("api_keys_env", self.api_keys_env)] if self.enabled else []
