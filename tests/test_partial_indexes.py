"""Indexes on mostly empty columns hold only the rows that have a value (migration 0011).

A row enters such an index only once the column is set, so a new complaint or outbox
message, and (on PostgreSQL) every complaint the sweep changes, writes fewer index entries;
the lookups the code makes still read them, as both databases plan them. And one unique
partial index (migration 0012): one active incident per lead complaint. The outbox's
references, kept and indexed only for SMS (0013). The incident search's indexes by kind,
place and cell, of the open complaints that have one (0014).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from datetime import timedelta

from sqlalchemy import bindparam, inspect, select, text, update

from bot import outbox
from bot.dispatcher import Dispatcher
from contract.messages import Outgoing
from storage.models import Base, Complaint, OutboxMessage
from tests.conftest import plan_of, statements

MIGRATION = Path(__file__).parent.parent / "storage" / "migrations" / "versions" / "0011_partial_indexes.py"


def _migration_indexes() -> dict[str, tuple[str, list[str], str]]:
    spec = importlib.util.spec_from_file_location("migration_0011", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.INDEXES


async def test_mostly_empty_columns_are_indexed_only_where_they_have_a_value(core):
    """The migrated schema and the models agree: each of 0011's indexes has its columns and
    holds only the rows whose column is set."""
    indexes = _migration_indexes()
    assert len(indexes) == 8
    dialect = core.engine.dialect.name
    async with core.engine.connect() as conn:
        migrated = await conn.run_sync(lambda sync: {
            table: {ix["name"]: ix for ix in inspect(sync).get_indexes(table)}
            for table in {table for table, _, _ in indexes.values()}})
    for name, (table, columns, column) in indexes.items():
        found = migrated[table][name]
        assert found["column_names"] == columns, name
        where = str(found.get("dialect_options", {}).get(f"{dialect}_where", ""))
        assert column in where and "NOT NULL" in where.upper(), (name, where)
        declared = next(ix for ix in Base.metadata.tables[table].indexes if ix.name == name)
        assert [c.name for c in declared.columns] == columns, name
        assert str(declared.dialect_options[dialect]["where"]) == f"{column} IS NOT NULL", name


async def test_a_restarted_worker_takes_back_its_earlier_claims_through_the_claims_index(core):
    """What an earlier incarnation of a worker left claimed is found and taken back through
    ``ix_outbox_claimed_by_status``, which holds only the claimed rows (before 0011, every
    message ever sent, each with an empty ``claimed_by``, and the worker's start read them all)."""
    async with core.sessions() as session, session.begin():
        for i in range(4):
            await outbox.enqueue(session, core.clock.now(), Outgoing(
                key=f"test:partial:{i}", channel="sms", recipient=f"+8491234{i:04d}", text=f"Tin nhắn {i}"))
        await session.execute(update(OutboxMessage).where(OutboxMessage.key.in_(["test:partial:0", "test:partial:1"]))
                              .values(status="claimed", claimed_by="worker-a/earlier"))
        await session.execute(update(OutboxMessage).where(OutboxMessage.key == "test:partial:2")
                              .values(status="sent", claimed_by=None))
    dispatcher = Dispatcher(core, {}, name="worker-a")
    with statements(core, lambda statement: "claimed_by" in statement
                    and statement.lstrip().upper().startswith(("SELECT", "UPDATE"))) as taking_back:
        assert await dispatcher.register() == 2
    async with core.sessions() as session:
        rows = dict((await session.execute(select(OutboxMessage.key, OutboxMessage.status))).all())
    assert rows == {"test:partial:0": "queued", "test:partial:1": "queued", "test:partial:2": "sent",
                    "test:partial:3": "queued"}
    assert len(taking_back) == 3, [s for s, _ in taking_back]  # who held them, then two UPDATEs
    for number, (statement, parameters) in enumerate(taking_back):
        plan = await plan_of(core, statement, parameters, tag=f"claims-{number}")
        assert "ix_outbox_claimed_by_status" in plan, (statement, plan)


async def test_the_store_refuses_a_second_active_incident_around_one_complaint(core):
    """Grouping makes one incident around a complaint under a lock (PostgreSQL) and reads the
    complaint again under it; the store keeps that too (migration 0012): a second active
    incident with the same lead is refused, while merged and ended ones keep their lead."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    from bot import intake
    from contract.messages import Inbound
    from storage.models import Complaint, Incident

    [filed] = await intake.receive_batch(core, [Inbound(
        channel="sms", external_id="lead-1", sender="+84912000001", text="mat dien o nghia tan",
        received_at=core.clock.now())])
    async with core.sessions() as session:
        lead_id = await session.scalar(select(Complaint.id).where(Complaint.tracking_code == filed.tracking_code))
    now = core.clock.now()

    def incident(state: str) -> Incident:
        return Incident(lead_complaint_id=lead_id, unit_id=1, topic=None, title="Mất điện", reports=1, state=state,
                        created_at=now, updated_at=now)

    async with core.sessions() as session, session.begin():
        session.add_all([incident("merged"), incident("ended"), incident("active")])
    with pytest.raises(IntegrityError):
        async with core.sessions() as session, session.begin():
            session.add(incident("active"))
    async with core.sessions() as session:
        states = sorted((await session.scalars(select(Incident.state).where(Incident.lead_complaint_id == lead_id))).all())
    assert states == ["active", "ended", "merged"]


async def test_only_messages_whose_deliveries_are_reported_by_reference_keep_one_and_enter_its_index(core):
    """Migration 0013: an SMS message keeps our reference (its gateway's delivery report names
    it), a Telegram or email message none, queued one at a time or in the sweep's bulk rows;
    the index of references holds only rows that have one, in the migrated schema as in the
    models; and a delivery report still finds its SMS message by the reference through it."""
    from bot import delivery, messages
    from bot.directory import StaffDirectory
    from contract.messages import reference_of

    now = core.clock.now()
    async with core.sessions() as session, session.begin():
        for channel, recipient in (("sms", "+84912340000"), ("telegram", "7001"), ("email", "dan@example.com")):
            await outbox.enqueue(session, now, Outgoing(key=f"test:ref:{channel}", channel=channel,
                                                        recipient=recipient, text="Tin nhắn"))
        composer = messages.Composer(core, await StaffDirectory.load(session), now)
        for channel in ("sms", "telegram"):
            composer._row(f"test:ref:bulk:{channel}", channel, "+84912340001", None, {"text": "Tin nhắn"}, None)
        await outbox.enqueue_rows(session, composer.rows)
    async with core.sessions() as session:
        stored = dict((await session.execute(select(OutboxMessage.key, OutboxMessage.reference)
                                             .where(OutboxMessage.key.like("test:ref:%")))).all())
    assert stored == {"test:ref:sms": reference_of("test:ref:sms"), "test:ref:telegram": None,
                      "test:ref:email": None, "test:ref:bulk:sms": reference_of("test:ref:bulk:sms"),
                      "test:ref:bulk:telegram": None}

    dialect = core.engine.dialect.name
    async with core.engine.connect() as conn:
        migrated = await conn.run_sync(lambda sync: {ix["name"]: ix for ix in inspect(sync).get_indexes("outbox")})
    found = migrated["ix_outbox_reference"]
    assert found["column_names"] == ["reference"]
    assert "reference IS NOT NULL" in str(found.get("dialect_options", {}).get(f"{dialect}_where", ""))
    declared = next(ix for ix in OutboxMessage.__table__.indexes if ix.name == "ix_outbox_reference")
    assert str(declared.dialect_options[dialect]["where"]) == "reference IS NOT NULL"

    with statements(core, lambda statement: "outbox.reference" in statement
                    and statement.lstrip().upper().startswith("SELECT")) as lookups:
        assert await delivery.report(core, "sms", "delivered", reference=reference_of("test:ref:sms"))
    assert not await delivery.report(core, "telegram", "delivered", reference=reference_of("test:ref:telegram"))
    async with core.sessions() as session:
        assert await session.scalar(select(OutboxMessage.delivery).where(OutboxMessage.key == "test:ref:sms")) \
            == "delivered"
    [(statement, parameters)] = lookups
    plan = await plan_of(core, statement, parameters, tag="reference")
    assert "ix_outbox_reference" in plan, plan


async def test_the_incident_search_reads_open_complaints_by_kind_place_and_cell_through_indexes_of_those_set(make_core):
    """Migration 0014: of the open complaints, the candidate search's indexes by kind of
    event, by place and by geo cell hold only the rows that have one (most complaints come
    without a location: an SMS, a mail, a chat); each branch of a search that names a kind,
    a place and a location still reads its index, on both databases."""
    from bot import intake
    from contract.messages import Inbound, Location

    core = await make_core({"incidents": {"enabled": True}})
    OPEN = "status IN ('answered', 'assigned', 'new', 'reopened', 'waiting')"
    wanted = {"ix_complaints_open_topic_place": f"{OPEN} AND match_topic IS NOT NULL",
              "ix_complaints_open_topic": f"{OPEN} AND match_topic IS NOT NULL",
              "ix_complaints_open_place": f"{OPEN} AND match_place IS NOT NULL",
              "ix_complaints_open_cell": f"{OPEN} AND geo_cell IS NOT NULL"}
    dialect = core.engine.dialect.name
    async with core.engine.connect() as conn:
        migrated = await conn.run_sync(lambda sync: {ix["name"]: ix for ix in inspect(sync).get_indexes("complaints")})
    for name, where in wanted.items():
        found = " ".join(str(migrated[name].get("dialect_options", {}).get(f"{dialect}_where", "")).split())
        for term in ("match_topic", "match_place", "geo_cell"):
            if term in where:
                assert f"{term} IS NOT NULL" in found, (name, found)
        assert "'waiting'" in found, (name, found)

    now = core.clock.now()
    await intake.receive_batch(core, [
        Inbound(channel="sms", external_id="cell-1", sender="+84912000101", text="mat dien o nghia tan",
                received_at=now),
        Inbound(channel="web", external_id="cell-2", sender=None, text="Mất điện ở Nghĩa Tân cả khu", received_at=now,
                location=Location(21.0465, 105.7953))])
    with statements(core, lambda statement: "geo_cell" in statement and "UNION ALL" in statement.upper()) as searches:
        await intake.receive_batch(core, [Inbound(
            channel="web", external_id="cell-3", sender=None, text="Nghia Tan mat dien hon 30 phut roi",
            received_at=now, location=Location(21.0466, 105.7952))])
    assert searches, "no candidate search by kind, place and cell was made"
    async with core.sessions() as session:
        topic, place, cell = (await session.execute(select(Complaint.match_topic, Complaint.match_place,
                                                           Complaint.geo_cell).where(Complaint.geo_cell.is_not(None))
                                                    .limit(1))).one()
    assert topic and place and cell is not None
    # The search's plan: every branch reads an index (which, PostgreSQL decides by cost; on
    # tables this small it may read the index by age for the cell's branch, before 0014 too).
    statement, parameters = searches[-1]
    plan = await plan_of(core, statement, parameters, tag="candidates")
    assert "SCAN complaints" not in plan and "Seq Scan" not in plan, plan
    # Each index serves the condition its branch names (``=``, ``IN``, as the search writes
    # them): shown with the table's other indexes (but its keys) dropped in a transaction
    # rolled back, so the only other way left is to read the whole table.
    since = now - timedelta(days=3)
    probes = {"ix_complaints_open_topic_place": ("match_topic, match_place",
                                                 "match_topic = :topic AND match_place = :place"),
              "ix_complaints_open_topic": ("match_topic", "match_topic = :topic"),
              "ix_complaints_open_place": ("match_place", "match_place = :place"),
              "ix_complaints_open_cell": ("geo_cell", "geo_cell IN :cells")}
    explain = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
    for name, (columns, condition) in probes.items():
        probe = text(f"{explain}SELECT {columns}, created_at FROM complaints WHERE {OPEN} AND {condition} "
                     f"AND created_at >= :since ORDER BY created_at DESC -- {name}")
        values = {key: value for key, value in (("topic", topic), ("place", place)) if f":{key}" in condition}
        values["since"] = since
        if ":cells" in condition:
            probe, values["cells"] = probe.bindparams(bindparam("cells", expanding=True)), [cell, cell + 1]
        async with core.engine.connect() as conn:
            transaction = await conn.begin()
            try:
                others = await conn.run_sync(lambda sync: [ix["name"] for ix in inspect(sync).get_indexes("complaints")
                                                           if ix["name"].startswith("ix_") and ix["name"] != name])
                for other in others:
                    await conn.exec_driver_sql(f"DROP INDEX {other}")
                if dialect == "postgresql":
                    await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                probed = "\n".join(str(row[-1]) for row in (await conn.execute(probe, values)).all())
            finally:
                await transaction.rollback()
        assert name in probed, (name, probed)
