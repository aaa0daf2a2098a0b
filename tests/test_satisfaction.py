"""Satisfaction: the survey after resolution, ratings by reply or by code, low ratings reopen."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot import intake, lifecycle, satisfaction
from bot.core import Core
from contract.messages import Inbound
from storage.models import Complaint, Event, OutboxMessage

PHONE = "+84912345678"
STAFF = {"staff": [
    {"slug": "an", "name": "Lê An", "unit": "tiep-nhan", "role": "agent"},
    {"slug": "truong", "name": "Trần Trưởng", "unit": "tiep-nhan", "role": "head", "telegram_chat_id": 1001},
]}


@pytest.fixture
async def staffed(make_core) -> Core:
    return await make_core(STAFF)


async def sms(core: Core, text: str, external_id: str) -> intake.IntakeResult:
    return await intake.receive(core, Inbound(channel="sms", external_id=external_id, sender=PHONE, text=text,
                                              received_at=core.clock.now(), continues_within_hours=72.0))


async def resolved_complaint(core: Core) -> str:
    code = (await sms(core, "Nắp cống trước nhà số 9 bị vỡ, rất nguy hiểm.", "SM1")).tracking_code
    await lifecycle.resolve(core, code, "an", "Đã thay nắp cống mới.")
    return code


async def stored(core: Core, code: str) -> Complaint:
    async with core.sessions() as session:
        return await session.scalar(select(Complaint).where(Complaint.tracking_code == code))


async def outbox_keys(core: Core) -> list[str]:
    async with core.sessions() as session:
        return (await session.scalars(select(OutboxMessage.key).order_by(OutboxMessage.id))).all()


@pytest.mark.parametrize("text, parsed", [
    ("5", (5, None)), (" 4 ", (4, None)), ("4, cán bộ nhiệt tình", (4, "cán bộ nhiệt tình")),
    ("5 giờ chiều vẫn mất điện", None), ("4.", (4, None)),
    ("2. chưa xử lý triệt để", (2, "chưa xử lý triệt để")), ("1 - tệ", (1, "tệ")),
    ("6", None), ("0", None), ("45", None), ("Số 5 ngõ 12", None),
    ("12 hộ dân bị ảnh hưởng", None), ("", None),
])
def test_what_counts_as_a_rating_reply(text, parsed):
    assert satisfaction.parse_reply(text) == parsed


async def test_the_survey_follows_resolution_and_a_digit_reply_rates(staffed):
    core = staffed
    code = await resolved_complaint(core)
    assert (await outbox_keys(core))[-1].startswith("survey:")
    core.clock.advance(hours=2)
    result = await sms(core, "5 - cảm ơn cán bộ", "SM2")
    assert (result.outcome, result.tracking_code) == ("rated", code)
    complaint = await stored(core, code)
    assert (complaint.rating, complaint.rating_comment, complaint.status) == (5, "cảm ơn cán bộ", "resolved")
    assert (await outbox_keys(core))[-1].startswith("rated:")
    # A later rating replaces the earlier one; the audit trail keeps both.
    await sms(core, "4", "SM3")
    assert (await stored(core, code)).rating == 4
    async with core.sessions() as session:
        rated = (await session.scalars(select(Event.detail).where(Event.kind == "rated").order_by(Event.id))).all()
    assert [(d["rating"], d["previous"]) for d in rated] == [(5, None), (4, 5)]


async def test_a_low_rating_reopens_for_the_heads_review(staffed):
    core = staffed
    code = await resolved_complaint(core)
    await sms(core, "1: nắp mới lại bị lún", "SM2")
    complaint = await stored(core, code)
    assert complaint.status == "reopened" and complaint.next_check_at is not None
    async with core.sessions() as session:
        told = (await session.scalars(select(OutboxMessage).where(OutboxMessage.key.like("low-rating:%")))).all()
    assert [(m.channel, m.recipient) for m in told] == [("telegram", "1001")]
    assert "1/5" in told[0].payload["text"] and "nắp mới lại bị lún" in told[0].payload["text"]


async def test_a_digit_after_the_survey_window_is_not_a_rating(staffed):
    core = staffed
    code = await resolved_complaint(core)
    core.clock.advance(days=8)
    result = await sms(core, "5", "SM2")
    assert result.outcome != "rated"
    assert (await stored(core, code)).rating is None


async def test_a_digit_with_nothing_resolved_is_an_ordinary_message(staffed):
    core = staffed
    first = await sms(core, "Đèn đường hỏng ở ngõ 5.", "SM1")
    result = await sms(core, "5", "SM2")
    assert result.outcome == "followup" and result.tracking_code == first.tracking_code


async def test_rating_by_code_from_the_status_page(staffed):
    core = staffed
    code = await resolved_complaint(core)
    await satisfaction.rate(core, code, 3, "tạm được", via="web")
    assert (await stored(core, code)).rating == 3
    with pytest.raises(satisfaction.RatingError):
        await satisfaction.rate(core, code, 6)
    open_code = (await intake.receive(core, Inbound(channel="sms", external_id="X", sender="+84987654321",
                                                    text="Rác chưa thu gom ở chợ.",
                                                    received_at=core.clock.now()))).tracking_code
    with pytest.raises(satisfaction.RatingError, match="not resolved"):
        await satisfaction.rate(core, open_code, 5)
