"""SMS Gateway for Android end to end: the app's recorded webhooks, signed as the app signs
them (HMAC-SHA256 of body + X-Timestamp), posted to the real service; the answers sent
to a fake of the app's ``POST /message`` API."""

from __future__ import annotations

import asyncio
import json

import pytest

from contract.messages import reference_of as message_id
from tests.test_sms_support import (ANDROID_KEY, CITIZEN, android_headers, complaints, fixture, inbound, operator,
                                    outbox_rows, post, post_android, retrying, running, settled, sms_config,
                                    sms_service)

__all__ = ("operator", "sms_config", "sms_service")  # fixtures used here
ANDROID_FIRST = ("android", "twilio", "nha-mang")


async def test_a_received_sms_is_stored_and_acknowledged_through_the_app(sms_config, operator, clock):
    async with running(sms_config(order=ANDROID_FIRST), clock) as service:
        status, answer = await post_android(service, fixture("android/sms_received.json"))
        assert status == 200 and json.loads(answer) == {"status": "ok"}
        [message] = await inbound(service.core)
        # The app gives the number as the phone shows it (0912345678); we keep it as E.164.
        assert message.sender == CITIZEN
        assert message.external_id == "android:a3f1c09e:2026-11-02T08:00:11.000+07:00"
        [complaint] = await complaints(service.core)
        [ack] = await operator.wait(1)
        assert (ack.api, ack.to) == ("android", CITIZEN) and complaint.tracking_code in ack.text
        row = await settled(service.core, "ack:", "sent")
        assert ack.request_id == row.external_id == message_id(row.key)


async def test_an_older_app_that_sends_only_phone_number_is_understood(sms_service):
    assert (await post_android(sms_service, fixture("android/sms_received_legacy.json")))[0] == 200
    [message] = await inbound(sms_service.core)
    assert message.sender == CITIZEN and message.text.startswith("Nhà hàng xóm hát karaoke")


async def test_the_apps_retries_store_one_message(sms_service, clock):
    body = fixture("android/sms_received.json")
    assert (await post_android(sms_service, body))[0] == 200
    clock.advance(seconds=10)  # the app retries after 10 s, signing again with a new timestamp
    assert (await post_android(sms_service, body))[0] == 200
    assert len(await inbound(sms_service.core)) == 1 and len(await complaints(sms_service.core)) == 1


async def test_the_same_message_id_at_another_time_is_another_message(sms_service):
    # The app's messageId is a 32-bit hash of the message: equal ids are not proof of a retry.
    assert (await post_android(sms_service, fixture("android/sms_received.json")))[0] == 200
    assert (await post_android(sms_service, fixture("android/same_id_other_message.json")))[0] == 200
    first, second = await inbound(sms_service.core)
    assert first.external_id != second.external_id
    # Same phone, soon after: the second joins the first complaint as a follow-up.
    [complaint] = await complaints(sms_service.core)
    assert first.complaint_id == second.complaint_id == complaint.id


@pytest.mark.parametrize("offset, expected", [(0, 200), (-299, 200), (299, 200), (-301, 403), (301, 403),
                                              (-86_400, 403)])
async def test_a_timestamp_outside_the_window_is_refused_as_a_replay(sms_service, offset, expected):
    now = int(sms_service.core.clock.now().timestamp())
    status, _ = await post_android(sms_service, fixture("android/sms_received.json"), timestamp=now + offset)
    assert status == expected
    assert len(await inbound(sms_service.core)) == (1 if expected == 200 else 0)


@pytest.mark.parametrize("case", ["no headers", "no timestamp", "wrong key", "signed without the timestamp",
                                  "timestamp changed after signing", "body changed after signing",
                                  "not a number"])
async def test_a_missing_or_forged_signature_is_refused(sms_service, case):
    body = fixture("android/sms_received.json")
    now = int(sms_service.core.clock.now().timestamp())
    headers = android_headers(body, now)
    if case == "no headers":
        del headers["X-Signature"], headers["X-Timestamp"]
    elif case == "no timestamp":
        del headers["X-Timestamp"]
    elif case == "wrong key":
        headers = android_headers(body, now, key="not-" + ANDROID_KEY)
    elif case == "signed without the timestamp":
        import hashlib
        import hmac
        headers["X-Signature"] = hmac.new(ANDROID_KEY.encode(), body, hashlib.sha256).hexdigest()
    elif case == "timestamp changed after signing":
        headers["X-Timestamp"] = str(now - 1)
    elif case == "body changed after signing":
        body = body.replace("88".encode(), "89".encode())
    else:
        headers = android_headers(body, now)
        headers["X-Timestamp"] = "1.7e9"
    status, _ = await post(sms_service, "android", body, headers)
    assert status == 403
    assert await inbound(sms_service.core) == [] and await outbox_rows(sms_service.core) == []


@pytest.mark.parametrize("name", ["android/sms_sent.json", "android/system_ping.json"])
async def test_events_that_are_not_incoming_sms_are_answered_and_dropped(sms_service, name):
    assert (await post_android(sms_service, fixture(name)))[0] == 200
    assert await inbound(sms_service.core) == [] and await complaints(sms_service.core) == []


@pytest.mark.parametrize("name", ["android/missing_sender.json", "android/missing_payload.json"])
async def test_a_payload_without_what_an_sms_needs_is_refused(sms_service, name):
    assert (await post_android(sms_service, fixture(name)))[0] == 400
    assert await inbound(sms_service.core) == []


async def test_a_form_posted_to_the_android_hook_is_refused(sms_service):
    body = fixture("android/sms_received.json")
    headers = android_headers(body, int(sms_service.core.clock.now().timestamp()))
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    assert (await post(sms_service, "android", body, headers))[0] == 400
    assert await inbound(sms_service.core) == []


async def test_a_send_that_timed_out_but_reached_the_app_is_not_sent_twice(sms_config, operator, clock):
    # The app got the first request but its answer came too late; the retry carries the
    # same id, which the gateway refuses as a duplicate: the message counts as sent, once.
    operator.fail_next("slow")
    config = sms_config({"outbox": {"send_timeout_seconds": 1.0}}, order=ANDROID_FIRST)
    async with running(config, clock) as service:
        assert (await post_android(service, fixture("android/sms_received.json")))[0] == 200
        row = await retrying(service.core, "ack:")
        assert "gave no answer in time" in row.last_error and row.unsure
        await operator.wait(1)  # the slow answer did reach the phone
        clock.advance(seconds=120)
        service.core.outbox_ready.set()
        row = await settled(service.core, "ack:", "sent")
        assert row.attempts == 2 and row.external_id == message_id(row.key)
        await asyncio.sleep(0.2)
        assert len(operator.delivered) == 1


async def test_a_bad_number_refused_by_the_app_gives_up_with_the_reason(sms_config, operator, clock):
    operator.fail_next(400)
    async with running(sms_config(order=ANDROID_FIRST), clock) as service:
        assert (await post_android(service, fixture("android/sms_received.json")))[0] == 200
        row = await settled(service.core, "ack:", "failed")
        assert row.last_error.startswith("permanent: android: gateway refused the message (400)")
        assert operator.delivered == []


async def test_the_apps_password_comes_from_its_own_variable(sms_config, operator, clock, monkeypatch):
    config = sms_config(order=ANDROID_FIRST)
    monkeypatch.setenv("FI_TEST_ANDROID_PASSWORD", "not-the-apps-password")
    async with running(config, clock) as service:
        assert (await post_android(service, fixture("android/sms_received.json")))[0] == 200
        row = await retrying(service.core, "ack:")
        assert "401" in row.last_error and operator.delivered == []
