"""Sending mail through the city's relay: answers, acknowledgements, apologies and
surveys to citizens, notifications to staff.

Each message gets a Message-ID at the ``from_address``'s domain, made from the outbox
key and content, so a retry after an unclear failure (the relay took the mail but the
connection dropped before its 250) carries the same id and receivers can tell it is one
message. That id is what ``send`` returns: the outbox stores it, and a citizen's reply
naming it in In-Reply-To or References threads onto the complaint. Replies to a
citizen carry In-Reply-To (their last message) and References (all of theirs) so mail
clients show one thread. Messages written by no person carry ``Auto-Submitted``
(RFC 3834), so well-behaved auto-responders do not answer them.

A session with the relay carries message after message, as mail servers do, and up to
``sessions`` of them (the outbox's ``concurrency``) carry the mails that go together, so
that four mails are not four round trips each (MAIL, RCPT, DATA, the body) one after
another, each waiting for an event loop busy filing complaints under a storm's load. Under
SMTP load that sent 0.46-0.48 acknowledgements per complaint filed, where one session
sent 0.42-0.44 (bench/README.md, ninth session): the store's turn per group, not the
relay, is what holds email back. The
relay's answer decides what the outbox does: 4xx, a refused or dropped connection,
a timeout: try again later; 5xx: give up and record why. A refused login is retried
too, since it is the operator's to fix and the mail must not be lost meanwhile.
"""

from __future__ import annotations

import asyncio
import email.policy
import hashlib
import html
import re
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import aiosmtplib

from bot.clock import Clock
from channels.email.config import EmailConfig
from contract.delivery import PermanentDeliveryError, TransientDeliveryError, UnknownDeliveryError
from contract.messages import Outgoing
from channels.email.text import one_line
from channels.email.wire import plain, wire
from contract.schema import secret

# RFC 3834's Auto-Submitted by who wrote the message: an officer's answer is a human mail,
# to be replied to like any; one sent in direct answer to the citizen's own mail is
# "auto-replied"; anything else the service sends on its own is "auto-generated".
AUTO_SUBMITTED = {"person": None, "reply": "auto-replied", "system": "auto-generated"}
# Headers folded only past RFC 5322's 998 (a folded In-Reply-To confuses some readers);
# bodies kept 7-bit (quoted-printable or base64), which every relay carries.
POLICY = email.policy.SMTP.clone(max_line_length=998, cte_type="7bit")
_PRINTABLE_ID = re.compile(r"<[!-;=?-~]{1,250}>")  # printable ASCII, no spaces or angle brackets inside
# An address the email package reads back as written: ASCII dot-atoms, no display name.
# Any other recipient goes through the email package, which checks it.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def _delivery_error(code: int, message: str) -> Exception:
    reason = f"relay answered {code}: {one_line(message, 300)}"
    return PermanentDeliveryError(reason) if 500 <= code < 600 else TransientDeliveryError(reason)


