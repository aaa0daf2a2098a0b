"""How to reach a citizen: their contact points, linked with where each link came from,
and the one a message should go to now.

A citizen may be reachable several ways: a web-form citizen who gave a phone and an
email address, an Open311 request with both, a Telegram citizen who shared their own
phone number (Telegram confirms it is theirs), a Zalo citizen who shared theirs. Those
contact points are linked (``contact_links``, both ways, with the source), and never on a
guess: a tracking code named from an unknown address links nothing, since anyone who saw
the code could then redirect the citizen's answers.

A message goes to the complaint's own contact point first (the channel the citizen used),
unless that channel cannot carry it now: a channel with a reply window (Zalo's
consultation window) that closed, a channel that carries only some kinds of message (a
template service such as ZNS), or one this process has no sender for while another
contact point has one. Then the next contact point in ``outbox.fallback_order``. "zns"
is reached through any phone number the citizen gave.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from storage.db import insert_ignoring_conflicts
from storage.models import Complaint, Contact, ContactLink, Message, OutboxMessage

# A template message service reaches a citizen's phone: a channel whose addresses are the
# phone numbers of the citizen's SMS contact points.
PHONE_CHANNELS = {"zns": "sms"}


@dataclass(frozen=True)
class Point:
    """One way to reach a citizen: a channel and an address (a contact, or a phone for ZNS)."""

    channel: str
    address: str
    contact: Contact
    via: str | None = None


async def link(session: AsyncSession, now: datetime, groups: Iterable[tuple[Sequence[int], str]]) -> None:
    """Link the contact points of each group, given together by one citizen, both ways,
    with the source (the channel they were given on); a link made once stays."""
    rows = {(a, b): source for ids, source in groups for a in ids for b in ids if a != b}
    if rows:
        await session.execute(insert_ignoring_conflicts(session, ContactLink), [
            dict(contact_id=a, linked_id=b, source=source[:40], created_at=now) for (a, b), source in rows.items()])


async def contacts_of(session: AsyncSession, complaints: Sequence[Complaint],
                      plain: bool = False) -> dict[int, list[Contact]]:
    """Each complaint's contact points: its own, its alternate, then every linked one.

    ``plain``: as rows of the columns a message needs (id, channel, address, via), not ORM
    objects (the sweep reads thousands at once)."""
    own = {c.id: [i for i in (c.contact_id, c.alternate_contact_id) if i] for c in complaints}
    ids = {i for values in own.values() for i in values}
    if not ids:
        return {c.id: [] for c in complaints}
    links = (await session.execute(select(ContactLink.contact_id, ContactLink.linked_id)
                                   .where(ContactLink.contact_id.in_(ids)))).all()
    linked: dict[int, list[int]] = {}
    for a, b in links:
        linked.setdefault(a, []).append(b)
    every = ids | {b for _, b in links}
    if plain:
        table = Contact.__table__
        found = (await session.execute(select(table.c.id, table.c.channel, table.c.address, table.c.via)
                                       .where(table.c.id.in_(every)))).all()
    else:
        found = (await session.scalars(select(Contact).where(Contact.id.in_(every)))).all()
    rows = {c.id: c for c in found}
    out = {}
    for complaint in complaints:
        order = list(own[complaint.id])
        for first in own[complaint.id]:
            order += sorted(linked.get(first, ()))
        out[complaint.id] = [rows[i] for i in dict.fromkeys(order) if i in rows]
    return out


def points(core: Core, contacts: Sequence[Contact]) -> list[Point]:
    """The ways to reach a citizen with these contacts: the first contact (their own channel)
    first, then the rest in ``outbox.fallback_order``; ZNS through their phone numbers."""
    found = [Point(c.channel, c.address, c, c.via) for c in contacts]
    for channel, phone_channel in PHONE_CHANNELS.items():
        found += [Point(channel, c.address, c) for c in contacts if c.channel == phone_channel]
    if not found:
        return []
    order = {channel: i for i, channel in enumerate(core.config.outbox.fallback_order)}
    first, rest = found[0], found[1:]
    rest.sort(key=lambda point: order.get(point.channel, len(order)))
    return [first, *rest]


async def windows(core: Core, session: AsyncSession, candidates: Iterable[Point], now: datetime) -> set[tuple[str, str]]:
    """The (channel, address) pairs whose reply window is closed now (or used up): one
    statement per channel with a window, whatever the number of points (intake asks for a
    whole batch's at once), and where the window also counts messages one per citizen
    inside it."""
    wanted: dict[str, set[str]] = {}
    for point in candidates:
        terms = core.senders.get(point.channel)
        if terms is not None and terms.window is not None:
            wanted.setdefault(point.channel, set()).add(point.address)
    closed = set()
    for channel, addresses in wanted.items():
        window = core.senders[channel].window
        last_in = dict((await session.execute(
            select(Message.sender, func.max(Message.created_at))
            .where(Message.channel == channel, Message.direction == "in", Message.sender.in_(sorted(addresses)))
            .group_by(Message.sender))).all())
        inside = {}
        for address in addresses:
            at = last_in.get(address)
            if at is None or now - at > timedelta(hours=window.hours):
                closed.add((channel, address))
            else:
                inside[address] = at
        # A window that also counts messages (rare): each citizen's since their own last one.
        if window.messages is not None:
            for address, at in inside.items():
                count = await session.scalar(select(func.count()).select_from(OutboxMessage).where(
                    OutboxMessage.channel == channel, OutboxMessage.recipient == address,
                    OutboxMessage.created_at > at))
                if count >= window.messages:
                    closed.add((channel, address))
    return closed


def usable(core: Core, point: Point, kind: str, closed: set[tuple[str, str]]) -> bool:
    """Whether this process can send this kind of message there now."""
    terms = core.senders.get(point.channel)
    if terms is None:
        return False
    if terms.kinds is not None and kind not in terms.kinds:
        return False
    return (point.channel, point.address) not in closed


async def choose_each(core: Core, session: AsyncSession, contacts: dict[int, Sequence[Contact]], kind: str,
                      now: datetime) -> dict[int, Point | None]:
    """``choose`` for many citizens at once (by complaint id), without building every contact
    point of each when the first (the citizen's own channel) can carry the message now and
    has no reply window to look up: that one is ``choose``'s answer whatever the others."""
    senders = core.senders
    # With no reply window on any channel of this process, no contact point is closed, and
    # ``choose`` needs nothing from the store.
    windowless = all(terms.window is None for terms in senders.values())
    out: dict[int, Point | None] = {}
    windowed: dict[int, Sequence[Contact]] = {}
    for complaint_id, points_of in contacts.items():
        first = points_of[0] if points_of else None
        terms = senders.get(first.channel) if first is not None else None
        if terms is not None and terms.window is None and (terms.kinds is None or kind in terms.kinds):
            out[complaint_id] = Point(first.channel, first.address, first, first.via)
        elif windowless:
            candidates = points(core, points_of)
            out[complaint_id] = next((p for p in candidates if usable(core, p, kind, set())),
                                     candidates[0] if candidates else None)
        else:
            windowed[complaint_id] = points_of
    if windowed:
        out.update(zip(windowed, await choose_all(core, session, list(windowed.values()), kind, now)))
    return {complaint_id: out[complaint_id] for complaint_id in contacts}


async def choose(core: Core, session: AsyncSession, contacts: Sequence[Contact], kind: str, now: datetime,
                 tried: Iterable[str] = ()) -> Point | None:
    """Where a message of this kind goes now; None when no contact point is left.

    ``tried``: channels this message already failed on; None when none is left.
    """
    tried = set(tried)
    candidates = [p for p in points(core, contacts) if p.channel not in tried]
    if not candidates:
        return None
    return _pick(core, candidates, kind, await windows(core, session, candidates, now), bool(tried))


async def choose_all(core: Core, session: AsyncSession, citizens: Sequence[Sequence[Contact]], kind: str,
                     now: datetime) -> list[Point | None]:
    """``choose`` (nothing tried yet) for each of many citizens, their reply windows looked
    up together: a batch's acknowledgements cost a statement per channel with a window, not
    one per citizen."""
    candidates = [points(core, contacts) for contacts in citizens]
    closed = await windows(core, session, [point for found in candidates for point in found], now)
    return [_pick(core, found, kind, closed, False) if found else None for found in candidates]


def _pick(core: Core, candidates: Sequence[Point], kind: str, closed: set[tuple[str, str]], tried: bool) -> Point | None:
    for point in candidates:
        if usable(core, point, kind, closed):
            return point
    # Nothing can carry it now. A first message still goes to the citizen's own channel:
    # it waits there for a process with a sender, or fails there and falls back as any.
    return None if tried else candidates[0]
