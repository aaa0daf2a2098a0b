"""The desk refuses what it must, on SQLite and PostgreSQL: every action without a session,
with another role's or another unit's session, with a stale, reused or guessed sign-in link,
or without the form's anti-forgery token is refused and changes nothing; script typed into
any field comes back as text; files are served so that nothing in them runs."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import func, select

from bot.intake import receive
from contract.messages import Attachment, Inbound
from storage.models import Attachment as StoredAttachment
from storage.models import Complaint, DeskSignIn, Event, Message, OutboxMessage
from tests.desk_support import (HIDDEN, ask_for_link, desk, file_complaint, latest_link, page, post_form,  # noqa: F401
                                signed_in, start_desk, use_link)
from tests.fixtures.web import files

SCRIPT = '<script>alert("x")</script>'
ACTIONS = ("answer", "note", "claim", "reassign", "resolve", "reopen")


async def _state(desk) -> tuple:
    """Everything an action could change: complaints, messages, events, outbox rows."""
    async with desk.core.sessions() as session:
        complaints = (await session.execute(select(Complaint.tracking_code, Complaint.status, Complaint.unit_id,
                                                   Complaint.assignee_id))).all()
        counts = [await session.scalar(select(func.count()).select_from(table))
                  for table in (Message, Event, OutboxMessage)]
    return sorted(complaints), counts


def _form(action: str) -> dict[str, str]:
    return {"text": "Trả lời", "reason": "Lý do", "unit": "quan-ly-do-thi"}


async def test_without_a_session_every_page_sends_to_sign_in_and_every_action_is_refused(desk):
    code = await file_complaint(desk, "Mất nước từ hôm qua ở ngõ 7 Thái Hà.")
    before = await _state(desk)
    async with desk.client() as anonymous:
        for path in ("/desk/queue/mine", "/desk/queue/all?q=mat", f"/desk/case/{code}", "/desk/file/1",
                     "/desk/dashboard", "/desk/dashboard/chart.png", "/desk/admin", "/desk/admin/outbox",
                     "/desk/search?q=x"):
            status, _ = await page(anonymous, path)
            assert status == 303, path
        for action in ACTIONS:
            async with anonymous.post(f"/desk/case/{code}/{action}", data=_form(action),
                                      allow_redirects=False) as response:
                assert response.status == 403, action
        async with anonymous.post("/desk/admin/outbox/1/retry", allow_redirects=False) as response:
            assert response.status == 403
        # A forged or altered session cookie is no session.
        anonymous.cookie_jar.update_cookies({"fi_desk": "abc.def"})
        assert (await page(anonymous, "/desk/queue/mine"))[0] == 303
    assert await _state(desk) == before


async def test_another_units_officer_cannot_open_answer_or_find_a_complaint(desk):
    code = await file_complaint(desk, "Mất điện ở tổ 5 phường Láng Thượng.")
    attachment = await receive(desk.core, Inbound(
        channel="email", external_id="<p1@example.com>", sender="a@example.com", text="Ảnh mất điện",
        received_at=desk.core.clock.now(), attachments=(Attachment("anh.jpg", "image/jpeg", files.photo()),)))
    async with desk.core.sessions() as session:
        file_id = await session.scalar(select(func.max(StoredAttachment.id)))
    before = await _state(desk)
    other = await signed_in(desk, "tran-van-binh")
    try:
        assert (await page(other, f"/desk/case/{code}"))[0] == 403
        status, text = await page(other, "/desk/queue/all?q=mat+dien")
        assert status == 200 and code not in text and attachment.tracking_code not in text
        status, text = await page(other, f"/desk/queue/all?q={code}")
        assert f"/desk/case/{code}" not in text
        status, text = await page(other, "/desk/queue/all?unit=tiep-nhan")
        assert code not in text
        for action in ACTIONS:
            status, _ = await post_form(other, "/desk/queue/mine", f"/desk/case/{code}/{action}", **_form(action))
            assert status == 403, action
        assert (await page(other, f"/desk/file/{file_id}"))[0] == 403
    finally:
        await other.close()
    assert (await _state(desk))[0] == before[0]


async def test_an_officer_may_not_act_as_a_head_or_an_admin(desk):
    agent = await signed_in(desk, "nguyen-van-an")
    head = await signed_in(desk, "le-thi-hoa")
    try:
        for path in ("/desk/dashboard", "/desk/dashboard/chart.png", "/desk/admin", "/desk/admin/route-test",
                     "/desk/admin/outbox"):
            assert (await page(agent, path))[0] == 403, path
        for path in ("/desk/admin", "/desk/admin/route-test", "/desk/admin/outbox"):
            assert (await page(head, path))[0] == 403, path
        status, _ = await post_form(head, "/desk/queue/mine", "/desk/admin/route-test", text="Rác thải")
        assert status == 403
    finally:
        await agent.close()
        await head.close()


async def test_a_link_works_once_within_its_minutes_and_guessing_is_refused(make_config, clock):
    desk, runner = await start_desk(make_config, clock, {"desk": {"failures_per_window": 3}}, run_dispatcher=False)
    try:
        async with desk.client() as browser:
            assert await ask_for_link(browser, "nguyen-van-an") == 200
            path = await latest_link(desk, "nguyen-van-an")
            assert (await use_link(browser, path)).status == 303
            cookie = next(c for c in browser.cookie_jar if c.key == "fi_desk")
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/desk"
            assert int(cookie["max-age"]) == 10 * 3600
        async with desk.client() as thief:
            reused = await use_link(thief, path)
            assert reused.status == 410
            assert (await page(thief, "/desk/queue/mine"))[0] == 303
            # A stale link: asked for, then opened after its 15 minutes.
            assert await ask_for_link(thief, "le-thi-hoa") == 200
            stale = await latest_link(desk, "le-thi-hoa")
            clock.advance(minutes=16)
            assert (await use_link(thief, stale)).status == 410
            assert (await use_link(thief, "/desk/sign-in/" + "A" * 43)).status == 403
            assert (await use_link(thief, "/desk/sign-in/" + "B" * 43)).status == 403
            # Three failures in the window (the reuse was 16 minutes ago): now even a good link is
            # refused until the window passes.
            assert await ask_for_link(thief, "le-thi-hoa") == 200
            fresh = await latest_link(desk, "le-thi-hoa")
            limited = await use_link(thief, fresh)
            assert limited.status == 429 and limited.headers["Retry-After"] == str(15 * 60)
            clock.advance(minutes=16)
            assert (await use_link(thief, fresh)).status == 410  # and it expired meanwhile: ask again
        async with desk.core.sessions() as session:
            kinds = (await session.scalars(select(DeskSignIn.kind).order_by(DeskSignIn.id))).all()
        assert kinds.count("signed_in") == 1 and {"used_link", "expired_link", "bad_link", "limited"} <= set(kinds)
        # Nothing says whether a name is a staff member's.
        async with desk.client() as stranger:
            assert await ask_for_link(stranger, "nobody@example.com") == 200
    finally:
        await runner.cleanup()


async def test_link_requests_are_limited_per_person_and_per_client(make_config, clock):
    desk, runner = await start_desk(make_config, clock, {"desk": {"links_per_hour": 2, "requests_per_window": 4}},
                                    run_dispatcher=False)
    try:
        async with desk.client() as browser:
            assert [await ask_for_link(browser, "nguyen-van-an") for _ in range(3)] == [200, 200, 429]
            assert await ask_for_link(browser, "le-thi-hoa") == 200
            assert await ask_for_link(browser, "le-thi-hoa") == 429  # the client's 4 requests are used up
        async with desk.core.sessions() as session:
            links = (await session.scalars(select(OutboxMessage.recipient).where(
                OutboxMessage.key.like("desk-link:%")))).all()
        assert sorted(links) == ["2001", "2001", "2002"]  # each to the person's own Telegram chat
    finally:
        await runner.cleanup()


async def test_sign_out_here_and_everywhere(desk):
    first = await signed_in(desk, "nguyen-van-an")
    second = await signed_in(desk, "nguyen-van-an")
    third = await signed_in(desk, "nguyen-van-an")
    try:
        status, where = await post_form(first, "/desk/queue/mine", "/desk/sign-out")
        assert status == 303 and where == "/desk/sign-in"
        assert (await page(first, "/desk/queue/mine"))[0] == 303
        assert (await page(second, "/desk/queue/mine"))[0] == 200
        status, _ = await post_form(second, "/desk/queue/mine", "/desk/sign-out", everywhere="1")
        assert status == 303
        assert (await page(second, "/desk/queue/mine"))[0] == 303
        assert (await page(third, "/desk/queue/mine"))[0] == 303
    finally:
        for client in (first, second, third):
            await client.close()


async def test_a_form_without_its_token_or_with_another_sessions_is_refused_and_changes_nothing(desk):
    code = await file_complaint(desk, "Cống thoát nước bị tắc ở phố Chùa Láng.")
    agent = await signed_in(desk, "nguyen-van-an")
    head = await signed_in(desk, "le-thi-hoa")
    before = await _state(desk)
    try:
        async with head.get("/desk/queue/mine") as response:
            heads_token = dict(HIDDEN.findall(await response.text()))["csrf_token"]
        for action in ACTIONS:
            for token in (None, "0" * 64, heads_token):
                data = _form(action) | ({"csrf_token": token} if token else {})
                async with agent.post(f"/desk/case/{code}/{action}", data=data, allow_redirects=False) as response:
                    assert response.status == 403, (action, token)
                    assert "Biểu mẫu đã cũ" in await response.text()
        async with agent.post("/desk/sign-out", data={}, allow_redirects=False) as response:
            assert response.status == 403
        assert (await page(agent, "/desk/queue/mine"))[0] == 200  # still signed in
        async with desk.client() as browser:  # the sign-in forms too
            async with browser.post("/desk/sign-in", data={"who": "nguyen-van-an"}) as response:
                assert response.status == 403
    finally:
        await agent.close()
        await head.close()
    assert await _state(desk) == before


async def test_script_in_every_field_comes_back_as_text(desk):
    code = await file_complaint(desk, f"Đường ngập {SCRIPT} sau mưa.")
    agent = await signed_in(desk, "nguyen-van-an")
    admin = await signed_in(desk, "pham-quan-tri")
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
    try:
        for action in ("note", "answer"):
            status, _ = await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/{action}", text=SCRIPT)
            assert status == 303
        status, text = await page(agent, f"/desk/case/{code}")
        assert SCRIPT not in text and text.count(escaped) >= 3
        status, _ = await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/reassign",
                                    unit="quan-ly-do-thi", reason=SCRIPT)
        status, text = await page(admin, f"/desk/case/{code}")
        assert SCRIPT not in text and escaped in text
        query = "&".join(f"{key}=%3Cscript%3E" for key in ("q", "area", "officer", "category", "channel"))
        status, text = await page(agent, f"/desk/queue/all?{query}")
        assert status == 200 and "<script>" not in text and "&lt;script&gt;" in text
        for key in ("status", "unit", "date_from", "date_field"):
            status, text = await page(agent, f"/desk/queue/all?{key}=%3Cscript%3E")
            assert status == 400 and "<script>" not in text, key
        status, text = await post_form(admin, "/desk/admin/route-test", "/desk/admin/route-test", text=SCRIPT,
                                       area=SCRIPT)
        assert status == 200 and SCRIPT not in text and escaped in text
        async with desk.client() as browser:
            status = await ask_for_link(browser, SCRIPT)
            assert status == 200
            status, text = await page(browser, f"/desk/sign-in/{SCRIPT}")
            assert "<script>" not in text
    finally:
        await agent.close()
        await admin.close()


async def test_files_are_shown_so_that_nothing_in_them_runs(desk):
    result = await receive(desk.core, Inbound(
        channel="email", external_id="<files@example.com>", sender="a@example.com", text="Ảnh và biên bản",
        received_at=desk.core.clock.now(),
        attachments=(Attachment("ảnh hiện trường.jpg", "image/jpeg", files.photo(size=(3000, 2000))),
                     Attachment("bien-ban.pdf", "application/pdf", files.pdf()),
                     Attachment("trang.html", "text/html", b"<script>alert(1)</script>"))))
    async with desk.core.sessions() as session:
        ids = (await session.scalars(select(StoredAttachment.id).order_by(StoredAttachment.id))).all()
    agent = await signed_in(desk, "nguyen-van-an")
    try:
        status, text = await page(agent, f"/desk/case/{result.tracking_code}")
        assert f'/desk/file/{ids[0]}?size=thumb' in text and "Tải bien-ban.pdf" in text
        async with agent.get(f"/desk/file/{ids[0]}?size=thumb") as response:
            body = await response.read()
            assert response.headers["Content-Type"] == "image/jpeg"
            assert "sandbox" in response.headers["Content-Security-Policy"]
        assert max(Image.open(io.BytesIO(body)).size) == 480
        async with agent.get(f"/desk/file/{ids[1]}") as response:
            assert response.headers["Content-Type"] == "application/pdf"
            assert response.headers["Content-Disposition"].startswith("attachment;")
            assert (await response.read()).startswith(b"%PDF-")
        async with agent.get(f"/desk/file/{ids[2]}") as response:
            assert response.headers["Content-Type"] == "application/octet-stream"
            assert response.headers["Content-Disposition"].startswith("attachment;")
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert (await page(agent, "/desk/file/999999"))[0] == 404
        assert (await page(agent, "/desk/file/abc"))[0] == 404
    finally:
        await agent.close()


@pytest.mark.parametrize("path", ["/desk/queue/mine", "/desk/sign-in"])
async def test_desk_pages_are_never_cached_and_carry_the_security_headers(desk, path):
    agent = await signed_in(desk, "nguyen-van-an")
    try:
        async with agent.get(path) as response:
            assert response.headers["Cache-Control"] == "no-store"
            assert "script-src" not in response.headers["Content-Security-Policy"]
            assert response.headers["X-Frame-Options"] == "DENY"
    finally:
        await agent.close()
