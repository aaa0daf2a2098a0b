"""What the port answers the staff desk: plain values for its pages, and the policy it signs
people in by. No database row crosses; a channel renders these as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from contract.results import Officer


@dataclass(frozen=True)
class SignInPolicy:
    """How the desk signs people in: lifetimes and the limits against guessing and flooding."""

    link_minutes: float = 15.0
    session_hours: float = 10.0
    links_per_hour: int = 5  # per staff member
    requests_per_window: int = 10  # link requests per client address
    failures_per_window: int = 10  # bad, stale or reused links per client address
    window_minutes: float = 15.0


@dataclass(frozen=True)
class DeskSession:
    """A signed-in staff member, as the desk's pages see them."""

    officer: Officer
    token: str  # the session's secret, as the cookie carries it (the store keeps its hash)
    expires_at: datetime
    email: str | None = None


@dataclass(frozen=True)
class SignInOutcome:
    """What became of a sign-in link: a session, or why not (``used``, ``expired``, ``unknown``, ``limited``)."""

    session: DeskSession | None
    refusal: str | None = None


@dataclass(frozen=True)
class Filters:
    """What a queue or search is narrowed to; empty values narrow nothing."""

    status: str = ""
    unit: str = ""  # unit slug
    category: str = ""
    channel: str = ""
    area: str = ""
    officer: str = ""  # assignee's staff slug
    date_field: str = "created"  # created | first_answer | resolution | rated
    date_from: str = ""  # YYYY-MM-DD, local
    date_to: str = ""  # YYYY-MM-DD, local, inclusive
    rating_max: int | None = None
    query: str = ""  # words to search for, or a tracking code


@dataclass(frozen=True)
class QueueRow:
    """One complaint in a list."""

    code: str
    status: str
    unit_id: int
    category: str | None
    channel: str
    area: str | None
    assignee: str | None
    created_at: datetime
    first_response_due: datetime | None
    overdue: bool
    summary: str


@dataclass(frozen=True)
class QueuePage:
    """A page of a queue, the counts of every queue, and whether more follow."""

    queue: str
    rows: tuple[QueueRow, ...]
    counts: dict[str, int]
    page: int
    more: bool
    searched: bool = False


@dataclass(frozen=True)
class Delivery:
    """How one message to the citizen (or to staff) went: the outbox row as it is now."""

    channel: str
    recipient: str  # masked unless the role may see contacts
    kind: str
    status: str  # queued | sending | sent | failed
    attempts: int
    last_error: str | None
    sent_at: datetime | None


@dataclass(frozen=True)
class TimelineEntry:
    """One thing in a complaint's story: a message, a note, a change, or a message sent."""

    at: datetime
    kind: str  # in | out | note | event | sent
    text: str = ""
    author: str | None = None
    channel: str | None = None
    event: str | None = None  # the event's kind (routed, assigned, apologised, reassigned, ...)
    detail: dict = field(default_factory=dict)
    attachments: tuple[tuple[int, str, str, int], ...] = ()  # id, filename, content type, size
    delivery: Delivery | None = None


@dataclass(frozen=True)
class CaseView:
    """A complaint's page: where it stands, who wrote it (masked or not), its whole story."""

    code: str
    status: str
    open: bool
    channel: str
    unit_id: int
    unit_slug: str
    assignee: str | None
    assignee_slug: str | None
    category: str | None
    area: str | None
    subject: str | None
    text: str
    created_at: datetime
    first_response_due: datetime | None
    resolution_due: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    overdue: bool
    rating: int | None
    rating_comment: str | None
    latitude: float | None
    longitude: float | None
    contacts: tuple[tuple[str, str], ...]  # (channel, address), masked unless allowed
    contacts_masked: bool
    timeline: tuple[TimelineEntry, ...]
    urgency: str = "normal"  # urgent | normal | complex
    waiting: bool = False  # the officer asked the citizen for more; the clock is paused
    extendable: bool = False  # a complex complaint not extended yet


@dataclass(frozen=True)
class FailedMessage:
    """An outbox message whose sending failed for good, for the admin's retry."""

    id: int
    channel: str
    recipient: str  # masked
    kind: str
    code: str | None
    attempts: int
    last_error: str | None
    created_at: datetime


@dataclass(frozen=True)
class StaffLine:
    """A staff member as the admin's page lists them (addresses masked)."""

    slug: str
    name: str
    unit: str
    role: str
    telegram: bool
    email: str | None
    active: bool


class FilterError(ValueError):
    """A filter that cannot be applied (an unknown status or unit, a date that is not one); says why."""
