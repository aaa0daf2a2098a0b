"""The staff desk over HTTP, on SQLite and PostgreSQL: signing in with a one-time link, the
queues and their counts, search that ignores diacritics, a complaint's page with its whole
story, and the actions, which act as the same commands from Telegram do."""

from __future__ import annotations

from sqlalchemy import select

from bot import lifecycle
from storage.models import Complaint, Event, Message, OutboxMessage
from tests.desk_support import desk, file_complaint, page, post_form, signed_in  # noqa: F401 - fixture

__all__ = ["desk"]


async def test_an_officer_signs_in_finds_a_complaint_without_diacritics_and_answers_it(desk):
    code = await file_complaint(desk, "Mất điện cả khu tập thể Thành Công từ sáng, xin kiểm tra giúp.")
    other = await file_complaint(desk, "Rác thải đổ trộm ở ngõ 12 phố Láng Hạ, mất điện nữa.", sender="+84912000111")
    agent = await signed_in(desk, "nguyen-van-an")
    try:
        status, text = await page(agent, "/desk/queue/unit")
        assert status == 200 and code in text and other not in text
        status, text = await page(agent, "/desk/queue/all?q=mat+dien")
        assert status == 200 and code in text and other not in text  # the other unit's complaint is not found
        status, text = await page(agent, f"/desk/case/{code}")
        assert status == 200 and "Mất điện cả khu" in text and "+84 91* *** 678" in text and "+84912345678" not in text
        status, where = await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/answer",
                                        text="Điện lực đã khắc phục lúc 14:00.")
        assert status == 303 and where == f"/desk/case/{code}?done=answer"
        async with desk.core.sessions() as session:
            complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
            answer = await session.scalar(select(OutboxMessage).where(OutboxMessage.key.like("answer:%")))
        assert complaint.status == "answered" and answer.channel == "sms" and answer.recipient == "+84912345678"
        status, text = await page(agent, f"/desk/case/{code}")
        assert "Điện lực đã khắc phục lúc 14:00." in text
        status, _ = await page(agent, f"/desk/case/{other}")
        assert status == 403
    finally:
        await agent.close()
