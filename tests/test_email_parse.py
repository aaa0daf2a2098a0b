"""Reading received mail: charsets, HTML, attachments, forwards, robots, trimming and the
mails that are refused. Recorded mails are in tests/fixtures/email."""

from __future__ import annotations

import base64
import unicodedata

import pytest

from channels.email.notes import with_notes
from channels.email.parse import Limits, MailRejected, parse_mail
from channels.email.text import decode_bytes, trim_reply
from tests.test_email_support import OURS, crlf, fixture

CODE, OUR_ID = "PA-7KQ4-M9XS", "<ack1@feedback.example.gov.vn>"


def parse(raw: bytes, envelope: str | None = "citizen@example.vn", **options):
    return parse_mail(crlf(raw), envelope, own_address=OURS, **options)


def keys(mail) -> list[str]:
    return [note.key for note in mail.notes]


def test_windows_1258_mail_reads_as_the_same_vietnamese_the_web_form_stores():
    mail = parse(fixture("new_windows1258.eml"))
    assert mail.sender_name == "Hoàng Thị Hoa" and mail.subject == "Rác thải không được thu gom"
    assert mail.text == ("Kính gửi UBND phường,\n\nRác thải ở đầu ngõ 45 Nguyễn Chí Thanh không được thu gom "
                         "từ thứ Hai, bốc mùi rất khó chịu.")
    # Windows-1258 writes tones as combining marks; routing keywords and search need NFC.
    assert unicodedata.is_normalized("NFC", mail.text + mail.subject + mail.sender_name)
    assert mail.notes == ()


def test_a_tone_mark_after_a_control_character_still_meets_its_letter():
    # Found by test_email_property.py: "\xfd\x00\xcc" in Windows-1258 is "ư", NUL, a
    # combining grave; the NUL went after the text was brought to NFC, leaving "ư" and its
    # mark side by side, not "ừ".
    raw = b"From: An <an@example.vn>\nSubject: \xd0\xfd\x00\xccng\nMessage-ID: <nul@x>\n\nng\xe2\xecp \xd0\xfd\x00\xccng\n"
    mail = parse(raw)
    assert (mail.subject, mail.text) == ("Đừng", "ngấp Đừng")
    assert unicodedata.is_normalized("NFC", mail.subject + mail.text)


def test_encoded_words_in_several_charsets_in_one_header():
    raw = (b"From: =?iso-8859-1?Q?Jos=E9?= =?utf-8?B?Tmd1eeG7hW4=?= <jose@example.vn>\n"
           b"Subject: =?windows-1258?Q?=D0i=EA=ECn?= =?utf-8?Q?_n=C6=B0=E1=BB=9Bc?= ok\n"
           b"Message-ID: <ew@x>\n\nbody\n")
    mail = parse(raw)
    # RFC 2047 drops the space between two encoded words; in a display name Python keeps it.
    assert mail.sender_name in ("JoséNguyễn", "José Nguyễn") and mail.subject == "Điến nước ok"


def test_raw_8bit_bytes_in_headers_are_decoded_with_a_note():
    mail = parse(fixture("raw_8bit_headers.eml"))
    assert (mail.sender_name, mail.subject) == ("Nguyễn Văn An", "Đường ngập nước")
    assert keys(mail) == ["header_charset"]


@pytest.mark.parametrize("declared, data, text, note", [
    ("iso-8859-1", "Điện mất từ sáng".encode(), "Điện mất từ sáng", None),  # UTF-8 mislabelled
    (None, "Điện mất".encode(), "Điện mất", None),
    ("iso-8859-1", "café".encode("latin-1"), "café", None),
    ("viscii", b"\xd0i\xea\xecn", "Điến", "cp1258"),  # unknown to Python: read as Windows-1258
    ("us-ascii", "Rác".encode(), "Rác", None),
    ("utf-8", b"R\xe1c", "R\xe1c", "cp1258"),  # not UTF-8 after all
])
def test_a_parts_charset_is_trusted_only_as_far_as_it_decodes(declared, data, text, note):
    decoded, used = decode_bytes(data, declared)
    assert unicodedata.normalize("NFC", decoded) == text and used == note


def test_html_is_made_readable_without_fetching_or_keeping_scripts():
    mail = parse(fixture("html_only.eml"))
    assert mail.text == "Ổ gà rất lớn trước số nhà 88 đường Láng.\n\nVị trí: [bản đồ](https://maps.example.com/?q=21.02,105.80)"
    assert "tracker" not in mail.text and "alert" not in mail.text and "color" not in mail.text


