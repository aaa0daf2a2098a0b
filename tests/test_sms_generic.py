"""The generic JSON gateway end to end: signed recorded webhooks into the real service, the
answers as signed JSON POSTs to a fake operator."""

from __future__ import annotations

import json

import pytest

from contract.messages import reference_of as message_id
from tests.test_sms_support import (CITIZEN, complaints, fixture, generic_headers, inbound, operator, outbox_rows,
                                    post, post_generic, retrying, running, settled, sms_config, sms_service)

__all__ = ("operator", "sms_config", "sms_service")  # fixtures used here
GENERIC_FIRST = ("nha-mang", "twilio", "android")


async def test_a_signed_sms_is_stored_and_acknowledged_by_a_signed_post(sms_config, operator, clock):
    async with running(sms_config(order=GENERIC_FIRST), clock) as service:
        status, answer = await post_generic(service, fixture("generic/text.json"))
        assert status == 200 and json.loads(answer) == {"status": "ok"}
        [message] = await inbound(service.core)
        assert (message.sender, message.external_id) == (CITIZEN, "nha-mang:vt-20261102-000042")
        [complaint] = await complaints(service.core)
        [ack] = await operator.wait(1)  # the fake checks our X-Signature before accepting
        assert (ack.api, ack.to, ack.sender) == ("generic", CITIZEN, "UBND.HN")
        assert complaint.tracking_code in ack.text
        row = await settled(service.core, "ack:", "sent")
        assert ack.request_id == message_id(row.key) and row.external_id == "op-1"


async def test_the_same_id_twice_stores_one_message(sms_service):
    for _ in range(3):
        assert (await post_generic(sms_service, fixture("generic/text.json")))[0] == 200
    assert len(await inbound(sms_service.core)) == 1 and len(await complaints(sms_service.core)) == 1


async def test_a_signature_with_the_sha256_prefix_is_accepted(sms_service):
    body = fixture("generic/text.json")
    headers = generic_headers(body)
    headers["X-Signature"] = "sha256=" + headers["X-Signature"].upper()
    assert (await post(sms_service, "nha-mang", body, headers))[0] == 200


async def test_a_message_from_a_sender_name_is_kept_and_never_answered(sms_service, operator):
    assert (await post_generic(sms_service, fixture("generic/operator_notice.json")))[0] == 200
    [message] = await inbound(sms_service.core)
    assert (message.sender, message.automated, message.complaint_id) == ("VIETTEL", True, None)
    assert await complaints(sms_service.core) == [] and await outbox_rows(sms_service.core) == []


@pytest.mark.parametrize("case", ["no signature", "wrong secret", "changed body"])
async def test_a_missing_or_forged_signature_is_refused(sms_service, case):
    body = fixture("generic/text.json")
    headers = generic_headers(body, secret="wrong" if case == "wrong secret" else "generic-hmac-secret-0c4d8e")
    if case == "no signature":
        del headers["X-Signature"]
    if case == "changed body":
        body = body.replace(b"000042", b"000043")
    assert (await post(sms_service, "nha-mang", body, headers))[0] == 403
    assert await inbound(sms_service.core) == []


@pytest.mark.parametrize("name", ["generic/missing_text.json", "generic/bad_time.json", "generic/not_json.txt"])
async def test_a_malformed_payload_is_refused(sms_service, name):
    assert (await post_generic(sms_service, fixture(name)))[0] == 400
    assert await inbound(sms_service.core) == []


async def test_a_server_error_from_the_operator_is_retried_and_a_client_error_is_not(sms_config, operator, clock):
    operator.fail_next(502, 422)
    async with running(sms_config(order=GENERIC_FIRST), clock) as service:
        assert (await post_generic(service, fixture("generic/text.json")))[0] == 200
        row = await retrying(service.core, "ack:")
        assert "answered 502" in row.last_error
        clock.advance(seconds=120)
        service.core.outbox_ready.set()
        row = await settled(service.core, "ack:", "failed")
        assert row.attempts == 2 and "(422)" in row.last_error
