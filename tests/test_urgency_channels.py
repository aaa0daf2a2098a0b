"""Urgency, questions, proof and "not fixed" through the channels people use: officers on
Telegram (/ask, /urgent, a photo captioned /resolve, the reason step of a transfer), the
citizen's button under a survey, the web form's public choice, the status page (urgency,
the answer's photos, "not fixed" behind the form's CSRF protection), and "CHUA XONG" by
SMS through a signed Twilio webhook.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from bot import intake, lifecycle
from contract.messages import Attachment, Inbound
from storage.models import Complaint, OutboxMessage
from tests.conftest import get_form, start_service
from tests.telegram_fake import (  # noqa: F401
    CITIZEN,
    HEAD,
    JPEG,
    OFFICER,
    BotWorld,
    bot_env,
    eventually,
    fake_api,
    start_bot,
)
from tests.test_sms_support import (CITIZEN as PHONE, STAFF as SMS_STAFF, complaints, fixture, operator,  # noqa: F401
                                    post_twilio, running, sms_config)
from tests.test_telegram_citizen import file_complaint

TOKEN = re.compile(r'name="csrf_token" value="([^"]*)"')
PROOF = [{"slug": "moi-truong", "name": "Môi trường, vệ sinh", "proof_required": True}, {"slug": "khac", "name": "Khác"}]


async def complaint(core, code: str) -> Complaint:
    async with core.sessions() as session:
        return await session.scalar(select(Complaint).where(Complaint.tracking_code == code))


# ------------------------------------------------------------------------- Telegram

@pytest.fixture
async def bot(start_bot) -> AsyncIterator[BotWorld]:
    yield await start_bot("polling", {"categories": PROOF})


async def notified(world: BotWorld, code: str) -> None:
    """Wait for the officer's notification of a new complaint, so it is not taken for an answer."""
    await world.api.wait_for("sendMessage", OFFICER, contains=code, where=lambda c: bool(c.buttons()))


async def command(world: BotWorld, text: str, chat_id: int = OFFICER) -> str:
    api = world.api
    mark = api.mark()
    await api.deliver(api.message(chat_id, text))
    return (await api.wait_for("sendMessage", chat_id, mark)).text


async def test_an_officer_asks_the_citizen_replies_and_the_clock_runs_again(bot):
    api = bot.api
    code = await file_complaint(bot)
    await notified(bot, code)
    assert (await command(bot, f"/ask {code}")).startswith("Cú pháp: /ask")
    mark = api.mark()
    asked = await command(bot, f"/ask {code} Xin Quý ông/bà gửi ảnh chỗ rác và số nhà gần nhất?")
    assert asked.startswith("Đã gửi câu hỏi tới người dân")
    question = await api.wait_for("sendMessage", CITIZEN, mark, contains="bổ sung thông tin")
    assert "gửi ảnh chỗ rác" in question.text
    assert (await complaint(bot.core, code)).status == "waiting"
    assert "Chờ người dân bổ sung thông tin" in await command(bot, f"/case {code}")

    mark = api.mark()
    await api.deliver(api.message(CITIZEN, "Số nhà 34, cạnh cột điện.", reply_to=api.message_of(question)))
    told = await api.wait_for("sendMessage", OFFICER, mark, contains="Người dân đã bổ sung thông tin")
    assert code in told.text and "Số nhà 34" in told.text
    assert (await complaint(bot.core, code)).status == "assigned"


async def test_urgent_needs_a_reason_and_pages_the_head(bot):
    api = bot.api
    code = await file_complaint(bot)
    await notified(bot, code)
    assert (await command(bot, f"/urgent {code}")).startswith("Cú pháp: /urgent MÃ lý do")
    mark = api.mark()
    assert await command(bot, f"/urgent {code} Dây điện đứt rơi xuống đường") == \
        f"Phản ánh {code} đã được chuyển sang mức độ: Khẩn."
    page = await api.wait_for("sendMessage", HEAD, mark, contains="KHẨN")
    assert code in page.text
    assert (await complaint(bot.core, code)).urgency == "urgent"
    assert "Phản ánh đã ở mức độ này." in await command(bot, f"/urgent {code} lại")


