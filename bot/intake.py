"""Intake: one ``Inbound`` from any channel becomes a stored complaint or a follow-up.

The steps, in one transaction: dedupe on (channel, channel message id), enforced by a
unique constraint so two concurrent deliveries still store one message; a rating reply
after a survey is a rating; a message that continues a complaint (``threads``: it replies
to one of our messages, names one of the sender's tracking codes, or comes soon after on
a channel without threading) joins it; anything else is a new complaint with a fresh tracking code, routed to its
unit with its deadlines, acknowledged through the outbox, told to the officers, and
recorded in the audit trail. The channel answers its sender only after this returns
(committed).

Messages arriving together are written together (group commit, ``IntakeWriter``): one
transaction and multi-row INSERTs for the batch, so a burst costs about as many round
trips to the database as one message. SQLite has one writer at a time, and per-message
transactions made intake wait on each other's round trips.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import bursts, guard, messages, outbox, reach, routing, satisfaction, threads, tracking, urgency
from bot.core import Core
from bot.incidents import candidates, grouping, match
from bot.folding import fold
from bot.messages import format_time, to_staff
from bot.statuses import FINISHED, Status, schedule_checks
from contract.messages import Inbound
from contract.results import IntakeError, IntakeResult, Outcome
from storage.db import upsert
from storage.models import Attachment, Complaint, Contact, Event, Message

log = logging.getLogger(__name__)

# A unique-constraint race (a concurrent delivery, or a tracking-code collision) is
# retried from the start; more than a few in a row means something else is wrong.
ATTEMPTS = 4
# Messages written in one transaction at most; more wait for the next one.
BATCH = 64


def _check(core: Core, inbound: Inbound) -> Inbound:
    """The message as it may be stored (``guard``), or IntakeError saying why not."""
    inbound = guard.checked(inbound)
    if not inbound.text and not inbound.attachments:
        raise IntakeError("empty message")
    if inbound.category is not None and core.config.category(inbound.category) is None:
        raise IntakeError(f"unknown category {inbound.category!r}")
    return inbound


async def receive(core: Core, inbound: Inbound) -> IntakeResult:
    """Store one inbound message in a transaction of its own and queue what it causes.

    Channels go through the port's ``IntakeWriter``, which writes messages arriving
    together in one transaction; this is the same work for one message.
    """
    inbound = _check(core, inbound)
    [result] = await receive_batch(core, [inbound])
    if isinstance(result, Exception):
        raise result
    return result


class IntakeWriter:
    """Writes the messages waiting at a moment in one transaction, one batch at a time."""

    def __init__(self, core: Core):
        self.core = core
        self.waiting: list[tuple[Inbound, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def submit(self, inbound: Inbound) -> IntakeResult:
        """Queue one message for the next batch and wait until it is committed."""
        inbound = _check(self.core, inbound)
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((inbound, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._write(), name="intake-writer")
        # Shielded: a caller that goes away (a client hanging up) does not cancel the
        # batch; its message is stored all the same, and a retry finds it.
        result = await asyncio.shield(future)
        if isinstance(result, Exception):
            raise result
        return result

    async def _write(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[:BATCH], self.waiting[BATCH:]
            try:
                results = await receive_batch(self.core, [inbound for inbound, _ in batch])
            except Exception as error:  # every waiter hears of it; the next batch goes on
                log.exception("intake batch failed")
                results = [error] * len(batch)
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)


async def receive_batch(core: Core, inbounds: list[Inbound]) -> list[IntakeResult | Exception]:
    """Store messages that arrived together in one transaction; results in the same order.

    When the batch fails (a unique constraint hit by a concurrent redelivery on another
    process or a tracking-code collision, or one message that cannot be stored) it is
    rolled back and each message is taken alone, with retries after a unique-constraint
    race, so one message's trouble never costs another its place.
    """
    try:
        async with core.sessions() as session, session.begin():
            results: list[IntakeResult | Exception] = list(await _receive_many(core, session, inbounds))
    except Exception as error:  # noqa: BLE001 - whatever it was, it must not fail the others
        if len(inbounds) == 1 and not isinstance(error, IntegrityError):
            results = [error]
        else:
            log.info("intake batch taken one by one", extra={"fields": {"size": len(inbounds),
                                                                         "error": type(error).__name__}})
            results = [await _receive_alone(core, inbound) for inbound in inbounds]
    for inbound, result in zip(inbounds, results):
        if isinstance(result, IntakeResult):
            _after_commit(core, inbound, result)
    return results


async def _receive_alone(core: Core, inbound: Inbound) -> IntakeResult | Exception:
    for attempt in range(ATTEMPTS):
        try:
            async with core.sessions() as session, session.begin():
                [result] = await _receive_many(core, session, [inbound])
            return result
        except IntegrityError as error:
            if attempt == ATTEMPTS - 1:
                return error
            log.info("intake retry after a concurrent write", extra={"fields": {"channel": inbound.channel}})
        except Exception as error:  # handed to the waiting channel, which answers its sender
            return error
    raise AssertionError("unreachable")


def _after_commit(core: Core, inbound: Inbound, result: IntakeResult) -> None:
    core.metrics.messages_received.labels(inbound.channel, result.outcome).inc()
    if result.outcome == "created":
        core.metrics.complaints_received.labels(inbound.channel).inc()
    if result.outcome in ("created", "followup", "rated", "disputed"):
        core.outbox_ready.set()
    log.info("message received", extra={"fields": {"channel": inbound.channel, "outcome": result.outcome,
                                                   "code": result.tracking_code or "-"}})


def _result(core: Core, outcome: Outcome, complaint: Complaint | None, language: str = "vi") -> IntakeResult:
    if complaint is None:
        return IntakeResult(outcome, None, None, language, "", None)
    return IntakeResult(outcome, complaint.tracking_code, complaint.id, complaint.language,
                        core.directory.unit_name(complaint.unit_id, complaint.language), complaint.first_response_due)


async def _receive_many(core: Core, session: AsyncSession, inbounds: list[Inbound]) -> list[IntakeResult]:
    """Take a batch of messages in the caller's transaction."""
    now = core.clock.now()
    keys = {(i.channel, i.external_id) for i in inbounds if i.external_id is not None}
    existing: dict[tuple[str, str], Complaint | None] = {}
    if keys:
        rows = (await session.execute(
            select(Message.channel, Message.external_id, Complaint)
            .outerjoin(Complaint, Message.complaint_id == Complaint.id)
            .where(or_(*(and_(Message.channel == c, Message.external_id == e) for c, e in keys))))).all()
        existing = {(channel, external_id): complaint for channel, external_id, complaint in rows}
    contact_pairs = [_contacts_of(inbound) for inbound in inbounds]
    contact_ids = await _contact_ids(session, now, inbounds, contact_pairs)
    # Contact points the citizen gave together (a phone and an email on the form, a phone
    # Telegram confirmed as theirs) are one citizen's: later answers may fall back on them.
    await reach.link(session, now, [([contact_ids[pair] for pair in pairs], inbound.channel)
                                    for inbound, pairs in zip(inbounds, contact_pairs) if len(pairs) > 1])
    results: list[IntakeResult | None] = [None] * len(inbounds)
    first_of: dict[tuple[str, str], int] = {}
    new: list[int] = []
    fresh = await _without_open_conversation(session, now, inbounds, contact_pairs, contact_ids, existing)
    for index, inbound in enumerate(inbounds):
        key = (inbound.channel, inbound.external_id)
        if inbound.external_id is not None and key in existing:
            results[index] = _result(core, "duplicate", existing[key])
            continue
        if inbound.external_id is not None and key in first_of:
            continue  # the same delivery twice in one batch: answered below, from the first
        if inbound.external_id is not None:
            first_of[key] = index
        if _plain_new(core, inbound, contact_pairs[index], index in fresh):
            new.append(index)
        else:
            results[index] = await _receive_one(core, session, now, inbound, contact_pairs[index], contact_ids)
    if new:
        filed = await _file_many(core, session, now, [inbounds[i] for i in new], [contact_pairs[i] for i in new],
                                 contact_ids)
        for index, complaint in zip(new, filed):
            results[index] = _result(core, "created", complaint)
    for index, inbound in enumerate(inbounds):
        if results[index] is None:
            results[index] = replace(results[first_of[(inbound.channel, inbound.external_id)]], outcome="duplicate")
    return results


