"""The Zalo webhook end to end: Zalo's fake posts signed events to the running service over
HTTP; what is stored and what the citizen gets back (through the outbox, on the fake) is
checked. Signatures good, forged, over a changed body, replayed and stale; redeliveries
stored once; every event type; "TT <code>"; a shared phone number.
"""

from __future__ import annotations

from datetime import timedelta

import aiohttp

from storage.models import Attachment, Contact, Message, OutboxMessage
from tests.conftest import MONDAY_MORNING
from tests.zalo_fake import (  # noqa: F401
    APP_ID,
    CITIZEN,
    OA_SECRET,
    fake_zalo,
    fixture,
    ms,
    signed_delivery,
)
from tests.zalo_world import ZaloWorld, start_zalo, zalo, zalo_env  # noqa: F401

COMPLAINT = "Đèn đường ở ngõ 12 Trần Duy Hưng hỏng ba hôm nay rồi, tối đi lại rất nguy hiểm."
OTHER = "5816257339045276999"


async def raw_post(world: ZaloWorld, body: bytes, headers: dict) -> int:
    async with aiohttp.ClientSession() as http, http.post(world.webhook, data=body, headers=headers) as response:
        return response.status


# -------------------------------------------------------------------- signatures

async def test_a_signed_text_files_a_complaint_greets_and_acknowledges_with_the_code(zalo):
    assert await zalo.post(zalo.fake.text(CITIZEN, COMPLAINT)) == 200
    [complaint] = await zalo.complaints()
    assert complaint.channel == "zalo" and complaint.text == COMPLAINT
    greeting, ack = await zalo.sent_to(CITIZEN, 2)
    assert greeting.text.startswith("Kính chào Quý ông/bà!")
    assert complaint.tracking_code in ack.text and "Mã phản ánh" in ack.text
    assert ack.headers["access_token"] == zalo.fake.access_token


async def test_a_forged_signature_is_refused_and_nothing_is_stored(zalo):
    event = zalo.fake.text(CITIZEN, COMPLAINT)
    assert await zalo.post(event, oa_secret="not-the-oa-secret") == 403
    body, headers = signed_delivery(APP_ID, OA_SECRET, event)
    assert await raw_post(zalo, body, {**headers, "X-ZEvent-Signature": "mac=" + "0" * 64}) == 403
    assert await raw_post(zalo, body, {"Content-Type": "application/json"}) == 403  # no signature at all
    sha = headers["X-ZEvent-Signature"][4:]
    assert await raw_post(zalo, body, {**headers, "X-ZEvent-Signature": sha}) == 403  # without "mac="
    assert await zalo.count(Message) == 0 and await zalo.count(OutboxMessage) == 0


async def test_a_body_changed_after_signing_is_refused(zalo):
    body, headers = signed_delivery(APP_ID, OA_SECRET, zalo.fake.text(CITIZEN, COMPLAINT))
    changed = body.replace("ngõ 12".encode(), "ngõ 14".encode())
    assert changed != body
    assert await raw_post(zalo, changed, headers) == 403
    # Another app's delivery, signed with our secret, is not ours either.
    other, other_headers = signed_delivery("9999999999999999999", OA_SECRET, zalo.fake.text(CITIZEN, COMPLAINT))
    assert await raw_post(zalo, other, other_headers) == 403
    assert await zalo.count(Message) == 0


async def test_a_replayed_delivery_is_stored_once_and_a_stale_one_refused(zalo, clock):
    event = zalo.fake.text(CITIZEN, COMPLAINT)
    body, headers = signed_delivery(APP_ID, OA_SECRET, event)
    assert await raw_post(zalo, body, headers) == 200
    clock.advance(timedelta(minutes=30))  # Zalo's redeliveries come for about two hours
    assert await raw_post(zalo, body, {**headers, "num_retry": "3"}) == 200
    assert await zalo.count(Message) == 1 and len(await zalo.complaints()) == 1
    clock.advance(timedelta(hours=2))
    assert await raw_post(zalo, body, headers) == 403  # a replay beyond the age limit
    stale = zalo.fake.text(CITIZEN, "Một phản ánh khác", at=MONDAY_MORNING - timedelta(hours=3))
    assert await zalo.post(stale) == 403
    future = zalo.fake.text(CITIZEN, "Một phản ánh khác", at=clock.now() + timedelta(hours=1))
    assert await zalo.post(future) == 403
    assert await zalo.count(Message) == 1
    await zalo.sent_to(CITIZEN, 2)
    assert len(await zalo.outbox(OutboxMessage.key.like("ack:%"))) == 1