async def test_a_proof_category_is_resolved_with_a_photo_captioned_resolve(bot):
    api = bot.api
    api.known_chats.add(CITIZEN)  # the citizen has written to the bot before
    result = await intake.receive(bot.core, Inbound(
        channel="telegram", external_id=f"{CITIZEN}:9001", sender=str(CITIZEN), text="Rác đổ trộm ở ngõ 34 Duy Tân.",
        received_at=bot.core.clock.now(), category="moi-truong"))
    code = result.tracking_code
    bot.core.outbox_ready.set()
    await notified(bot, code)
    refused = await command(bot, f"/resolve {code} Đã thu gom.")
    assert refused.startswith(f"Không thực hiện được với phản ánh {code}: Phản ánh {code} thuộc lĩnh vực cần ảnh")
    assert (await complaint(bot.core, code)).status == "new"

    mark = api.mark()
    await api.deliver(api.photo_message(OFFICER, caption=f"/resolve {code} Đã thu gom, ảnh sau khi dọn."))
    done = await api.wait_for("sendMessage", OFFICER, mark, contains="đánh dấu đã giải quyết")
    assert code in done.text
    assert (await complaint(bot.core, code)).status == "resolved"
    answer = await api.wait_for("sendMessage", CITIZEN, mark, contains="Đã thu gom, ảnh sau khi dọn.")
    assert "Kèm theo 1 ảnh/tài liệu" in answer.text
    await api.wait_for("sendPhoto", CITIZEN, mark)  # the proof itself, where the channel can carry it


async def test_the_not_fixed_button_under_the_survey_reopens_and_reaches_the_head(bot):
    api = bot.api
    code = await file_complaint(bot)
    mark = api.mark()
    await lifecycle.resolve(bot.core, code, "nguyen-van-an", "Đã thu gom rác.")
    survey = await api.wait_for("sendMessage", CITIZEN, mark, contains="mức độ hài lòng")
    assert ("Chưa được khắc phục", f"notfixed:{code}") in survey.buttons()
    mark = api.mark()
    pressed = await api.pressed(api.press(CITIZEN, api.message_of(survey), f"notfixed:{code}"))
    assert pressed.params["text"] == "Phản ánh đã được mở lại và chuyển lãnh đạo đơn vị xem xét."
    head = await api.wait_for("sendMessage", HEAD, mark, contains="CHƯA ĐƯỢC KHẮC PHỤC")
    assert code in head.text
    assert (await complaint(bot.core, code)).status == "reopened"
    mark = api.mark()
    again = await api.pressed(api.press(CITIZEN, api.message_of(survey), f"notfixed:{code}", check=False))
    assert again.params["text"] == "Nút này không còn hiệu lực."


async def test_a_citizen_cannot_press_not_fixed_on_someone_elses_complaint(bot):
    api = bot.api
    code = await file_complaint(bot)
    await lifecycle.resolve(bot.core, code, "nguyen-van-an", "Đã thu gom rác.")
    survey = await api.wait_for("sendMessage", CITIZEN, contains="mức độ hài lòng")
    await api.pressed(api.press(OFFICER, api.message_of(survey), f"notfixed:{code}", check=False))
    assert (await complaint(bot.core, code)).status == "resolved"


# ------------------------------------------------------------------------- the web

@pytest.fixture
async def site(make_config, clock) -> AsyncIterator:
    running, runner = await start_service(make_config({
        "staff": [{"slug": "an", "name": "An", "unit": "tiep-nhan"}], "categories": PROOF}), clock=clock)
    yield running
    await runner.cleanup()


async def file_on_the_web(service, **fields: str) -> str:
    async with service.client() as client:
        form = dict(await get_form(client), text="Rác đổ trộm ở ngõ 34 Duy Tân, gọi tôi 0912345678.") | fields
        async with client.post("/", data=form, allow_redirects=False) as response:
            assert response.status == 303
            return response.headers["Location"].split("/track/")[1].split("?")[0]


async def test_the_citizen_chooses_whether_the_text_is_public(site):
    private = await file_on_the_web(site)
    public = await file_on_the_web(site, public="1")
    assert (await complaint(site.core, private)).public is False
    assert (await complaint(site.core, public)).public is True
    async with site.client() as client:
        async with client.get("/") as response:
            form = await response.text()
        assert 'type="checkbox" id="public" name="public"' in form and "checked" not in form.split('id="public"')[1][:40]
        async with client.get(f"/track/{public}") as response:
            page = await response.text()
        assert 'data-urgency="normal">Thông thường<' in page
        assert "Rác đổ trộm ở ngõ 34 Duy Tân, gọi tôi ***." in page and "0912345678" not in page
        async with client.get(f"/track/{private}") as response:
            assert "Rác đổ trộm" not in await response.text()
        async with client.get(f"/api/v1/complaints/{public}") as response:
            shown = await response.json()
        assert (shown["urgency"], shown["description"]) == ("normal", "Rác đổ trộm ở ngõ 34 Duy Tân, gọi tôi ***.")


