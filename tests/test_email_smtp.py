"""The email channel end to end: smtplib delivers real mail to the running service's SMTP
server; a sink relay records what the service sends back. Threading is checked with
the reply headers that real mail clients write (tests/fixtures/email)."""

from __future__ import annotations

import asyncio
import logging
import smtplib

import pytest
from sqlalchemy import update

from storage.models import Attachment, Complaint, Event, Message, OutboxMessage
from tests.test_email_support import (DOMAIN, OURS, SinkRelay, crlf, eventually, fixture, new_mail, rows,
                                      start_mail_service, wait_until)

COMPLAINT = "Đèn đường ngõ 5 phố Hàng Bài hỏng ba hôm nay, buổi tối rất tối và nguy hiểm."


@pytest.fixture
async def mail(make_config, clock):
    """The service with email on, and its sink relay."""
    service = await start_mail_service(make_config, clock)
    yield service
    await service.stop()


async def file_complaint(mail, sender: str, message_id: str = "<first@client.test>",
                         subject: str = "Đèn đường ngõ 5 hỏng") -> tuple[str, str]:
    """Send a new complaint; return its tracking code and the Message-ID of our acknowledgement."""
    answer = await mail.send(new_mail(sender, subject, COMPLAINT, message_id, name="Nguyễn Văn An"), sender)
    assert answer.startswith("2.0.0 Taken as ")
    code = answer.removeprefix("2.0.0 Taken as ")
    [ack] = await mail.relay.wait_for(1)
    return code, ack.message["Message-ID"]


async def test_a_mailed_complaint_is_stored_before_250_and_acknowledged_in_thread(mail):
    code, ack_id = await file_complaint(mail, "an.nguyen@gmail.com")
    # Acknowledge after commit: by the time smtplib had its 250 the complaint was stored.
    [complaint] = await rows(mail.core, Complaint)
    assert complaint.tracking_code == code and complaint.channel == "email"
    [message] = await rows(mail.core, Message)
    assert (message.external_id, message.sender, message.text) == ("<first@client.test>", "an.nguyen@gmail.com",
                                                                   COMPLAINT)
    [ack] = mail.relay.mails
    assert ack.mail_from == OURS and ack.rcpt_tos == ["an.nguyen@gmail.com"]
    headers = ack.message
    assert headers["Subject"] == f"[{code}] Đèn đường ngõ 5 hỏng"
    assert headers["In-Reply-To"] == "<first@client.test>" and headers["References"] == "<first@client.test>"
    assert ack_id.endswith(f"@{DOMAIN}>") and headers["Auto-Submitted"] == "auto-replied"
    assert f"Mã phản ánh: {code}" in ack.text
    [row] = await eventually(lambda: rows(mail.core, OutboxMessage, OutboxMessage.status == "sent"))
    assert row.external_id == ack_id  # what a citizen's reply will name


# (fixture, the citizen's address in it): replies as Gmail, Outlook, Thunderbird and iPhone Mail write them.
CLIENT_REPLIES = [
    ("gmail_reply.eml", "an.nguyen@gmail.com",
     "Đến tối nay đèn vẫn chưa được sửa, cả ngõ tối om.\nMong phường xử lý sớm."),
    ("outlook_reply_windows1258.eml", "binh.tran@outlook.com.vn",
     "Kính gửi Quý cơ quan,\n\nĐèn đã sáng lại từ sáng nay. Xin cảm ơn.\n\nTrân trọng,\nTrần Thị Bình"),
    ("thunderbird_reply.eml", "chau.le@yahoo.com.vn", "Tôi gửi thêm: đèn số 3 và số 4 trong ngõ cũng hỏng."),
    ("iphone_reply.eml", "dung.pham@icloud.com", "Hôm nay có người đến xem nhưng chưa sửa."),
    ("references_only_reply.eml", "an.nguyen@gmail.com", "Tôi sẽ gửi ảnh chụp sau."),
    ("webmail_subject_only_reply.eml", "an.nguyen@gmail.com", "Bổ sung: đèn hỏng từ thứ Sáu tuần trước."),
]


