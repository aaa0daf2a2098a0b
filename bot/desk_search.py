"""Search over what citizens and staff wrote, ignoring case and diacritics ("mat dien" finds
"Mất điện"), from an index.

Each message keeps its subject and text folded (``bot.folding.fold``) in ``messages.folded``,
written by the code that stores the message (intake, answers, notes). A message some other
writer stored without it is folded by ``index_pending``, which finds such rows through a
partial index (``folded IS NULL``) and runs before every search, so nothing written is
missing from results for long.

SQLite: an FTS5 table over that column, kept by triggers (migration 0008); a phrase query
of whole words, read newest first, which FTS5 does without sorting.
PostgreSQL: a trigram GIN index (pg_trgm) answers ``folded LIKE '%phrase%'``; the planner
chooses between it and walking the messages newest first, whichever the phrase's rarity
makes cheaper.
"""

from __future__ import annotations

from sqlalchemy import column, select, table, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import Core
from bot.folding import fold
from storage.models import Complaint, Message

PENDING_BATCH = 1000


async def index_pending(core: Core, limit: int = PENDING_BATCH) -> int:
    """Fold messages stored without their folded text; how many were folded."""
    async with core.sessions() as session:
        pending = (await session.execute(select(Message.id, Message.subject, Message.text)
                                         .where(Message.folded.is_(None)).limit(limit))).all()
    if not pending:
        return 0
    async with core.sessions() as session, session.begin():
        for id_, subject, body in pending:
            await session.execute(update(Message).where(Message.id == id_, Message.folded.is_(None))
                                  .values(folded=fold(f"{subject or ''} {body}")))
    return len(pending)


def phrase(query: str) -> str:
    """The folded phrase a search looks for ("Mất  ĐIỆN!" -> "mat dien")."""
    return fold(query)[:200]


async def matching_complaints(session: AsyncSession, folded: str, conditions: list, limit: int) -> list[int]:
    """Ids of the complaints, newest message first, whose messages hold the phrase and which
    meet the conditions (on ``Complaint``: the units one may see, the filters); at most limit."""
    if not folded:
        return []
    query = select(Message.id, Message.complaint_id).join(Complaint, Complaint.id == Message.complaint_id)
    if session.bind.dialect.name == "sqlite":
        # A phrase of whole words. (Its last word as a prefix would find "mat die" while one
        # types, but a short prefix expands to thousands of words: 0.6 s instead of 10 ms.)
        index = table("messages_fts", column("rowid"))
        query = query.join(index, index.c.rowid == Message.id).where(
            text("messages_fts MATCH :match").bindparams(match=f'"{folded}"')).order_by(index.c.rowid.desc())
    else:
        # fold() leaves only word characters and spaces: nothing for LIKE to read as a pattern.
        query = query.where(Message.folded.like(f"%{folded}%")).order_by(Message.id.desc())
    found: dict[int, None] = {}
    # Several messages of one complaint may match: read a few more than needed, keep each once.
    for _, complaint_id in (await session.execute(query.where(*conditions).limit(limit * 3))).all():
        found.setdefault(int(complaint_id))
        if len(found) >= limit:
            break
    return list(found)
