"""The fault suite, long: the real service under SMS load while things go wrong, counting
what citizens got. Not a test (tests/test_faults.py runs a short version in CI).

Scenarios (all by default):
  kill      SIGKILL at random points (--kills times) during --messages SMS: one process on
            SQLite, --processes on PostgreSQL (one of them killed each time)
  store     the store out of reach for --away seconds during the load
  gateway   the SMS gateway refuses (503) then does not answer in time, then is back
  zalo      SIGKILL at random points (--kills times) during --messages Zalo messages from
            new citizens (a greeting and an acknowledgement each; Zalo keeps no key of ours,
            so a send a kill left unsure must be found in the OA's conversation)

Each prints: accepted, stored, acknowledged, delivered, lost, doubled (a citizen with two
copies), sent again (a second request for one message, which the operator recognised by
our reference), and the seconds from recovery until the outbox was empty.

    python bench/faults.py                       # SQLite
    python bench/faults.py --postgres            # PostgreSQL, two processes
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DEFAULT_ADMIN_URL, Database, log  # noqa: E402
from tests.faults_harness import (  # noqa: E402
    BATCH_SIZE,
    gateway_down_under_load,
    killed_under_load,
    store_away_under_load,
    zalo_killed_under_load,
)


async def scenario(args: argparse.Namespace, name: str) -> bool:
    db = Database.from_args(args, f"faults_{name}")
    await db.create()
    processes = args.processes if db.kind == "postgresql" else 1
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as folder:
            if name == "kill":
                result = await killed_under_load(Path(folder), db.url, messages=args.messages, kills=args.kills,
                                                 processes=processes, concurrency=args.concurrency)
                bound = args.kills * BATCH_SIZE  # SMS: a whole batch in flight at once
                ok = result.lost == 0 and result.doubled == 0 and result.sent_again <= bound
                note = f"sent again at most {bound} ({args.kills} kills x batch {BATCH_SIZE})"
            elif name == "zalo":
                result = await zalo_killed_under_load(Path(folder), db.url, messages=args.messages, kills=args.kills,
                                                      processes=processes)
                ok = result.doubled == 0 and result.accepted == result.greeted == result.acknowledged
                note = "nothing doubled, every citizen greeted and acknowledged"
            elif name == "store":
                result = await store_away_under_load(Path(folder), db.url, messages=args.messages,
                                                     seconds=args.away, processes=processes)
                ok, note = result.lost == 0 and result.doubled == 0, f"store away {args.away:g} s"
            else:
                result = await gateway_down_under_load(Path(folder), db.url, messages=args.messages // 3,
                                                       refusals=args.refusals, slow=args.slow, processes=processes)
                ok, note = result.lost == 0 and result.doubled == 0, f"{args.refusals} x 503, {args.slow} x too slow"
    finally:
        await db.drop(keep=False)
    log(f"{name:<8} {db.kind:<10} processes {processes}: {result.line()}; {note}; "
        f"{time.monotonic() - started:.0f} s -> {'ok' if ok else 'FAILED'}")
    return ok


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # No choices= here: Python 3.11's argparse checks an empty list against them and refuses it.
    parser.add_argument("scenarios", nargs="*", metavar="kill|store|gateway|zalo", help="which scenarios (default: all)")
    parser.add_argument("--messages", type=int, default=1500, help="SMS (or Zalo messages) in the load (1,500)")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs during the load (2)")
    parser.add_argument("--processes", type=int, default=2, help="service processes on PostgreSQL (2)")
    parser.add_argument("--concurrency", type=int, default=4, help="outbox.concurrency (4)")
    parser.add_argument("--away", type=float, default=5.0, help="seconds the store is out of reach (5)")
    parser.add_argument("--refusals", type=int, default=200, help="503 answers from the gateway (200)")
    parser.add_argument("--slow", type=int, default=8, help="answers too late to wait for (8)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL with a generated database name")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help=f"for --postgres ({DEFAULT_ADMIN_URL})")
    args = parser.parse_args()
    unknown = sorted(set(args.scenarios) - {"kill", "store", "gateway", "zalo"})
    if unknown:
        parser.error(f"no scenario {', '.join(unknown)}: choose from kill, store, gateway, zalo")
    results = [await scenario(args, name) for name in (args.scenarios or ("kill", "store", "gateway", "zalo"))]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
