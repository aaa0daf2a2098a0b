"""Benchmark: sustained complaints per second through the web intake path.

Not a test. It measures, in one run on this machine, two servers under the same load:

* service: ``feedback-intake serve`` on a temporary SQLite file (or --database-url);
  each request is a form POST that files a complaint, commits it, queues the
  acknowledgement in the outbox (when the form has a phone number) and answers 303;
* bare: a tiny aiohttp application (defined here, ``--bare-server PORT``) that parses
  the same form body and answers 200; the ceiling of aiohttp plus this load generator.

Each server runs in its own process; the load generator (aiohttp client, N concurrent
clients with keep-alive, each holding its own CSRF cookie and token from one GET /) runs
in this process. Only 127.0.0.1. The machine is small and shared, so the figure that
matters is the ratio service / bare, and the two are measured in alternating slices so
that noise from the rest of the machine falls on both alike. After the run the store is
read back: one complaint per 303 answer, one outbox row for each complaint that came
with a phone number and none for the others.

    python bench/intake.py                      # 2 s warm-up + 10 s measured each, 32 clients
    python bench/intake.py --seconds 20 --check # exit 1 if the ratio is below the target
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from common import free_port, Server, service_command, store_query, TEXTS, wait_healthy

TARGET_RATIO = 0.25
FORM_FIELDS = re.compile(r'name="(csrf_token|submission_id)" value="([^"]*)"')
FORM_TYPE = "application/x-www-form-urlencoded"
CATEGORIES = ("moi-truong", "giao-thong", "dien-nuoc", "trat-tu", "thu-tuc", "khac", "")
MOBILE_PREFIXES = ("090", "091", "093", "094", "096", "097", "098")
AREAS = ("Cầu Giấy", "Đống Đa", "Hoàn Kiếm", "Ba Đình", "Hai Bà Trưng", "Thanh Xuân", "")
NAMES = ("Nguyễn Văn An", "Trần Thị Bình", "Lê Minh Châu", "Phạm Quốc Dũng", "")


# --- the bare baseline server (runs in its own process) -----------------------------------

def run_bare_server(port: int) -> None:
    """A bare aiohttp app: POST / parses the same form and answers 200; GET /healthz is 200."""
    from aiohttp import web

    async def submit(request: web.Request) -> web.Response:
        posted = await request.post()
        fields = {k: v for k, v in posted.items() if isinstance(v, str)}
        return web.Response(text=f"ok {len(fields)}")

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=1_048_576)
    app.router.add_post("/", submit)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


# --- servers under test ----------------------------------------------------------------------

def phone_number(rng: random.Random) -> str:
    number = rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**7):07d}"
    return number if rng.random() < 0.5 else f"{number[:4]} {number[4:7]} {number[7:]}"


@dataclass
class Load:
    """What one target's slices produced, added up."""

    name: str
    expected_status: int
    window: float = 0.0  # measured seconds
    latencies: list[float] = field(default_factory=list)  # requests completed inside a measured slice
    total_ok: int = 0  # every expected answer, warm-up and tails included (what the store must hold)
    total_ok_with_phone: int = 0
    total_sent: int = 0
    errors: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    budget_ran_out: bool = False
    server_cpu_seconds: float | None = 0.0
    client_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.window if self.window else 0.0

    @property
    def server_cpu(self) -> float | None:
        return self.server_cpu_seconds / self.window if self.window and self.server_cpu_seconds is not None else None

    @property
    def client_cpu(self) -> float:
        return self.client_cpu_seconds / self.window if self.window else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(detail)


