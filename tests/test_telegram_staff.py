"""Officers on Telegram, end to end: notifications with the case and buttons, answering by
replying to a notification or with /reply, the other commands, who may do what, and linking
a chat with a one-time code from the command line. The answer reaches the citizen on the
citizen's own channel: Telegram, the status page, and (queued until those channels are
configured) SMS and email.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from sqlalchemy import select

from storage.models import Event, Message, OutboxMessage, Staff
from tests.conftest import get_form
from tests.telegram_fake import (  # noqa: F401
    CITIZEN,
    HEAD,
    OFFICER,
    OTHER_OFFICER,
    STAFF,
    UNIT_GROUP,
    UNITS,
    BotWorld,
    bot,
    bot_env,
    eventually,
    fake_api,
    start_bot,
)
from tests.test_telegram_citizen import COMPLAINT, complaint_by_code, file_complaint

ANSWER = "Chúng tôi đã yêu cầu Công ty Môi trường đô thị thu gom rác tại ngõ 34 trong ngày hôm nay."


async def notification_for(world: BotWorld, code: str, chat_id: int = OFFICER, after: int = 0):
    return await world.api.wait_for("sendMessage", chat_id, after, contains=code,
                                    where=lambda c: bool(c.buttons()))


async def test_a_new_complaint_reaches_the_units_officer_with_the_case_and_buttons(bot):
    api = bot.api
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, COMPLAINT + " " + "Rác chắn hết lối đi. " * 20))
    summary = await api.wait_for("sendMessage", CITIZEN, mark)
    for update in (api.photo_message(CITIZEN), api.message(CITIZEN, template="location")):
        mark = api.mark()
        await api.deliver(update)
        summary = await api.wait_for("sendMessage", CITIZEN, mark)
    mark = api.mark()
    await api.deliver(api.press(CITIZEN, api.message_of(summary), "draft:send"))
    ack = await api.wait_for("sendMessage", CITIZEN, mark, contains="Mã phản ánh")
    code = ack.text.split("Mã phản ánh: ")[1].split(".")[0]

    note = await notification_for(bot, code, after=mark)
    assert note.text.startswith(f"Phản ánh mới {code} (Bộ phận tiếp nhận), qua kênh telegram. Hạn trả lời: ")
    assert "Vị trí: 21.046268, 105.800342" in note.text
    assert "Lịch sử:" in note.text and "Người dân (telegram): " + COMPLAINT in note.text  # the whole text
    assert "/attachment 1" in note.text
    assert note.buttons() == [("Nhận xử lý", f"claim:{code}"), ("Trả lời", f"reply:{code}"),
                              ("Chuyển đơn vị", f"reassign:{code}"), ("Đã giải quyết", f"resolve:{code}")]
    photo = await api.wait_for("sendPhoto", OFFICER, mark)
    assert photo.files["photo"].startswith(b"\xff\xd8") and code in photo.params["caption"]
    assert photo.json("reply_parameters")["message_id"] == api.message_of(note)["message_id"]
    # Officers of the unit are told; its head and other units' officers are not.
    assert not api.find("sendMessage", HEAD, mark) and not api.find("sendMessage", OTHER_OFFICER, mark)


async def test_the_officer_replies_to_the_notification_and_the_citizen_gets_the_answer(bot):
    api = bot.api
    code = await file_complaint(bot)
    note = await notification_for(bot, code)
    mark = api.mark()
    await api.deliver(api.message(OFFICER, ANSWER, reply_to=api.message_of(note)))
    answer = await api.wait_for("sendMessage", CITIZEN, mark, contains=ANSWER)
    assert answer.text == f"Bộ phận tiếp nhận trả lời phản ánh {code}:\n{ANSWER}"
    done = await api.wait_for("sendMessage", OFFICER, mark, contains="Đã gửi trả lời")
    assert code in done.text
    complaint = await complaint_by_code(bot, code)
    assert complaint.status == "answered" and complaint.first_response_at is not None
    # The same answer is public on the status page.
    async with bot.service.client() as client, client.get(f"/track/{code}") as response:
        assert ANSWER in await response.text()

    # The citizen writes back by replying to the answer: it reaches the officer.
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, "Cảm ơn, nhưng xe rác chưa tới.", reply_to=api.message_of(answer)))
    await api.wait_for("sendMessage", OFFICER, mark, contains="xe rác chưa tới")


async def test_buttons_claim_reply_reassign_resolve(bot):
    api = bot.api
    code = await file_complaint(bot)
    note = api.message_of(await notification_for(bot, code))

    mark = api.mark()
    claimed = await api.pressed(api.press(OFFICER, note, f"claim:{code}"))
    assert claimed.params["text"] == f"Đã nhận xử lý phản ánh {code}." and claimed.params.get("show_alert") != "true"
    await api.wait_for("sendMessage", CITIZEN, mark, contains="Đang xử lý")  # the citizen is told
    assert (await complaint_by_code(bot, code)).status == "assigned"

    mark = api.mark()
    await api.deliver(api.press(OFFICER, note, f"reply:{code}"))
    prompt = await api.wait_for("sendMessage", OFFICER, mark)
    assert code in prompt.text and prompt.json("reply_markup")["force_reply"] is True
    mark = api.mark()
    await api.deliver(api.message(OFFICER, ANSWER, reply_to=api.message_of(prompt)))
    await api.wait_for("sendMessage", CITIZEN, mark, contains=ANSWER)

    mark = api.mark()
    await api.deliver(api.press(OFFICER, note, f"resolve:{code}"))
    confirm = await api.wait_for("sendMessage", OFFICER, mark)
    assert [data for _, data in confirm.buttons()] == [f"done:{code}", f"keep:{code}"]
    confirm_message = api.message_of(confirm)
    mark = api.mark()
    await api.deliver(api.press(OFFICER, confirm_message, f"done:{code}"))
    await api.wait_for("editMessageText", OFFICER, mark, contains="đã giải quyết")
    await api.wait_for("sendMessage", CITIZEN, mark, contains="Đã giải quyết")
    assert (await complaint_by_code(bot, code)).status == "resolved"

    # Pressed again (a second tap, or a stale message): refused, nothing changes.
    mark = api.mark()
    again = await api.pressed(api.press(OFFICER, confirm_message, f"done:{code}", check=False))
    assert again.params["show_alert"] == "true" and "already resolved" in again.params["text"]


async def test_reassign_passes_the_complaint_and_its_new_unit_is_told(bot):
    api = bot.api
    code = await file_complaint(bot)
    note = api.message_of(await notification_for(bot, code))
    mark = api.mark()
    await api.deliver(api.press(OFFICER, note, f"reassign:{code}"))
    choice = await api.wait_for("sendMessage", OFFICER, mark)
    assert (("Phòng Quản lý đô thị", f"move:{code}:quan-ly-do-thi") in choice.buttons())
    mark = api.mark()
    await api.deliver(api.press(OFFICER, api.message_of(choice), f"move:{code}:quan-ly-do-thi"))
    # A transfer needs a reason: the unit chosen, the reasons configured for it are offered.
    reasons = await api.wait_for("editMessageText", OFFICER, mark, contains="Chọn lý do")
    assert (await complaint_by_code(bot, code)).unit_id == bot.core.directory.unit_ids["tiep-nhan"]
    why = f"why:{code}:quan-ly-do-thi:dung-don-vi"
    assert ("Chuyển đúng đơn vị có thẩm quyền", why) in reasons.buttons()
    assert all(data.split(":")[-1] in ("sai-tham-quyen", "dung-don-vi") for _, data in reasons.buttons())
    mark = api.mark()
    await api.deliver(api.press(OFFICER, api.message_of(choice), why))
    await api.wait_for("editMessageText", OFFICER, mark, contains="Đã chuyển")
    moved = await notification_for(bot, code, OTHER_OFFICER, mark)
    assert moved.text.startswith(f"Phản ánh {code} được chuyển tới Phòng Quản lý đô thị.")
    assert "Lịch sử:" in moved.text  # the new unit gets the whole case
    told = await api.wait_for("sendMessage", CITIZEN, mark, contains="Phòng Quản lý đô thị")
    assert "Lý do: Chuyển đúng đơn vị có thẩm quyền." in told.text

    # The first officer's old buttons no longer work on it: it is another unit's now.
    mark = api.mark()
    refused = await api.pressed(api.press(OFFICER, note, f"claim:{code}"))
    assert refused.params["show_alert"] == "true" and "thuộc đơn vị khác" in refused.params["text"]
    assert (await complaint_by_code(bot, code)).assignee_id is None


async def test_commands_reply_note_resolve_mine_overdue_case(bot, clock):
    api = bot.api
    code = await file_complaint(bot)
    other = await file_complaint(bot, body="Vỉa hè phố Duy Tân bị lấn chiếm làm chỗ để xe máy.")
    await notification_for(bot, other)

    async def command(text: str, chat_id: int = OFFICER) -> str:
        mark = api.mark()
        await api.deliver(api.message(chat_id, text))
        return (await api.wait_for("sendMessage", chat_id, mark)).text

    assert (await command(f"/claim {code}")) == f"Đã nhận xử lý phản ánh {code}."
    mine = await command("/mine")
    assert mine.startswith("Phản ánh được giao cho bạn:") and code in mine and other not in mine
    assert "Không có phản ánh nào." in await command("/overdue")
    clock.advance(days=5)
    overdue = await command("/overdue")
    assert code in overdue and other in overdue and "QUÁ HẠN" in overdue
    # A reply to a list names no one complaint: it answers nobody rather than the first listed.
    listing = api.message_of(api.find("sendMessage", OFFICER, where=lambda c: c.text == overdue)[-1])
    mark = api.mark()
    await api.deliver(api.message(OFFICER, ANSWER, reply_to=listing))
    assert (await api.wait_for("sendMessage", OFFICER, mark)).text.startswith("Không xác định được phản ánh")

    assert "Đã ghi chú nội bộ" in await command(f"/note {code} Đã gọi điện cho tổ trưởng dân phố.")
    mark = api.mark()
    assert "Đã gửi trả lời" in await command(f"/reply {code.lower().replace('-', ' ')} {ANSWER}")
    await api.wait_for("sendMessage", CITIZEN, mark, contains=ANSWER)
    case = await command(f"/case {code}")
    assert case.startswith(f"Hồ sơ {code}: Đã trả lời.") and "Ghi chú của Nguyễn Văn An: Đã gọi điện" in case
    assert "Nguyễn Văn An trả lời: " + ANSWER[:40] in case
    assert "Đã gọi điện" not in "".join(c.text for c in api.find("sendMessage", CITIZEN))  # notes stay internal

    assert "đã được đánh dấu đã giải quyết" in await command(f"/resolve {other} Đã xử lý xong.")
    assert (await complaint_by_code(bot, other)).status == "resolved"
    assert (await command(f"/reply {code}")).startswith("Cú pháp: /reply")
    assert "không hợp lệ" in await command("/reply PA-ZZZZ-ZZZZ trả lời")
    assert "Không thực hiện được" in await command(f"/reassign {code} khong-co-don-vi-nay dung-don-vi")
    assert (await command(f"/reassign {code} quan-ly-do-thi")).startswith("Cú pháp: /reassign MÃ đơn_vị lý_do")
    refused = await command(f"/reassign {code} quan-ly-do-thi trung-lap")
    assert refused == f"Không thực hiện được với phản ánh {code}: Cần chọn lý do, một trong: sai-tham-quyen, " \
                      "dung-don-vi."


async def test_staff_actions_are_authorised(bot):
    api = bot.api
    code = await file_complaint(bot)
    note = api.message_of(await notification_for(bot, code))

    async def command(text: str, chat_id: int) -> str:
        mark = api.mark()
        await api.deliver(api.message(chat_id, text))
        return (await api.wait_for("sendMessage", chat_id, mark)).text

    # A citizen is no officer: staff commands and forged staff buttons are refused.
    assert await command(f"/reply {code} Tôi tự trả lời", CITIZEN) == \
        "Lệnh này chỉ dành cho cán bộ đã liên kết tài khoản."
    mark = api.mark()
    refused = await api.pressed(api.press(CITIZEN, note, f"resolve:{code}"))
    assert refused.params["show_alert"] == "true"
    # An officer of another unit acts only on that unit's complaints.
    assert "thuộc đơn vị khác" in await command(f"/reply {code} {ANSWER}", OTHER_OFFICER)
    mark = api.mark()
    assert "thuộc đơn vị khác" in (await api.pressed(api.press(OTHER_OFFICER, note, f"claim:{code}"))).params["text"]
    # Replying to someone else's notification does not get round it.
    mark = api.mark()
    await api.deliver(api.message(OTHER_OFFICER, ANSWER, reply_to=note))
    assert "thuộc đơn vị khác" in (await api.wait_for("sendMessage", OTHER_OFFICER, mark)).text

    complaint = await complaint_by_code(bot, code)
    assert complaint.status == "new" and complaint.assignee_id is None
    async with bot.core.sessions() as session:
        public = (await session.scalars(select(Message).where(Message.complaint_id == complaint.id,
                                                              Message.direction == "out"))).all()
    assert public == []


async def test_a_unit_group_chat_gets_notifications_and_its_members_act_for_the_unit(start_bot):
    staff = STAFF + [{"slug": "nhom-qldt", "name": "Nhóm Phòng Quản lý đô thị", "unit": "quan-ly-do-thi",
                      "role": "agent", "telegram_chat_id": UNIT_GROUP}]
    world = await start_bot("polling", {"staff": staff, "routing": {"rules": [
        {"unit": "quan-ly-do-thi", "keywords": ["vỉa hè"]}]}})
    api = world.api
    api.known_chats.add(UNIT_GROUP)
    code = await file_complaint(world, body="Vỉa hè phố Duy Tân bị lấn chiếm làm chỗ để xe máy.")
    note = await notification_for(world, code, UNIT_GROUP)
    mark = api.mark()
    reply = api.message(UNIT_GROUP, ANSWER, sender=CITIZEN + 77, reply_to=api.message_of(note))
    await api.deliver(reply)
    await api.wait_for("sendMessage", CITIZEN, mark, contains=ANSWER)
    # Talk in the group that is no reply to the bot is left alone.
    mark = api.mark()
    await api.deliver(api.message(UNIT_GROUP, "Chiều nay ai đi kiểm tra?", sender=CITIZEN + 77))
    await api.deliver(api.message(UNIT_GROUP, "/mine", sender=CITIZEN + 77))
    await api.wait_for("sendMessage", UNIT_GROUP, mark)
    assert len(api.find("sendMessage", UNIT_GROUP, mark)) == 1


def write_config(path, config_overrides: dict, database_url: str) -> None:
    """The service's configuration as a file, for the command line. The command runs beside
    a live service on one SQLite file and waits for its write lock as long as an operator
    would (60 s, not the default 5 s): on a loaded machine one command waited past 5 s while
    the service was starting (its digests' catch-up was running). These tests are about the
    commands; how a transaction waits beside a process that writes back to back is
    tests/test_sqlite_driver.py's."""
    lines = [f'[storage]\nurl = "{database_url}"\nbusy_timeout_ms = 60000\n']
    for unit in config_overrides["units"]:
        lines.append(f'[[units]]\nslug = "{unit["slug"]}"\nname = "{unit["name"]}"\nname_en = "{unit["name_en"]}"\n')
    for member in config_overrides["staff"]:
        lines.append("[[staff]]\n" + "".join(
            f"{key} = {value}\n" if isinstance(value, int) else f'{key} = "{value}"\n'
            for key, value in member.items()))
    path.write_text("\n".join(lines), encoding="utf-8")


async def test_a_new_officer_links_their_chat_with_a_code_from_the_command_line(start_bot, tmp_path, clock,
                                                                                  database_url):
    clock.set(datetime.now(UTC))  # the command line makes the code on the wall clock
    newcomer = {"slug": "pham-thu-ha", "name": "Phạm Thu Hà", "unit": "tiep-nhan", "role": "agent"}
    staff = STAFF + [newcomer]
    world = await start_bot("polling", {"staff": staff})
    api = world.api
    config_file = tmp_path / "feedback.toml"
    write_config(config_file, {"units": UNITS, "staff": staff}, database_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "staff", "link-code", "pham-thu-ha", "--config", str(config_file),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    link_code = out.decode().strip()
    assert len(link_code) == 8 and "/link" in err.decode()

    chat = 5005
    mark = api.mark()
    await api.deliver(api.message(chat, "/link WRONG123"))
    assert "không đúng hoặc đã hết hạn" in (await api.wait_for("sendMessage", chat, mark)).text
    mark = api.mark()
    await api.deliver(api.message(chat, f"/link {link_code.lower()}"))
    assert (await api.wait_for("sendMessage", chat, mark)).text == \
        "Đã liên kết tài khoản Telegram này với cán bộ Phạm Thu Hà (Bộ phận tiếp nhận)."
    async with world.core.sessions() as session:
        member = await session.scalar(select(Staff).where(Staff.slug == "pham-thu-ha"))
    assert member.telegram_chat_id == chat
    mark = api.mark()
    await api.deliver(api.message(chat, "/start"))
    assert (await api.wait_for("sendMessage", chat, mark)).text.startswith("Cán bộ Phạm Thu Hà (Bộ phận tiếp nhận).")
    # The code worked once.
    mark = api.mark()
    await api.deliver(api.message(chat + 1, f"/link {link_code}"))
    assert "không đúng hoặc đã hết hạn" in (await api.wait_for("sendMessage", chat + 1, mark)).text

    unknown = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "staff", "link-code", "khong-co", "--config", str(config_file),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await unknown.communicate()
    assert unknown.returncode == 1 and "no staff member khong-co" in err.decode()


async def test_the_answer_reaches_web_sms_and_email_citizens_on_their_own_channel(bot):
    api = bot.api
    codes = {}
    async with bot.service.client() as client:
        for key, phone, email in (("web", "", ""), ("sms", "0912 345 678", ""), ("email", "", "minh@example.vn")):
            form = dict(await get_form(client), text=f"Đèn đường ngõ {len(codes) + 12} Trần Duy Hưng hỏng ba hôm nay.",
                        area="Cầu Giấy", category="giao-thong", name="", phone=phone, email=email)
            async with client.post("/", data=form, allow_redirects=False) as response:
                assert response.status == 303
                codes[key] = response.headers["Location"].split("/track/")[1].split("?")[0]
    for key, code in codes.items():
        note = await notification_for(bot, code)
        assert "qua kênh web" in note.text
        mark = api.mark()
        await api.deliver(api.message(OFFICER, f"{ANSWER} ({key})", reply_to=api.message_of(note)))
        await api.wait_for("sendMessage", OFFICER, mark, contains="Đã gửi trả lời")

    async with bot.service.client() as client, client.get(f"/track/{codes['web']}") as response:
        assert f"{ANSWER} (web)" in await response.text()
    async with bot.core.sessions() as session:
        queued = {(row.channel, row.recipient): row.payload["text"] for row in (await session.scalars(
            select(OutboxMessage).where(OutboxMessage.key.like("answer:%")))).all()}
    # No SMS gateway or mail relay in this test: the answers wait in the outbox for them.
    assert f"{ANSWER} (sms)" in queued[("sms", "+84912345678")]
    assert f"{ANSWER} (email)" in queued[("email", "minh@example.vn")]
    assert not [c for c in api.find("sendMessage") if ANSWER in c.text and c.chat_id != OFFICER]



async def test_reopen_and_reassign_with_a_reason_from_telegram_as_from_the_desk(bot):
    """The staff actions the desk added (reopen, a reassignment's reason) work from a chat too."""
    api = bot.api
    code = await file_complaint(bot)
    await notification_for(bot, code)

    async def command(text: str, chat_id: int = OFFICER) -> str:
        mark = api.mark()
        await api.deliver(api.message(chat_id, text))
        return (await api.wait_for("sendMessage", chat_id, mark)).text

    assert (await command(f"/reopen {code}")).startswith(f"Không thực hiện được với phản ánh {code}")  # it is open
    await command(f"/resolve {code} Đã xử lý xong.")
    reopened = await command(f"/reopen {code} Người dân báo chưa xong")
    assert reopened == f"Phản ánh {code} đã được mở lại, với thời hạn mới."
    assert (await complaint_by_code(bot, code)).status == "reopened"
    await command(f"/reassign {code} quan-ly-do-thi dung-don-vi Thuộc trật tự đô thị")
    async with bot.core.sessions() as session:
        events = {e.kind: e.detail for e in (await session.scalars(select(Event).where(
            Event.complaint_id == (await complaint_by_code(bot, code)).id))).all()}
    assert events["reopened"]["reason"] == "Người dân báo chưa xong"
    assert (events["reassigned"]["reason"], events["reassigned"]["note"]) == ("dung-don-vi", "Thuộc trật tự đô thị")
