"""Experiment: can SQLite's writes run beside Python work on another thread (the GIL)?

Not a test, and not a benchmark of the service: it answers why the sweep on SQLite does not
build one batch's messages while the driver's thread writes the last one (bench/README.md,
"What intake waits for while a backlog is swept"). In a temporary file, with the outbox's
shape (12 columns, three indexes, a 600-byte JSON payload), it times inserting 2,000 rows

* as one ``executemany`` (what ``outbox.insert_rows`` does on SQLite), and
* as one ``INSERT ... SELECT ... FROM json_each(?)`` of the rows as one JSON array (one
  ``sqlite3_step``: SQLite does the whole loop without the GIL),
* as ``INSERT ... VALUES (...), (...)`` lists of 500 rows (each list one ``sqlite3_step``
  without the GIL, the parameters bound in C beforehand),

each alone, then on a thread while the main thread runs pure Python; each form's data (a
list of tuples, the JSON text, the flat parameter lists) is made before the clock starts. An ``executemany``
binds each row holding the GIL and releases it for each step, so beside a busy main thread
it gets the GIL back only at the interpreter's switch interval (5 ms) for every row.

    python bench/sqlite_overlap.py
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import orjson

N = 2000
COLUMNS = ("key, reference, channel, recipient, complaint_id, payload, status, attempts, next_attempt_at, "
           "created_at, unsure, resent")
PAYLOAD = orjson.dumps({"text": "Chúng tôi xin lỗi vì đã để Quý ông/bà chờ đợi. " * 6, "kind": "apology",
                        "render": {"text_key": "citizen.apology"}}).decode()


def rows(base: int) -> list[tuple]:
    return [(f"k:{base + i}", f"fi-{(base + i) * 2654435761 % 2**48:x}", "sms", "+84900000000", base + i, PAYLOAD,
             "queued", 0, "2026-11-04 03:00:00.000000", "2026-11-04 03:00:00.000000", 0, 0) for i in range(N)]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = sqlite3.connect(Path(folder) / "overlap.db", check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"CREATE TABLE o (id INTEGER PRIMARY KEY, {COLUMNS.replace('key,', 'key UNIQUE,', 1)})")
        for index in ("reference", "complaint_id", "status, next_attempt_at"):
            db.execute(f"CREATE INDEX ix_{index.split(',')[0]} ON o ({index})")
        bases = iter(range(0, 10**9, N))

        def many(data: list[tuple]) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(f"INSERT INTO o ({COLUMNS}) VALUES ({', '.join('?' * 12)})", data)
            db.execute("COMMIT")

        def as_json(data: list[tuple]) -> str:
            return orjson.dumps(data).decode()

        def one_statement(data: str) -> None:
            picked = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(12))
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"INSERT INTO o ({COLUMNS}) SELECT {picked} FROM json_each(?)", (data,))
            db.execute("COMMIT")

        one_row = "(" + ", ".join("?" * 12) + ")"

        def as_values(data: list[tuple]) -> list[tuple]:
            return [tuple(value for row in data[start:start + 500] for value in row) for start in range(0, N, 500)]

        def values_lists(data: list[tuple]) -> None:
            db.execute("BEGIN IMMEDIATE")
            for flat in data:
                db.execute(f"INSERT INTO o ({COLUMNS}) VALUES " + ", ".join([one_row] * (len(flat) // 12)), flat)
            db.execute("COMMIT")

        # Each form's data is made ready on the main thread, before the clock starts.
        for name, prepare, write in (("executemany", list, many),
                                     ("INSERT ... FROM json_each", as_json, one_statement),
                                     ("INSERT ... VALUES, 500 rows a statement", as_values, values_lists)):
            alone = []
            for _ in range(5):
                data = prepare(rows(next(bases)))
                started = time.perf_counter()
                write(data)
                alone.append(time.perf_counter() - started)
            thread = threading.Thread(target=write, args=(prepare(rows(next(bases))),))
            started = time.perf_counter()
            thread.start()
            spins = 0
            while thread.is_alive():  # the main thread busy in Python meanwhile
                spins += sum(range(100))
            beside = time.perf_counter() - started
            print(f"{name}: {N:,} rows alone {min(alone) * 1000:.1f} ms (best of 5); on a thread beside busy "
                  f"Python {beside * 1000:.1f} ms")
        db.close()


if __name__ == "__main__":
    main()
