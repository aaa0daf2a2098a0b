"""Benchmark: what one /metrics scrape costs the store with a large outbox history.

Not a test. A migrated SQLite file gets N sent (and 1 % failed) outbox messages, as a city
accrues in months, and a few queued; then ``outbox.refresh_gauges`` (what ``GET /metrics``
runs) is timed through the service's own core:

* the first scrape, which reads everything (the history too);
* the scrapes after it within ``HISTORY_EVERY``, which read only the work in hand.

Each read holds the process's one SQLite connection (``BEGIN IMMEDIATE``: the write lock
too), so intake waits for it. Run it with ``PYTHONPATH=<a checkout of 4a48bc6>`` for the
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


async def scrapes(url: str, count: int) -> tuple[float, list[float]]:
    core = await open_core(parse_config({"storage": {"url": url}, "web": {"port": 0}}, {}))
    try:
        times = []
        for _ in range(count + 1):
            started = time.perf_counter()
            await outbox.refresh_gauges(core)
            times.append(time.perf_counter() - started)
        return times[0], times[1:]
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
        first, rest = asyncio.run(scrapes(url, args.scrapes))
        print(f"  first scrape: {first * 1000:.1f} ms")
        print(f"  next {len(rest)} scrapes: median {statistics.median(rest) * 1000:.2f} ms, "
              f"max {max(rest) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
