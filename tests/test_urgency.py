"""Urgency, the clock that waits for the citizen, quiet hours, proof, "not fixed" and
reasons, on a real database with an injected clock (Hà Nội's Quyết định 1207/QĐ-UBND:
received within 8 working hours, urgent handled within 4 hours of receipt).

The week: Monday 2 November 2026 is a working day; Saturday 7 and Sunday 8 are not.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot import decisions, intake, lifecycle, stats, status
from bot.core import Core
from bot.sweep import sweep
from contract.messages import Attachment, Inbound
from contract.results import LifecycleError
from storage.models import Complaint, Event, OutboxMessage

HANOI = ZoneInfo("Asia/Ho_Chi_Minh")
PHONE = "+84912345678"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9"
HEAD_CHAT, AN_CHAT, BINH_EMAIL = 1001, 1002, "binh@example.gov.vn"
WORLD = {
    "units": [{"slug": "tiep-nhan", "name": "Bộ phận tiếp nhận"}, {"slug": "dien-luc", "name": "Điện lực Cầu Giấy"}],
    "staff": [
        {"slug": "truong", "name": "Trần Trưởng", "unit": "tiep-nhan", "role": "head", "telegram_chat_id": HEAD_CHAT,
         "email": "truong@example.gov.vn"},
        {"slug": "an", "name": "Lê An", "unit": "tiep-nhan", "role": "agent", "telegram_chat_id": AN_CHAT,
         "areas": ["Cầu Giấy"]},
        {"slug": "binh", "name": "Phạm Bình", "unit": "tiep-nhan", "role": "agent", "email": BINH_EMAIL,
         "areas": ["Hoàn Kiếm"]},
        {"slug": "dl-head", "name": "Hoàng Điện", "unit": "dien-luc", "role": "head", "telegram_chat_id": 2001},
    ],
    "categories": [{"slug": "moi-truong", "name": "Môi trường", "proof_required": True},
                   {"slug": "khac", "name": "Khác"}],
}


def local(*args) -> datetime:
    return datetime(*args, tzinfo=HANOI)


@pytest.fixture
async def world(make_core) -> Core:
    return await make_core(WORLD)


async def file(core: Core, text: str = "Đèn đường hỏng trước số 5 ngõ 12 Cầu Giấy.", external_id: str = "SM1",
               **kwargs) -> str:
    result = await intake.receive(core, Inbound(channel="sms", external_id=external_id, sender=PHONE, text=text,
                                                received_at=core.clock.now(), **kwargs))
    assert result.outcome == "created"
    return result.tracking_code


async def sms(core: Core, text: str, external_id: str) -> str:
    """A later SMS from the citizen, as the SMS channel hands it over (72 hours' follow-up window)."""
    result = await intake.receive(core, Inbound(channel="sms", external_id=external_id, sender=PHONE, text=text,
                                                received_at=core.clock.now(), continues_within_hours=72.0))
    return result.outcome


async def complaint(core: Core, code: str) -> Complaint:
    async with core.sessions() as session:
        return await session.scalar(select(Complaint).where(Complaint.tracking_code == code))


async def rows(core: Core, **where: object) -> list[OutboxMessage]:
    async with core.sessions() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        for name, value in where.items():
            query = query.where(getattr(OutboxMessage, name) == value)
        return (await session.scalars(query)).all()


def to_staff(found: list[OutboxMessage]) -> list[OutboxMessage]:
    return [row for row in found if row.payload.get("audience") == "staff"]


def addresses(found: list[OutboxMessage]) -> set[tuple[str, str]]:
    return {(row.channel, row.recipient) for row in found}


async def events(core: Core, code: str) -> list[Event]:
    async with core.sessions() as session:
        return (await session.scalars(select(Event).join(Complaint, Complaint.id == Event.complaint_id)
                                      .where(Complaint.tracking_code == code).order_by(Event.id))).all()


# ------------------------------------------------------------------------- urgent, around the clock

async def test_an_urgent_complaint_on_saturday_night_pages_at_once_and_is_overdue_at_one(world):
    core, clock = world, world.clock
    clock.set(local(2026, 11, 7, 21, 0))  # Saturday, 21:00
    code = await file(core, "Cháy ở ngõ 5 Cầu Giấy, khói bốc lên nhiều!", area="Cầu Giấy")
    filed = await complaint(core, code)
    assert filed.urgency == "urgent"
    # Four hours counted from receipt, around the clock: 01:00 on Sunday.
    assert filed.first_response_due == filed.resolution_due == local(2026, 11, 8, 1, 0)
    pages = [row for row in await rows(core) if row.payload["kind"] == "urgent_page"]
    # The officer of the area and the unit head, on every channel each has, now; not Bình (Hoàn Kiếm).
    assert addresses(pages) == {("telegram", str(AN_CHAT)), ("telegram", str(HEAD_CHAT)),
                                ("email", "truong@example.gov.vn")}
    assert all(row.status == "queued" and row.next_attempt_at <= clock.now() for row in pages)
    assert pages[0].payload["text"].startswith(f"KHẨN: phản ánh {code}")

    clock.set(local(2026, 11, 7, 23, 0))  # two hours before: the reminders (answer, resolve), at night, at once
    assert (await sweep(core)).reminders == 2
    reminders = [row for row in await rows(core) if row.key.startswith("reminder:")]
    assert reminders and all(row.status == "queued" for row in reminders)

    clock.set(local(2026, 11, 8, 0, 59))
    assert (await sweep(core)).apologies == 0
    clock.set(local(2026, 11, 8, 1, 0))
    assert (await sweep(core)).apologies == 1
    overdue = await complaint(core, code)
    assert overdue.escalation_count == 1
    escalations = to_staff([row for row in await rows(core) if row.key.startswith("escalation:")])
    assert escalations and all(row.status == "queued" for row in escalations)


async def test_a_normal_complaint_on_saturday_night_reminds_nobody_before_monday_morning(world):
    core, clock = world, world.clock
    clock.set(local(2026, 11, 7, 21, 0))
    code = await file(core)
    filed = await complaint(core, code)
    assert filed.urgency == "normal"
    # Eight working hours from Monday 08:00: Monday 17:00.
    assert filed.first_response_due == local(2026, 11, 9, 17, 0)
    [ack] = [row for row in await rows(core) if row.payload.get("audience") == "citizen"]
    assert ack.status == "queued"  # the citizen hears at once; only staff messages wait
    held = to_staff(await rows(core))
    assert held and all(row.status == "held" and row.next_attempt_at == local(2026, 11, 9, 8, 0) for row in held)

    for moment in (local(2026, 11, 8, 10, 0), local(2026, 11, 9, 7, 59)):
        clock.set(moment)
        await sweep(core)
        assert not [row for row in to_staff(await rows(core)) if row.status != "held"], moment

    clock.set(local(2026, 11, 9, 8, 0))
    await sweep(core)
    staff_rows = to_staff(await rows(core))
    summaries = [row for row in staff_rows if row.payload["kind"] == "quiet_summary"]
    # One summary per officer, listing what was kept back; the kept messages are marked summed.
    assert addresses(summaries) == {("telegram", str(AN_CHAT)), ("email", BINH_EMAIL)}
    assert all(row.status == "queued" and code in row.payload["text"] for row in summaries)
    assert summaries[0].payload["text"].startswith("Ngoài giờ làm việc (từ ")
    assert {row.status for row in staff_rows if row not in summaries} == {"summed"}
    await sweep(core)  # a second sweep sums nothing again
    assert len([r for r in to_staff(await rows(core)) if r.payload["kind"] == "quiet_summary"]) == 2


async def test_quiet_hours_off_sends_everything_at_once(make_core):
    core = await make_core({**WORLD, "notifications": {"quiet_hours": False}})
    core.clock.set(local(2026, 11, 7, 21, 0))
    await file(core)
    assert {row.status for row in to_staff(await rows(core))} == {"queued"}


async def test_an_officer_makes_a_complaint_urgent_with_a_reason_and_the_area_is_paged(world):
    core, clock = world, world.clock
    code = await file(core, "Cột điện nghiêng ở ngõ 8 Hoàn Kiếm.", area="Hoàn Kiếm")  # Monday 08:00, normal
    clock.set(local(2026, 11, 2, 10, 0))
    with pytest.raises(LifecycleError) as refused:
        await decisions.set_urgency(core, code, "an", "urgent", "  ")
    assert refused.value.key == "urgency_reason"
    mark = len(await rows(core))
    await decisions.set_urgency(core, code, "an", "urgent", "Cột có thể đổ xuống đường")
    changed = await complaint(core, code)
    # Counted again from receipt on the urgent clock: 08:00 + 4 h.
    assert changed.urgency == "urgent" and changed.resolution_due == local(2026, 11, 2, 12, 0)
    pages = [row for row in (await rows(core))[mark:] if row.payload["kind"] == "urgent_page"]
    assert addresses(pages) == {("email", BINH_EMAIL), ("telegram", str(HEAD_CHAT)),
                                ("email", "truong@example.gov.vn")}
    [event] = [e for e in await events(core, code) if e.kind == "urgency"]
    assert event.detail["from"] == "normal" and event.detail["to"] == "urgent" and event.detail["reason"]
    with pytest.raises(LifecycleError) as same:
        await decisions.set_urgency(core, code, "an", "urgent", "again")
    assert same.value.key == "urgency_same"


async def test_a_complex_complaint_is_extended_once_and_the_citizen_told_why(world):
    core = world
    code = await file(core)
    with pytest.raises(LifecycleError) as normal:
        await decisions.extend(core, code, "an", "Cần khảo sát")
    assert normal.value.key == "extension_not_complex"
    await decisions.set_urgency(core, code, "an", "complex", "Liên quan nhiều hộ dân")
    before = (await complaint(core, code)).resolution_due
    assert before == core.calendar.add_working_hours(local(2026, 11, 2, 8, 0), 240)
    await decisions.extend(core, code, "an", "Chờ kết quả khảo sát hiện trường")
    after = (await complaint(core, code)).resolution_due
    assert after == core.calendar.add_working_hours(before, 80)
    [told] = [row for row in await rows(core) if row.key.startswith("extended:")]
    assert "Chờ kết quả khảo sát hiện trường" in told.payload["text"] and told.payload["audience"] == "citizen"
    with pytest.raises(LifecycleError) as twice:
        await decisions.extend(core, code, "an", "Thêm lần nữa")
    assert twice.value.key == "extension_used"


# ------------------------------------------------------------------------- the clock waits for the citizen

async def test_a_paused_complaint_does_not_go_overdue_and_resumes_on_the_citizens_reply(world):
    core, clock = world, world.clock
    code = await file(core)  # Monday 08:00; first answer due Monday 17:00
    clock.set(local(2026, 11, 2, 9, 0))
    await decisions.ask(core, code, "an", "Xin cho biết số nhà gần cột đèn hỏng nhất?")
    asked = await complaint(core, code)
    assert asked.status == "waiting" and asked.paused_at == clock.now()
    [question] = [row for row in await rows(core) if row.key.startswith("question:")]
    assert question.channel == "sms" and "Xin cho biết số nhà" in question.payload["text"]

    clock.set(local(2026, 11, 3, 16, 0))  # Tuesday: long past Monday 17:00
    result = await sweep(core)
    assert (result.apologies, result.escalations) == (0, 0)
    clock.set(local(2026, 11, 4, 9, 0))  # 16 working hours after asking: reminded once
    await sweep(core)
    await sweep(core)
    assert len([row for row in await rows(core) if row.key.startswith("question-reminder:")]) == 1
    assert (await complaint(core, code)).escalation_count == 0

    clock.set(local(2026, 11, 4, 10, 0))  # the citizen answers by SMS, without the code
    assert await sms(core, "Số nhà 14, ngay cạnh cổng trường.", "SM2") == "followup"
    resumed = await complaint(core, code)
    assert resumed.status == "assigned" and resumed.paused_at is None
    # It waited 17 working hours (Mon 9-17 less lunch, all Tuesday, Wed 8-10): the deadline
    # moves from Monday 17:00 by as much, to Thursday 09:00.
    assert resumed.first_response_due == local(2026, 11, 5, 9, 0)
    [told] = [row for row in await rows(core) if row.payload["kind"] == "citizen_replied"]
    assert told.recipient == str(AN_CHAT) and "Số nhà 14" in told.payload["text"]
    [resumed_event] = [e for e in await events(core, code) if e.kind == "resumed"]
    assert resumed_event.detail["waited_hours"] == 17

    clock.set(local(2026, 11, 5, 9, 0))
    assert (await sweep(core)).apologies == 1


async def test_a_question_left_unanswered_closes_the_complaint_with_that_reason(world):
    core, clock = world, world.clock
    code = await file(core)
    clock.set(local(2026, 11, 2, 9, 0))
    await decisions.ask(core, code, "an", "Xin gửi ảnh hiện trường?")
    with pytest.raises(LifecycleError) as twice:
        await decisions.ask(core, code, "an", "Và địa chỉ?")
    assert twice.value.key == "cannot_ask"
    clock.set(local(2026, 11, 9, 8, 59))  # 39 working hours later
    await sweep(core)
    assert (await complaint(core, code)).status == "waiting"
    clock.set(local(2026, 11, 9, 9, 0))  # 40 working hours: closed, both sides told
    await sweep(core)
    closed = await complaint(core, code)
    assert closed.status == "closed"
    assert [row.channel for row in await rows(core) if row.key.startswith("closed-no-reply:")] == ["sms"]
    assert [row.recipient for row in await rows(core) if row.key.startswith("closed-no-reply-staff:")] == \
           [str(AN_CHAT)]
    assert [e.detail.get("reason") for e in await events(core, code) if e.kind == "closed"] == ["no_reply"]


# ------------------------------------------------------------------------- proof and reasons

async def test_resolving_a_proof_category_without_a_file_is_refused_clearly(world):
    core = world
    code = await file(core, category="moi-truong")
    with pytest.raises(LifecycleError) as refused:
        await lifecycle.resolve(core, code, "an", "Đã thu gom rác.")
    assert refused.value.key == "proof_required"
    assert "needs a photo or document" in str(refused.value)
    assert core.texts.get("vi", f"staff.{refused.value.key}", **refused.value.params).startswith(
        f"Phản ánh {code} thuộc lĩnh vực cần ảnh hoặc tài liệu")
    unchanged = await complaint(core, code)
    assert unchanged.status == "new" and unchanged.resolved_at is None
    assert not [row for row in await rows(core) if row.key.startswith(("answer:", "resolved:"))]

    await lifecycle.resolve(core, code, "an", "Đã thu gom rác.",
                            attachments=(Attachment("sau-thu-gom.jpg", "image/jpeg", JPEG),))
    resolved = await complaint(core, code)
    assert resolved.status == "resolved"
    [answer] = [row for row in await rows(core) if row.key.startswith("answer:")]
    assert "Kèm theo 1 ảnh/tài liệu, xem tại: " in answer.payload["text"]
    [shown] = (await status.public_status(core, code)).replies
    [proof] = shown.files
    assert proof.filename == "sau-thu-gom.jpg"
    assert (await status.public_file(core, code, proof.id)).data == JPEG
    other = await file(core, external_id="SM9", category="khac")
    await lifecycle.resolve(core, other, "an", "Đã xử lý.")  # no proof needed here
    with pytest.raises(LifecycleError):
        await status.public_file(core, other, proof.id)  # a file belongs to its own complaint's page


async def test_a_citizens_own_file_is_never_served_as_a_public_file(world):
    core = world
    result = await intake.receive(core, Inbound(channel="sms", external_id="MMS1", sender=PHONE,
                                                text="Rác ở ngõ 5 Cầu Giấy.", received_at=core.clock.now(),
                                                attachments=(Attachment("cua-toi.jpg", "image/jpeg", JPEG),)))
    shown = await status.public_status(core, result.tracking_code)
    assert shown.replies == ()
    async with core.sessions() as session:
        from storage.models import Attachment as Stored
        [own] = (await session.scalars(select(Stored.id))).all()
    with pytest.raises(LifecycleError):
        await status.public_file(core, result.tracking_code, own)


async def test_a_rejection_needs_a_reason_from_the_list_and_the_citizen_reads_it(world):
    core = world
    code = await file(core)
    with pytest.raises(LifecycleError) as refused:
        await decisions.reject(core, code, "an", None, "Không rõ")
    assert refused.value.key == "reason_needed" and "trung-lap" in refused.value.params["reasons"]
    with pytest.raises(LifecycleError):
        await decisions.reject(core, code, "an", "dung-don-vi")  # a transfer's reason, not a rejection's
    await decisions.reject(core, code, "an", "trung-lap", "Đã xử lý theo phản ánh PA-2222-2222.")
    assert (await complaint(core, code)).status == "closed"
    [told] = [row for row in await rows(core) if row.key.startswith("rejected:")]
    assert "Trùng với phản ánh đã tiếp nhận — Đã xử lý theo phản ánh PA-2222-2222." in told.payload["text"]


# ------------------------------------------------------------------------- "chưa xong"

async def test_chua_xong_by_sms_reopens_and_reaches_the_head(world):
    core, clock = world, world.clock
    code = await file(core)
    await lifecycle.resolve(core, code, "an", "Đã thay bóng đèn.")
    clock.advance(days=2)
    mark = len(await rows(core))
    assert await sms(core, "CHUA XONG, den van tat tu toi qua", "SM2") == "disputed"
    reopened = await complaint(core, code)
    assert reopened.status == "reopened" and reopened.disputed_at == clock.now()
    new = (await rows(core))[mark:]
    heads = [row for row in new if row.payload["kind"] == "not_fixed" and row.payload["audience"] == "staff"]
    assert (str(HEAD_CHAT), "telegram") in {(row.recipient, row.channel) for row in heads}
    assert "den van tat tu toi qua" in heads[0].payload["text"]
    assert [row.channel for row in new if row.payload["audience"] == "citizen"] == ["sms"]
    assert [e.kind for e in await events(core, code)][-2:] == ["reopened", "disputed"]

    scores = {s.days: s for s in await stats_for(core) if s.unit_id == core.directory.unit_ids["tiep-nhan"]}
    assert (scores[30].resolutions, scores[30].disputed, scores[30].disputed_rate) == (1, 1, 1.0)


async def test_chua_xong_after_the_dispute_window_is_a_new_message(world):
    core, clock = world, world.clock
    code = await file(core)
    await lifecycle.resolve(core, code, "an", "Đã thay bóng đèn.")
    clock.advance(days=8)  # dispute_days is 7
    assert await sms(core, "chưa xong", "SM2") == "created"
    assert (await complaint(core, code)).status == "resolved"


@pytest.mark.parametrize("text, disputed", [("CHUA XONG", True), ("Chưa xong.", True), ("chua xong roi", True),
                                             ("not fixed", True), ("chuaxong", True),
                                             ("Tôi chưa xong việc", False), ("xong", False), ("5", False)])
async def test_what_counts_as_not_fixed(world, text, disputed):
    core = world
    code = await file(core)
    await lifecycle.resolve(core, code, "an", "Đã thay bóng đèn.")
    outcome = await sms(core, text, "SM2")
    assert (outcome == "disputed") is disputed
    assert ((await complaint(core, code)).status == "reopened") is disputed


async def stats_for(core: Core) -> list[stats.UnitScore]:
    async with core.sessions() as session:
        return await stats.scores(session, core.clock.now() + timedelta(seconds=1), (30, 90))
