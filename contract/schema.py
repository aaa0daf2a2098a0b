"""Building blocks of the configuration, shared by every section wherever it lives.

Each part of the service owns the schema of its own section (the domain's in
``bot/settings.py``, each channel's in its package); the wiring puts them together. What
they share is here: a strict, frozen section (TOML has real types, so ``port = "8080"``
is a mistake to report, not a string to guess at), value types that say what is wrong in
words an operator understands, several problems raised at once with the key each is
about, and reading a secret from the environment variable the file names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit

import email_validator
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict


class Problems(ValueError):
    """Several problems found by one validator, each as (key relative to the model, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{key}: {message}" if key else message for key, message in problems))


def join_key(path: str, key: str) -> str:
    """A key path with one more key (``a.b`` + ``c``) or index (``a.b`` + ``[0]``)."""
    if not key:
        return path
    if not path or key.startswith("["):
        return path + key
    return f"{path}.{key}"


class Section(BaseModel):
    """A table of the configuration: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def secrets_needed(self) -> list[tuple[str, str | None]]:
        """(key, environment variable) of each secret this section needs as configured."""
        return []


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


def empty_is_none(value: Any) -> Any:
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
OptionalEnvName = Annotated[EnvName | None, BeforeValidator(empty_is_none)]
EmailAddress = Annotated[str, AfterValidator(_email_address)]
OptionalEmailAddress = Annotated[EmailAddress | None, BeforeValidator(empty_is_none)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]


def http_url(value: str, *, query: bool = False) -> SplitResult:
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


def secret(name: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of the secret held in the environment variable ``name``."""
    if not name:
        return None
    return (os.environ if environ is None else environ).get(name) or None


def api_keys(value: str | None) -> list[str]:
    """The keys of a comma-separated list held in one variable."""
    return [key.strip() for key in (value or "").split(",") if key.strip()]
