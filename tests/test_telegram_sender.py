"""Sending through Telegram and its limits: the outbox's messages go out through the real
python-telegram-bot stack to the fake Bot API, which answers 429, 403, 400 or 502 on
demand. Also: starting when Telegram is away, a refused token, the token kept out of the
logs, and the channel staying off without its token.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from service.app import build_app
from storage.models import OutboxMessage
from tests.conftest import start_service
from tests.telegram_fake import (  # noqa: F401
    CITIZEN,
    HEAD,
    OFFICER,
    STAFF,
    TOKEN,
    TOKEN_ENV,
    BotWorld,
    FakeBotApi,
    bot,
    bot_env,
    eventually,
    fake_api,
    start_bot,
    telegram_overrides,
)
from tests.test_telegram_citizen import COMPLAINT, file_complaint


async def ack_row(world: BotWorld, status: str | None = None) -> OutboxMessage | None:
    """The acknowledgement queued for the Telegram citizen (once it reached ``status``)."""
    async with world.core.sessions() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.key.like("ack:%"),
                                                               OutboxMessage.recipient == str(CITIZEN)))
    return row if row is not None and (status is None or row.status == status) else None


async def compose_and_send(world: BotWorld, before_send=None) -> None:
    """Write a complaint and press Send; ``before_send`` scripts the fake in between."""
    api = world.api
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, COMPLAINT))
    summary = await api.wait_for("sendMessage", CITIZEN, mark)
    if before_send:
        before_send(api)
    mark = api.mark()
    await api.deliver(api.press(CITIZEN, api.message_of(summary), "draft:send"))
    await api.wait_for("editMessageText", CITIZEN, mark)


async def test_a_short_flood_wait_is_waited_out_in_place(bot):
    await compose_and_send(bot, lambda api: api.fail("sendMessage", 429, retry_after=1, chat_id=CITIZEN))
    row = await eventually(lambda: ack_row(bot, "sent"))
    assert row.attempts == 1  # one outbox attempt; the rate limiter retried inside it
    tries = bot.api.find("sendMessage", CITIZEN, where=lambda c: "Mã phản ánh" in c.text)
    assert len(tries) == 2 and tries[0].params == tries[1].params


async def test_a_long_flood_wait_goes_back_to_the_outbox_until_telegram_allows(bot, clock):
    await compose_and_send(bot, lambda api: api.fail("sendMessage", 429, retry_after=120, chat_id=CITIZEN))
    row = await eventually(lambda: _with_attempts(bot, 1))
    assert "flood" in row.last_error
    assert (row.next_attempt_at - clock.now()).total_seconds() >= 120
    clock.advance(seconds=121)
    row = await eventually(lambda: ack_row(bot, "sent"))
    assert row.attempts == 2 and row.last_error is None


async def _with_attempts(world: BotWorld, attempts: int) -> OutboxMessage | None:
    row = await ack_row(world, "queued")
    return row if row is not None and row.attempts == attempts and row.last_error else None


async def test_a_citizen_who_blocked_the_bot_is_a_permanent_failure(bot):
    await compose_and_send(bot, lambda api: api.blocked.add(CITIZEN))
    row = await eventually(lambda: ack_row(bot, "failed"))
    assert row.attempts == 1 and row.last_error == "permanent: forbidden: Forbidden: bot was blocked by the user"
    # The complaint is filed all the same, and its officer is told.
    await bot.api.wait_for("sendMessage", OFFICER, contains="Phản ánh mới")


async def test_a_chat_telegram_does_not_know_is_a_permanent_failure(bot):
    await compose_and_send(bot, lambda api: api.fail("sendMessage", 400, "Bad Request: chat not found",
                                                     chat_id=CITIZEN))
    row = await eventually(lambda: ack_row(bot, "failed"))
    assert row.last_error == "permanent: refused: Chat not found"


async def test_telegram_errors_on_its_side_are_retried_later(bot, clock):
    await compose_and_send(bot, lambda api: api.fail("sendMessage", 502, chat_id=CITIZEN))
    row = await eventually(lambda: _with_attempts(bot, 1))
    assert row.last_error.startswith("NetworkError")
    clock.advance(seconds=30)
    await eventually(lambda: ack_row(bot, "sent"))


async def test_a_long_answer_is_split_and_every_part_names_the_complaint(bot):
    api = bot.api
    code = await file_complaint(bot)
    answer = "\n".join(f"Mục {n}: đã kiểm tra hiện trường, lập biên bản và yêu cầu khắc phục." for n in range(80))
    mark = api.mark()
    typed = f"/reply {code} {answer}"[:4096]  # as long as Telegram lets an officer write
    await api.deliver(api.message(OFFICER, typed))
    first = await api.wait_for("sendMessage", CITIZEN, mark, contains="trả lời phản ánh")
    second = await api.wait_for("sendMessage", CITIZEN, mark, contains=f"[{code}] ")
    assert len(first.text) <= 4096 and second.text.startswith(f"[{code}] Mục")
    assert typed.endswith(second.text.split("\n")[-1])


async def test_the_bot_token_never_reaches_the_logs(start_bot, caplog):
    caplog.set_level(logging.DEBUG)
    world = await start_bot("polling")
    await compose_and_send(world, lambda api: api.fail("sendMessage", 502, chat_id=CITIZEN))
    await eventually(lambda: _with_attempts(world, 1))
    await file_complaint(world)
    assert "getUpdates" in world.api.find("getUpdates")[0].method  # the bot did talk to the API
    assert TOKEN not in caplog.text and TOKEN.split(":")[1] not in caplog.text
    async with world.core.sessions() as session:
        errors = (await session.scalars(select(OutboxMessage.last_error))).all()
    assert not [e for e in errors if e and TOKEN.split(":")[1] in e]


async def test_the_service_runs_without_telegram_until_it_answers(make_config, fake_api, bot_env, clock):
    fake_api.fail("getMe", 502)  # Telegram is away when the service starts
    fake_api.known_chats.add(OFFICER)
    config = make_config({**telegram_overrides(fake_api), "staff": STAFF}, bot_env)
    running, runner = await start_service(config, clock=clock)
    try:
        async with running.client() as client, client.get("/healthz") as response:
            assert response.status == 200  # the web form and everything else work meanwhile
        await fake_api.wait_for("getUpdates", timeout=15)  # it kept trying, and now polls
        world = BotWorld(running, fake_api)
        code = await file_complaint(world)
        await fake_api.wait_for("sendMessage", OFFICER, contains=code)
    finally:
        await runner.cleanup()


async def test_a_refused_token_leaves_telegram_off_and_the_service_up(make_config, bot_env, clock, caplog):
    other = await FakeBotApi(token="999:another-bot-entirely").start()
    try:
        config = make_config(telegram_overrides(other), bot_env)
        running, runner = await start_service(config, clock=clock)
        try:
            async with running.client() as client, client.get("/healthz") as response:
                assert response.status == 200
            assert [c.method for c in other.calls] == ["getMe"]
            assert "telegram off: Telegram refused the bot token" in caplog.text
        finally:
            await runner.cleanup()
    finally:
        await other.stop()


async def test_without_the_token_in_the_environment_telegram_stays_off(make_config, fake_api, monkeypatch, caplog):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    # Checked at load against an environment that had the token; the process's has none.
    config = make_config(telegram_overrides(fake_api), {TOKEN_ENV: TOKEN})
    caplog.set_level(logging.INFO)
    app = build_app(config, run_dispatcher=False, run_scheduler=False)
    assert "telegram off: environment variable is not set" in caplog.text
    assert not [r for r in app.router.routes() if r.resource and r.resource.canonical == "/webhooks/telegram"]
    assert fake_api.calls == []


async def test_telegram_disabled_in_config_makes_no_call(make_config, fake_api, bot_env, clock):
    overrides = telegram_overrides(fake_api)
    overrides["telegram"]["enabled"] = False
    running, runner = await start_service(make_config(overrides, bot_env), clock=clock)
    await runner.cleanup()
    assert fake_api.calls == [] and running.url


async def test_a_digest_reaches_the_head_with_its_chart_as_a_photo(bot):
    from bot import digests

    core = bot.core
    period = digests.period_for("daily", core.clock.now(), core.config.tz)
    mark = bot.api.mark()
    outcome = await digests.send(core, "tiep-nhan", period)
    assert outcome.result == "queued"
    core.outbox_ready.set()
    text = await bot.api.wait_for("sendMessage", HEAD, mark)
    photo = await bot.api.wait_for("sendPhoto", HEAD, mark)
    assert "báo cáo tổng hợp" in text.text.lower()
    [png] = photo.files.values()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
