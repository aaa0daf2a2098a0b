"""A citizen's whole conversation by SMS, against the real service and a fake operator:
complaint and acknowledgement, the officer's answer, apology and survey, follow-ups by
code and by time, status requests ("TT <code>"), plain-letter texts, long answers, and
logs that never show a phone number."""

from __future__ import annotations

import logging
import re

import pytest

from bot import lifecycle, sweep, tracking
from channels.sms import text as sms_text
from tests.test_sms_support import (CITIZEN, PUBLIC_URL, STAFF, complaints, fixture, inbound, operator, outbox_rows,
                                    post_android, post_twilio, running, sms_config, sms_service)

__all__ = ("operator", "sms_config", "sms_service")  # fixtures used here


async def file_complaint(service, operator) -> str:
    """Text the recorded complaint in; return its tracking code once the acknowledgement arrived."""
    assert (await post_twilio(service, fixture("twilio/text.form")))[0] == 200
    await operator.wait(1)
    [complaint] = await complaints(service.core)
    return complaint.tracking_code


async def test_the_officers_answer_and_the_survey_arrive_on_the_citizens_phone(sms_service, operator):
    code = await file_complaint(sms_service, operator)
    await lifecycle.answer(sms_service.core, code, STAFF["slug"], "Đội duy tu đã thay bóng đèn chiều nay.")
    delivered = await operator.wait(2)
    assert (delivered[1].to, delivered[1].text) == (CITIZEN, f"{code}: Đội duy tu đã thay bóng đèn chiều nay.")
    await lifecycle.resolve(sms_service.core, code, STAFF["slug"])
    delivered = await operator.wait(4)
    texts = [d.text for d in delivered[2:]]
    assert any("Đã giải quyết" in t for t in texts)
    assert any(code in t and "1 (rất không hài lòng)" in t for t in texts)  # the survey, in its short SMS form
    assert all(d.to == CITIZEN and d.api == "twilio" for d in delivered)


async def test_an_apology_reaches_the_phone_when_the_deadline_passes(sms_service, operator, clock):
    code = await file_complaint(sms_service, operator)
    clock.advance(days=2)  # Monday 08:00 to Wednesday 08:00: the 8 working hours ran out on Monday 17:00
    await sweep.sweep(sms_service.core)
    delivered = await operator.wait(2)
    assert delivered[1].text.startswith("Chúng tôi xin lỗi vì đã để Quý ông/bà chờ đợi.") and code in delivered[1].text


async def test_a_text_quoting_the_code_is_a_follow_up_even_days_later(sms_service, operator, clock):
    code = await file_complaint(sms_service, operator)
    clock.advance(hours=200)  # long past the follow-up window: the code alone threads it
    assert (await post_twilio(sms_service, fixture("twilio/followup_with_code.form", code=code)))[0] == 200
    first, second = await inbound(sms_service.core)
    assert first.complaint_id == second.complaint_id and len(await complaints(sms_service.core)) == 1
    delivered = await operator.wait(2)
    assert delivered[1].text == f"Đã bổ sung tin nhắn vào phản ánh {code}."


async def test_a_text_soon_after_from_the_same_phone_is_a_follow_up(sms_service, operator, clock):
    await file_complaint(sms_service, operator)
    clock.advance(hours=3)
    assert (await post_twilio(sms_service, fixture("twilio/followup_no_code.form")))[0] == 200
    assert len(await complaints(sms_service.core)) == 1 and len(await inbound(sms_service.core)) == 2


async def test_after_the_configured_window_a_text_is_a_new_complaint(sms_config, operator, clock):
    async with running(sms_config({"sms": {"followup_window_hours": 2.0}}), clock) as service:
        await file_complaint(service, operator)
        clock.advance(hours=3)
        assert (await post_twilio(service, fixture("twilio/followup_no_code.form")))[0] == 200
        assert len(await complaints(service.core)) == 2


@pytest.mark.parametrize("name, language", [("twilio/status_tt.form", "vi"), ("twilio/status_diacritics.form", "vi"),
                                            ("twilio/status_english.form", "en")])
async def test_a_status_request_gets_the_status_back_by_sms(sms_service, operator, name, language):
    code = await file_complaint(sms_service, operator)
    for _ in range(2):  # Twilio retrying the request: one answer all the same
        assert (await post_twilio(sms_service, fixture(name, code=code)))[0] == 200
    delivered = await operator.wait(2)
    expected = {"vi": f"{code}: Mới tiếp nhận. Hạn trả lời: 17:00 ngày 02/11/2026.",
                "en": f"{code}: Received. Answer due: 02 Nov 2026, 17:00."}[language]
    assert (delivered[1].to, delivered[1].text) == (CITIZEN, expected)
    # A question is not part of the complaint: nothing stored, nothing for the officer.
    assert len(await inbound(sms_service.core)) == 1
    assert len([row for row in await outbox_rows(sms_service.core) if row.key.startswith("sms-status:")]) == 1
    assert len(operator.delivered) == 2