def _contacts_of(inbound: Inbound) -> list[tuple[str, str]]:
    """Where answers go, best first: the sender, then what a form gave; two at most."""
    pairs = [(inbound.channel, inbound.sender)] if inbound.sender else []
    pairs += [pair for pair in inbound.reply_to if pair[1]]
    return list(dict.fromkeys(pairs))[:2]


def _plain_new(core: Core, inbound: Inbound, contacts: list[tuple[str, str]], fresh: bool) -> bool:
    """True for a message that can only be a new complaint, so needs no look-up first.

    ``fresh``: the sender has no conversation such a message would continue (looked up
    for the whole batch at once by ``_without_open_conversation``).
    """
    if inbound.automated or inbound.in_reply_to or inbound.tracking_codes:
        return False
    if inbound.continues_within_hours > 0 and contacts and not fresh:
        return False
    if contacts and (satisfaction.parse_reply(inbound.text) is not None
                     or satisfaction.parse_dispute(inbound.text)[0]):
        return False
    prefix = core.config.service.tracking_prefix
    return not (tracking.find_codes(inbound.subject or "", prefix) or tracking.find_codes(inbound.text, prefix))


async def _without_open_conversation(session: AsyncSession, now: datetime, inbounds: list[Inbound],
                                     pairs: list[list[tuple[str, str]]], contact_ids: dict[tuple[str, str], int],
                                     existing: dict) -> set[int]:
    """Indexes of the batch's messages on a channel without threading (SMS) whose sender has
    no complaint they would continue (``threads.continued``): one query for the batch, not
    one per message. A sender with two such messages in the batch is left out: the second
    continues the first, which only the one-by-one path sees."""
    asking = [index for index, inbound in enumerate(inbounds)
              if inbound.continues_within_hours > 0 and pairs[index]
              and (inbound.external_id is None or (inbound.channel, inbound.external_id) not in existing)]
    if not asking:
        return set()
    senders: dict[int, list[int]] = {}
    for index in asking:
        senders.setdefault(contact_ids[pairs[index][0]], []).append(index)
    widest = max(inbounds[index].continues_within_hours for index in asking)
    rows = (await session.execute(
        select(Complaint.contact_id, Complaint.status, Complaint.updated_at).where(
            Complaint.contact_id.in_(list(senders)), Complaint.status.not_in(FINISHED),
            or_(Complaint.updated_at >= now - timedelta(hours=widest), Complaint.status == Status.WAITING)))).all()
    busy: dict[int, list[tuple[str, datetime]]] = {}
    for contact_id, status, updated_at in rows:
        busy.setdefault(contact_id, []).append((status, updated_at))
    fresh = set()
    for contact_id, indexes in senders.items():
        if len(indexes) > 1:
            continue
        [index] = indexes
        window = timedelta(hours=inbounds[index].continues_within_hours)
        if not any(status == Status.WAITING or updated_at >= now - window
                   for status, updated_at in busy.get(contact_id, ())):
            fresh.add(index)
    return fresh


