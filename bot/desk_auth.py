"""Signing staff in to the desk without passwords: a one-time link sent to the person's
linked Telegram chat or e-mail address, then a session the browser holds in a cookie.

Nothing that would let someone in is kept readable: links and sessions are stored as the
SHA-256 of their random token, so a copy of the database signs nobody in. A link works
once and for minutes; a session expires, and "sign out everywhere" revokes all of a
person's sessions. Guessing is refused and slowed: link requests are limited per client
address and per person, and a client that presented too many bad, stale or used links in
the window is refused even a good one until the window passes. Every request, sign-in,
refusal and sign-out is written to ``desk_sign_ins`` (the client address hashed, never
an e-mail address) and logged.

The link goes through the outbox like every message staff must not miss, queued in the
transaction that makes it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import outbox
from bot.core import Core
from bot.staff import officer_of
from contract.desk import DeskSession, SignInOutcome, SignInPolicy
from contract.messages import Outgoing
from storage.models import DeskLink, DeskSession as StoredSession, DeskSignIn, Staff

log = logging.getLogger(__name__)

LINK_PATH = "/desk/sign-in/"
FAILURES = ("bad_link", "expired_link", "used_link")
# Every request for a link counts against the client, refused ones too.
REQUESTS = ("link_requested", "link_refused", "limited")


def token_hash(token: str) -> str:
    """The stored form of a link's or session's token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def client_key(address: str) -> str:
    """A client's address as the log keeps it: hashed (an IP address is personal data)."""
    return hashlib.sha256(("desk-client:" + address).encode()).hexdigest()[:32]


def _record(session: AsyncSession, now: datetime, client: str, kind: str, staff_id: int | None = None,
            detail: str = "") -> None:
    session.add(DeskSignIn(at=now, staff_id=staff_id, client=client, kind=kind, detail=detail[:200]))
    log.info("desk sign-in", extra={"fields": {"event": kind, "staff_id": staff_id, "client": client[:8]}})


async def _count(session: AsyncSession, client: str, kinds: tuple[str, ...], since: datetime) -> int:
    return await session.scalar(select(func.count()).select_from(DeskSignIn).where(
        DeskSignIn.client == client, DeskSignIn.kind.in_(kinds), DeskSignIn.at >= since)) or 0


async def _find_member(session: AsyncSession, who: str) -> Staff | None:
    who = who.strip()
    if not who or len(who) > 320:
        return None
    return await session.scalar(select(Staff).where(
        Staff.active.is_(True), or_(Staff.slug == who.lower(), func.lower(Staff.email) == who.lower())).limit(1))


def _link_message(core: Core, member: Staff, url: str, minutes: int) -> Outgoing | None:
    language = core.config.service.default_language
    text = core.texts.get(language, "desk.link_message", name=member.name, url=url, minutes=minutes)
    subject = core.texts.get(language, "desk.link_subject")
    key = f"desk-link:{member.id}:{secrets.token_hex(8)}"
    # Telegram first: a phone at hand is where a desk officer sees it soonest.
    if member.telegram_chat_id is not None:
        return Outgoing(channel="telegram", recipient=str(member.telegram_chat_id), text=text, key=key,
                        kind="desk_link", audience="staff", language=language, subject=subject)
    if member.email:
        return Outgoing(channel="email", recipient=member.email, text=text, key=key, kind="desk_link",
                        audience="staff", language=language, subject=subject)
    return None