class Target:
    """A server under load: its clients (one session, cookie and CSRF token each) and its figures."""

    def __init__(self, server: Server, *, concurrency: int, max_requests: int, phone_share: float,
                 with_csrf: bool, seed: int):
        self.server = server
        self.base = f"http://127.0.0.1:{server.port}"
        self.load = Load(server.name, server.expected_status)
        self.concurrency, self.budget, self.phone_share = concurrency, max_requests, phone_share
        self.with_csrf, self.seed = with_csrf, seed
        self.sessions: list = []
        self.tokens: list[str] = []
        self.rngs: list[random.Random] = []

    async def open(self) -> None:
        import aiohttp

        self.sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                               timeout=aiohttp.ClientTimeout(total=60),
                                               cookie_jar=aiohttp.CookieJar(unsafe=True))
                         for _ in range(self.concurrency)]
        self.rngs = [random.Random(self.seed * 1000 + i) for i in range(self.concurrency)]
        self.tokens = list(await asyncio.gather(*(self._setup(s) for s in self.sessions)))

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions), return_exceptions=True)

    async def _setup(self, session) -> str:
        """One GET / per client: its cookie (kept in the session's jar) and the matching token."""
        if not self.with_csrf:
            return ""
        async with session.get(self.base + "/") as response:
            page = await response.text()
            if response.status != 200:
                raise RuntimeError(f"{self.server.name}: GET / answered {response.status}")
        hidden = dict(FORM_FIELDS.findall(page))
        if "csrf_token" not in hidden:
            raise RuntimeError(f"{self.server.name}: GET / has no csrf_token field")
        return hidden["csrf_token"]

    async def run(self, seconds: float, measured: bool) -> None:
        """All clients post forms back to back for `seconds`; then the requests in flight finish."""
        import aiohttp

        loop = asyncio.get_running_loop()
        load = self.load
        cpu_before = (self.server.cpu_seconds(), time.process_time())
        slice_start = loop.time()
        slice_end = slice_start + seconds
        last_end = slice_start

        async def client(index: int) -> None:
            nonlocal last_end
            session, token, rng = self.sessions[index], self.tokens[index], self.rngs[index]
            while loop.time() < slice_end and self.budget > 0:
                self.budget -= 1
                with_phone = rng.random() < self.phone_share
                body = urlencode({
                    "csrf_token": token, "submission_id": secrets.token_hex(16), "lang": "vi",
                    "text": rng.choice(TEXTS), "name": rng.choice(NAMES),
                    "phone": phone_number(rng) if with_phone else "", "email": "",
                    "area": rng.choice(AREAS), "category": rng.choice(CATEGORIES),
                }).encode()
                load.total_sent += 1
                began = loop.time()
                try:
                    async with session.post(self.base + "/", data=body, headers={"Content-Type": FORM_TYPE},
                                            allow_redirects=False) as response:
                        answer = await response.read()
                        status: int | str = response.status
                        location = response.headers.get("Location", "")
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                    load.error(type(error).__name__, f"{type(error).__name__}: {error}")
                    continue
                ended = loop.time()
                if status == 303 and not location.startswith("/track/"):
                    status = f"303 to {location[:60] or 'nowhere'}"
                if status != load.expected_status:
                    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", answer.decode(errors="replace")))
                    load.error(f"HTTP {status}", f"HTTP {status}: {text.strip()[:300]}")
                    continue
                load.total_ok += 1
                load.total_ok_with_phone += with_phone
                if measured and ended <= slice_end:
                    load.latencies.append(ended - began)
                    last_end = max(last_end, ended)

        async def cpu_mark() -> tuple[float | None, float]:
            await asyncio.sleep(max(0.0, slice_end - loop.time()))
            return self.server.cpu_seconds(), time.process_time()

        mark = asyncio.create_task(cpu_mark())
        await asyncio.gather(*(client(i) for i in range(self.concurrency)))
        cpu_after = await mark
        if not measured:
            return
        if self.budget <= 0:
            # --max-requests ended the slice early: count only the time actually loaded.
            load.budget_ran_out = True
            seconds = max(1e-3, last_end - slice_start)
            load.server_cpu_seconds = None
        load.window += seconds
        if load.server_cpu_seconds is not None and None not in (cpu_before[0], cpu_after[0]):
            load.server_cpu_seconds += cpu_after[0] - cpu_before[0]
        else:
            load.server_cpu_seconds = None
        load.client_cpu_seconds += cpu_after[1] - cpu_before[1]


# --- checking the store -----------------------------------------------------------------------

VERIFY_SQL = {
    "complaints": "SELECT count(*) FROM complaints WHERE id > {floor}",
    "web_messages": "SELECT count(*) FROM messages WHERE complaint_id > {floor} AND channel = 'web'",
    "with_contact": "SELECT count(*) FROM complaints WHERE id > {floor} AND contact_id IS NOT NULL",
    "outbox": "SELECT count(*) FROM outbox WHERE complaint_id > {floor}",
    "outbox_sms_ack": "SELECT count(*) FROM outbox WHERE complaint_id > {floor} AND channel = 'sms' "
                      "AND key LIKE 'ack:%'",
    "wrong_outbox": "SELECT count(*) FROM complaints c WHERE c.id > {floor} AND "
                    "(SELECT count(*) FROM outbox o WHERE o.complaint_id = c.id) "
                    "<> CASE WHEN c.contact_id IS NULL THEN 0 ELSE 1 END",
}


