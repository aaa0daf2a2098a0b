"""Sending through the relay: retries while the relay is down or answers 4xx, giving up
on 5xx, STARTTLS and login, threading headers, and mail to staff. The relay is a sink
aiosmtpd server that speaks SMTP; everything else is the real service."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import lifecycle
from contract.delivery import PermanentDeliveryError
from contract.messages import Attachment, Outgoing
from channels.email.relay import RelaySender
from storage.models import OutboxMessage
from tests.test_email_support import (DOMAIN, OURS, SinkRelay, email_config, eventually, new_mail, rows,
                                      start_mail_service)

COMPLAINT = "Nắp cống trước số nhà 88 đường Láng bị vỡ, xe máy đi qua rất dễ sụp bánh."
CITIZEN = "an.nguyen@gmail.com"
OFFICER = {"slug": "binh", "name": "Phạm Bình", "unit": "tiep-nhan", "role": "agent", "email": "binh@example.gov.vn"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def complain(mail, message_id: str = "<c1@client.test>") -> str:
    answer = await mail.send(new_mail(CITIZEN, "Nắp cống vỡ", COMPLAINT, message_id), CITIZEN)
    return answer.removeprefix("2.0.0 Taken as ")


async def outbox_row(mail, status: str) -> OutboxMessage:
    [row] = await eventually(lambda: rows(mail.core, OutboxMessage, OutboxMessage.status == status))
    return row


async def test_sends_retry_while_the_relay_is_down_then_go_through(make_config, clock):
    port = free_port()  # nothing listens here yet: connection refused
    relay = SinkRelay()
    mail = await start_mail_service(make_config, clock, relay=relay, relay_port=port)
    try:
        await complain(mail)
        row = await eventually(lambda: rows(mail.core, OutboxMessage, OutboxMessage.attempts >= 1,
                                            OutboxMessage.status == "queued"))
        assert row[0].last_error.startswith("relay unreachable")
        await relay.start(port)
        clock.advance(hours=1)  # past the backoff
        sent = await outbox_row(mail, "sent")
        [relayed] = await relay.wait_for(1)
        assert sent.external_id == relayed.message["Message-ID"] and sent.attempts >= 2
    finally:
        await mail.stop()


async def test_a_4xx_from_the_relay_is_retried(make_config, clock):
    relay = await SinkRelay(data_answer="451 4.3.0 Queue full, try later").start()
    mail = await start_mail_service(make_config, clock, relay=relay)
    try:
        await complain(mail)
        row = await eventually(lambda: rows(mail.core, OutboxMessage, OutboxMessage.attempts >= 1,
                                            OutboxMessage.status == "queued"))
        assert row[0].last_error == "relay answered 451: 4.3.0 Queue full, try later"
        relay.data_answer = "250 2.0.0 Ok: queued"
        clock.advance(hours=1)
        await outbox_row(mail, "sent")
        assert len(await relay.wait_for(1)) == 1
    finally:
        await mail.stop()


async def test_a_5xx_from_the_relay_is_given_up_at_once(make_config, clock):
    relay = await SinkRelay(rcpt_answer="550 5.1.1 <an.nguyen@gmail.com>: User unknown").start()
    mail = await start_mail_service(make_config, clock, relay=relay)
    try:
        await complain(mail)
        failed = await outbox_row(mail, "failed")
        assert failed.attempts == 1
        assert failed.last_error == "permanent: relay answered 550: 5.1.1 <an.nguyen@gmail.com>: User unknown"
        clock.advance(hours=2)
        await asyncio.sleep(0.3)  # the dispatcher polls every 0.05 s
        [still] = await rows(mail.core, OutboxMessage)
        assert (still.status, still.attempts) == ("failed", 1)
    finally:
        await mail.stop()


@pytest.fixture
def relay_certificate(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A test CA and the relay's certificate for 127.0.0.1 it signed: (CA file, chain, key)."""
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    ca_file, chain, key = tmp_path / "ca.pem", tmp_path / "relay.pem", tmp_path / "relay.key"
    authority.cert_pem.write_to_path(str(ca_file))
    issued.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return ca_file, chain, key


async def test_starttls_and_login_from_environment_variables(make_config, clock, relay_certificate, monkeypatch,
                                                             caplog):
    ca_file, cert, key = relay_certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    password = "s3cret-Relay-Passw0rd"
    relay = await SinkRelay(tls_context=context, password=("feedback-intake", password)).start()
    environ = {"SMTP_USER": "feedback-intake", "SMTP_PASS": password}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    mail = await start_mail_service(make_config, clock, relay=relay, environ=environ, relay_starttls=True,
                                    relay_ca_file=str(ca_file), relay_username_env="SMTP_USER",
                                    relay_password_env="SMTP_PASS")
    try:
        await complain(mail)
        [relayed] = await relay.wait_for(1)
        assert relayed.tls and relayed.login == ("feedback-intake", password)
        await outbox_row(mail, "sent")
    finally:
        await mail.stop()
    assert password not in caplog.text


