"""The Twilio gateway end to end: recorded webhooks signed by Twilio's own RequestValidator,
posted to the real service; the answers sent through a fake Twilio Messages API."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from channels.sms import twilio
from contract.messages import Outgoing
from service.app import DISPATCHER
from storage.models import Attachment, OutboxMessage
from tests.test_sms_support import (ACCOUNT_SID, CITIZEN, PUBLIC_URL, TWILIO_TOKEN, complaints, fixture, inbound,
                                    operator, outbox_rows, post, post_twilio, retrying, running, settled, sms_config,
                                    sms_service, twilio_signature, twilio_url)

__all__ = ("operator", "sms_config", "sms_service")  # fixtures used here


async def test_a_signed_sms_files_a_complaint_and_the_acknowledgement_arrives_by_sms(sms_service, operator):
    status, answer = await post_twilio(sms_service, fixture("twilio/text.form"))
    assert status == 200 and answer == twilio.EMPTY_TWIML
    [message] = await inbound(sms_service.core)
    assert (message.sender, message.external_id) == (CITIZEN, "twilio:SM6f1c3d2b9a8e7f60514233a2b1c0d9e8")
    assert message.text.startswith("Đèn đường ngõ 12 phố Trần Duy Hưng")
    [complaint] = await complaints(sms_service.core)
    assert complaint.channel == "sms" and complaint.status == "new"
    [ack] = await operator.wait(1)
    assert (ack.api, ack.to, ack.sender) == ("twilio", CITIZEN, "+84241234567")
    assert complaint.tracking_code in ack.text
    assert f"{PUBLIC_URL}/track/{complaint.tracking_code}" in ack.text
    row = await settled(sms_service.core, "ack:", "sent")
    assert row.external_id == ack.request_id  # Twilio's Message SID is kept


async def test_twilio_retrying_the_same_message_sid_stores_one_message(sms_service, operator):
    for name in ("twilio/text.form", "twilio/retry_same_sid.form", "twilio/text.form"):
        assert (await post_twilio(sms_service, fixture(name)))[0] == 200
    assert len(await inbound(sms_service.core)) == 1
    assert len(await complaints(sms_service.core)) == 1
    await operator.wait(1)
    assert len(await outbox_rows(sms_service.core)) == 1


async def test_a_picture_message_keeps_its_media_link(sms_service):
    assert (await post_twilio(sms_service, fixture("twilio/mms_photo.form")))[0] == 200
    [message] = await inbound(sms_service.core)
    async with sms_service.core.sessions() as session:
        [attachment] = (await session.scalars(select(Attachment).where(Attachment.message_id == message.id))).all()
    assert attachment.content_type == "image/jpeg"
    assert attachment.reference.startswith(f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/")


async def test_a_delivery_status_callback_is_answered_and_not_stored(sms_service):
    assert (await post_twilio(sms_service, fixture("twilio/status_callback.form")))[0] == 200
    assert await inbound(sms_service.core) == [] and await complaints(sms_service.core) == []


@pytest.mark.parametrize("signed_url", [
    twilio_url(),
    # Twilio's validator also accepts the URL with the scheme's default port written out.
    "https://phananh.example.gov.vn:443/hn/webhooks/sms/twilio",
])
async def test_the_signature_covers_the_public_url_from_config(sms_service, signed_url):
    assert (await post_twilio(sms_service, fixture("twilio/text.form"), url=signed_url))[0] == 200


@pytest.mark.parametrize("case", ["no signature", "another token", "the address behind the proxy",
                                  "another gateway's address", "a changed body", "a query string added"])
async def test_a_missing_or_forged_signature_is_refused_and_nothing_is_stored(sms_service, operator, case):
    body = fixture("twilio/text.form")
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": twilio_signature(twilio_url(), body)}
    path = "twilio"
    if case == "no signature":
        del headers["X-Twilio-Signature"]
    elif case == "another token":
        headers["X-Twilio-Signature"] = twilio_signature(twilio_url(), body, token="not-our-token")
    elif case == "the address behind the proxy":
        headers["X-Twilio-Signature"] = twilio_signature(f"{sms_service.url}/webhooks/sms/twilio", body)
    elif case == "another gateway's address":
        headers["X-Twilio-Signature"] = twilio_signature(twilio_url("android"), body)
    elif case == "a changed body":
        body = body.replace(b"12", b"21")
    else:
        path = "twilio?debug=1"
    status, _ = await post(sms_service, path, body, headers)
    assert status == 403
    assert await inbound(sms_service.core) == [] and await complaints(sms_service.core) == []
    assert await outbox_rows(sms_service.core) == []


async def test_a_signed_query_string_is_part_of_the_url(sms_service):
    body = fixture("twilio/text.form")
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Twilio-Signature": twilio_signature(twilio_url() + "?gateway=vn", body)}
    assert (await post(sms_service, "twilio?gateway=vn", body, headers))[0] == 200


@pytest.mark.parametrize("case, expected", [
    ("json content type", 400), ("empty body", 400), ("missing From", 400), ("a 10 kB body", 400),
    ("unknown gateway", 404),
])
async def test_bad_input_is_refused_before_the_store(sms_service, operator, case, expected):
    body = {"empty body": fixture("twilio/empty.form"), "missing From": fixture("twilio/missing_from.form"),
            "a 10 kB body": fixture("twilio/oversized.form")}.get(case, fixture("twilio/text.form"))
    assert case != "a 10 kB body" or len(body) > 10_000
    content_type = "application/json" if case == "json content type" else "application/x-www-form-urlencoded"
    gateway = "viettel" if case == "unknown gateway" else "twilio"
    headers = {"Content-Type": content_type, "X-Twilio-Signature": twilio_signature(twilio_url(gateway), body)}
    status, _ = await post(sms_service, gateway, body, headers)
    assert status == expected
    assert await inbound(sms_service.core) == [] and await complaints(sms_service.core) == []
    assert await outbox_rows(sms_service.core) == []


async def test_a_refused_number_gives_up_with_the_reason_and_no_number_in_clear(sms_service, operator):
    operator.fail_next(400)
    assert (await post_twilio(sms_service, fixture("twilio/text.form")))[0] == 200
    row = await settled(sms_service.core, "ack:", "failed")
    assert row.attempts == 1 and "21211" in row.last_error and row.last_error.startswith("permanent: twilio:")
    assert "912345678" not in row.last_error and "+84 91* *** 678" in row.last_error
    assert operator.delivered == []


async def test_a_gateway_error_is_retried_through_the_outbox(sms_service, operator, clock):
    operator.fail_next(503)
    assert (await post_twilio(sms_service, fixture("twilio/text.form")))[0] == 200
    row = await retrying(sms_service.core, "ack:")
    assert row.attempts == 1 and "503" in row.last_error
    clock.advance(timedelta(minutes=5))
    sms_service.core.outbox_ready.set()
    row = await settled(sms_service.core, "ack:", "sent")
    assert row.attempts == 2
    [ack] = await operator.wait(1)
    assert ack.to == CITIZEN


async def test_a_gateway_that_does_not_answer_in_time_is_retried(sms_config, operator, clock):
    operator.fail_next("slow")
    async with running(sms_config({"outbox": {"send_timeout_seconds": 1.0}}), clock) as service:
        assert (await post_twilio(service, fixture("twilio/text.form")))[0] == 200
        row = await retrying(service.core, "ack:")
        assert "gave no answer in time" in row.last_error and row.unsure


async def test_a_look_up_takes_only_what_twilio_made_since_the_message_was_queued(sms_service, operator, clock):
    """Twilio keeps no id of ours: a look-up finds our message by recipient and words in its
    list, and by when Twilio made it (``date_created``): the same words sent before the row
    was queued are another message. A message still in Twilio's queue (no sent date yet,
    so not listed under a ``DateSent`` filter) is found."""
    operator.hold_in_queue = True
    assert (await post_twilio(sms_service, fixture("twilio/text.form")))[0] == 200
    [ack] = await operator.wait(1)
    async with sms_service.core.sessions() as session:
        row = (await session.scalars(select(OutboxMessage).where(OutboxMessage.key.startswith("ack:")))).one()
    message = Outgoing.from_payload(row.channel, row.recipient, row.key, row.payload)
    sender = sms_service.app[DISPATCHER].senders["sms"]
    assert await sender.lookup(message, row.created_at) == [ack.request_id]
    assert operator.lookups == 1
    clock.advance(timedelta(hours=1))
    assert await sender.lookup(message, clock.now()) == []  # the same words, made an hour before
    assert await sender.lookup(replace(message, text="Lời khác."), row.created_at) == []
    # Items Twilio should not list are passed over; one whose time cannot be read may be ours.
    operator.listed_too = ["?", None, {"sid": None, "to": row.recipient, "body": ack.text},
                           {"sid": "SM-inbound", "to": row.recipient, "body": ack.text, "direction": "inbound"},
                           {"sid": "SM-undated", "to": row.recipient, "body": ack.text, "direction": "outbound-api",
                            "date_created": "hôm qua"}]
    assert await sender.lookup(message, row.created_at) == [ack.request_id, "SM-undated"]


async def test_wrong_credentials_are_retried_not_given_up(sms_config, operator, clock, monkeypatch):
    config = sms_config()
    monkeypatch.setenv("FI_TEST_TWILIO_TOKEN", "a-token-twilio-does-not-know")
    async with running(config, clock) as service:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        body = fixture("twilio/text.form")
        headers["X-Twilio-Signature"] = twilio_signature(twilio_url(), body, token="a-token-twilio-does-not-know")
        assert (await post(service, "twilio", body, headers))[0] == 200
        row = await retrying(service.core, "ack:")
        assert "401" in row.last_error and "credentials" in row.last_error


# ---------------------------------------------------------------------------- the verifier itself

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
_values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(params=st.dictionaries(_names, _values, max_size=8), path=st.sampled_from(["/a", "/hn/webhooks/sms/tw"]),
       port=st.sampled_from(["", ":443", ":8443"]))
def test_our_signature_is_twilios_for_any_parameters(params, path, port):
    url = f"https://phananh.example.gov.vn{port}{path}"
    expected = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    assert twilio.signature(TWILIO_TOKEN, url, list(params.items())) == expected
    assert twilio.is_signed(TWILIO_TOKEN, url, list(params.items()), expected, "HMAC_SHA1")
    assert RequestValidator(TWILIO_TOKEN).validate(url, params, expected)


@settings(max_examples=100, deadline=None)
@given(params=st.dictionaries(_names, _values, min_size=1, max_size=6))
def test_what_twilios_validator_refuses_ours_refuses(params):
    url = "https://phananh.example.gov.vn/hn/webhooks/sms/twilio"
    forged = RequestValidator("another-token").compute_signature(url, params)
    assert RequestValidator(TWILIO_TOKEN).validate(url, params, forged) is False
    assert twilio.is_signed(TWILIO_TOKEN, url, list(params.items()), forged, "HMAC_SHA1") is False


def test_form_bodies_sign_the_same_as_twilios_dictionary():
    body = fixture("twilio/mms_photo.form").decode()
    params = parse_qsl(body, keep_blank_values=True)
    assert urlencode(params) == body
    expected = RequestValidator(TWILIO_TOKEN).compute_signature(twilio_url(), dict(params))
    assert twilio.signature(TWILIO_TOKEN, twilio_url(), params) == expected


def test_the_sha256_algorithm_named_in_the_settings_header_is_used():
    params = {"From": CITIZEN, "Body": "xin chào"}
    url = twilio_url()
    expected = RequestValidator(TWILIO_TOKEN).compute_signature(url, params, algorithm="HMAC_SHA256")
    algorithm = twilio.algorithm_of("key=webhooks_sharedkey_1,algorithm=HMAC_SHA256")
    assert twilio.is_signed(TWILIO_TOKEN, url, list(params.items()), expected, algorithm)
    assert not twilio.is_signed(TWILIO_TOKEN, url, list(params.items()), expected, "HMAC_SHA1")
    assert not twilio.is_signed(TWILIO_TOKEN, url, list(params.items()), expected, "HMAC_MD5")
