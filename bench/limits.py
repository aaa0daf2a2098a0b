"""Benchmark: what flood control costs a request on the intake path (issue 18).

Not a test. In one process, on one store (a temporary SQLite file, or PostgreSQL with
--postgres), it measures:

* the web form end to end (GET the form once per client, then POSTs that each file a
  complaint and answer 303), with the service set up three ways in alternating slices so
  that the machine's noise falls on all alike: ``off`` (no form limits, no burst
  grouping), ``limits`` (the form's per-address and per-session limits on, set so high
  that nothing is refused: each post pays its two counter upserts) and ``all`` (limits
  and the grouping of officers' notifications, which adds one upsert per intake batch);
* the limiter alone: ``admit`` for a client within its limit (on PostgreSQL one upsert in
  a transaction of its own; on SQLite counted in the process) and for a client already
  refused (answered from the process's memory, no round trip).

    python bench/limits.py                       # SQLite, 3 rounds of 300 posts per mode
    python bench/limits.py --postgres            # PostgreSQL at 127.0.0.1:5432
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import TEXTS, Database, log  # noqa: E402
from bot.limits import Limiter  # noqa: E402
from service import edge  # noqa: E402
from service.app import build_app  # noqa: E402
from service.assembly import open_core  # noqa: E402
from service.config import parse_config  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HIDDEN = re.compile(r'name="(csrf_token|submission_id)" value="([^"]*)"')
HIGH = 1_000_000_000
MODES = {
    "off": {"web": {"form_limit_per_client": 0, "form_limit_per_session": 0}, "notifications": {"burst_after": 0}},
    "limits": {"web": {"form_limit_per_client": HIGH, "form_limit_per_session": HIGH},
               "notifications": {"burst_after": 0}},
    "all": {"web": {"form_limit_per_client": HIGH, "form_limit_per_session": HIGH},
            "notifications": {"burst_after": HIGH}},
}


def config_for(url: str, mode: str):
    data = {"storage": {"url": url}, "web": {"port": 0, "max_connections": 2000}, "service": {"log_level": "WARNING"},
            "staff": [{"slug": "an", "name": "An", "unit": "tiep-nhan", "telegram_chat_id": 111}]}
    for section, values in MODES[mode].items():
        data[section] = {**data.get(section, {}), **values}
    return parse_config(data, {})


async def form_slice(url: str, mode: str, requests: int, clients: int, offset: int) -> float:
    """Seconds per posted complaint, end to end, with the service in this mode."""
    config = config_for(url, mode)
    runner, site = await edge.start(build_app(config, run_dispatcher=False, run_scheduler=False), config,
                                    "127.0.0.1", 0)
    base = f"http://127.0.0.1:{site.port}"
    try:
        sessions = [aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) for _ in range(clients)]
        hidden = []
        for session in sessions:
            async with session.get("/") as answer:
                hidden.append(dict(HIDDEN.findall(await answer.text())))
        per_client = requests // clients

        async def client(number: int) -> None:
            for sent in range(per_client):
                data = dict(hidden[number], submission_id=f"{offset + number * per_client + sent:032x}",
                            text=TEXTS[sent % len(TEXTS)])
                async with sessions[number].post("/", data=data, allow_redirects=False) as answer:
                    assert answer.status == 303, answer.status

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
        for session in sessions:
            await session.close()
        return elapsed / (per_client * clients)
    finally:
        await runner.cleanup()


async def limiter_alone(url: str, calls: int) -> tuple[float, float]:
    """Seconds per admit(): a client within its limit, and one already refused."""
    core = await open_core(config_for(url, "off"))
    try:
        limiter = Limiter(core)
        started = time.perf_counter()
        for number in range(calls):
            assert await limiter.admit("bench", f"client-{number % 50}", HIGH, 600) is None
        allowed = (time.perf_counter() - started) / calls
        await limiter.admit("bench", "flooder", 1, 600)
        await limiter.admit("bench", "flooder", 1, 600)
        started = time.perf_counter()
        for _ in range(calls):
            assert await limiter.admit("bench", "flooder", 1, 600) is not None
        refused = (time.perf_counter() - started) / calls
        return allowed, refused
    finally:
        await core.close()


async def run(args: argparse.Namespace) -> int:
    database = Database.from_args(args, "limits")
    await database.create()
    try:
        core = await open_core(config_for(database.url, "off"))  # migrates once, before any slice
        await core.close()
        results: dict[str, list[float]] = {mode: [] for mode in MODES}
        offset = 0
        for round_number in range(args.rounds):
            for mode in MODES:
                results[mode].append(await form_slice(database.url, mode, args.requests, args.clients, offset))
                offset += args.requests
            log(f"round {round_number + 1}: " + ", ".join(f"{mode} {results[mode][-1] * 1000:.2f} ms/post"
                                                          for mode in MODES))
        base = statistics.median(results["off"])
        log(f"\nweb form, {database.kind}, {args.clients} clients, median of {args.rounds} rounds "
            f"of {args.requests} posts:")
        for mode in MODES:
            value = statistics.median(results[mode])
            log(f"  {mode:7} {value * 1000:6.2f} ms per post  ({1 / value:6.0f} posts/s, "
                f"{(value - base) * 1000:+.2f} ms, x{value / base:.2f} of off)")
        allowed, refused = await limiter_alone(database.url, args.calls)
        how = "one upsert in the store" if database.kind == "postgresql" else "counted in the process"
        log(f"\nlimiter alone, {args.calls} calls: within the limit {allowed * 1e6:.0f} us per call "
            f"({how}); already refused {refused * 1e6:.1f} us per call (from memory)")
        return 0
    finally:
        await database.drop(keep=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="posts per slice (300)")
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three modes (3)")
    parser.add_argument("--calls", type=int, default=2000, help="admit() calls for the limiter alone (2000)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL with a generated database name")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help=f"for --postgres ({DEFAULT_ADMIN_URL})")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
