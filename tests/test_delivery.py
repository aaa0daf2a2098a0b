"""Every citizen hears back: delivery receipts, unknown outcomes, fallback to the next
contact point, and "citizen unreachable", end to end on the real service.

The providers are the fakes of the other channel tests, speaking their protocols: the
fake SMS operator (Twilio, SMS Gateway for Android, a generic gateway), the sink mail
relay, the fake Telegram Bot API. Receipts are posted to the service's real webhook URLs,
signed the way each provider signs them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest
from sqlalchemy import select

from bot import digests, lifecycle, messages, staff
from contract.messages import Inbound, reference_of
from storage.models import Complaint, Event, OutboxMessage
from tests.conftest import merge
from tests.telegram_fake import CITIZEN as CHAT, OFFICER, bot_env, eventually, fake_api, telegram_overrides
from channels.email import MAIL_SERVER
from tests.test_email_support import SinkRelay, email_config, smtp_send
from tests.test_email_support import fixture as mail_fixture
from tests.test_sms_support import (ACCOUNT_SID, CITIZEN as PHONE, PUBLIC_URL, SECRETS, TWILIO_TOKEN, operator, sms_config,
                                    android_headers, fixture, gateways, generic_headers, post, post_twilio, running,
                                    twilio_signature)

ADDRESS = "dan.nguyen@example.vn"
FORM_TEXT = "Đèn đường trước số 5 ngõ 12 Hoàng Quốc Việt hỏng ba hôm nay."


async def rows(core, *where) -> list[OutboxMessage]:
    async with core.sessions() as session:
        return list((await session.scalars(select(OutboxMessage).where(*where).order_by(OutboxMessage.id))).all())


async def events(core, kind: str) -> list[Event]:
    async with core.sessions() as session:
        return list((await session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id))).all())


async def complaint(core, code: str) -> Complaint:
    async with core.sessions() as session:
        return await session.scalar(select(Complaint).where(Complaint.tracking_code == code))


async def file_by_form(service) -> str:
    """A web citizen who leaves a phone and an email address (as the form hands them in):
    two contact points, linked."""
    result = await service.port.receive(Inbound(
        channel="web", external_id=uuid.uuid4().hex, sender=None, text=FORM_TEXT,
        received_at=service.core.clock.now(), reply_to=(("sms", PHONE), ("email", ADDRESS))))
    return result.tracking_code


async def post_status(service, gateway: str, body: bytes, headers: dict, query: str = "") -> int:
    async with aiohttp.ClientSession() as http, http.post(
            f"{service.url}/webhooks/sms/{gateway}/status{query}", data=body, headers=headers) as response:
        return response.status


async def twilio_callback(service, callback: str, sid: str, status: str, token: str = TWILIO_TOKEN,
                          error_code: str | None = None) -> int:
    """Twilio reporting a message's fate at the StatusCallback URL we gave it, signed for that URL."""
    params = {"AccountSid": ACCOUNT_SID, "MessageSid": sid, "MessageStatus": status, "To": PHONE,
              **({"ErrorCode": error_code} if error_code else {})}
    body = urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": twilio_signature(callback, body, token)}
    assert callback.startswith(f"{PUBLIC_URL}/webhooks/sms/twilio/status?ref=")
    return await post_status(service, "twilio", body, headers, "?" + urlsplit(callback).query)


@pytest.fixture
async def relay():
    sink = await SinkRelay().start()
    yield sink
    await sink.stop()


