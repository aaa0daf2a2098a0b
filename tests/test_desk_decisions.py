"""The desk does what Telegram does for issue 17: a resolution with a photo as proof (refused,
in the officer's words, without one), asking the citizen (the complaint moves to "waiting
for the citizen"), changing the urgency with a reason, and rejecting with a configured
reason. Every form is the real one, sent with its anti-forgery token.
"""

from __future__ import annotations

import re

import aiohttp
from sqlalchemy import select

from bot.intake import receive
from contract.messages import Inbound
from storage.models import Complaint, OutboxMessage
from tests.desk_support import hidden_fields, page, post_form, signed_in, start_desk

PROOF = {"categories": [{"slug": "moi-truong", "name": "Môi trường", "proof_required": True},
                        {"slug": "khac", "name": "Khác"}]}
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32 + b"\xff\xd9"


async def file(service, text: str, category: str | None = None, external_id: str = "SM1") -> str:
    result = await receive(service.core, Inbound(channel="sms", external_id=external_id, sender="+84912345678",
                                                 text=text, received_at=service.core.clock.now(), category=category))
    return result.tracking_code


async def stored(service, code: str) -> Complaint:
    async with service.core.sessions() as session:
        return await session.scalar(select(Complaint).where(Complaint.tracking_code == code))


async def post_files(client: aiohttp.ClientSession, code: str, action: str, text: str,
                     files: list[tuple[str, bytes, str]]) -> tuple[int, str]:
    """POST the action's multipart form as the browser sends it, with its hidden fields."""
    async with client.get(f"/desk/case/{code}") as response:
        fields = hidden_fields(await response.text())
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("text", text)
    for name, data, kind in files:
        form.add_field("files", data, filename=name, content_type=kind)
    async with client.post(f"/desk/case/{code}/{action}", data=form, allow_redirects=False) as response:
        return response.status, response.headers.get("Location") or await response.text()


async def test_a_proof_category_is_resolved_from_the_desk_only_with_a_photo(make_config, clock):
    desk, runner = await start_desk(make_config, clock, PROOF, run_dispatcher=False, run_scheduler=False)
    agent = await signed_in(desk, "nguyen-van-an")
    try:
        code = await file(desk, "Rác đổ trộm ở đầu ngõ 12 phố Kim Mã.", "moi-truong")
        status, text = await post_files(agent, code, "resolve", "Đã thu gom.", [])
        assert status == 409 and "thuộc lĩnh vực cần ảnh hoặc tài liệu" in text
        assert (await stored(desk, code)).status == "new"
        status, text = await post_files(agent, code, "resolve", "Đã thu gom.",
                                        [("script.jpg", b"<script>alert(1)</script>", "image/jpeg")])
        assert status == 400 and "Chỉ nhận ảnh JPEG, PNG, WebP hoặc tài liệu PDF." in text
        assert (await stored(desk, code)).status == "new"
        status, where = await post_files(agent, code, "resolve", "Đã thu gom.", [("sau.jpg", JPEG, "image/jpeg")])
        assert status == 303 and where == f"/desk/case/{code}?done=resolve"
        assert (await stored(desk, code)).status == "resolved"
        async with desk.client() as citizen, citizen.get(f"/track/{code}") as response:
            public = await response.text()
        [link] = re.findall(rf'href="(/track/{code}/files/\d+)"', public)
        async with desk.client() as citizen, citizen.get(link) as response:
            assert response.status == 200 and await response.read() == JPEG
    finally:
        await agent.close()
        await runner.cleanup()


async def test_ask_urgency_and_reject_from_the_desk(make_config, clock):
    desk, runner = await start_desk(make_config, clock, run_dispatcher=False, run_scheduler=False)
    agent = await signed_in(desk, "nguyen-van-an")
    try:
        code = await file(desk, "Đèn đường hỏng trước số 5 ngõ 12 Kim Mã.")
        status, where = await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/ask",
                                        text="Xin cho biết số cột đèn?")
        assert status == 303 and (await stored(desk, code)).status == "waiting"
        status, text = await page(agent, "/desk/queue/waiting")
        assert status == 200 and code in text
        status, text = await page(agent, f"/desk/case/{code}")
        assert 'id="ask"' not in text  # asked already: the form waits for the answer

        status, text = await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/urgency", level="urgent",
                                       text="")
        assert status == 409 and "Cần nêu lý do thay đổi mức độ." in text
        status, where = await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/urgency", level="urgent",
                                        text="Dây điện hở sát mặt đất")
        assert status == 303 and (await stored(desk, code)).urgency == "urgent"
        status, text = await page(agent, f"/desk/case/{code}")
        assert 'class="urgency-urgent">Khẩn<' in text

        status, text = await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/reject", reason="",
                                       text="x")
        assert status == 409 and "Cần chọn lý do, một trong:" in text
        status, where = await post_form(agent, f"/desk/case/{code}", f"/desk/case/{code}/reject",
                                        reason="trung-lap", text="Đã xử lý theo phản ánh trước.")
        assert status == 303 and (await stored(desk, code)).status == "closed"
        async with desk.core.sessions() as session:
            told = await session.scalar(select(OutboxMessage).where(OutboxMessage.key.like("rejected:%")))
        assert "Trùng với phản ánh đã tiếp nhận — Đã xử lý theo phản ánh trước." in told.payload["text"]
    finally:
        await agent.close()
        await runner.cleanup()
