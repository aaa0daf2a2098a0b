"""The staff desk over HTTP, on SQLite and PostgreSQL: signing in with a one-time link, the
queues and their counts, search that ignores diacritics, a complaint's page with its whole
story, and the actions, which act as the same commands from Telegram do."""

from __future__ import annotations

from sqlalchemy import select

from storage.models import Complaint, Event, Message, OutboxMessage
from channels.desk import DESK
from tests.desk_support import (HIDDEN, ask_for_link, desk, file_complaint, page, post_form, signed_in,  # noqa: F401
                                start_desk)

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


async def test_the_queues_count_and_list_what_each_holds(make_config, clock):
    desk, runner = await start_desk(make_config, clock, {"desk": {"session_hours": 168.0}}, run_dispatcher=False)
    codes = [await file_complaint(desk, f"Đèn đường hỏng ở ngõ {n} phố Kim Mã.", sender=f"+8491200000{n}")
             for n in range(3)]
    agent = await signed_in(desk, "nguyen-van-an")
    try:
        status, where = await post_form(agent, f"/desk/case/{codes[0]}", f"/desk/case/{codes[0]}/claim")
        assert status == 303
        status, text = await page(agent, "/desk/queue/mine")
        assert codes[0] in text and codes[1] not in text
        assert 'href="/desk/queue/mine" aria-current="page">Của tôi <span class="count">1</span>' in text
        assert 'Chưa giao <span class="count">2</span>' in text and 'Quá hạn <span class="count">0</span>' in text
        status, text = await page(agent, "/desk/queue/unassigned")
        assert codes[1] in text and codes[2] in text and codes[0] not in text
        # Monday: the first answers are due today (8 working hours)
        status, text = await page(agent, "/desk/queue/today")
        assert all(code in text for code in codes) and 'Đến hạn hôm nay <span class="count">3</span>' in text
        clock.advance(days=2)
        status, text = await page(agent, "/desk/queue/overdue")
        assert all(code in text for code in codes) and 'Quá hạn <span class="count">3</span>' in text
        assert text.count('class="late-mark"') == 3  # each row says it
        status, text = await page(agent, "/desk/queue/nonsense")
        assert status == 404
    finally:
        await agent.close()
        await runner.cleanup()


async def test_filters_narrow_a_queue_and_a_bad_filter_is_explained(desk):
    by_sms = await file_complaint(desk, "Nước sinh hoạt có mùi lạ ở phường Láng Hạ.")
    by_mail = await file_complaint(desk, "Nước sinh hoạt bị đục, ngõ 5 Huỳnh Thúc Kháng.", channel="email",
                                   sender="minh@example.com")
    head = await signed_in(desk, "le-thi-hoa")
    try:
        status, text = await page(head, "/desk/queue/all?channel=email")
        assert by_mail in text and by_sms not in text
        status, text = await page(head, "/desk/queue/all?q=nuoc+sinh+hoat&channel=sms")
        assert by_sms in text and by_mail not in text
        status, text = await page(head, "/desk/queue/all?date_from=2026-11-02&date_to=2026-11-02")
        assert by_sms in text and by_mail in text
        status, text = await page(head, "/desk/queue/all?date_from=2026-11-03")
        assert by_sms not in text and by_mail not in text
        status, text = await page(head, "/desk/queue/all?date_from=02/11/2026")
        assert status == 400 and "date_from" in text
        status, text = await page(head, "/desk/queue/all?status=bogus")
        assert status == 400
        status, text = await page(head, f"/desk/queue/all?q={by_mail}")  # a tracking code finds its complaint
        assert by_mail in text and by_sms not in text
        # The citizen's contact in full for a head (the configuration's contact_roles).
        status, text = await page(head, f"/desk/case/{by_mail}")
        assert "minh@example.com" in text
    finally:
        await head.close()


async def test_a_case_handled_on_the_phone_and_at_the_desk_reads_as_one_story(desk):
    code = await file_complaint(desk, "Cây đổ chắn ngang đường Trần Duy Hưng.")
    port_officer = await desk.app[DESK].port.officer_by_chat(2001)  # as the Telegram staff commands do
    await desk.app[DESK].port.note(port_officer, code, "Đã gọi đội cây xanh (từ điện thoại).", "telegram:2001:55")
    agent = await signed_in(desk, "nguyen-van-an")
    try:
        await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/answer", text="Đội cây xanh đang xử lý.")
        status, text = await page(agent, f"/desk/case/{code}")
        note_at, answer_at = text.index("Đã gọi đội cây xanh"), text.index("Đội cây xanh đang xử lý.")
        assert note_at < answer_at
        assert "Ghi chú nội bộ của Nguyễn Văn An" in text and "Trả lời của Nguyễn Văn An" in text
        assert "Gửi qua sms tới +84 91* *** 678: đang chờ gửi, 0 lần thử" in text  # the outbox row as it is
        assert "Chuyển tới đơn vị" in text  # the routing event
        # The same answer sent twice (a double click) is one answer.
        form_page = f"/desk/case/{code}"
        async with agent.get(form_page) as response:
            fields = dict(HIDDEN.findall(await response.text()))
        for _ in range(2):
            async with agent.post(f"/desk/case/{code}/answer", data={**fields, "text": "Lần hai."},
                                  allow_redirects=False) as response:
                assert response.status == 303
        async with desk.core.sessions() as session:
            answers = (await session.scalars(select(Message).where(Message.text == "Lần hai."))).all()
        assert len(answers) == 1
    finally:
        await agent.close()


