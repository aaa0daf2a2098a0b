"""The candidate search at intake: which open complaints (and so which incidents) a new
complaint may report the same event as, each with a score and its reasons.

One statement per search, a few index range scans joined by UNION ALL, each over open
complaints only (the partial indexes of migration 0007) and within the time window
(``query`` says which). Each branch is capped, so the work per complaint does not grow
with the store. An intake batch runs a search several of its complaints make once
(``Shared``): in a storm they name the same kind of event at the same place, and all read
the same rows. The place key is coarse (usually the district), so a complaint of the same
event nearly always shares it; one naming two districts may be found only through its
kind of event without a place, or its coordinates.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache

from sqlalchemy import Text, bindparam, cast, or_, select, text, type_coerce, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import NullType

from bot.incidents.config import IncidentsConfig
from bot.incidents.match import Features, Rule, Score, explained, parts
from bot.statuses import OPEN
from storage.models import Complaint

# Geo cells of 0.02° (about 2.2 km north-south, 2 km east-west at Hà Nội's latitude).
CELL_DEGREES = 0.02
# The most a candidate reporting another kind of event can score (event -1, place 1,
# words 1: see bot.incidents.match.score).
BEST_WITH_OTHER_EVENT = 0.2
# Rows the main branch of the search reads at most, and each side branch.
BRANCH_LIMIT = 100
SIDE_LIMIT = 40
RECENT_LIMIT = 20
# Candidates scored per incident: the first this many of its members the search returns
# (the closest branch first, newest first). The rest still count for its size. A storm's
# incident holds hundreds of near-identical reports, and each new report scored every one
# of them the search read, a fifth of intake's CPU (bench/README.md, 2026-12-06); on the
# labelled set (tests/test_incident_matching.py) 12 decides exactly as all do, 6 does not.
PER_INCIDENT = 12
# Features of open complaints read lately, by their stored form and coordinates: a
# complaint's features never change once filed, and each is read again for every new
# complaint in its window. A search reads the newest few hundred open complaints of its
# kind. Each costs 2-4 KiB, its names interned and its empty sets shared (match.Features,
# places.Place; bench/features_memory.py): a storm whose citizens each write their own text
# fills it, and at 4,096 the serving process went past 150 MB with them where 2,048 kept it
# under at the same rate (bench/README.md, 2026-12-07, thirteenth session).
FEATURE_CACHE = 2_048
# The partial indexes' condition, built from bot.statuses in the order the migration wrote it.
OPEN_CONDITION = "status IN (" + ", ".join(f"'{status}'" for status in sorted(OPEN)) + ")"


def geo_cell(latitude: float | None, longitude: float | None) -> int | None:
    """The coarse cell a point lies in, as one integer the store indexes."""
    if latitude is None or longitude is None:
        return None
    row, column = math.floor((latitude + 90) / CELL_DEGREES), math.floor((longitude + 180) / CELL_DEGREES)
    return row * 100_000 + column


def cells_around(latitude: float, longitude: float, distance_m: float) -> list[int]:
    """The cells within ``distance_m`` of a point (its own and enough rings around it)."""
    rings = max(1, math.ceil(distance_m / (CELL_DEGREES * 111_000 * math.cos(math.radians(latitude)))))
    centre = geo_cell(latitude, longitude)
    row, column = divmod(centre, 100_000)
    return [(row + dr) * 100_000 + column + dc for dr in range(-rings, rings + 1) for dc in range(-rings, rings + 1)]


@dataclass
class Candidate:
    """An open complaint that may report the same event, with what it belongs to."""

    complaint_id: int
    tracking_code: str
    incident_id: int | None
    created_at: datetime
    score: Score


@dataclass
class Decision:
    """What to do with a new complaint: join, suggest or nothing, and the best candidate."""

    action: str | None  # "join" | "suggest" | None
    best: Candidate | None
    rule: Rule
    reports: int = 0  # complaints in the best candidate's incident (1 when it has none)
    considered: int = 0
    others: list[Candidate] = field(default_factory=list)
    scored: int = 0  # of those considered: at most PER_INCIDENT of each incident's members


def stamp(complaint: Complaint, found: Features) -> None:
    """Write what the candidate search reads onto a complaint before it is stored."""
    complaint.match_topic = found.topic
    complaint.match_place = found.place.key
    complaint.geo_cell = geo_cell(complaint.latitude, complaint.longitude)
    complaint.match_features = found.to_json()


# The stored features as text: decoded only when not already known (``_features``). The
# time as the driver gives it (``_stored_time``): a search reads a few hundred rows, and
# making each one's time an aware datetime was a sixteenth of an Open311 complaint's CPU
# (bench/README.md, 2026-12-06, seventh session); only the few explained need it.
COLUMNS = (Complaint.id, Complaint.tracking_code, Complaint.incident_id,
           type_coerce(Complaint.created_at, NullType()).label("created_at"), Complaint.latitude,
           Complaint.longitude, cast(Complaint.match_features, Text).label("match_features"))
_known: OrderedDict[tuple, Features] = OrderedDict()


def _features(data: str, latitude: float | None, longitude: float | None) -> Features:
    key = (data, latitude, longitude)  # by content: one process may read several stores (tests)
    found = _known.get(key)
    if found is None:
        found = Features.from_json(json.loads(data), latitude, longitude)
        _known[key] = found
        if len(_known) > FEATURE_CACHE:
            _known.popitem(last=False)
    return found


def _stored_time(value: str | datetime) -> datetime:
    """A time as the search read it, aware in UTC: SQLite's text (storage.models.UTCDateTime
    stores UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``, which sorts as the time does) or
    PostgreSQL's aware datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def query(found: Features, rule: Rule, now: datetime, before_id: int | None, latitude: float | None,
          longitude: float | None, spare: int = 0) -> tuple[object, dict]:
    """The candidate search as one statement and its parameters (also what bench/incidents.py
    EXPLAINs).

    Branches, each an index range scan over open complaints in the window, newest first:
    the same kind of event at the same place key, or with no place, or (the latest few)
    anywhere; the same place with another or no kind of event; the geo cells around; and
    when the kind of event or the place is unknown, the same kind anywhere or the same
    place, and the most recent. ``spare``: rows each branch reads beyond its cap (the
    complaints of a batch searched together, which come first).
    """
    located = latitude is not None and longitude is not None
    params = {"since": now - timedelta(minutes=rule.window_minutes), "topic": found.topic,
              "place": found.place.key, "before": before_id}
    if located:
        params["cells"] = cells_around(latitude, longitude, 2 * rule.distance_m)
    return _statement(bool(found.topic), bool(found.place.key), located, before_id is not None, spare), params


