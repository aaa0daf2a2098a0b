"""What an outside probe found at the edges (issue 18), fields: a body nested thousands
deep, control characters in ids and addresses, numbers written the way Python's float()
reads them. Each is refused in the channel's own protocol and stores nothing; free text
is cleaned; nothing from outside reaches the store uncleaned, whatever the channel.
"""

from __future__ import annotations

import json
from dataclasses import replace

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.sql.sqltypes import String

from bot import intake
from contract import fields
from contract.messages import Attachment, Inbound
from contract.results import IntakeError
from storage.models import Attachment as StoredAttachment
from storage.models import Complaint, Contact, Message
from tests.test_email_support import OURS, crlf, rows, start_mail_service
from tests.test_open311 import CRM_KEY, error_of, file, open311, post  # noqa: F401 - open311 is a fixture
from tests.test_sms_support import (CITIZEN, android_headers, complaints, generic_headers, inbound,  # noqa: F401
                                    operator, post as post_sms, post_twilio, sms_config, sms_service)

DEEP = 2000  # past Python's recursion limit (1000), under sms.max_body_bytes


def test_the_limits_are_the_store_s_column_sizes():
    columns = {
        fields.EXTERNAL_ID_MAX: Message.__table__.c.external_id, fields.ADDRESS_MAX: Contact.__table__.c.address,
        fields.NAME_MAX: Contact.__table__.c.display_name, fields.SUBJECT_MAX: Complaint.__table__.c.subject,
        fields.AREA_MAX: Complaint.__table__.c.area, fields.VIA_MAX: Contact.__table__.c.via,
        fields.CATEGORY_MAX: Complaint.__table__.c.category,
        fields.FILENAME_MAX: StoredAttachment.__table__.c.filename,
        fields.CONTENT_TYPE_MAX: StoredAttachment.__table__.c.content_type,
        fields.REFERENCE_MAX: StoredAttachment.__table__.c.reference,
    }
    for limit, column in columns.items():
        assert isinstance(column.type, String) and column.type.length == limit, column
    assert Message.__table__.c.sender.type.length == fields.ADDRESS_MAX


@pytest.mark.parametrize("value, expected", [
    ("Ma\u0302\u0301t \u0111ie\u0323\u0302n\r\nngo\u0303 5\x00\x07", "Mất điện\nngõ 5"),  # NFC, newlines, controls gone
    ("\ufeffa\x85b\ud800c\uffff", "\ufeffabc"),
    ("  \t tab kept\t ", "tab kept"),
])
def test_text_is_cleaned(value, expected):
    assert fields.clean_text(value) == expected


@pytest.mark.parametrize("value, problem", [
    ("abc\x00", "contains control characters"), ("a\nb", "contains control characters"),
    ("\ud800x", "contains control characters"), ("   ", "is empty"), ("x" * 256, "is longer than 255 characters"),
])
def test_an_identifier_that_cannot_be_stored_as_it_is_is_refused(value, problem):
    with pytest.raises(fields.FieldError) as error:
        fields.identifier(value, "message id", 255)
    assert str(error.value) == f"message id {problem}"


def test_an_identifier_is_only_normalised_never_cut():
    assert fields.identifier(" e\u0301-1 ", "id", 10) == "é-1"
    assert fields.is_identifier("é-1", 10) and not fields.is_identifier("e\u0301-1", 10)


# ---------------------------------------------------------------------------- the last guard at intake

def _inbound(**changes) -> Inbound:
    base = Inbound(channel="sms", external_id="gw:1", sender="+84912345678", received_at=None,  # type: ignore[arg-type]
                   text="Đèn đường hỏng ở ngõ 5 Hoàng Quốc Việt.", via="gw")
    return replace(base, **changes)