def test_a_mail_that_is_only_an_attachment_keeps_it_with_a_note():
    mail = parse(fixture("only_attachment.eml"))
    assert mail.text == "" and keys(mail) == ["only_attachments"]
    [photo] = mail.attachments
    assert (photo.filename, photo.content_type) == ("IMG_0042.JPG", "image/jpeg") and photo.data.startswith(b"\xff\xd8")


def test_attachments_left_out_are_named_in_notes():
    mail = parse(fixture("attachments_mixed.eml"))
    assert [(a.filename, a.content_type) for a in mail.attachments] == [("ảnh ổ gà.heic", "image/heic")]
    assert [(n.key, n.params.get("name")) for n in mail.notes] == [("empty_attachment", "empty.pdf"),
                                                                   ("type_refused", "setup.exe")]
    assert with_notes(mail.text, mail.notes, "en").endswith(
        "[Mail system notes]\n- Empty attachment left out: empty.pdf.\n"
        "- Attachment setup.exe left out: files of type application/x-msdownload are not taken.")


def _with_photos(count: int, size: int = 100) -> bytes:
    def photo(i: int) -> str:
        return base64.b64encode(b"\x89PNG" + bytes([i]) * size).decode()

    parts = "".join(f"--b\nContent-Type: image/png\nContent-Disposition: attachment; filename=\"p{i}.png\"\n"
                    f"Content-Transfer-Encoding: base64\n\n{photo(i)}\n" for i in range(count))
    return (f"From: a@example.vn\nSubject: photos\nMessage-ID: <p@x>\nContent-Type: multipart/mixed; boundary=b\n\n"
            f"--b\nContent-Type: text/plain\n\nPhotos of the flood.\n{parts}--b--\n").encode()


def test_attachment_count_and_size_limits():
    mail = parse(_with_photos(5), limits=Limits(max_attachments=3))
    assert len(mail.attachments) == 3
    assert [(n.key, n.params) for n in mail.notes] == [("too_many", {"count": 2, "max": 3})]
    big = parse(_with_photos(1, size=3000), limits=Limits(max_attachment_bytes=1024))
    assert big.attachments == () and [n.key for n in big.notes] == ["too_big"]
    anything_image = parse(_with_photos(1), limits=Limits(attachment_types=("image/*",)))
    assert len(anything_image.attachments) == 1


def test_a_forwarded_mail_is_read_below_a_marker_with_its_files():
    mail = parse(fixture("forwarded_as_attachment.eml"))
    assert mail.text == ("Tôi chuyển tiếp thư của hàng xóm, cùng một việc.\n\n---- Thư chuyển tiếp ----\n"
                         "From: Lê Văn Cường <cuong.le@example.vn>\nDate: Sun, 1 Nov 2026 22:10:00 +0700\n"
                         "Subject: Karaoke đến 1 giờ sáng\n\nNhà số 12 hát karaoke đến 1 giờ sáng nhiều đêm liền.")
    assert [a.filename for a in mail.attachments] == ["karaoke.jpg"]
    english = parse(fixture("forwarded_as_attachment.eml"), language="en")
    assert "---- Forwarded message ----" in english.text


def _nested_forwards(depth: int) -> bytes:
    raw = b"From: in@example.vn\nSubject: innermost\n\nthe innermost text\n"
    for level in range(depth):
        raw = (f"From: l{level}@example.vn\nSubject: level {level}\nContent-Type: message/rfc822\n\n").encode() + raw
    return b"Message-ID: <nest@x>\n" + raw


def test_forwards_nested_too_deep_are_left_out_with_a_note():
    mail = parse(_nested_forwards(5))
    assert "nested_too_deep" in keys(mail) and "innermost" not in mail.text
    assert "innermost" in parse(_nested_forwards(2)).text