@cache
def _statement(topic: bool, place: bool, located: bool, before: bool, spare: int = 0):
    """The statement for one shape of search, built once (its values are parameters)."""
    def branch(limit: int, *conditions):
        limit += spare
        statement = select(*COLUMNS).where(text(OPEN_CONDITION), Complaint.created_at >= bindparam("since"),
                                           *conditions)
        if before:
            statement = statement.where(Complaint.id < bindparam("before"))
        return select(statement.order_by(Complaint.created_at.desc()).limit(limit).subquery())

    same_topic, same_place = Complaint.match_topic == bindparam("topic"), Complaint.match_place == bindparam("place")
    branches = []
    if topic and place:
        branches += [branch(BRANCH_LIMIT, same_topic, same_place),
                     branch(SIDE_LIMIT, same_topic, Complaint.match_place.is_(None)),
                     # The latest of the same kind anywhere: a place key of another kind
                     # (a building, a street) may still be the same place.
                     branch(RECENT_LIMIT, same_topic),
                     branch(SIDE_LIMIT, same_place,
                            or_(Complaint.match_topic.is_(None), Complaint.match_topic != bindparam("topic")))]
    elif topic:
        branches.append(branch(BRANCH_LIMIT, same_topic))
    elif place:
        branches += [branch(BRANCH_LIMIT, same_place), branch(SIDE_LIMIT)]
    else:
        branches.append(branch(BRANCH_LIMIT))
    if located:
        branches.append(branch(SIDE_LIMIT, Complaint.geo_cell.in_(bindparam("cells", expanding=True))))
    return union_all(*branches) if len(branches) > 1 else branches[0]


async def _generic_plans(session: AsyncSession) -> None:
    """PostgreSQL: plan the search once per connection, not at every execution.

    Left to itself PostgreSQL plans a prepared statement afresh for each set of values
    when it guesses that pays; for this union of small index scans planning took longer
    (2-3 ms) than running it (under 1 ms), and the plan never changes with the values.
    The setting lasts until the end of the caller's transaction.
    """
    if session.bind.dialect.name != "postgresql":
        return
    await session.connection()  # the transaction begins here if it has not yet
    transaction = session.get_transaction()
    if session.info.get("incidents_generic_plans") is not transaction:
        await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        session.info["incidents_generic_plans"] = transaction


