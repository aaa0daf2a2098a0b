"""The sweep's benchmark tools on small stores.

bench/sweep_floor.py, the sweep's floor (``python bench/sweep.py --floor``): on a small
store seeded as the benchmark seeds (a SQLite file, or PostgreSQL with FEEDBACK_TEST_POSTGRES), it queues one apology and one escalation per
overdue complaint with its marks and events, in the service's own formats (the service
reads back what it wrote), and the store is put back for the sweep measured after it.

bench/sweep_split.py: each step named, within the sweep's own time.

bench/sweep.py --floor --check: the processing verdict is sweep/floor (issue 16's revision)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # the benchmarks import their siblings by name

import sweep as bench  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bot.clock import FrozenClock  # noqa: E402
from bot.core import SenderTerms  # noqa: E402
from bot.sweep import sweep  # noqa: E402
from service.assembly import open_core  # noqa: E402
from service.config import parse_config  # noqa: E402
from storage.models import Complaint, OutboxMessage  # noqa: E402


async def test_the_floor_does_what_the_sweep_guarantees_and_leaves_the_store_as_seeded(database_url):
    url = database_url
    core = await open_core(parse_config(bench.bench_config(url), environ={}), clock=FrozenClock(bench.NOW))
    core.senders = {"sms": SenderTerms(), "telegram": SenderTerms()}
    try:
        args = argparse.Namespace(rows=400, overdue_fraction=0.25, placement="recent", seed=69, chunk=1000,
                                  history=True, no_copy=False, postgres=False, batch_size=bench.BATCH,
                                  sqlite_analyze=False)
        kind = "postgresql" if url.startswith("postgresql") else "sqlite"
        seeded = await bench.seed(core, bench.Database(url, kind), args)
        assert len(seeded.overdue) == 100
        async with core.sessions() as session:
            before = await session.scalar(select(func.count()).select_from(OutboxMessage))

        elapsed, cpu, ok = await bench.floor_processing(core, seeded)
        assert ok and elapsed > 0 and cpu >= 0
        async with core.sessions() as session:
            # Put back: nothing apologised for, nothing queued; the floor's rows set aside as sent.
            assert await session.scalar(select(func.count()).select_from(Complaint)
                                        .where(Complaint.apologised_for_due.is_not(None))) == 0
            assert await session.scalar(select(func.count()).select_from(OutboxMessage)
                                        .where(OutboxMessage.status == "queued")) == 0
            assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == before + 200

        # The service's sweep then finds every overdue complaint due, as in the benchmark.
        result = await sweep(core)
        assert (result.checked, result.apologies, result.escalations) == (100, 100, 100)
        assert await bench.verify(core, seeded, result)
    finally:
        await core.close()


def test_the_sweep_split_names_each_step_within_the_sweeps_time():
    """bench/sweep_split.py on a small store: every step of a batch is named, the named steps
    take no more than the sweep did, and the Python of one batch is given step by step."""
    import re
    import subprocess

    run = subprocess.run([sys.executable, str(ROOT / "bench" / "sweep_split.py"), "--rows", "400", "--repeat", "1"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    total = float(re.search(r"1\. a sweep of 100 due: ([\d.]+) s", out).group(1))
    steps = {label: float(seconds) for label, seconds in re.findall(r"^   (\S.*?)\s+([\d.]+) s$", out, re.M)}
    for label in ("acting on each complaint (_act)", "INSERT outbox (enqueue_rows)", "UPDATE complaints (_write)",
                  "INSERT events", "contacts", "begin, commit, the session"):
        assert label in steps, out
    # Each figure is printed to the millisecond, so the named steps' sum may exceed the whole
    # by half a millisecond a step. (The whole was printed to 10 ms: in CI its "0.02 s" stood
    # against ten steps that summed to 0.022 s.)
    assert 0 < sum(steps.values()) <= total * 1.05 + 0.0005 * len(steps), out
    python = re.findall(r"^   (\S.*?)\s+([\d.]+) ms$", out, re.M)
    assert [label for label, _ in python][:2] == ["the claim (statement and rows)", "the _Due objects"], out
    assert [label for label, _ in python][-1] == "in all", out


def test_with_its_floor_the_sweeps_check_judges_sweep_over_floor():
    """bench/sweep.py --floor --check (issue 16's revision): the processing verdict printed is
    sweep/floor against its bar, and the exit code follows that verdict, not the 1.5 s target."""
    import re
    import subprocess

    run = subprocess.run([sys.executable, str(ROOT / "bench" / "sweep.py"), "--rows", "2000", "--overdue-fraction",
                          "0.1", "--repeat", "1", "--runs", "5", "--floor", "--check"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    out = run.stdout
    ratio = float(re.search(r"\| sweep/floor ([\d.]+) \|", out).group(1))
    bar = bench.TARGET_FLOOR_RATIO["sqlite"]
    verdict = re.search(r"revised target \(issue 16, closed\): sweep/floor <= ([\d.]+): (MET|MISSED)", out)
    assert verdict and float(verdict.group(1)) == bar, out
    if abs(ratio - bar) > 0.005:  # the ratio is printed rounded
        assert (verdict.group(2) == "MET") == (ratio <= bar), out
    failed = re.search(r"result: (.*)$", out, re.M).group(1)
    assert ("processing target (sweep/floor)" in failed) == (verdict.group(2) == "MISSED"), out
    assert "processing target" not in failed.replace("processing target (sweep/floor)", ""), out  # 1.5 s not judged
    assert run.returncode == (0 if failed == "all targets met" else 1), run.stderr[-2000:]
