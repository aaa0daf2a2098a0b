"""The SMTP server that takes citizens' mail, inside the service's one event loop.

aiosmtpd's ``SMTP`` protocol runs on ``loop.create_server`` (not its ``Controller``,
which would start a second loop in a thread). The handler answers in SMTP's own terms:

* RCPT to a domain not in ``accept_domains``: 550, so the server is never a relay;
* MAIL from a connecting address or a sender past its rate limit: 450, the sending
  server tries again later (counted through the port, the same for every process);
* DATA: the mail is parsed and handed to intake; 250 only once intake has committed it
  (a retried delivery carries the same Message-ID and is stored once); a mail that is
  not taken gets the 5xx that says why; a store that is down gets 451 (try later).

Size is capped by aiosmtpd itself from ``max_message_bytes`` (552, also announced in
EHLO's SIZE). A session waiting longer than ``session_timeout_seconds`` for a command, or
for the whole of a mail after DATA, is closed (aiosmtpd's timeout); past ``max_sessions``
open at once a new connection is told 421 and closed. On shutdown the server stops accepting, lets the mails being stored
finish, and says 421 to the sessions still open.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref

from aiosmtpd.smtp import SMTP, Envelope, Session

from bot.logs import mask_email
from bot.port import Port
from channels.email.config import EmailConfig
from channels.email.notes import Note, with_notes
from channels.email.parse import Limits, MailRejected, ParsedMail, parse_mail
from contract.messages import Inbound
from contract.results import IntakeError, StoreUnavailable

log = logging.getLogger(__name__)

IDENT = "Feedback Intake"
MAX_RECIPIENTS = 50
PARSE_IN_THREAD_BYTES = 262_144
REJECT_RELAY = "550 5.7.1 Relaying denied: this server takes mail only for {domains}"
REJECT_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
REJECT_RATE = "450 4.7.1 Too many messages from this sender; try again later"
REJECT_CLIENT_RATE = "450 4.7.1 Too many messages from this address; try again later"
REJECT_BUSY = "421 4.7.0 Too many connections; try again later"
REJECT_STAFF_REPLY = ("550 5.7.1 This address takes citizens' complaints; replies to staff notifications "
                      "are not read here. Please answer in the staff chat")
REJECT_STORE_DOWN = "451 4.3.0 Cannot store the message just now; try again later"
REJECT_LOCAL_ERROR = "451 4.3.0 Local error in processing; try again later"
REJECT_SHUTTING_DOWN = "421 4.3.2 Service shutting down; try again later"
ANSWERS = {
    "created": "250 2.0.0 Taken as {code}",
    "followup": "250 2.0.0 Added to {code}",
    "duplicate": "250 2.0.0 Already taken as {code}",
    "ignored": "250 2.0.0 Recorded; automated mail is not answered",
    "rated": "250 2.0.0 Rating recorded for {code}",
    "disputed": "250 2.0.0 {code} reopened: not fixed",
}


class MailHandler:
    """aiosmtpd handler: refuses what is not ours, and turns each mail into an ``Inbound``."""

    def __init__(self, port: Port, config: EmailConfig):
        self.port = port
        self.limits = Limits.from_config(config)
        self.accept_domains = frozenset(config.accept_domains)
        self.own_address = config.from_address
        self.own_domain = config.from_address.rpartition("@")[2].lower()
        self.config = config
        self.in_flight = 0
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        """Refuse a connecting address or a sender past its rate limit before it sends the mail.

        Each MAIL counts, taken or not: a client that keeps trying is held back all the same.
        The address counts first, so a client rotating its From addresses is held back too.
        """
        config = self.config
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer or "")
        if await self.port.admit("smtp-client", peer, config.client_rate_limit_messages,
                                 config.client_rate_limit_window_seconds) is not None:
            log.info("mail refused", extra={"fields": {"reason": "rate limit of the connecting address"}})
            return REJECT_CLIENT_RATE
        if address != "<>" and await self.port.admit("smtp-sender", address.lower(), config.rate_limit_messages,
                                                     config.rate_limit_window_seconds) is not None:
            log.info("mail refused", extra={"fields": {"reason": "rate limit", "sender": mask_email(address)}})
            return REJECT_RATE
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        """Take recipients at our domains only: never a relay."""
        domain = address.rpartition("@")[2].lower().rstrip(".")
        if domain not in self.accept_domains:
            log.info("mail refused", extra={"fields": {"reason": "not our domain", "domain": domain[:100]}})
            return REJECT_RELAY.format(domains=", ".join(sorted(self.accept_domains)))
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return REJECT_TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Parse the mail, hand it to intake, and answer only once it is committed."""
        if self.stopping:
            return REJECT_SHUTTING_DOWN
        self.in_flight += 1
        self._idle.clear()
        try:
            return await self._take(envelope, session)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def handle_exception(self, error: Exception) -> str:
        """Answer an unexpected error without telling the client what it was."""
        log.error("smtp session failed", exc_info=error)
        return REJECT_LOCAL_ERROR

    async def idle(self, timeout: float) -> bool:
        """Wait until no mail is being stored; False if that took longer than ``timeout``."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _parse(self, envelope: Envelope) -> ParsedMail:
        raw = envelope.original_content if envelope.original_content is not None else envelope.content
        raw = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw or b""
        parse = functools.partial(parse_mail, raw, envelope.mail_from, self.limits, own_address=self.own_address,
                                  language=self.port.config.service.default_language)
        if len(raw) > PARSE_IN_THREAD_BYTES:
            # A few megabytes of HTML take a second or more to read: not on the loop, which
            # meanwhile serves the web form and the other SMTP sessions.
            return await asyncio.to_thread(parse)
        return parse()

    def _is_staff_thread(self, message_id: str) -> bool:
        return message_id.startswith("<staff.") and message_id.lower().endswith(f"@{self.own_domain}>")

    async def _take(self, envelope: Envelope, session: Session) -> str:
        fields: dict[str, object] = {"bytes": len(envelope.original_content or b""),
                                     "sender": mask_email(envelope.mail_from or "")}
        try:
            mail = await self._parse(envelope)
        except MailRejected as rejected:
            log.info("mail refused", extra={"fields": {**fields, "reason": rejected.reply}})
            return rejected.reply
        except Exception:  # a bug in our parser: the sending server keeps the mail and retries
            log.exception("mail could not be parsed", extra={"fields": fields})
            return REJECT_LOCAL_ERROR
        thread = mail.thread_ids
        if any(self._is_staff_thread(i) for i in thread):
            if not mail.automated:
                log.info("mail refused", extra={"fields": {**fields, "reason": "reply to a staff notification"}})
                return REJECT_STAFF_REPLY
            thread = tuple(i for i in thread if not self._is_staff_thread(i))  # an officer's out-of-office
        inbound = self._inbound(mail, thread)
        try:
            result = await self.port.receive(inbound)
        except IntakeError as error:
            log.info("mail refused", extra={"fields": {**fields, "reason": str(error)}})
            return f"550 5.6.0 Message not taken: {error}"
        except StoreUnavailable as error:
            log.warning("mail not stored; asked to retry", extra={"fields": {**fields, "error": str(error)}})
            return REJECT_STORE_DOWN
        if mail.bounced is not None:
            # A bounce of our own mail: what became of the message, for the outbox (and the
            # citizen's next contact point).
            ids, reason = mail.bounced
            for message_id in ids:
                await self.port.delivery_report("email", "undelivered", external_id=message_id, reason=reason)
        log.info("mail taken", extra={"fields": {**fields, "outcome": result.outcome, "code": result.tracking_code
                                                 or "-", "automated": mail.automated or "-",
                                                 "attachments": len(mail.attachments), "notes": len(mail.notes)}})
        return ANSWERS[result.outcome].format(code=result.tracking_code)

    def _inbound(self, mail: ParsedMail, thread: tuple[str, ...]) -> Inbound:
        notes = mail.notes + ((Note("automated", {"reason": mail.automated}),) if mail.automated else ())
        return Inbound(
            channel="email", external_id=mail.message_id, sender=mail.sender, sender_name=mail.sender_name,
            text=with_notes(mail.text, notes, self.port.config.service.default_language),
            subject=mail.subject or None, received_at=self.port.clock.now(), language=mail.language,
            attachments=mail.attachments, in_reply_to=thread, automated=mail.automated is not None,
        )


class _Busy(asyncio.Protocol):
    """A connection past ``max_sessions``: told so in SMTP's terms, and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(f"{REJECT_BUSY}\r\n".encode())  # type: ignore[attr-defined]
        transport.close()


