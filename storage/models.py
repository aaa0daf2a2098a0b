"""The one store: every complaint, message, attachment and status change.

SQLAlchemy 2 declarative models shared by SQLite and PostgreSQL. Times are stored as
timezone-aware UTC. Constraints carry the guarantees the service makes: one message per
(channel, external id), one tracking code per complaint, one outbox row per key, one
digest per (unit, kind, period).

It is long (over 400 lines) because it is the whole schema in one place, as the migrations
build it: splitting the tables across modules would hide the foreign keys between them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger ids on PostgreSQL; SQLite only autoincrements INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """A timestamp that goes in and comes out timezone-aware in UTC on every database.

    SQLite has no time zone type; without this, times read back naive and comparisons
    with aware times fail. There a time is stored as SQLAlchemy's DATETIME stores it
    ("2026-11-04 03:07:12.000000", UTC), and the usual ones are written and read in one
    call each (``_to_sqlite``, ``_from_sqlite``) instead of SQLAlchemy's formatting and
    parsing followed by this type's own step: a sweep or an intake batch moves tens of
    thousands of times. Anything else takes SQLAlchemy's way, as before.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use the injected clock")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value if value.tzinfo is timezone.utc else value.astimezone(timezone.utc)

    def bind_processor(self, dialect: Any) -> Any:
        generic = super().bind_processor(dialect)
        if dialect.name != "sqlite":
            return generic

        def _to_sqlite(value: object) -> object:
            if type(value) is datetime and value.tzinfo is not None:
                # "2026-11-04 03:07:12.000000+00:00" without its offset: DATETIME's form.
                return value.astimezone(timezone.utc).isoformat(" ", "microseconds")[:26]
            return generic(value)  # None, a naive time (refused), anything else: as before

        return _to_sqlite

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        generic = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite":
            return generic

        def _from_sqlite(value: object) -> object:
            # The stored form is 26 characters; fromisoformat takes it, with UTC appended.
            if type(value) is str and len(value) == 26:
                try:
                    return datetime.fromisoformat(value + "+00:00")
                except ValueError:
                    pass
            return generic(value)

        return _from_sqlite


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Unit(Base):
    """A body responsible for complaints: a ward, a district department, a desk."""

    __tablename__ = "units"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Staff(Base):
    """An officer, unit head or administrator."""

    __tablename__ = "staff"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    role: Mapped[str] = mapped_column(String(16))  # agent | head | admin
    telegram_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    email: Mapped[str | None] = mapped_column(String(320))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    areas: Mapped[list[Any]] = mapped_column(default=list)  # wards the officer covers (urgent pages)


def _where_set(name: str, *columns: str, present: str | None = None) -> Index:
    """An index holding only the rows where ``present`` (by default its last column) has a
    value (migration 0011): it serves lookups of values, which never match an empty column,
    and a row enters it only once it has one."""
    where = text(f"{present or columns[-1]} IS NOT NULL")
    return Index(name, *columns, sqlite_where=where, postgresql_where=where)


