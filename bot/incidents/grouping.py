"""Incidents in the store: created, joined, merged and split; who leads and who rides along.

An incident's lead is its first report: it carries the incident's owner (unit and
officer) and its one deadline, and the sweep looks at it alone. The other complaints are
members: each keeps its citizen, channel, language and tracking code, takes the lead's
unit, officer and deadlines, and owes the sweep nothing of its own (``statuses.pending``),
so a missed deadline is one apology per reporter, sent when the lead's deadline passes,
never thirty deadlines. Every join, merge and split is an event on each complaint it
touches (its score and reasons for an automatic join), so the history stays on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import outbox
from bot.core import Core
from bot.directory import StaffDirectory
from bot.incidents import candidates, match
from bot.incidents.candidates import Decision
from bot.messages import STAFF_ACTIONS, to_staff
from bot.statuses import FINISHED, schedule_checks
from contract.results import IncidentSummary, LifecycleError
from storage.models import Complaint, Event, Incident

LEAD, MEMBER = "lead", "member"
# The button pair a suggestion carries: join the candidate's incident, or keep separate.
SUGGESTION_ACTION = "incident"


async def current(session: AsyncSession, incident_id: int, lock: bool = True) -> Incident:
    """The incident, or the one it was merged into (followed to the end); locked unless
    ``lock`` is False (intake's joins, which write their counts relative to the stored one)."""
    incident = await session.get(Incident, incident_id, with_for_update=lock or None)
    while incident.merged_into_id is not None:
        incident = await session.get(Incident, incident.merged_into_id, with_for_update=lock or None)
    return incident


async def recount(session: AsyncSession, incident: Incident) -> None:
    """Set how many complaints an incident groups from the store (after a merge or split)."""
    await session.flush()
    incident.reports = await session.scalar(
        select(func.count()).select_from(Complaint).where(Complaint.incident_id == incident.id))


async def members(session: AsyncSession, complaint: Complaint, open_only: bool = True) -> list[Complaint]:
    """The other complaints of this complaint's incident (locked), oldest first; [] without one."""
    if complaint.incident_id is None:
        return []
    query = select(Complaint).where(Complaint.incident_id == complaint.incident_id, Complaint.id != complaint.id)
    if open_only:
        query = query.where(Complaint.status.not_in(FINISHED))
    return list((await session.scalars(query.order_by(Complaint.id).with_for_update())).all())


async def create(session: AsyncSession, now: datetime, lead: Complaint, actor: str) -> Incident:
    """Make an incident led by this complaint (caller's transaction)."""
    incident = Incident(lead_complaint_id=lead.id, unit_id=lead.unit_id, topic=lead.match_topic, reports=1,
                        title=" ".join(lead.text.split())[:200], state="active", created_at=now, updated_at=now)
    session.add(incident)
    await session.flush()
    lead.incident_id, lead.incident_role = incident.id, LEAD
    session.add(Event(complaint_id=lead.id, at=now, actor=actor, kind="incident_created",
                      detail={"incident": incident.id}))
    await session.flush()  # the next candidate search must see the lead in its incident
    return incident


async def _with_lead(session: AsyncSession, incident_id: int) -> tuple[Incident, Complaint]:
    """An incident a report joins and its lead, read together in one statement, not locked
    (intake's joins write their counts relative to the stored one); an incident merged away
    is followed to the one it went into. A batch read each incident and then its lead, two
    of its twenty-odd statements for every incident it joined (bench/README.md)."""
    with session.no_autoflush:  # the batch's joins are written together (finish_batch)
        incident, lead = (await session.execute(
            select(Incident, Complaint).join(Complaint, Complaint.id == Incident.lead_complaint_id)
            .where(Incident.id == incident_id))).one()
    if incident.merged_into_id is not None:
        incident = await current(session, incident.merged_into_id, lock=False)
        lead = await session.get(Complaint, incident.lead_complaint_id)
    return incident, lead


def ride_along(complaint: Complaint, lead: Complaint, incident: Incident) -> dict:
    """The values a member takes from its lead: the owner and the one deadline."""
    return dict(incident_id=incident.id, incident_role=MEMBER, unit_id=lead.unit_id, assignee_id=lead.assignee_id,
                first_response_due=lead.first_response_due, resolution_due=lead.resolution_due, next_check_at=None)


async def attach(core: Core, session: AsyncSession, now: datetime, complaint: Complaint,
                 decision: Decision) -> tuple[Incident, int] | None:
    """Act on the candidate search for a complaint just filed (intake's transaction).

    ``join``: it becomes a member of the best candidate's incident (made now if the
    candidate had none), with the score and reasons in its audit event; ``suggest``: the
    suggestion is recorded for the officer. Returns the incident joined and its size.
    """
    best = decision.best
    if decision.action is None or best is None:
        return None
    batch = _batch(session)
    known, events = batch.known, batch.events
    detail = {"score": best.score.value, "reasons": list(best.score.reasons), "candidate": best.tracking_code,
              "considered": decision.considered}
    if decision.action == "suggest":
        detail["incident"] = best.incident_id
        if best.incident_id is not None:  # its true size, for the officer's question
            decision.reports = (await session.get(Incident, best.incident_id)).reports
        events.append(Event(complaint_id=complaint.id, at=now, actor="system", kind="incident_suggested",
                            detail=detail))
        return None
    if best.incident_id is not None and best.incident_id in known:
        incident, lead = known[best.incident_id]
    else:
        if best.incident_id is not None:
            incident, lead = await _with_lead(session, best.incident_id)
        else:
            incident = await _incident_around(core, session, now, best.complaint_id, batch)
            lead = await session.get(Complaint, incident.lead_complaint_id)
        known[incident.id] = known[best.incident_id or incident.id] = (incident, lead)
    return incident, _join(batch, now, complaint, incident, lead, detail)


def _join(batch: _Batch, now: datetime, complaint: Complaint, incident: Incident, lead: Complaint,
          detail: dict) -> int:
    """A complaint joins an incident in this batch (written by ``finish_batch``); the
    incident's reports as this transaction sees them."""
    values = ride_along(complaint, lead, incident)
    batch.joined[complaint.id] = values  # written with the batch's other joins (finish_batch)
    for key, value in values.items():
        setattr(complaint, key, value)
    batch.added[incident.id] = batch.added.get(incident.id, 0) + 1
    batch.at = now
    batch.events.append(Event(complaint_id=complaint.id, at=now, actor="system", kind="incident_joined",
                              detail={**detail, "incident": incident.id, "lead": lead.tracking_code}))
    return incident.reports + batch.added[incident.id]


# PostgreSQL advisory lock (any fixed number) taken by a transaction before it makes an
# incident around a complaint, held to its commit; storage.db's migration lock is another.
CREATION_LOCK = 0x46_49_47_52  # "FIGR"


async def _incident_around(core: Core, session: AsyncSession, now: datetime, candidate_id: int,
                           batch: _Batch) -> Incident:
    """The incident a report joins when its best candidate had none: made now around the
    candidate, or, when another process made one around it meanwhile, that one, or, for a
    candidate filed in this batch, one it reports too that another batch made meanwhile.

    Joins take no lock while the batch groups (their counts are written relative to the
    stored value at the end, in id order: no two batches wait on each other in opposite
    orders). Making an incident does: on PostgreSQL one transaction at a time makes
    incidents (an advisory lock to its commit), and the candidate is read again under it,
    so two workers' batches never make two incidents around one complaint. Two batches of
    one storm filed at the same moment each begin with a report that found nothing (the
    other's were not committed yet): before making an incident around such a report, its
    search runs again reading every report stored now, whatever its id, and it joins the
    incident the other batch made when it scores a join there."""
    if session.bind.dialect.name == "postgresql" and not batch.creating:
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CREATION_LOCK})
        batch.creating = True
    candidate = await session.get(Complaint, candidate_id, with_for_update=True, populate_existing=True)
    if candidate.incident_id is not None:  # made by a batch that committed while we waited
        incident = await current(session, candidate.incident_id, lock=False)
    elif candidate_id in batch.filed and (found := await _made_meanwhile(core, session, now, candidate, batch)):
        incident, score = found
        lead = await session.get(Complaint, incident.lead_complaint_id)
        # Its join is written with the batch's others (``finish_batch``): the copy read under
        # the lock is let go first, or the session would write the same values a second time.
        session.expunge(candidate)
        reports = _join(batch, now, candidate, incident, lead, {**score, "searched_again": True})
        batch.later[candidate_id] = ((incident.id, reports), batch.joined[candidate_id])
        return incident
    else:
        incident = await create(session, now, candidate, "system")
    batch.leads[candidate_id] = incident.id
    return incident


