"""Benchmark: the staff desk's queue and search pages over HTTP with a million complaints
stored, on SQLite and on PostgreSQL.

The store is seeded directly (like bench/sweep.py): units with an officer and a head each,
an admin, contacts, complaints with a realistic mix of statuses (most finished, some
answered, a few new, assigned or overdue), and each complaint's first message with its
folded text, so the search index (FTS5 on SQLite, pg_trgm on PostgreSQL) holds them all.
Sessions are written straight into the store and their cookies signed with the key the
service is given, so no sign-in link is needed. Then the real service runs as its own
process (``feedback-intake serve``) and a load generator in this process GETs the pages,
one request at a time per worker, and prints p50 and p99 per page, the load generator's
CPU (so it is seen not to be the bottleneck) and the server's.

    python bench/desk.py                         # SQLite, 1,000,000 complaints
    python bench/desk.py --postgres              # PostgreSQL at 127.0.0.1:5432 (trust auth)
    python bench/desk.py --rows 100000 --requests 100
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import secrets
import sqlite3
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import aiohttp
from sqlalchemy import select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (TEXTS, Database, Server, free_port, log, plain_pg_url, service_command,  # noqa: E402
                          sqlite_path, wait_healthy)
from bot.desk_auth import token_hash  # noqa: E402
from bot.folding import fold  # noqa: E402
from service.assembly import open_core  # noqa: E402
from service.config import parse_config  # noqa: E402
from storage.models import Complaint, Contact, DeskSession, Message, Staff  # noqa: E402

# The service runs on the real clock, so the data are seeded around the real now (a benchmark,
# not domain code: no injected clock here).
NOW = datetime.now(timezone.utc).replace(microsecond=0)
UNITS = [(f"phuong-{n}", f"Phường {n}") for n in range(1, 11)]
STREETS = ("Nguyễn Chí Thanh", "Trần Duy Hưng", "Láng Hạ", "Kim Mã", "Giảng Võ", "Thái Hà", "Chùa Láng",
           "Huỳnh Thúc Kháng", "Hoàng Quốc Việt", "Cầu Giấy", "Xuân Thủy", "Lê Văn Lương", "Tố Hữu", "Phạm Hùng",
           "Nguyễn Trãi", "Trường Chinh", "Đại Cồ Việt", "Bạch Mai", "Minh Khai", "Tam Trinh")
CATEGORIES = ("giao-thong", "moi-truong", "an-ninh-trat-tu", "hanh-chinh", "khac")
SECRET_ENV = "FEEDBACK_BENCH_DESK_SECRET"


def bench_config(url: str, port: int, key_env: str) -> dict:
    """Ten units, each with an officer and a head; one admin; the sweep and digests kept quiet."""
    staff = [{"slug": "quan-tri", "name": "Quản trị", "unit": UNITS[0][0], "role": "admin",
              "email": "admin@example.gov.vn"}]
    for n, (slug, name) in enumerate(UNITS, start=1):
        staff.append({"slug": f"{slug}-head", "name": f"Trưởng {name}", "unit": slug, "role": "head",
                      "telegram_chat_id": 1000 * n + 1})
        staff.append({"slug": f"{slug}-agent", "name": f"Cán bộ {name}", "unit": slug, "role": "agent",
                      "telegram_chat_id": 1000 * n + 2})
    return {"storage": {"url": url}, "web": {"port": port, "public_url": "https://phananh.example.gov.vn"},
            "units": [{"slug": slug, "name": name} for slug, name in UNITS], "staff": staff,
            "routing": {"default_unit": UNITS[0][0]}, "scheduler": {"sweep_seconds": 86400.0},
            "digests": {"schedule": "0 8 1 1 *", "weekly_schedule": ""},
            "desk": {"secret_env": key_env, "requests_per_window": 1000}}


FOLDED_TEXTS = [fold(body) for body in TEXTS]
FOLDED_STREETS = [fold(street) for street in STREETS]


def complaint_text(rng: random.Random, i: int) -> tuple[str, str]:
    """A citizen's text: one of the sample complaints and an address (ngõ 1-5000 of 20 streets),
    and the same folded (in parts: folding a million long texts would take minutes)."""
    number, lane, street = rng.randint(1, 300), rng.randint(1, 5000), rng.randrange(len(STREETS))
    body = f"{TEXTS[i % len(TEXTS)]} Địa chỉ: số {number} ngõ {lane} phố {STREETS[street]}."
    return body, f"{FOLDED_TEXTS[i % len(TEXTS)]} dia chi so {number} ngo {lane} pho {FOLDED_STREETS[street]}"


def rows_for(rng: random.Random, i: int, n_contacts: int, unit_ids: list[int], agents: dict[int, int],
             rows: int) -> tuple[dict, dict]:
    """One complaint and its first message, created over two years, most of them finished."""
    created = NOW - timedelta(days=730) + (timedelta(days=730) - timedelta(hours=1)) * (i / rows)
    unit_id = unit_ids[i % len(unit_ids)]
    body, folded = complaint_text(rng, i)
    complaint = dict(
        id=i, tracking_code=f"PA-{i:08d}", contact_id=rng.randrange(n_contacts) + 1, alternate_contact_id=None,
        channel="sms", language="vi", subject=None, text=body, category=CATEGORIES[i % len(CATEGORIES)],
        area=None, latitude=None, longitude=None, unit_id=unit_id, assignee_id=None, routing_reason="default unit",
        status="new", created_at=created, updated_at=created, first_response_due=created + timedelta(days=2),
        resolution_due=created + timedelta(days=14), first_response_at=None, resolved_at=None, next_check_at=None,
        reminded_for_due=None, apologised_for_due=None, resolution_reminded_for_due=None,
        resolution_escalated_for_due=None, escalation_count=0, rating=None, rating_comment=None, rated_at=None)
    roll = rng.random()
    if i > rows - rows // 50 and roll < 0.5:  # recent and unanswered: the unit's open work, some overdue
        due = created + timedelta(days=2)
        complaint.update(status="assigned" if roll < 0.25 else "new",
                         assignee_id=agents[unit_id] if roll < 0.25 else None, first_response_due=due)
    elif roll < 0.85:
        answered = created + timedelta(hours=rng.randint(2, 40))
        resolved = answered + timedelta(days=rng.randint(0, 9))
        complaint.update(status="resolved", assignee_id=agents[unit_id], first_response_at=answered,
                         resolved_at=resolved, updated_at=resolved)
    else:
        answered = created + timedelta(hours=rng.randint(2, 40))
        complaint.update(status="answered", assignee_id=agents[unit_id], first_response_at=answered,
                         updated_at=answered, resolution_due=NOW + timedelta(days=rng.randint(1, 10)))
    message = dict(id=i, complaint_id=i, direction="in", channel="sms", external_id=f"bench-{i}",
                   author_staff_id=None, text=body, subject=None, sender=None, automated=False, public=False,
                   created_at=created, folded=folded)
    return complaint, message


async def seed(core, db: Database, rows: int, chunk: int, rng: random.Random) -> dict[str, float]:
    """Contacts, complaints and their messages, in chunks (COPY on PostgreSQL)."""
    seconds: dict[str, float] = {}
    unit_ids = [core.directory.unit_ids[slug] for slug, _ in UNITS]
    async with core.sessions() as session:
        agents = dict((await session.execute(select(Staff.unit_id, Staff.id).where(Staff.role == "agent"))).all())
    n_contacts = max(1, rows // 2)
    pg = None
    if db.kind == "postgresql":
        import asyncpg

        pg = await asyncpg.connect(plain_pg_url(db.url))

    lite = sqlite3.connect(sqlite_path(db.url)) if db.kind == "sqlite" else None

    async def put(table, batch: list[dict]) -> None:
        # Columns added to the schema since this seeding was written take their scalar default.
        defaults = {c.name: c.default.arg for c in table.columns
                    if c.default is not None and c.default.is_scalar and c.name not in batch[0]}
        batch = [{**defaults, **r} for r in batch] if defaults else batch
        columns = [c.name for c in table.columns]
        if pg is not None:
            await pg.copy_records_to_table(table.name, records=[tuple(r.get(c) for c in columns) for r in batch],
                                           columns=columns)
            return
        # Straight through sqlite3: SQLAlchemy's per-row type processing would take most of the time.
        # Times as the store keeps them on SQLite: naive UTC text.
        records = [tuple(v.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")
                         if isinstance(v, datetime) else v for v in (r.get(c) for c in columns)) for r in batch]
        with lite:
            lite.executemany(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
                             f"({', '.join('?' * len(columns))})", records)

    started = time.perf_counter()
    for first in range(1, n_contacts + 1, chunk):
        await put(Contact.__table__, [dict(id=i, channel="sms", address=f"+849{i:08d}", display_name=None,
                                           language="vi", via=None, created_at=NOW - timedelta(days=800))
                                      for i in range(first, min(n_contacts, first + chunk - 1) + 1)])
    seconds["contacts"] = time.perf_counter() - started
    started = time.perf_counter()
    for first in range(1, rows + 1, chunk):
        pairs = [rows_for(rng, i, n_contacts, unit_ids, agents, rows)
                 for i in range(first, min(rows, first + chunk - 1) + 1)]
        await put(Complaint.__table__, [c for c, _ in pairs])
        await put(Message.__table__, [m for _, m in pairs])
        if (first // chunk) % max(1, rows // chunk // 10) == 0:
            log(f"  seeded {min(rows, first + chunk - 1):,}/{rows:,} ({time.perf_counter() - started:.0f} s)")
    seconds["complaints + messages"] = time.perf_counter() - started
    if pg is not None:
        await pg.close()
    if lite is not None:
        lite.close()
    started = time.perf_counter()
    if db.kind == "postgresql":
        async with core.engine.begin() as conn:
            for table in ("contacts", "complaints", "messages"):
                await conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                        f"(SELECT COALESCE(max(id), 0) + 1 FROM {table}), false)"))
        async with core.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE"))
    else:
        async with core.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
    seconds["analyze"] = time.perf_counter() - started
    return seconds


async def sessions(core, key: bytes) -> dict[str, str]:
    """A live session for the admin and for the first unit's officer and head; their cookies."""
    cookies = {}
    async with core.sessions() as session, session.begin():
        for slug in ("quan-tri", f"{UNITS[0][0]}-agent", f"{UNITS[0][0]}-head"):
            member = await session.scalar(select(Staff).where(Staff.slug == slug))
            token = secrets.token_urlsafe(32)
            session.add(DeskSession(token_hash=token_hash(token), staff_id=member.id, created_at=NOW,
                                    expires_at=datetime.now(timezone.utc) + timedelta(days=1)))
            signature = hmac.new(key, f"session:{token}".encode(), hashlib.sha256).hexdigest()
            cookies[slug.rsplit("-", 1)[-1] if slug != "quan-tri" else "admin"] = f"{token}.{signature}"
    return cookies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, cookie: str, path: str, requests: int, workers: int) -> tuple[list[float], int]:
    """GET the path ``requests`` times with ``workers`` at once; latencies (s) and the bytes of one page."""
    latencies: list[float] = []
    size = 0
    jar = aiohttp.CookieJar(unsafe=True)
    jar.update_cookies({"fi_desk": cookie})
    async with aiohttp.ClientSession(url, cookie_jar=jar) as http:
        remaining = requests

        async def worker() -> None:
            nonlocal remaining, size
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with http.get(path, allow_redirects=False) as response:
                    body = await response.read()
                    if response.status != (404 if path.startswith("/desk/case/") else 200):
                        raise SystemExit(f"{path}: HTTP {response.status}: {body[:300]!r}")
                latencies.append(time.perf_counter() - started)
                size = len(body)

        for _ in range(3):  # warm the caches
            async with http.get(path) as response:
                await response.read()
        await asyncio.gather(*(worker() for _ in range(workers)))
    return latencies, size


