"""Benchmark: how much of an intake batch runs under PostgreSQL's incident-grouping lock.

Not a test. Until 2026-12-06, with ``serve --workers N`` on PostgreSQL, a batch took an
advisory lock before it grouped its complaints into incidents (``bot/filing.py``,
``GROUPING_LOCK``: two workers' batches joining the same incidents deadlocked) and held it
to its commit, so that part of every batch ran one worker at a time, and it bounded what a
second worker could add (Amdahl). Since, only a batch that makes an incident takes a lock
(``grouping.CREATION_LOCK``); the part measured here is what the old lock covered.
This files batches of new SMS complaints (the texts of the other intake benchmarks, so a
storm's reports join incidents) straight through ``intake.receive_batch`` on a database
made and dropped for the run, and reports a batch's time and the part from its first
candidate search (the first statement under the lock) to its commit, observed through
SQLAlchemy's statement events.

    python bench/grouping_lock.py [--batch 32] [--batches 30]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
from sqlalchemy import event  # noqa: E402

from bot import intake  # noqa: E402
from common import sms_batch  # noqa: E402
from service.assembly import open_core  # noqa: E402
from service.config import parse_config  # noqa: E402

SEARCH = "SELECT anon_1.id, anon_1.tracking_code"  # the candidate search's first words


async def run(admin_url: str, size: int, batches: int) -> int:
    name = f"fi_bench_lock_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    host = admin_url.split("@", 1)[1].rsplit("/", 1)[0]
    url = f"postgresql+asyncpg://{admin_url.split('://', 1)[1].split('@', 1)[0]}@{host}/{name}"
    try:
        config = parse_config({"storage": {"url": url}, "web": {"port": 0}, "sms": {"gateways": [{
            "name": "twilio", "kind": "twilio", "number": "+84900000000", "api_url": "http://127.0.0.1:9",
            "secret_env": "FI_BENCH_LOCK_SECRET", "account_sid": "AC" + "0" * 32}]}}, {"FI_BENCH_LOCK_SECRET": "s"})
        core = await open_core(config)
        first: list[float] = []

        def seen(_conn, _cursor, statement, _params, _context, _many) -> None:
            if not first and statement.lstrip().startswith(SEARCH):
                first.append(time.perf_counter())

        event.listen(core.engine.sync_engine, "before_cursor_execute", seen)
        rng, number, whole, locked = random.Random(1), 0, [], []
        try:
            for round_ in range(batches + 2):
                inbounds, number = sms_batch(core.clock, rng, number + 1, size), number + size
                first.clear()
                start = time.perf_counter()
                await intake.receive_batch(core, inbounds)
                end = time.perf_counter()
                if round_ >= 2 and first:  # the first two warm the caches
                    whole.append(end - start)
                    locked.append(end - first[0])
        finally:
            event.remove(core.engine.sync_engine, "before_cursor_execute", seen)
            await core.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    if not whole:
        print("no batch ran a candidate search: is [incidents] enabled?")
        return 1
    share = sum(locked) / sum(whole)
    print(f"batches of {size} new SMS complaints on PostgreSQL, {len(whole)} measured: median batch "
          f"{statistics.median(whole) * 1000:.1f} ms, of it from the first candidate search to the commit "
          f"{statistics.median(locked) * 1000:.1f} ms ({share:.0%} of all batch time)")
    print(f"with N workers and every batch joining the same incidents, intake's writer goes at most "
          f"1 / ({share:.2f} + {1 - share:.2f} / N) times faster: x{1 / (share + (1 - share) / 2):.2f} at N = 2")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--batch", type=int, default=32, help="complaints a batch (default 32: wrk's -c32)")
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    return asyncio.run(run(args.admin_url, args.batch, args.batches))


if __name__ == "__main__":
    sys.exit(main())