async def test_bad_bodies_are_refused_in_http_terms(zalo):
    assert await raw_post(zalo, b"not json", {"X-ZEvent-Signature": "mac=00"}) == 400
    assert await raw_post(zalo, b"[1, 2]", {"X-ZEvent-Signature": "mac=00"}) == 400
    huge = zalo.fake.text(CITIZEN, "x" * 70000)
    assert await zalo.post(huge) == 400
    no_msg_id = zalo.fake.text(CITIZEN, COMPLAINT)
    del no_msg_id["message"]["msg_id"]
    assert await zalo.post(no_msg_id) == 400
    assert await zalo.count(Message) == 0


async def test_the_recorded_redelivery_is_one_message(zalo):
    recorded = fixture("user_send_text_redelivered")
    statuses = []
    for delivery in recorded["deliveries"]:
        event = {**delivery["event"], "timestamp": ms(zalo.fake.now)}
        statuses.append(await zalo.post(event, retry=int(delivery["headers"].get("num_retry", 0))))
    assert statuses == [200, 200]
    assert await zalo.count(Message) == 1


# -------------------------------------------------------------------- every event type

async def test_photos_are_copied_with_their_caption_and_links(zalo):
    fake = zalo.fake
    assert await zalo.post(fake.images(CITIZEN, b"\xff\xd8photo-1", b"\xff\xd8photo-2", text="Rác ở ngõ 34")) == 200
    [complaint] = await zalo.complaints()
    assert complaint.text == "Rác ở ngõ 34"
    async with zalo.core.sessions() as session:
        files = (await session.execute(Attachment.__table__.select())).all()
    assert sorted(row.data for row in files) == [b"\xff\xd8photo-1", b"\xff\xd8photo-2"]
    assert all(row.reference.startswith(zalo.fake.url + "/media/") for row in files)


async def test_every_kind_of_content_is_kept_on_the_complaint(zalo):
    fake = zalo.fake
    assert await zalo.post(fake.text(CITIZEN, COMPLAINT)) == 200
    [complaint] = await zalo.complaints()
    assert await zalo.post(fake.images(CITIZEN, b"\xff\xd8photo")) == 200
    assert await zalo.post(fake.location(CITIZEN, 21.0285112, 105.8047953)) == 200
    assert await zalo.post(fake.file(CITIZEN, b"%PDF-1.4 don", "don-kien-nghi.pdf")) == 200
    assert await zalo.post(fake.link(CITIZEN, "https://hanoimoi.vn/ngap.html", "Ngập ở Cầu Giấy")) == 200
    assert len(await zalo.complaints()) == 1  # all within the window: follow-ups of the open complaint
    messages = await zalo.messages()
    assert [m.complaint_id for m in messages] == [complaint.id] * 5
    assert "(Ảnh gửi qua Zalo: 1 ảnh)" in messages[1].text
    assert "21.028511, 105.804795" in messages[2].text
    assert "don-kien-nghi.pdf" in messages[3].text
    assert "https://hanoimoi.vn/ngap.html" in messages[4].text and "Ngập ở Cầu Giấy" in messages[4].text
    async with zalo.core.sessions() as session:
        files = {row.filename: row for row in (await session.execute(Attachment.__table__.select())).all()}
    assert files["don-kien-nghi.pdf"].data == b"%PDF-1.4 don"
    assert files["don-kien-nghi.pdf"].content_type == "application/pdf"
    assert files["zalo-photo-1.jpg"].data == b"\xff\xd8photo" and files["zalo-photo-1.jpg"].reference.startswith(fake.url)
    stored = (await zalo.complaints())[0]
    assert (stored.latitude, stored.longitude) == (21.0285112, 105.8047953)
    await zalo.sent_to(CITIZEN, 6)  # greeting, acknowledgement, four "added to your complaint"


async def test_a_location_alone_files_a_complaint_at_that_point(zalo):
    assert await zalo.post(zalo.fake.location(CITIZEN, 21.0285112, 105.8047953)) == 200
    [complaint] = await zalo.complaints()
    assert (complaint.latitude, complaint.longitude) == (21.0285112, 105.8047953)