async def _contact_ids(session: AsyncSession, now: datetime, inbounds: list[Inbound],
                       pairs: list[list[tuple[str, str]]]) -> dict[tuple[str, str], int]:
    """Find or create every contact of a batch in one statement; ids by (channel, address)."""
    rows: dict[tuple[str, str], dict] = {}
    for inbound, contacts in zip(inbounds, pairs):
        language = (inbound.language or "").split("-")[0].lower()
        for channel, address in contacts:
            rows.setdefault((channel, address), dict(
                channel=channel, address=address, display_name=inbound.sender_name,
                language=language if language in ("vi", "en") else "vi", created_at=now,
                via=inbound.via if channel == inbound.channel else None))
    if not rows:
        return {}
    statement = upsert(session, Contact)
    # On conflict, keep the gateway the citizen last wrote through; the update also makes
    # RETURNING give the id of an existing contact.
    statement = statement.on_conflict_do_update(
        index_elements=["channel", "address"], set_={"via": func.coalesce(statement.excluded.via, Contact.via)})
    # Rows come back in any order, named by (channel, address): with no order asked for,
    # SQLite takes the batch in one multi-row statement, not row by row.
    found = await session.execute(statement.returning(Contact.channel, Contact.address, Contact.id),
                                  list(rows.values()))
    return {(channel, address): id_ for channel, address, id_ in found.all()}