class Contact(Base):
    """One way to reach a citizen: a phone, an email address, a Telegram chat."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("channel", "address"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(8))
    # The gateway the citizen last wrote through, when a channel has several.
    via: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]


class Complaint(Base):
    """A citizen's complaint or feedback (phản ánh, kiến nghị) and where it stands."""

    __tablename__ = "complaints"
    __table_args__ = (Index("ix_complaints_unit_created", "unit_id", "created_at"),
                      # The desk's queues (migration 0008).
                      Index("ix_complaints_unit_queue", "unit_id", "status", "assignee_id", "first_response_due",
                            "first_response_at", "resolution_due", "apologised_for_due", "id"),
                      Index("ix_complaints_assignee_status", "assignee_id", "status", "first_response_due", "id"),
                      Index("ix_complaints_created_at", "created_at"),
                      # The digest's per-unit ranges since its chart's first day (migration 0009),
                      # of the rows that have the time (0011).
                      _where_set("ix_complaints_unit_first_response", "unit_id", "first_response_at"),
                      _where_set("ix_complaints_unit_resolved", "unit_id", "resolved_at"),
                      _where_set("ix_complaints_unit_rated", "unit_id", "rated_at"),
                      _where_set("ix_complaints_next_check_at", "next_check_at"),
                      _where_set("ix_complaints_unreachable_at", "unreachable_at"),
                      _where_set("ix_complaints_incident_id", "incident_id"))
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tracking_code: Mapped[str] = mapped_column(String(24), unique=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    alternate_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    channel: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str | None] = mapped_column(String(300))
    text: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(64))
    area: Mapped[str | None] = mapped_column(String(200))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    routing_reason: Mapped[str] = mapped_column(String(300), default="")
    # One of bot.statuses.Status, kept as its name; a CHECK constraint (migration 0002)
    # refuses anything else.
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    first_response_due: Mapped[datetime | None]
    resolution_due: Mapped[datetime | None]
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    # When the sweep must next look at this complaint (a reminder or a deadline), or
    # None when nothing is pending: the sweep reads only rows due by this index.
    next_check_at: Mapped[datetime | None]
    # Marks that make each reminder, apology and escalation happen once per deadline:
    # each holds the deadline it was done for.
    reminded_for_due: Mapped[datetime | None]
    apologised_for_due: Mapped[datetime | None]
    resolution_reminded_for_due: Mapped[datetime | None]
    resolution_escalated_for_due: Mapped[datetime | None]
    escalation_count: Mapped[int] = mapped_column(Integer, default=0)
    rating: Mapped[int | None] = mapped_column(Integer)
    rating_comment: Mapped[str | None] = mapped_column(Text)
    rated_at: Mapped[datetime | None]
    # Set when a message the citizen must not miss could reach them on none of their
    # contact points; cleared when one gets through again.
    unreachable_at: Mapped[datetime | None]
    # urgent | normal | complex (bot/urgency.py); a CHECK constraint keeps it to those.
    urgency: Mapped[str] = mapped_column(String(8), default="normal")
    # Waiting for the citizen: since when the clock is paused, and when they were reminded.
    paused_at: Mapped[datetime | None]
    waiting_reminded_at: Mapped[datetime | None]
    extended_at: Mapped[datetime | None]  # a complex complaint's one extension
    disputed_at: Mapped[datetime | None]  # the citizen said the resolution did not fix it
    # The citizen let its text be shown publicly (Open311 listings), personal data removed.
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    # Incidents (migration 0007): the incident this complaint reports, and whether it is the
    # incident's lead (the first report, which carries the deadlines and the staff's side)
    # or a member riding on it. The match_* columns are what the matcher compares, computed
    # once at intake; partial indexes on open complaints (topic, place, geo cell, each with
    # created_at, each of the rows that have that key: migrations 0007 and 0014) serve the
    # candidate search.
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    incident_role: Mapped[str | None] = mapped_column(String(8))  # lead | member
    match_topic: Mapped[str | None] = mapped_column(String(24))
    match_place: Mapped[str | None] = mapped_column(String(64))
    geo_cell: Mapped[int | None] = mapped_column(BigInteger)
    match_features: Mapped[dict[str, Any] | None] = mapped_column()

    contact: Mapped[Contact | None] = relationship(foreign_keys=[contact_id], lazy="raise")
    unit: Mapped[Unit] = relationship(lazy="raise")