async def test_a_photo_that_does_not_come_in_time_keeps_its_link(start_zalo):
    world = await start_zalo(download_timeout_seconds=0.2)
    event = world.fake.images(CITIZEN, b"\xff\xd8x")
    url = event["message"]["attachments"][0]["payload"]["url"]
    event["message"]["attachments"][0]["payload"]["url"] = url.replace("/media/", "/media/missing-")
    assert await world.post(event) == 200
    async with world.core.sessions() as session:
        [row] = (await session.execute(Attachment.__table__.select())).all()
    assert row.data is None and "/media/missing-" in row.reference


async def test_stickers_voice_and_video_are_recorded_and_answered_with_what_we_read(zalo):
    fake = zalo.fake
    for event in (fake.sticker(CITIZEN), fake.audio(CITIZEN), fake.video(CITIZEN, b"mp4", "Nước tràn")):
        assert await zalo.post(event) == 200
    assert await zalo.complaints() == []  # nothing to file
    messages = await zalo.messages()
    assert [m.text for m in messages] == ["(nhãn dán gửi qua Zalo)", "(tin nhắn thoại gửi qua Zalo)",
                                         "(video gửi qua Zalo)"]
    assert all(m.automated for m in messages)
    sent = await zalo.sent_to(CITIZEN, 4)
    assert sent[0].text.startswith("Kính chào")
    assert "nhãn dán" in sent[1].text and "chỉ đọc được tin nhắn chữ" in sent[1].text
    assert "tin nhắn thoại" in sent[2].text and "video" in sent[3].text
    # Within an open complaint a voice message is kept on it, for the officer.
    assert await zalo.post(fake.text(CITIZEN, COMPLAINT)) == 200
    assert await zalo.post(fake.audio(CITIZEN)) == 200
    [complaint] = await zalo.complaints()
    assert (await zalo.messages())[-1].complaint_id == complaint.id


async def test_follow_greets_unfollow_and_seen_store_nothing(zalo):
    fake = zalo.fake
    assert await zalo.post(fake.follow(CITIZEN)) == 200
    assert await zalo.post(fake.follow(CITIZEN)) == 200  # Zalo delivering the same follow again
    [greeting] = await zalo.sent_to(CITIZEN, 1)
    assert "Kính chào Quý ông/bà" in greeting.text
    assert await zalo.post(fake.seen(CITIZEN, "8f7e6d5c4b3a29181706")) == 200
    assert await zalo.post(fake.follow(CITIZEN, unfollow=True)) == 200
    for name in ("follow", "unfollow", "user_seen_message"):
        assert await zalo.post({**fixture(name), "timestamp": ms(fake.now + timedelta(seconds=1))}) == 200
    assert await zalo.count(Message) == 0
    assert len(await zalo.outbox()) == 2  # a greeting per follow event (the fixture's follow too)


async def test_the_oas_own_events_and_unknown_ones_are_taken_and_ignored(zalo):
    echo = {"app_id": APP_ID, "sender": {"id": zalo.fake.oa_id}, "recipient": {"id": CITIZEN},
            "event_name": "oa_send_text", "message": {"text": "Xin chào", "msg_id": "ab" * 10},
            "timestamp": ms(zalo.fake.now)}
    assert await zalo.post(echo) == 200
    assert await zalo.post({**echo, "event_name": "user_reacted_message"}) == 200
    assert await zalo.count(Message) == 0


async def test_a_greeting_only_on_first_contact(zalo):
    fake = zalo.fake
    assert await zalo.post(fake.text(CITIZEN, COMPLAINT)) == 200
    assert await zalo.post(fake.text(CITIZEN, "Bổ sung: đèn ở cột số 5.")) == 200
    sent = await zalo.sent_to(CITIZEN, 3)
    assert [c.text.startswith("Kính chào") for c in sent] == [True, False, False]


async def test_a_first_message_is_greeted_before_its_acknowledgement_and_a_redelivery_adds_nothing(zalo):
    event = zalo.fake.text(CITIZEN, COMPLAINT)
    assert await zalo.post(event) == 200
    greeting, ack = await zalo.outbox()
    # The greeting is queued first (now with the complaint, in intake's transaction), so it is read first.
    assert greeting.key.startswith("zalo-greeting:") and ack.key.startswith("ack:") and greeting.id < ack.id
    await zalo.sent_to(CITIZEN, 2)
    assert await zalo.post(event) == 200  # Zalo delivers it again
    assert [row.key for row in await zalo.outbox()] == [greeting.key, ack.key]
    assert len(await zalo.complaints()) == 1


