"""Benchmark: two outbox statements on a large SQLite outbox, each in the form the service
used before 2026-12-06 and in its form now, in the same run.

Not a test. A migrated SQLite file gets N outbox rows (the service's migrations, so its
indexes), then, with sqlite3 straight on the file:

* the claim's UPDATE of 20 rows: ``id IN (...) AND status = 'queued'`` (before: SQLite, with
  no statistics, planned it through the status index and read every queued row) against
  ``id IN (...)`` (now: the primary key); the rows are all queued, as in a backlog;
* a lookup of our message by the provider's id, ``channel = ? AND external_id = ?``, with
  ``ix_outbox_channel_external_id`` (migration 0010) and after dropping it (before 0010).

Each is timed over 20 runs (the UPDATEs rolled back) and printed with its plan.

    python bench/outbox_lookups.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import db  # noqa: E402

NOW = "2026-12-06 00:00:00.000000"


def timed(connection: sqlite3.Connection, sql: str, runs: list[tuple], label: str) -> None:
    plan = " | ".join(row[-1] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql} -- {label}", runs[0]))
    times = []
    for parameters in runs:
        start = time.perf_counter()
        connection.execute(sql, parameters).fetchall()
        times.append(time.perf_counter() - start)
    print(f"  {label}: median {statistics.median(times) * 1000:.3f} ms over {len(runs)}; plan: {plan}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fi-bench-outbox-") as folder:
        path = Path(folder) / "feedback.db"

        async def migrate() -> None:
            engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
            await db.upgrade(engine)
            await engine.dispose()

        asyncio.run(migrate())
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO outbox (key, channel, recipient, payload, status, attempts, next_attempt_at, created_at, "
            "unsure, resent, external_id) VALUES (?, 'sms', '+84900000000', '{}', 'queued', 0, ?, ?, 0, 0, ?)",
            ((f"bench:{i}", NOW, NOW, f"SM{i:032d}") for i in range(args.rows)))
        connection.execute("COMMIT")
        print(f"SQLite {sqlite3.sqlite_version}: {args.rows:,} outbox rows, all queued")
        ids = [tuple(range(1 + 20 * k, 21 + 20 * k)) for k in range(20)]
        marks = ", ".join("?" * 20)
        connection.execute("BEGIN")
        timed(connection, f"UPDATE outbox SET status = 'claimed', claimed_by = 'w' WHERE id IN ({marks}) "
                          "AND status = ?", [(*run, "queued") for run in ids], "claim, id and status (before)")
        timed(connection, f"UPDATE outbox SET status = 'claimed', claimed_by = 'w' WHERE id IN ({marks})",
              ids, "claim, id alone (now)")
        connection.execute("ROLLBACK")
        lookups = [("sms", f"SM{(2 * k + 1) * args.rows // 40:032d}") for k in range(20)]  # spread over the table
        sql = "SELECT id FROM outbox WHERE channel = ? AND external_id = ? LIMIT 1"
        timed(connection, sql, lookups, "by the provider's id, with ix_outbox_channel_external_id (now)")
        connection.execute("DROP INDEX ix_outbox_channel_external_id")
        timed(connection, sql, lookups, "by the provider's id, without it (before 0010)")
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
