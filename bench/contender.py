"""Another process on the same store: a short write transaction every 50 ms, each timed.

Not run alone: ``bench/sweep.py --contender`` starts it beside each processing run, as a
command of the command line or a second worker would be on the same SQLite file, through
the service's own engine (``storage.db.create_engine``: ``BEGIN IMMEDIATE`` and the default
5 s busy timeout). It prints ``ready`` once connected, runs until its standard input
closes, then prints one JSON line: each transaction's wait for the write lock in seconds,
and the errors ("database is locked" past the busy timeout).

    python bench/contender.py sqlite+aiosqlite:////path/to/feedback.db
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from storage import db  # noqa: E402

PAUSE_SECONDS = 0.05


async def main(url: str) -> None:
    engine = db.create_engine(url)  # the default busy timeout, as `feedback-intake` commands have
    waits: list[float] = []
    errors: list[str] = []
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT 1"))
        print("ready", flush=True)
        closed = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(None, sys.stdin.read))
        while not closed.done():
            started = time.perf_counter()
            try:
                async with engine.begin() as connection:
                    waits.append(time.perf_counter() - started)
                    await connection.execute(text("SELECT 1"))
            except Exception as error:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:200]} "
                              f"after {time.perf_counter() - started:.2f} s")
            await asyncio.wait([closed], timeout=PAUSE_SECONDS)
    finally:
        await engine.dispose()
    print(json.dumps({"waits": waits, "errors": errors}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
