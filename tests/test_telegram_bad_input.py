"""What Telegram may send besides a well-formed complaint: stickers and voice notes, service
messages, huge captions, edits, groups the bot was added to, channel posts, forged or
stale buttons, unknown commands, and the same update twice. Each is answered politely or
left alone; none crashes the bot or files a complaint it should not.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot import citizens
from bot.outbox import enqueue
from contract.messages import Outgoing
from storage.models import Complaint, Message
from tests.telegram_fake import (  # noqa: F401
    CITIZEN,
    OFFICER,
    OTHER_OFFICER,
    BotWorld,
    bot,
    bot_env,
    eventually,
    fake_api,
    fixture,
    start_bot,
)
from tests.test_telegram_citizen import COMPLAINT, complaint_by_code, count, file_complaint

GROUP = fixture("group_text")["message"]["chat"]["id"]
STATUS_ANSWERS = ("Các phản ánh của Quý ông/bà:", "Quý ông/bà chưa gửi phản ánh nào")


async def answer_to(world: BotWorld, update: dict, chat_id: int = CITIZEN) -> str:
    api = world.api
    mark = api.mark()
    await api.deliver(update)
    return (await api.wait_for("sendMessage", chat_id, mark)).text


async def settled(world: BotWorld, chat_id: int = CITIZEN) -> int:
    """Deliver a /status after whatever came before; polling handles updates in order, so its
    answer means the earlier ones were handled. Returns the mark from before the probe."""
    api = world.api
    mark = api.mark()
    await api.deliver(api.message(chat_id, "/status"))
    await api.wait_for("sendMessage", chat_id, mark, where=lambda c: c.text.startswith(STATUS_ANSWERS))
    return mark


@pytest.mark.parametrize("template", ["sticker", "voice"])
async def test_messages_without_text_get_a_polite_please_write(bot, template):
    answer = await answer_to(bot, bot.api.message(CITIZEN, template=template))
    assert answer.startswith("Xin lỗi, chúng tôi chưa nhận được loại tin nhắn này.")
    assert await citizens.load_draft(bot.core, "telegram", str(CITIZEN)) is None


async def test_a_service_message_is_left_alone(bot):
    api = bot.api
    mark = api.mark()
    await api.deliver(api.message(CITIZEN, template="pinned"))
    await settled(bot)
    assert len(api.find("sendMessage", CITIZEN, mark)) == 1  # only the probe's answer


async def test_huge_text_and_captions_are_cut_to_the_complaint_limit(bot):
    api = bot.api
    huge = "Nước thải tràn ra đường. " * 400  # 10 000 characters: more than Telegram itself allows
    summary = await answer_to(bot, api.message(CITIZEN, huge))
    assert "Nội dung quá dài: chúng tôi giữ 4000 ký tự đầu." in summary and len(summary) <= 4096
    mark = api.mark()
    await api.deliver(api.photo_message(CITIZEN, caption="Ảnh " * 2000))
    summary_call = await api.wait_for("sendMessage", CITIZEN, mark)
    mark = api.mark()
    await api.deliver(api.press(CITIZEN, api.message_of(summary_call), "draft:send"))
    ack = await api.wait_for("sendMessage", CITIZEN, mark, contains="Mã phản ánh")
    complaint = await complaint_by_code(bot, ack.text.split("Mã phản ánh: ")[1].split(".")[0])
    assert len(complaint.text) <= 4000 and complaint.text.startswith("Nước thải tràn ra đường.")


async def test_control_characters_never_reach_the_store(bot):
    code = await file_complaint(bot, body="Cống\x00 vỡ\x07 ở ngõ 5 phố Kim Mã,\u200b nước tràn lên vỉa hè.")
    complaint = await complaint_by_code(bot, code)
    assert "\x00" not in complaint.text and "\x07" not in complaint.text


async def test_an_edit_changes_the_draft_but_never_a_filed_complaint(bot):
    api = bot.api
    original = api.message(CITIZEN, "Đèn đường ngõ 12 hỏng")
    await answer_to(bot, original)
    summary = await answer_to(bot, api.edited(original, "Đèn đường ngõ 21 phố Trần Duy Hưng hỏng ba hôm nay"))
    assert "ngõ 21 phố Trần Duy Hưng" in summary and "ngõ 12" not in summary
    mark = api.mark()
    await api.deliver(api.press(CITIZEN, api.message_of(api.find("sendMessage", CITIZEN)[-1]), "draft:send"))
    ack = await api.wait_for("sendMessage", CITIZEN, mark, contains="Mã phản ánh")
    code = ack.text.split("Mã phản ánh: ")[1].split(".")[0]
    late = await answer_to(bot, api.edited(original, "Thôi, không cần nữa"))
    assert late.startswith("Tin nhắn đã sửa không được cập nhật")
    assert (await complaint_by_code(bot, code)).text == "Đèn đường ngõ 21 phố Trần Duy Hưng hỏng ba hôm nay"


async def test_groups_the_bot_was_added_to(bot):
    api = bot.api
    api.known_chats.add(GROUP)
    notice = await answer_to(bot, api.added_to_group(GROUP, by=CITIZEN), GROUP)
    assert notice.startswith("Kênh này chỉ tiếp nhận phản ánh trong cuộc trò chuyện riêng.")
    assert (await answer_to(bot, api.message(GROUP, "/start@phananh_hanoi_bot", sender=CITIZEN), GROUP)) == notice
    mark = api.mark()
    await api.deliver(api.message(GROUP, template="group_text", sender=CITIZEN))
    await api.deliver(api.message(GROUP, "/start@another_bot", sender=CITIZEN))  # for another bot in the group
    await api.deliver(api.message(GROUP, "Xin hỏi PA-7KQ4-M9XS thế nào rồi", sender=CITIZEN))
    await settled(bot)
    assert not api.find("sendMessage", GROUP, mark)
    assert await count(bot, Complaint) == 0 and await citizens.load_draft(bot.core, "telegram", str(GROUP)) is None


async def test_an_officer_in_a_group_that_is_no_units_gets_no_case_there(bot):
    api = bot.api
    api.known_chats.add(GROUP)
    code = await file_complaint(bot)
    for command in (f"/case {code}", f"/reply {code} Đã xử lý", "/mine"):
        answer = await answer_to(bot, api.message(GROUP, command, sender=OFFICER), GROUP)
        assert answer.startswith("Kênh này chỉ tiếp nhận phản ánh") and code not in answer
    assert (await complaint_by_code(bot, code)).status == "new"


async def test_a_channel_post_and_an_unknown_update_are_ignored(bot):
    api = bot.api
    mark = api.mark()
    await api.deliver(fixture("channel_post"))
    await api.deliver(fixture("poll"))  # a kind of update the bot never asked for
    await settled(bot)
    assert [c.chat_id for c in api.find("sendMessage", after=mark)] == [CITIZEN]


@pytest.mark.parametrize("data", ["draft:explode", "nonsense", "", "claim:not-a-code", "lang:fr",
                                  "rate:PA-7KQ4-M9XS:9", "move:PA-7KQ4-M9XS"])
async def test_forged_or_stale_buttons_are_answered_and_change_nothing(bot, data):
    api = bot.api
    await answer_to(bot, api.message(CITIZEN, "/lang"))
    prompt = api.message_of(api.find("sendMessage", CITIZEN)[-1])
    answered = await api.pressed(api.press(CITIZEN, prompt, data, check=False))
    assert answered.params.get("text")  # always an answer, so the button stops spinning
    assert await count(bot, Complaint) == 0


async def test_a_button_on_a_complaint_the_officer_may_not_touch(bot):
    api = bot.api
    code = await file_complaint(bot)
    note = await api.wait_for("sendMessage", OFFICER, contains=code, where=lambda c: bool(c.buttons()))
    for action in ("claim", "reply", "reassign", "resolve", "done"):
        refused = await api.pressed(api.press(OTHER_OFFICER, api.message_of(note), f"{action}:{code}", check=False))
        assert refused.params["show_alert"] == "true" and "thuộc đơn vị khác" in refused.params["text"], \
            (action, refused.params)
    await api.pressed(api.press(OTHER_OFFICER, api.message_of(note), f"move:{code}:quan-ly-do-thi", check=False))
    complaint = await complaint_by_code(bot, code)
    assert (complaint.status, complaint.assignee_id) == ("new", None)
    assert bot.core.directory.unit_slug(complaint.unit_id) == "tiep-nhan"
    assert not api.find("sendMessage", OTHER_OFFICER)


async def test_unknown_commands_get_help(bot):
    assert (await answer_to(bot, bot.api.message(CITIZEN, "/xoa_het"))).startswith("Lệnh không đúng.")
    assert (await answer_to(bot, bot.api.message(OFFICER, "Chào"), OFFICER)).startswith("Để trả lời người dân")


async def test_the_same_update_twice_is_one_message(bot):
    api = bot.api
    code = await file_complaint(bot)
    followup = api.message(CITIZEN, f"{code}: rác lại bị đổ thêm tối qua.")
    mark = api.mark()
    await api.deliver(followup)
    await api.deliver(followup)  # Telegram delivers again what it thinks was not received
    await settled(bot)
    complaint = await complaint_by_code(bot, code)
    async with bot.core.sessions() as session:
        texts = (await session.scalars(select(Message.text).where(Message.complaint_id == complaint.id))).all()
    assert texts.count(f"{code}: rác lại bị đổ thêm tối qua.") == 1
    assert len(api.find("sendMessage", CITIZEN, mark, where=lambda c: "đã bổ sung" in c.text)) <= 1
    draft = api.message(CITIZEN, COMPLAINT)
    await api.deliver(draft)
    await api.deliver(draft)
    await settled(bot)
    stored = await citizens.load_draft(bot.core, "telegram", str(CITIZEN))
    assert [part["text"] for part in stored["parts"]] == [COMPLAINT]


async def test_a_survey_gets_rating_buttons_and_a_press_is_the_citizens_answer(bot):
    api = bot.api
    code = await file_complaint(bot)
    complaint = await complaint_by_code(bot, code)
    async with bot.core.sessions() as session, session.begin():
        await enqueue(session, bot.core.clock.now(), Outgoing(
            key=f"survey:{complaint.id}", channel="telegram", recipient=str(CITIZEN), language="vi",
            text=bot.core.texts.get("vi", "citizen.survey", code=code), tracking_code=code, kind="survey",
            actions=("rate",)), complaint.id)
    bot.core.outbox_ready.set()
    survey = await api.wait_for("sendMessage", CITIZEN, contains="mức độ hài lòng")
    assert [data for _, data in survey.buttons()] == [f"rate:{code}:{n}" for n in range(1, 6)] + [f"notfixed:{code}"]
    message = api.message_of(survey)
    mark = api.mark()
    await api.deliver(api.press(CITIZEN, message, f"rate:{code}:5"))
    thanks = await api.wait_for("editMessageText", CITIZEN, mark)
    assert thanks.params["text"].endswith("Cảm ơn Quý ông/bà đã đánh giá 5/5.")
    await api.deliver(api.press(CITIZEN, message, f"rate:{code}:1", check=False))  # a stale second press
    await settled(bot)

    async def ratings() -> list[str]:
        async with bot.core.sessions() as session:
            return (await session.scalars(select(Message.text).where(Message.complaint_id == complaint.id,
                                                                     Message.channel == "telegram",
                                                                     Message.external_id.like("%:rating")))).all()

    assert await eventually(ratings) == ["5"]
    # Only the citizen can rate, in their own chat: a press from anyone else is forged.
    forged = await api.pressed(api.press(CITIZEN, message, f"rate:{code}:1", sender=OTHER_OFFICER + 9, check=False))
    assert "text" not in forged.params
    assert await ratings() == ["5"]