async def _receive_one(core: Core, session: AsyncSession, now: datetime, inbound: Inbound,
                       contacts: list[tuple[str, str]], contact_ids: dict[tuple[str, str], int]) -> IntakeResult:
    """A message that may be a rating, a follow-up or a machine's: look before filing."""
    ids = [contact_ids[pair] for pair in contacts]
    disputed, comment = (False, None) if inbound.automated else satisfaction.parse_dispute(inbound.text)
    if disputed:
        # "CHUA XONG" after a resolution: it did not fix the problem, the complaint reopens.
        complaint = await satisfaction.awaiting_dispute(session, core, ids, now, inbound.tracking_codes)
        if complaint is not None:
            await _store_messages(session, now, [complaint], [inbound])
            await satisfaction.record_dispute(core, session, now, complaint, comment, via=inbound.channel)
            return _result(core, "disputed", complaint)
    reply = None if inbound.automated else satisfaction.parse_reply(inbound.text)
    if reply is not None:
        # "5" after a survey is a rating, not a new complaint.
        rated = await satisfaction.awaiting_rating(session, core, ids, now, inbound.tracking_codes)
        if rated is not None:
            await _store_messages(session, now, [rated], [inbound])
            await satisfaction.record(core, session, now, rated, reply[0], reply[1], via=inbound.channel)
            return _result(core, "rated", rated)
    complaint = await threads.continued(core, session, now, inbound, ids)
    if inbound.automated:
        [(message_id, _)] = await _store_messages(session, now, [complaint], [inbound])
        session.add(Event(complaint_id=complaint.id if complaint else None, at=now, actor="system",
                          kind="automated_message", detail={"channel": inbound.channel, "message_id": message_id}))
        return _result(core, "ignored", complaint, core.texts.language(inbound.language))
    if complaint is not None:
        [(message_id, _)] = await _store_messages(session, now, [complaint], [inbound])
        await threads.follow_up(core, session, now, complaint, inbound, message_id)
        return _result(core, "followup", complaint)
    [complaint] = await _file_many(core, session, now, [inbound], [contacts], contact_ids)
    return _result(core, "created", complaint)