async def test_the_status_page_shows_the_answers_photo_and_serves_only_that(site):
    code = await file_on_the_web(site, category="moi-truong")
    await lifecycle.resolve(site.core, code, "an", "Đã thu gom.",
                            attachments=(Attachment("sau-khi-don.jpg", "image/jpeg", JPEG),))
    async with site.client() as client:
        async with client.get(f"/track/{code}") as response:
            page = await response.text()
        [link] = re.findall(rf'href="(/track/{code}/files/\d+)"', page)
        assert 'alt="sau-khi-don.jpg"' in page
        async with client.get(link) as response:
            assert response.status == 200 and response.content_type == "image/jpeg"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert await response.read() == JPEG
        other = await file_on_the_web(site)
        async with client.get(link.replace(code, other)) as response:
            assert response.status == 404
        async with client.get(f"/track/{code}/files/999999") as response:
            assert response.status == 404
        async with client.get(f"/track/{code}/files/abc") as response:
            assert response.status == 404


async def test_not_fixed_on_the_status_page_reopens_behind_the_csrf_check(site):
    code = await file_on_the_web(site)
    async with site.client() as client:
        async with client.get(f"/track/{code}") as response:
            assert 'action="/track/' + code + '/not-fixed"' not in await response.text()  # not resolved yet
        await lifecycle.resolve(site.core, code, "an", "Đã thu gom.")
        async with client.get(f"/track/{code}") as response:
            page = await response.text()
        assert f'action="/track/{code}/not-fixed"' in page
        async with client.post(f"/track/{code}/not-fixed", data={"csrf_token": "forged", "comment": "x"},
                               allow_redirects=False) as response:
            assert response.status == 403
        assert (await complaint(site.core, code)).status == "resolved"
        form = {"csrf_token": TOKEN.search(page).group(1), "lang": "vi", "comment": "Rác vẫn còn ở góc ngõ."}
        async with client.post(f"/track/{code}/not-fixed", data=form, allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == f"/track/{code}?disputed=1&lang=vi#disputed"
        async with client.get(response.headers["Location"]) as response:
            assert "Phản ánh đã được mở lại và chuyển lãnh đạo đơn vị xem xét." in await response.text()
        stored = await complaint(site.core, code)
        assert stored.status == "reopened" and stored.disputed_at is not None
        async with client.post(f"/track/{code}/not-fixed", data=form, allow_redirects=False) as response:
            assert response.status == 409  # open again: nothing to dispute


# ------------------------------------------------------------------------- SMS

async def test_chua_xong_by_sms_through_twilio_reopens_and_reaches_the_head(sms_config, operator, clock):
    head = {"slug": "truong", "name": "Trần Trưởng", "unit": "tiep-nhan", "role": "head",
            "email": "truong@example.gov.vn"}
    async with running(sms_config({"staff": [SMS_STAFF, head]}), clock) as service:
        assert (await post_twilio(service, fixture("twilio/text.form")))[0] == 200
        [filed] = await complaints(service.core)
        await lifecycle.resolve(service.core, filed.tracking_code, SMS_STAFF["slug"], "Đã thay bóng đèn.")
        clock.advance(days=1)
        body = fixture("twilio/followup_no_code.form").replace(
            b"Body=Th%C3%AAm%3A+c%E1%BB%99t+%C4%91%C3%A8n+s%E1%BB%91+3+g%E1%BA%A7n+c%E1%BB%95ng+tr%C6%B0%E1%BB%9Dng.",
            b"Body=CHUA+XONG+den+van+tat")
        assert (await post_twilio(service, body))[0] == 200
        [again] = await complaints(service.core)
        assert again.status == "reopened" and again.disputed_at is not None
        async with service.core.sessions() as session:
            notices = (await session.scalars(select(OutboxMessage).where(OutboxMessage.recipient == head["email"])))
            kinds = [row.payload["kind"] for row in notices]
        assert "not_fixed" in kinds
        told = await eventually(lambda: _texts_to(operator, PHONE, "mở lại"))
        assert filed.tracking_code in told[-1]


async def _texts_to(operator, phone: str, fragment: str) -> list[str]:
    return [d.text for d in operator.delivered if d.to == phone and fragment in d.text]