async def run(args: argparse.Namespace) -> int:
    db = Database.from_args(args, "desk")
    await db.create()
    key = secrets.token_hex(32)
    os.environ[SECRET_ENV] = key
    port = free_port()
    config_data = bench_config(db.url, port, SECRET_ENV)
    server = None
    try:
        core = await open_core(parse_config(config_data, {SECRET_ENV: key}))
        try:
            log(f"seeding {args.rows:,} complaints on {db.kind} ...")
            seconds = await seed(core, db, args.rows, args.chunk, random.Random(args.seed))
            for name, value in seconds.items():
                log(f"  {name}: {value:.1f} s")
            cookies = await sessions(core, key.encode())
            log(f"  store: {await db.size(core)}")
        finally:
            await core.close()
        folder = db.folder or Path(os.environ.get("TMPDIR", "/tmp"))
        config_path = folder / f"desk-bench-{port}.json.toml"
        config_path.write_text(_toml(config_data), encoding="utf-8")
        server = Server("service", [*service_command(), "serve", "--config", str(config_path)], port,
                        folder / f"desk-bench-{port}.log")
        server.start(Path.cwd())
        await wait_healthy(server)
        url = f"http://127.0.0.1:{port}"
        common_phrase = quote("den duong")  # in a sixth of all complaints
        street = quote("nguyen chi thanh")  # in a twentieth
        rare = quote("ngo 4711 pho")  # a lane number: a few dozen complaints in all
        pages = [
            # The baseline, in the same run: a desk page in the same layout that reads only the session.
            ("baseline: an error page (officer)", "agent", "/desk/case/PA-0000-0000"),
            ("queue: my unit's open (officer)", "agent", "/desk/queue/unit"),
            ("queue: mine (officer)", "agent", "/desk/queue/mine"),
            ("queue: overdue (head)", "head", "/desk/queue/overdue"),
            ("queue: all, newest (admin)", "admin", "/desk/queue/all"),
            ("queue: all, filtered (admin)", "admin", "/desk/queue/all?status=resolved&category=moi-truong"),
            ("search: common phrase (officer, own unit)", "agent", f"/desk/queue/all?q={common_phrase}"),
            ("search: street name (officer, own unit)", "agent", f"/desk/queue/all?q={street}"),
            ("search: rare phrase (officer, own unit)", "agent", f"/desk/queue/all?q={rare}"),
            ("search: common phrase (admin, all units)", "admin", f"/desk/queue/all?q={common_phrase}"),
            ("search: rare phrase (admin, all units)", "admin", f"/desk/queue/all?q={rare}"),
        ]
        log(f"\n{args.requests} requests per page, {args.workers} at once, {db.kind}, {args.rows:,} complaints")
        log(f"{'page':48} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'KiB':>6} {'p50/baseline':>13}")
        baseline = None
        client_cpu = time.process_time()
        server_cpu = server.cpu_seconds()
        wall = time.perf_counter()
        for label, who, path in pages:
            started = time.perf_counter()
            latencies, size = await measure(url, cookies[who], path, args.requests, args.workers)
            elapsed = time.perf_counter() - started
            baseline = baseline or pct(latencies, 0.5)
            log(f"{label:48} {1000 * pct(latencies, 0.5):8.1f} {1000 * pct(latencies, 0.99):8.1f} "
                f"{len(latencies) / elapsed:7.0f} {size / 1024:6.0f} {pct(latencies, 0.5) / baseline:13.1f}")
        wall = time.perf_counter() - wall
        client_cpu = time.process_time() - client_cpu
        server_used = (server.cpu_seconds() or 0) - (server_cpu or 0)
        log(f"\nload generator CPU: {client_cpu:.1f} s of {wall:.1f} s wall ({100 * client_cpu / wall:.0f}% of one "
            f"core); service CPU: {server_used:.1f} s ({100 * server_used / wall:.0f}% of one core)")
        return 0
    finally:
        if server is not None:
            server.stop()
        await db.drop(args.keep)


