"""Citizens on Telegram, end to end: the real python-telegram-bot polls a fake Bot API over
HTTP, the real service files complaints in a real database, and the outbox sends the
answers back through the same fake Telegram.
"""

from __future__ import annotations

from sqlalchemy import func, select

from bot import citizens
from storage.models import Attachment, Complaint, Contact, Message, OutboxMessage
from tests.telegram_fake import (  # noqa: F401
    CITIZEN,
    CITIZEN_EN,
    JPEG,
    OFFICER,
    BotWorld,
    bot,
    bot_env,
    eventually,
    fake_api,
    fixture,
    start_bot,
)

COMPLAINT = fixture("text")["message"]["text"]


async def count(world: BotWorld, model) -> int:
    async with world.core.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def complaint_by_code(world: BotWorld, code: str) -> Complaint:
    async with world.core.sessions() as session:
        return await session.scalar(select(Complaint).where(Complaint.tracking_code == code))


async def file_complaint(world: BotWorld, chat_id: int = CITIZEN, body: str = COMPLAINT) -> str:
    """Write, see the summary, press Send; return the tracking code from the acknowledgement."""
    api = world.api
    mark = api.mark()
    await api.deliver(api.message(chat_id, body))
    summary = await api.wait_for("sendMessage", chat_id, mark, where=lambda c: bool(c.buttons()))
    mark = api.mark()
    await api.deliver(api.press(chat_id, api.message_of(summary), "draft:send"))
    ack = await api.wait_for("sendMessage", chat_id, mark, where=lambda c: "PA-" in c.text and "/track/" in c.text)
    # The press is answered and its summary edited only after intake commits, so possibly
    # after the acknowledgement: wait for the edit, the press's last step, so that no answer
    # or edit of it comes after a caller's next mark (it did, under load in CI).
    await api.wait_for("editMessageText", chat_id, mark, contains="PA-")
    return ack.text.split("/track/")[1].split()[0]


async def test_start_greets_in_the_citizens_language_and_says_how_to_send(bot):
    api = bot.api
    await api.deliver(api.message(CITIZEN, "/start"))
    greeting = await api.wait_for("sendMessage", CITIZEN)
    lines = greeting.text.splitlines()
    assert lines[0].startswith("Kính chào Quý ông/bà!") and len(lines) == 3
    assert "nhắn nội dung phản ánh" in lines[1]

    await api.deliver(api.message(CITIZEN_EN, "/start"))
    welcome = await api.wait_for("sendMessage", CITIZEN_EN)
    assert welcome.text.startswith("Welcome!") and "Citizens' Feedback Desk" in welcome.text


async def test_a_citizen_files_a_complaint_with_photo_location_and_phone(bot):
    api = bot.api
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, COMPLAINT))
    summary = await api.wait_for("sendMessage", CITIZEN, mark)
    assert COMPLAINT in summary.text
    assert [data for _, data in summary.buttons()] == ["draft:send", "draft:edit", "draft:cancel"]
    assert [label for label, _ in summary.buttons()] == ["Gửi", "Sửa", "Hủy"]
    assert await count(bot, Complaint) == 0  # nothing is filed before the citizen confirms

    for update in (api.photo_message(CITIZEN, caption="Ảnh chụp sáng nay"), api.message(CITIZEN, template="location"),
                   api.message(CITIZEN, template="contact_own")):
        mark = api.mark()
        await api.deliver(update)
        summary = await api.wait_for("sendMessage", CITIZEN, mark)
    assert "Kèm theo: 1 ảnh/tệp." in summary.text and "Vị trí: 21.04627, 105.80034." in summary.text
    assert "+84912345678" in summary.text

    mark = api.mark()
    await api.deliver(api.press(CITIZEN, api.message_of(summary), "draft:send"))
    edited = await api.wait_for("editMessageText", CITIZEN, mark)
    ack = await api.wait_for("sendMessage", CITIZEN, mark, contains="Mã phản ánh")
    code = ack.text.split("Mã phản ánh: ")[1].split(".")[0]
    assert f"Đã gửi phản ánh {code}." == edited.params["text"] and edited.json("reply_markup") is None
    assert "Đơn vị xử lý: Bộ phận tiếp nhận" in ack.text and "Thời hạn trả lời dự kiến: " in ack.text
    assert api.find("answerCallbackQuery", after=mark)

    complaint = await complaint_by_code(bot, code)
    assert complaint.channel == "telegram" and complaint.language == "vi"
    assert complaint.text.startswith(COMPLAINT + "\nẢnh chụp sáng nay")
    assert "Liên hệ: Minh Phạm +84912345678" in complaint.text
    assert (complaint.latitude, complaint.longitude) == (21.046268, 105.800342)
    async with bot.core.sessions() as session:
        contact = await session.get(Contact, complaint.contact_id)
        alternate = await session.get(Contact, complaint.alternate_contact_id)
        files = (await session.scalars(select(Attachment))).all()
        stored = await session.scalar(select(Message).where(Message.complaint_id == complaint.id))
    assert (contact.channel, contact.address, contact.display_name) == ("telegram", str(CITIZEN), "Minh Phạm")
    assert (alternate.channel, alternate.address) == ("sms", "+84912345678")  # the citizen's own, checked number
    assert [(f.content_type, f.data) for f in files] == [("image/jpeg", JPEG)]  # the largest size, downloaded
    assert files[0].reference.startswith("telegram:")
    assert stored.external_id == f"{CITIZEN}:1"  # chat and first message: what dedupe keys on
    assert await citizens.load_draft(bot.core, "telegram", str(CITIZEN)) is None