@pytest.mark.parametrize("name, citizen, expected_text", CLIENT_REPLIES, ids=[c[0] for c in CLIENT_REPLIES])
async def test_a_citizens_reply_threads_onto_the_complaint(mail, name, citizen, expected_text):
    code, ack_id = await file_complaint(mail, citizen, "<first@client.test>")
    reply = fixture(name, CODE=code, OUR_ID=ack_id, FIRST_ID="<first@client.test>")
    answer = await mail.send(reply, citizen)
    assert answer == f"2.0.0 Added to {code}"
    assert len(await rows(mail.core, Complaint)) == 1
    first, second = await rows(mail.core, Message, Message.direction == "in")
    assert second.complaint_id == first.complaint_id
    assert second.text == expected_text  # quoted acknowledgement and signature trimmed
    # The answer to the follow-up threads under the citizen's reply, oldest message first.
    _, followup = await mail.relay.wait_for(2)
    assert followup.message["In-Reply-To"].split() == [second.external_id]
    assert followup.message["References"].split() == ["<first@client.test>", second.external_id]
    assert followup.message["Subject"].startswith(f"[{code}]")


async def test_a_reply_from_someone_else_naming_the_code_is_a_new_complaint(mail):
    code, ack_id = await file_complaint(mail, "an.nguyen@gmail.com")
    reply = fixture("webmail_subject_only_reply.eml", CODE=code).replace(b"an.nguyen@gmail.com",
                                                                         b"stranger@example.vn")
    answer = await mail.send(reply, "stranger@example.vn")
    assert answer.startswith("2.0.0 Taken as ") and code not in answer


async def test_a_retried_delivery_is_stored_once(mail):
    raw = new_mail("an.nguyen@gmail.com", "Rác", "Rác thải ở đầu ngõ 45 không được thu gom.", "<retry@client.test>")
    first = await mail.send(raw, "an.nguyen@gmail.com")
    again = await mail.send(raw, "an.nguyen@gmail.com")
    code = first.removeprefix("2.0.0 Taken as ")
    assert again == f"2.0.0 Already taken as {code}"
    assert len(await rows(mail.core, Message)) == 1
    await mail.relay.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(mail.relay.mails) == 1


async def test_mail_for_another_domain_is_refused_never_relayed(mail):
    raw = new_mail("spammer@example.com", "hi", "relay me", "<relay@x>", to="victim@gmail.com")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await mail.send(raw, "spammer@example.com", ["victim@gmail.com"])

    def dialogue() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", mail.smtp_port) as client:
            client.ehlo("client.test")
            client.mail("spammer@example.com")
            return client.rcpt(f"someone@{DOMAIN}.evil.example")

    code, text = await asyncio.to_thread(dialogue)
    assert code == 550 and b"Relaying denied" in text
    # One of ours beside a foreign one: ours is taken, the other refused.
    answer = await mail.send(new_mail("an@example.vn", "Ổ gà", "Ổ gà trước cổng chợ Hôm.", "<mixed@x>"),
                             "an@example.vn", [OURS, "victim@gmail.com"])
    assert answer.startswith("2.0.0 Taken as ")
    assert len(await rows(mail.core, Complaint)) == 1


