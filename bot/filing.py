"""Filing new complaints together: the multi-row writes of intake's batches.

``file_many`` takes the new complaints of one batch (``bot/intake.py`` decided they are
new) and, in the caller's transaction, routes each, sets its deadlines, inserts them,
their messages and files, groups them into incidents, queues the acknowledgements and
the officers' notices, and records the audit events: one multi-row INSERT per table for
the batch, not one per complaint, so a burst costs about as many round trips to the
database as one complaint. Rows come back named (by tracking code, by complaint), not
in parameter order: asked for parameter order, SQLite inserts row by row.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot import bursts, messages, outbox, reach, routing, tracking, urgency
from bot.core import Core
from bot.folding import fold
from bot.incidents import candidates, grouping, match
from bot.messages import format_time, to_staff
from bot.statuses import Status, schedule_checks
from contract.messages import Inbound
from storage.models import Attachment, Complaint, Contact, Event, Message

async def store_messages(session: AsyncSession, now: datetime, complaints: list[Complaint | None],
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


async def file_many(core: Core, session: AsyncSession, now: datetime, inbounds: list[Inbound],
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
    # Read from each new complaint's own dict: what was set is there, and what was not is None,
    # as the mapped attribute would say (50 µs a complaint through its descriptors; 5 this way).
    table = Complaint.__table__
    ids = dict((await session.execute(insert(table).returning(table.c.tracking_code, table.c.id),
                                      [{k: values.get(k) for k in columns}
                                       for values in (vars(c) for c in complaints)])).all())
    for complaint in complaints:
        complaint.id = ids[complaint.tracking_code]
    files = await store_messages(session, now, complaints, inbounds)
    # Complaints grouped one by one, in order, so a burst of reports of one event filed in
    # one batch joins up as well as one spread over an hour; each distinct candidate search
    # runs once for the batch, each complaint reading the rows filed before it.
    if len(complaints) > 1:
        grouping.share_searches(core, session, now, [(found, inbound.category, complaint.latitude, complaint.longitude)
                                                     for complaint, inbound, found in zip(complaints, inbounds,
                                                                                          features)])
    incidents = [await grouping.at_intake(core, session, now, complaint, inbound.category, found)
                 for complaint, inbound, found in zip(complaints, inbounds, features)]
    grouped = await grouping.finish_batch(session)  # the joins written in one statement; their events
    # A complaint may have joined an incident after its own turn (another batch made one it
    # reports meanwhile): it is acknowledged as that incident's report, with its deadline.
    later = grouping.joined_later(session)
    for index, complaint in enumerate(complaints):
        if complaint.id in later:
            incidents[index], values = (later[complaint.id][0], None), later[complaint.id][1]
            for key, value in values.items():
                setattr(complaint, key, value)
    # The incidents' audit events wait in the session; written with the batch's own in one
    # statement (an ORM flush on SQLite inserts them one by one to learn their ids).
    events = [dict(complaint_id=e.complaint_id, at=e.at, actor=e.actor, kind=e.kind, detail=e.detail or {})
              for e in _take_pending_events(session) + grouped]
    queued, notices = [], []
    directory = await core.directory.staff(session)
    # Where each acknowledgement goes, the batch's reply windows looked up together.
    reached = await reach.choose_all(core, session, [
        [Contact(id=contact_ids[(channel, address)], channel=channel, address=address,
                 via=inbound.via if channel == inbound.channel else None) for channel, address in pairs]
        for inbound, pairs in zip(inbounds, contacts)], "acknowledgement", now)
    for complaint, decision, inbound, (_, message_files), (joined, suggested), point in zip(
            complaints, decisions, inbounds, files, incidents, reached):
        events += [
            dict(complaint_id=complaint.id, at=now, actor="citizen", kind="created",
                 detail={"channel": inbound.channel, "first_response_due": complaint.first_response_due.isoformat()}),
            dict(complaint_id=complaint.id, at=now, actor="system", kind="routed",
                 detail={"unit": decision.unit, "reason": decision.reason, "rule": decision.rule,
                         "urgency": decision.urgency, "urgency_reason": decision.urgency_reason}),
        ]
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