@pytest.fixture
def everything(make_config, operator, relay, fake_api, bot_env, monkeypatch):
    """A configuration with every channel: the three SMS gateways, email, Telegram."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    data = merge(merge(telegram_overrides(fake_api), email_config(relay)),
                 {"web": {"public_url": PUBLIC_URL}, "sms": {"gateways": gateways(operator.url)}})
    fake_api.known_chats.update({OFFICER})
    return make_config(data, {**SECRETS, **bot_env})


async def test_a_twilio_delivery_report_is_recorded_and_a_forged_one_changes_nothing(sms_config, operator, clock):
    async with running(sms_config(), clock) as service:
        assert (await post_twilio(service, fixture("twilio/text.form")))[0] == 200
        [ack] = await operator.wait(1)
        [row] = await eventually(lambda: rows(service.core, OutboxMessage.status == "sent"))
        assert ack.callback == f"{PUBLIC_URL}/webhooks/sms/twilio/status?ref={reference_of(row.key)}"

        assert await twilio_callback(service, ack.callback, ack.request_id, "sent") == 200
        assert await twilio_callback(service, ack.callback, ack.request_id, "delivered") == 200
        [row] = await rows(service.core)
        assert (row.delivery, row.delivered_at is not None) == ("delivered", True)

        # Forged (wrong token), or signed for another message's reference: refused, nothing changes.
        assert await twilio_callback(service, ack.callback, ack.request_id, "undelivered",
                                     token="not-twilios-token") == 403
        other = ack.callback.replace(reference_of(row.key), reference_of("someone-else"))
        body = urlencode({"AccountSid": ACCOUNT_SID, "MessageSid": ack.request_id,
                          "MessageStatus": "undelivered"}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Twilio-Signature": twilio_signature(ack.callback, body)}
        assert await post_status(service, "twilio", body, headers, "?" + urlsplit(other).query) == 403
        [row] = await rows(service.core)
        assert row.delivery == "delivered" and await events(service.core, "fallback") == []


async def test_an_undelivered_sms_reaches_the_citizen_by_email_when_they_gave_one(sms_config, operator, relay, clock):
    async with running(sms_config(email_config(relay)), clock) as service:
        code = await file_by_form(service)
        [ack] = await operator.wait(1)
        assert ack.to == PHONE  # the first contact point they gave
        assert await twilio_callback(service, ack.callback, ack.request_id, "undelivered", error_code="30003") == 200
        [mail] = await relay.wait_for(1)
        assert mail.rcpt_tos == [ADDRESS] and code in mail.message["Subject"]
        assert "Chúng tôi đã tiếp nhận phản ánh" in mail.text  # the email's own full text, not the SMS one
        [fallback] = await events(service.core, "fallback")
        assert fallback.detail["from"] == "sms" and fallback.detail["to"] == "email"
        assert "Twilio error 30003" in fallback.detail["reason"]
        first, second = await rows(service.core, OutboxMessage.key.startswith("ack:"))
        assert (first.channel, first.delivery, second.channel, second.fallback_of) == ("sms", "undelivered",
                                                                                       "email", first.id)
        # A repeat of the same report falls back no second time.
        assert await twilio_callback(service, ack.callback, ack.request_id, "undelivered") == 200
        await asyncio.sleep(0.3)
        assert len(relay.mails) == 1 and len(await events(service.core, "fallback")) == 1


async def test_the_android_gateway_s_failed_report_moves_the_message_on(sms_config, operator, relay, clock):
    config = sms_config(email_config(relay), order=("android", "twilio", "nha-mang"))
    async with running(config, clock) as service:
        await file_by_form(service)
        [ack] = await operator.wait(1)
        body = json.dumps({"event": "sms:failed", "deviceId": "d1", "id": "w1", "webhookId": "h1",
                           "payload": {"messageId": ack.request_id, "phoneNumber": PHONE,
                                       "failedAt": "2026-11-02T08:01:00+07:00",
                                       "reason": "RESULT_ERROR_GENERIC_FAILURE"}}).encode()
        assert (await post(service, "android", body, android_headers(body, int(clock.now().timestamp()))))[0] == 200
        [mail] = await relay.wait_for(1)
        assert mail.rcpt_tos == [ADDRESS]
        [first] = await rows(service.core, OutboxMessage.channel == "sms")
        assert (first.delivery, first.delivery_reason) == ("failed", "RESULT_ERROR_GENERIC_FAILURE")


async def test_the_generic_gateway_s_status_webhook_is_signed_like_its_messages(sms_config, operator, clock):
    async with running(sms_config(order=("nha-mang", "twilio", "android")), clock) as service:
        assert (await post(service, "nha-mang", fixture("generic/text.json"),
                           generic_headers(fixture("generic/text.json"))))[0] == 200
        [ack] = await operator.wait(1)
        report = json.dumps({"event": "status", "id": ack.request_id, "status": "delivered"}).encode()
        assert await post_status(service, "nha-mang", report, generic_headers(report, "not-the-secret")) == 403
        assert await post_status(service, "nha-mang", report, generic_headers(report)) == 200
        [row] = await eventually(lambda: rows(service.core, OutboxMessage.delivery == "delivered"))
        assert row.reference == ack.request_id
        bad = json.dumps({"event": "status", "id": ack.request_id, "status": "lost in space"}).encode()
        assert await post_status(service, "nha-mang", bad, generic_headers(bad)) == 400


async def test_a_gateway_down_for_ten_minutes_sends_each_message_once_when_it_is_back(sms_config, operator, clock):
    """503s, then answers too slow to wait for, then back: the clock is compressed (short
    backoff, the test moves time on), the behaviour is not. Nothing is failed, nothing doubled."""
    config = sms_config({"outbox": {"send_timeout_seconds": 1.0, "backoff_base_seconds": 5,
                                    "backoff_max_seconds": 120, "max_attempts": 20}})
    operator.slow_seconds = 1.2
    operator.fail_next(*[503] * 12, *["slow"] * 3)
    async with running(config, clock) as service:
        for i in range(6):
            body = urlencode({"MessageSid": f"SM{i:032d}", "AccountSid": ACCOUNT_SID, "From": f"+8491234{i:04d}",
                              "To": "+84241234567", "Body": "Mất điện cả ngõ 5 từ sáng.", "NumMedia": "0"}).encode()
            assert (await post_twilio(service, body))[0] == 200
        start = clock.now()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len({d.to for d in operator.delivered}) < 6 or any(
                r.status != "sent" for r in await rows(service.core)):
            assert loop.time() < deadline, [(r.key, r.status, r.attempts, r.last_error) for r in
                                             await rows(service.core)]
            clock.advance(seconds=30)
            service.core.outbox_ready.set()
            await asyncio.sleep(0.1)
        assert clock.now() - start >= timedelta(minutes=2)
        sent = await rows(service.core)
        assert len(sent) == 6 and {r.status for r in sent} == {"sent"}
        assert sorted(d.to for d in operator.delivered) == sorted({d.to for d in operator.delivered})  # once each
        assert operator.lookups >= 1  # an unanswered send was looked up, not sent blind


async def test_a_telegram_citizen_who_blocked_the_bot_gets_the_answer_by_sms(everything, fake_api, operator, clock):
    async with running(everything, clock) as service:
        fake_api.known_chats.add(CHAT)
        core = service.core
        # Filed on Telegram with the phone Telegram confirmed as the citizen's own.
        code = (await service.port.receive(Inbound(
            channel="telegram", external_id=f"{CHAT}:1", sender=str(CHAT), text=FORM_TEXT,
            received_at=clock.now(), reply_to=(("sms", PHONE),)))).tracking_code
        await fake_api.wait_for("sendMessage", CHAT, contains=code)
        fake_api.blocked.add(CHAT)
        await lifecycle.answer(core, code, "nguyen-van-an", "Đã cử thợ điện tới sửa chiều nay.")
        [answer] = await operator.wait(1)
        assert answer.to == PHONE and "Đã cử thợ điện" in answer.text
        telegram_row, sms_row = await rows(core, OutboxMessage.key.startswith("answer:"))
        assert telegram_row.status == "failed" and "blocked" in telegram_row.last_error
        assert sms_row.fallback_of == telegram_row.id
        # The officer reading the case sees which way the answer went.
        officer = await staff.by_slug(core, "nguyen-van-an")
        text = messages.render(core, await staff.case(core, officer, code), "vi", "head", 4000)
        assert "(answer) qua telegram: failed" in text and "(answer) qua sms: sent" in text


async def test_with_no_contact_point_left_the_complaint_is_marked_unreachable_and_officers_told(
        everything, fake_api, clock):
    async with running(everything, clock) as service:
        core = service.core  # the citizen never started the bot (or blocked it), and left nothing else
        code = (await service.port.receive(Inbound(
            channel="telegram", external_id=f"{CHAT}:9", sender=str(CHAT), text=FORM_TEXT,
            received_at=clock.now()))).tracking_code
        await eventually(lambda: _marked(core, code, unreachable=True))
        notice = await fake_api.wait_for("sendMessage", OFFICER, contains="Không liên lạc được")
        assert code in notice.text
        [event] = await events(core, "unreachable")
        assert event.detail["channel"] == "telegram"
        # The unit head reads it in the digest.
        period = digests.parse_period("daily", clock.now() + timedelta(days=1), core.config.tz)
        async with core.sessions() as session:
            digest = await digests.compose(core, session, "tiep-nhan", period, clock.now())
        assert f"Chưa liên lạc được với người dân (1 phản ánh đang mở" in digest.text and code in digest.text
        # A later message that gets through clears the mark.
        fake_api.known_chats.add(CHAT)
        await lifecycle.answer(core, code, "nguyen-van-an", "Chúng tôi đã nhận được phản ánh.")
        await eventually(lambda: _marked(core, code, unreachable=False))


async def _marked(core, code: str, unreachable: bool) -> list[Complaint]:
    found = await complaint(core, code)
    return [found] if (found.unreachable_at is not None) == unreachable else []


async def test_a_bounce_of_our_mail_moves_the_message_to_the_citizen_s_phone(everything, operator, relay, clock):
    """The relay took the mail, then the citizen's server bounced it (a DSN to our SMTP
    server naming our Message-ID): the acknowledgement goes on by SMS."""
    async with running(everything, clock) as service:
        code = (await service.port.receive(Inbound(
            channel="web", external_id="f" * 32, sender=None, text=FORM_TEXT, received_at=clock.now(),
            reply_to=(("email", ADDRESS), ("sms", PHONE))))).tracking_code
        [mail] = await relay.wait_for(1)
        assert operator.delivered == []
        our_id = mail.message["Message-ID"]
        port = service.app[MAIL_SERVER].port
        answer = await asyncio.to_thread(smtp_send, port, mail_fixture("bounce_dsn.eml", CODE=code, OUR_ID=our_id),
                                         "<>", ["phananh@feedback.example.gov.vn"])
        assert answer.startswith("2.0.0")
        [sms] = await operator.wait(1)
        assert sms.to == PHONE and code in sms.text
        [first] = await rows(service.core, OutboxMessage.channel == "email")
        assert (first.delivery, first.delivery_reason) == ("undelivered", "smtp; 550 5.1.1 User unknown")


async def test_operators_see_delivery_fallbacks_and_resends_in_the_metrics(everything, fake_api, operator, clock):
    async with running(everything, clock) as service:
        fake_api.known_chats.add(CHAT)
        fake_api.blocked.add(CHAT)
        await service.port.receive(Inbound(channel="telegram", external_id=f"{CHAT}:5", sender=str(CHAT),
                                           text=FORM_TEXT, received_at=clock.now(), reply_to=(("sms", PHONE),)))
        await operator.wait(1)
        async with aiohttp.ClientSession() as http, http.get(f"{service.url}/metrics") as response:
            text = await response.text()
        assert 'feedback_intake_fallbacks_total{from_channel="telegram",to_channel="sms"} 1.0' in text
        assert 'feedback_intake_outbox_final_messages{channel="telegram",state="failed"} 1.0' in text
        assert "feedback_intake_outbox_oldest_undelivered_age_seconds" in text
        assert "feedback_intake_outbox_resent_messages 0.0" in text
