"""Benchmark: the reply-window look with many Zalo messages stored, with and without the
index on (channel, sender, created_at) (migration 0010).

Not a test. A channel with a reply window (Zalo's consultation messages) may write to a
citizen only so long after their last message, so where an acknowledgement, an apology or an
answer goes is chosen after a look at that last message (``bot/reach.py``, ``windows``).
This stores N inbound Zalo messages from N / 4 citizens (a store where most citizens write
on Zalo), then times ``reach.windows`` for a batch of 32 citizens (what intake asks for a
batch of 32 complaints), and for one citizen (what an answer asks), first with the index,
then after dropping it in the same run (the baseline: what the store did before 0010), and
prints each statement's plan.

    python bench/reply_window.py                    # SQLite, 200,000 messages
    python bench/reply_window.py --postgres         # PostgreSQL on 127.0.0.1 (made and dropped)
    python bench/reply_window.py --messages 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, insert  # noqa: E402

from bot import reach  # noqa: E402
from bot.core import SenderTerms  # noqa: E402
from common import Database  # noqa: E402
from contract.delivery import ReplyWindow  # noqa: E402
from service.assembly import open_core  # noqa: E402
from service.config import parse_config  # noqa: E402
from storage.models import Contact, Message  # noqa: E402

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)
INDEX = "ix_messages_channel_sender"


async def seed(core, messages: int) -> int:
    citizens = max(1, messages // 4)
    rows = []
    async with core.sessions() as session, session.begin():
        for i in range(messages):
            rows.append(dict(complaint_id=None, direction="in", channel="zalo", external_id=f"zalo:seed-{i}",
                             text="mất điện", sender=f"zalo-user-{i % citizens}",
                             created_at=NOW - timedelta(minutes=messages - i)))
            if len(rows) == 10_000:
                await session.execute(insert(Message.__table__), rows)
                rows = []
        if rows:
            await session.execute(insert(Message.__table__), rows)
    return citizens


async def timed(core, points: list[reach.Point], rounds: int, tag: str) -> tuple[float, set, list[str]]:
    statements: list[str] = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        if "max(messages.created_at)" in statement:
            statements.append((statement, parameters))

    event.listen(core.engine.sync_engine, "before_cursor_execute", record)
    times = []
    try:
        for _ in range(rounds):
            async with core.sessions() as session:
                start = time.perf_counter()
                closed = await reach.windows(core, session, points, NOW)
                times.append(time.perf_counter() - start)
    finally:
        event.remove(core.engine.sync_engine, "before_cursor_execute", record)
    statement, parameters = statements[-1]
    sqlite = core.engine.dialect.name == "sqlite"
    async with core.engine.connect() as conn:
        # The tag makes each EXPLAIN a statement of its own: sqlite3 keeps prepared statements,
        # and a kept EXPLAIN QUERY PLAN still showed the index after it was dropped.
        rows = (await conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement
                                           + f" -- {tag}", parameters)).all()
    return statistics.median(times), closed, [str(row[-1]) for row in rows]


async def run(args: argparse.Namespace) -> int:
    db = Database.from_args(args, "window")
    await db.create()
    try:
        core = await open_core(parse_config({"storage": {"url": db.url}, "web": {"port": 0}}, {}))
        core.senders = {"zalo": SenderTerms(ReplyWindow(48.0, None))}
        try:
            start = time.perf_counter()
            citizens = await seed(core, args.messages)
            print(f"{db.kind}: {args.messages:,} inbound Zalo messages from {citizens:,} citizens stored in "
                  f"{time.perf_counter() - start:.1f} s")
            if db.kind == "postgresql":
                async with core.engine.begin() as conn:
                    await conn.exec_driver_sql("ANALYZE messages")
            contact = Contact(id=0, channel="zalo", address="")
            batch = [reach.Point("zalo", f"zalo-user-{i * 97 % citizens}", contact) for i in range(32)]
            batch[0] = reach.Point("zalo", "zalo-user-never-wrote", contact)  # a closed window too
            one = batch[1:2]
            found = {}
            for label in ("with the index", "without it (before 0010)"):
                for what, points in (("32 citizens", batch), ("1 citizen", one)):
                    seconds, closed, plan = await timed(core, points, args.rounds, f"{label}, {what}")
                    found.setdefault(what, []).append((seconds, closed))
                    print(f"  {label}, {what}: median {seconds * 1000:.2f} ms over {args.rounds} looks; "
                          f"closed {len(closed)}")
                    print("    plan: " + " | ".join(plan))
                if label.startswith("with the"):
                    async with core.engine.begin() as conn:
                        await conn.exec_driver_sql(f"DROP INDEX {INDEX}")
                        if db.kind == "postgresql":
                            await conn.exec_driver_sql("ANALYZE messages")
            problems = [what for what, ((_, a), (_, b)) in found.items() if a != b]
            for what, ((fast, _), (slow, _)) in found.items():
                print(f"  {what}: without the index / with it = {slow / fast:.1f}")
            if problems:
                print(f"  PROBLEM: the two plans closed different windows for {', '.join(problems)}")
                return 1
        finally:
            await core.close()
    finally:
        await db.drop(False)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