async def test_a_wrong_relay_password_is_retried_not_dropped(make_config, clock, relay_certificate, monkeypatch):
    ca_file, cert, key = relay_certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    relay = await SinkRelay(tls_context=context, password=("feedback-intake", "right")).start()
    environ = {"SMTP_USER": "feedback-intake", "SMTP_PASS": "wrong"}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    mail = await start_mail_service(make_config, clock, relay=relay, environ=environ, relay_starttls=True,
                                    relay_ca_file=str(ca_file), relay_username_env="SMTP_USER",
                                    relay_password_env="SMTP_PASS")
    try:
        await complain(mail)
        [row] = await eventually(lambda: rows(mail.core, OutboxMessage, OutboxMessage.attempts >= 1,
                                              OutboxMessage.status == "queued"))
        assert row.last_error.startswith("relay refused our login (535)") and "wrong" not in row.last_error
    finally:
        await mail.stop()


async def test_an_officers_answer_threads_under_the_citizens_mail_and_is_not_marked_automatic(make_config, clock):
    mail = await start_mail_service(make_config, clock, overrides={"staff": [OFFICER]})
    try:
        code = await complain(mail, "<c1@client.test>")
        ack, staff = sorted(await mail.relay.wait_for(2), key=lambda m: m.rcpt_tos[0] != CITIZEN)
        await lifecycle.answer(mail.core, code, "binh", "Đội duy tu đã thay nắp cống mới sáng nay.")
        answer = (await mail.relay.wait_for(3))[2]
        assert answer.rcpt_tos == [CITIZEN]
        headers = answer.message
        assert headers["In-Reply-To"] == "<c1@client.test>" and headers["References"] == "<c1@client.test>"
        assert headers["Auto-Submitted"] is None and headers["Subject"] == f"[{code}] Nắp cống vỡ"
        assert "Đội duy tu đã thay nắp cống mới sáng nay." in answer.text
        assert headers["Message-ID"] != ack.message["Message-ID"]
        assert headers["Message-ID"].endswith(f"@{DOMAIN}>") and headers["From"].addresses[0].addr_spec == OURS
    finally:
        await mail.stop()


async def test_staff_notifications_go_to_the_officers_email_and_their_replies_are_refused(make_config, clock):
    mail = await start_mail_service(make_config, clock, overrides={"staff": [OFFICER]})
    try:
        code = await complain(mail)
        [staff] = [m for m in await mail.relay.wait_for(2) if m.rcpt_tos == ["binh@example.gov.vn"]]
        headers = staff.message
        assert headers["Message-ID"].startswith("<staff.") and headers["Auto-Submitted"] == "auto-generated"
        assert headers["References"] == f"<staff.{code}@{DOMAIN}>"
        assert headers["Subject"].startswith(f"[{code}] Phản ánh mới {code}")
        assert COMPLAINT in staff.text
        reply = new_mail("binh@example.gov.vn", f"Re: {headers['Subject']}", "Tôi nhận xử lý.", "<officer@x>",
                         headers=[("In-Reply-To", headers["Message-ID"]), ("References", headers["References"])])
        with pytest.raises(Exception) as refused:
            await mail.send(reply, "binh@example.gov.vn")
        assert getattr(refused.value, "smtp_code", None) == 550
    finally:
        await mail.stop()


async def test_one_relay_session_carries_many_mails_and_a_closed_one_is_reopened(make_config, clock):
    # Long enough that the three acknowledgements share a session on a loaded machine (at
    # 0.5 s a full suite beside a benchmark once saw the relay close between two of them).
    relay = await SinkRelay(idle_timeout=2.0).start()
    mail = await start_mail_service(make_config, clock, relay=relay)
    try:
        for number in range(3):  # one after another: one session, open, carries each
            await mail.send(new_mail(f"c{number}@example.vn", "Nắp cống", COMPLAINT, f"<s{number}@x>"),
                            f"c{number}@example.vn")
            await relay.wait_for(number + 1)
        assert relay.connections == 1
        await asyncio.sleep(2.5)  # the relay closes the quiet session
        await mail.send(new_mail("c9@example.vn", "Nắp cống", COMPLAINT, "<s9@x>"), "c9@example.vn")
        await relay.wait_for(4)
        await wait_until_all_sent(mail, 4)
        assert relay.connections == 2
        # Not a failed attempt: the closed session was found at once and a new one opened.
        assert [row.attempts for row in await rows(mail.core, OutboxMessage)] == [1, 1, 1, 1]
    finally:
        await mail.stop()


