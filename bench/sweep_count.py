"""The deadline sweep's work counted in instructions, not timed: repeatable whatever else the
machine is doing, so a change of a few per cent to the sweep can be told from noise.

The sweep's wall time on these shared machines moves by ±15 % between runs of the same
code (``bench/sweep.py``), more than most single changes save. This runs the sweep under
``valgrind --tool=callgrind``, which counts the instructions the process executes (both
threads: the event loop's and SQLite's), and subtracts a run that only opens the same
store. A store (``bench/sweep.py``'s seeding: units, staff, contacts and complaints, the
overdue ones among the most recent) is seeded once, natively, and copied for each run, and
``PYTHONHASHSEED`` is fixed: two runs of one code differ by about 0.1 %.

    python bench/sweep_count.py                          # 8,000 complaints, 2,000 overdue
    python bench/sweep_count.py --rows 4000 --overdue-fraction 0.25
    PYTHONPATH=<a checkout> python bench/sweep_count.py  # another code, the same store

Needs valgrind (Debian package ``valgrind``). A run of 2,000 overdue takes a few minutes:
callgrind runs Python some fifty times slower. What it cannot see: time spent waiting (the
disk, locks) and what the memory's caches cost; for those, ``bench/sweep.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# This folder (bench/sweep.py's seeding) is first already. The code measured is what Python
# imports: PYTHONPATH's first, then an installed checkout (pip install -e), then this one.
sys.path.append(str(Path(__file__).resolve().parent.parent))

import sweep as bench  # noqa: E402
from bot.clock import FrozenClock  # noqa: E402
from bot.core import SenderTerms  # noqa: E402
from bot.sweep import sweep  # noqa: E402
from service.assembly import open_core  # noqa: E402
from service.config import parse_config  # noqa: E402

COLLECTED = re.compile(r"Collected : (\d+)")


async def open_store(path: Path):
    url = f"sqlite+aiosqlite:///{path}"
    core = await open_core(parse_config(bench.bench_config(url), environ={}), clock=FrozenClock(bench.NOW))
    core.senders = {"sms": SenderTerms(), "telegram": SenderTerms()}  # as bench/sweep.py: the service's senders
    return core


async def child(mode: str, path: Path) -> None:
    """One run under callgrind: open the store, and sweep it when asked."""
    core = await open_store(path)
    try:
        if mode == "sweep":
            result = await sweep(core)
            print(f"swept: {result}", file=sys.stderr)
    finally:
        await core.close()


async def seed(path: Path, rows: int, fraction: float) -> int:
    core = await open_store(path)
    try:
        args = argparse.Namespace(rows=rows, overdue_fraction=fraction, placement="recent", seed=69, chunk=20_000,
                                  history=True, no_copy=False, postgres=False, batch_size=bench.BATCH,
                                  sqlite_analyze=False)
        seeded = await bench.seed(core, bench.Database(f"sqlite+aiosqlite:///{path}", "sqlite"), args)
        return len(seeded.overdue)
    finally:
        await core.close()


def counted(mode: str, store: Path, folder: Path) -> int:
    """Instructions of one child run on a fresh copy of the store."""
    copy = folder / f"{mode}.db"
    shutil.copyfile(store, copy)
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder / mode}.out", sys.executable,
               __file__, "--child", mode, str(copy)]
    run = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0"))
    found = COLLECTED.search(run.stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run '{mode}' failed:\n{run.stderr[-2000:]}")
    if mode == "sweep":
        print("  " + next(line for line in run.stderr.splitlines() if line.startswith("swept:")))
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8000, help="complaints in the store (8,000)")
    parser.add_argument("--overdue-fraction", type=float, default=0.25, help="share overdue (0.25)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child[0], Path(args.child[1])))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind: apt-get install valgrind")
    folder = Path(tempfile.mkdtemp(prefix="fi-bench-sweep-count-"))
    try:
        store = folder / "store.db"
        overdue = asyncio.run(seed(store, args.rows, args.overdue_fraction))
        print(f"store: {args.rows:,} complaints, {overdue:,} overdue; counting two runs under callgrind")
        opened, swept = counted("open", store, folder), counted("sweep", store, folder)
        print(f"  opening the store alone: {opened:,} instructions")
        print(f"  opening and sweeping:    {swept:,} instructions")
        print(f"  the sweep: {swept - opened:,} instructions, {(swept - opened) / overdue:,.0f} a due complaint")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