async def id_floor(url: str) -> int:
    """The highest complaint id before the run (0 for a new store): the check counts only newer ones."""
    try:
        found = await store_query(url, {"max": "SELECT coalesce(max(id), 0) FROM complaints"})
    except Exception as error:  # any driver error: say which store could not be read
        raise RuntimeError(f"cannot read the store {url.split('://')[0]}: {type(error).__name__}: {error}") from None
    return found["max"] if found else 0


async def verify(url: str, floor: int, load: Load) -> list[str]:
    """Problems found reading the store back; empty when it holds exactly what was answered."""
    found = await store_query(url, {k: v.format(floor=floor) for k, v in VERIFY_SQL.items()})
    if found is None:
        return ["the store has no complaints table"]
    problems = []
    expect = {
        "complaints": load.total_ok, "web_messages": load.total_ok, "with_contact": load.total_ok_with_phone,
        "outbox": load.total_ok_with_phone, "outbox_sms_ack": load.total_ok_with_phone, "wrong_outbox": 0,
    }
    for name, want in expect.items():
        if found[name] != want:
            problems.append(f"{name}: store has {found[name]}, expected {want}")
    print(f"  store: {found['complaints']} complaints (= {load.total_ok} answered 303), "
          f"{found['outbox']} outbox rows (= {load.total_ok_with_phone} with a phone), "
          f"{found['wrong_outbox']} complaints with a wrong outbox count")
    return problems


# --- the run -------------------------------------------------------------------------------------

def service_config(path: Path, url: str, port: int, pool_size: int | None = None, incidents: bool = True) -> None:
    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    path.write_text(
        "[storage]\n"
        f"url = {q(url)}\n"
        + (f"pool_size = {pool_size}\n" if pool_size is not None else "")
        + "\n"
        "[web]\n"
        f'host = "127.0.0.1"\nport = {port}\npublic_url = {q(f"http://127.0.0.1:{port}")}\n'
        + ("" if incidents else "\n[incidents]\nenabled = false\n"),
        encoding="utf-8",
    )


def report(load: Load) -> None:
    cpu = f"server CPU {load.server_cpu:4.0%}" if load.server_cpu is not None else "server CPU ?"
    print(f"  {load.name:8s} {load.rate:8.1f} req/s   p50 {load.percentile(0.50) * 1000:7.1f} ms   "
          f"p99 {load.percentile(0.99) * 1000:7.1f} ms   ({len(load.latencies)} in {load.window:.1f} s; "
          f"{cpu}, load generator CPU {load.client_cpu:4.0%})")
    if load.budget_ran_out:
        print(f"  {load.name}: --max-requests reached after {load.window:.1f} s of the measured window")
    if load.errors:
        print(f"  {load.name}: {sum(load.errors.values())} ERRORS of {load.total_sent} requests: "
              + ", ".join(f"{k} x{v}" for k, v in load.errors.most_common()))
        for sample in load.error_samples:
            print(f"    e.g. {sample}")


