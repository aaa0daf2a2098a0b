"""Helpers for the email channel's tests (no tests here): a sink relay that speaks SMTP,
the real service with email on, smtplib run from a thread, and the recorded mails.

The sink relay is the one fake: it stands where the city's mail relay would, an aiosmtpd
server in the test's loop that records every mail the service sends and can be told to
answer 4xx or 5xx, to want a login, or to speak STARTTLS.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import smtplib
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy import select

from bot.clock import FrozenClock
from service.config import Config
from bot.core import Core
from channels.email import MAIL_SERVER
from tests.conftest import RunningService, merge, start_service

FIXTURES = Path(__file__).parent / "fixtures" / "email"
DOMAIN = "feedback.example.gov.vn"
OURS = f"phananh@{DOMAIN}"


def crlf(raw: bytes) -> bytes:
    """A mail's bytes with CRLF line ends, as SMTP carries them."""
    return re.sub(rb"\r?\n", b"\r\n", raw)


def fixture(name: str, **values: str) -> bytes:
    """A recorded mail from tests/fixtures/email with its {{PLACEHOLDERS}} filled in."""
    raw = (FIXTURES / name).read_bytes()
    for key, value in values.items():
        raw = raw.replace(b"{{" + key.encode() + b"}}", value.encode())
    assert b"{{" not in raw, f"{name}: a placeholder is left unfilled"
    return crlf(raw)


def new_mail(sender: str, subject: str, text: str, message_id: str, *, name: str = "", to: str = OURS,
             headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A plain complaint as a mail client would write it."""
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["From"] = f"{name} <{sender}>" if name else sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = message_id
    mail["Date"] = "Mon, 02 Nov 2026 08:00:00 +0700"
    for key, value in headers:
        mail[key] = value
    mail.set_content(text)
    return mail.as_bytes()


@dataclass
class Relayed:
    """One mail the sink relay took."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    tls: bool
    login: tuple[str, str] | None

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    @property
    def text(self) -> str:
        return self.message.get_content()


@dataclass
class SinkRelay:
    """A stand-in for the city's mail relay that records what it is sent."""

    data_answer: str = "250 2.0.0 Ok: queued"
    rcpt_answer: str | None = None
    tls_context: ssl.SSLContext | None = None
    password: tuple[str, str] | None = None  # (user, password) the relay wants, if any
    idle_timeout: float = 300  # seconds before the relay closes a quiet session
    connections: int = 0
    data_delay: float = 0.0  # seconds the relay takes to answer a mail's DATA
    carrying: int = 0  # mails being answered now
    most_at_once: int = 0  # the most mails it was answering at one moment
    mails: list[Relayed] = field(default_factory=list)
    on_mail: Callable[[Relayed], None] | None = None
    _server: asyncio.AbstractServer | None = None

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        if self.rcpt_answer:
            return self.rcpt_answer
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.carrying += 1
        self.most_at_once = max(self.most_at_once, self.carrying)
        try:
            await asyncio.sleep(self.data_delay)
        finally:
            self.carrying -= 1
        if self.data_answer.startswith("250"):
            login = session.auth_data
            relayed = Relayed(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                              session.ssl is not None,
                              (login.login.decode(), login.password.decode()) if isinstance(login, LoginPassword)
                              else None)
            self.mails.append(relayed)
            if self.on_mail:
                self.on_mail(relayed)
        return self.data_answer

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: object) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and self.password == (auth_data.login.decode(),
                                                                         auth_data.password.decode())
        # handled=False: aiosmtpd then answers 535 itself (by default it would answer nothing).
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def _session(self) -> SMTP:
        self.connections += 1
        return SMTP(self, hostname="relay.test", tls_context=self.tls_context, require_starttls=bool(self.tls_context),
                    timeout=self.idle_timeout,
                    authenticator=self._authenticate if self.password else None,
                    auth_required=bool(self.password), auth_require_tls=bool(self.tls_context))

    async def start(self, port: int = 0) -> SinkRelay:
        self._server = await asyncio.get_running_loop().create_server(self._session, "127.0.0.1", port)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Relayed]:
        """The first ``count`` mails, once that many have come."""
        await wait_until(lambda: len(self.mails) >= count, timeout, f"{count} relayed mails")
        return self.mails[:count]


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll until predicate() is true; fail the test after timeout seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def eventually(query: Callable[[], Awaitable[list]], timeout: float = 10.0) -> list:
    """The rows a query returns, once it returns any; fail the test after timeout seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := await query()):
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for rows")
        await asyncio.sleep(0.02)
    return found


@dataclass
class MailService:
    """The real service with its SMTP server, and the relay it sends through."""

    running: RunningService
    runner: web.AppRunner
    relay: SinkRelay

    @property
    def core(self) -> Core:
        return self.running.core

    @property
    def clock(self) -> FrozenClock:
        return self.core.clock  # type: ignore[return-value]

    @property
    def smtp_port(self) -> int:
        return self.running.app[MAIL_SERVER].port

    async def send(self, raw: bytes, mail_from: str, rcpt_tos: Iterable[str] = (OURS,)) -> str:
        """Deliver a mail with smtplib, as a sending mail server would; return the 250 answer."""
        return await asyncio.to_thread(smtp_send, self.smtp_port, raw, mail_from, list(rcpt_tos))

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.relay.stop()


def email_config(relay: SinkRelay, **email: object) -> dict:
    """Configuration overrides that turn the email channel on, sending through ``relay``."""
    base = {"enabled": True, "port": 0, "relay_port": relay.port if relay._server else 25}
    return {"email": merge(base, email)}


async def start_mail_service(make_config: Callable[..., Config], clock: FrozenClock, relay: SinkRelay | None = None,
                             overrides: dict | None = None, environ: dict | None = None,
                             app_options: dict | None = None, **email: object) -> MailService:
    """Start a sink relay (unless given) and the service with email on."""
    relay = relay or await SinkRelay().start()
    config = make_config(merge(email_config(relay, **email), overrides or {}), environ)
    running, runner = await start_service(config, clock=clock, **(app_options or {}))
    return MailService(running, runner, relay)


def smtp_send(port: int, raw: bytes, mail_from: str, rcpt_tos: list[str]) -> str:
    """Send one mail over a fresh SMTP session; return the server's answer to DATA."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        client.ehlo("client.test")
        code, answer = client.mail(mail_from)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, answer, mail_from)
        accepted = [to for to in rcpt_tos if client.rcpt(to)[0] == 250]
        if not accepted:
            raise smtplib.SMTPRecipientsRefused({to: (550, b"refused") for to in rcpt_tos})
        code, answer = client.data(raw)
        if code != 250:
            raise smtplib.SMTPDataError(code, answer)
        return answer.decode()
    finally:
        try:
            client.quit()  # the mail is delivered at DATA's answer; a server closing now changes nothing
        except (smtplib.SMTPException, OSError):
            client.close()


async def rows(core: Core, model: type, *where: object) -> list:
    """Every row of a table (optionally filtered), in id order."""
    async with core.sessions() as session:
        return list((await session.scalars(select(model).where(*where).order_by(model.id))).all())