class MailServer:
    """The SMTP server's lifecycle: listen, serve every session, stop cleanly."""

    def __init__(self, port: Port, config: EmailConfig):
        self.config = config
        self.handler = MailHandler(port, config)
        self._server: asyncio.AbstractServer | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def _session(self) -> asyncio.Protocol:
        config = self.config
        if self.open_sessions() >= config.max_sessions:
            log.warning("smtp connection refused: too many open", extra={"fields": {"max": config.max_sessions}})
            return _Busy()
        smtp = SMTP(self.handler, data_size_limit=config.max_message_bytes, enable_SMTPUTF8=True,
                    timeout=config.session_timeout_seconds,
                    # Named here: left out, aiosmtpd asks the resolver for this host's name on every connection.
                    hostname=self.handler.own_domain, ident=IDENT, loop=asyncio.get_running_loop())
        self._sessions.add(smtp)
        return smtp

    def open_sessions(self) -> int:
        """Sessions connected now (closed ones linger in the weak set until collected)."""
        return sum(1 for session in self._sessions if session.transport is not None and
                   not session.transport.is_closing())

    async def start(self) -> None:
        """Listen on ``[email] host/port``."""
        config = self.config
        self._server = await asyncio.get_running_loop().create_server(self._session, config.host, config.port)
        log.info("smtp server listening", extra={"fields": {"host": config.host, "port": self.port}})

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when configured as 0)."""
        assert self._server is not None and self._server.sockets
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let mails being stored finish, then close the open sessions with 421."""
        if self._server is None:
            return
        self._server.close()
        self.handler.stopping = True
        if not await self.handler.idle(timeout):
            log.warning("smtp shutdown: mails still being stored were cut off",
                        extra={"fields": {"in_flight": self.handler.in_flight}})
        for session in list(self._sessions):
            transport = session.transport
            if transport is not None and not transport.is_closing():
                transport.write(f"{REJECT_SHUTTING_DOWN}\r\n".encode())
                transport.close()
        await self._server.wait_closed()
        self._server = None
        log.info("smtp server stopped")