async def _made_meanwhile(core: Core, session: AsyncSession, now: datetime, candidate: Complaint,
                          batch: _Batch) -> tuple[Incident, dict] | None:
    """An incident another transaction made that a report of this batch, about to lead one
    of its own, scores a join with (its search again, without the id limit), and the score."""
    if candidate.match_features is None:
        return None
    found = match.Features.from_json(candidate.match_features, candidate.latitude, candidate.longitude)
    decision = await candidates.find(session, core.config.incidents, found, candidate.category, now,
                                     latitude=candidate.latitude, longitude=candidate.longitude,
                                     joined=batch.incidents())
    # The incidents this batch made are its own searches' to find, as with one writer.
    made_here = set(batch.leads.values())
    for option in [decision.best, *decision.others] if decision.best is not None else []:
        if option.complaint_id != candidate.id and option.incident_id is not None \
                and option.incident_id not in made_here and option.score.value >= decision.rule.join_above:
            incident = await current(session, option.incident_id, lock=False)
            return incident, {"score": option.score.value, "reasons": list(option.score.reasons),
                              "candidate": option.tracking_code, "considered": decision.considered}
    return None


@dataclass
class _Batch:
    """This transaction's grouping so far (``finish_batch`` writes it).

    ``known``: the incidents joined (id: the incident and its lead, read once, not
    locked); ``added``: how many reports each gained here, written at the end;
    ``joined``: the complaints that joined one (id: what they take from the lead), not
    written yet; ``leads``: complaints that came to lead
    an incident made in this transaction (id: incident id), which the batch's shared
    searches read before; ``events``: the joins' and suggestions' audit events, not
    written yet; ``shared``: the batch's candidate searches, each run once.
    """

    transaction: object
    known: dict[int, tuple[Incident, Complaint]] = field(default_factory=dict)
    joined: dict[int, dict] = field(default_factory=dict)
    leads: dict[int, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    shared: candidates.Shared | None = None
    added: dict[int, int] = field(default_factory=dict)  # incident id: reports joined here
    at: datetime | None = None  # when they joined
    creating: bool = False  # holds the creation lock (PostgreSQL)
    filed: set[int] = field(default_factory=set)  # the complaints grouped here so far
    # Complaints of this batch that joined an incident after their own turn: ``joined_later``.
    later: dict[int, tuple[tuple[int, int], dict]] = field(default_factory=dict)

    def incidents(self) -> dict[int, int]:
        """Complaint id: incident id, for what the store (or a search read before) does not say."""
        return {**self.leads, **{id_: values["incident_id"] for id_, values in self.joined.items()}}


def _batch(session: AsyncSession) -> _Batch:
    transaction = session.get_transaction()
    batch = session.info.get("incidents_joined")
    if batch is None or batch.transaction is not transaction:
        batch = session.info["incidents_joined"] = _Batch(transaction)
    return batch


async def finish_batch(session: AsyncSession) -> list[Event]:
    """Write what the complaints that joined an incident in this transaction take from their
    lead (one UPDATE, executemany, for the batch, not one per join), and hand over the
    joins' and suggestions' audit events for the caller's one INSERT (added to the session,
    an autoflush on SQLite would insert them one by one to learn their ids)."""
    batch = _batch(session)
    joined, events = batch.joined, batch.events
    batch.shared = None
    if batch.added:
        # Relative to what is stored (another worker's batch may have joined meanwhile), and
        # in id order: two batches lock the incidents they share in the same order.
        incidents = Incident.__table__
        await session.execute(
            update(incidents).where(incidents.c.id == bindparam("added_id")).values(
                reports=incidents.c.reports + bindparam("added_n"), updated_at=bindparam("added_at")),
            [{"added_id": id_, "added_n": n, "added_at": batch.at} for id_, n in sorted(batch.added.items())])
        batch.added.clear()
    if joined:
        table = Complaint.__table__  # the table's UPDATE: no ORM bulk-update machinery
        names = list(next(iter(joined.values())))
        statement = update(table).where(table.c.id == bindparam("joined_id")).values(
            {name: bindparam(f"joined_{name}") for name in names})
        await session.execute(statement, [{"joined_id": id_, **{f"joined_{name}": values[name] for name in names}}
                                          for id_, values in joined.items()])
        joined.clear()
    taken = list(events)
    events.clear()
    return taken


def joined_later(session: AsyncSession) -> dict[int, tuple[tuple[int, int], dict]]:
    """The complaints of this transaction's batch that joined an incident after their own
    turn, when a later report of the batch was about to make an incident around them and
    another batch had made one they report (``_incident_around``): complaint id: ((incident
    id, its reports), what it took from the lead). Taken once."""
    batch = _batch(session)
    later = dict(batch.later)
    batch.later.clear()
    return later


async def _by_codes(session: AsyncSession, codes: list[str]) -> list[Complaint]:
    found = {c.tracking_code: c for c in (await session.scalars(
        select(Complaint).where(Complaint.tracking_code.in_(codes)).with_for_update())).all()}
    missing = [code for code in codes if code not in found]
    if missing:
        raise LifecycleError(f"no complaint {', '.join(missing)}")
    return [found[code] for code in codes]


async def info(session: AsyncSession, incident: Incident) -> IncidentSummary:
    """What staff are shown of an incident."""
    rows = (await session.execute(select(Complaint.tracking_code, Complaint.id).where(
        Complaint.incident_id == incident.id).order_by(Complaint.id))).all()
    lead = await session.get(Complaint, incident.lead_complaint_id)
    return IncidentSummary(incident.id, lead.tracking_code, tuple(code for code, _ in rows), lead.first_response_due,
                        incident.state)


async def merge(core: Core, codes: list[str], actor: str) -> IncidentSummary:
    """Merge complaints (and the incidents they are in) into the first one's incident.

    The survivor keeps its lead and deadline; every other complaint becomes its member,
    and an incident merged away points to the survivor, so a reply to any of them lands
    under the survivor.
    """
    codes = list(dict.fromkeys(code.upper() for code in codes))
    if len(codes) < 2:
        raise LifecycleError("name at least two complaints to merge")
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        complaints = await _by_codes(session, codes)
        first = complaints[0]
        survivor = await current(session, first.incident_id) if first.incident_id else await create(
            session, now, first, actor)
        lead = await session.get(Complaint, survivor.lead_complaint_id)
        moved: list[Complaint] = []
        for complaint in complaints[1:]:
            if complaint.incident_id is not None:
                old = await current(session, complaint.incident_id)
                if old.id == survivor.id:
                    continue
                old.state, old.merged_into_id, old.updated_at = "merged", survivor.id, now
                moved += (await session.scalars(select(Complaint).where(Complaint.incident_id == old.id)
                                                .with_for_update())).all()
                session.add(Event(complaint_id=old.lead_complaint_id, at=now, actor=actor, kind="incident_merged",
                                  detail={"incident": old.id, "into": survivor.id}))
            else:
                moved.append(complaint)
        for complaint in moved:
            if complaint.status in FINISHED:
                continue  # a finished case keeps its own history
            for key, value in ride_along(complaint, lead, survivor).items():
                setattr(complaint, key, value)
            complaint.updated_at = now
            schedule_checks(core, complaint)
            session.add(Event(complaint_id=complaint.id, at=now, actor=actor, kind="incident_joined",
                              detail={"incident": survivor.id, "lead": lead.tracking_code, "merged": True}))
        survivor.updated_at = now
        session.add(Event(complaint_id=lead.id, at=now, actor=actor, kind="incident_merged_in",
                          detail={"incident": survivor.id, "codes": [c.tracking_code for c in moved]}))
        await recount(session, survivor)
        return await info(session, survivor)


async def split(core: Core, code: str, actor: str) -> IncidentSummary | None:
    """Take one complaint out of its incident, with its own deadlines again.

    When it led the incident the next report leads; an incident left with one complaint
    ends. Returns the incident as it is after (None when it ended).
    """
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        [complaint] = await _by_codes(session, [code.upper()])
        if complaint.incident_id is None:
            raise LifecycleError(f"{complaint.tracking_code} is in no incident")
        incident = await session.get(Incident, complaint.incident_id, with_for_update=True)
        rest = await members(session, complaint, open_only=False)
        first_hours, resolution_hours = core.config.deadlines.hours_for(
            core.directory.unit_slug(complaint.unit_id), complaint.category)
        if complaint.first_response_at is None and complaint.incident_role == MEMBER:
            complaint.first_response_due = core.calendar.add_working_hours(complaint.created_at, first_hours)
            complaint.resolution_due = core.calendar.add_working_hours(complaint.created_at, resolution_hours)
        complaint.incident_id = complaint.incident_role = None
        complaint.updated_at = now
        schedule_checks(core, complaint)
        session.add(Event(complaint_id=complaint.id, at=now, actor=actor, kind="incident_split",
                          detail={"incident": incident.id}))
        if incident.lead_complaint_id == complaint.id and rest:
            incident.lead_complaint_id = rest[0].id
            rest[0].incident_role = LEAD
            schedule_checks(core, rest[0])
        incident.updated_at = now
        if rest:
            session.add(Event(complaint_id=incident.lead_complaint_id, at=now, actor=actor, kind="incident_split_off",
                              detail={"incident": incident.id, "code": complaint.tracking_code}))
        if len(rest) <= 1:
            incident.state, incident.reports = "ended", len(rest)
            for other in rest:
                other.incident_id = other.incident_role = None
                schedule_checks(core, other)
            await session.flush()
            return None
        await recount(session, incident)
        return await info(session, incident)


async def describe(core: Core, code: str) -> IncidentSummary | None:
    """The incident a complaint is in, if any."""
    async with core.sessions() as session:
        complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code.upper()))
        if complaint is None:
            raise LifecycleError(f"no complaint {code}")
        if complaint.incident_id is None:
            return None
        incident = await session.get(Incident, complaint.incident_id)
        while incident.merged_into_id is not None:
            incident = await session.get(Incident, incident.merged_into_id)
        return await info(session, incident)