async def test_words_go_to_intake_without_a_look_up_of_their_own_and_only_a_new_citizen_is_greeted(zalo):
    """A message of words alone (the common case) is handed to intake with its greeting and
    no read of the citizen's contact before it: intake greets only a citizen new to the store."""
    from tests.conftest import statements

    fake = zalo.fake
    with statements(zalo.core, lambda statement: statement.lstrip().startswith("SELECT contacts.language")) as looks:
        assert await zalo.post(fake.text(CITIZEN, COMPLAINT)) == 200
        assert await zalo.post(fake.text(OTHER, COMPLAINT)) == 200
        assert await zalo.post(fake.text(CITIZEN, "Bổ sung: đèn ở cột số 5.")) == 200
    assert looks == []
    greetings = await zalo.outbox(OutboxMessage.key.like("zalo-greeting:%"))
    assert sorted(g.recipient for g in greetings) == sorted([CITIZEN, OTHER])


# -------------------------------------------------------------------- the conversation

async def test_tt_code_answers_the_status_and_files_nothing(zalo):
    fake = zalo.fake
    assert await zalo.post(fake.text(CITIZEN, COMPLAINT)) == 200
    [complaint] = await zalo.complaints()
    code = complaint.tracking_code
    assert await zalo.post(fake.text(CITIZEN, f"tt {code.lower().replace('-', ' ')}")) == 200
    assert await zalo.post(fake.text(CITIZEN, "TT")) == 200
    assert await zalo.post(fake.text(OTHER, "TT PA-7KQ4-M9XT")) == 200  # a typo in the check character
    assert len(await zalo.complaints()) == 1
    status = await zalo.sent_to(CITIZEN, 2, contains=f"Phản ánh {code}:")
    assert all("Đơn vị xử lý" in c.text for c in status)
    [bad] = await zalo.sent_to(OTHER, 1, contains="Mã phản ánh không đúng")
    assert "TT PA-7KQ4-M9XS" in bad.text


async def test_a_message_after_the_window_files_a_new_complaint(zalo, clock):
    fake = zalo.fake
    assert await zalo.post(fake.text(CITIZEN, COMPLAINT)) == 200
    clock.advance(timedelta(hours=49))
    assert await zalo.post(fake.text(CITIZEN, "Cống ở ngõ 5 bị tắc, nước tràn lên đường.")) == 200
    assert len(await zalo.complaints()) == 2


async def test_a_shared_phone_is_handed_to_the_domain_as_a_way_to_reach_the_citizen(zalo):
    fake = zalo.fake
    info = {"app_id": APP_ID, "sender": {"id": CITIZEN}, "recipient": {"id": fake.oa_id},
            "event_name": "user_submit_info", "user_id_by_app": fake.by_app(CITIZEN),
            "info": {"name": "Phạm Minh", "phone": "84912345678", "address": "", "city": "", "district": ""},
            "timestamp": ms(fake.now)}
    # Before any complaint: kept, not filed.
    fake.interacted(CITIZEN)  # sharing is an interaction with the OA: the thanks can be sent
    assert await zalo.post(info) == 200
    assert await zalo.complaints() == []
    async with zalo.core.sessions() as session:
        contacts = {(c.channel, c.address) for c in (await session.execute(Contact.__table__.select())).all()}
    assert ("sms", "+84912345678") in contacts
    # With an open complaint: added to it.
    assert await zalo.post(fake.text(CITIZEN, COMPLAINT)) == 200
    clock_later = {**info, "timestamp": ms(fake.now + timedelta(seconds=5))}
    assert await zalo.post(clock_later) == 200
    [complaint] = await zalo.complaints()
    last = (await zalo.messages())[-1]
    assert last.complaint_id == complaint.id and "+84912345678" in last.text
    thanks = await zalo.sent_to(CITIZEN, 2, contains="chia sẻ số điện thoại")
    assert len(thanks) == 2
    assert await zalo.post({**info, "info": {"phone": "12"}, "timestamp": ms(fake.now)}) == 200  # not a phone