async def test_mails_that_go_together_go_on_sessions_of_their_own_up_to_the_outboxs_concurrency(make_config, clock):
    """A mail takes four round trips with the relay, each waiting for a busy event loop
    under load: the mails the outbox sends together (``outbox.concurrency``) go on as many
    sessions, never more, and the sessions stay open for the next ones."""
    relay = await SinkRelay(data_delay=0.2).start()
    config = make_config(email_config(relay))
    sender = RelaySender(config.email, clock, display_name="Tiếp nhận phản ánh", timeout=5, sessions=4)
    alone = RelaySender(config.email, clock, display_name="Tiếp nhận phản ánh", timeout=5)

    def mail(number: int) -> Outgoing:
        return Outgoing(channel="email", recipient=f"c{number}@example.vn", text="Đã nhận.", key=f"ack:{number}")

    try:
        await asyncio.gather(*(sender.send(mail(number)) for number in range(6)))
        assert (relay.most_at_once, relay.connections, len(relay.mails)) == (4, 4, 6)
        await asyncio.gather(*(sender.send(mail(number)) for number in range(6, 10)))
        assert (relay.connections, len(relay.mails)) == (4, 10)  # the open sessions carried them
        relay.most_at_once = 0
        await asyncio.gather(*(alone.send(mail(number)) for number in range(10, 13)))
        assert (relay.most_at_once, relay.connections, len(relay.mails)) == (1, 5, 13)  # one session: in turn
    finally:
        await sender.close()
        await alone.close()
        await relay.stop()


async def wait_until_all_sent(mail, count: int) -> None:
    for _ in range(200):
        if len(await rows(mail.core, OutboxMessage, OutboxMessage.status == "sent")) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not all {count} messages sent")


def test_a_retried_message_keeps_its_message_id_and_carries_its_attachments(make_config, clock):
    config = make_config()
    sender = RelaySender(config.email, clock, display_name=config.service.name, timeout=config.outbox.send_timeout_seconds)
    chart = Attachment("bao-cao.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(50))
    digest = Outgoing(channel="email", recipient="truong@example.gov.vn", text="Báo cáo tổng hợp hằng ngày.",
                      key="digest:tiep-nhan:2026-11-02", subject="Báo cáo", attachments=(chart,),
                      kind="digest", audience="staff")
    first, again = sender.build(digest), sender.build(digest)
    assert first["Message-ID"] == again["Message-ID"] == sender.message_id(digest)
    assert sender.message_id(replace(digest, key="digest:tiep-nhan:2026-11-03")) != first["Message-ID"]
    # The chart shows inline: plain text, and an HTML alternative that shows it by Content-ID.
    assert first.get_content_type() == "multipart/alternative"
    plain, rich = first.get_payload()
    assert plain.get_content_type() == "text/plain" and "Báo cáo tổng hợp" in plain.get_content()
    assert rich.get_content_type() == "multipart/related"
    page, image = rich.get_payload()
    assert image.get_content_type() == "image/png" and image.get_content() == chart.data
    assert image.get_filename() == "bao-cao.png"
    assert f'src="cid:{image["Content-ID"][1:-1]}"' in page.get_content()
    with pytest.raises(PermanentDeliveryError):
        sender.build(replace(digest, recipient="a@b.vn\r\nBcc: everyone@example.vn"))


SUBJECTS = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=320)
NAMES = st.one_of(st.just("Tiếp nhận phản ánh, kiến nghị của UBND phường Kim Liên"),
                  st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=120))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=SUBJECTS, name=NAMES, text=st.text(max_size=2000),
       audience=st.sampled_from(["citizen", "staff"]), language=st.sampled_from(["vi", "en"]))
def test_a_plain_mail_written_without_refolding_reads_back_as_the_standard_generator_s(
        make_config, clock, subject, name, text, audience, language):
    """The relay writes one-part mails itself (channels/email/wire.py: the email package's
    refolding of Vietnamese headers cost 2 ms a mail); a mail client reads back the same
    headers and text as from the email package's generator, and every line is ASCII and at
    most 998 characters."""
    from email import message_from_bytes
    from email.policy import default

    from channels.email.relay import POLICY
    from channels.email.wire import standard, wire

    config = make_config()
    try:
        sender = RelaySender(config.email, clock, display_name=name, timeout=5)
        mail = sender.build(Outgoing(channel="email", recipient="nguoi.dan@example.com", text=text, key="ack:PA-1",
                                     subject=subject, audience=audience, language=language, tracking_code="PA-1",
                                     in_reply_to=("<c1@client.test>",)))
    except (PermanentDeliveryError, ValueError):
        return  # not a mail the relay would send either way
    ours, theirs = wire(mail, POLICY), standard(mail, POLICY)
    for line in ours.split(b"\r\n"):
        assert len(line) <= 998 and line.isascii()
    read, expected = message_from_bytes(ours, policy=default), message_from_bytes(theirs, policy=default)
    assert [(k, str(v)) for k, v in read.items()] == [(k, str(v)) for k, v in expected.items()]
    assert read.get_content() == expected.get_content()


