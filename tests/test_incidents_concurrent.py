"""Incident grouping with two writers at once (``serve --workers N`` on PostgreSQL).

A batch joining reports to incidents takes no lock while it groups: it writes the
incidents' counts at its end, relative to the stored value, in id order. Only making an
incident takes a lock (one transaction at a time, to its commit), and the candidate is read
again under it, so two workers never make two incidents around one complaint.

Each case holds one batch's transaction open (its intake, not committed) while another
batch runs beside it, as two worker processes would. SQLite has one writer at a time: two
batches cannot be in flight together there, so these run on PostgreSQL only.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from itertools import count

import pytest
from sqlalchemy import func, select

from bot import intake
from contract.messages import Inbound
from storage.models import Complaint, Incident
from tests.conftest import statements

POWER = ["mat dien o nghia tan", "MAT DIEN NGHIA TAN TU 8H", "Mat dien khu A Nghia Tan, nha co nguoi gia",
         "nghia tan mat dien r, ko ai thong bao j"]
WATER = ["mat nuoc o dich vong hau", "Mat nuoc khu Dich Vong Hau tu sang", "dich vong hau mat nuoc ca ngay",
         "MAT NUOC DICH VONG HAU, KO AI BAO"]
_numbers = count(1)


@pytest.fixture
async def core(make_core, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("two batches in flight at once need a second writer: PostgreSQL (FEEDBACK_TEST_POSTGRES)")
    return await make_core({"incidents": {"enabled": True}})


def sms(core, text: str) -> Inbound:
    number = next(_numbers)
    return Inbound(channel="sms", external_id=f"concurrent-{number}", sender=f"+8491{number:07d}", text=text,
                   received_at=core.clock.now())


async def file(core, text: str) -> str:
    [result] = await intake.receive_batch(core, [sms(core, text)])
    return result.tracking_code


async def incident_of(core, code: str) -> Incident | None:
    async with core.sessions() as session:
        incident_id = await session.scalar(select(Complaint.incident_id).where(Complaint.tracking_code == code))
        return await session.get(Incident, incident_id) if incident_id else None


async def test_a_batch_joining_one_incident_does_not_wait_for_a_batch_joining_another(core):
    power = [await file(core, text) for text in POWER[:2]]
    water = [await file(core, text) for text in WATER[:2]]
    first, second = await incident_of(core, power[0]), await incident_of(core, water[0])
    assert first is not None and second is not None and first.id != second.id
    assert (first.reports, second.reports) == (2, 2)
    async with core.sessions() as held, held.begin():  # one worker's batch, not committed yet
        [joined_first] = await intake._receive_many(core, held, [sms(core, POWER[2])])
        # Another worker's batch joining the other incident: before, it waited for the first
        # batch's commit (one lock for all grouping), here for nothing.
        [joined_second] = await asyncio.wait_for(intake.receive_batch(core, [sms(core, WATER[2])]), 10)
        assert (await incident_of(core, joined_second.tracking_code)).id == second.id
    assert (await incident_of(core, joined_first.tracking_code)).id == first.id
    assert ((await incident_of(core, power[0])).reports, (await incident_of(core, water[0])).reports) == (3, 3)


async def test_two_batches_joining_one_incident_both_count(core):
    codes = [await file(core, text) for text in POWER[:2]]
    async with core.sessions() as held, held.begin():
        [one] = await intake._receive_many(core, held, [sms(core, POWER[2])])
        # The other batch groups at once; it waits only to write the count, for this commit.
        other = asyncio.create_task(intake.receive_batch(core, [sms(core, POWER[3])]))
        await asyncio.sleep(0.5)
    [two] = await asyncio.wait_for(other, 10)
    incident = await incident_of(core, codes[0])
    assert incident.reports == 4  # each batch added its own to what was stored
    assert {(await incident_of(core, code)).id for code in (one.tracking_code, two.tracking_code)} == {incident.id}


async def test_two_batches_reporting_one_event_make_one_incident(core):
    lone = await file(core, WATER[0])  # an open complaint with no incident yet
    assert await incident_of(core, lone) is None
    async with core.sessions() as held, held.begin():
        # This batch's report makes an incident around the lone complaint (not committed).
        [made] = await intake._receive_many(core, held, [sms(core, WATER[1])])
        # The other batch's report picks the same complaint: it waits for the first to commit,
        # then finds the incident made around it and joins that one.
        other = asyncio.create_task(intake.receive_batch(core, [sms(core, WATER[2])]))
        await asyncio.sleep(0.5)
        assert not other.done()
    [joined] = await asyncio.wait_for(other, 10)
    incident = await incident_of(core, lone)
    assert incident is not None and incident.reports == 3
    assert (await incident_of(core, made.tracking_code)).id == incident.id
    assert (await incident_of(core, joined.tracking_code)).id == incident.id
    async with core.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Incident)) == 1


async def test_two_batches_beginning_one_storm_at_once_make_one_incident(core):
    """At a storm's start each batch's first report finds nothing (the other's are not
    committed): the batch that waited to make its incident searches again, finds the one the
    other made, and its first report joins it (acknowledged as such), then the rest."""
    from storage.models import Event, OutboxMessage

    with ExitStack() as watching:
        async with core.sessions() as held, held.begin():
            # This batch makes an incident of its two reports, not committed yet.
            first = await intake._receive_many(core, held, [sms(core, POWER[0]), sms(core, POWER[1])])
            # The other batch's first report sees none of them; its second picks the first as
            # its candidate and waits to make an incident around it.
            other = asyncio.create_task(intake.receive_batch(core, [sms(core, POWER[2]), sms(core, POWER[3])]))
            await asyncio.sleep(0.5)
            assert not other.done()
            # From here on the held batch writes nothing more.
            written = watching.enter_context(statements(core, lambda statement: statement.lstrip().upper()
                                                        .startswith("UPDATE COMPLAINTS")))
        second = await asyncio.wait_for(other, 10)
    # The late report's join is written once, with its batch's other join (one statement).
    assert len(written) == 1, written
    incident = await incident_of(core, first[0].tracking_code)
    assert incident is not None and incident.reports == 4
    for result in [*first, *second]:
        assert (await incident_of(core, result.tracking_code)).id == incident.id, result.tracking_code
    async with core.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Incident)) == 1
        lead, late = (await session.scalars(select(Complaint).where(Complaint.tracking_code.in_(
            [first[0].tracking_code, second[0].tracking_code])).order_by(Complaint.id))).all()
        assert (late.incident_role, late.first_response_due, late.next_check_at) == ("member", lead.first_response_due,
                                                                                      None)
        [event] = (await session.scalars(select(Event).where(Event.complaint_id == late.id,
                                                             Event.kind == "incident_joined"))).all()
        assert event.detail["searched_again"] is True and event.detail["candidate"] in {
            first[0].tracking_code, first[1].tracking_code}
        keys = set((await session.scalars(select(OutboxMessage.key))).all())
        ack = await session.scalar(select(OutboxMessage.payload).where(
            OutboxMessage.key == f"ack:{late.tracking_code}"))
    # Told that the unit is on it, as any report of the incident, and not paged as a new case.
    assert ack["kind"] == "incidents.joined" and "(3 " in ack["text"], ack
    assert f"new:{late.tracking_code}" not in keys