async def keep_separate(core: Core, code: str, candidate: str, actor: str) -> None:
    """Record that an officer kept a suggested complaint out of an incident."""
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        [complaint] = await _by_codes(session, [code.upper()])
        session.add(Event(complaint_id=complaint.id, at=now, actor=actor, kind="incident_kept_separate",
                          detail={"candidate": candidate.upper()}))


def suggestion(core: Core, directory: StaffDirectory, complaint: Complaint, decision: Decision) -> list[outbox.Queued]:
    """"Looks like incident #… (N reports): join / keep separate", to the complaint's officers."""
    best = decision.best
    text_key = "incidents.suggested" if best.incident_id else "incidents.suggested_one"
    queued = to_staff(core, directory, directory.assignees(complaint), f"suggest:{complaint.tracking_code}", text_key,
                      complaint, incident=best.incident_id or "", reports=decision.reports, candidate=best.tracking_code,
                      score=f"{best.score.value:.2f}", reasons="; ".join(best.score.reasons))
    # The chat shows Join / Keep separate beside the usual buttons (channels/telegram/staff.py).
    action = f"{SUGGESTION_ACTION}:{best.tracking_code}"
    return [replace(item, message=replace(item.message, actions=(*STAFF_ACTIONS, action))) for item in queued]


def share_searches(core: Core, session: AsyncSession, now: datetime,
                   searches: list[tuple[match.Features, str | None, float | None, float | None]]) -> None:
    """Run each candidate search that several of the complaints about to be grouped in this
    transaction make once (``candidates.Shared``), until ``finish_batch``. ``searches``:
    each complaint's features, category and coordinates."""
    _batch(session).shared = candidates.Shared(core.config.incidents, now, searches)


async def at_intake(core: Core, session: AsyncSession, now: datetime, complaint: Complaint, category: str | None,
                    found: match.Features) -> tuple[tuple[int, int] | None, Decision | None]:
    """Join an incident or suggest one for a complaint just filed (intake's transaction):
    (incident id, reports) when joined, and the decision when only suggested."""
    batch = _batch(session)
    batch.filed.add(complaint.id)
    # The complaints of this batch that joined an incident are not written yet, and a
    # shared search ran before the incidents the batch made: the search reads both from here.
    decision = await candidates.find(session, core.config.incidents, found, category, now,
                                     before_id=complaint.id, latitude=complaint.latitude, longitude=complaint.longitude,
                                     joined=batch.incidents(), shared=batch.shared)
    joined = await attach(core, session, now, complaint, decision)
    if joined is not None:
        return (joined[0].id, joined[1]), None
    return None, decision if decision.action == "suggest" else None