@pytest.mark.parametrize("changes, field", [
    ({"external_id": "gw:1\x00"}, "message id"), ({"sender": "+8491\x00"}, "sender"),
    ({"reply_to": (("email", "a\x01@b.vn"),)}, "reply address"), ({"via": "g\x7fw"}, "gateway"),
    ({"in_reply_to": ("<x\x00@y>",)}, "replied-to id"), ({"external_id": "x" * 256}, "message id"),
    ({"attachments": (Attachment("a.jpg", "image/jpeg", reference="https://x/\x00"),)}, "attachment reference"),
])
async def test_the_intake_guard_refuses_ids_and_addresses_it_cannot_store(core, clock, changes, field):
    with pytest.raises(IntakeError) as error:
        await intake.receive(core, _inbound(received_at=clock.now(), **changes))
    assert str(error.value).startswith(field)
    async with core.sessions() as session:
        assert (await session.scalars(select(Message))).all() == []


async def test_the_intake_guard_cleans_free_text_on_any_channel(core, clock):
    await intake.receive(core, _inbound(
        channel="telegram", external_id="5:1", sender="5", via=None, received_at=clock.now(),
        text="Nước  ngập\x00 ngõ 8\r\n", sender_name="A\x00n\u200b  Nguyễn\nVăn", subject="s\x01ub",
        area="Ca\u0302\u0300u Gia\u0302\u0301y\x1b", attachments=(Attachment("ảnh\x00.jpg", "image/jpeg\x00", b"x"),)))
    async with core.sessions() as session:
        [message] = (await session.scalars(select(Message))).all()
        [complaint] = (await session.scalars(select(Complaint))).all()
        [contact] = (await session.scalars(select(Contact))).all()
        [stored] = (await session.scalars(select(StoredAttachment))).all()
    assert message.text == complaint.text == "Nước  ngập ngõ 8"
    assert (contact.display_name, complaint.subject, complaint.area) == ("An\u200b Nguyễn Văn", "sub", "Cầu Giấy")
    assert (stored.filename, stored.content_type) == ("ảnh.jpg", "image/jpeg")


# ---------------------------------------------------------------------------- SMS webhooks

def _nested(depth: int) -> bytes:
    return b'{"id": "1", "from": "0912345678", "text": "x", "extra": ' + b"[" * depth + b"]" * depth + b"}"


async def test_json_nested_thousands_deep_is_a_400_on_the_generic_gateway(sms_service):
    body = _nested(DEEP)
    assert len(body) < 65536
    status, answer = await post_sms(sms_service, "nha-mang", body, _generic(body))
    assert (status, answer) == (400, "body is not JSON\n")
    assert await inbound(sms_service.core) == []


async def test_json_nested_thousands_deep_is_a_400_on_the_android_gateway(sms_service):
    body = b'{"event": "sms:received", "payload": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    status, answer = await post_sms(sms_service, "android", body,
                                    android_headers(body, int(sms_service.core.clock.now().timestamp())))
    assert (status, answer) == (400, "body is not JSON\n")


def _generic(body: bytes) -> dict[str, str]:
    return generic_headers(body)


@pytest.mark.parametrize("field, value", [("from", "0912\x00345678"), ("id", "vt-1\x00"), ("id", "vt\x1b[2J"),
                                          ("from", "09123\x8545678"), ("id", "\ud800")])
async def test_control_characters_in_a_generic_sender_or_id_are_a_400(sms_service, field, value):
    payload = {"id": "vt-1", "from": "0912345678", "text": "Đèn đường hỏng ở ngõ 5."} | {field: value}
    body = json.dumps(payload).encode()
    status, answer = await post_sms(sms_service, "nha-mang", body, _generic(body))
    assert status == 400 and answer.startswith(f"field {field!r}")
    assert await inbound(sms_service.core) == []


async def test_control_characters_in_a_twilio_sender_are_a_400(sms_service):
    body = "MessageSid=SM1&From=%2B84912345678%00&To=%2B84241234567&Body=Hello".encode()
    status, answer = await post_twilio(sms_service, body)
    assert status == 400 and "contains control characters" in answer
    assert await inbound(sms_service.core) == []


