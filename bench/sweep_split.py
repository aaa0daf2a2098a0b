"""Where a SQLite sweep's time goes, step by step: the tool for the next attempt to make it
cheaper (bench/README.md, "The sweep's floor, on both databases").

Not a test and not a target. On a store seeded as ``bench/sweep.py`` seeds it (by default
40,000 complaints, a quarter of them overdue), it runs:

1. one sweep of the whole backlog, each step of ``bot.sweep._batch`` timed by wrapping the
   module's functions for this process (no code of the service is changed): acting on the
   complaints, the three writes, the contacts, the claim and the rest, and the
   transaction's begin and commit; and the time in each kind of statement, as SQLAlchemy
   saw it run;
2. the Python of one batch of every due complaint on a fresh copy, without writing, best
   of ``--repeat`` (the collector off, as in the sweep): the claim's rows, the ``_Due``
   objects, the contacts, acting, the marks' changes and values, the events' and
   messages' values, and letting it all go.

    python bench/sweep_split.py
    python bench/sweep_split.py --rows 100000 --overdue-fraction 0.1
    PYTHONPATH=<a checkout> python bench/sweep_split.py     # another code, the same way
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import shutil
import sys
import tempfile
import time
from collections import Counter
from operator import itemgetter
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # as sweep_count.py: PYTHONPATH's code first

import sweep_count  # noqa: E402
from sqlalchemy import event  # noqa: E402

import bot.sweep as swept  # noqa: E402
from bot import outbox, reach  # noqa: E402
from bot.directory import StaffDirectory  # noqa: E402
from bot.messages import Composer  # noqa: E402
from bot.outbox import driver_values  # noqa: E402
from storage.models import Event, OutboxMessage  # noqa: E402


def wrap(owner: object, name: str, label: str, spent: Counter) -> object:
    """Time every call of ``owner.name`` (a coroutine function or not) into ``spent[label]``;
    the function it was, to put back."""
    real = getattr(owner, name)
    if asyncio.iscoroutinefunction(real):
        @functools.wraps(real)
        async def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return await real(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - started
    else:
        @functools.wraps(real)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - started
    setattr(owner, name, timed)
    return real


def copy_of(store: Path, folder: Path, name: str) -> Path:
    copy = folder / name
    shutil.copyfile(store, copy)
    return copy


async def steps(store: Path, folder: Path) -> None:
    core = await sweep_count.open_store(copy_of(store, folder, "steps.db"))
    spent: Counter = Counter()
    statements: Counter = Counter()
    started_at: dict[int, float] = {}

    def before(conn, _cursor, _statement, _parameters, _context, _executemany) -> None:
        started_at[id(conn)] = time.perf_counter()

    def after(conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        words = statement.split()
        statements[" ".join(words[:3])[:40]] += time.perf_counter() - started_at.pop(id(conn))

    event.listen(core.engine.sync_engine, "before_cursor_execute", before)
    event.listen(core.engine.sync_engine, "after_cursor_execute", after)
    wrapped = []
    for owner, name, label in ((swept, "_act", "acting on each complaint (_act)"),
                               (swept, "_write", "UPDATE complaints (_write)"),
                               (swept, "insert_rows", "INSERT events"),
                               (swept.outbox, "enqueue_rows", "INSERT outbox (enqueue_rows)"),
                               (swept, "_riders", "incident riders"),
                               (swept.reach, "contacts_of", "contacts"),
                               (swept.reach, "choose_each", "where each message goes"),
                               (swept.messages, "thread_ids", "reply threads"),
                               (swept, "_batch", "batch"),
                               (swept, "_next_batch", "transaction")):
        wrapped.append((owner, name, wrap(owner, name, label, spent)))
    try:
        started, cpu = time.perf_counter(), time.process_time()
        result = await swept.sweep(core)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        for owner, name, real in wrapped:
            setattr(owner, name, real)
        await core.close()
    named = sum(seconds for label, seconds in spent.items() if label not in ("batch", "transaction"))
    print(f"1. a sweep of {result.checked:,} due: {wall:.3f} s, this process's CPU {cpu:.3f} s")
    for label, seconds in spent.most_common():
        if label not in ("batch", "transaction"):
            print(f"   {label:40} {seconds:6.3f} s")
    print(f"   {'the claim, its rows, the composer, the rest':40} {spent['batch'] - named:6.3f} s")
    print(f"   {'begin, commit, the session':40} {spent['transaction'] - spent['batch']:6.3f} s")
    print("   statements, as SQLAlchemy saw them run:")
    for kind, seconds in statements.most_common(8):
        print(f"     {kind:38} {seconds:6.3f} s")


async def python_only(store: Path, folder: Path, repeat: int) -> None:
    core = await sweep_count.open_store(copy_of(store, folder, "python.db"))
    best: dict[str, float] = {}

    def note(label: str, since: float) -> float:
        now = time.perf_counter()
        best[label] = min(best.get(label, float("inf")), now - since)
        return now

    outbox_columns = outbox.ROW_COLUMNS
    enabled = gc.isenabled()
    gc.disable()
    try:
        now = core.clock.now()
        async with core.sessions() as session, session.begin():
            dialect = session.bind.dialect
            for _ in range(repeat):
                t = time.perf_counter()
                rows = (await session.execute(swept._claim(now, 10**9))).all()
                t = note("the claim (statement and rows)", t)
                complaints = [swept._Due(row) for row in rows]
                t = note("the _Due objects", t)
                contacts = await reach.contacts_of(session, complaints, plain=True)
                reached = await reach.choose_each(core, session, contacts, "apology", now)
                t = note("contacts and where each goes", t)
                composer = Composer(core, await StaffDirectory.load(session), now)
                batch = swept._Batch(core, now, composer, reached, {})
                result = swept.SweepResult()
                t = time.perf_counter()
                for complaint in complaints:
                    swept._act(batch, complaint, result)
                t = note("acting on each complaint", t)
                groups: dict[tuple, list[dict]] = {}
                for complaint in complaints:
                    if changed := complaint.changes():
                        groups.setdefault(tuple(changed), []).append(changed)
                for names, changes in groups.items():
                    for name in names:
                        driver_values(dialect, swept._COMPLAINTS.c[name], [changed[name] for changed in changes])
                t = note("the marks' changes and values", t)
                for table, names, written in ((Event.__table__, swept._EVENT_COLUMNS, batch.events),
                                              (OutboxMessage.__table__, outbox_columns, composer.rows)):
                    for name in names:
                        driver_values(dialect, table.c[name], list(map(itemgetter(name), written)))
                t = note("the events' and messages' values", t)
                del rows, complaints, contacts, reached, composer, batch, groups
                note("letting it all go", t)
            await session.rollback()
    finally:
        if enabled:
            gc.enable()
        await core.close()
    print(f"2. the Python of one batch of every due complaint, best of {repeat}, nothing written:")
    for label, seconds in best.items():
        print(f"   {label:40} {seconds * 1000:7.1f} ms")
    print(f"   {'in all':40} {sum(best.values()) * 1000:7.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000, help="complaints in the store (40,000)")
    parser.add_argument("--overdue-fraction", type=float, default=0.25, help="share overdue (0.25)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of part 2, the best kept (7)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fi-bench-sweep-split-"))
    try:
        store = folder / "store.db"
        overdue = asyncio.run(sweep_count.seed(store, args.rows, args.overdue_fraction))
        print(f"store: {args.rows:,} complaints, {overdue:,} overdue")
        asyncio.run(steps(store, folder))
        asyncio.run(python_only(store, folder, args.repeat))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