class Message(Base):
    """One message on a complaint: from the citizen, to the citizen, or an internal note."""

    __tablename__ = "messages"
    # A citizen's last message on a channel: their reply window (bot/reach.py), migration 0010.
    __table_args__ = (UniqueConstraint("channel", "external_id"),
                      Index("ix_messages_channel_sender", "channel", "sender", "created_at"))
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # None for a message recorded but belonging to no complaint (an unthreaded bounce).
    complaint_id: Mapped[int | None] = mapped_column(ForeignKey("complaints.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))  # in | out | note
    channel: Mapped[str] = mapped_column(String(16))
    # The channel's own id: dedupes retried deliveries, and finds what a reply answers.
    external_id: Mapped[str | None] = mapped_column(String(255))
    author_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    text: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(String(300))
    sender: Mapped[str | None] = mapped_column(String(320))  # address it came from (inbound)
    automated: Mapped[bool] = mapped_column(Boolean, default=False)
    public: Mapped[bool] = mapped_column(Boolean, default=False)  # shown on the status page
    created_at: Mapped[datetime]
    # Subject and text folded for search (bot.folding.fold); NULL until indexed (migration 0008).
    folded: Mapped[str | None] = mapped_column(Text, default=None)


class Attachment(Base):
    """A file that came with a message; bytes in the store or a reference to them."""

    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(127))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    reference: Mapped[str | None] = mapped_column(String(1000))


class RoutingRule(Base):
    """A rule that sends matching complaints to a unit."""

    __tablename__ = "routing_rules"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))  # None: a rule that only sets urgency
    urgency: Mapped[str | None] = mapped_column(String(8))
    priority: Mapped[int] = mapped_column(Integer, default=100)
    source: Mapped[str] = mapped_column(String(16), default="config")  # config | db
    keywords: Mapped[list[Any]] = mapped_column(default=list)
    areas: Mapped[list[Any]] = mapped_column(default=list)
    categories: Mapped[list[Any]] = mapped_column(default=list)
    channels: Mapped[list[Any]] = mapped_column(default=list)


class Event(Base):
    """The audit trail: every change to a complaint, who made it and when."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    complaint_id: Mapped[int | None] = mapped_column(ForeignKey("complaints.id"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(100))  # system | citizen | staff:<slug>
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The scorecard counts resolutions and disputes of the last 90 days by kind and time.
    __table_args__ = (Index("ix_events_kind_at", "kind", "at"),)


class OutboxMessage(Base):
    """A message waiting to be sent, or the record of how its sending ended."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
                      # The messages a worker holds (only those: migration 0011).
                      _where_set("ix_outbox_claimed_by_status", "claimed_by", "status", present="claimed_by"),
                      # Our message by the provider's id: replies, reports (migration 0010).
                      _where_set("ix_outbox_channel_external_id", "channel", "external_id"),
                      # Delivery reports by our reference: only the messages stored with one (0013).
                      _where_set("ix_outbox_reference", "reference"))
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    # Our own id for the message, given to providers that take one (a gateway's message id,
    # an Idempotency-Key, a status callback's reference): contract.messages.reference_of(key).
    # Stored only where delivery reports name it (bot.outbox.stored_reference), else empty.
    reference: Mapped[str | None] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(320))
    complaint_id: Mapped[int | None] = mapped_column(ForeignKey("complaints.id"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column()  # the Outgoing's stored form, and how to render it again
    # queued | claimed (by a process, not started) | sending (started) | sent | failed
    status: Mapped[str] = mapped_column(String(12), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(120))  # the worker incarnation holding it
    # An attempt whose outcome is unknown (its process died mid-send, or the provider did not
    # answer in time): the next attempt looks the message up where the provider allows, else
    # sends it again.
    unsure: Mapped[bool] = mapped_column(Boolean, default=False)
    resent: Mapped[bool] = mapped_column(Boolean, default=False)  # sent again after an unknown outcome
    last_error: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # What the provider reported after the send: delivered | undelivered | failed, and why.
    delivery: Mapped[str | None] = mapped_column(String(16))
    delivery_reason: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    # The message this one is the fallback of (the same message on another contact point).
    fallback_of: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))


