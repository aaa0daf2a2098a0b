"""Intake: dedupe, threading, new complaints and reopening, on a real database."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from bot import intake
from bot.tracking import find_codes
from contract.messages import Attachment, Inbound
from storage.models import Attachment as StoredAttachment
from storage.models import Complaint, Event, Message, OutboxMessage
from tests.conftest import plan_of, statements

TEXT = "Mất điện cả khu tập thể từ sáng, đề nghị kiểm tra gấp."
PHONE = "+84912345678"


def sms(core, text=TEXT, sender=PHONE, external_id="SM1", **kwargs) -> Inbound:
    """An SMS as the SMS channel hands it in (with its default follow-up window of 72 hours)."""
    kwargs.setdefault("continues_within_hours", 72.0)
    return Inbound(channel="sms", external_id=external_id, sender=sender, text=text,
                   received_at=core.clock.now(), **kwargs)


async def rows(core, model, *where):
    async with core.sessions() as session:
        return (await session.scalars(select(model).where(*where).order_by(model.id))).all()


async def test_new_complaint_is_filed_with_code_unit_deadline_and_acknowledgement(core):
    result = await intake.receive(core, sms(core))
    assert result.outcome == "created"
    assert find_codes(result.tracking_code, "PA") == [result.tracking_code]
    [complaint] = await rows(core, Complaint)
    assert complaint.tracking_code == result.tracking_code
    assert complaint.unit_id == core.directory.unit_ids["tiep-nhan"]
    assert complaint.status == "new"
    # Filed Monday 08:00 in Hà Nội; 8 working hours later is Monday 17:00 (10:00 UTC).
    assert complaint.first_response_due == datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)
    [ack] = await rows(core, OutboxMessage)
    assert (ack.channel, ack.recipient, ack.status) == ("sms", PHONE, "queued")
    assert result.tracking_code in ack.payload["text"] and "17:00 ngày 02/11/2026" in ack.payload["text"]
    created, routed = await rows(core, Event)
    assert (created.kind, routed.kind) == ("created", "routed")
    assert routed.detail == {"unit": "tiep-nhan", "reason": "default unit (no rule matched)", "rule": None,
                             "urgency": "normal", "urgency_reason": None}


async def test_english_citizen_is_acknowledged_in_english(core):
    result = await intake.receive(core, sms(core, language="en-GB"))
    [ack] = await rows(core, OutboxMessage)
    assert result.language == "en"
    assert ack.payload["text"].startswith(f"Complaint {result.tracking_code} received. Answer due: 02 Nov 2026, 17:00")


async def test_an_email_citizen_gets_the_full_text_with_the_code_in_the_subject(core):
    await intake.receive(core, Inbound(channel="email", external_id="<m1@example.vn>", sender="dan@example.vn",
                                       subject="Mất điện", text=TEXT, received_at=core.clock.now()))
    [ack] = await rows(core, OutboxMessage)
    [complaint] = await rows(core, Complaint)
    assert ack.payload["text"].startswith("Chúng tôi đã tiếp nhận phản ánh của Quý ông/bà.")
    assert ack.payload["subject"] == f"[{complaint.tracking_code}] Mất điện"
    assert ack.payload["in_reply_to"] == ["<m1@example.vn>"]
    assert (ack.payload["code"], ack.payload["kind"], ack.payload["audience"]) == (
        complaint.tracking_code, "acknowledgement", "citizen")


async def test_a_retried_delivery_stores_nothing_new(core):
    first = await intake.receive(core, sms(core))
    again = await intake.receive(core, sms(core, text="the same delivery, retried"))
    assert again.outcome == "duplicate" and again.tracking_code == first.tracking_code
    assert len(await rows(core, Complaint)) == 1
    assert len(await rows(core, Message)) == 1
    assert len(await rows(core, OutboxMessage)) == 1


async def test_concurrent_deliveries_of_one_message_store_one(core):
    results = await asyncio.gather(*(intake.receive(core, sms(core)) for _ in range(8)))
    assert {r.tracking_code for r in results} == {results[0].tracking_code}
    assert sorted(r.outcome for r in results) == ["created"] + ["duplicate"] * 7
    assert len(await rows(core, Complaint)) == 1
    assert len(await rows(core, OutboxMessage)) == 1


async def test_same_message_id_on_another_channel_is_another_message(core):
    await intake.receive(core, sms(core, external_id="42"))
    other = await intake.receive(core, Inbound(channel="email", external_id="42", sender="a@example.vn",
                                               text=TEXT, received_at=core.clock.now()))
    assert other.outcome == "created"
    assert len(await rows(core, Complaint)) == 2


async def test_a_batch_across_channels_finds_its_own_deliveries_again_through_the_index(core):
    """A batch looks its messages up again by channel and id in one statement, through the
    (channel, external id) index, whatever its size; a stored message whose channel and id
    each appear in the batch, but not together, is not taken for one of its own."""
    await intake.receive_batch(core, [sms(core, external_id="A"),
                                      Inbound(channel="email", external_id="B", sender="a@example.vn", text=TEXT,
                                              received_at=core.clock.now())])
    with statements(core, lambda statement: "messages.external_id IN" in statement) as looks:
        results = await intake.receive_batch(core, [
            sms(core, external_id="B", sender="+84912345679"),  # an SMS with the email's id: new
            Inbound(channel="email", external_id="A", sender="b@example.vn", text=TEXT,
                    received_at=core.clock.now()),  # an email with the SMS's id: new
            sms(core, external_id="A", text="the SMS again")])  # the same SMS: a duplicate
    assert [r.outcome for r in results] == ["created", "created", "duplicate"]
    assert len(await rows(core, Complaint)) == 4
    [(statement, parameters)] = looks
    plan = await plan_of(core, statement, parameters)
    assert "INDEX" in plan.upper() and not re.search(r"\bSCAN messages\b|Seq Scan on messages", plan), plan


async def test_a_message_naming_the_senders_code_is_a_follow_up(core):
    first = await intake.receive(core, sms(core))
    core.clock.advance(hours=1)
    later = await intake.receive(core, sms(core, text=f"tt {first.tracking_code.lower()} van chua co dien",
                                           external_id="SM2"))
    assert later.outcome == "followup" and later.tracking_code == first.tracking_code
    assert len(await rows(core, Complaint)) == 1
    assert [m.text for m in await rows(core, Message)][1].startswith("tt ")
    keys = [m.key for m in await rows(core, OutboxMessage)]
    assert keys[0] == f"ack:{first.tracking_code}" and keys[1].startswith("followup:")
    assert [e.kind for e in await rows(core, Event)] == ["created", "routed", "followup"]


async def test_a_code_in_an_email_subject_threads(core):
    mail = dict(channel="email", sender="dan@example.vn", received_at=core.clock.now())
    first = await intake.receive(core, Inbound(external_id="<a@x>", text=TEXT, subject="Mất điện", **mail))
    reply = await intake.receive(core, Inbound(external_id="<b@x>", text="Vẫn mất điện.",
                                               subject=f"Re: [{first.tracking_code}] Mất điện", **mail))
    assert reply.outcome == "followup" and reply.tracking_code == first.tracking_code


async def test_a_text_soon_after_from_the_same_phone_continues_the_open_complaint(core):
    first = await intake.receive(core, sms(core))
    core.clock.advance(hours=20)
    soon = await intake.receive(core, sms(core, text="Bổ sung: cả dãy nhà số lẻ.", external_id="SM2"))
    assert soon.outcome == "followup" and soon.tracking_code == first.tracking_code
    core.clock.advance(days=5)  # past the 72-hour window: a new complaint
    later = await intake.receive(core, sms(core, text="Đèn đường lại hỏng.", external_id="SM3"))
    assert later.outcome == "created" and later.tracking_code != first.tracking_code


async def test_texts_written_together_are_filed_together_and_a_second_from_one_phone_follows_up(core):
    """One batch (the intake writer's): senders with nothing open are filed at once; a sender
    with an open complaint, or with two texts in the batch, continues the conversation."""
    open_one = await intake.receive(core, sms(core, sender="+84912000001", external_id="SM0"))
    batch = [sms(core, sender="+84912000002", external_id="SM1"),
             sms(core, sender="+84912000001", text="Bổ sung: cả dãy nhà số lẻ.", external_id="SM2"),
             sms(core, sender="+84912000003", external_id="SM3"),
             sms(core, sender="+84912000003", text="Thêm: từ 6 giờ sáng.", external_id="SM4"),
             sms(core, sender="+84912000004", external_id="SM5")]
    results = await intake.receive_batch(core, batch)
    assert [r.outcome for r in results] == ["created", "followup", "created", "followup", "created"]
    assert results[1].tracking_code == open_one.tracking_code
    assert results[3].tracking_code == results[2].tracking_code
    assert len({r.tracking_code for r in results}) == 4
    assert len(await rows(core, Complaint)) == 4
    messages = await rows(core, Message, Message.direction == "in")
    assert {m.external_id: m.complaint_id for m in messages} == {
        "SM0": open_one.complaint_id, "SM1": results[0].complaint_id, "SM2": open_one.complaint_id,
        "SM3": results[2].complaint_id, "SM4": results[2].complaint_id, "SM5": results[4].complaint_id}
    acks = await rows(core, OutboxMessage, OutboxMessage.key.like("ack:%"))
    assert sorted(a.complaint_id for a in acks) == sorted(r.complaint_id for r in (open_one, *results[::2]))


async def test_a_text_after_resolution_without_a_code_is_a_new_complaint(core):
    first = await intake.receive(core, sms(core))
    async with core.sessions() as session, session.begin():
        await session.execute(update(Complaint).values(status="resolved", resolved_at=core.clock.now()))
    again = await intake.receive(core, sms(core, text="Ổ gà trước cổng chợ.", external_id="SM2"))
    assert again.outcome == "created" and again.tracking_code != first.tracking_code


async def test_an_automated_message_is_recorded_and_never_answered(core):
    mail = dict(channel="email", sender="mailer-daemon@example.vn", received_at=core.clock.now(), automated=True)
    bounce = await intake.receive(core, Inbound(external_id="<bounce1@x>", text="Delivery failed", **mail))
    assert (bounce.outcome, bounce.tracking_code) == ("ignored", None)
    assert await rows(core, Complaint) == [] and await rows(core, OutboxMessage) == []
    [message] = await rows(core, Message)
    assert message.complaint_id is None and message.automated
    again = await intake.receive(core, Inbound(external_id="<bounce1@x>", text="Delivery failed", **mail))
    assert again.outcome == "duplicate" and len(await rows(core, Message)) == 1


async def test_an_auto_reply_to_our_message_joins_the_complaint_silently(core):
    mail = dict(channel="email", sender="dan@example.vn", received_at=core.clock.now())
    first = await intake.receive(core, Inbound(external_id="<a@x>", text=TEXT, **mail))
    async with core.sessions() as session, session.begin():
        await session.execute(update(OutboxMessage).values(status="sent", external_id="<ack@feedback>"))
        await session.execute(update(Complaint).values(status="resolved"))
    auto = await intake.receive(core, Inbound(external_id="<ooo@x>", text="Tôi đang đi vắng.", automated=True,
                                              in_reply_to=("<ack@feedback>",), **mail))
    assert auto.outcome == "ignored" and auto.tracking_code == first.tracking_code
    [complaint] = await rows(core, Complaint)
    assert complaint.status == "resolved"  # not reopened by a robot
    assert len(await rows(core, OutboxMessage)) == 1  # nothing answered


async def test_a_strangers_message_naming_a_code_is_a_new_complaint(core):
    first = await intake.receive(core, sms(core))
    stranger = await intake.receive(core, sms(core, sender="+84987654321", external_id="SM9",
                                              text=f"Tôi cũng bị như {first.tracking_code}, mất điện."))
    assert stranger.outcome == "created" and stranger.tracking_code != first.tracking_code


async def test_a_reply_to_one_of_our_messages_threads(core):
    first = await intake.receive(core, sms(core))
    async with core.sessions() as session, session.begin():
        # What the dispatcher records once the gateway accepted the acknowledgement.
        await session.execute(update(OutboxMessage).values(status="sent", external_id="gw-77"))
    reply = await intake.receive(core, sms(core, text="Cảm ơn, bổ sung: cả ngõ 5.", external_id="SM3",
                                           in_reply_to=("gw-77",)))
    assert reply.outcome == "followup" and reply.tracking_code == first.tracking_code


async def test_a_follow_up_to_a_resolved_complaint_reopens_it(core):
    first = await intake.receive(core, sms(core))
    async with core.sessions() as session, session.begin():
        await session.execute(update(Complaint).values(status="resolved", resolved_at=core.clock.now()))
    core.clock.advance(days=3)  # Thursday 08:00
    again = await intake.receive(core, sms(core, text=f"{first.tracking_code} lại mất điện rồi", external_id="SM4"))
    assert again.outcome == "followup"
    [complaint] = await rows(core, Complaint)
    assert complaint.status == "reopened" and complaint.resolved_at is None
    # A new first-response deadline from the reopening: Thursday 08:00 + 8 h = Thursday 17:00.
    assert complaint.first_response_due == datetime(2026, 11, 5, 10, 0, tzinfo=timezone.utc)
    events = await rows(core, Event)
    assert [e.kind for e in events] == ["created", "routed", "followup", "reopened"]
    assert events[-1].detail["from"] == "resolved"
    assert (await rows(core, OutboxMessage))[-1].key.startswith("reopened:")


async def test_an_anonymous_web_complaint_queues_nothing(core):
    result = await intake.receive(core, Inbound(channel="web", external_id="f" * 32, sender=None, text=TEXT,
                                                received_at=core.clock.now()))
    assert result.outcome == "created"
    assert await rows(core, OutboxMessage) == []
    [complaint] = await rows(core, Complaint)
    assert complaint.contact_id is None


async def test_web_citizen_with_phone_and_email_gets_answers_by_the_first(core):
    await intake.receive(core, Inbound(channel="web", external_id="a" * 32, sender=None, text=TEXT,
                                       received_at=core.clock.now(),
                                       reply_to=(("sms", PHONE), ("email", "an@example.vn"))))
    [complaint] = await rows(core, Complaint)
    assert complaint.alternate_contact_id is not None
    [ack] = await rows(core, OutboxMessage)
    assert (ack.channel, ack.recipient) == ("sms", PHONE)


async def test_attachments_are_stored_with_their_checksum(core):
    photo = Attachment("ngap.jpg", "image/jpeg", b"\xff\xd8\xff\xe0fake-jpeg")
    await intake.receive(core, sms(core, attachments=(photo,)))
    [stored] = await rows(core, StoredAttachment)
    assert (stored.filename, stored.size, stored.data) == ("ngap.jpg", len(photo.data), photo.data)
    assert len(stored.sha256) == 64


@pytest.mark.parametrize("inbound_kwargs, reason", [
    ({"text": "   "}, "empty message"),
    ({"category": "no-such-thing"}, "unknown category"),
])
async def test_intake_refuses_what_it_cannot_take(core, inbound_kwargs, reason):
    with pytest.raises(intake.IntakeError, match=reason):
        await intake.receive(core, sms(core, **inbound_kwargs))
    assert await rows(core, Complaint) == []


async def test_tracking_codes_are_unique_and_not_sequential(core):
    codes = [(await intake.receive(core, sms(core, external_id=f"S{i}", sender=f"+8491234{i:04d}"))).tracking_code
             for i in range(30)]
    assert len(set(codes)) == 30
    # Neighbours share no common prefix beyond chance: not a counter.
    assert len({code[:6] for code in codes}) > 10


async def test_received_metrics_count_new_complaints_per_channel(core):
    await intake.receive(core, sms(core))
    await intake.receive(core, sms(core))  # retry: not a new complaint
    exposition = core.metrics.exposition().decode()
    assert 'feedback_intake_complaints_received_total{channel="sms"} 1.0' in exposition
    assert 'feedback_intake_messages_received_total{channel="sms",outcome="duplicate"} 1.0' in exposition


async def test_answers_go_back_through_the_gateway_the_citizen_used(core):
    await intake.receive(core, sms(core, via="android-hanoi"))
    [ack] = await rows(core, OutboxMessage)
    assert ack.payload["via"] == "android-hanoi"
    # A later text through another gateway moves the conversation there.
    await intake.receive(core, sms(core, text="Bổ sung: cả ngõ 7.", external_id="SM2", via="twilio"))
    later = (await rows(core, OutboxMessage))[-1]
    assert later.payload["via"] == "twilio"


async def test_a_reply_from_someone_else_on_the_thread_does_not_join(core):
    mail = dict(channel="email", received_at=core.clock.now())
    first = await intake.receive(core, Inbound(external_id="<a@x>", sender="dan@example.vn", text=TEXT, **mail))
    async with core.sessions() as session, session.begin():
        await session.execute(update(OutboxMessage).values(status="sent", external_id="<ack@feedback>"))
    copied = await intake.receive(core, Inbound(external_id="<c@y>", sender="hangxom@example.vn",
                                                text="Nhà tôi cũng mất điện.", in_reply_to=("<ack@feedback>",),
                                                **mail))
    assert copied.outcome == "created" and copied.tracking_code != first.tracking_code


async def test_reports_of_one_event_filed_in_one_batch_make_one_incident(make_core):
    """A storm's texts arrive together and are filed in one transaction: each report's
    candidate search sees the reports before it in the batch and the incidents they joined
    (written together after the batch's grouping), so they make one incident, not several."""
    from storage.models import Incident

    core = await make_core({"incidents": {"enabled": True}})
    text = "Mất điện toàn bộ phường Kim Liên, quận Đống Đa từ 9 giờ sáng."
    first = await intake.receive_batch(core, [sms(core, text=text, sender=f"+849120000{i:02d}", external_id=f"SM{i}")
                                              for i in range(8)])
    later = await intake.receive_batch(core, [sms(core, text=text, sender=f"+849130000{i:02d}", external_id=f"SN{i}")
                                              for i in range(4)])
    assert [r.outcome for r in first + later] == ["created"] * 12
    complaints = await rows(core, Complaint)
    [incident] = await rows(core, Incident)
    assert {c.incident_id for c in complaints} == {incident.id} and incident.reports == 12
    [lead] = [c for c in complaints if c.incident_role == "lead"]
    assert incident.lead_complaint_id == lead.id
    members = [c for c in complaints if c.incident_role == "member"]
    assert len(members) == 11
    # A member takes its lead's unit, officer and deadline, and owes the sweep nothing of its own.
    assert {(c.unit_id, c.assignee_id, c.first_response_due, c.next_check_at) for c in members} == {
        (lead.unit_id, lead.assignee_id, lead.first_response_due, None)}
    joined = await rows(core, Event, Event.kind == "incident_joined")
    assert sorted(e.complaint_id for e in joined) == sorted(c.id for c in members)


async def test_a_batch_runs_each_candidate_search_once_and_sees_the_incidents_it_made(make_core):
    """A batch's complaints that make the same candidate search share one statement; a
    complaint later in the batch still sees an incident an earlier one made around a
    complaint the search read before (here one filed in an earlier batch), and joins it
    rather than making a second incident around the same lead."""
    from sqlalchemy import event

    from storage.models import Incident

    core = await make_core({"incidents": {"enabled": True}})
    exact = "Mất điện toàn bộ phường Kim Liên, quận Đống Đa từ 9 giờ sáng, cả khu tập thể tối om."
    close = "Mất điện ở phường Kim Liên quận Đống Đa từ sáng nay."
    flood = "Ngập sâu nửa mét trên phố Huế, quận Hai Bà Trưng."
    [first] = await intake.receive_batch(core, [sms(core, text=exact, sender="+84912000001", external_id="SA")])
    searches: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "UNION ALL" in statement:
            searches.append(statement)

    event.listen(core.engine.sync_engine, "before_cursor_execute", record)
    try:
        # The second names the event in other words, so it scores lower against the first
        # than the third does: the third's best candidate is the first complaint itself,
        # which the second made the lead of a new incident after the search was read.
        batch = await intake.receive_batch(core, [sms(core, text=close, sender="+84912000002", external_id="SB"),
                                                  sms(core, text=exact, sender="+84912000003", external_id="SC"),
                                                  sms(core, text=flood, sender="+84912000005", external_id="SE"),
                                                  sms(core, text=exact, sender="+84912000004", external_id="SD")])
    finally:
        event.remove(core.engine.sync_engine, "before_cursor_execute", record)
    assert [r.outcome for r in [first, *batch]] == ["created"] * 5
    # The same kind of event at the same place: one search, not three; the flood's search,
    # which no other complaint of the batch makes, runs as it would alone (below its own id).
    assert len(searches) == 2, searches
    assert sorted("complaints.id <" in statement for statement in searches) == [False, True]
    [incident] = await rows(core, Incident)
    complaints = [c for c in await rows(core, Complaint) if c.text != flood]
    assert incident.reports == 4 and {c.incident_id for c in complaints} == {incident.id}
    assert incident.lead_complaint_id == complaints[0].id


async def test_a_storm_s_incident_is_scored_by_a_few_members_and_counted_whole(make_core):
    """Each new report of a storm scores at most ``PER_INCIDENT`` members of an incident,
    the first the search returns, not every member it read: a storm's incident holds
    hundreds of near-identical reports. It still joins, and the incident's size it is
    told counts every member read."""
    from bot.incidents import candidates, match

    core = await make_core({"incidents": {"enabled": True}})
    texts = ("Mất điện toàn bộ phường Kim Liên, quận Đống Đa từ 9 giờ sáng, cả khu tập thể tối om.",
             "Mất điện ở phường Kim Liên quận Đống Đa từ sáng nay, cả ngõ tối om.",
             "mat dien phuong Kim Lien quan Dong Da tu sang")
    storm = [sms(core, text=texts[n % 3], sender=f"+849120{n:05d}", external_id=f"ST{n}") for n in range(30)]
    for start in range(0, len(storm), 8):
        await intake.receive_batch(core, storm[start:start + 8])
    assert len({c.incident_id for c in await rows(core, Complaint)} - {None}) == 1
    found = match.features("Mất điện phường Kim Liên, Đống Đa, cả khu tối om từ sáng.")
    async with core.sessions() as session:
        decision = await candidates.find(session, core.config.incidents, found, None, core.clock.now())
    assert decision.action == "join" and decision.best.incident_id is not None
    assert decision.considered == 30 and decision.reports == 30
    assert decision.scored == candidates.PER_INCIDENT < 30


async def test_a_greeting_is_queued_for_a_sender_new_to_the_store_once_and_before_the_acknowledgement(make_core, clock):
    """``Inbound.greeting``: intake queues it when no contact of the sender's was stored
    before the message (the channel need not look first), ahead of the acknowledgement;
    once for a new citizen's messages in one batch; not for a citizen it knows; not again
    for a repeat delivery."""
    from contract.messages import Outgoing

    core = await make_core()

    def zalo(user: str, n: int) -> Inbound:
        greeting = Outgoing(channel="zalo", recipient=user, text="Kính chào", key=f"zalo-greeting:{user}:{n}",
                            kind="greeting", origin="reply")
        return Inbound(channel="zalo", external_id=f"zalo:{user}:{n}", sender=user, text=TEXT,
                       received_at=clock.now(), greeting=greeting)

    await intake.receive_batch(core, [Inbound(channel="zalo", external_id="zalo:u-known:0", sender="u-known",
                                              text=TEXT, received_at=clock.now())])
    with statements(core, lambda statement: "FROM contacts" in statement) as looks:
        results = await intake.receive_batch(core, [zalo("u-new", 1), zalo("u-known", 1), zalo("u-new", 2)])
    assert [r.outcome for r in results] == ["created"] * 3
    assert len(looks) == 1  # one look at the batch's senders
    queued = await rows(core, OutboxMessage)
    greetings = [m for m in queued if m.key.startswith("zalo-greeting:")]
    assert [(m.key, m.recipient) for m in greetings] == [("zalo-greeting:u-new:1", "u-new")]
    acks = [m for m in queued if m.key.startswith("ack:") and m.recipient == "u-new"]
    assert len(acks) == 2 and greetings[0].id < min(ack.id for ack in acks)
    again = await intake.receive_batch(core, [zalo("u-new", 1)])  # Zalo delivers the first again
    assert [r.outcome for r in again] == ["duplicate"] and len(await rows(core, OutboxMessage)) == len(queued)


async def test_a_candidate_carries_its_complaint_s_time_and_the_newest_of_equals_comes_first(make_core):
    """The search reads each candidate's time as the driver gives it (SQLite's text,
    PostgreSQL's aware datetime) and converts only the candidates it explains: each carries
    its complaint's time, aware in UTC, with the minutes since in its reasons; of equal
    scores in one incident the most recent comes first."""
    from bot.incidents import candidates, match

    core = await make_core({"incidents": {"enabled": True}})
    text = "Mất điện toàn bộ phường Kim Liên, quận Đống Đa từ 9 giờ sáng, cả khu tập thể tối om."
    await intake.receive(core, sms(core, text=text, sender="+84912000011", external_id="T1"))
    core.clock.advance(minutes=30)
    await intake.receive(core, sms(core, text=text, sender="+84912000012", external_id="T2"))
    core.clock.advance(minutes=12)
    first, second = await rows(core, Complaint)
    assert first.incident_id is not None and second.incident_id == first.incident_id
    async with core.sessions() as session:
        decision = await candidates.find(session, core.config.incidents, match.features(text), None,
                                         core.clock.now())
    assert [c.complaint_id for c in [decision.best, *decision.others]] == [second.id, first.id]
    for candidate, complaint, minutes in ((decision.best, second, 12), (decision.others[0], first, 42)):
        assert candidate.created_at == complaint.created_at and candidate.created_at.utcoffset() == timedelta(0)
        assert f"time: {minutes} min" in candidate.score.reasons


async def test_a_batch_s_reply_windows_are_looked_up_together_and_a_closed_one_falls_back(make_core, clock):
    """Where each acknowledgement of a batch goes is chosen with one look at the reply
    windows (Zalo's), not one per citizen; a citizen whose window closed is reached on the
    phone they gave, one whose window is open on Zalo."""
    from bot import reach
    from bot.core import SenderTerms
    from contract.delivery import ReplyWindow

    core = await make_core()
    core.senders = {"zalo": SenderTerms(ReplyWindow(48.0, None)), "sms": SenderTerms()}

    def zalo(user: str, n: int, **kwargs) -> Inbound:
        return Inbound(channel="zalo", external_id=f"zalo:{user}:{n}", sender=user, text=TEXT,
                       received_at=clock.now(), **kwargs)

    with statements(core, lambda statement: "max(messages.created_at)" in statement) as looks:
        first = await intake.receive_batch(core, [zalo("u-a", 1), zalo("u-b", 1, reply_to=(("sms", PHONE),)),
                                                  zalo("u-c", 1), zalo("u-d", 1)])
        assert [r.outcome for r in first] == ["created"] * 4 and len(looks) == 1
        acks = await rows(core, OutboxMessage, OutboxMessage.key.like("ack:%"))
        assert sorted((a.channel, a.recipient) for a in acks) == [("zalo", u) for u in ("u-a", "u-b", "u-c", "u-d")]
        clock.advance(hours=49)
        await intake.receive_batch(core, [zalo("u-a", 2)])  # u-a writes again: its window opens
        complaints = {c.contact_id: c for c in await rows(core, Complaint)}
        looks.clear()
        async with core.sessions() as session:
            ours = [c for c in complaints.values() if c.text == TEXT][:2]
            contacts = await reach.contacts_of(session, ours)
            chosen = await reach.choose_all(core, session, [contacts[c.id] for c in ours], "answer", clock.now())
    assert len(looks) == 1
    assert [(p.channel, p.address) for p in chosen] == [("zalo", "u-a"), ("sms", PHONE)]


async def test_a_reply_window_is_read_from_the_citizen_s_own_messages_by_index(make_core, clock):
    """The look at a citizen's last message reads their messages through
    ``ix_messages_channel_sender`` (migration 0010), not every message of the channel."""

    from sqlalchemy import inspect

    from bot.core import SenderTerms
    from contract.delivery import ReplyWindow

    core = await make_core()
    core.senders = {"zalo": SenderTerms(ReplyWindow(48.0, None))}
    async with core.engine.connect() as conn:
        migrated = await conn.run_sync(lambda sync: {ix["name"] for ix in inspect(sync).get_indexes("messages")})
    assert "ix_messages_channel_sender" in migrated
    with statements(core, lambda statement: "max(messages.created_at)" in statement) as looks:
        await intake.receive_batch(core, [Inbound(channel="zalo", external_id=f"zalo:u-{n}", sender=f"u-{n}", text=TEXT,
                                                  received_at=clock.now()) for n in range(3)])
    [(statement, parameters)] = looks
    plan = await plan_of(core, statement, parameters)
    assert "ix_messages_channel_sender" in plan, plan
    assert not re.search(r"\bSCAN messages\b|Seq Scan on messages", plan), plan


async def test_a_batch_reads_each_incident_it_joins_with_its_lead_in_one_statement(make_core):
    """A batch joining reports to two incidents reads each incident and its lead together,
    once: two statements, not four, and the joins take the lead's unit and deadline."""
    from storage.models import Incident

    core = await make_core({"incidents": {"enabled": True}})
    power = "Mất điện toàn bộ phường Kim Liên, quận Đống Đa từ 9 giờ sáng, cả khu tập thể tối om."
    water = "Mất nước cả khu tập thể Thành Công, quận Ba Đình từ tối qua, không ai thông báo."
    for number, text in enumerate((power, power, water, water)):
        await intake.receive(core, sms(core, text=text, sender=f"+8491200002{number}", external_id=f"J{number}"))
    incidents = await rows(core, Incident)
    assert len(incidents) == 2
    looks = "FROM incidents", "FROM complaints WHERE complaints.id ="
    with statements(core, lambda statement: any(look in " ".join(statement.split()) for look in looks)) as read:
        results = await intake.receive_batch(core, [
            sms(core, text=text, sender=f"+8491200003{number}", external_id=f"K{number}")
            for number, text in enumerate((power, water, power, water))])
    assert [r.outcome for r in results] == ["created"] * 4
    assert len(read) == 2 and all("FROM incidents JOIN complaints" in " ".join(s.split()) for s, _ in read)
    stored = {c.id: c for c in await rows(core, Complaint)}
    lead_of = {incident.id: stored[incident.lead_complaint_id] for incident in incidents}
    for result in results:
        complaint = stored[result.complaint_id]
        lead = lead_of[complaint.incident_id]
        assert (complaint.incident_role, complaint.unit_id, complaint.resolution_due) == \
            ("member", lead.unit_id, lead.resolution_due)
    assert sorted(i.reports for i in await rows(core, Incident)) == [4, 4]
