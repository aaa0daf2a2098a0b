"""The CPU of intake's batches alone: no HTTP, no sending, SQLite in a temporary folder.

Batches of new SMS complaints (the benchmarks' texts, distinct phones) go straight
through ``intake.receive_batch`` as the ``IntakeWriter`` hands them over; the process's
CPU (both threads: the event loop and aiosqlite's) is divided by the complaints filed.
The first five batches warm the caches and are not counted. ``--statements`` also prints
the statements of the last batch, by kind.

    python bench/intake_batch.py [--batches 60] [--size 32] [--statements]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event  # noqa: E402

from bot import intake  # noqa: E402
from common import sms_batch  # noqa: E402
from service.assembly import open_core  # noqa: E402
from service.config import parse_config  # noqa: E402

WARM = 5


async def run(batches: int, size: int, statements: bool) -> int:
    with tempfile.TemporaryDirectory() as folder:
        config = parse_config({"storage": {"url": f"sqlite+aiosqlite:///{folder}/intake.db"}, "web": {"port": 0},
                               "sms": {"gateways": [{"name": "twilio", "kind": "twilio", "number": "+84900000000",
                                                     "api_url": "http://127.0.0.1:9", "secret_env": "FI_BENCH_S",
                                                     "account_sid": "AC" + "0" * 32}]}}, {"FI_BENCH_S": "s"})
        core = await open_core(config)
        seen: list[str] = []

        def record(_conn, _cursor, statement, _params, _context, _many) -> None:
            seen.append(re.sub(r"\s+", " ", statement)[:70])

        rng, number, cpu = random.Random(1), 0, 0.0
        try:
            for round_ in range(batches + WARM):
                inbounds, number = sms_batch(core.clock, rng, number + 1, size), number + size
                last = round_ == batches + WARM - 1
                if last and statements:
                    event.listen(core.engine.sync_engine, "before_cursor_execute", record)
                started = time.process_time()
                results = await intake.receive_batch(core, inbounds)
                if round_ >= WARM:
                    cpu += time.process_time() - started
                if any(isinstance(result, Exception) for result in results):
                    print("a batch failed:", [r for r in results if isinstance(r, Exception)][:1])
                    return 1
        finally:
            await core.close()
    print(f"{batches} batches of {size} new SMS complaints on SQLite: {cpu / (batches * size) * 1000:.3f} ms "
          f"of CPU a complaint (the process, both threads)")
    if statements:
        print(f"statements of the last batch: {len(seen)}")
        for statement, count in collections.Counter(seen).most_common():
            print(f"  {count:3d}  {statement}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--statements", action="store_true")
    args = parser.parse_args()
    return asyncio.run(run(args.batches, args.size, args.statements))


if __name__ == "__main__":
    sys.exit(main())
