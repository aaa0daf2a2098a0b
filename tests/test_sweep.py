"""The deadline sweep on a real database with an injected clock: reminders, apologies
exactly once per missed deadline, escalation to the unit head, catch-up after downtime."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

from bot import intake, lifecycle
from bot.clock import FrozenClock
from bot.core import Core
from service.assembly import open_core
from bot.sweep import sweep
from contract.messages import Inbound
from storage.models import Complaint, Event, OutboxMessage

HANOI = ZoneInfo("Asia/Ho_Chi_Minh")
PHONE = "+84912345678"
STAFF = {
    "units": [{"slug": "tiep-nhan", "name": "Bộ phận tiếp nhận"}, {"slug": "dien-luc", "name": "Điện lực Cầu Giấy"}],
    "staff": [
        {"slug": "truong", "name": "Trần Trưởng", "unit": "tiep-nhan", "role": "head", "telegram_chat_id": 1001},
        {"slug": "an", "name": "Lê An", "unit": "tiep-nhan", "role": "agent", "telegram_chat_id": 1002},
        {"slug": "binh", "name": "Phạm Bình", "unit": "tiep-nhan", "role": "agent", "email": "binh@example.gov.vn"},
        {"slug": "dl-head", "name": "Hoàng Điện", "unit": "dien-luc", "role": "head", "telegram_chat_id": 2001},
    ],
    "deadlines": {"first_response_hours": 16, "resolution_hours": 80, "remind_before_hours": 2,
                  "extension_hours": 8},
}


def local(*args) -> datetime:
    return datetime(*args, tzinfo=HANOI)


@pytest.fixture
async def staffed(make_core) -> Core:
    return await make_core(STAFF)


async def file(core: Core, external_id: str = "SM1", sender: str | None = PHONE, **kwargs) -> str:
    channel = "sms" if sender else "web"
    result = await intake.receive(core, Inbound(channel=channel, external_id=external_id, sender=sender,
                                                text="Đèn đường hỏng trước số 5 ngõ 12.",
                                                received_at=core.clock.now(), **kwargs))
    return result.tracking_code


async def outbox_rows(core: Core) -> list[OutboxMessage]:
    async with core.sessions() as session:
        return (await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()


async def kinds(core: Core) -> list[str]:
    async with core.sessions() as session:
        return (await session.scalars(select(Event.kind).order_by(Event.id))).all()


async def complaint(core: Core, code: str) -> Complaint:
    async with core.sessions() as session:
        return await session.scalar(select(Complaint).where(Complaint.tracking_code == code))


async def test_reminder_then_one_apology_and_escalation_per_missed_deadline(staffed):
    core, clock = staffed, staffed.clock
    code = await file(core)  # Monday 2 Nov 08:00; due Tuesday 17:00; reminder Tuesday 15:00
    assert (await complaint(core, code)).first_response_due == local(2026, 11, 3, 17, 0)
    clock.set(local(2026, 11, 2, 9, 0))
    assert (await sweep(core)).checked == 0

    clock.set(local(2026, 11, 3, 15, 30))
    assert (await sweep(core)).reminders == 1
    reminders = [m for m in await outbox_rows(core) if m.key.startswith("reminder:")]
    # No assignee yet: the unit's agents are reminded, each on their own channel.
    assert sorted((m.channel, m.recipient) for m in reminders) == [("email", "binh@example.gov.vn"),
                                                                   ("telegram", "1002")]
    assert code in reminders[0].payload["text"] and "17:00 ngày 03/11/2026" in reminders[0].payload["text"]
    assert (await sweep(core)).checked == 0  # reminded once

    clock.set(local(2026, 11, 3, 17, 1))
    first = await sweep(core)
    assert (first.apologies, first.escalations) == (1, 1)
    assert (await sweep(core)).checked == 0  # exactly once
    rows = await outbox_rows(core)
    [apology] = [m for m in rows if m.key.startswith("apology:")]
    assert (apology.channel, apology.recipient) == ("sms", PHONE)
    assert apology.payload["text"].startswith("Chúng tôi xin lỗi vì đã để Quý ông/bà chờ đợi.")
    # The new expected time: 8 working hours from Tuesday 17:01 is Wednesday 17:00.
    assert "17:00 ngày 04/11/2026" in apology.payload["text"]
    [escalation] = [m for m in rows if m.key.startswith("escalation:")]
    assert (escalation.channel, escalation.recipient) == ("telegram", "1001")
    stored = await complaint(core, code)
    assert stored.first_response_due == local(2026, 11, 4, 17, 0) and stored.escalation_count == 1

    # The new deadline is missed as well: a second apology and a second escalation.
    clock.set(local(2026, 11, 4, 17, 30))
    await sweep(core)
    rows = await outbox_rows(core)
    assert len([m for m in rows if m.key.startswith("apology:")]) == 2
    assert len([m for m in rows if m.key.startswith("escalation:")]) == 2
    assert (await complaint(core, code)).escalation_count == 2
    assert (await kinds(core)).count("apologised") == 2


async def test_officers_are_told_of_a_new_complaint_and_of_what_the_citizen_adds(staffed):
    core = staffed
    code = await file(core)
    rows = await outbox_rows(core)
    told = sorted((m.channel, m.recipient) for m in rows if m.key.startswith("new:"))
    assert told == [("email", "binh@example.gov.vn"), ("telegram", "1002")]
    new = next(m for m in rows if m.key.startswith("new:"))
    assert (new.payload["code"], new.payload["audience"], new.payload["kind"]) == (code, "staff", "new_complaint")
    assert "Đèn đường hỏng trước số 5 ngõ 12." in new.payload["text"]
    await lifecycle.assign(core, code, "an")
    await intake.receive(core, Inbound(channel="sms", external_id="SM2", sender=PHONE, text=f"{code} thêm: cột số 7",
                                       received_at=core.clock.now()))
    followups = [m for m in await outbox_rows(core) if m.key.startswith("followup-staff:")]
    assert [(m.channel, m.recipient) for m in followups] == [("telegram", "1002")]  # the assignee only
    assert followups[0].payload["text"].endswith(f"{code} thêm: cột số 7")


async def test_the_sweep_wakes_the_dispatcher_for_the_channels_it_queued_on(staffed):
    """A batch's signal names its messages' channels (as intake's does), so during a backlog the
    dispatcher claims for SMS and Telegram, not at every batch for each idle channel too; a
    sweep that queues nothing does not wake it at all."""
    core, clock = staffed, staffed.clock
    await file(core)
    clock.set(local(2026, 11, 3, 9, 0))
    core.outbox_ready.take()
    assert (await sweep(core)).checked == 0 and not core.outbox_ready.is_set()
    clock.set(local(2026, 11, 3, 17, 1))  # the deadline missed: an SMS apology, a Telegram escalation
    assert (await sweep(core)).apologies == 1
    assert core.outbox_ready.is_set() and core.outbox_ready.take() == {"sms", "telegram"}


async def test_an_answer_in_time_means_no_apology(staffed):
    core, clock = staffed, staffed.clock
    code = await file(core)
    clock.set(local(2026, 11, 3, 10, 0))
    await lifecycle.answer(core, code, "an", "Chúng tôi đã báo Công ty chiếu sáng, sẽ thay bóng trong tuần.")
    clock.set(local(2026, 11, 5, 10, 0))
    result = await sweep(core)
    assert result.apologies == 0 and result.reminders == 0
    assert not [m for m in await outbox_rows(core) if m.key.startswith(("apology:", "reminder:"))]


async def test_after_downtime_the_first_sweep_apologises_once_without_a_late_reminder(staffed):
    core, clock = staffed, staffed.clock
    codes = [await file(core, external_id=f"SM{i}", sender=f"+8491234{i:04d}") for i in range(5)]
    clock.set(local(2026, 11, 6, 10, 0))  # the service was down from Monday to Friday
    result = await sweep(core)
    assert (result.checked, result.apologies, result.reminders) == (5, 5, 0)
    assert (await sweep(core)).checked == 0
    keys = [m.key for m in await outbox_rows(core)]
    assert not [k for k in keys if k.startswith("reminder:")]
    assert len([k for k in keys if k.startswith("apology:")]) == len(codes)


async def test_resolution_deadline_escalates_to_the_head_without_apologising(staffed):
    core, clock = staffed, staffed.clock
    code = await file(core)
    await lifecycle.answer(core, code, "an", "Đã tiếp nhận, đang xử lý.")
    # 80 working hours from Monday 2 Nov 08:00 (Tuesday 24 Nov is a public holiday).
    due = (await complaint(core, code)).resolution_due
    clock.set(due + timedelta(minutes=5))
    result = await sweep(core)
    assert (result.apologies, result.escalations) == (0, 1)
    rows = await outbox_rows(core)
    assert [m.recipient for m in rows if m.key.startswith("resolution-overdue:")] == ["1001"]
    assert not [m for m in rows if m.key.startswith("apology:")]
    assert (await sweep(core)).checked == 0


async def test_a_resolved_complaint_is_left_alone(staffed):
    core, clock = staffed, staffed.clock
    code = await file(core)
    await lifecycle.resolve(core, code, "an", "Đã thay bóng đèn.")
    assert (await complaint(core, code)).next_check_at is None
    clock.advance(days=30)
    assert (await sweep(core)).checked == 0


async def test_anonymous_citizen_gets_no_message_but_the_head_is_told(staffed):
    core, clock = staffed, staffed.clock
    await file(core, external_id="f" * 32, sender=None)
    clock.set(local(2026, 11, 4, 9, 0))
    result = await sweep(core)
    assert result.apologies == 1
    rows = await outbox_rows(core)
    # Officers were told of the new complaint; the citizen, who left no address, gets nothing.
    assert [m.key.split(":")[0] for m in rows] == ["new", "new", "escalation"]
    assert {m.channel for m in rows} == {"telegram", "email"}


async def test_friday_afternoon_complaint_with_eight_hours_is_due_monday(make_config):
    clock = FrozenClock(local(2026, 11, 20, 16, 30))
    core = await open_core(make_config({"deadlines": {"first_response_hours": 8}}), clock=clock)
    try:
        code = await file(core)
        assert (await complaint(core, code)).first_response_due == local(2026, 11, 23, 16, 30)
    finally:
        await core.close()


async def test_a_complaint_filed_on_the_eve_of_tet_is_due_after_tet(make_config):
    clock = FrozenClock(local(2027, 2, 3, 16, 0))  # Wednesday; Tết holidays 4-10 February 2027
    core = await open_core(make_config({"deadlines": {"first_response_hours": 8}}), clock=clock)
    try:
        code = await file(core)
        assert (await complaint(core, code)).first_response_due == local(2027, 2, 11, 16, 0)
    finally:
        await core.close()


async def test_reassignment_recomputes_deadlines_records_it_and_tells_the_citizen(make_config, clock):
    config = make_config({**STAFF, "deadlines": {**STAFF["deadlines"], "overrides": [
        {"unit": "dien-luc", "first_response_hours": 4}]}})
    core = await open_core(config, clock=clock)
    try:
        code = await file(core)
        clock.set(local(2026, 11, 2, 10, 0))
        await lifecycle.reassign(core, code, "dien-luc", by="truong", reason="dung-don-vi")
        stored = await complaint(core, code)
        assert stored.unit_id == core.directory.unit_ids["dien-luc"]
        assert stored.first_response_due == local(2026, 11, 2, 15, 0)  # 4 working hours from 10:00
        assert (await kinds(core))[-1] == "reassigned"
        [told] = [m for m in await outbox_rows(core) if m.key.startswith("reassigned:")]
        assert "Điện lực Cầu Giấy" in told.payload["text"]
        # The new unit's head is the one told when it is missed.
        clock.set(local(2026, 11, 2, 15, 30))
        await sweep(core)
        assert [m.recipient for m in await outbox_rows(core) if m.key.startswith("escalation:")] == ["2001"]
    finally:
        await core.close()


async def test_two_processes_sweeping_at_once_apologise_exactly_once(make_config, clock):
    config = make_config(STAFF)
    cores = [await open_core(config, clock=clock) for _ in range(2)]
    try:
        for i in range(60):
            await file(cores[0], external_id=f"SM{i}", sender=f"+8491234{i:04d}")
        clock.set(local(2026, 11, 4, 9, 0))
        results = await asyncio.gather(*(sweep(core, batch_size=7) for core in cores))
        assert sum(r.apologies for r in results) == 60
        assert (await kinds(cores[0])).count("apologised") == 60
        apologies = [m for m in await outbox_rows(cores[0]) if m.key.startswith("apology:")]
        assert len(apologies) == 60 and len({m.recipient for m in apologies}) == 60
    finally:
        for core in cores:
            await core.close()


async def test_the_nothing_due_sweep_reads_an_index(staffed):
    core = staffed
    async with core.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            plan = (await connection.execute(text(
                "EXPLAIN QUERY PLAN SELECT * FROM complaints WHERE next_check_at <= '2026-01-01' "
                "ORDER BY next_check_at LIMIT 500"))).all()
            assert "ix_complaints_next_check_at" in " ".join(str(row[-1]) for row in plan)
        else:
            await connection.execute(text("SET enable_seqscan = off"))
            plan = (await connection.execute(text(
                "EXPLAIN SELECT * FROM complaints WHERE next_check_at <= '2026-01-01' "
                "ORDER BY next_check_at LIMIT 500"))).scalars().all()
            assert "ix_complaints_next_check_at" in " ".join(plan)


async def test_the_scheduler_in_the_running_service_sends_the_apology(make_config, clock):
    from tests.conftest import start_service

    running, runner = await start_service(make_config({**STAFF, "scheduler": {"sweep_seconds": 0.05}}),
                                          clock=clock)
    try:
        code = await file(running.core)
        clock.set(local(2026, 11, 4, 9, 0))
        for _ in range(100):
            if any(m.key.startswith("apology:") for m in await outbox_rows(running.core)):
                break
            await asyncio.sleep(0.05)
        assert [m.key for m in await outbox_rows(running.core) if m.key.startswith("apology:")]
        assert (await complaint(running.core, code)).escalation_count == 1
    finally:
        await runner.cleanup()


# Two real processes of the service's kind sweep the same store at once, released together.
SWEEPER = """
import asyncio, json, sys
from datetime import datetime
from bot.clock import FrozenClock
from service.config import parse_config
from bot.core import Core
from service.assembly import open_core
from bot.sweep import sweep

async def main(config, now):
    core = await open_core(parse_config(json.loads(config), {}), clock=FrozenClock(datetime.fromisoformat(now)), upgrade=False)
    print("ready", flush=True)
    sys.stdin.readline()
    result = await sweep(core, batch_size=5)
    print(json.dumps(vars(result)), flush=True)
    await core.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_two_service_processes_sweeping_at_once_apologise_exactly_once(make_core, make_config, clock):
    import json
    import subprocess
    import sys

    core = await make_core(STAFF)
    for i in range(40):
        await file(core, external_id=f"SM{i}", sender=f"+8491234{i:04d}")
    now = local(2026, 11, 4, 9, 0)
    config = json.dumps(make_config(STAFF).model_dump(mode="json"))
    workers = [subprocess.Popen([sys.executable, "-c", SWEEPER, config, now.isoformat()], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for worker in workers:
            assert await asyncio.to_thread(worker.stdout.readline) == "ready\n"
        for worker in workers:  # release both at once
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [json.loads(await asyncio.to_thread(worker.stdout.readline)) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
    assert sum(r["apologies"] for r in results) == 40
    assert (await kinds(core)).count("apologised") == 40
    apologies = [m for m in await outbox_rows(core) if m.key.startswith("apology:")]
    assert len(apologies) == 40 and len({m.recipient for m in apologies}) == 40


def _row_of(queued, now) -> dict:
    """An outbox row as ``outbox.enqueue_many`` writes a ``Queued``."""
    from bot.outbox import stored_reference

    message = queued.message
    return dict(key=message.key, reference=stored_reference(message.channel, message.key), channel=message.channel,
                recipient=message.recipient, complaint_id=queued.complaint_id,
                payload={**message.to_payload(), "render": queued.render},
                status="held" if queued.hold_until else "queued", attempts=0,
                next_attempt_at=queued.hold_until or now, created_at=now, fallback_of=None, unsure=False,
                resent=False)


@pytest.mark.parametrize("at", [local(2026, 11, 2, 9, 0), local(2026, 11, 2, 21, 0)],
                         ids=["working hours", "quiet hours"])
async def test_the_sweeps_rows_are_the_messages_to_citizen_and_to_staff_build(make_core, clock, at):
    """The sweep builds its messages as outbox rows straight (``messages.Composer``): each is
    the same, byte for byte once stored as JSON, as ``to_citizen``/``to_staff`` and
    ``enqueue_many`` make it, in both languages, on SMS and on email with a thread, with and
    without an assignee and a subject, urgent or not, and in quiet hours (held)."""
    import json

    from bot import messages, reach
    from bot.directory import StaffDirectory

    clock.set(local(2026, 11, 2, 8, 0))
    core = await make_core(STAFF)
    codes = [await file(core, "SM1"),
             await file(core, "SM2", sender="+84912345679", language="en"),
             await file(core, "M3", sender=None, reply_to=(("email", "dan@example.com"),), subject="Đèn đường")]
    await lifecycle.assign(core, codes[1], "an")
    clock.set(at)
    now = clock.now()
    async with core.sessions() as session:
        stored = (await session.scalars(select(Complaint).where(Complaint.tracking_code.in_(codes))
                                        .order_by(Complaint.id))).all()
        stored[0].urgency = "urgent"
        contacts = await reach.contacts_of(session, stored)
        plain = await reach.contacts_of(session, stored, plain=True)
        directory = await StaffDirectory.load(session)
        composer = messages.Composer(core, directory, now)
        expected = []
        for n, complaint in enumerate(stored):
            point = await reach.choose(core, session, contacts[complaint.id], "apology", now)
            [fast] = (await reach.choose_each(core, session, {complaint.id: plain[complaint.id]}, "apology",
                                              now)).values()
            assert point is not None and (fast.channel, fast.address, fast.via) == (point.channel, point.address,
                                                                                   point.via)
            thread = ["<m1@example.com>", "<m2@example.com>"] if point.channel == "email" else None
            due = messages.format_time(core, now, complaint.language)
            expected.append(_row_of(messages.to_citizen(core, complaint, point, f"apology:{n}", "citizen.apology",
                                                        thread, due=due), now))
            composer.to_citizen(complaint, fast, f"apology:{n}", "citizen.apology", thread, due=due)
            heads, agents = directory.heads_of(complaint), directory.assignees(complaint)
            params = dict(due="10:00 ngày 02/11/2026", new_due="17:00 ngày 03/11/2026", count=n + 1)
            expected += [_row_of(q, now) for q in messages.to_staff(core, directory, heads, f"escalation:{n}",
                                                                     "staff.escalation", complaint, **params)]
            assert composer.to_staff(heads, f"escalation:{n}", "staff.escalation", complaint, **params) == len(heads)
            expected += [_row_of(q, now) for q in messages.to_staff(core, directory, agents, f"closed:{n}",
                                                                     "staff.closed_no_reply", complaint)]
            composer.to_staff(agents, f"closed:{n}", "staff.closed_no_reply", complaint)
    assert {row["channel"] for row in expected} >= {"sms", "email", "telegram"}
    assert any(row["status"] == "held" for row in expected) == (at.hour >= 17)
    assert composer.rows == expected
    assert [json.dumps(row["payload"]) for row in composer.rows] == [json.dumps(row["payload"]) for row in expected]


async def test_rows_queued_in_bulk_keep_their_order_and_leave_a_key_already_queued_alone(staffed):
    """``outbox.enqueue_rows`` (the sweep's writes; one statement from arrays on PostgreSQL):
    a key already in the outbox is skipped, not doubled nor failed, and the rest keep the order
    given, as the dispatcher sends one recipient's messages in the order queued."""
    from bot import outbox

    core = staffed
    now = core.clock.now()

    def row(key: str, text_: str) -> dict:
        return dict(key=key, reference=f"ref-{key}", channel="sms", recipient=PHONE, complaint_id=None,
                    payload={"text": text_, "kind": "apology", "render": {"params": {"due": "hạn"}}},
                    status="queued", attempts=0, next_attempt_at=now, created_at=now, fallback_of=None,
                    unsure=False, resent=False)

    async with core.sessions() as session, session.begin():
        await outbox.enqueue_rows(session, [row("bulk:b", "first b")])
    async with core.sessions() as session, session.begin():
        await outbox.enqueue_rows(session, [row(f"bulk:{k}", f"second {k}") for k in "dcbae"])
    rows = [m for m in await outbox_rows(core) if m.key.startswith("bulk:")]
    assert [m.key for m in rows] == ["bulk:b", "bulk:d", "bulk:c", "bulk:a", "bulk:e"]
    assert rows[0].payload["text"] == "first b" and rows[1].payload["render"] == {"params": {"due": "hạn"}}
    assert rows[1].next_attempt_at == now and rows[1].unsure is False and rows[1].status == "queued"


async def test_times_are_written_out_as_strftime_wrote_them(core):
    """``messages.format_time`` writes a time out field by field (the sweep formats one a
    complaint): the same text strftime gave, in both languages, across two years of local
    times (every 37 minutes and 13 seconds: every minute of the hour, both sides of midnight
    and of every month's end), and "-" for no time."""
    from bot import messages

    zone = core.config.tz
    moment = datetime(2025, 12, 31, 16, 59, 47, tzinfo=ZoneInfo("UTC"))
    checked = 0
    while moment.year < 2028:
        local = moment.astimezone(zone)
        assert messages.format_time(core, moment, "vi") == local.strftime("%H:%M ngày %d/%m/%Y"), moment
        assert messages.format_time(core, moment, "en") == local.strftime("%d %b %Y, %H:%M"), moment
        moment += timedelta(minutes=37, seconds=13)
        checked += 1
    assert checked > 28_000
    assert messages.format_time(core, None, "vi") == "-"