async def test_a_second_press_or_a_redelivered_press_files_one_complaint(bot):
    api = bot.api
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, COMPLAINT))
    summary = api.message_of(await api.wait_for("sendMessage", CITIZEN, mark))
    press = api.press(CITIZEN, summary, "draft:send")
    await api.deliver(press)
    await api.wait_for("editMessageText", CITIZEN, mark)
    mark = api.mark()
    refused = await api.pressed(api.press(CITIZEN, summary, "draft:send", check=False))
    assert "không có phản ánh nào đang soạn" in refused.params["text"].lower()
    assert await count(bot, Complaint) == 1


async def test_edit_replaces_the_text_and_cancel_drops_the_draft(bot):
    api = bot.api
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, "Đèn đường hỏng"))
    summary = api.message_of(await api.wait_for("sendMessage", CITIZEN, mark))
    mark = api.mark()
    await api.deliver(api.press(CITIZEN, summary, "draft:edit"))
    assert "nội dung mới" in (await api.wait_for("sendMessage", CITIZEN, mark)).text
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, "Đèn đường ngõ 12 Trần Duy Hưng hỏng ba hôm nay"))
    summary_call = await api.wait_for("sendMessage", CITIZEN, mark)
    assert "ngõ 12 Trần Duy Hưng" in summary_call.text and "Đèn đường hỏng\n" not in summary_call.text

    mark = api.mark()
    await api.deliver(api.press(CITIZEN, api.message_of(summary_call), "draft:cancel"))
    cancelled = await api.wait_for("editMessageText", CITIZEN, mark)
    assert cancelled.params["text"] == "Đã hủy phản ánh đang soạn."
    assert await citizens.load_draft(bot.core, "telegram", str(CITIZEN)) is None
    assert await count(bot, Complaint) == 0


async def test_status_lists_the_citizens_complaints_or_shows_one(bot):
    api = bot.api
    first = await file_complaint(bot)
    second = await file_complaint(bot, body="Cống thoát nước phố Xuân Thủy bị tắc, nước tràn ra đường.")
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, "/status"))
    listing = await api.wait_for("sendMessage", CITIZEN, mark)
    assert listing.text.startswith("Các phản ánh của Quý ông/bà:")
    assert listing.text.index(second) < listing.text.index(first)  # newest first
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, f"/status {first.lower()}"))
    one = await api.wait_for("sendMessage", CITIZEN, mark)
    assert one.text.startswith(f"Phản ánh {first}: Mới tiếp nhận.")
    mark = api.mark()
    await api.deliver(api.message(CITIZEN_EN, "/status"))
    assert (await api.wait_for("sendMessage", CITIZEN_EN, mark)).text == \
        "You have not sent a complaint on this channel yet."
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, "/status PA-1234"))
    assert "Mã phản ánh không hợp lệ" in (await api.wait_for("sendMessage", CITIZEN, mark)).text


async def test_lang_switches_every_later_message(bot):
    api = bot.api
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, "/lang"))
    prompt = await api.wait_for("sendMessage", CITIZEN, mark)
    assert [data for _, data in prompt.buttons()] == ["lang:vi", "lang:en"]
    mark = api.mark()
    await api.deliver(api.press(CITIZEN, api.message_of(prompt), "lang:en"))
    switched = await api.wait_for("editMessageText", CITIZEN, mark)
    assert switched.params["text"] == "From now on we will write to you in English."
    code = await file_complaint(bot)
    ack = api.find("sendMessage", CITIZEN, where=lambda c: code in c.text)[0]
    assert ack.text.startswith("We have received your complaint.") and "Handled by: Reception desk" in ack.text
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, "/lang vi"))
    assert (await api.wait_for("sendMessage", CITIZEN, mark)).text.startswith("Từ nay chúng tôi")


