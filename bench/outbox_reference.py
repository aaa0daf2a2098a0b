"""Experiment: what the outbox's index of references costs a bulk insert, whole or partial.

Not a test, and not a benchmark of the service: it isolates the effect of migration 0013
(``bot.outbox.stored_reference``), which the sweep's own benchmark shows only within its
noise. Two SQLite files in WAL mode, each an outbox of ``--rows`` messages (half SMS, half
Telegram, the sweep's mix) with the outbox's other indexes; in one every message keeps our
reference and the index holds them all (before 0013), in the other only the SMS messages
keep one and the index holds only those (a store that has run with 0013 from the start; a
migrated store keeps its earlier rows' references, so it lies between the two). Then
batches of 2,000 rows (one sweep batch: 1,000 apologies by SMS, 1,000 escalations by
Telegram) are inserted into each in turn, alternating which goes first, each in its own
transaction with an ``executemany`` as ``outbox.insert_rows`` does; the references are
worked out before the clock starts.

    python bench/outbox_reference.py [--rows 1000000] [--batches 10]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import orjson

COLUMNS = ("key, reference, channel, recipient, complaint_id, payload, status, attempts, next_attempt_at, "
           "created_at, unsure, resent")
INSERT = f"INSERT INTO outbox ({COLUMNS}) VALUES ({', '.join('?' * 12)})"
PAYLOAD = orjson.dumps({"text": "Chúng tôi xin lỗi vì đã để Quý ông/bà chờ đợi. " * 6, "kind": "apology",
                        "render": {"text_key": "citizen.apology"}}).decode()
AT = "2026-11-04 03:00:00.000000"


def reference_of(key: str) -> str:
    return "fi-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]  # contract.messages.reference_of


def rows(first: int, count: int, partial: bool) -> list[tuple]:
    out = []
    for n in range(first, first + count):
        sms = n % 2 == 0
        key = f"apology:{n}:2026-11-04T03:00:00+00:00" if sms else f"escalation:{n}:2026-11-04T03:00:00+00:00:7"
        out.append((key, reference_of(key) if sms or not partial else None, "sms" if sms else "telegram",
                    "+84900000000", n, PAYLOAD, "queued", 0, AT, AT, 0, 0))
    return out


def store(folder: Path, partial: bool, count: int) -> sqlite3.Connection:
    db = sqlite3.connect(folder / f"{'partial' if partial else 'whole'}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"CREATE TABLE outbox (id INTEGER PRIMARY KEY, {COLUMNS.replace('key,', 'key UNIQUE,', 1)})")
    db.execute("CREATE INDEX ix_outbox_complaint_id ON outbox (complaint_id)")
    db.execute("CREATE INDEX ix_outbox_status_next_attempt_at ON outbox (status, next_attempt_at)")
    db.execute("CREATE INDEX ix_outbox_reference ON outbox (reference)"
               + (" WHERE reference IS NOT NULL" if partial else ""))
    db.execute("BEGIN")
    for first in range(0, count, 20_000):
        db.executemany(INSERT, rows(first, min(20_000, count - first), partial))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="messages already in each outbox (1,000,000)")
    parser.add_argument("--batches", type=int, default=10, help="batches of 2,000 into each (10)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fi-bench-reference-", dir=Path.cwd()))
    try:
        started = time.perf_counter()
        stores = {False: store(folder, False, args.rows), True: store(folder, True, args.rows)}
        print(f"two outboxes of {args.rows:,} messages in {time.perf_counter() - started:.0f} s")
        times: dict[bool, list[float]] = {False: [], True: []}
        first = 10 ** 9
        for n in range(args.batches):
            for partial in ((False, True) if n % 2 == 0 else (True, False)):
                batch = rows(first, 2_000, partial)
                first += 2_000
                db = stores[partial]
                started = time.perf_counter()
                db.execute("BEGIN IMMEDIATE")
                db.executemany(INSERT, batch)
                db.execute("COMMIT")
                times[partial].append(time.perf_counter() - started)
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # as the service's checkpointer does, aside
        for partial, name in ((False, "every message keeps a reference (before 0013)"),
                              (True, "only SMS messages keep one (0013)")):
            found = times[partial]
            print(f"{name}: median {statistics.median(found) * 1000:.1f} ms per 2,000 rows "
                  f"(min {min(found) * 1000:.1f}, max {max(found) * 1000:.1f}) over {len(found)} batches")
        print(f"ratio {statistics.median(times[True]) / statistics.median(times[False]):.2f}")
        for db in stores.values():
            db.close()
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
