"""Property tests: the mail parser, fed generated and mutated mails, never raises anything
but its own refusal, and what it returns always fits where intake stores it."""

from __future__ import annotations

import base64
import os
import quopri
import unicodedata

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channels.email.parse import Limits, MailRejected, parse_mail
from channels.email.text import decode_bytes, html_to_text, trim_reply
from tests.test_email_support import FIXTURES, OURS

# FEEDBACK_EMAIL_EXAMPLES=20000 for a longer hunt than the suite's.
SETTINGS = settings(max_examples=int(os.environ.get("FEEDBACK_EMAIL_EXAMPLES", 300)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
LIMITS = Limits(max_parts=40, max_attachments=5, max_attachment_bytes=2048)
RECORDED = sorted(path.read_bytes() for path in FIXTURES.glob("*.eml"))

HEADER_NAMES = ["From", "To", "Subject", "Message-ID", "In-Reply-To", "References", "Content-Type",
                "Content-Transfer-Encoding", "Content-Disposition", "Auto-Submitted", "Precedence", "Reply-To",
                "Content-Language", "MIME-Version", "X-Loop", "Date", "List-Id", "X-Autoreply", "Sender"]
TRICKY = ["=?utf-8?B?", "=?windows-1258?Q?=E1=CC?=", "=?viscii?Q?=E1?=", "=?utf-8?Q?", "?=", "<", ">", "\"", "(",
          ")", "\\", ",", ";", ":", "@", "=", "*", "'", "%", "charset=", "boundary=", "filename*=utf-8''%E1",
          "multipart/mixed", "message/rfc822", "text/html", "base64", "quoted-printable", "\t", " ", "\r\n ",
          "Đèn đường", "ả", "\x00", "\x1b", "\udcff"]
CONTENT_TYPES = ["text/plain", "text/html", "image/jpeg", "application/pdf", "application/octet-stream",
                 "message/delivery-status", "text/rfc822-headers", "text/calendar", "application/x-msdownload",
                 "multipart/foo", "", "junk", "text/plain; charset=windows-1258", "text/plain; charset=viscii",
                 "text/html; charset=\"utf-8", "text/plain; charset*=utf-8''x"]
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "binary", "bogus", ""]

header_value = st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=20)), max_size=8).map("".join)
payload = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))


def _encode(data: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.encodebytes(data)
    if encoding == "quoted-printable":
        return quopri.encodestring(data)
    return data


@st.composite
def headers(draw, extra: list[str] | None = None) -> bytes:
    lines = [f"{draw(st.sampled_from(HEADER_NAMES))}: {draw(header_value)}" for _ in range(draw(st.integers(0, 6)))]
    lines += extra or []
    draw(st.randoms()).shuffle(lines)
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


@st.composite
def leaf(draw) -> bytes:
    encoding = draw(st.sampled_from(ENCODINGS))
    content = draw(st.sampled_from(CONTENT_TYPES))
    disposition = draw(st.sampled_from(["", "attachment; filename=\"a.jpg\"", "inline", "attachment"]))
    head = [f"Content-Type: {content}"] if content else []
    head += [f"Content-Transfer-Encoding: {encoding}"] if encoding else []
    head += [f"Content-Disposition: {disposition}"] if disposition else []
    return draw(headers(head)) + b"\r\n\r\n" + _encode(draw(payload), encoding)


def _multipart(children: list[bytes], boundary: str, kind: str, close: bool) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + child + b"\r\n" for child in children)
    head = f"Content-Type: multipart/{kind}; boundary=\"{boundary}\"\r\n\r\npreamble\r\n".encode()
    return head + body + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