async def _store_messages(session: AsyncSession, now: datetime, complaints: list[Complaint | None],
                          inbounds: list[Inbound]) -> list[tuple[int, list[tuple[int, str, str, int]]]]:
    """Insert the citizens' messages and their attachments; per message, its id and its
    files as (id, filename, content type, size)."""
    values = [dict(complaint_id=complaint.id if complaint else None, direction="in", channel=inbound.channel,
                   external_id=inbound.external_id, text=inbound.text, subject=inbound.subject, sender=inbound.sender,
                   automated=inbound.automated, public=False, created_at=now,
                   folded=fold(f"{inbound.subject or ''} {inbound.text}"))
              for complaint, inbound in zip(complaints, inbounds)]
    owners = [row["complaint_id"] for row in values]
    if len(values) > 1 and None not in owners and len(set(owners)) == len(owners):
        # New complaints, one message each: rows come back named by their complaint, in one
        # multi-row statement (asking for parameter order makes SQLite insert row by row).
        table = Message.__table__  # the table's INSERT: see _file_many
        by_owner = dict((await session.execute(insert(table).returning(table.c.complaint_id, table.c.id),
                                                values)).all())
        message_ids = [by_owner[owner] for owner in owners]
    else:
        message_ids = (await session.scalars(insert(Message).returning(Message.id, sort_by_parameter_order=True),
                                             values)).all()
    rows = [dict(message_id=message_id, filename=item.filename[:255], content_type=item.content_type[:127],
                 size=len(item.data), sha256=hashlib.sha256(item.data).hexdigest() if item.data else None,
                 data=item.data or None, reference=item.reference)
            for message_id, inbound in zip(message_ids, inbounds) for item in inbound.attachments]
    files: dict[int, list[tuple[int, str, str, int]]] = {message_id: [] for message_id in message_ids}
    if rows:
        ids = (await session.scalars(insert(Attachment).returning(Attachment.id, sort_by_parameter_order=True),
                                     rows)).all()
        for id_, row in zip(ids, rows):
            files[row["message_id"]].append((id_, row["filename"], row["content_type"], row["size"]))
    return [(message_id, files[message_id]) for message_id in message_ids]


