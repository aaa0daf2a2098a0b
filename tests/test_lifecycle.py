"""Status changes: each is recorded with its event and told to the citizen on their channel."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot import intake, lifecycle, status
from bot.core import Core
from contract.messages import Inbound
from storage.models import Complaint, Event, Message, OutboxMessage

STAFF = {
    "units": [{"slug": "tiep-nhan", "name": "Bộ phận tiếp nhận"}, {"slug": "dien-luc", "name": "Điện lực"}],
    "staff": [{"slug": "an", "name": "Lê An", "unit": "tiep-nhan", "role": "agent", "telegram_chat_id": 1002},
              {"slug": "old", "name": "Đã nghỉ", "unit": "tiep-nhan", "role": "agent"}],
}


@pytest.fixture
async def staffed(make_core) -> Core:
    return await make_core(STAFF)


async def file(core: Core, language: str = "vi") -> str:
    result = await intake.receive(core, Inbound(channel="sms", external_id="SM1", sender="+84912345678",
                                                text="Cống thoát nước bị tắc, nước tràn ra đường.",
                                                received_at=core.clock.now(), language=language))
    return result.tracking_code


async def sent_to_citizen(core: Core) -> list[tuple[str, str]]:
    async with core.sessions() as session:
        rows = (await session.scalars(select(OutboxMessage).where(OutboxMessage.channel == "sms")
                                      .order_by(OutboxMessage.id))).all()
    return [(row.key.split(":")[0], row.payload["text"]) for row in rows]


async def stored(core: Core, code: str) -> Complaint:
    async with core.sessions() as session:
        return await session.scalar(select(Complaint).where(Complaint.tracking_code == code))


async def test_claim_answer_resolve_each_tell_the_citizen(staffed):
    core = staffed
    code = await file(core)
    await lifecycle.assign(core, code, "an")
    assert (await stored(core, code)).status == "assigned"
    core.clock.advance(hours=1)
    await lifecycle.answer(core, code, "an", "Đội thoát nước sẽ nạo vét trong chiều nay.")
    answered = await stored(core, code)
    assert answered.status == "answered" and answered.first_response_at == core.clock.now()
    core.clock.advance(hours=3)
    await lifecycle.resolve(core, code, "an")
    resolved = await stored(core, code)
    assert resolved.status == "resolved" and resolved.resolved_at == core.clock.now()
    told = await sent_to_citizen(core)
    assert [kind for kind, _ in told] == ["ack", "assigned", "answer", "resolved", "survey"]
    assert told[1][1] == f"Phản ánh {code}: Đang xử lý."
    assert told[2][1].endswith("Đội thoát nước sẽ nạo vét trong chiều nay.")
    assert told[3][1] == f"Phản ánh {code}: Đã giải quyết."
    assert told[4][1].startswith(f"Phản ánh {code} đã giải quyết. Xin đánh giá: nhắn 1")
    async with core.sessions() as session:
        events = (await session.scalars(select(Event).where(Event.kind.in_(("assigned", "answered", "resolved")))
                                        .order_by(Event.id))).all()
    assert [(e.kind, e.actor) for e in events] == [("assigned", "staff:an"), ("answered", "staff:an"),
                                                   ("resolved", "staff:an")]


async def test_the_answer_is_public_on_the_status_page_and_a_note_is_not(staffed):
    core = staffed
    code = await file(core)
    await lifecycle.note(core, code, "an", "Gọi điện cho hộ dân số 5 để xác minh.")
    await lifecycle.answer(core, code, "an", "Đã cử người kiểm tra.")
    public = await status.public_status(core, code)
    assert [reply.text for reply in public.replies] == ["Đã cử người kiểm tra."]
    assert [kind for kind, _ in await sent_to_citizen(core)] == ["ack", "answer"]
    async with core.sessions() as session:
        notes = (await session.scalars(select(Message).where(Message.direction == "note"))).all()
    assert [n.text for n in notes] == ["Gọi điện cho hộ dân số 5 để xác minh."]


async def test_an_english_citizen_is_told_in_english(staffed):
    core = staffed
    code = await file(core, language="en")
    await lifecycle.resolve(core, code, "an", "The drain was cleared this afternoon.")
    told = await sent_to_citizen(core)
    assert told[-3][1] == f"{code}: The drain was cleared this afternoon."
    assert told[-2][1] == f"Complaint {code}: Resolved."
    assert told[-1][1].startswith(f"Complaint {code} resolved. Please rate us")


@pytest.mark.parametrize("action, message", [
    (lambda core, code: lifecycle.answer(core, code, "nobody", "x"), "no staff member nobody"),
    (lambda core, code: lifecycle.answer(core, "PA-2222-2222", "an", "x"), "no complaint PA-2222-2222"),
    (lambda core, code: lifecycle.answer(core, code, "an", "   "), "empty answer"),
    (lambda core, code: lifecycle.reassign(core, code, "nowhere", reason="dung-don-vi"), "no unit nowhere"),
    (lambda core, code: lifecycle.reassign(core, code, "tiep-nhan", reason="dung-don-vi"), "already with tiep-nhan"),
    (lambda core, code: lifecycle.reassign(core, code, "dien-luc"), "transfer needs a reason"),
    (lambda core, code: lifecycle.reassign(core, code, "dien-luc", reason="trung-lap"), "transfer needs a reason"),
])
async def test_impossible_changes_are_refused_and_change_nothing(staffed, action, message):
    core = staffed
    code = await file(core)
    before = await stored(core, code)
    with pytest.raises(lifecycle.LifecycleError, match=message):
        await action(core, code)
    after = await stored(core, code)
    assert (after.status, after.unit_id, after.updated_at) == (before.status, before.unit_id, before.updated_at)


async def test_a_resolved_complaint_cannot_be_resolved_twice(staffed):
    code = await file(staffed)
    await lifecycle.resolve(staffed, code, "an")
    with pytest.raises(lifecycle.LifecycleError, match="already resolved"):
        await lifecycle.resolve(staffed, code, "an")


async def test_an_answer_delivered_twice_is_recorded_and_sent_once(staffed):
    core = staffed
    code = await file(core)
    first = await lifecycle.answer(core, code, "an", "Đã cử người kiểm tra.", source_id="telegram:1002:77")
    again = await lifecycle.answer(core, code, "an", "Đã cử người kiểm tra.", source_id="telegram:1002:77")
    assert first is not None and again is None
    assert [kind for kind, _ in await sent_to_citizen(core)] == ["ack", "answer"]
    await lifecycle.note(core, code, "an", "Ghi chú", source_id="telegram:1002:78")
    assert await lifecycle.note(core, code, "an", "Ghi chú", source_id="telegram:1002:78") is None


async def test_the_complaint_a_sent_message_was_about(staffed):
    from sqlalchemy import update

    from bot import staff

    core = staffed
    code = await file(core)
    async with core.sessions() as session, session.begin():
        await session.execute(update(OutboxMessage).where(OutboxMessage.channel == "telegram")
                              .values(status="sent", external_id="1002:55"))
    assert await staff.code_for_message(core, "telegram", "1002:55") == code
    assert await staff.code_for_message(core, "telegram", "1002:56") is None
