"""Digests from separate processes: two processes sending the same digests at once send
each one once (SQLite and PostgreSQL), and the `feedback-intake digest` command."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image
from sqlalchemy import func, select

from bot import charts
from storage.models import DigestRun, OutboxMessage
from tests.test_digest import CONFIG, seed_week

ROOT = Path(__file__).resolve().parent.parent

# One process of the service's kind: its own Core on the shared store, on a clock frozen at
# the given moment, sending the digests named on the command line once told to go.
WORKER = """
import asyncio, json, sys
from datetime import datetime
from bot import digests
from bot.clock import FrozenClock
from service.config import load_config
from bot.core import Core
from service.assembly import open_core

async def main(config, now, periods):
    core = await open_core(load_config(config), clock=FrozenClock(datetime.fromisoformat(now)), upgrade=False)
    print("ready", flush=True)
    sys.stdin.readline()
    results = []
    for name in periods.split(","):
        for unit in ("tiep-nhan", "dien-luc"):
            period = digests.parse_period(name, core.clock.now(), core.config.tz)
            results.append([unit, name, (await digests.send(core, unit, period)).result])
    await core.close()
    print(json.dumps(results), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def write_config(folder: Path, database_url: str) -> Path:
    """CONFIG on this test's database, as a TOML file the command reads."""
    lines = [f"[storage]\nurl = {toml_value(database_url)}"]
    for table, values in CONFIG.items():
        if isinstance(values, dict):
            lines.append(f"[{table}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        else:
            for item in values:
                lines.append(f"[[{table}]]")
                lines += [f"{key} = {toml_value(value)}" for key, value in item.items()]
    path = folder / "feedback.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def test_two_processes_sending_the_same_digests_send_each_once(make_core, database_url, tmp_path):
    core = await make_core(CONFIG)
    await seed_week(core)
    config = write_config(tmp_path, database_url)
    periods = "2026-11-02,2026-11-03,2026-11-04,2026-W44,2026-W45"
    workers = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, str(config), core.clock.now().isoformat(), periods, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for _ in range(2)]
    for worker in workers:  # both started and connected before either sends
        assert (await asyncio.wait_for(worker.stdout.readline(), 120)).strip() == b"ready"
    for worker in workers:
        worker.stdin.write(b"go\n")
        await worker.stdin.drain()
    outputs = [await asyncio.wait_for(worker.communicate(), 300) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr.decode()
    results = [json.loads(stdout) for stdout, _ in outputs]

    pairs = {(unit, name) for unit, name, _ in results[0]}
    assert len(pairs) == 10
    for pair in pairs:
        seen = sorted(result for worker in results for unit, name, result in worker if (unit, name) == pair)
        assert seen == ["already sent", "queued"], (pair, seen)
    queued = {(unit, name) for worker in results for unit, name, result in worker if result == "queued"}
    async with core.sessions() as session:
        runs = await session.scalar(select(func.count()).select_from(DigestRun))
        keys = (await session.scalars(select(OutboxMessage.key).where(OutboxMessage.key.startswith("digest:")))).all()
    assert runs == len(queued) == 10
    # The reception desk's head has Telegram and email, the power company's head email only.
    assert len(keys) == len(set(keys)) == 5 * 2 + 5 * 1


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=ROOT, capture_output=True, text=True, timeout=120)


async def test_the_digest_command_prints_a_dry_run_and_sends_once(make_core, database_url, tmp_path):
    core = await make_core(CONFIG)
    await seed_week(core)
    config = write_config(tmp_path, database_url)
    chart = tmp_path / "chart.png"

    dry = await asyncio.to_thread(run, "digest", "--unit", "tiep-nhan", "--period", "2026-W45", "--dry-run",
                                  "--chart", str(chart), "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("Báo cáo tổng hợp hằng tuần: Bộ phận tiếp nhận, tuần 45 năm 2026")
    assert "Tỷ lệ trả lời đúng hạn: 75,0% (3/4 phản ánh)." in dry.stdout
    assert "098* *** 321" in dry.stdout and "0987 654 321" not in dry.stdout
    assert str(chart) in dry.stderr
    assert Image.open(io.BytesIO(chart.read_bytes())).size == charts.SIZE

    english = await asyncio.to_thread(run, "digest", "--unit", "tiep-nhan", "--period", "2026-11-02", "--dry-run",
                                      "--language", "en", "--chart", str(tmp_path / "en.png"),
                                      "--config", str(config))
    assert english.returncode == 0 and english.stdout.startswith("Daily digest: Reception desk, 02 Nov 2026")

    async with core.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(DigestRun)) == 0  # a dry run records nothing

    sent = await asyncio.to_thread(run, "digest", "--unit", "tiep-nhan", "--period", "2026-W45",
                                   "--config", str(config))
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "weekly digest 2026-W45 for tiep-nhan: queued 2 message(s); " \
                                  "the running service sends them"
    again = await asyncio.to_thread(run, "digest", "--unit", "tiep-nhan", "--period", "2026-W45",
                                    "--config", str(config))
    assert again.returncode == 0 and "already sent" in again.stdout
    async with core.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(DigestRun)) == 1
        rows = (await session.scalars(select(OutboxMessage).where(OutboxMessage.key.startswith("digest:")))).all()
    assert sorted(r.channel for r in rows) == ["email", "telegram"]

    for bad in (("--unit", "khong-co"), ("--unit", "tiep-nhan", "--period", "2026-W99")):
        refused = await asyncio.to_thread(run, "digest", *bad, "--config", str(config))
        assert refused.returncode == 2 and refused.stderr.startswith("error:"), refused.stderr