async def test_status_requests_without_a_usable_code_get_a_useful_answer(sms_service, operator):
    body = fixture("twilio/status_tt.form", code="")
    assert (await post_twilio(sms_service, body))[0] == 200  # "TT" alone, nothing filed yet
    assert (await post_twilio(sms_service, fixture("twilio/status_typo.form")))[0] == 200
    unknown = tracking.new_code("PA")
    assert (await post_twilio(sms_service, fixture("twilio/status_english.form", code=unknown)))[0] == 200
    help_text, typo, not_found = (d.text for d in await operator.wait(3))
    assert help_text == "Để tra cứu, nhắn: TT <mã phản ánh>, ví dụ TT PA-7KQ4-M9XS."
    assert typo.startswith("Mã phản ánh không đúng.")
    assert not_found == f"No complaint has the code {unknown}."
    assert await complaints(sms_service.core) == [] and await inbound(sms_service.core) == []


async def test_tt_alone_answers_with_the_senders_latest_complaint(sms_service, operator):
    code = await file_complaint(sms_service, operator)
    assert (await post_twilio(sms_service, fixture("twilio/status_tt.form", code="")))[0] == 200
    assert (await operator.wait(2))[1].text.startswith(f"{code}: Mới tiếp nhận.")


async def test_tt_followed_by_words_is_a_complaint_not_a_status_request(sms_service, operator):
    # "TT" also abbreviates "thị trấn" (a township).
    assert (await post_twilio(sms_service, fixture("twilio/township_not_status.form")))[0] == 200
    [complaint] = await complaints(sms_service.core)
    assert complaint.text.startswith("TT Đông Anh")


async def test_a_status_answer_goes_back_through_the_gateway_the_request_came_by(sms_service, operator):
    code = await file_complaint(sms_service, operator)  # by Twilio, the default gateway
    assert (await post_android(sms_service, fixture("android/status_tt.json", code=code)))[0] == 200
    reply = (await operator.wait(2))[1]
    assert (reply.api, reply.to) == ("android", CITIZEN) and reply.text.startswith(f"{code}: ")


async def test_with_ascii_only_texts_go_without_diacritics_in_gsm_7(sms_config, operator, clock):
    async with running(sms_config({"sms": {"ascii_only": True}}), clock) as service:
        code = await file_complaint(service, operator)
        [ack] = operator.delivered
        assert ack.text.startswith(f"Da tiep nhan phan anh {code}. Han tra loi: 17:00 ngay 02/11/2026.")
        assert sms_text.is_gsm(ack.text) and sms_text.segments(ack.text) == 1
        await lifecycle.answer(service.core, code, STAFF["slug"], "Đã sửa xong đèn đường “ngõ 12” – cảm ơn!")
        assert (await operator.wait(2))[1].text == f'{code}: Da sua xong den duong "ngo 12" - cam on!'


async def test_a_long_answer_is_shortened_between_words_and_ends_with_the_link(sms_service, operator):
    code = await file_complaint(sms_service, operator)
    link = "https://hanoi.gov.vn/thong-bao/ke-hoach-sua-chua-chieu-sang-quy-iv-2026"
    answer = ("Kính gửi Quý ông/bà, đơn vị đã tiếp nhận và kiểm tra hiện trường. " * 3 + f"Chi tiết: {link} . "
              + "Lịch thi công dự kiến từ thứ Hai tuần sau, mong Quý ông/bà thông cảm. " * 6)
    await lifecycle.answer(sms_service.core, code, STAFF["slug"], answer)
    sent = (await operator.wait(2))[1].text
    assert sms_text.segments(sent) <= sms_service.core.config.sms.max_segments == 4
    assert sent.startswith(f"{code}: Kính gửi") and sent.endswith(f"...\nXem đầy đủ: {PUBLIC_URL}/track/{code}")
    head = sent[:sent.index("...\n")]
    assert f"{code}: {answer}".startswith(head) and len(head) > 150
    # Whatever link is in what was sent is whole.
    assert all(url in (link, f"{PUBLIC_URL}/track/{code}") for url in re.findall(r"https://\S+", sent))


async def test_no_phone_number_is_logged_in_clear(sms_config, operator, clock, caplog):
    caplog.set_level(logging.DEBUG)
    operator.fail_next(400)  # Twilio's error quotes the number it refused
    async with running(sms_config(), clock) as service:
        assert (await post_twilio(service, fixture("twilio/text.form")))[0] == 200
        assert (await post_twilio(service, fixture("twilio/status_tt.form", code="")))[0] == 200
        assert (await post_android(service, fixture("android/sms_received_legacy.json")))[0] == 200
        await operator.wait(2)
        await lifecycle.answer(service.core, (await complaints(service.core))[0].tracking_code, STAFF["slug"], "Ok")
        await operator.wait(3)
    # Ours at every level; libraries from INFO up (aiosqlite echoes statement parameters at
    # DEBUG, which production never enables and bot.logs' formatter would mask anyway).
    lines = [f"{record.name} {record.getMessage()} {getattr(record, 'fields', '')}" for record in caplog.records
             if record.name.startswith(("bot", "channels")) or record.levelno >= logging.INFO]
    assert any("sms received" in line for line in lines) and any("+84 91* *** 678" in line for line in lines)
    assert any("21211" in line for line in lines)  # the refusal that quoted the number was logged, masked
    for line in lines:
        assert "912345678" not in line and "0912 345" not in line, line