async def test_a_numeric_field_in_other_digits_is_a_400_on_twilio(sms_service):
    body = "MessageSid=SM2&From=%2B84912345678&To=%2B84241234567&Body=Hello&NumMedia=%D9%A1".encode()
    assert await post_twilio(sms_service, body) == (400, "NumMedia is not a number\n")


async def test_control_characters_in_the_text_are_cleaned_and_stored_once(sms_service):
    body = json.dumps({"id": "vt-9", "from": "0912345678", "text": "Đèn\x00 đường hỏng\x07 ở ngõ 5."}).encode()
    for _ in range(2):
        assert (await post_sms(sms_service, "nha-mang", body, _generic(body)))[0] == 200
    [message] = await inbound(sms_service.core)
    assert (message.text, message.sender, message.external_id) == ("Đèn đường hỏng ở ngõ 5.", CITIZEN, "nha-mang:vt-9")
    assert len(await complaints(sms_service.core)) == 1


async def test_a_gateway_id_too_long_for_the_store_is_hashed_not_cut(sms_service):
    ids = ["a" * 199 + "1", "a" * 199 + "2"]  # the same first 255 characters once the gateway is put before
    for message_id in ids:
        body = json.dumps({"id": message_id, "from": "0912345678", "text": "Đèn đường hỏng."}).encode()
        assert (await post_sms(sms_service, "nha-mang", body, _generic(body)))[0] == 200
    stored = await inbound(sms_service.core)
    assert len(stored) == 2 and all(len(m.external_id) <= 255 for m in stored)


# ---------------------------------------------------------------------------- Open311 numbers

@pytest.mark.parametrize("lat, long", [("1_0", "105.85"), ("٢١", "105.85"), ("21.0285", "１０５"), ("1e1", "105"),
                                       ("nan", "105"), ("inf", "105"), ("21,03", "105.8"), (" 21", "105.8x")])
async def test_open311_numbers_only_as_ascii_decimals(open311, lat, long):  # noqa: F811
    status, content_type, body = await post(open311, {"api_key": CRM_KEY, "service_code": "moi-truong",
                                                      "description": "Cây đổ chắn đường.", "lat": lat,
                                                      "long": long})
    assert status == 400 and content_type == "application/json"
    code, description = error_of(body)
    assert code == 400 and "ASCII digits" in description


async def test_open311_takes_a_plain_decimal_position(open311):  # noqa: F811
    code = await file(open311, lat="-21.0285", long="105.8542")
    async with open311.core.sessions() as session:
        complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
    assert (complaint.latitude, complaint.longitude) == (-21.0285, 105.8542)


async def test_open311_refuses_a_file_in_place_of_a_text_field(open311):  # noqa: F811
    form = aiohttp.FormData()
    form.add_field("api_key", CRM_KEY)
    form.add_field("service_code", "moi-truong")
    form.add_field("description", b"x", filename="a.txt", content_type="text/plain")
    status, _, body = await post(open311, form)
    assert status == 400 and error_of(body) == (400, "send text fields only; a photo goes by media_url")


# ---------------------------------------------------------------------------- email

async def test_a_message_id_with_control_characters_is_stored_hashed_and_a_retry_is_one_mail(make_config, clock):
    mail = await start_mail_service(make_config, clock)
    try:
        raw = crlf(b"From: An <an@example.vn>\r\nTo: " + OURS.encode() + b"\r\nSubject: Den hong\r\n"
                   b"Message-ID: <a\x01b\x00c@client.test>\r\n\r\nDen duong hong o ngo 5.\r\n")
        first = await mail.send(raw, "an@example.vn")
        again = await mail.send(raw, "an@example.vn")
        assert first.startswith("2.0.0 Taken as ") and again.startswith("2.0.0 Already taken as ")
        [message] = await rows(mail.core, Message)
        assert message.external_id.endswith("@long-id.invalid>") and message.external_id.isprintable()
    finally:
        await mail.stop()
