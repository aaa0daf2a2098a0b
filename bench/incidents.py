"""Benchmark: the incident candidate search for a new complaint, on a large store
(1,000,000 complaints, 10,000 of them open).

Not a test. It builds a store the size of a large city's two years of complaints, then
measures, in one run on this machine, the work intake does per new complaint to find what
it may join (``bot/incidents/candidates.find``: the one candidate query and the scoring of
what it returns), for complaints of every kind in the labelled set (power cuts, floods,
potholes, with and without a place or coordinates). Target: median under 5 ms on SQLite
and on PostgreSQL. Next to it, a baseline from the same run: ``SELECT 1`` through the
same engine and sessions, and the ratio.

It prints the query plan of the candidate query as intake sends it (captured from the
driver, so it cannot drift from the code): SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL
``EXPLAIN (ANALYZE, BUFFERS)``, and checks that each branch searches one of the partial
indexes on open complaints (migration 0007) and that no branch scans the table.

The store is seeded directly (not through intake), like bench/sweep.py: texts, areas,
categories and coordinates of the labelled set over two years, their match columns
computed once per distinct text; 99% resolved or closed, the 10,000 open ones among the
most recent ten days (a real backlog is recent).

    python bench/incidents.py                       # SQLite temp file, 1,000,000 rows
    python bench/incidents.py --rows 100000         # quick check
    python bench/incidents.py --postgres            # PostgreSQL on 127.0.0.1, made and dropped here
    python bench/incidents.py --check               # exit 1 if a target is missed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from common import Database, log, plain_pg_url
from sqlalchemy import event, insert, text

from bot.clock import FrozenClock
from bot.core import Core
from bot.incidents import candidates, match
from service.assembly import open_core
from service.config import parse_config
from storage.models import Complaint, Contact

TARGET_MS = 5.0
INDEXES = ("ix_complaints_open_topic_place", "ix_complaints_open_topic", "ix_complaints_open_place", "ix_complaints_open_cell",
           "ix_complaints_open_created")
HANOI = ZoneInfo("Asia/Ho_Chi_Minh")
NOW = datetime(2026, 11, 4, 10, 0, tzinfo=HANOI).astimezone(timezone.utc)
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "incidents" / "labelled.json"


def samples() -> list[dict]:
    """The labelled set's complaints with their match columns, computed once each."""
    out = []
    for item in json.loads(FIXTURE.read_text(encoding="utf-8"))["complaints"]:
        found = match.features(item["text"], item["area"], None, item["lat"], item["lon"])
        out.append(dict(item, features=found, json=found.to_json(), topic=found.topic, place=found.place.key,
                        cell=candidates.geo_cell(item["lat"], item["lon"])))
    return out


def complaint_rows(rows: int, open_count: int, pool: list[dict], rng: random.Random, chunk: int):
    """Chunks of complaint rows in id (creation) order; the open ones among the last ten days."""
    start = NOW - timedelta(days=730)
    span = timedelta(days=730) - timedelta(minutes=1)
    recent = [i for i in range(1, rows + 1) if start + span * (i / rows) >= NOW - timedelta(days=10)]
    open_ids = set(rng.sample(recent, min(open_count, len(recent))))
    buffer = []
    for i in range(1, rows + 1):
        created = start + span * (i / rows)
        item = pool[i % len(pool)]
        is_open = i in open_ids
        buffer.append(dict(
            id=i, tracking_code=f"PA-{i:08d}", contact_id=(i % 1000) + 1, alternate_contact_id=None,
            channel=item["channel"], language="vi", subject=None, text=item["text"], category=item["category"],
            area=item["area"], latitude=item["lat"], longitude=item["lon"], unit_id=1, assignee_id=None,
            routing_reason="default unit", status=rng.choice(("new", "assigned", "answered")) if is_open
            else rng.choice(("resolved", "resolved", "resolved", "closed")),
            created_at=created, updated_at=created, first_response_due=created + timedelta(days=2),
            resolution_due=created + timedelta(days=14), first_response_at=None, resolved_at=None,
            next_check_at=None, reminded_for_due=None, apologised_for_due=None, resolution_reminded_for_due=None,
            resolution_escalated_for_due=None, escalation_count=0, rating=None, rating_comment=None, rated_at=None,
            incident_id=None, incident_role=None, match_topic=item["topic"], match_place=item["place"],
            geo_cell=item["cell"], match_features=item["json"], unreachable_at=None, urgency="normal", paused_at=None,
            waiting_reminded_at=None, extended_at=None, disputed_at=None, public=False))
        if len(buffer) >= chunk:
            yield buffer
            buffer = []
    if buffer:
        yield buffer


