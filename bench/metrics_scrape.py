"""Benchmark: what one /metrics scrape costs the store with a large outbox history.

Not a test. A migrated SQLite file gets N sent (and 1 % failed) outbox messages, as a city
accrues in months, and a few queued; then ``outbox.refresh_gauges`` (what ``GET /metrics``
runs) is timed through the service's own core:

* the first scrape, which reads everything (the history too);
* the scrapes after it within ``HISTORY_EVERY``, which read only the work in hand;
* how long a short transaction (as intake's, every 5 ms) waits for the store while a scrape
  reads the history again: a read on the process's one SQLite connection holds it (and,
  with ``BEGIN IMMEDIATE``, the write lock), a read aside (``storage.db.read_aside``) not. Run it with ``PYTHONPATH=<a checkout of 4a48bc6>`` for the
code before 2026-12-06, which read everything at every scrape.

    python bench/metrics_scrape.py [--rows 1000000] [--scrapes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

if not os.environ.get("PYTHONPATH"):  # else PYTHONPATH names the checkout to measure
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot import outbox  # noqa: E402
from service.assembly import open_core  # noqa: E402
from service.config import parse_config  # noqa: E402
from sqlalchemy import text  # noqa: E402

CHANNELS = ("sms", "zalo", "email", "telegram")


def seed(path: Path, rows: int) -> None:
    payload = json.dumps({"text": "Chúng tôi đã nhận phản ánh của Quý ông/bà. " * 6, "kind": "acknowledgement"},
                         ensure_ascii=False)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO outbox (key, reference, channel, recipient, payload, status, attempts, next_attempt_at,"
        " created_at, sent_at, unsure, resent, external_id, delivery) VALUES"
        " (?, ?, ?, ?, ?, ?, 1, '2026-11-01 00:00:00.000000', '2026-11-01 00:00:00.000000',"
        " '2026-11-01 00:00:01.000000', 0, ?, ?, ?)",
        ((f"bench:{i}", f"{i:040x}", CHANNELS[i % 4], f"+8490{i:07d}", payload, "failed" if i % 100 == 0 else "sent",
          int(i % 5000 == 0), f"ext-{i}", "delivered" if i % 3 else None) for i in range(rows)))
    connection.executemany(
        "INSERT INTO outbox (key, reference, channel, recipient, payload, status, attempts, next_attempt_at,"
        " created_at, unsure, resent) VALUES (?, ?, 'sms', '+84900000000', '{}', 'queued', 0,"
        " '2026-12-06 00:00:00.000000', '2026-12-06 00:00:00.000000', 0, 0)",
        ((f"bench:queued:{i}", f"q{i:039x}") for i in range(20)))
    connection.execute("COMMIT")
    connection.close()


async def stalled(core) -> float:
    """The longest a short transaction (as intake's) waited for the store while a scrape
    that reads everything ran."""
    core.metrics.history_read_at = None  # the next scrape reads the history too
    waits: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            async with core.sessions() as session:
                await session.execute(text("SELECT 1"))
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.05)
    await outbox.refresh_gauges(core)
    done.set()
    await task
    return max(waits)


async def scrapes(url: str, count: int) -> tuple[float, list[float], float]:
    core = await open_core(parse_config({"storage": {"url": url}, "web": {"port": 0}}, {}))
    try:
        times = []
        for _ in range(count + 1):
            started = time.perf_counter()
            await outbox.refresh_gauges(core)
            times.append(time.perf_counter() - started)
        return times[0], times[1:], await stalled(core) if count else 0.0
    finally:
        await core.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=10)
    args = parser.parse_args()
    print(f"code from {Path(outbox.__file__).resolve().parent.parent}")
    with tempfile.TemporaryDirectory(prefix="fi-bench-metrics-") as folder:
        path = Path(folder) / "feedback.db"
        url = f"sqlite+aiosqlite:///{path}"
        asyncio.run(scrapes(url, 0))  # migrates the empty file
        started = time.perf_counter()
        seed(path, args.rows)
        print(f"seeded {args.rows:,} sent/failed and 20 queued outbox rows in {time.perf_counter() - started:.1f} s")
        first, rest, stall = asyncio.run(scrapes(url, args.scrapes))
        print(f"  first scrape (the history too): {first * 1000:.1f} ms")
        print(f"  next {len(rest)} scrapes: median {statistics.median(rest) * 1000:.2f} ms, "
              f"max {max(rest) * 1000:.2f} ms")
        print(f"  a scrape reading the history again: a short transaction meanwhile waited at most "
              f"{stall * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
