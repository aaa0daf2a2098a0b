"""Incidents end to end: thirty reports of one power cut, over SMS (signed gateway
webhooks to a fake operator), Telegram (the fake Bot API), email (smtplib to the running
SMTP server, answers through a sink relay) and the web form, in ten minutes, become one
incident. The deadline passes: one apology per reporter and one escalation, not thirty.
The officer answers once, on Telegram: every citizen gets the answer on their own channel,
once. A reporter's follow-up stays on their own complaint. Staff merge and split, with
the history on both sides; a reply to a merged complaint lands under the survivor.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace
from datetime import date, datetime, timezone

import aiohttp
import pytest
from sqlalchemy import select

from bot import digests, reports, sweep
from storage.models import Complaint, Event, Incident, Message, OutboxMessage
from channels.email import MAIL_SERVER
from tests.conftest import get_form, merge, start_service
from tests.telegram_fake import (  # noqa: F401
    HEAD,
    OFFICER,
    bot_env,
    eventually,
    fake_api,
    telegram_overrides,
)
from tests.test_email_support import OURS, SinkRelay, email_config, new_mail, smtp_send
from tests.test_sms_support import SECRETS, FakeOperator, gateways, generic_headers
from tests.test_telegram_citizen import file_complaint

ANSWER = "Điện lực Cầu Giấy đã thay máy biến áp ở chợ Nghĩa Tân, điện có lại từ 11 giờ."
SMS_TEXTS = ["mat dien o nghia tan", "Mat dien khu A Nghia Tan, nha co nguoi gia", "MAT DIEN NGHIA TAN TU 8H",
             "nghia tan mat dien r, ko ai thong bao j", "Mất điện ở Nghĩa Tân cả khu", "mat dienn khu tap the nghia tan",
             "cup dien o nghia tan, to hieu", "Nghia Tan mat dien hon 30 phut roi", "ko co dien, nha b3 nghia tan",
             "mat dien tap the nghia tan, bao gio co lai"]
TELEGRAM_TEXTS = ["Khu tập thể Nghĩa Tân vừa mất điện, có tiếng nổ ở trạm biến áp cạnh chợ",
                  "mất điện ở Nghĩa Tân ạ", "Power cut in Nghia Tan since this morning, any news?",
                  "Nghĩa Tân mất điện gần 1 tiếng rồi mọi người ơi", "cúp điện ở Nghĩa Tân, tủ lạnh hỏng hết",
                  "Ở P. Nghĩa Đô (Nghĩa Tân cũ) mất điện", "Mất điện khu C4 Nghĩa Tân", "mat dien o nghia tan nha"]
EMAILS = ["Kính gửi UBND phường Nghĩa Đô, khu tập thể Nghĩa Tân mất điện từ 8 giờ 25 sáng nay.",
          "Chào anh chị, khu vực Nghĩa Tân mất điện từ hơn 8h sáng, xin hỏi khi nào có điện?",
          "Nhà tôi ở phố Nghĩa Tân bị mất điện từ sáng đến giờ vẫn chưa có.",
          "Power outage in Nghia Tan ward since 8:30, my mother is on the 5th floor.",
          "Khu nhà E Nghĩa Tân mất điện, cửa hàng không thanh toán thẻ được.",
          "Đề nghị điện lực kiểm tra gấp: toàn bộ khu Nghĩa Tân mất điện."]
WEB = [("Mất điện toàn bộ khu nhà C4, C5 tập thể Nghĩa Tân.", "P. Nghĩa Tân"),
       ("mat dien ca khu, dien thoai sap het pin", "phuong nghia tan"),
       ("Mất điện gần 30 phút rồi, tủ lạnh đồ ăn cho con sắp hỏng.", "Nghĩa Tân - Cầu Giấy"),
       ("Mất điện khu tập thể, con tôi đang ốm.", "Nghĩa Tân, Cầu Giấy"),
       ("Power cut since this morning, the lift is not working.", "Nghia Tan"),
       ("Mất điện từ sáng, không có thông báo cắt điện trước.", "Nghĩa Tân (nay là phường Nghĩa Đô)")]
FIRST_TELEGRAM = 5001


@pytest.fixture
async def world(make_config, fake_api, bot_env, clock, monkeypatch):
    """The service with Telegram, SMS (generic gateway), email and the web form, grouping on."""
    operator = await FakeOperator().start()
    relay = await SinkRelay().start()
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    config = make_config(merge(merge(telegram_overrides(fake_api), email_config(relay)), {
        "sms": {"gateways": gateways(operator.url, ("nha-mang",))}, "incidents": {"enabled": True}}),
        {**bot_env, **SECRETS})
    running, runner = await start_service(config, clock=clock)
    fake_api.deliver_to = running.url
    fake_api.known_chats.update({OFFICER, HEAD})
    yield running, fake_api, operator, relay
    await runner.cleanup()
    await relay.stop()
    await operator.stop()


async def sms_in(running, number: int, text: str, clock) -> None:
    body = json.dumps({"id": f"vt-{number}-{clock.now().timestamp():.0f}", "from": f"8491{number:07d}",
                       "to": "UBND.HN", "text": text, "received_at": clock.now().isoformat()}).encode()
    async with aiohttp.ClientSession() as http, http.post(f"{running.url}/webhooks/sms/nha-mang", data=body,
                                                          headers=generic_headers(body)) as response:
        assert response.status == 200, await response.text()


async def web_in(running, text: str, area: str) -> str:
    async with running.client() as client:
        form = dict(await get_form(client), text=text, area=area, category="", name="", phone="", email="")
        async with client.post("/", data=form, allow_redirects=False) as response:
            assert response.status == 303
            return response.headers["Location"].split("/track/")[1].split("?")[0]


async def complaints(core) -> list[Complaint]:
    async with core.sessions() as session:
        return list((await session.scalars(select(Complaint).order_by(Complaint.id))).all())


async def outbox(core, prefix: str) -> list[OutboxMessage]:
    async with core.sessions() as session:
        return list((await session.scalars(select(OutboxMessage).where(OutboxMessage.key.like(f"{prefix}%")))).all())


async def thirty_reports(running, api, clock) -> None:
    """Ten SMS, eight Telegram chats, six emails and six web forms, one every twenty seconds."""
    chats = SimpleNamespace(api=api)  # what tests.test_telegram_citizen.file_complaint drives

    channels = ([("sms", t) for t in SMS_TEXTS] + [("telegram", t) for t in TELEGRAM_TEXTS]
                + [("email", t) for t in EMAILS] + [("web", t) for t in WEB])
    order = [channels[i] for i in sorted(range(30), key=lambda i: (i % 4, i))]  # channels interleaved
    order.sort(key=lambda item: item[0] != "sms")  # a power cut is first reported by SMS here
    for n, (channel, item) in enumerate(order):
        if channel == "sms":
            await sms_in(running, n, item, clock)
        elif channel == "telegram":
            await file_complaint(chats, chat_id=FIRST_TELEGRAM + n, body=item)
        elif channel == "email":
            raw = new_mail(f"dan{n}@example.vn", "Mất điện", item, f"<m{n}@example.vn>")
            await asyncio.to_thread(smtp_send, running.app[MAIL_SERVER].port, raw, f"dan{n}@example.vn", [OURS])
        else:
            await web_in(running, *item)
        clock.advance(seconds=20)


async def test_thirty_reports_of_one_outage_are_one_incident_answered_once(world, clock):
    running, api, operator, relay = world
    core = running.core
    await thirty_reports(running, api, clock)

    stored = await complaints(core)
    assert len(stored) == 30 and Counter(c.channel for c in stored) == {"sms": 10, "telegram": 8, "email": 6,
                                                                        "web": 6}
    assert len({c.incident_id for c in stored}) == 1 and stored[0].incident_id is not None, [(c.channel, c.text[:60], c.match_topic, c.match_place) for c in stored if c.incident_id is None]
    lead, riders = stored[0], stored[1:]
    assert lead.incident_role == "lead" and {c.incident_role for c in riders} == {"member"}
    # One deadline: the first report's; the members owe the sweep nothing of their own.
    assert {c.first_response_due for c in stored} == {lead.first_response_due}
    assert all(c.next_check_at is None for c in riders) and lead.next_check_at is not None
    async with core.sessions() as session:
        joins = (await session.scalars(select(Event).where(Event.kind == "incident_joined"))).all()
        [incident] = (await session.scalars(select(Incident))).all()
    assert len(joins) == 29 and all(e.detail["score"] >= 0.8 and e.detail["reasons"] for e in joins)
    assert incident.lead_complaint_id == lead.id
    # Every citizen with a way back has their own tracking code and hears the unit is on it.
    acks = await outbox(core, "ack:")
    assert len(acks) == 24 and len({a.payload["code"] for a in acks}) == 24
    joined_acks = [a for a in acks if a.complaint_id != lead.id]
    assert all("sự việc này" in a.payload["text"] and "phản ánh)" in a.payload["text"] for a in joined_acks)
    # The officer hears of the first report and of the incident, not of thirty complaints.
    notes = [c for c in api.find("sendMessage", OFFICER)]
    assert len([c for c in notes if c.text.startswith("Phản ánh mới")]) == 1
    assert len([c for c in notes if c.text.startswith("Sự cố #")]) == 1

    # The deadline passes unanswered: one apology per reporter, one escalation to the head.
    clock.advance(days=2)
    for _ in range(2):
        await sweep.sweep(core)
    apologies = await outbox(core, "apology:")
    assert len(apologies) == 24 and len({a.complaint_id for a in apologies}) == 24
    assert len(await outbox(core, "escalation:")) == 1

    # The officer answers once, replying to the first report's notification on Telegram.
    note = next(c for c in notes if c.text.startswith("Phản ánh mới"))
    mark = api.mark()
    await api.deliver(api.message(OFFICER, ANSWER, reply_to=api.message_of(note)))
    await api.wait_for("sendMessage", OFFICER, mark, contains="Đã gửi trả lời")

    async def answered() -> bool:
        rows = await outbox(core, "answer:")
        return len(rows) == 24 and all(r.status == "sent" for r in rows)

    await eventually(answered, timeout=30)
    # Each on their own channel, once: ten phones, eight chats, six mailboxes, six status pages.
    sms = Counter(d.to for d in operator.delivered if ANSWER in d.text)
    assert len(sms) == 10 and set(sms.values()) == {1}
    chats = Counter(c.chat_id for c in api.find("sendMessage", after=mark) if ANSWER in c.text and c.chat_id != OFFICER)
    assert len(chats) == 8 and set(chats.values()) == {1}
    mails = Counter(tuple(m.rcpt_tos) for m in relay.mails if ANSWER in m.text)
    assert len(mails) == 6 and set(mails.values()) == {1}
    async with running.client() as client:
        for complaint in (c for c in stored if c.channel == "web"):
            async with client.get(f"/track/{complaint.tracking_code}") as response:
                assert ANSWER in await response.text()
    assert {c.status for c in await complaints(core)} == {"answered"}

    # A reporter's follow-up stays on their own complaint, and the officer is told.
    member = next(c for c in riders if c.channel == "sms")
    clock.advance(minutes=5)
    mark = api.mark()
    number = next(int(d.to[-7:]) for d in operator.delivered if member.tracking_code in d.text)
    await sms_in(running, number, "Van chua co dien nhe, nha em van toi", clock)
    async with core.sessions() as session:
        followup = await session.scalar(select(Message).where(Message.text == "Van chua co dien nhe, nha em van toi"))
    assert followup.complaint_id == member.id
    await api.wait_for("sendMessage", OFFICER, mark, contains=member.tracking_code)

    # Counting: the incident is one answer in the unit's figures, shown with its 30 reports.
    clock.set(datetime(2026, 11, 9, 3, 0, tzinfo=timezone.utc))  # Monday after: last week's digest
    async with core.sessions() as session, session.begin():
        digest = await digests.compose(core, session, "tiep-nhan",
                                       digests.period_for("weekly", clock.now(), core.config.tz), clock.now())
    figures = digest.figures.period
    assert (figures.new, figures.answered, figures.incidents, figures.incident_reports) == (30, 1, 1, 30)
    assert "Sự cố: 1, gồm 30 phản ánh" in digest.text
    [unit] = [line for line in await reports.scorecard(core) if line.slug == "tiep-nhan"]
    assert unit.scores[30].answered == 1
    rows = [row async for row in reports.complaints(core, reports.Selection(date(2026, 11, 2), date(2026, 11, 2)))]
    assert len(rows) == 30 and {row["incident"] for row in rows} == {lead.incident_id}


async def test_staff_merge_and_split_keep_history_and_replies_land_under_the_survivor(world, clock):
    running, api, operator, _ = world
    core = running.core
    # Three reports the matcher keeps apart: different wards.
    for n, text in enumerate(["Mất điện ở Dịch Vọng", "Mất điện ở Nghĩa Tân", "Ổ gà to trên phố Tô Hiệu"]):
        await sms_in(running, 100 + n, text, clock)
        clock.advance(minutes=2)
    first, second, third = await complaints(core)
    assert first.incident_id is None and second.incident_id is None and third.incident_id is None
    mark = api.mark()
    await api.deliver(api.message(OFFICER, f"/merge {first.tracking_code} {second.tracking_code} "
                                           f"{third.tracking_code}"))
    shown = await api.wait_for("sendMessage", OFFICER, mark, contains="Sự cố #")
    assert "3 phản ánh" in shown.text and first.tracking_code in shown.text
    first, second, third = await complaints(core)
    assert first.incident_id == second.incident_id == third.incident_id and first.incident_role == "lead"
    assert second.first_response_due == first.first_response_due

    # A reply to a merged complaint lands on it, under the survivor incident.
    mark = api.mark()
    await sms_in(running, 101, "Van mat dien", clock)
    async with core.sessions() as session:
        reply = await session.scalar(select(Message).where(Message.text == "Van mat dien"))
    assert reply.complaint_id == second.id
    await api.wait_for("sendMessage", OFFICER, mark, contains=second.tracking_code)

    mark = api.mark()
    await api.deliver(api.message(OFFICER, f"/split {third.tracking_code}"))
    await api.wait_for("sendMessage", OFFICER, mark, contains=third.tracking_code)
    first, second, third = await complaints(core)
    assert third.incident_id is None and first.incident_id == second.incident_id
    assert third.next_check_at is not None  # its own deadline again
    async with core.sessions() as session:
        kinds = {(c, k) for c, k in (await session.execute(select(Event.complaint_id, Event.kind))).all()}
    assert {(third.id, "incident_joined"), (third.id, "incident_split"), (first.id, "incident_split_off"),
            (first.id, "incident_merged_in")} <= kinds
    # An officer of another unit may not merge what is not theirs; a citizen never may.
    mark = api.mark()
    await api.deliver(api.message(7777, f"/merge {first.tracking_code} {third.tracking_code}"))
    await asyncio.sleep(0.3)
    first_after, _, third_after = await complaints(core)
    assert third_after.incident_id is None


async def test_a_suggestion_offers_join_and_keep_separate_and_join_works(world, clock):
    running, api, operator, _ = world
    core = running.core
    await sms_in(running, 200, "Mất điện ở Nghĩa Tân", clock)
    clock.advance(minutes=3)
    await sms_in(running, 201, "mat dien roi, ca khu toi om", clock)  # names no place: only suggested
    first, second = await complaints(core)
    assert second.incident_id is None
    suggestion = await api.wait_for("sendMessage", OFFICER, contains="có vẻ", where=lambda c: bool(c.buttons()))
    buttons = dict((data.split(":")[0], data) for _, data in suggestion.buttons())
    assert buttons["ijoin"] == f"ijoin:{second.tracking_code}:{first.tracking_code}"
    assert buttons["isep"] == f"isep:{second.tracking_code}:{first.tracking_code}"
    mark = api.mark()
    await api.deliver(api.press(OFFICER, api.message_of(suggestion), buttons["ijoin"]))
    await eventually(lambda: _joined(core, second.id))
    first, second = await complaints(core)
    assert first.incident_id == second.incident_id and first.incident_role == "lead"


async def _joined(core, complaint_id: int) -> bool:
    async with core.sessions() as session:
        return (await session.get(Complaint, complaint_id)).incident_id is not None


async def test_the_incident_moves_whole_to_another_unit_and_resolves_whole(make_core, clock):
    from bot import intake, lifecycle  # noqa: PLC0415 - the domain's own entry points, no channel needed here
    from contract.messages import Inbound  # noqa: PLC0415

    core = await make_core({"incidents": {"enabled": True},
                            "units": [{"slug": "tiep-nhan", "name": "Bộ phận tiếp nhận"},
                                      {"slug": "dien-luc", "name": "Điện lực Cầu Giấy"}],
                            "staff": [{"slug": "an", "name": "An", "unit": "tiep-nhan"},
                                      {"slug": "binh", "name": "Bình", "unit": "dien-luc"}]})
    codes = []
    for n, text in enumerate(["Mất điện ở Nghĩa Tân", "mat dien khu nghia tan", "Nghĩa Tân mất điện cả khu"]):
        result = await intake.receive(core, Inbound(channel="sms", external_id=f"move-{n}", sender=f"+8491200000{n}",
                                                    text=text, received_at=clock.now()))
        codes.append(result.tracking_code)
        clock.advance(minutes=1)
    await lifecycle.reassign(core, codes[1], "dien-luc", by="an", reason="dung-don-vi")  # from a member: the whole incident moves
    stored = await complaints(core)
    assert {c.unit_id for c in stored} == {core.directory.unit_ids["dien-luc"]}
    assert len({c.first_response_due for c in stored}) == 1
    assert len(await outbox(core, "reassigned:")) == 3
    await lifecycle.resolve(core, codes[0], "binh", "Đã có điện lại từ 11 giờ.")
    stored = await complaints(core)
    assert {c.status for c in stored} == {"resolved"}
    assert len(await outbox(core, "survey:")) == 3 and len(await outbox(core, "answer:")) == 3


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=60)


async def test_incident_test_merge_split_and_show_from_the_command_line(tmp_path, make_config, database_url):
    from bot import intake  # noqa: PLC0415 - filing straight into the store the command reads
    from bot.clock import SystemClock  # noqa: PLC0415
    from contract.messages import Inbound  # noqa: PLC0415
    from service.assembly import open_core  # noqa: PLC0415

    config = tmp_path / "feedback.toml"
    config.write_text(f'[storage]\nurl = "{database_url}"\n', encoding="utf-8")
    core = await open_core(make_config({"incidents": {"enabled": True}}), clock=SystemClock())  # the command's now
    try:
        codes = [(await intake.receive(core, Inbound(channel="sms", external_id=f"cli-{n}", sender=f"+849130000{n}",
                                                      text=text, received_at=core.clock.now()))).tracking_code
                 for n, text in enumerate(["Mất điện ở Nghĩa Tân", "Ổ gà trên phố Tô Hiệu"])]
    finally:
        await core.close()
    shown = cli("incident-test", "mat dien khu tap the nghia tan", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "event:  power" and "nghia tan" in lines[1] and "window 720 min" in lines[2]
    assert any(line.strip().startswith(("1.00", "0.9", "0.8")) and codes[0] in line and "event: power" in line
               for line in lines)
    assert lines[-1] == f"result: would join {codes[0]}"
    assert cli("incident-test", "Đề nghị cấp lại sổ đỏ", "--config", str(config)).stdout.splitlines()[-1] \
        == "result: a complaint of its own"

    merged = cli("incident", "merge", codes[0], codes[1], "--config", str(config))
    assert merged.returncode == 0 and "2 reports, lead " + codes[0] in merged.stdout, merged.stderr
    assert codes[1] in cli("incident", "show", codes[1], "--config", str(config)).stdout
    assert cli("incident", "split", codes[1], "--config", str(config)).stdout.strip() == "no incident"
    assert cli("incident", "show", codes[0], "--config", str(config)).stdout.strip() == "no incident"
    refused = cli("incident", "merge", codes[0], "--config", str(config))
    assert refused.returncode == 2 and "two codes or more" in refused.stderr
    unknown = cli("incident", "split", "PA-2345-6789", "--config", str(config))
    assert unknown.returncode == 1 and "no complaint" in unknown.stderr
