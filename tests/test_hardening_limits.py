"""Flood control (issue 18): per client address and per form session on the web form, per
address on Open311, per connecting address and per sender on SMTP, counted in the store
so that every process shares the count; a burst of new complaints pages an officer a few
times and then once with a summary; /metrics only for the addresses or token configured.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
from datetime import datetime, timezone

import aiohttp
import pytest
from sqlalchemy import func, select

from bot import intake
from contract.messages import Inbound
from storage.models import Complaint, OutboxMessage, RateCounter
from tests.conftest import get_form, start_service
from tests.test_email_support import new_mail, start_mail_service

COMPLAINT = "Rác thải tập kết sai chỗ trước cổng trường tiểu học Nghĩa Tân suốt một tuần nay."
KEYS = "crm-key-77b2e0"
OFFICER = {"slug": "an", "name": "An", "unit": "tiep-nhan", "telegram_chat_id": 111}


async def count(core, model, *where) -> int:
    async with core.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where))


async def post_form(client: aiohttp.ClientSession, **headers: str) -> tuple[int, str, str | None]:
    hidden = await get_form(client)
    async with client.post("/", data=dict(hidden, text=COMPLAINT), headers=headers, allow_redirects=False) as answer:
        return answer.status, await answer.text(), answer.headers.get("Retry-After")


# ---------------------------------------------------------------------------- the web form

async def test_a_form_session_past_its_limit_gets_429_until_the_window_ends(make_config, clock):
    config = make_config({"web": {"form_limit_per_session": 3, "form_limit_window_seconds": 600}})
    service, runner = await start_service(config, clock=clock)
    try:
        async with service.client() as client:
            for _ in range(3):
                assert (await post_form(client))[0] == 303
            status, page, retry = await post_form(client)
            assert status == 429 and retry == "600"
            assert "Xin vui lòng thử lại sau 10 phút" in page
            status, page, _ = await post_form(client, **{"Accept-Language": "en"})
            assert status == 429 and "Please try again in 10 minutes" in page
            assert await count(service.core, Complaint) == 3
            async with service.client() as other:  # another browser is not held back
                assert (await post_form(other))[0] == 303
            clock.advance(minutes=10)
            assert (await post_form(client))[0] == 303
    finally:
        await runner.cleanup()


async def test_a_flood_of_posts_from_one_session_files_only_its_limit(make_config, clock):
    service, runner = await start_service(make_config({"staff": [OFFICER]}), clock=clock)
    try:
        async with service.client() as client:
            hidden = await get_form(client)

            async def one(number: int) -> int:
                data = dict(hidden, submission_id=f"{number:032x}", text=COMPLAINT)
                async with client.post("/", data=data, allow_redirects=False) as answer:
                    return answer.status

            statuses = await asyncio.gather(*(one(n) for n in range(60)))
        assert statuses.count(303) == 10 and statuses.count(429) == 50
        assert await count(service.core, Complaint) == 10
        assert await count(service.core, OutboxMessage, OutboxMessage.key.like("new:%")) == 10
    finally:
        await runner.cleanup()


async def test_a_flood_from_fresh_sessions_meets_the_address_limit_and_pages_the_officer_once_more(make_config,
                                                                                                     clock):
    service, runner = await start_service(make_config({"staff": [OFFICER]}), clock=clock)
    try:
        async def one() -> int:
            async with service.client() as client:  # a new browser each time: the session limit never bites
                return (await post_form(client))[0]

        statuses = await asyncio.gather(*(one() for _ in range(40)))
        assert statuses.count(303) == 30 and statuses.count(429) == 10  # [web] form_limit_per_client
        assert await count(service.core, Complaint) == 30
        # [notifications] burst_after: ten notifications, then one summary naming the other twenty.
        assert await count(service.core, OutboxMessage, OutboxMessage.key.like("new:%")) == 10
        async with service.core.sessions() as session:
            [summary] = (await session.scalars(select(OutboxMessage).where(OutboxMessage.key.like("burst:%")))).all()
        assert "thêm 20 phản ánh mới" in summary.payload["text"]
    finally:
        await runner.cleanup()


async def test_one_address_past_its_limit_gets_429_whatever_its_sessions(make_config, clock):
    config = make_config({"web": {"form_limit_per_client": 2}})
    service, runner = await start_service(config, clock=clock)
    try:
        statuses = []
        for _ in range(4):
            async with service.client() as client:  # a fresh cookie each time
                statuses.append((await post_form(client))[0])
        assert statuses == [303, 303, 429, 429]
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------- Open311 and proxies

async def open311_post(service, forwarded: str | None = None) -> tuple[int, str, str | None]:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    async with aiohttp.ClientSession(service.url) as http, http.post(
            "/open311/v2/requests.json", headers=headers,
            data={"api_key": KEYS, "service_code": "moi-truong", "description": COMPLAINT,
                  "address_string": "Cầu Giấy"}) as answer:
        return answer.status, await answer.text(), answer.headers.get("Retry-After")


async def open311_service(make_config, clock, monkeypatch, **web):
    monkeypatch.setenv("OPEN311_API_KEYS", KEYS)
    config = make_config({"open311": {"enabled": True, "limit_per_client": 2, "limit_window_seconds": 60},
                          "web": web}, environ={"OPEN311_API_KEYS": KEYS})
    return await start_service(config, clock=clock)


async def test_open311_past_its_limit_answers_geo_report_s_error_with_retry_after(make_config, clock, monkeypatch):
    service, runner = await open311_service(make_config, clock, monkeypatch)
    try:
        assert [(await open311_post(service))[0] for _ in range(2)] == [200, 200]
        status, body, retry = await open311_post(service)
        [error] = json.loads(body)
        assert (status, error["code"], retry) == (429, 429, "60")
        assert "too many requests" in error["description"]
        assert await count(service.core, Complaint) == 2
    finally:
        await runner.cleanup()


async def test_x_forwarded_for_is_ignored_unless_the_proxy_is_trusted(make_config, clock, monkeypatch):
    service, runner = await open311_service(make_config, clock, monkeypatch)
    try:
        answers = [(await open311_post(service, f"203.0.113.{n}"))[0] for n in range(3)]
        assert answers == [200, 200, 429]  # a forged header does not make a client new
    finally:
        await runner.cleanup()


async def test_behind_a_trusted_proxy_each_client_has_its_own_count(make_config, clock, monkeypatch):
    service, runner = await open311_service(make_config, clock, monkeypatch, trusted_proxies=["127.0.0.0/8"])
    try:
        assert [(await open311_post(service, f"198.51.100.7, 203.0.113.{n}"))[0] for n in range(3)] == [200] * 3
        # The client is the first address no trusted proxy added; what it wrote before is its own affair.
        same = [(await open311_post(service, f"10.9.9.{n}, 203.0.113.50, 127.0.0.2"))[0] for n in range(3)]
        assert same == [200, 200, 429]
    finally:
        await runner.cleanup()


async def test_on_postgresql_the_count_is_shared_by_every_process_on_the_database(make_config, clock, monkeypatch):
    first, first_runner = await open311_service(make_config, clock, monkeypatch)
    second, second_runner = await open311_service(make_config, clock, monkeypatch)
    try:
        answers = [(await open311_post(service))[0] for service in (first, second, first, second, first)]
        if first.core.engine.dialect.name == "postgresql":
            assert answers == [200, 200, 429, 429, 429]
            assert await count(first.core, RateCounter) == 1
        else:  # SQLite: one writer, one process; each process counts on its own, in memory
            assert answers == [200, 200, 200, 200, 429]
            assert await count(first.core, RateCounter) == 0
    finally:
        await first_runner.cleanup()
        await second_runner.cleanup()


async def test_old_windows_are_forgotten(make_config, clock, monkeypatch):
    service, runner = await open311_service(make_config, clock, monkeypatch)
    try:
        assert [(await open311_post(service))[0] for _ in range(3)] == [200, 200, 429]
        clock.advance(minutes=5)
        assert (await open311_post(service))[0] == 200
        shared = service.core.engine.dialect.name == "postgresql"
        assert await count(service.core, RateCounter) == (1 if shared else 0)  # the first window's row is gone
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------- SMTP

async def test_smtp_rotating_from_addresses_meets_the_per_address_limit(make_config, clock):
    mail = await start_mail_service(make_config, clock, client_rate_limit_messages=3)
    try:
        taken, refused = 0, []
        for number in range(6):
            sender = f"rotating{number}@example.vn"
            try:
                await mail.send(new_mail(sender, f"Phản ánh {number}", COMPLAINT, f"<rot{number}@x>"), sender)
                taken += 1
            except smtplib.SMTPSenderRefused as error:
                refused.append((error.smtp_code, error.smtp_error.decode()))
        assert taken == 3
        assert refused == [(450, "4.7.1 Too many messages from this address; try again later")] * 3
    finally:
        await mail.stop()


async def test_smtp_sessions_past_the_cap_are_told_421(make_config, clock):
    mail = await start_mail_service(make_config, clock, max_sessions=2)
    try:
        held = [await asyncio.open_connection("127.0.0.1", mail.smtp_port) for _ in range(2)]
        for reader, _ in held:
            assert (await reader.readline()).startswith(b"220 ")
        reader, writer = await asyncio.open_connection("127.0.0.1", mail.smtp_port)
        assert await reader.readline() == b"421 4.7.0 Too many connections; try again later\r\n"
        assert await reader.read() == b""
        writer.close()
        for _, held_writer in held:
            held_writer.close()
        await asyncio.sleep(0.2)
        sender = "calm@example.vn"
        assert (await mail.send(new_mail(sender, "Ổ gà", COMPLAINT, "<calm@x>"), sender)).startswith("2.0.0")
    finally:
        await mail.stop()


async def test_a_silent_or_slow_smtp_client_is_closed(make_config, clock):
    mail = await start_mail_service(make_config, clock, session_timeout_seconds=1.0)
    try:
        silent = await asyncio.open_connection("127.0.0.1", mail.smtp_port)
        slow = await asyncio.open_connection("127.0.0.1", mail.smtp_port)
        for reader, _ in (silent, slow):
            assert (await reader.readline()).startswith(b"220 ")
        reader, writer = slow
        for line in (b"EHLO x\r\n", b"MAIL FROM:<a@example.vn>\r\n", b"RCPT TO:<phananh@feedback.example.gov.vn>\r\n",
                     b"DATA\r\n"):
            writer.write(line)
        writer.write(b"Subject: slow\r\n\r\n")

        async def drip() -> None:
            for _ in range(40):
                await asyncio.sleep(0.1)
                if writer.is_closing():
                    return
                writer.write(b"x")

        task = asyncio.create_task(drip())
        async with asyncio.timeout(4):
            assert await silent[0].read() == b""
            while await reader.read(4096):
                pass
        task.cancel()
    finally:
        await mail.stop()


# ---------------------------------------------------------------------------- bursts

async def test_a_burst_pages_an_officer_a_few_times_then_once_with_a_summary(make_core, clock):
    core = await make_core({"staff": [OFFICER], "notifications": {"burst_after": 3, "burst_window_minutes": 10}})
    codes = []
    for number in range(7):
        result = await intake.receive(core, Inbound(channel="web", external_id=f"{number:032x}", sender=None,
                                                    text=f"{COMPLAINT} ({number})", received_at=clock.now()))
        codes.append(result.tracking_code)
    async with core.sessions() as session:
        rows = (await session.scalars(select(OutboxMessage).where(OutboxMessage.recipient == "111")
                                      .order_by(OutboxMessage.id))).all()
    assert [row.key.split(":")[1] for row in rows[:3]] == codes[:3]
    [summary] = rows[3:]
    assert summary.key.startswith("burst:") and summary.status == "queued"
    assert summary.next_attempt_at == datetime(2026, 11, 2, 1, 10, tzinfo=timezone.utc)  # the window's end
    assert all(code in summary.payload["text"] for code in codes[3:]) and "thêm 4 phản ánh" in summary.payload["text"]
    clock.advance(minutes=10)  # a new window: notified one by one again
    result = await intake.receive(core, Inbound(channel="web", external_id="f" * 32, sender=None, text=COMPLAINT,
                                                received_at=clock.now()))
    assert await count(core, OutboxMessage, OutboxMessage.key == f"new:{result.tracking_code}:1") == 1


async def test_burst_grouping_can_be_turned_off(make_core, clock):
    core = await make_core({"staff": [OFFICER], "notifications": {"burst_after": 0}})
    for number in range(12):
        await intake.receive(core, Inbound(channel="web", external_id=f"{number:032x}", sender=None,
                                           text=COMPLAINT, received_at=clock.now()))
    assert await count(core, OutboxMessage, OutboxMessage.key.like("new:%")) == 12


# ---------------------------------------------------------------------------- /metrics

async def metrics_status(service, **headers: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/metrics", headers=headers) as answer:
        return answer.status


@pytest.mark.parametrize("web, headers, expected", [
    ({}, {}, 200),
    ({"metrics_allow": ["10.0.0.0/8"]}, {}, 403),
    ({"metrics_allow": ["127.0.0.1"]}, {}, 200),
    ({"metrics_token_env": "FI_METRICS"}, {}, 401),
    ({"metrics_token_env": "FI_METRICS"}, {"Authorization": "Bearer wrong"}, 401),
    ({"metrics_token_env": "FI_METRICS"}, {"Authorization": "Bearer s3cret-token"}, 200),
    ({"metrics_allow": ["10.0.0.0/8"], "metrics_token_env": "FI_METRICS"}, {"Authorization": "Bearer s3cret-token"},
     200),
    ({"metrics_allow": ["10.1.2.3"], "trusted_proxies": ["127.0.0.1"]}, {"X-Forwarded-For": "10.1.2.3"}, 200),
    ({"metrics_allow": ["10.1.2.3"], "trusted_proxies": ["127.0.0.1"]}, {"X-Forwarded-For": "203.0.113.9"}, 403),
    ({"metrics_allow": ["127.0.0.1"], "trusted_proxies": ["127.0.0.1"]}, {"X-Forwarded-For": "203.0.113.9"}, 403),
])
async def test_metrics_only_for_the_addresses_or_token_configured(make_config, clock, monkeypatch, web, headers,
                                                                  expected):
    monkeypatch.setenv("FI_METRICS", "s3cret-token")
    service, runner = await start_service(make_config({"web": web}, {"FI_METRICS": "s3cret-token"}), clock=clock)
    try:
        assert await metrics_status(service, **headers) == expected
    finally:
        await runner.cleanup()