async def test_a_mail_over_the_size_limit_is_refused_with_552(make_config, clock):
    mail = await start_mail_service(make_config, clock, max_message_bytes=4096)
    try:
        def dialogue() -> tuple[str, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", mail.smtp_port) as client:
                client.ehlo("client.test")
                return client.esmtp_features.get("size", ""), client.mail("an@example.vn", ["SIZE=100000"])

        size, refused = await asyncio.to_thread(dialogue)
        assert size == "4096" and refused[0] == 552
        big = new_mail("an@example.vn", "Ảnh", "x" * 5000, "<big@x>")
        with pytest.raises(smtplib.SMTPDataError) as error:
            await mail.send(big, "an@example.vn")
        assert error.value.smtp_code == 552
        assert await rows(mail.core, Message) == []
        small = new_mail("an@example.vn", "Ổ gà", "Ổ gà trước cổng chợ Hôm.", "<small@x>")
        assert (await mail.send(small, "an@example.vn")).startswith("2.0.0 Taken as ")
    finally:
        await mail.stop()


async def test_a_sender_past_the_rate_limit_gets_450_until_the_window_passes(make_config, clock):
    mail = await start_mail_service(make_config, clock, rate_limit_messages=2, rate_limit_window_seconds=600)
    try:
        for number in range(2):
            raw = new_mail("busy@example.vn", f"Phản ánh {number}", COMPLAINT, f"<rate{number}@x>")
            assert (await mail.send(raw, "busy@example.vn")).startswith("2.0.0 Taken as ")
        with pytest.raises(smtplib.SMTPSenderRefused) as error:
            await mail.send(new_mail("busy@example.vn", "Nữa", COMPLAINT, "<rate2@x>"), "busy@example.vn")
        assert error.value.smtp_code == 450
        other = new_mail("calm@example.vn", "Khác", COMPLAINT, "<calm@x>")
        assert (await mail.send(other, "calm@example.vn")).startswith("2.0.0 Taken as ")
        clock.advance(minutes=11)
        again = new_mail("busy@example.vn", "Sau đó", COMPLAINT, "<rate3@x>")
        assert (await mail.send(again, "busy@example.vn")).startswith("2.0.0 Taken as ")
    finally:
        await mail.stop()


AUTOMATED = [
    ("outlook_out_of_office.eml", "an.nguyen@gmail.com"),
    ("gmail_vacation.eml", "an.nguyen@gmail.com"),
]


@pytest.mark.parametrize("name, citizen", AUTOMATED, ids=[a[0] for a in AUTOMATED])
async def test_an_auto_reply_to_our_mail_is_recorded_on_the_complaint_and_never_answered(mail, name, citizen):
    code, ack_id = await file_complaint(mail, citizen)
    async with mail.core.sessions() as session, session.begin():
        await session.execute(update(Complaint).values(status="resolved"))
    answer = await mail.send(fixture(name, CODE=code, OUR_ID=ack_id), citizen)
    assert answer == "2.0.0 Recorded; automated mail is not answered"
    _, robot = await rows(mail.core, Message)
    [complaint] = await rows(mail.core, Complaint)
    assert robot.automated and robot.complaint_id == complaint.id
    assert complaint.status == "resolved"  # a robot does not reopen a case
    await asyncio.sleep(0.3)
    assert len(mail.relay.mails) == 1 and len(await rows(mail.core, OutboxMessage)) == 1


async def test_a_bounce_of_our_mail_threads_by_the_returned_headers(mail):
    code, ack_id = await file_complaint(mail, "an.nguyen@example.vn")
    answer = await mail.send(fixture("bounce_dsn.eml", CODE=code, OUR_ID=ack_id), "<>")
    assert answer == "2.0.0 Recorded; automated mail is not answered"
    _, bounce = await rows(mail.core, Message)
    assert bounce.automated and bounce.complaint_id is not None
    assert "550 5.1.1 User unknown" in bounce.text
    [event] = await rows(mail.core, Event, Event.kind == "automated_message")
    assert event.complaint_id == bounce.complaint_id


async def test_two_robots_do_not_write_to_each_other_forever(make_config, clock):
    """An autoresponder at the citizen's side answers every mail it gets, marking its
    answers as RFC 3834 says; one of ours is one of its, and there it stops."""
    relay = await SinkRelay().start()
    mail = await start_mail_service(make_config, clock, relay=relay)
    sent_back: list[asyncio.Future] = []

    def autoresponder(relayed) -> None:
        ours = relayed.message
        answer = new_mail("robot@example.vn", f"Auto: {ours['Subject']}", "I am away.", f"<auto{len(sent_back)}@x>",
                          headers=[("Auto-Submitted", "auto-replied"), ("In-Reply-To", ours["Message-ID"])])
        sent_back.append(asyncio.ensure_future(mail.send(answer, "robot@example.vn")))

    relay.on_mail = autoresponder
    try:
        await mail.send(new_mail("robot@example.vn", "Hello", COMPLAINT, "<start@x>"), "robot@example.vn")
        await wait_until(lambda: sent_back, what="the robot's answer")
        await asyncio.gather(*sent_back)
        await asyncio.sleep(0.5)
        assert len(relay.mails) == 1 and len(sent_back) == 1
    finally:
        await mail.stop()


async def test_a_robot_that_marks_nothing_is_held_back_by_the_rate_limit(make_config, clock):
    relay = await SinkRelay().start()
    mail = await start_mail_service(make_config, clock, relay=relay, rate_limit_messages=3)
    refused: list[int] = []

    async def answer_back(relayed) -> None:
        raw = new_mail("naive@example.vn", f"Re: {relayed.message['Subject']}", "Thank you for your mail.",
                       f"<naive{len(relay.mails)}@x>", headers=[("In-Reply-To", relayed.message["Message-ID"])])
        try:
            await mail.send(raw, "naive@example.vn")
        except smtplib.SMTPSenderRefused as error:
            refused.append(error.smtp_code)

    relay.on_mail = lambda relayed: asyncio.ensure_future(answer_back(relayed))
    try:
        await mail.send(new_mail("naive@example.vn", "Hello", COMPLAINT, "<naive-start@x>"), "naive@example.vn")
        await wait_until(lambda: refused, what="the rate limit to stop the loop")
        await asyncio.sleep(0.5)
        assert refused == [450] and len(relay.mails) == 3
    finally:
        await mail.stop()


async def test_bad_input_is_stored_with_a_note_or_refused_and_the_server_keeps_serving(mail):
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(1000))
    thousand = crlf(f"From: an@example.vn\r\nSubject: many\r\nMessage-ID: <many@x>\r\nMIME-Version: 1.0\r\n"
                    f"Content-Type: multipart/mixed; boundary=b\r\n\r\n{parts}--b--\r\n".encode())
    with pytest.raises(smtplib.SMTPDataError) as error:
        await mail.send(thousand, "an@example.vn")
    assert error.value.smtp_code == 554 and b"1001 MIME parts" in error.value.smtp_error
    empty = crlf(b"From: an@example.vn\r\nMessage-ID: <empty@x>\r\n\r\n\r\n")
    with pytest.raises(smtplib.SMTPDataError) as error:
        await mail.send(empty, "an@example.vn")
    assert error.value.smtp_code == 550 and b"empty" in error.value.smtp_error

    for name, sender in [("malformed_mime.eml", "an.nguyen@example.vn"),
                         ("raw_8bit_headers.eml", "an.nguyen@example.vn"),
                         ("no_from.eml", "script@example.vn"), ("only_attachment.eml", "an.nguyen@gmail.com"),
                         ("forwarded_as_attachment.eml", "an.nguyen@gmail.com")]:
        assert (await mail.send(fixture(name), sender)).startswith("2.0.0 Taken as "), name
    by_id = {m.external_id: m for m in await rows(mail.core, Message)}
    assert "[Ghi chú của hệ thống thư]" in by_id["<malformed.1@example.vn>"].text
    assert "CloseBoundaryNotFoundDefect" in by_id["<malformed.1@example.vn>"].text
    assert by_id["<raw-8bit.1@example.vn>"].subject == "Đường ngập nước"
    assert by_id["<no-from.1@example.vn>"].sender == "script@example.vn"
    assert "địa chỉ phong bì script@example.vn" in by_id["<no-from.1@example.vn>"].text
    photo = by_id["<only-attachment.1@mail.example.vn>"]
    assert "Thư chỉ có tệp đính kèm" in photo.text
    [stored] = await rows(mail.core, Attachment, Attachment.message_id == photo.id)
    assert (stored.filename, stored.content_type, stored.size) == ("IMG_0042.JPG", "image/jpeg", len(stored.data))
    # A Content-Type that makes Python's own parser raise: read another way, stored.
    hostile = crlf(b"From: an@example.vn\r\nMessage-ID: <hostile@x>\r\nContent-Type: text/plain; charset*\r\n\r\n"
                   b"Den duong hong.\r\n")
    assert (await mail.send(hostile, "an@example.vn")).startswith("2.0.0 Taken as ")
    forwarded = by_id["<forward-attachment.1@mail.example.vn>"]
    assert "---- Thư chuyển tiếp ----" in forwarded.text and "karaoke đến 1 giờ sáng" in forwarded.text
    # Still serving after all that.
    ok = new_mail("an@example.vn", "Ổ gà", "Ổ gà trước cổng chợ Hôm.", "<after@x>")
    assert (await mail.send(ok, "an@example.vn")).startswith("2.0.0 Taken as ")