def test_a_thousand_parts_or_deep_nesting_is_refused_saying_why():
    parts = "".join(f"--b\nContent-Type: text/plain\n\npart {i}\n" for i in range(1000))
    with pytest.raises(MailRejected) as refused:
        parse(f"From: a@example.vn\nContent-Type: multipart/mixed; boundary=b\n\n{parts}--b--\n".encode())
    assert refused.value.reply == "554 5.6.0 Message has 1001 MIME parts; at most 100 are taken"
    for depth in (30, 3000):  # 3000 also passes Python's recursion limit inside the stdlib parser
        nested = "".join(f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n" for i in range(depth))
        with pytest.raises(MailRejected) as refused:
            parse(f"From: a@example.vn\nContent-Type: multipart/mixed; boundary=b0\n\n{nested}".encode())
        assert refused.value.reply == "554 5.6.0 MIME parts are nested more than 12 deep"


def test_an_empty_mail_is_refused_and_says_why():
    with pytest.raises(MailRejected) as refused:
        parse(b"From: a@example.vn\nMessage-ID: <e@x>\n\n \n")
    assert refused.value.reply.startswith("550 5.6.0 Message is empty")
    only_empty = (b"From: a@example.vn\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: image/png\n"
                  b"Content-Disposition: attachment; filename=x.png\n\n--b--\n")
    with pytest.raises(MailRejected) as refused:
        parse(only_empty)
    assert "1 attachment(s) left out" in refused.value.reply


def test_a_subject_alone_is_taken_as_the_text():
    mail = parse(b"From: a@example.vn\nSubject: Den duong ngo 5 hong\n\n")
    assert mail.text == "Den duong ngo 5 hong"


def test_missing_from_falls_back_to_the_envelope_or_notes_there_is_no_sender():
    mail = parse(fixture("no_from.eml"), envelope="script@example.vn")
    assert mail.sender == "script@example.vn" and keys(mail) == ["no_from"]
    nobody = parse(fixture("no_from.eml"), envelope=None)
    assert nobody.sender is None and keys(nobody) == ["no_sender"]
    junk = parse(b"From: not an address at all\nSubject: x\n\nbody\n", envelope=None)
    assert junk.sender is None


def test_addresses_are_keyed_like_the_web_forms():
    mail = parse(b"From: \"Tran, B\" <Binh.Tran@Example.VN>\nSubject: x\n\nbody\n")
    assert (mail.sender, mail.sender_name) == ("Binh.Tran@example.vn", "Tran, B")


def test_message_ids_missing_or_too_long_get_stable_stored_forms():
    raw = b"From: a@example.vn\nSubject: x\n\nno id\n"
    assert parse(raw).message_id == parse(raw).message_id
    assert parse(raw).message_id.endswith("@no-message-id.invalid>")
    long_id = "<" + "x" * 400 + "@example.vn>"
    mail = parse(f"From: a@example.vn\nMessage-ID: {long_id}\nReferences: {long_id}\n\nbody\n".encode())
    assert len(mail.message_id) <= 255 and mail.thread_ids == (mail.message_id,)
    bare = parse(b"From: a@example.vn\nMessage-ID: bare.id@example.vn\n\nbody\n")
    assert bare.message_id == "<bare.id@example.vn>"


@pytest.mark.parametrize("headers, envelope, reason", [
    ("Auto-Submitted: auto-replied", "a@example.vn", "Auto-Submitted: auto-replied"),
    ("Auto-Submitted: auto-generated; owner-email=x@y", "a@example.vn", "Auto-Submitted: auto-generated"),
    ("Precedence: bulk", "a@example.vn", "Precedence: bulk"),
    ("Precedence: junk", "a@example.vn", "Precedence: junk"),
    ("Precedence: list", "a@example.vn", "Precedence: list"),
    ("X-Autoreply: yes", "a@example.vn", "x-autoreply: yes"),
    ("List-Id: <news.example.vn>", "a@example.vn", "mailing list (List-Id)"),
    ("", "<>", "empty envelope sender (a bounce)"),
    ("", "MAILER-DAEMON@mx.example.vn", "sent by MAILER-DAEMON@..."),
    ("", "no-reply@bank.example.vn", "sent by no-reply@..."),
    (f"X-Loop: {OURS}", "a@example.vn", "X-Loop names our address"),
])
def test_mail_from_machines_is_marked_automated(headers, envelope, reason):
    raw = f"From: a@example.vn\nSubject: hello\n{headers}\n\nbody\n".replace("\n\n\n", "\n\n").encode()
    assert parse(raw, envelope=envelope).automated == reason


@pytest.mark.parametrize("headers", ["Auto-Submitted: no", "Precedence: first-class", "X-Autoreply: no", ""])
def test_mail_from_people_is_not_automated(headers):
    raw = f"From: a@example.vn\nSubject: hello\n{headers}\n\nbody\n".replace("\n\n\n", "\n\n").encode()
    assert parse(raw).automated is None


def test_our_own_address_and_auto_reply_subjects_are_automated():
    assert parse(f"From: {OURS}\nSubject: x\n\nbody\n".encode()).automated == "from our own address"
    assert parse(b"From: a@example.vn\nSubject: Out of Office: back Monday\n\nbody\n").automated == "auto-reply subject"


@pytest.mark.parametrize("name", ["bounce_dsn.eml", "outlook_out_of_office.eml", "gmail_vacation.eml",
                                  "x_autoreply.eml"])
def test_recorded_robot_mails_are_automated(name):
    envelope = "<>" if name == "bounce_dsn.eml" else "a@example.vn"
    mail = parse(fixture(name, CODE=CODE, OUR_ID=OUR_ID), envelope=envelope)
    assert mail.automated


def test_a_bounce_threads_by_the_headers_it_returns():
    mail = parse(fixture("bounce_dsn.eml", CODE=CODE, OUR_ID=OUR_ID), envelope="<>")
    assert mail.thread_ids == (OUR_ID,) and "User unknown" in mail.text and "Reporting-MTA" not in mail.text


def test_a_bounce_says_which_of_our_messages_failed_and_why():
    mail = parse(fixture("bounce_dsn.eml", CODE=CODE, OUR_ID=OUR_ID), envelope="<>")
    assert mail.bounced == ((OUR_ID,), "smtp; 550 5.1.1 User unknown")
    delayed = fixture("bounce_dsn.eml", CODE=CODE, OUR_ID=OUR_ID).replace(b"Action: failed", b"Action: delayed")
    assert parse(delayed, envelope="<>").bounced is None  # still trying: not a failure yet
    for name in ("outlook_out_of_office.eml", "gmail_vacation.eml"):
        assert parse(fixture(name, CODE=CODE, OUR_ID=OUR_ID), envelope="a@example.vn").bounced is None


def test_a_forward_in_a_reply_is_not_trimmed_away():
    body = ("Xem thư dưới đây.\n\n---------- Forwarded message ---------\nFrom: Lê Văn Cường <c@example.vn>\n"
            "Date: Sun, 1 Nov 2026\nSubject: Karaoke\nTo: <an@example.vn>\n\nNhà số 12 hát karaoke đến 1 giờ sáng.")
    assert trim_reply(body) == (body, False)
    raw = (f"From: a@example.vn\nSubject: Fwd: Karaoke\nIn-Reply-To: <x@y>\n"
           f"Content-Type: text/plain; charset=utf-8\n\n{body}\n")
    assert "karaoke đến 1 giờ sáng" in parse(raw.encode()).text


INTERLEAVED = "> Đèn số 3?\nĐúng, đèn số 3.\n> Đèn số 4?\nCả đèn số 4."
LONG_TAIL = "Dòng 1\n--\n" + "\n".join(f"dòng {i}" for i in range(20))


@pytest.mark.parametrize("body, kept", [
    ("Vẫn chưa sửa.\n\n> Chúng tôi đã tiếp nhận\n> phản ánh.", "Vẫn chưa sửa."),
    (INTERLEAVED, INTERLEAVED),  # answers between quotes: cutting would lose what they answer
    ("> only a quote\n> nothing new", "> only a quote\n> nothing new"),
    ("Cảm ơn.\n--\nAn\n0912 345 678", "Cảm ơn."),
    ("Cảm ơn.\n\nGửi từ iPhone của tôi", "Cảm ơn."),
    (LONG_TAIL, LONG_TAIL),  # twenty lines after "--" are text, not a signature
    ("Ok.\n\n-----Original Message-----\nFrom: x\nanything", "Ok."),
    ("Ok.\n\nOn Mon, 2 Nov 2026 at 08:05, Cổng <p@x> wrote:\nnot quoted, so not an attribution",
     "Ok.\n\nOn Mon, 2 Nov 2026 at 08:05, Cổng <p@x> wrote:\nnot quoted, so not an attribution"),
])
def test_trimming_cuts_only_what_is_unambiguous(body, kept):
    assert trim_reply(body)[0] == kept


def test_very_long_text_is_cut_with_a_note():
    mail = parse(b"From: a@example.vn\nSubject: long\n\n" + b"a" * 200, limits=Limits(max_text_chars=50))
    assert len(mail.text) == 50 and keys(mail) == ["truncated"]


def test_broken_mime_is_kept_as_received_with_a_note():
    mail = parse(fixture("malformed_mime.eml"))
    assert keys(mail) == ["broken_mime"] and mail.text
    no_boundary = parse("From: a@example.vn\nContent-Type: multipart/mixed\n\nĐèn hỏng.\n".encode())
    assert "Đèn hỏng." in no_boundary.text and "broken_mime" in keys(no_boundary)


@pytest.mark.parametrize("content_type", ["text/plain; charset*", "text/plain;0*", "multipart/mixed; boundary=b; x*"])
def test_a_content_type_that_breaks_the_stdlib_parser_is_read_with_the_legacy_one(content_type):
    # Python 3.11's email.policy.default raises IndexError building the tree for these.
    mail = parse(f"From: a@example.vn\nContent-Type: {content_type}\n\nĐèn đường hỏng.\n".encode())
    assert "Đèn đường hỏng." in mail.text or content_type.startswith("multipart")
    assert keys(mail)[0] == "broken_mime"