class RelaySender:
    """Sends the outbox's email messages through the configured relay."""

    channel = "email"

    def __init__(self, config: EmailConfig, clock: Clock, *, display_name: str, timeout: float, sessions: int = 1):
        self.config = config
        self.clock = clock
        self.domain = config.from_address.rpartition("@")[2].lower()
        self.sender = Address(display_name=display_name, addr_spec=config.from_address)
        self.timeout = timeout
        self.tls_context = (ssl.create_default_context(cafile=config.relay_ca_file or None)
                            if config.relay_starttls else None)
        self._idle: list[aiosmtplib.SMTP] = []  # open sessions, none carrying a mail now
        self._slots = asyncio.Semaphore(max(1, sessions))
        # The From header as the email package writes it, made once for ``compose``; None if the
        # name cannot be one (then ``build`` says why, mail by mail).
        try:
            probe = EmailMessage(policy=POLICY)
            probe["From"] = self.sender
            self._from: tuple[str, object] | None = (str(probe["From"]), probe["From"])
        except (ValueError, TypeError, IndexError):
            self._from = None

    def message_id(self, message: Outgoing) -> str:
        """The Message-ID for an outgoing message: the same for the same key and content."""
        digest = hashlib.sha256("\x00".join((message.key, message.recipient, message.subject or "",
                                             message.text)).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        prefix = "staff." if message.audience == "staff" else ""
        return f"<{prefix}{digest}@{self.domain}>"

    def _head(self, message: Outgoing, message_id: str) -> list[tuple[str, str]]:
        """The headers after From, in order, up to the content's."""
        head = [("To", message.recipient), ("Subject", one_line(message.subject or "", 300)),
                ("Date", format_datetime(self.clock.now())), ("Message-ID", message_id)]
        code = message.tracking_code or ""
        if message.audience == "staff":
            # One thread per complaint in officers' mail clients, rooted in an id no mail has.
            thread = [f"<staff.{code}@{self.domain}>"] if re.fullmatch(r"[A-Z0-9-]{1,30}", code) else []
        else:
            thread = [i for i in message.in_reply_to if _PRINTABLE_ID.fullmatch(i)]
        if thread:
            head += [("In-Reply-To", thread[-1]), ("References", " ".join(thread))]
        auto = AUTO_SUBMITTED[message.origin]
        if auto is not None:
            # X-Auto-Response-Suppress: Exchange and Outlook send no out-of-office answers to it.
            head += [("Auto-Submitted", auto), ("X-Auto-Response-Suppress", "All")]
        head.append(("X-Loop", self.config.from_address))
        return head

    def build(self, message: Outgoing) -> EmailMessage:
        """The MIME message for an outgoing message; PermanentDeliveryError if it cannot be one."""
        mail = EmailMessage(policy=POLICY)
        try:
            mail["From"] = self.sender
            for name, value in self._head(message, self.message_id(message)):
                mail[name] = value
        except (ValueError, TypeError, IndexError) as error:
            raise PermanentDeliveryError(f"cannot address a mail to this recipient: {error}") from None
        mail.set_content(message.text)
        images = [a for a in message.attachments if a.data and a.content_type.startswith("image/")]
        if images:
            # A digest's chart shows in the mail, not only as a file: plain text, and an HTML
            # alternative (the same text, escaped) with the images inline by Content-ID.
            ids = [make_msgid(idstring=(a.content_id or "image")[:40], domain=self.domain) for a in images]
            tags = "".join(f'<p><img src="cid:{cid[1:-1]}" alt="{html.escape(a.filename)}"></p>'
                           for cid, a in zip(ids, images))
            mail.add_alternative(f"<html><body><pre>{html.escape(message.text)}</pre>{tags}</body></html>",
                                 subtype="html")
            html_part = mail.get_payload()[-1]
            for cid, image in zip(ids, images):
                html_part.add_related(image.data, maintype="image", subtype=image.content_type.partition("/")[2],
                                      cid=cid, filename=image.filename)
        mail["Content-Language"] = message.language  # after set_content, which clears Content-* headers
        for attachment in message.attachments:  # other files go as attachments
            if attachment.data and attachment not in images:
                maintype, _, subtype = attachment.content_type.partition("/")
                mail.add_attachment(attachment.data, maintype=maintype or "application",
                                    subtype=subtype or "octet-stream", filename=attachment.filename)
        return mail

    def compose(self, message: Outgoing) -> tuple[str, bytes | EmailMessage]:
        """The Message-ID and the mail as it goes to the relay: bytes, or an ``EmailMessage``
        for aiosmtplib to write (an internationalised address); PermanentDeliveryError if it
        cannot be a mail. A plain-text mail to a plain address, with no encoded word in its
        headers, is written without being built (``channels.email.wire.plain``)."""
        message_id = self.message_id(message)
        if not message.attachments and self._from is not None and _PLAIN_ADDRESS.fullmatch(message.recipient):
            head = self._head(message, message_id)
            # Unstructured headers are read back with their encoded words decoded; the others
            # (To, Date, Message-ID) hold none by construction.
            if not any("=?" in value for _, value in head[1:2] + head[4:]) and "=?" not in message.language:
                written = plain(head, self._from, message.text, message.language, POLICY)
                if written is not None:
                    return message_id, written
        mail = self.build(message)
        return message_id, wire(mail, POLICY) if message.recipient.isascii() else mail

    async def _session(self, fresh: bool) -> tuple[aiosmtplib.SMTP, bool]:
        """An open session with the relay that carries no mail now (unless ``fresh``), or a
        new one (STARTTLS and login as configured); and whether it was open before."""
        while self._idle and not fresh:
            client = self._idle.pop()
            if client.is_connected:
                return client, True
            self._drop(client)
        client = aiosmtplib.SMTP(
            hostname=self.config.relay_host, port=self.config.relay_port, local_hostname=self.domain,
            start_tls=self.config.relay_starttls, tls_context=self.tls_context, timeout=self.timeout,
            username=secret(self.config.relay_username_env), password=secret(self.config.relay_password_env))
        await client.connect()
        return client, False

    @staticmethod
    def _drop(client: aiosmtplib.SMTP | None) -> None:
        if client is not None:
            client.close()

    async def send(self, message: Outgoing) -> str:
        """Send one message through the relay; return its Message-ID."""
        message_id, mail = self.compose(message)
        async with self._slots:
            # A session carries message after message (no connect, EHLO and login each time);
            # a relay that closed it while idle gets one more try on a new session.
            for attempt in (1, 2):
                client, reused = None, False
                try:
                    client, reused = await self._session(fresh=attempt > 1)
                    if isinstance(mail, bytes):
                        # Written by wire(): the same mail without the email package's refolding.
                        await client.sendmail(self.config.from_address, [message.recipient], mail)
                    else:  # an internationalised address: aiosmtplib asks the relay for SMTPUTF8
                        await client.send_message(mail, sender=self.config.from_address,
                                                  recipients=[message.recipient])
                    self._idle.append(client)
                    return message_id
                except aiosmtplib.SMTPServerDisconnected as error:
                    self._drop(client)
                    if not (reused and attempt == 1):
                        raise TransientDeliveryError(f"relay unreachable: {type(error).__name__}: "
                                                     f"{one_line(str(error), 300)}") from None
                except aiosmtplib.SMTPRecipientsRefused as error:
                    self._drop(client)  # a session left mid-transaction is not worth repairing
                    refused = error.recipients[0]
                    raise _delivery_error(refused.code, refused.message) from None
                except aiosmtplib.SMTPAuthenticationError as error:
                    self._drop(client)
                    raise TransientDeliveryError(f"relay refused our login ({error.code}); check "
                                                 f"{self.config.relay_username_env} and "
                                                 f"{self.config.relay_password_env}") from None
                except aiosmtplib.SMTPResponseException as error:
                    self._drop(client)
                    raise _delivery_error(error.code, error.message) from None
                except aiosmtplib.SMTPConnectTimeoutError as error:
                    self._drop(client)
                    raise TransientDeliveryError(f"relay unreachable: {type(error).__name__}") from None
                except (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError) as error:
                    # The relay may have taken the mail before the answer was lost: sent again,
                    # it carries the same Message-ID, which receivers can tell is one mail.
                    self._drop(client)
                    raise UnknownDeliveryError(f"relay did not answer in time: {type(error).__name__}") from None
                except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as error:
                    self._drop(client)
                    raise TransientDeliveryError(f"relay unreachable: {type(error).__name__}: "
                                                 f"{one_line(str(error), 300)}") from None
                except BaseException:  # cancelled by the outbox's timeout: the session's state is unknown
                    self._drop(client)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Say goodbye to the relay on every open session (the outbox sends no more by now)."""
        idle, self._idle = self._idle, []
        for client in idle:
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                    pass
            self._drop(client)