def _part(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    multipart = st.builds(_multipart, st.lists(children, max_size=4), st.text("abcXYZ019-_'()+,./:=?", min_size=1,
                                                                               max_size=12),
                          st.sampled_from(["mixed", "alternative", "related", "report", "signed"]), st.booleans())
    forwarded = children.map(lambda inner: b"Content-Type: message/rfc822\r\n\r\nFrom: f@example.vn\r\n" + inner)
    return st.one_of(multipart, forwarded)


mime_tree = st.recursive(leaf(), _part, max_leaves=12)


@st.composite
def generated_mail(draw) -> bytes:
    return draw(headers(["MIME-Version: 1.0"])) + b"\r\n" + draw(mime_tree)


@st.composite
def mutated_mail(draw) -> bytes:
    raw = bytearray(draw(st.sampled_from(RECORDED)))
    for _ in range(draw(st.integers(1, 8))):
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert", "duplicate"]))
        if action == "flip":
            raw[at] = draw(st.integers(0, 255))
        elif action == "delete":
            del raw[at:at + draw(st.integers(1, 200))]
        elif action == "insert":
            raw[at:at] = draw(st.sampled_from([b"\r\n--", b"=?", b"\xff\xfe", b"\r\n\r\n", b"\x00", b"--b--",
                                               b"Content-Type: multipart/mixed; boundary=x\r\n", b">", b"=\r\n"]))
        else:
            raw[at:at] = raw[at:at + draw(st.integers(1, 300))]
    return bytes(raw)


def check(raw: bytes, envelope: str | None) -> None:
    """The one property: a ParsedMail that fits the store, or our own refusal."""
    try:
        mail = parse_mail(raw, envelope, LIMITS, own_address=OURS)
    except MailRejected as refused:
        assert refused.reply[:3] in ("550", "554") and refused.reply.isascii()
        return
    for message_id in (mail.message_id, *mail.thread_ids):
        assert message_id.startswith("<") and message_id.endswith(">") and len(message_id) <= 255
    assert len(mail.subject) <= 300 and "\n" not in mail.subject
    assert "\x00" not in mail.text + mail.subject + (mail.sender_name or "")
    assert unicodedata.is_normalized("NFC", mail.text)
    mail.text.encode("utf-8")  # no lone surrogates: the store must be able to write it
    mail.subject.encode("utf-8")
    (mail.sender_name or "").encode("utf-8")
    assert mail.text or mail.subject or mail.attachments
    assert mail.sender is None or (mail.sender.count("@") >= 1 and len(mail.sender) <= 320)
    assert len(mail.attachments) <= LIMITS.max_attachments
    assert all(0 < len(a.data) <= LIMITS.max_attachment_bytes and len(a.filename) <= 255 for a in mail.attachments)
    assert len(mail.thread_ids) <= 50


@SETTINGS
@given(generated_mail(), st.sampled_from(["a@example.vn", "<>", None, "junk"]))
@example(b"\r\n\r\n", None)
@example(b"Content-Type: text/plain; charset*\r\n\r\nbody\r\n", "a@example.vn")  # IndexError in Python 3.11
@example(b"From: \r\nContent-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n", "a@example.vn")
def test_generated_mails_never_break_the_parser(raw, envelope):
    check(raw, envelope)


@SETTINGS
@given(mutated_mail(), st.sampled_from(["a@example.vn", "<>"]))
def test_mutated_recorded_mails_never_break_the_parser(raw, envelope):
    check(raw, envelope)


@SETTINGS
@given(st.binary(max_size=2000), st.sampled_from(["a@example.vn", None]))
def test_arbitrary_bytes_never_break_the_parser(raw, envelope):
    check(raw, envelope)


@SETTINGS
@given(st.binary(max_size=300), st.one_of(st.none(), st.sampled_from(["utf-8", "cp1258", "viscii", "base64", "rot13",
                                                                     "utf-7", "idna", "utf-16", "x-unknown", ""]),
                                          st.text(max_size=15)))
def test_any_bytes_in_any_declared_charset_decode_to_text(data, charset):
    text, _ = decode_bytes(data, charset)
    assert isinstance(text, str)


@SETTINGS
@given(st.text(max_size=500))
def test_html_and_trimming_always_give_text_back(text):
    converted, _ = html_to_text(text)
    assert isinstance(converted, str)
    trimmed, cut = trim_reply(text)
    if text.strip():  # something to say is never trimmed to nothing
        assert trimmed.strip() and (cut or trimmed == text.strip())