async def _file_many(core: Core, session: AsyncSession, now: datetime, inbounds: list[Inbound],
                     contacts: list[list[tuple[str, str]]], contact_ids: dict[tuple[str, str], int]) -> list[Complaint]:
    """File new complaints: route, set deadlines, insert, acknowledge, tell the officers.

    Multi-row Core INSERTs, not ORM flushes: intake is the hot path, and a batch costs
    about as many round trips to the database as one complaint.
    """
    config = core.config
    rules = await core.directory.rules(session)
    complaints, decisions, features = [], [], []
    for inbound, pairs in zip(inbounds, contacts):
        decision = routing.route(rules, config.routing.default_unit, text=inbound.text, subject=inbound.subject,
                                 area=inbound.area, category=inbound.category, channel=inbound.channel)
        ids = [contact_ids[pair] for pair in pairs]
        complaint = Complaint(
            tracking_code=tracking.new_code(config.service.tracking_prefix),
            contact_id=ids[0] if ids else None, alternate_contact_id=ids[1] if len(ids) > 1 else None,
            channel=inbound.channel, language=core.texts.language(inbound.language),
            subject=(inbound.subject or None) and inbound.subject[:300],
            text=inbound.text, category=inbound.category, area=inbound.area,
            latitude=inbound.location.latitude if inbound.location else None,
            longitude=inbound.location.longitude if inbound.location else None,
            unit_id=core.directory.unit_ids[decision.unit], routing_reason=decision.reason[:300], status=Status.NEW,
            created_at=now, updated_at=now, escalation_count=0, urgency=decision.urgency, public=inbound.public,
        )
        urgency.set_deadlines(core, complaint, now, decision.unit)
        found = match.features(inbound.text, inbound.area, inbound.subject, complaint.latitude, complaint.longitude)
        candidates.stamp(complaint, found)
        schedule_checks(core, complaint)
        complaints.append(complaint)
        decisions.append(decision)
        features.append(found)
    columns = [c.key for c in Complaint.__table__.columns if c.key != "id"]
    # Named by tracking code (unique), so the rows may come back in any order: one multi-row
    # statement on SQLite too.
    # The table's INSERT, not the entity's: the ORM's bulk insert splits a batch into one
    # statement per set of columns that are not None.
    table = Complaint.__table__
    ids = dict((await session.execute(insert(table).returning(table.c.tracking_code, table.c.id),
                                      [{k: getattr(c, k) for k in columns} for c in complaints])).all())
    for complaint in complaints:
        complaint.id = ids[complaint.tracking_code]
    files = await _store_messages(session, now, complaints, inbounds)
    # One candidate search per complaint, in order, so a burst of reports of one event
    # filed in one batch joins up as well as one spread over an hour.
    incidents = [await grouping.at_intake(core, session, now, complaint, inbound.category, found)
                 for complaint, inbound, found in zip(complaints, inbounds, features)]
    # The incidents' audit events wait in the session; written with the batch's own in one
    # statement (an ORM flush on SQLite inserts them one by one to learn their ids).
    events = [dict(complaint_id=e.complaint_id, at=e.at, actor=e.actor, kind=e.kind, detail=e.detail or {})
              for e in _take_pending_events(session)]
    queued, notices = [], []
    directory = await core.directory.staff(session)
    for complaint, decision, inbound, pairs, (_, message_files), (joined, suggested) in zip(
            complaints, decisions, inbounds, contacts, files, incidents):
        events += [
            dict(complaint_id=complaint.id, at=now, actor="citizen", kind="created",
                 detail={"channel": inbound.channel, "first_response_due": complaint.first_response_due.isoformat()}),
            dict(complaint_id=complaint.id, at=now, actor="system", kind="routed",
                 detail={"unit": decision.unit, "reason": decision.reason, "rule": decision.rule,
                         "urgency": decision.urgency, "urgency_reason": decision.urgency_reason}),
        ]
        reachable = [Contact(id=contact_ids[(channel, address)], channel=channel, address=address,
                             via=inbound.via if channel == inbound.channel else None) for channel, address in pairs]
        point = await reach.choose(core, session, reachable, "acknowledgement", now) if reachable else None
        if point is not None:
            thread = [inbound.external_id] if inbound.external_id and inbound.channel in messages.THREADED_CHANNELS \
                else []
            # A citizen whose report joined an incident hears that the unit is already on it.
            queued.append(messages.to_citizen(
                core, complaint, point, f"ack:{complaint.tracking_code}",
                "incidents.joined" if joined else "citizen.acknowledgement", thread, origin="reply",
                due=format_time(core, complaint.first_response_due, complaint.language),
                **({"reports": str(joined[1])} if joined else {})))
        if joined:
            # The officers see the report under the incident; they are told when one forms.
            if joined[1] == 2:
                queued += to_staff(core, directory, directory.assignees(complaint), f"incident:{joined[0]}",
                                   "incidents.created", complaint, incident=joined[0], reports=joined[1])
            continue
        case = messages.new_case(complaint, inbound.text, message_files)
        if complaint.urgency == urgency.Urgency.URGENT:
            # Paged at once, on every channel, at any hour: never held for a burst or the night.
            queued += to_staff(core, directory, urgency.paged(directory, complaint), f"urgent:{complaint.tracking_code}",
                               "staff.urgent_page", complaint, case, every_channel=True)
        else:
            notices += to_staff(core, directory, directory.assignees(complaint), f"new:{complaint.tracking_code}",
                                "staff.new_complaint", complaint, case)
        if suggested is not None:
            queued += grouping.suggestion(core, directory, complaint, suggested)
    queued += await bursts.hold(core, session, now, notices)  # a burst is summed up, not paged one by one
    await session.execute(insert(Event.__table__), events)
    await outbox.enqueue_many(session, now, queued)
    return complaints


def _take_pending_events(session: AsyncSession) -> list[Event]:
    """Audit events added to the session and not yet written, taken out of it, oldest first."""
    pending = [item for item in session.new if isinstance(item, Event)]
    for event in pending:
        session.expunge(event)
    return pending