async def test_attachments_follow_the_rules_and_notes_say_what_was_left_out(mail):
    assert (await mail.send(fixture("attachments_mixed.eml"), "an.nguyen@gmail.com")).startswith("2.0.0 Taken")
    [message] = await rows(mail.core, Message)
    [photo] = await rows(mail.core, Attachment)
    assert (photo.filename, photo.content_type) == ("ảnh ổ gà.heic", "image/heic")
    assert "Bỏ qua tệp đính kèm rỗng: empty.pdf." in message.text
    assert "Bỏ qua tệp setup.exe: không nhận loại tệp application/x-msdownload." in message.text


async def test_a_reply_to_a_staff_notification_is_refused_with_a_reason(mail):
    staff_id = f"<staff.PA-7KQ4-M9XS@{DOMAIN}>"
    raw = new_mail("officer@example.gov.vn", "Re: [PA-7KQ4-M9XS] Phản ánh mới", "Đã xử lý.", "<officer@x>",
                   headers=[("In-Reply-To", staff_id), ("References", staff_id)])
    with pytest.raises(smtplib.SMTPDataError) as error:
        await mail.send(raw, "officer@example.gov.vn")
    assert error.value.smtp_code == 550 and b"staff notifications" in error.value.smtp_error
    assert await rows(mail.core, Message) == []


