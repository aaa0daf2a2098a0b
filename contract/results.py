"""What the port answers a channel, and the errors it raises.

Plain values, so a channel never holds a database row or a session: the outcome of
intake, a complaint's public status, the look-up of a tracking code (found, malformed or
unknown), an officer as staff commands see them, and a whole case for an officer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Outcome = Literal["created", "followup", "duplicate", "ignored", "rated", "disputed"]


class IntakeError(ValueError):
    """The message cannot be taken as it is (empty, unknown category); says why."""


class StoreUnavailable(RuntimeError):
    """The store cannot take the message just now; the sender should try again later."""


class LifecycleError(ValueError):
    """An action that cannot be done (unknown complaint, officer or unit; wrong state).

    ``key`` names the catalogue text (``staff.<key>``) that says why in the officer's
    language, with ``params``; the message itself is for logs.
    """

    def __init__(self, message: str, key: str | None = None, **params: object):
        super().__init__(message)
        self.key = key
        self.params = params


class NotAllowed(PermissionError):
    """The person may not do this (not staff, or not their unit's complaint)."""


class RatingError(ValueError):
    """A rating that cannot be recorded (out of range, complaint not resolved)."""


@dataclass(frozen=True)
class IntakeResult:
    """What intake did with a message, for the channel's answer to its sender."""

    outcome: Outcome
    tracking_code: str | None  # None when an automated message was recorded on no complaint
    complaint_id: int | None
    language: str
    unit: str
    due: datetime | None


@dataclass(frozen=True)
class PublicFile:
    """A photo or document that came with a public answer: proof of the work done."""

    id: int
    filename: str
    content_type: str


@dataclass(frozen=True)
class PublicReply:
    """An answer the unit made public."""

    at: datetime
    text: str
    files: tuple[PublicFile, ...] = ()


@dataclass(frozen=True)
class PublicStatus:
    """Where a complaint stands, as anyone holding its code may see: no personal data."""

    code: str
    status: str
    unit_slug: str
    unit_name: str
    unit_name_en: str
    category: str | None
    created_at: datetime
    first_response_due: datetime | None
    resolution_due: datetime | None
    replies: tuple[PublicReply, ...]
    updated_at: datetime | None = None
    finished: bool = False  # resolved or closed: answered for good, and open to a rating
    urgency: str = "normal"  # urgent | normal | complex
    # The complaint's own words, when the citizen let them be public, with phone numbers
    # and e-mail addresses taken out; else None.
    description: str | None = None
    # Until when the citizen may say a resolution did not fix it; None when they may not.
    disputable_until: datetime | None = None

    def unit_in(self, language: str) -> str:
        """The unit's name in a language."""
        return self.unit_name_en if language == "en" else self.unit_name


@dataclass(frozen=True)
class Lookup:
    """A tracking code looked up: found, malformed (with why) or well-formed but unknown."""

    code: str | None  # the code in normal form; None when what was given is not a code
    status: PublicStatus | None = None
    error: str | None = None  # what is wrong with a malformed code (English, for logs and APIs)
    explanation: Mapping[str, str] = field(default_factory=dict)  # the same, by language

    @property
    def malformed(self) -> bool:
        """Not a tracking code at all."""
        return self.code is None

    @property
    def unknown(self) -> bool:
        """A well-formed code of no complaint."""
        return self.code is not None and self.status is None

    def problem(self, language: str) -> str:
        """What is wrong with the code, in the citizen's language."""
        return self.explanation.get(language) or self.error or ""


@dataclass(frozen=True)
class Officer:
    """A staff member as commands see them."""

    id: int
    slug: str
    name: str
    role: str  # agent | head | admin
    unit_id: int
    telegram_chat_id: int | None


@dataclass(frozen=True)
class CaseSummary:
    """One line of a work list."""

    code: str
    status: str
    unit_id: int
    first_response_due: datetime | None
    overdue: bool
    summary: str


@dataclass(frozen=True)
class CaseMessage:
    """One message in a case's history."""

    at: datetime
    direction: str  # in | out | note
    channel: str
    text: str
    author: str | None
    attachments: tuple[tuple[int, str, str, int], ...]  # id, filename, content type, size


@dataclass(frozen=True)
class CaseDelivery:
    """What became of one message to the citizen: where it went and how it ended."""

    at: datetime
    kind: str  # acknowledgement, answer, apology, ...
    channel: str
    state: str  # queued, sent, delivered, undelivered, failed
    reason: str | None
    fallback: bool  # sent on another contact point because an earlier one did not reach them


@dataclass(frozen=True)
class Case:
    """A whole complaint for the officer: text, channel, status, deadlines, history."""

    code: str
    status: str
    channel: str
    unit_id: int
    assignee: str | None
    category: str | None
    area: str | None
    created_at: datetime
    first_response_due: datetime | None
    resolution_due: datetime | None
    latitude: float | None
    longitude: float | None
    messages: tuple[CaseMessage, ...]
    deliveries: tuple[CaseDelivery, ...] = ()
    unreachable: bool = False  # no contact point the citizen left took our last message


@dataclass(frozen=True)
class StoredFile:
    """An attachment's bytes (or where they are) for an officer who may see its case."""

    filename: str
    content_type: str
    data: bytes | None
    reference: str | None


@dataclass(frozen=True)
class IncidentSummary:
    """An incident as staff see it: its number, lead (first report), reports and deadline."""

    id: int
    lead_code: str
    codes: tuple[str, ...]
    first_response_due: datetime | None
    state: str
