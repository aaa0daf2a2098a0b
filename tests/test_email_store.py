"""Acknowledge after commit, over SMTP: a store that cannot take the mail gets 451 (the
sending server keeps it and tries again), and on shutdown a mail being stored finishes
before the server closes. The store is made unavailable for real, by another connection
holding a lock (SQLite: an exclusive transaction; PostgreSQL: a table lock)."""

from __future__ import annotations

import asyncio
import smtplib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from service.assembly import open_core
from channels.email import MAIL_SERVER
from storage.models import Complaint, Message
from tests.conftest import _plain_pg_url
from tests.test_email_support import OURS, new_mail, rows, smtp_send, start_mail_service, wait_until

CITIZEN = "an.nguyen@gmail.com"
MAIL = new_mail(CITIZEN, "Rác thải", "Rác thải ở đầu ngõ 45 Nguyễn Chí Thanh không được thu gom.",
                "<store@client.test>")


async def set_lock_wait(database_url: str, seconds: float) -> dict:
    """How long the service waits for a lock before its write fails; the config overrides that go with it."""
    # The dispatcher polls rarely here: on SQLite its every-50-ms write transaction would
    # starve the test's own attempt to take the lock.
    quiet = {"outbox": {"poll_seconds": 30}}
    if database_url.startswith("sqlite"):
        return {**quiet, "storage": {"busy_timeout_ms": int(seconds * 1000)}}
    admin = await asyncpg.connect(_plain_pg_url(database_url))
    try:
        name = database_url.rsplit("/", 1)[1]
        await admin.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '{int(seconds * 1000)}ms'")
    finally:
        await admin.close()
    return quiet


@asynccontextmanager
async def store_locked(database_url: str) -> AsyncIterator[None]:
    """Hold a lock that keeps the service from writing messages until the block ends."""
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None, timeout=10,
                                     check_same_thread=False)
        # In a thread: the service's transaction in flight needs this loop to finish.
        await asyncio.to_thread(connection.execute, "BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    connection = await asyncpg.connect(_plain_pg_url(database_url))
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
    finally:
        await connection.close()


async def test_a_store_that_cannot_write_gets_451_and_the_retry_is_taken_once(make_config, clock, database_url):
    overrides = await set_lock_wait(database_url, 0.2)
    mail = await start_mail_service(make_config, clock, overrides=overrides)
    try:
        async with store_locked(database_url):
            with pytest.raises(smtplib.SMTPDataError) as error:
                await mail.send(MAIL, CITIZEN)
        assert error.value.smtp_code == 451 and b"try again later" in error.value.smtp_error
        assert await rows(mail.core, Message) == []
        answer = await mail.send(MAIL, CITIZEN)  # the sending server's retry
        assert answer.startswith("2.0.0 Taken as ")
        assert len(await rows(mail.core, Complaint)) == 1 and len(await rows(mail.core, Message)) == 1
    finally:
        await mail.stop()


async def test_on_shutdown_a_mail_being_stored_finishes_and_new_sessions_are_refused(make_config, clock,
                                                                                     database_url):
    overrides = await set_lock_wait(database_url, 10)
    # Without the dispatcher and the scheduler, which on SQLite would wait on the same
    # lock and hold the shutdown up before it reaches the SMTP server.
    mail = await start_mail_service(make_config, clock, overrides=overrides,
                                    app_options={"run_dispatcher": False, "run_scheduler": False})
    port, handler = mail.smtp_port, mail.running.app[MAIL_SERVER].handler
    config = mail.core.config
    stopping = None
    try:
        async with store_locked(database_url):
            sending = asyncio.ensure_future(mail.send(MAIL, CITIZEN))
            await wait_until(lambda: handler.in_flight == 1, what="the mail to reach intake")
            stopping = asyncio.ensure_future(mail.runner.cleanup())
            await wait_until(lambda: handler.stopping, what="the SMTP server to start stopping")
            with pytest.raises(OSError):
                await asyncio.to_thread(smtp_send, port, MAIL, CITIZEN, [OURS])
            await asyncio.sleep(0.2)
            assert not sending.done() and not stopping.done()  # shutdown waits for the mail
        assert (await sending).startswith("2.0.0 Taken as ")
        await stopping
    finally:
        if stopping is None:
            await mail.runner.cleanup()
        await mail.relay.stop()
    core = await open_core(config, clock=clock, upgrade=False)
    try:
        assert len(await rows(core, Message)) == 1
    finally:
        await core.close()


async def test_on_shutdown_an_idle_session_is_told_421(make_config, clock):
    mail = await start_mail_service(make_config, clock)

    def open_session() -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=10)
        client.ehlo("client.test")
        client.mail(CITIZEN)
        return client

    client = await asyncio.to_thread(open_session)
    try:
        await mail.runner.cleanup()
        try:
            code, _ = await asyncio.to_thread(client.rcpt, OURS)
        except smtplib.SMTPServerDisconnected:
            code = 421
        assert code == 421
    finally:
        await asyncio.to_thread(client.close)
        await mail.stop()