def test_a_vietnamese_subject_and_sender_are_written_as_encoded_words(make_config, clock):
    from channels.email.relay import POLICY
    from channels.email.wire import wire

    config = make_config()
    sender = RelaySender(config.email, clock, display_name="Tiếp nhận phản ánh", timeout=5)
    mail = sender.build(Outgoing(channel="email", recipient="nguoi.dan@example.com", text="Đã nhận.",
                                 key="ack:PA-1", subject="Đã tiếp nhận phản ánh PA-1", tracking_code="PA-1"))
    head = wire(mail, POLICY).split(b"\r\n\r\n")[0].decode("ascii")
    assert "From: =?utf-8?" in head and f"<{config.email.from_address}>" in head
    assert "Subject: =?utf-8?" in head and "\r\n" in head


ADDRESSES = st.one_of(st.just("nguoi.dan@example.com"), st.just("Nguyen.Van-An_1+ack@mail.hanoi.gov.vn"),
                      st.from_regex(r"[A-Za-z0-9._%+=?-]{1,20}@[A-Za-z0-9.-]{1,20}", fullmatch=True),
                      st.text(max_size=40), st.just("người.dân@ví-dụ.vn"))
IDS = st.lists(st.one_of(st.just("<c1@client.test>"), st.from_regex(r"<[!-;=?-~]{1,40}>", fullmatch=True),
                         st.text(max_size=20)), max_size=4)


class Counted(RelaySender):
    """The relay, counting the mails it builds with the email package."""

    built = 0

    def build(self, message):
        self.built += 1
        return super().build(message)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recipient=ADDRESSES, subject=st.one_of(st.none(), SUBJECTS), name=NAMES, text=st.text(max_size=1500),
       audience=st.sampled_from(["citizen", "staff"]), origin=st.sampled_from(["system", "reply", "person"]),
       language=st.one_of(st.sampled_from(["vi", "en"]), st.text(max_size=8)), thread=IDS,
       code=st.one_of(st.none(), st.just("PA-2026-ABCD"), st.text(max_size=12)))
def test_a_mail_written_without_being_built_is_the_built_mail_byte_for_byte(
        make_config, clock, recipient, subject, name, text, audience, origin, language, thread, code):
    """The relay writes a plain-text mail to a plain address without building an
    ``EmailMessage`` (0.7 ms a mail, channels/email/wire.py); what it hands the relay is the
    same bytes and Message-ID as the built mail's, and a mail that cannot be built fails
    the same way."""
    from channels.email.relay import POLICY
    from channels.email.wire import wire

    config = make_config()
    sender = RelaySender(config.email, clock, display_name=name, timeout=5)
    message = Outgoing(channel="email", recipient=recipient, text=text, key="ack:PA-1", subject=subject,
                       audience=audience, origin=origin, language=language, tracking_code=code,
                       in_reply_to=tuple(thread))
    try:
        mail = sender.build(message)
        expected = (mail["Message-ID"], wire(mail, POLICY) if recipient.isascii() else None)
    except Exception as error:  # noqa: BLE001 - whatever building raises, writing must raise too
        with pytest.raises(type(error)):
            sender.compose(message)
        return
    message_id, written = sender.compose(message)
    assert (message_id, written if isinstance(written, bytes) else None) == expected


def test_an_acknowledgement_is_written_without_being_built_and_a_digest_with_its_chart_is_built(make_config, clock):
    config = make_config()
    sender = Counted(config.email, clock, display_name="Tiếp nhận phản ánh, kiến nghị", timeout=5)
    acknowledgement = Outgoing(channel="email", recipient="nguoi.dan@example.com", key="ack:PA-1",
                               text="Chúng tôi đã nhận phản ánh của bạn, mã PA-1.\nXem: https://example.vn/track/PA-1",
                               subject="Đã tiếp nhận phản ánh PA-1", tracking_code="PA-1", origin="reply",
                               in_reply_to=("<c1@client.test>",))
    message_id, written = sender.compose(acknowledgement)
    assert sender.built == 0 and isinstance(written, bytes)
    assert message_id == sender.message_id(acknowledgement)
    head = written.split(b"\r\n\r\n")[0].decode("ascii")
    assert "Subject: =?utf-8?" in head and "In-Reply-To: <c1@client.test>" in head
    assert "Content-Transfer-Encoding: base64" in head and "Auto-Submitted: auto-replied" in head
    chart = Attachment("bao-cao.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(50))
    sender.compose(replace(acknowledgement, attachments=(chart,)))
    sender.compose(replace(acknowledgement, recipient="Người Dân <nguoi.dan@example.com>"))
    assert sender.built == 2