async def profile(server: Server, args: argparse.Namespace, seconds: float) -> None:
    """py-spy record on the server process for `seconds` (--profile FILE)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    command = str(py_spy) if py_spy.exists() else shutil.which("py-spy")
    if not command:
        print("  --profile: py-spy not found (pip install py-spy)", file=sys.stderr)
        return
    out = Path(args.profile).resolve()
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    recorder = await asyncio.create_subprocess_exec(
        command, "record", "--pid", str(server.process.pid), "--duration", str(max(1, round(seconds))),
        "--rate", "250", "--format", fmt, "--output", str(out), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, stderr = await recorder.communicate()
    except asyncio.CancelledError:
        recorder.kill()
        await recorder.wait()
        raise
    if recorder.returncode != 0:
        print(f"  py-spy failed: {stderr.decode(errors='replace').strip()[-500:]}", file=sys.stderr)
    else:
        print(f"  profile of the service: {out} ({fmt})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (default 2)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="measure in this many alternating slices, bare then service, so that noise from "
                             "the rest of the machine hits both alike (default 5: 2 s slices)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="upper bound on requests per target, warm-up included (default 200000)")
    parser.add_argument("--phone-share", type=float, default=0.5,
                        help="share of forms with a phone number, so an acknowledgement is queued (default 0.5)")
    parser.add_argument("--database-url", default=None,
                        help="store for the service (default: a temporary SQLite file); e.g. "
                             "postgresql+asyncpg://postgres@127.0.0.1:5432/fi_bench on a database made for "
                             "the purpose (the check counts only complaints the run added)")
    parser.add_argument("--pool-size", type=int, default=None,
                        help="[storage] pool_size for the service (default: the service's own default)")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if the ratio is below {TARGET_RATIO} or the run had errors")
    parser.add_argument("--profile", metavar="FILE",
                        help="record the service with py-spy while it is measured: FILE.svg flame graph, "
                             "FILE.json speedscope, anything else collapsed stacks (pip install py-spy); "
                             "use --rounds 1 so that the recording covers the service's slice only")
    parser.add_argument("--incidents", action=argparse.BooleanOptionalAction, default=True,
                        help="incident grouping at intake (default on, as the service's default)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server is not None:
        run_bare_server(args.bare_server)
        return 0
    if args.concurrency < 1 or args.seconds <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("--concurrency and --rounds must be >= 1, --seconds > 0, --warmup >= 0")
    try:
        return asyncio.run(run(args))
    except (RuntimeError, OSError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; servers stopped", file=sys.stderr)
        return 130


async def run(args: argparse.Namespace) -> int:
    # SIGTERM to the benchmark cancels it like Ctrl-C does, so the finally below stops the servers.
    main_task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    workdir = Path(tempfile.mkdtemp(prefix="fi-bench-"))
    url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    database = url.split("://")[0] + ("" if args.database_url else " (temporary file)")
    slice_seconds = args.seconds / args.rounds
    print(f"feedback-intake web intake benchmark: {args.concurrency} clients; per target {args.warmup:g} s "
          f"warm-up + {args.seconds:g} s measured in {args.rounds} alternating slice(s) of {slice_seconds:g} s; "
          f"{os.cpu_count()} CPUs; {database}")
    bare = Server("bare", [sys.executable, str(Path(__file__).resolve()), "--bare-server"], free_port(),
                  workdir / "bare.log", 200)
    bare.argv.append(str(bare.port))
    service_port = free_port()
    while service_port == bare.port:
        service_port = free_port()
    service = Server("service", service_command() + ["serve", "--config", str(workdir / "config.toml")],
                     service_port, workdir / "service.log", 303)
    service_config(workdir / "config.toml", url, service.port, args.pool_size, args.incidents)
    targets: list[Target] = []
    profiling: asyncio.Task | None = None
    problems: list[str] = []
    try:
        floor = await id_floor(url)
        for server in (bare, service):
            server.start(workdir)
        for server in (bare, service):
            await wait_healthy(server)
        options = dict(concurrency=args.concurrency, max_requests=args.max_requests,
                       phone_share=args.phone_share, seed=args.seed)
        targets = [Target(bare, with_csrf=False, **options), Target(service, with_csrf=True, **options)]
        for target in targets:
            await target.open()
        bare_target, service_target = targets
        for target in targets:
            await target.run(args.warmup, measured=False)
        for round_number in range(args.rounds):
            await bare_target.run(slice_seconds, measured=True)
            if args.profile and round_number == 0:
                # From the service's first measured slice to the end (its idle time between is not sampled).
                profiling = asyncio.create_task(profile(service, args, (2 * args.rounds - 1) * slice_seconds))
            await service_target.run(slice_seconds, measured=True)
        for target in targets:
            await target.close()
        if profiling is not None:
            await profiling
        code = service.stop()
        bare.stop()
        if code not in (0, None):
            problems.append(f"service exited with {code} after SIGTERM")
            print(service.log_tail(), file=sys.stderr)

        bare_load, service_load = bare_target.load, service_target.load
        print()
        report(bare_load)
        report(service_load)
        problems += await verify(url, floor, service_load)
        for load in (bare_load, service_load):
            if load.errors:
                problems.append(f"{load.name}: {sum(load.errors.values())} requests failed")
            if not load.latencies:
                problems.append(f"{load.name}: no request completed in the measured time")
        ratio = service_load.rate / bare_load.rate if bare_load.rate else 0.0
        met = ratio >= TARGET_RATIO
        print(f"\n  ratio service/bare: {ratio:.3f}   target >= {TARGET_RATIO}: {'MET' if met else 'NOT MET'}")
        if problems:
            print("  RUN HAD PROBLEMS (figures not valid):")
            for problem in problems:
                print(f"    - {problem}")
        else:
            print("  run clean: every answer as expected, store matches the answers")
        if args.check and (not met or problems):
            return 1
        return 0
    finally:
        if profiling is not None and not profiling.done():
            profiling.cancel()
            await asyncio.gather(profiling, return_exceptions=True)
        for target in targets:
            await target.close()
        bare.stop()
        service.stop()
        if args.keep:
            print(f"  kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