async def request_link(core: Core, who: str, client_address: str, policy: SignInPolicy) -> str:
    """Send a sign-in link to the staff member named (slug or e-mail) if there is one.

    Returns ``sent``, ``unknown`` (nobody by that name, or nowhere to send to), or
    ``limited``; the page says the same for ``sent`` and ``unknown``, so it tells nobody
    who is staff.
    """
    now = core.clock.now()
    client = client_key(client_address)
    since = now - timedelta(minutes=policy.window_minutes)
    async with core.sessions() as session, session.begin():
        if await _count(session, client, REQUESTS, since) >= policy.requests_per_window:
            _record(session, now, client, "limited", detail="link requests")
            return "limited"
        member = await _find_member(session, who)
        if member is None:
            _record(session, now, client, "link_refused", detail="unknown")
            return "unknown"
        recent = await session.scalar(select(func.count()).select_from(DeskLink).where(
            DeskLink.staff_id == member.id, DeskLink.created_at >= now - timedelta(hours=1))) or 0
        if recent >= policy.links_per_hour:
            _record(session, now, client, "limited", member.id, "links per hour")
            return "limited"
        token = secrets.token_urlsafe(32)
        minutes = max(1, round(policy.link_minutes))
        message = _link_message(core, member, core.public_url + LINK_PATH + token, minutes)
        if message is None:
            _record(session, now, client, "link_refused", member.id, "no telegram chat or email")
            return "unknown"
        session.add(DeskLink(token_hash=token_hash(token), staff_id=member.id, channel=message.channel,
                             created_at=now, expires_at=now + timedelta(minutes=policy.link_minutes)))
        await outbox.enqueue(session, now, message)
        _record(session, now, client, "link_requested", member.id, message.channel)
    core.outbox_ready.set()
    return "sent"


async def sign_in(core: Core, token: str, client_address: str, policy: SignInPolicy) -> SignInOutcome:
    """Use a sign-in link (once) and open a session, or say why not."""
    now = core.clock.now()
    client = client_key(client_address)
    async with core.sessions() as session, session.begin():
        since = now - timedelta(minutes=policy.window_minutes)
        if await _count(session, client, FAILURES, since) >= policy.failures_per_window:
            _record(session, now, client, "limited", detail="bad links")
            return SignInOutcome(None, "limited")
        # Claimed by the update itself: of two browsers racing with one link, one wins.
        claimed = (await session.execute(
            update(DeskLink).where(DeskLink.token_hash == token_hash(token), DeskLink.used_at.is_(None),
                                   DeskLink.expires_at > now)
            .values(used_at=now).returning(DeskLink.staff_id))).scalar()
        if claimed is None:
            link = await session.scalar(select(DeskLink).where(DeskLink.token_hash == token_hash(token)))
            refusal = "unknown" if link is None else "used" if link.used_at is not None else "expired"
            kind = {"unknown": "bad_link", "used": "used_link", "expired": "expired_link"}[refusal]
            _record(session, now, client, kind, link.staff_id if link else None)
            return SignInOutcome(None, refusal)
        member = await session.get(Staff, claimed)
        if member is None or not member.active:
            _record(session, now, client, "bad_link", claimed, "inactive")
            return SignInOutcome(None, "unknown")
        secret = secrets.token_urlsafe(32)
        expires = now + timedelta(hours=policy.session_hours)
        session.add(StoredSession(token_hash=token_hash(secret), staff_id=member.id, created_at=now,
                                  expires_at=expires))
        _record(session, now, client, "signed_in", member.id)
    return SignInOutcome(DeskSession(officer_of(member), secret, expires, member.email))


async def session_for(core: Core, token: str) -> DeskSession | None:
    """The signed-in staff member a session token belongs to, if it is live."""
    now = core.clock.now()
    async with core.sessions() as session:
        row = (await session.execute(
            select(StoredSession, Staff).join(Staff, Staff.id == StoredSession.staff_id)
            .where(StoredSession.token_hash == token_hash(token), StoredSession.revoked_at.is_(None),
                   StoredSession.expires_at > now, Staff.active.is_(True)))).first()
    if row is None:
        return None
    stored, member = row
    return DeskSession(officer_of(member), token, stored.expires_at, member.email)


async def sign_out(core: Core, token: str, client_address: str, everywhere: bool = False) -> None:
    """End this session, or every session of its staff member."""
    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        stored = await session.scalar(select(StoredSession).where(StoredSession.token_hash == token_hash(token)))
        if stored is None:
            return
        condition = StoredSession.staff_id == stored.staff_id if everywhere else StoredSession.id == stored.id
        await session.execute(update(StoredSession).where(condition, StoredSession.revoked_at.is_(None))
                              .values(revoked_at=now))
        _record(session, now, client_key(client_address), "signed_out_everywhere" if everywhere else "signed_out",
                stored.staff_id)