async def test_log_lines_carry_no_readable_addresses(mail, caplog):
    caplog.set_level(logging.INFO, logger="channels.email")
    await file_complaint(mail, "nguyen.van.an@gmail.com")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await mail.send(new_mail("nguyen.van.an@gmail.com", "x", "y", "<r@x>", to="victim@gmail.com"),
                        "nguyen.van.an@gmail.com", ["victim@gmail.com"])
    records = [r for r in caplog.records if r.name.startswith("channels.email")]
    assert {r.getMessage() for r in records} >= {"mail taken", "mail refused"}
    for record in records:
        line = f"{record.getMessage()} {getattr(record, 'fields', '')}"
        assert "nguyen.van.an@" not in line and "victim@" not in line
    [taken] = [r for r in records if r.getMessage() == "mail taken"]
    assert taken.fields["sender"] == "n***@gmail.com"


async def test_a_big_html_mail_is_read_off_the_loop_while_the_web_keeps_answering(mail):
    html = "<p>Đèn đường <b>hỏng</b> ở ngõ 5.</p>\n" * 20000  # about 800 KB, read in a thread
    big = crlf(b"From: an@example.vn\nSubject: Dai\nMessage-ID: <big-html@x>\nMIME-Version: 1.0\n"
               b"Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + html.encode())
    assert len(big) > 262_144
    sending = asyncio.ensure_future(mail.send(big, "an@example.vn"))
    async with mail.running.client() as client:
        while not sending.done():
            async with client.get("/healthz") as response:
                assert response.status == 200
            await asyncio.sleep(0.01)
    assert (await sending).startswith("2.0.0 Taken as ")
    [message] = await rows(mail.core, Message)
    assert message.text.startswith("Đèn đường hỏng ở ngõ 5.")
