"""A citizen on Zalo and an officer on Telegram, end to end: the citizen writes to the OA and
gets a code at once, the officer answers from Telegram and the answer arrives on Zalo, the
resolution's survey too, and the citizen's digit rates it. Both fakes (Zalo's servers,
Telegram's Bot API) speak their protocols over HTTP to the one running service. Also the
command line: `zalo set-token` stores the first pair and `zalo status` reports it.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from sqlalchemy import select

from bot import credentials, lifecycle
from service.assembly import open_core
from storage.models import Complaint
from tests.conftest import merge, start_service
from tests.telegram_fake import (  # noqa: F401
    OFFICER,
    STAFF,
    BotWorld,
    UNITS,
    bot_env,
    eventually,
    fake_api,
    telegram_overrides,
)
from tests.test_telegram_staff import notification_for, write_config
from tests.zalo_fake import CITIZEN, fake_zalo  # noqa: F401
from tests.zalo_world import (ZALO_ENV, ZaloWorld, start_zalo, store_first_pair, zalo_env,  # noqa: F401
                              zalo_overrides)

ANSWER = "Đội quản lý điện chiếu sáng đã thay bóng đèn tại ngõ 12 Trần Duy Hưng sáng nay."


async def test_an_officers_answer_from_telegram_reaches_the_citizen_on_zalo(make_config, fake_api, fake_zalo,
                                                                           bot_env, zalo_env, clock):
    config = make_config(merge(telegram_overrides(fake_api), zalo_overrides(fake_zalo)), {**bot_env, **zalo_env})
    running, runner = await start_service(config, clock=clock)
    try:
        fake_api.deliver_to = running.url
        fake_api.known_chats.update({OFFICER})
        await store_first_pair(running.core, fake_zalo)
        world = ZaloWorld(running, fake_zalo)
        assert await world.post(fake_zalo.text(CITIZEN, "Đèn đường ở ngõ 12 Trần Duy Hưng hỏng ba hôm nay.")) == 200
        [complaint] = await world.complaints()
        code = complaint.tracking_code
        await world.sent_to(CITIZEN, 1, contains=code)  # the code at once

        world_api = fake_api
        note = await notification_for(BotWorld(running, fake_api), code)
        assert "qua kênh zalo" in note.text
        mark = world_api.mark()
        await world_api.deliver(world_api.message(OFFICER, ANSWER, reply_to=world_api.message_of(note)))
        await world_api.wait_for("sendMessage", OFFICER, mark, contains="Đã gửi trả lời")
        [answer] = await world.sent_to(CITIZEN, 1, contains=ANSWER)
        assert code in answer.text
        assert not [c for c in fake_api.find("sendMessage") if ANSWER in c.text and c.chat_id != OFFICER]

        # The officer resolves it; the survey reaches Zalo and the citizen's "5" rates it.
        mark = world_api.mark()
        await world_api.deliver(world_api.message(OFFICER, f"/resolve {code}"))
        await world_api.wait_for("sendMessage", OFFICER, mark)
        await world.sent_to(CITIZEN, 1, contains="đánh giá mức độ hài lòng")
        assert await world.post(fake_zalo.text(CITIZEN, "5. Cảm ơn phường")) == 200

        async def rated():
            async with running.core.sessions() as session:
                return (await session.scalar(select(Complaint.rating).where(Complaint.id == complaint.id))) == 5
        await eventually(rated)
        await world.sent_to(CITIZEN, 1, contains="Cảm ơn Quý ông/bà đã đánh giá")
    finally:
        await runner.cleanup()


async def test_set_token_and_status_from_the_command_line(make_config, database_url, fake_zalo, zalo_env, tmp_path,
                                                          clock):
    clock.set(datetime.now(UTC))  # the command line runs on the wall clock
    config_file = tmp_path / "feedback.toml"
    write_config(config_file, {"units": UNITS, "staff": STAFF}, database_url)
    with config_file.open("a", encoding="utf-8") as out:
        out.write(f'\n[zalo]\nenabled = true\napp_id = "{fake_zalo.app_id}"\noa_id = "{fake_zalo.oa_id}"\n'
                  f'window_hours = 48.0\n[zalo.zns_templates.survey]\ntemplate_id = "306420"\n'
                  f'params = {{ code = "ma_phan_anh" }}\n')

    async def cli(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli", "zalo", *args, "--config", str(config_file),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        return process.returncode, out.decode(), err.decode()

    status, out, err = await cli("status")
    assert status == 1 and "none stored" in out, err
    status, out, err = await cli("set-token", "--access-token", "ACCESS-1", "--refresh-token", "REFRESH-1",
                                 "--expires-in", "90000")
    assert status == 0 and "stored" in out and "ACCESS-1" not in out + err, err
    status, out, err = await cli("status")
    assert status == 0, err
    assert "(in 24 h 59 min)" in out or "(in 25 h 0 min)" in out
    assert "0 citizen(s) inside it" in out and "templates for survey" in out and "not known yet" in out
    core = await open_core(make_config(), clock=clock)
    try:
        stored = await credentials.read(core, "zalo")
    finally:
        await core.close()
    assert (stored["access_token"], stored["refresh_token"]) == ("ACCESS-1", "REFRESH-1")


async def test_three_days_later_the_resolution_arrives_by_zns(start_zalo, fake_zalo, clock):
    """Past the reply window the Zalo citizen who shared their phone gets what they must not
    miss by template message (ZNS) to that phone; nothing goes by consultation message."""
    templates = {"status_changed": {"template_id": "306430", "params": {"code": "ma_phan_anh", "text": "noi_dung"}},
                 "survey": {"template_id": "306420", "params": {"code": "ma_phan_anh", "text": "noi_dung"}}}
    world = await start_zalo({"staff": STAFF, "units": UNITS}, zns_templates=templates)
    fake_zalo.add_template("306430", "ma_phan_anh", "noi_dung")
    fake_zalo.add_template("306420", "ma_phan_anh", "noi_dung")
    assert await world.post(fake_zalo.text(CITIZEN, "Đèn đường ở ngõ 12 Trần Duy Hưng hỏng ba hôm nay.")) == 200
    info = {"app_id": fake_zalo.app_id, "sender": {"id": CITIZEN}, "recipient": {"id": fake_zalo.oa_id},
            "event_name": "user_submit_info", "user_id_by_app": fake_zalo.by_app(CITIZEN),
            "info": {"name": "Phạm Minh", "phone": "84912345678"},
            "timestamp": str(int(clock.now().timestamp() * 1000))}
    assert await world.post(info) == 200
    [complaint] = await world.complaints()
    await world.sent_to(CITIZEN, 1, contains=complaint.tracking_code)

    clock.advance(hours=72)
    await lifecycle.resolve(world.core, complaint.tracking_code, STAFF[0]["slug"])

    async def by_zns():
        return len(fake_zalo.zns_sent) == 2
    await eventually(by_zns)
    sent = sorted(fake_zalo.zns_sent, key=lambda c: c.body["template_id"])
    assert [c.body["template_id"] for c in sent] == ["306420", "306430"]
    assert {c.body["phone"] for c in sent} == {"84912345678"}
    assert all(c.body["template_data"]["ma_phan_anh"] == complaint.tracking_code for c in sent)
    # Not by consultation message: the window closed.
    assert not [c for c in fake_zalo.sent if "đánh giá" in c.text or "Đã giải quyết" in c.text]


async def test_a_message_whose_answer_zalo_lost_is_looked_up_not_sent_twice(start_zalo, fake_zalo, clock):
    """Zalo took the greeting but its answer was lost (the send timed out): the outbox marks
    it unsure and, at its next attempt, finds it in the OA's conversation with the citizen
    instead of sending it again; the acknowledgement after it goes once too."""
    world = await start_zalo({"outbox": {"send_timeout_seconds": 3}})  # Zalo's client waits 1 s
    fake_zalo.lose_answer("cs", 1.5)
    assert await world.post(fake_zalo.text(CITIZEN, "Đèn đường ở ngõ 12 Trần Duy Hưng hỏng ba hôm nay.")) == 200

    async def unsure():
        return [row for row in await world.outbox() if row.unsure and row.status == "queued"]
    [row] = await eventually(unsure)
    clock.advance(hours=1)
    world.core.outbox_ready.set()

    async def all_sent():
        rows = await world.outbox()
        return len(rows) == 2 and all(r.status == "sent" for r in rows) and rows
    greeting, acknowledgement = await eventually(all_sent)
    [looked_up] = [c for c in fake_zalo.calls if c.endpoint == "conversation"]
    assert looked_up.body["user_id"] == CITIZEN
    assert len(fake_zalo.sent) == 2  # the greeting once, then the acknowledgement
    assert greeting.id == row.id and not greeting.resent and not greeting.unsure
    assert greeting.external_id == fake_zalo.sent[0].answer["data"]["message_id"]
    [complaint] = await world.complaints()
    assert acknowledgement.complaint_id == complaint.id and complaint.tracking_code in fake_zalo.sent[1].text
