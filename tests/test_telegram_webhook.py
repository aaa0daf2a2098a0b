"""Telegram in webhook mode: the fake Bot API posts updates to POST /webhooks/telegram of the
real service, with the secret header, as Telegram does. Forged posts are refused, a
re-delivered update changes nothing, and an update that could not be handled is answered
500 so that Telegram delivers it again.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import aiohttp
import pytest
from sqlalchemy import func, select

from storage.models import Complaint, Contact, Message, OutboxMessage, Setting
from tests.conftest import POSTGRES_ADMIN_URL
from tests.telegram_fake import (  # noqa: F401
    CITIZEN,
    OFFICER,
    PUBLIC_URL,
    WEBHOOK_SECRET,
    BotWorld,
    bot_env,
    fake_api,
    start_bot,
    webhook_bot,
)
from tests.test_telegram_citizen import COMPLAINT, count, file_complaint

ANSWER = "Tổ công tác của phường đã kiểm tra và yêu cầu thu gom rác trong ngày."


async def stored_rows(world: BotWorld) -> tuple[int, ...]:
    return tuple([await count(world, model) for model in (Complaint, Contact, Message, OutboxMessage, Setting)])


async def test_the_webhook_is_registered_with_its_secret(webhook_bot):
    api = webhook_bot.api
    assert api.webhook == {"url": f"{PUBLIC_URL}/webhooks/telegram", "secret_token": WEBHOOK_SECRET}
    set_call = api.find("setWebhook")[0]
    assert set(set_call.json("allowed_updates")) >= {"message", "edited_message", "callback_query"}
    assert not api.find("getUpdates")  # never polls while a webhook is set


async def test_a_complaint_and_its_answer_by_webhook(webhook_bot):
    api = webhook_bot.api
    code = await file_complaint(webhook_bot)
    note = await api.wait_for("sendMessage", OFFICER, contains=code, where=lambda c: bool(c.buttons()))
    mark = api.mark()
    await api.deliver(api.message(OFFICER, ANSWER, reply_to=api.message_of(note)))
    # The webhook answers after the update is handled: the officer's confirmation is already out.
    assert any("Đã gửi trả lời" in c.text for c in api.find("sendMessage", OFFICER, mark))
    answer = await api.wait_for("sendMessage", CITIZEN, mark, contains=ANSWER)
    assert answer.text.startswith(f"Bộ phận tiếp nhận trả lời phản ánh {code}:")


@pytest.mark.parametrize("headers", [
    {},
    {"X-Telegram-Bot-Api-Secret-Token": ""},
    {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
    {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET[:-1] + "x"},  # same length, last character differs
    {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET + "x"},
    {"X-Telegram-Bot-Api-Secret-Token": "Thử-mật-khẩu"},
])
async def test_forged_posts_are_refused_and_change_nothing(webhook_bot, headers):
    api = webhook_bot.api
    before, mark = await stored_rows(webhook_bot), api.mark()
    update = json.dumps(api.message(CITIZEN, COMPLAINT)).encode()
    async with aiohttp.ClientSession() as http, http.post(
            f"{webhook_bot.service.url}/webhooks/telegram", data=update,
            headers={"Content-Type": "application/json", **headers}) as response:
        assert response.status == 403
    assert await stored_rows(webhook_bot) == before
    assert api.calls[mark:] == []


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"update": 1}', b'{"update_id": "abc"}',
                                  b'{"update_id": 5, "message": {"text": "no chat, no date"}}'])
async def test_bodies_that_are_no_update_are_bad_requests(webhook_bot, body):
    before = await stored_rows(webhook_bot)
    assert await webhook_bot.api.post(body) == 400
    assert await stored_rows(webhook_bot) == before


async def test_the_same_update_delivered_again_changes_nothing(webhook_bot):
    api = webhook_bot.api
    message = api.message(CITIZEN, COMPLAINT)
    assert await api.post(message) == 200
    assert await api.post(message) == 200
    summaries = api.find("sendMessage", CITIZEN)
    assert len(summaries) == 1
    press = api.press(CITIZEN, api.message_of(summaries[0]), "draft:send")
    assert await api.post(press) == 200
    assert await api.post(press) == 200
    assert await count(webhook_bot, Complaint) == 1


async def test_two_processes_share_drafts_and_never_file_twice(start_bot):
    first = await start_bot("webhook")
    second = await start_bot("webhook")
    api = first.api
    api.deliver_to = first.service.url
    assert await api.post(api.message(CITIZEN, COMPLAINT)) == 200
    summary = api.message_of(api.find("sendMessage", CITIZEN)[0])
    tap, second_tap = api.press(CITIZEN, summary, "draft:send"), api.press(CITIZEN, summary, "draft:send")
    # The press reaches the other process: the draft is in the store, not in a process.
    api.deliver_to = second.service.url
    assert await api.post(tap) == 200
    api.deliver_to = first.service.url
    assert await api.post(second_tap) == 200  # a quick second tap, handled by the first process
    async with first.core.sessions() as session:
        complaints = (await session.scalars(select(Complaint))).all()
        messages = await session.scalar(select(func.count()).select_from(Message))
    assert len(complaints) == 1 and complaints[0].text == COMPLAINT and messages == 1


async def hold_write_lock(connection: sqlite3.Connection) -> None:
    """Take SQLite's write lock, between the service's own short transactions."""
    for _ in range(500):
        try:
            connection.execute("BEGIN EXCLUSIVE")
            return
        except sqlite3.OperationalError:
            await asyncio.sleep(0.01)
    raise AssertionError("could not take the write lock")


@pytest.mark.skipif(bool(POSTGRES_ADMIN_URL), reason="holds a SQLite write lock to make the store fail")
async def test_an_update_that_fails_is_answered_500_and_handled_when_delivered_again(start_bot, database_url):
    world = await start_bot("webhook", {"storage": {"busy_timeout_ms": 50}})
    api = world.api
    update = api.message(CITIZEN, COMPLAINT)
    blocker = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None, timeout=0.01)
    try:
        await hold_write_lock(blocker)  # another writer holds the database: the draft cannot be kept
        assert await api.post(update) == 500
        assert not api.find("sendMessage", CITIZEN)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await api.post(update) == 200  # Telegram delivers it again
    assert "Nội dung phản ánh Quý ông/bà sắp gửi:" in api.find("sendMessage", CITIZEN)[0].text