class Shared:
    """The searches of one intake batch: those that several of its complaints make run once.

    The batch's complaints are in the store already, so one run without ``before`` serves
    every complaint that makes the same search, each reading only the rows filed before it
    (a lower id); each branch reads the batch's size more rows (rounded up), so the store's
    rows are not crowded out. A search only one complaint makes runs as it would alone.
    """

    ROUND = 32

    def __init__(self, config: IncidentsConfig, now: datetime,
                 searches: list[tuple[Features, str | None, float | None, float | None]]) -> None:
        self.spare = -(-len(searches) // self.ROUND) * self.ROUND
        self.rows: dict[tuple, list] = {}
        self.counts: dict[tuple, int] = {}
        for found, category, latitude, longitude in searches:
            rule = config.rule(found.topic, category)
            if config.enabled and rule.group:
                key = self.key(found, rule, now, latitude, longitude)[0]
                self.counts[key] = self.counts.get(key, 0) + 1

    def key(self, found: Features, rule: Rule, now: datetime, latitude: float | None,
            longitude: float | None) -> tuple[tuple, object, dict]:
        """The search's identity in the batch, its statement and its parameters."""
        statement, params = query(found, rule, now, None, latitude, longitude, self.spare)
        return (statement, *((name, tuple(value) if isinstance(value, list) else value)
                             for name, value in sorted(params.items()))), statement, params


async def _rows(session: AsyncSession, found: Features, rule: Rule, now: datetime, before_id: int | None,
                latitude: float | None, longitude: float | None, shared: Shared | None) -> list:
    if shared is not None and before_id is not None:
        key, statement, params = shared.key(found, rule, now, latitude, longitude)
        if shared.counts.get(key, 0) > 1:
            rows = shared.rows.get(key)
            if rows is None:
                rows = shared.rows[key] = await _execute(session, statement, params)
            return [row for row in rows if row[0] < before_id]
    statement, params = query(found, rule, now, before_id, latitude, longitude)
    return await _execute(session, statement, params)


async def _execute(session: AsyncSession, statement, params: dict) -> list:
    await _generic_plans(session)
    # Nothing the search reads waits in the session: joins update complaints at once, and
    # an incident's count (all that may be pending) is written with the commit.
    with session.no_autoflush:
        return (await session.execute(statement, params)).all()


async def find(session: AsyncSession, config: IncidentsConfig, found: Features, category: str | None,
               now: datetime, before_id: int | None = None, latitude: float | None = None,
               longitude: float | None = None, joined: Mapping[int, int] | None = None,
               shared: Shared | None = None) -> Decision:
    """Score the open complaints a new complaint may be about; decide join, suggest or nothing.

    ``joined``: complaints whose incident changed in the caller's transaction since its
    searches ran or that is not written yet (complaint id: incident id); the store's value
    is read for the others. ``shared``: the batch's searches (``Shared``), with
    ``before_id`` the complaint's own id.
    """
    joined = joined or {}
    rule = config.rule(found.topic, category)
    if not config.enabled or not rule.group:
        return Decision(None, None, rule)
    rows = await _rows(session, found, rule, now, before_id, latitude, longitude, shared)
    seen: set[int] = set()
    scored: list[tuple] = []  # (the score's parts, id, code, incident, created at as stored)
    sizes: dict[int, int] = {}
    apart = {o.topic for o in config.overrides if o.topic and o.group is False}
    for id_, code, incident_id, stored, lat, lon, data in rows:
        if id_ in seen or data is None:
            continue
        seen.add(id_)
        incident_id = joined.get(id_, incident_id)
        if incident_id is not None:
            sizes[incident_id] = sizes.get(incident_id, 0) + 1
            if sizes[incident_id] > PER_INCIDENT:
                continue  # counted, not scored
        other = _features(data, lat, lon)
        if other.topic in apart:
            continue  # a procedure is its citizen's own case
        if found.topics and other.topics and found.topic != other.topic \
                and found.topics_set.isdisjoint(other.topics_set) and BEST_WITH_OTHER_EVENT < rule.suggest_above:
            continue  # another kind of event scores below any suggestion, whatever the place
        scored.append((parts(found, other, rule), id_, code, incident_id, stored))
    if not scored:
        return Decision(None, None, rule, considered=len(seen))

    def rank(item: tuple) -> tuple:
        # Equal scores: the bigger incident (more reports seen), then the most recent (the
        # stored times of one store compare as the times do).
        incident_id = item[3]
        size = sizes.get(incident_id, 1) if incident_id else 1
        return (item[0][0] + 0.001 * math.log(size + 1), item[4])

    scored.sort(key=rank, reverse=True)
    # Only the best few are explained (their reasons written out for the audit event and
    # the officer): the values rank them all.
    chosen = []
    for scored_parts, id_, code, incident_id, stored in scored[:4]:
        at = _stored_time(stored)
        chosen.append(Candidate(id_, code, incident_id, at, explained(scored_parts, (now - at).total_seconds() / 60)))
    best, *others = chosen
    action = "join" if best.score.value >= rule.join_above else "suggest" if best.score.value >= rule.suggest_above \
        else None
    reports = sizes.get(best.incident_id, 1) if best.incident_id else 1
    return Decision(action, best, rule, reports, len(seen), others, len(scored))
