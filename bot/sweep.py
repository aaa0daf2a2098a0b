"""The deadline sweep: reminders before deadlines, and an apology and an escalation when
one is missed ("Khách chờ, được xin lỗi").

Each complaint carries ``next_check_at``, the next moment it needs attention, kept by
``statuses.schedule_checks`` whenever its deadlines or marks change. A sweep reads only the rows
whose moment has come, through that column's index, so a sweep with nothing due costs
one index probe however large the store. Rows are claimed with ``FOR UPDATE SKIP
LOCKED`` (PostgreSQL; SQLite has one writer at a time), and each action is written in
one transaction with the mark that makes it happen once: the outbox message, the mark
holding the deadline it was done for, and the audit event. After downtime the first
sweep finds every row whose moment passed and does, once, what is due now: a complaint
whose deadline passed while the service was down gets its apology, not a late reminder.

A backlog is the case to be fast for (10,000 apologies after a long weekend's outage): a
batch reads only the columns the sweep needs, as plain rows (no ORM identity map or unit
of work), computes the extended deadline once per urgency, builds its messages straight as
outbox rows (``messages.Composer``: unit names, templates, staff addresses and formatted
times worked out once per batch), and writes the marks back as one UPDATE per set of
changed columns, the events as one INSERT and the messages as another, in one transaction
per batch: on PostgreSQL each from one array per column (``unnest``), on SQLite as an
executemany of the driver's own values, the columns' types applied once per distinct value
(``outbox.insert_rows``). On PostgreSQL two batches are in flight at once (``LANES``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter

from sqlalchemy import select, text

from bot import bursts, messages, outbox, reach, urgency
from bot.core import Core
from bot.directory import StaffDirectory
from bot.outbox import array_of, driver_values, insert_rows
from bot.statuses import FINISHED, Status, schedule_checks
from bot.statuses import pending as owed
from storage.models import Complaint, Event, Staff

log = logging.getLogger(__name__)

# Complaints per transaction: large enough that a backlog goes in a few transactions, small
# enough that no lock (PostgreSQL: the claimed rows; SQLite: the writer) is held long.
BATCH = 1000
# Batches in flight at once on PostgreSQL (each on its own connection, in its own transaction).
LANES = 2

# What the sweep reads of a complaint (for ``statuses.pending``, the messages and the staff
# directory), and of those, what it may change: written back only where changed.
_READ = ("id", "tracking_code", "contact_id", "alternate_contact_id", "channel", "language", "subject", "text",
         "unit_id", "assignee_id", "status", "urgency", "first_response_due", "resolution_due", "first_response_at",
         "resolved_at", "reminded_for_due", "apologised_for_due", "resolution_reminded_for_due",
         "resolution_escalated_for_due", "escalation_count", "paused_at", "waiting_reminded_at", "incident_id",
         "incident_role", "next_check_at")
_WRITTEN = ("status", "paused_at", "waiting_reminded_at", "first_response_due", "reminded_for_due",
            "apologised_for_due", "resolution_reminded_for_due", "resolution_escalated_for_due", "escalation_count",
            "next_check_at")
_COMPLAINTS = Complaint.__table__


@dataclass
class SweepResult:
    """What one sweep did, for logs, tests and benchmarks."""

    checked: int = 0
    reminders: int = 0
    apologies: int = 0
    escalations: int = 0


# Where the written columns sit in a row as read: their values as read, for ``changes``.
_AS_READ = itemgetter(*(_READ.index(name) for name in _WRITTEN))


class _Due:
    """A complaint as the sweep reads and changes it: its columns as plain attributes (what
    ``statuses.pending``, the messages and the directory read), and what changed since read."""

    def __init__(self, row: tuple) -> None:
        self.__dict__.update(zip(_READ, row))
        self._read = _AS_READ(row)

    def changes(self) -> dict[str, object]:
        """The written columns whose values changed since the row was read."""
        return {name: value for name, before in zip(_WRITTEN, self._read)
                if (value := getattr(self, name)) != before}


def _claim(now: datetime, batch_size: int):
    """The due complaints, oldest moment first, locked (PostgreSQL skips what another holds)."""
    return (select(*(_COMPLAINTS.c[name] for name in _READ)).where(_COMPLAINTS.c.next_check_at <= now)
            .order_by(_COMPLAINTS.c.next_check_at).limit(batch_size).with_for_update(skip_locked=True))


async def _write(session, complaints: list[_Due]) -> None:
    """Each complaint's changed marks: per set of changed columns, one UPDATE from arrays on
    PostgreSQL (an executemany runs the UPDATE once per row), one executemany of the driver's
    own values on SQLite (the columns' types applied once per distinct time)."""
    groups: dict[tuple[str, ...], list[tuple[int, dict]]] = {}
    for complaint in complaints:
        changed = complaint.changes()
        if changed:
            groups.setdefault(tuple(changed), []).append((complaint.id, changed))
    dialect = session.bind.dialect
    quote = dialect.identifier_preparer.quote
    for names, rows in groups.items():
        values = [driver_values(dialect, _COMPLAINTS.c[name], [changed[name] for _, changed in rows])
                  for name in names]
        ids = [id_ for id_, _ in rows]
        if dialect.name == "postgresql":
            await session.execute(text(
                "UPDATE complaints SET " + ", ".join(f"{quote(name)} = v.{quote(name)}" for name in names)
                + " FROM unnest(" + ", ".join([array_of(dialect, _COMPLAINTS.c.id, "b_id"),
                                              *(array_of(dialect, _COMPLAINTS.c[name], f"b{n}")
                                                for n, name in enumerate(names))])
                + ") AS v(id, " + ", ".join(quote(name) for name in names) + ") WHERE complaints.id = v.id"),
                {"b_id": ids, **{f"b{n}": column for n, column in enumerate(values)}})
        else:
            connection = await session.connection()
            await connection.exec_driver_sql(
                "UPDATE complaints SET " + ", ".join(f"{quote(name)} = ?" for name in names) + " WHERE id = ?",
                list(zip(*values, ids)))


_EVENT_COLUMNS = ("complaint_id", "at", "actor", "kind", "detail")


class _Batch:
    """The messages and events one batch of complaints causes, written together."""

    def __init__(self, core: Core, now: datetime, composer: messages.Composer,
                 reached: dict[int, reach.Point | None], threads: dict[int, list[str]]):
        self.core, self.now, self.composer, self.reached, self.threads = core, now, composer, reached, threads
        self.directory = composer.directory
        self.events: list[dict] = []
        # An incident lead's members: its missed deadline is theirs (one apology per reporter).
        self.riders: dict[int, list[_Due]] = {}
        self._extended: dict[str, datetime] = {}
        self._stamps: dict[datetime, str] = {}
        self._heads: dict[int, tuple[list[Staff], list[str]]] = {}
        self.time = composer.time  # a time as its reader reads it; most of a batch's are the same few

    def stamp(self, moment: datetime) -> str:
        """A time as an event's detail records it, once per batch for the times many complaints
        share (the new deadline)."""
        if (found := self._stamps.get(moment)) is None:
            found = self._stamps[moment] = moment.isoformat()
        return found

    def heads(self, complaint: _Due) -> tuple[list[Staff], list[str]]:
        """Who answers for the complaint's unit (``heads_of``) and their slugs, once per unit."""
        if (found := self._heads.get(complaint.unit_id)) is None:
            heads = self.directory.heads_of(complaint)
            found = self._heads[complaint.unit_id] = (heads, [h.slug for h in heads])
        return found

    def extended(self, urgency_name: str) -> datetime:
        """The new first-response deadline after a missed one: the same for every complaint of
        one urgency in the batch (it starts now), so reckoned once."""
        if urgency_name not in self._extended:
            self._extended[urgency_name] = urgency.calendar(self.core, urgency_name).add_working_hours(
                self.now, self.core.config.deadlines.extension_hours)
        return self._extended[urgency_name]

    def to_staff(self, members: list[Staff], key: str, text_key: str, complaint: _Due, **params: object) -> int:
        return self.composer.to_staff(members, key, text_key, complaint, **params)

    def to_citizen(self, key: str, text_key: str, complaint: _Due, **params: str) -> None:
        point = self.reached.get(complaint.id)
        if point is None:
            return  # an anonymous web citizen sees the new expected time on the status page
        self.composer.to_citizen(complaint, point, key, text_key, self.threads.get(complaint.id), **params)

    def event(self, complaint: _Due, kind: str, **detail: object) -> None:
        self.events.append(dict(complaint_id=complaint.id, at=self.now, actor="system", kind=kind, detail=detail))


def _act(batch: _Batch, complaint: _Due, result: SweepResult) -> None:
    """Do, once, what is due now for one complaint, and set the marks that say it is done."""
    core, now = batch.core, batch.now
    fmt = lambda moment: batch.time(moment, complaint.language)  # noqa: E731
    staff_language = core.config.service.default_language
    staff_fmt = lambda moment: batch.time(moment, staff_language)  # noqa: E731
    pending = owed(core, complaint)
    if complaint.status == Status.WAITING:
        _waiting(batch, complaint, pending)
        schedule_checks(core, complaint)
        return
    missed = pending.get("apologise")
    if missed is not None and missed <= now:
        new_due = batch.extended(complaint.urgency)
        complaint.apologised_for_due = complaint.reminded_for_due = missed
        complaint.first_response_due = new_due
        complaint.escalation_count += 1
        stamp = missed.isoformat()
        batch.to_citizen(f"apology:{complaint.id}:{stamp}", "citizen.apology", complaint, due=fmt(new_due))
        for rider in batch.riders.get(complaint.incident_id, []) if complaint.incident_role == "lead" else []:
            if rider.first_response_at is None and rider.apologised_for_due != missed:
                rider.apologised_for_due, rider.first_response_due = missed, new_due
                batch.to_citizen(f"apology:{rider.id}:{stamp}", "citizen.apology", rider,
                                 due=batch.time(new_due, rider.language))
                batch.event(rider, "apologised", missed_due=stamp, new_due=batch.stamp(new_due),
                            incident=complaint.incident_id)
                result.apologies += 1
        heads, slugs = batch.heads(complaint)
        told = batch.to_staff(heads, f"escalation:{complaint.id}:{stamp}", "staff.escalation", complaint,
                              due=staff_fmt(missed), new_due=staff_fmt(new_due), count=complaint.escalation_count)
        batch.event(complaint, "apologised", missed_due=stamp, new_due=batch.stamp(new_due))
        batch.event(complaint, "escalated", missed_due=stamp, count=complaint.escalation_count,
                    heads=slugs, notified=told)
        result.apologies += 1
        result.escalations += 1
    elif "remind" in pending and pending["remind"] <= now:
        due = complaint.first_response_due
        complaint.reminded_for_due = due
        members = batch.directory.assignees(complaint)
        batch.to_staff(members, f"reminder:{complaint.id}:{due.isoformat()}", "staff.reminder", complaint,
                       due=staff_fmt(due))
        batch.event(complaint, "reminded", due=due.isoformat(), staff=[m.slug for m in members])
        result.reminders += 1
    missed = pending.get("escalate_resolution")
    if missed is not None and missed <= now:
        complaint.resolution_escalated_for_due = complaint.resolution_reminded_for_due = missed
        heads, slugs = batch.heads(complaint)
        batch.to_staff(heads, f"resolution-overdue:{complaint.id}:{missed.isoformat()}", "staff.resolution_overdue",
                       complaint, due=staff_fmt(missed))
        batch.event(complaint, "escalated", missed_resolution_due=missed.isoformat(), heads=slugs)
        result.escalations += 1
    elif "remind_resolution" in pending and pending["remind_resolution"] <= now:
        due = complaint.resolution_due
        complaint.resolution_reminded_for_due = due
        members = batch.directory.assignees(complaint)
        batch.to_staff(members, f"reminder-resolution:{complaint.id}:{due.isoformat()}", "staff.reminder_resolution",
                       complaint, due=staff_fmt(due))
        batch.event(complaint, "reminded", resolution_due=due.isoformat(), staff=[m.slug for m in members])
        result.reminders += 1
    schedule_checks(core, complaint)


def _waiting(batch: _Batch, complaint: _Due, pending: dict[str, datetime]) -> None:
    """A complaint waiting for the citizen: remind them once; close it when they stay silent."""
    now = batch.now
    if "close_unanswered" in pending and pending["close_unanswered"] <= now:
        complaint.status, complaint.paused_at = Status.CLOSED, None
        batch.to_citizen(f"closed-no-reply:{complaint.id}", "citizen.closed_no_reply", complaint)
        batch.to_staff(batch.directory.assignees(complaint), f"closed-no-reply-staff:{complaint.id}",
                       "staff.closed_no_reply", complaint)
        batch.event(complaint, Status.CLOSED, reason="no_reply", **{"from": Status.WAITING})
    elif "remind_citizen" in pending and pending["remind_citizen"] <= now:
        complaint.waiting_reminded_at = now
        batch.to_citizen(f"question-reminder:{complaint.id}:{complaint.paused_at.isoformat()}",
                         "citizen.question_reminder", complaint)
        batch.event(complaint, "citizen_reminded", asked=complaint.paused_at.isoformat())


async def _riders(session, complaints: list[_Due]) -> list[_Due]:
    """The open members of the incidents these complaints lead."""
    incidents = {c.incident_id for c in complaints if c.incident_role == "lead"}
    if not incidents:
        return []
    c = _COMPLAINTS.c
    return [_Due(row) for row in (await session.execute(select(*(c[name] for name in _READ)).where(
        c.incident_id.in_(incidents), c.incident_role == "member", c.status.not_in(FINISHED))
        .order_by(c.id).with_for_update())).all()]


async def _batch(core: Core, session, now: datetime, batch_size: int, seen: set[int],
                 result: SweepResult) -> tuple[int, set[str]] | None:
    """Claim, act on and write one batch in the session's transaction: (complaints claimed,
    the channels it queued messages on); None when nothing new is due. Everything the batch built
    is let go when this returns (before the collector runs again and before the commit)."""
    complaints = [_Due(row) for row in (await session.execute(_claim(now, batch_size))).all()]
    # A complaint still due after being handled (a reminder falling due at once
    # after an apology) is taken again; a batch of nothing but such rows ends it.
    if not complaints or seen.issuperset(c.id for c in complaints):
        return None
    seen.update(c.id for c in complaints)
    riders = await _riders(session, complaints)
    everyone = [*complaints, *riders]
    contacts = await reach.contacts_of(session, everyone, plain=True)
    # The sweep writes to citizens only to apologise (and remind a citizen of a
    # question): where that goes now.
    reached = await reach.choose_each(core, session, contacts, "apology", now)
    threads = await messages.thread_ids(
        session, [c.id for c in everyone if any(contact.channel in messages.THREADED_CHANNELS
                                                for contact in contacts[c.id])])
    composer = messages.Composer(core, await StaffDirectory.load(session), now)
    batch = _Batch(core, now, composer, reached, threads)
    for rider in riders:
        batch.riders.setdefault(rider.incident_id, []).append(rider)
    for complaint in complaints:
        _act(batch, complaint, result)
    await _write(session, everyone)
    await insert_rows(session, Event.__table__, _EVENT_COLUMNS, batch.events)
    await outbox.enqueue_rows(session, composer.rows)
    return len(complaints), set(outbox.queued_on(session))


class _NoCollection:
    """No garbage collection while any batch is read, built and written: its rows and messages
    are thousands of young objects that all live until the batch is written, and each
    collection would walk them again (a fifth of a 10,000 backlog's time). They are let go
    (by reference counts) when ``_batch`` returns, so the collector, on again, does not walk
    them either. Counted: on PostgreSQL two batches are in flight at once."""

    def __init__(self) -> None:
        self.depth = 0
        self.collecting = False

    def __enter__(self) -> None:
        if self.depth == 0:
            self.collecting = gc.isenabled()
            gc.disable()
        self.depth += 1

    def __exit__(self, *_exc: object) -> None:
        self.depth -= 1
        if self.depth == 0 and self.collecting:
            gc.enable()


_NO_COLLECTION = _NoCollection()


async def _next_batch(core: Core, batch_size: int, seen: set[int], result: SweepResult) -> bool:
    """One batch in its own transaction; whether more may be due."""
    now = core.clock.now()
    with _NO_COLLECTION:
        async with core.sessions() as session, session.begin():
            done = await _batch(core, session, now, batch_size, seen, result)
    if done is None:
        return False
    claimed, queued = done
    result.checked += claimed
    if queued:
        core.outbox_ready.set(queued)  # the dispatcher claims for these channels, not for every idle one
    return claimed == batch_size


async def _lane(core: Core, batch_size: int, seen: set[int], result: SweepResult) -> None:
    while await _next_batch(core, batch_size, seen, result):
        pass


async def sweep(core: Core, batch_size: int = BATCH) -> SweepResult:
    """Process every complaint whose next check has come; return what was done.

    A backlog on PostgreSQL is taken by two lanes at once, each a batch in its own
    transaction on its own connection (what two processes sweeping at once would do: the
    rows one claims the other skips): while the database writes one batch, the other's
    messages are built. SQLite has one connection and one writer: one lane."""
    # Staff messages kept back overnight go as one summary per person once the day starts.
    await bursts.release_quiet(core)
    result = SweepResult()
    seen: set[int] = set()
    # The first batch alone: a sweep with nothing (or little) due stays one probe.
    if await _next_batch(core, batch_size, seen, result):
        if core.engine.dialect.name == "postgresql":
            async with asyncio.TaskGroup() as lanes:
                for _ in range(LANES):
                    lanes.create_task(_lane(core, batch_size, seen, result))
        else:
            await _lane(core, batch_size, seen, result)
    if result.checked:
        log.info("sweep", extra={"fields": vars(result)})
    return result
