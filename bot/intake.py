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
transaction and multi-row INSERTs for the batch (``bot/filing.py`` files the new
complaints), so a burst costs about as many round trips to the database as one message. SQLite has one writer at a time, and per-message
transactions made intake wait on each other's round trips.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import filing, guard, outbox, reach, satisfaction, threads, tracking
from bot.core import Core
from bot.statuses import FINISHED, Status
from contract.messages import Inbound
from contract.results import IntakeError, IntakeResult, Outcome
from storage.db import upsert
from storage.models import Complaint, Contact, Event, Message

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
    queued: set[str] = set()  # the channels the committed transactions queued messages on
    try:
        async with core.sessions() as session, session.begin():
            results: list[IntakeResult | Exception] = list(await _receive_many(core, session, inbounds))
        queued |= outbox.queued_on(session)
    except Exception as error:  # noqa: BLE001 - whatever it was, it must not fail the others
        if len(inbounds) == 1 and not isinstance(error, IntegrityError):
            results = [error]
        else:
            log.info("intake batch taken one by one", extra={"fields": {"size": len(inbounds),
                                                                         "error": type(error).__name__}})
            results = [await _receive_alone(core, inbound, queued) for inbound in inbounds]
    if queued:
        core.outbox_ready.set(queued)  # the dispatcher claims for these channels, not for every one
    for inbound, result in zip(inbounds, results):
        if isinstance(result, IntakeResult):
            _after_commit(core, inbound, result)
    return results


async def _receive_alone(core: Core, inbound: Inbound, queued: set[str]) -> IntakeResult | Exception:
    for attempt in range(ATTEMPTS):
        try:
            async with core.sessions() as session, session.begin():
                [result] = await _receive_many(core, session, [inbound])
            queued |= outbox.queued_on(session)
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
        # Two lists, not an OR of pairs: one statement for every batch size, compiled once (the
        # OR of 32 pairs took 2.7 ms to build), one search of the (channel, external id) index;
        # a pair across two channels of the batch that is not one of its own is left out here.
        rows = (await session.execute(
            select(Message.channel, Message.external_id, Complaint)
            .outerjoin(Complaint, Message.complaint_id == Complaint.id)
            .where(Message.channel.in_(sorted({c for c, _ in keys})),
                   Message.external_id.in_(sorted({e for _, e in keys}))))).all()
        existing = {(channel, external_id): complaint for channel, external_id, complaint in rows
                    if (channel, external_id) in keys}
    contact_pairs = [_contacts_of(inbound) for inbound in inbounds]
    known = await _known_senders(session, [inbound for inbound in inbounds if inbound.greeting is not None])
    contact_ids = await _contact_ids(session, now, inbounds, contact_pairs)
    # Contact points the citizen gave together (a phone and an email on the form, a phone
    # Telegram confirmed as theirs) are one citizen's: later answers may fall back on them.
    await reach.link(session, now, [([contact_ids[pair] for pair in pairs], inbound.channel)
                                    for inbound, pairs in zip(inbounds, contact_pairs) if len(pairs) > 1])
    results: list[IntakeResult | None] = [None] * len(inbounds)
    first_of: dict[tuple[str, str], int] = {}
    new: list[int] = []
    fresh = await _without_open_conversation(session, now, inbounds, contact_pairs, contact_ids, existing)
    # A new citizen's greeting is queued with their message, in this transaction, ahead of
    # the acknowledgement: one commit, and no look-up of its own before the message.
    seen: set[tuple[str, str]] = set()
    greetings = []
    for inbound in inbounds:
        key = (inbound.channel, inbound.external_id)
        if inbound.external_id is not None and (key in existing or key in seen):
            continue
        seen.add(key)
        if inbound.greeting is not None and inbound.sender and (inbound.channel, inbound.sender) not in known:
            known.add((inbound.channel, inbound.sender))  # greeted once, whatever they sent in the batch
            greetings.append(outbox.Queued(inbound.greeting))
    await outbox.enqueue_many(session, now, greetings)
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
        filed = await filing.file_many(core, session, now, [inbounds[i] for i in new], [contact_pairs[i] for i in new],
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


async def _known_senders(session: AsyncSession, inbounds: list[Inbound]) -> set[tuple[str, str]]:
    """The (channel, address) of these messages' senders stored as contacts before them: one
    statement for the batch, none when no message asks (only those with a greeting do)."""
    by_channel: dict[str, set[str]] = {}
    for inbound in inbounds:
        if inbound.sender:
            by_channel.setdefault(inbound.channel, set()).add(inbound.sender)
    if not by_channel:
        return set()
    rows = await session.execute(select(Contact.channel, Contact.address).where(
        or_(*(and_(Contact.channel == channel, Contact.address.in_(sorted(addresses)))
              for channel, addresses in by_channel.items()))))
    return {(channel, address) for channel, address in rows.all()}


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
            await filing.store_messages(session, now, [complaint], [inbound])
            await satisfaction.record_dispute(core, session, now, complaint, comment, via=inbound.channel)
            return _result(core, "disputed", complaint)
    reply = None if inbound.automated else satisfaction.parse_reply(inbound.text)
    if reply is not None:
        # "5" after a survey is a rating, not a new complaint.
        rated = await satisfaction.awaiting_rating(session, core, ids, now, inbound.tracking_codes)
        if rated is not None:
            await filing.store_messages(session, now, [rated], [inbound])
            await satisfaction.record(core, session, now, rated, reply[0], reply[1], via=inbound.channel)
            return _result(core, "rated", rated)
    complaint = await threads.continued(core, session, now, inbound, ids)
    if inbound.automated:
        [(message_id, _)] = await filing.store_messages(session, now, [complaint], [inbound])
        session.add(Event(complaint_id=complaint.id if complaint else None, at=now, actor="system",
                          kind="automated_message", detail={"channel": inbound.channel, "message_id": message_id}))
        return _result(core, "ignored", complaint, core.texts.language(inbound.language))
    if complaint is not None:
        [(message_id, _)] = await filing.store_messages(session, now, [complaint], [inbound])
        await threads.follow_up(core, session, now, complaint, inbound, message_id)
        return _result(core, "followup", complaint)
    [complaint] = await filing.file_many(core, session, now, [inbound], [contacts], contact_ids)
    return _result(core, "created", complaint)