async def seed(core: Core, db: Database, args: argparse.Namespace, pool: list[dict]) -> None:
    """Contacts and complaints straight into the store (COPY on PostgreSQL)."""
    rng = random.Random(args.seed)
    contacts = [dict(id=i, channel="sms", address=f"+849{i:08d}", display_name=None, language="vi", via=None,
                     created_at=NOW - timedelta(days=800)) for i in range(1, 1001)]
    pg = None
    if db.kind == "postgresql":
        import asyncpg

        pg = await asyncpg.connect(plain_pg_url(db.url))

    async def put(table, chunk: list[dict]) -> None:
        if pg is not None:
            columns = [c.name for c in table.columns]
            json_columns = {c.name for c in table.columns if c.type.__class__.__name__ == "JSON"}
            records = [tuple(json.dumps(r[c]) if c in json_columns and r[c] is not None else r[c] for c in columns)
                       for r in chunk]
            async with pg.transaction():
                await pg.copy_records_to_table(table.name, records=records, columns=columns)
        else:
            async with core.engine.begin() as conn:
                await conn.execute(insert(table), chunk)

    try:
        started = time.perf_counter()
        await put(Contact.__table__, contacts)
        done = 0
        for chunk in complaint_rows(args.rows, args.open, pool, rng, args.chunk):
            await put(Complaint.__table__, chunk)
            done += len(chunk)
            if done % max(args.chunk, args.rows // 5) < args.chunk:
                log(f"  complaints: {done:,}/{args.rows:,} ({time.perf_counter() - started:.0f} s)")
    finally:
        if pg is not None:
            await pg.close()
    async with core.engine.connect() as conn:
        if db.kind == "postgresql":
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("SELECT setval(pg_get_serial_sequence('complaints', 'id'), "
                                    "(SELECT max(id) + 1 FROM complaints), false)"))
            await conn.execute(text("VACUUM ANALYZE"))  # what autovacuum would have done by now
    log(f"  seeded {args.rows:,} complaints in {time.perf_counter() - started:.1f} s")


class Capture:
    """Records the candidate query intake sends (statement and driver parameters)."""

    def __init__(self, core: Core):
        self.engine = core.engine.sync_engine
        self.statement: str | None = None
        self.parameters: object = None

    def __enter__(self) -> Capture:
        event.listen(self.engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, _conn, _cursor, statement, parameters, _context, _executemany) -> None:
        if self.statement is None and "match_features" in statement and "UNION ALL" in statement:
            self.statement, self.parameters = statement, parameters


async def explain(core: Core, db: Database, statement: str, parameters: object) -> bool:
    """Print the candidate query's plan; True when every branch searches a partial index."""
    async with core.engine.connect() as conn:
        if db.kind == "sqlite":
            rows = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)).all()
            lines = [str(row[-1]) for row in rows]
            searches = [line for line in lines if line.startswith("SEARCH complaints USING")]
            ok = bool(searches) and all(any(index in line for index in INDEXES) for line in searches) \
                and not any(line.startswith("SCAN complaints") for line in lines)
        else:
            rows = (await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)).all()
            lines = [str(row[0]) for row in rows]
            ok = any(index in line for line in lines for index in INDEXES) and not any("Seq Scan" in line
                                                                                     for line in lines)
    for line in lines:
        log(f"    {line}")
    log(f"    -> partial indexes on open complaints searched, no table scan: {'yes' if ok else 'NO'}")
    return ok


async def select_one(core: Core) -> None:
    async with core.sessions() as session:
        await session.execute(text("SELECT 1"))


async def search(core: Core, item: dict) -> candidates.Decision:
    """The candidate search intake runs for one new complaint."""
    async with core.sessions() as session:
        return await candidates.find(session, core.config.incidents, item["features"], item["category"],
                                     core.clock.now(), latitude=item["lat"], longitude=item["lon"])