def _toml(data: dict, prefix: str = "") -> str:
    """The benchmark's configuration as TOML (JSON values are valid TOML values for these)."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                tables.append((f"[{key}]", item))
        else:
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    out = "\n".join(lines) + "\n"
    for key, value in tables:
        name = f"[{prefix}{key[1:-1]}]" if key.startswith("[") else f"{prefix}{key}"
        out += f"\n[{name}]\n" + _toml(value, f"{name.strip('[]')}.")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="complaints to store (default 1,000,000)")
    parser.add_argument("--requests", type=int, default=200, help="requests per page (default 200)")
    parser.add_argument("--workers", type=int, default=1, help="requests at once (default 1: latency)")
    parser.add_argument("--chunk", type=int, default=20_000, help="rows per seeding transaction")
    parser.add_argument("--seed", type=int, default=15, help="random seed")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL at --admin-url instead of SQLite")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    sys.exit(asyncio.run(run(parser.parse_args())))


async def seed_store(db: Database, rows: int, random_seed: int) -> None:
    """N complaints with their contacts and first messages, as this benchmark seeds them (its ten units
    and their staff stay in the store, inactive once the benchmark's own configuration is synced)."""
    from service.assembly import open_core
    from service.config import parse_config

    key = secrets.token_hex(32)
    config = parse_config(bench_config(db.url, free_port(), SECRET_ENV), {SECRET_ENV: key})
    core = await open_core(config)
    try:
        log(f"seeding {rows:,} complaints on {db.kind} (bench/desk.py's seeding) ...")
        started = time.monotonic()
        await seed(core, db, rows, 20_000, random.Random(random_seed))
        log(f"  seeded in {time.monotonic() - started:.0f} s; store {await db.size(core)}")
    finally:
        await core.close()


if __name__ == "__main__":
    main()