class Worker(Base):
    """A running process's dispatcher: its name (stable across restarts), the incarnation
    running now, and its heartbeat. Claims of an incarnation that is gone are taken back."""

    __tablename__ = "workers"
    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    incarnation: Mapped[str] = mapped_column(String(36))
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)


class ContactLink(Base):
    """Two contact points of one citizen, and where we learnt it (never a guess)."""

    __tablename__ = "contact_links"
    __table_args__ = (UniqueConstraint("contact_id", "linked_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    linked_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"))
    source: Mapped[str] = mapped_column(String(40))  # web_form | open311 | telegram_contact | zalo_info | ...
    created_at: Mapped[datetime]


class DigestRun(Base):
    """A digest sent to a unit head for one period; the unique key makes it once only."""

    __tablename__ = "digest_runs"
    __table_args__ = (UniqueConstraint("unit_id", "kind", "period_start"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    kind: Mapped[str] = mapped_column(String(16))  # daily | weekly
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    created_at: Mapped[datetime]


class Setting(Base):
    """Values the service generates once and shares between processes (the CSRF key)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RateCounter(Base):
    """Requests of one client in one fixed window, counted for flood control by every process.

    ``client`` is a hash of what identifies the client (an IP address, a form session, a
    mail sender): no personal data at rest, and a fixed length. Rows of windows past are
    deleted as new ones come.
    """

    __tablename__ = "rate_counters"
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    client: Mapped[str] = mapped_column(String(32), primary_key=True)
    window_end: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)  # Unix seconds
    hits: Mapped[int] = mapped_column(Integer)


class NotificationBurst(Base):
    """New-complaint notifications to one staff address in one window: how many there were,
    and the codes held back for one summary instead of a message each."""

    __tablename__ = "notification_bursts"
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    recipient: Mapped[str] = mapped_column(String(320), primary_key=True)
    window_end: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)  # Unix seconds
    total: Mapped[int] = mapped_column(Integer)
    held: Mapped[list[Any]] = mapped_column(default=list)


class Incident(Base):
    """Many complaints about one event (a power cut, a burst main): one owner, one deadline
    (its lead's, the first report's), one answer to every reporter."""

    __tablename__ = "incidents"
    # One active incident per lead complaint (migration 0012; grouping's CREATION_LOCK keeps
    # it, and the store refuses a second should the lock be bypassed).
    __table_args__ = (Index("uq_incidents_active_lead", "lead_complaint_id", unique=True,
                            sqlite_where=text("state = 'active'"), postgresql_where=text("state = 'active'")),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    lead_complaint_id: Mapped[int] = mapped_column(ForeignKey("complaints.id", use_alter=True))
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    topic: Mapped[str | None] = mapped_column(String(24))
    title: Mapped[str] = mapped_column(String(200))
    reports: Mapped[int] = mapped_column(Integer, default=1)  # complaints it groups
    # "active"; "merged" when staff merged it into another; "ended" when split down to one.
    state: Mapped[str] = mapped_column(String(8), default="active")
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DeskLink(Base):
    """A one-time sign-in link to the staff desk (only its token's hash is kept)."""

    __tablename__ = "desk_links"
    __table_args__ = (Index("ix_desk_links_staff_created", "staff_id", "created_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"))
    channel: Mapped[str] = mapped_column(String(16))  # where it was sent: telegram | email
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class DeskSession(Base):
    """A signed-in browser of a staff member (only its token's hash is kept)."""

    __tablename__ = "desk_sessions"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class DeskSignIn(Base):
    """The sign-in log: every link asked for, sign-in, refusal and sign-out, by whom and from where."""

    __tablename__ = "desk_sign_ins"
    __table_args__ = (Index("ix_desk_sign_ins_client_at", "client", "at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime]
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    client: Mapped[str] = mapped_column(String(64))  # the client address, hashed
    kind: Mapped[str] = mapped_column(String(24))
    detail: Mapped[str] = mapped_column(String(200), default="")
