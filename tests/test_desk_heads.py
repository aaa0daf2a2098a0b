"""The unit head's figures and the admin's pages on the desk, on SQLite and PostgreSQL: the
dashboard shows what the digest shows for the same data, every figure leads to its
complaints, and only heads (their own unit) and admins (any) see them."""

from __future__ import annotations

import html
import re
from datetime import timedelta

from sqlalchemy import select, update

from bot import digests
from channels.desk import DESK
from storage.models import OutboxMessage
from tests.desk_support import file_complaint, page, post_form, signed_in, start_desk

LONG_SESSIONS = {"desk": {"session_hours": 168.0}}


async def test_the_heads_dashboard_shows_the_digests_figures_for_the_same_data(make_config, clock):
    desk, runner = await start_desk(make_config, clock, LONG_SESSIONS, run_dispatcher=False, run_scheduler=False)
    port = desk.app[DESK].port
    try:
        codes = [await file_complaint(desk, f"Ổ gà lớn trên đường Láng, đoạn số {n}.", sender=f"+8491300000{n}")
                 for n in range(4)]
        officer = await port.officer_by_chat(2001)
        clock.advance(hours=2)
        await port.answer(officer, codes[0], "Đã báo công ty công trình giao thông.")
        clock.advance(hours=3)
        await port.resolve(officer, codes[1], "Đã vá xong.")
        await port.rate(codes[1], 3, "Vá tạm bợ")  # 1 or 2 would reopen it
        head = await signed_in(desk, "le-thi-hoa")
        clock.advance(days=1)  # Tuesday: "daily" is Monday
        try:
            status, text = await page(head, "/desk/dashboard?period=daily")
            assert status == 200
            digest, _ = await digests.preview(desk.core, "tiep-nhan",
                                              digests.parse_period("daily", clock.now(), desk.core.config.tz), "vi")
            figures = digest.figures.period
            assert (figures.new, figures.answered, figures.resolved) == (4, 2, 1)
            for name, value in (("new", figures.new), ("answered", figures.answered),
                                ("resolved", figures.resolved), ("open", figures.open),
                                ("overdue", figures.overdue)):
                assert re.search(rf'id="fig-{name}">{value}<', text), name
            rate = f"{100 * figures.on_time_rate:.1f}".replace(".", ",")
            assert f"{rate}%</a> ({figures.answered_on_time}/{figures.answered})" in text
            assert html.escape(digests.duration(desk.core, "vi", figures.response_median_seconds)) in text
            assert html.escape(digests.duration(desk.core, "vi", figures.response_p90_seconds)) in text
            assert "3,0/5" in text and codes[1] in text  # satisfaction, and the lowest-rated answer
            # A figure leads to the complaints behind it.
            drill = html.unescape(re.search(r'<a href="([^"]+)" id="fig-new">', text).group(1))
            status, listed = await page(head, drill)
            assert status == 200 and all(code in listed for code in codes)
            async with head.get("/desk/dashboard/chart.png?period=daily") as response:
                assert response.status == 200 and (await response.read()).startswith(b"\x89PNG")
            status, _ = await page(head, "/desk/dashboard?unit=quan-ly-do-thi")
            assert status == 403  # a head sees their own unit
            status, text = await page(head, "/desk/dashboard?period=2026-13-45")
            assert status == 409
        finally:
            await head.close()
        agent = await signed_in(desk, "nguyen-van-an")
        admin = await signed_in(desk, "pham-quan-tri")
        try:
            assert (await page(agent, "/desk/dashboard"))[0] == 403
            assert (await page(admin, "/desk/dashboard?unit=quan-ly-do-thi"))[0] == 200
        finally:
            await agent.close()
            await admin.close()
    finally:
        await runner.cleanup()


async def test_the_admin_reads_the_configuration_tests_a_route_and_retries_a_failed_message(make_config, clock):
    desk, runner = await start_desk(make_config, clock, run_dispatcher=False, run_scheduler=False)
    try:
        code = await file_complaint(desk, "Rác thải ùn ứ ở chợ Thành Công.")
        async with desk.core.sessions() as session, session.begin():
            await session.execute(update(OutboxMessage).where(OutboxMessage.key == f"ack:{code}")
                                  .values(status="failed", attempts=5, last_error="permanent: 21211 not a number"))
        admin = await signed_in(desk, "pham-quan-tri")
        agent = await signed_in(desk, "nguyen-van-an")
        try:
            status, text = await page(admin, "/desk/admin")
            assert status == 200 and "tran-van-binh" in text and "q***@example.gov.vn" in text
            assert "lấn chiếm vỉa hè" in text and "config rule 1" in text
            status, text = await post_form(admin, "/desk/admin/route-test", "/desk/admin/route-test",
                                           text="Xe máy lấn chiếm vỉa hè phố Huế", channel="sms")
            assert status == 200 and "Phòng Quản lý đô thị (quan-ly-do-thi)" in text and "keyword" in text
            status, text = await page(admin, "/desk/admin/outbox")
            assert status == 200 and "21211 not a number" in text and "+84 91* *** 678" in text
            row_id = re.search(r'/desk/admin/outbox/(\d+)/retry', text).group(1)
            for client in (agent,):
                status, _ = await post_form(client, "/desk/queue/mine", f"/desk/admin/outbox/{row_id}/retry")
                assert status == 403
            status, where = await post_form(admin, "/desk/admin/outbox", f"/desk/admin/outbox/{row_id}/retry")
            assert status == 303 and where == "/desk/admin/outbox?done=retried"
            async with desk.core.sessions() as session:
                row = await session.get(OutboxMessage, int(row_id))
            assert row.status == "queued" and row.next_attempt_at <= clock.now() + timedelta(seconds=1)
            for path in ("/desk/admin", "/desk/admin/route-test", "/desk/admin/outbox"):
                assert (await page(agent, path))[0] == 403, path
        finally:
            await admin.close()
            await agent.close()
    finally:
        await runner.cleanup()