async def test_replying_to_our_message_adds_to_that_complaint(bot):
    api = bot.api
    code = await file_complaint(bot)
    ack = api.find("sendMessage", CITIZEN, where=lambda c: "Mã phản ánh" in c.text)[0]
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, "Hôm nay rác còn nhiều hơn, bốc mùi cả ngõ.", reply_to=api.message_of(ack)))
    added = await api.wait_for("sendMessage", CITIZEN, mark, contains="đã bổ sung")
    assert code in added.text
    staff_told = await api.wait_for("sendMessage", OFFICER, mark, contains="bốc mùi cả ngõ")
    assert code in staff_told.text
    assert await count(bot, Complaint) == 1
    complaint = await complaint_by_code(bot, code)
    async with bot.core.sessions() as session:
        texts = (await session.scalars(select(Message.text).where(Message.complaint_id == complaint.id)
                                       .order_by(Message.id))).all()
    assert texts[-1] == "Hôm nay rác còn nhiều hơn, bốc mùi cả ngõ."


async def test_naming_an_own_code_is_a_follow_up_but_a_strangers_code_is_not(bot):
    api = bot.api
    code = await file_complaint(bot)
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, f"Bổ sung cho {code}: xe rác không vào được ngõ."))
    await api.wait_for("sendMessage", CITIZEN, mark, contains="đã bổ sung")
    mark = api.mark()
    await api.deliver(api.message(CITIZEN_EN, f"Same problem as {code}, in my lane too."))
    summary = await api.wait_for("sendMessage", CITIZEN_EN, mark)
    assert summary.buttons()  # a draft of its own, not someone else's complaint
    assert await count(bot, Complaint) == 1


async def test_outbox_messages_for_a_telegram_citizen_carry_chat_scoped_ids(bot):
    code = await file_complaint(bot)
    complaint = await complaint_by_code(bot, code)

    async def sent_ids() -> dict[str, str]:
        async with bot.core.sessions() as session:
            rows = (await session.scalars(select(OutboxMessage).where(
                OutboxMessage.complaint_id == complaint.id, OutboxMessage.status == "sent"))).all()
        ids = {row.recipient: row.external_id for row in rows}
        return ids if {str(CITIZEN), str(OFFICER)} <= set(ids) else {}

    ids = await eventually(sent_ids)
    ack = bot.api.find("sendMessage", CITIZEN, where=lambda c: "Mã phản ánh" in c.text)[0]
    assert ids[str(CITIZEN)] == f"{CITIZEN}:{bot.api.message_of(ack)['message_id']}"
    assert ids[str(OFFICER)].startswith(f"{OFFICER}:")


async def test_an_album_gets_one_summary_kept_up_to_date(bot):
    api = bot.api
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, "Cây đổ chắn ngang đường Xuân Thủy sau cơn giông."))
    await api.wait_for("sendMessage", CITIZEN, mark)
    album = [api.photo_message(CITIZEN) for _ in range(3)]
    for update in album:
        update["message"]["media_group_id"] = "13579246801357924"
    mark = api.mark()
    for update in album:
        await api.deliver(update)
    summary = await api.wait_for("sendMessage", CITIZEN, mark)
    await api.wait_for("editMessageText", CITIZEN, mark, contains="Kèm theo: 3 ảnh/tệp.")
    assert len(api.find("sendMessage", CITIZEN, mark)) == 1
    edits = api.find("editMessageText", CITIZEN, mark)
    assert {int(e.params["message_id"]) for e in edits} == {api.message_of(summary)["message_id"]}
    assert [data for _, data in edits[-1].buttons()] == ["draft:send", "draft:edit", "draft:cancel"]


async def test_a_venue_and_someone_elses_contact_are_told_to_the_officer_but_reach_no_one(bot):
    api = bot.api
    for template in ("venue", "contact_other"):
        mark = api.mark()
        await api.deliver(api.message(CITIZEN, template=template))
        summary = await api.wait_for("sendMessage", CITIZEN, mark)
    assert "Chợ Đồng Xuân" in summary.text and "Liên hệ: Tổ trưởng dân phố +84987654321" in summary.text
    code = await file_complaint(bot, body="Lòng đường trước cổng chợ bị đào bới, không hoàn trả mặt đường.")
    complaint = await complaint_by_code(bot, code)
    assert complaint.text.startswith("Chợ Đồng Xuân, Đồng Xuân, Hoàn Kiếm, Hà Nội\nLòng đường")
    assert complaint.text.endswith("Liên hệ: Tổ trưởng dân phố +84987654321")
    assert (complaint.latitude, complaint.longitude) == (21.028511, 105.804817)
    # A number that is not the citizen's own becomes no way to reach them.
    assert complaint.alternate_contact_id is None
