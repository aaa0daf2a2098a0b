"""Reply windows as the store sees them: on a channel that may write to a citizen only for a
while after their last message (Zalo's consultation messages), who is inside their window
now and how many messages each has been sent since their last message.

Read by ``feedback-intake zalo status``; the same counts tell the operator how close the
service runs to a limit on free replies, when Zalo has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, func, select

from bot.core import Core
from storage.models import Message, OutboxMessage


@dataclass(frozen=True)
class WindowUse:
    """The reply windows open on a channel now."""

    citizens: int  # citizens whose last message is within the window
    replies: int  # messages sent to them since their last message
    most: int  # the most sent to one of them


async def window_use(core: Core, channel: str, hours: float) -> WindowUse:
    """Who is inside their reply window on a channel, and what they were sent since writing."""
    since = core.clock.now() - timedelta(hours=hours)
    last = (select(Message.sender.label("address"), func.max(Message.created_at).label("at"))
            .where(Message.channel == channel, Message.direction == "in", Message.sender.is_not(None),
                   Message.created_at >= since)
            .group_by(Message.sender).subquery())
    sent = (select(last.c.address, func.count(OutboxMessage.id).label("count"))
            .select_from(last)
            .outerjoin(OutboxMessage, and_(OutboxMessage.channel == channel, OutboxMessage.recipient == last.c.address,
                                           OutboxMessage.status == "sent", OutboxMessage.sent_at >= last.c.at))
            .group_by(last.c.address))
    async with core.sessions() as session:
        counts = [count for _, count in (await session.execute(sent)).all()]
    return WindowUse(citizens=len(counts), replies=sum(counts), most=max(counts, default=0))