async def run(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    db = Database.from_args(args, "incidents")
    failures: list[str] = []
    core = None
    try:
        if args.store and db.folder is not None:
            db.folder.rmdir()  # the empty folder made for a new SQLite store: not needed
        if args.store and args.store.startswith("postgresql"):
            db.url, db.kind, db.created = args.store, "postgresql", False  # kept: neither made nor dropped
        elif args.store:
            if not (Path(args.store) / "feedback.db").is_file():
                raise SystemExit(f"no store kept at {args.store} (feedback.db missing)")
            db.url, db.folder = f"sqlite+aiosqlite:///{Path(args.store) / 'feedback.db'}", None
        else:
            await db.create()
        core = await open_core(parse_config({"storage": {"url": db.url}}, environ={}), clock=FrozenClock(NOW))
        async with core.engine.connect() as conn:
            version = (await conn.execute(text(
                "SELECT sqlite_version()" if db.kind == "sqlite" else "SHOW server_version"))).scalar()
        log(f"database: {db.kind} {version}")
        log(f"store: {args.rows:,} complaints, {args.open:,} open among the last ten days")
        pool = samples()
        if args.store:
            log(f"the store kept by an earlier run with --keep: {args.store}")
        else:
            log("seeding (not part of the target):")
            await seed(core, db, args, pool)
        probes = [item for item in pool]
        random.Random(args.seed + 1).shuffle(probes)
        probes = (probes * (args.runs // len(probes) + 1))[:args.runs]
        for item in probes[:20]:  # warm the pool, the statement caches and the pages on the path
            await search(core, item)
            await select_one(core)
        with Capture(core) as capture:
            decision = await search(core, next(p for p in pool if p["topic"] and p["place"] and p["lat"]))
        log(f"plan of the candidate query (a located report naming its event and place; "
            f"{decision.considered} open complaints compared):")
        if capture.statement is None or not await explain(core, db, capture.statement, capture.parameters):
            failures.append("the candidate query does not search the partial indexes only")
        times, baselines, compared = [], [], []
        for n, item in enumerate(probes):
            for which in ((0, 1) if n % 2 == 0 else (1, 0)):
                started = time.perf_counter()
                if which == 0:
                    compared.append((await search(core, item)).considered)
                    times.append(time.perf_counter() - started)
                else:
                    await select_one(core)
                    baselines.append(time.perf_counter() - started)
        median, p90 = statistics.median(times), sorted(times)[int(0.9 * (len(times) - 1))]
        base = statistics.median(baselines)
        verdict = "MET" if median * 1000 < TARGET_MS else "MISSED"
        log(f"candidate search: median {median * 1000:.2f} ms, p90 {p90 * 1000:.2f} ms over {len(times)} new "
            f"complaints (median {statistics.median(compared):.0f} open complaints compared, max {max(compared)}) | "
            f"baseline SELECT 1 median {base * 1000:.2f} ms | ratio {median / base:.1f} | target < {TARGET_MS:g} ms: "
            f"{verdict}")
        if verdict != "MET":
            failures.append(f"median {median * 1000:.2f} ms")
    finally:
        if core is not None:
            await core.close()
        await db.drop(args.keep)
    if failures:
        log("MISSED: " + "; ".join(failures))
    return 1 if failures and args.check else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="complaints in the store (1,000,000)")
    parser.add_argument("--open", type=int, default=10_000, help="open complaints among them (10,000)")
    parser.add_argument("--runs", type=int, default=400, help="new complaints searched for (400)")
    parser.add_argument("--chunk", type=int, default=20_000, help="rows per seeding transaction (20,000)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL with a generated database name")
    parser.add_argument("--database-url", help="postgresql+asyncpg://postgres@127.0.0.1:5432/<name>")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help=f"for --postgres ({DEFAULT_ADMIN_URL})")
    parser.add_argument("--seed", type=int, default=14, help="random seed of the data")
    parser.add_argument("--keep", action="store_true", help="keep the store (SQLite folder / PG database)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--store", help="a store kept by an earlier run with --keep, used as it is: a SQLite folder, "
                                        "or a postgresql+asyncpg:// URL")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