async def test_reassign_with_a_reason_resolve_and_reopen(desk):
    code = await file_complaint(desk, "Vỉa hè bị lấn chiếm làm bãi giữ xe trên phố Láng.")
    agent = await signed_in(desk, "nguyen-van-an")
    other = await signed_in(desk, "tran-van-binh")
    try:
        status, text = await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/reassign",
                                       unit="quan-ly-do-thi", reason="")
        assert status == 400 and "lý do" in text
        status, where = await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/reassign",
                                        unit="quan-ly-do-thi", reason="dung-don-vi",
                                        text="Thuộc thẩm quyền trật tự đô thị")
        assert status == 303
        assert (await page(agent, f"/desk/case/{code}"))[0] == 403  # no longer the agent's unit
        status, text = await page(other, f"/desk/case/{code}")
        assert status == 200 and \
            "lý do: Chuyển đúng đơn vị có thẩm quyền — Thuộc thẩm quyền trật tự đô thị" in text
        status, where = await post_form(other, f"/desk/case/{code}", f"/desk/case/{code}/resolve",
                                        text="Đã lập biên bản và giải tỏa.")
        assert status == 303
        status, text = await page(other, f"/desk/case/{code}")
        assert "Đã giải quyết" in text and 'id="reopen"' in text and 'id="resolve"' not in text
        status, where = await post_form(other, f"/desk/case/{code}", f"/desk/case/{code}/reopen",
                                        reason="Người dân báo tái lấn chiếm")
        assert status == 303
        async with desk.core.sessions() as session:
            complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
            kinds = (await session.scalars(select(Event.kind).where(Event.complaint_id == complaint.id))).all()
            told = (await session.scalars(select(OutboxMessage.key).where(
                OutboxMessage.complaint_id == complaint.id, OutboxMessage.key.like("reopened:%")))).all()
        assert complaint.status == "reopened" and "reassigned" in kinds and "reopened" in kinds and told
        status, text = await post_form(other, f"/desk/case/{code}", f"/desk/case/{code}/reopen")
        assert status == 409  # open already
    finally:
        await agent.close()
        await other.close()


async def test_a_message_another_writer_stored_unfolded_is_found_all_the_same(desk):
    code = await file_complaint(desk, "Xin cấp lại giấy phép xây dựng.")
    async with desk.core.sessions() as session, session.begin():
        complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
        # As a writer that knows nothing of the search index would store it: no folded text.
        session.add(Message(complaint_id=complaint.id, direction="in", channel="zalo", external_id="z-1",
                            text="Bổ sung: hồ sơ đã nộp ở Bộ phận Một cửa", created_at=desk.core.clock.now()))
    agent = await signed_in(desk, "nguyen-van-an")
    try:
        status, text = await page(agent, "/desk/queue/all?q=BO+PHAN+MOT+CUA")
        assert status == 200 and f"/desk/case/{code}" in text
        async with desk.core.sessions() as session:
            assert await session.scalar(select(Message.folded).where(Message.external_id == "z-1")) == \
                "bo sung ho so da nop o bo phan mot cua"
        status, text = await page(agent, "/desk/queue/all?q=giay+phep+xay+dung+khac")
        assert f"/desk/case/{code}" not in text  # every word must be there, in order
    finally:
        await agent.close()


async def test_a_staff_member_without_telegram_gets_the_link_by_email(desk):
    async with desk.client() as browser:
        assert await ask_for_link(browser, "QuanTri@Example.gov.vn") == 200
    async with desk.core.sessions() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.key.like("desk-link:%")))
    assert (row.channel, row.recipient) == ("email", "quantri@example.gov.vn")
    assert row.payload["audience"] == "staff" and "/desk/sign-in/" in row.payload["text"]
    assert row.payload["subject"] == "Đường dẫn đăng nhập bàn làm việc"
