"""Benchmark: Zalo webhook intake rate, signed Zalo OA events, against a bare aiohttp handler.

Not a test. It measures, in one run on this machine, two servers under the same load:

* service: ``feedback-intake serve`` with ``[zalo]`` on, on a temporary SQLite file (or
  --database-url), its first token pair stored with ``feedback-intake zalo set-token``. Each
  request is ``POST /webhooks/zalo`` with a ``user_send_text`` event shaped like
  tests/fixtures/zalo/ (a fresh msg_id, a citizen's Zalo id, a Vietnamese complaint, the
  timestamp of now) signed in X-ZEvent-Signature as Zalo signs it (mac = SHA-256 of app_id +
  body + timestamp + OA secret key); the service verifies it, files the complaint (or threads
  a follow-up of the same citizen), commits, queues the greeting and the acknowledgement and
  answers 200. Its dispatcher sends them meanwhile, as consultation messages, to a fake Zalo
  OA API run by this process.
* bare: a tiny aiohttp app (``--bare-server PORT``) that parses the same JSON and answers 200:
  the ceiling of aiohttp plus this load generator.

The load generator (N clients, one keep-alive connection each) runs here. The figure that
counts on a small shared machine is the ratio service / bare, to compare with the SMS
webhook's (bench/sms.py); the two are measured in alternating slices so that noise falls on
both alike. A share of requests repeats an earlier one byte for byte, as Zalo's redelivery
does, and a share comes from a citizen who wrote before (a follow-up). After the run the store
is read back: one stored message per distinct msg_id answered 200, one acknowledgement per
complaint, one greeting per citizen, every one sent.

    python bench/zalo.py                      # 2 s warm-up + 10 s measured each, 32 clients
    python bench/zalo.py --seconds 20 --check # exit 1 below the target ratio or on problems
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from common import Server, free_port, service_command, store_query, wait_healthy

TARGET_RATIO = 0.087  # the SMS webhook's ratio measured on this machine (bench/README.md)
APP_ID = "4318726409871532817"
OA_ID = "1180429937510628413"
OA_SECRET = "bench-zalo-oa-secret-" + "7" * 8
APP_SECRET = "bench-zalo-app-secret-" + "3" * 8
TEXTS = (
    "Đèn đường ngõ 12 phố Trần Duy Hưng hỏng ba hôm nay, buổi tối rất tối và nguy hiểm.",
    "Rác thải ở đầu ngõ 45 Nguyễn Chí Thanh không được thu gom từ thứ Hai, bốc mùi rất khó chịu.",
    "Nắp cống trước số nhà 88 đường Láng bị vỡ, xe máy đi qua rất dễ sụp bánh.",
    "Nhà hàng xóm hát karaoke đến 1 giờ sáng nhiều đêm liền, ảnh hưởng giấc ngủ của cả khu tập thể.",
    "Water has been cut off in our building for two days without notice.",
)


# --- the bare baseline server (runs in its own process) -----------------------------------

def run_bare_server(port: int) -> None:
    """A bare aiohttp app: POST /webhooks/zalo parses the JSON event, answers 200."""
    from aiohttp import web

    async def webhook(request: web.Request) -> web.Response:
        event = await request.json()
        if "message" not in event:
            return web.Response(status=400)
        return web.json_response({"status": "ok"})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/webhooks/zalo", webhook)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


# --- servers under test ----------------------------------------------------------------------

# --- the fake Zalo OA API (in this process) --------------------------------------------------

class FakeZalo:
    """Answers the service's consultation messages as Zalo does (HTTP 200, error 0, a message id)."""

    def __init__(self) -> None:
        self.sent = 0
        self.runner = None
        self.port = 0

    async def start(self) -> None:
        from aiohttp import web

        async def cs(request: web.Request) -> web.Response:
            body = await request.json()
            self.sent += 1
            return web.json_response({"error": 0, "message": "Success", "data": {
                "message_id": secrets.token_hex(10), "user_id": body["recipient"]["user_id"]}})

        app = web.Application()
        app.router.add_post("/v3.0/oa/message/cs", cs)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


# --- load -------------------------------------------------------------------------------------

def signed_event(rng: random.Random, citizens: list[str]) -> tuple[bytes, dict[str, str], str]:
    """One user_send_text delivery as Zalo posts it: (body, headers, msg_id)."""
    if citizens and rng.random() < 0.2:
        user = rng.choice(citizens)  # a citizen writing again: a follow-up within the window
    else:
        user = str(rng.randrange(10 ** 18, 10 ** 19))
        citizens.append(user)
    msg_id = "".join(rng.choice("0123456789abcdef") for _ in range(20))
    timestamp = str(int(time.time() * 1000))
    event = {"app_id": APP_ID, "sender": {"id": user}, "user_id_by_app": str(rng.randrange(10 ** 18, 10 ** 19)),
             "recipient": {"id": OA_ID}, "event_name": "user_send_text",
             "message": {"text": rng.choice(TEXTS), "msg_id": msg_id}, "timestamp": timestamp}
    body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    mac = hashlib.sha256(APP_ID.encode() + body + timestamp.encode() + OA_SECRET.encode()).hexdigest()
    return body, {"Content-Type": "application/json", "X-ZEvent-Signature": f"mac={mac}"}, msg_id


@dataclass
class Load:
    """What one target's slices produced, added up."""

    name: str
    window: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ok_ids: set[str] = field(default_factory=set)  # every msg_id answered 200 (what the store must hold)
    sent: int = 0
    errors: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    server_cpu_seconds: float | None = 0.0
    client_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.window if self.window else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Target:
    """A server under load from N clients posting signed Zalo events."""

    def __init__(self, server: Server, public_url: str, concurrency: int, duplicate_share: float, seed: int):
        self.server, self.concurrency, self.duplicate_share = server, concurrency, duplicate_share
        self.url = f"http://127.0.0.1:{server.port}/webhooks/zalo"
        self.load = Load(server.name)
        self.rngs = [random.Random(seed * 1000 + i) for i in range(concurrency)]
        self.citizens: list[list[str]] = [[] for _ in range(concurrency)]
        self.sessions: list = []

    async def open(self) -> None:
        import aiohttp

        self.sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                               timeout=aiohttp.ClientTimeout(total=60))
                         for _ in range(self.concurrency)]

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions), return_exceptions=True)
        self.sessions = []

    async def run(self, seconds: float, measured: bool) -> None:
        """All clients post back to back for `seconds`; requests in flight then finish."""
        import aiohttp

        loop = asyncio.get_running_loop()
        load = self.load
        before = (self.server.cpu_seconds(), time.process_time())
        end = loop.time() + seconds

        async def client(index: int) -> None:
            session, rng = self.sessions[index], self.rngs[index]
            previous: tuple[bytes, dict, str] | None = None
            while loop.time() < end:
                if previous is not None and rng.random() < self.duplicate_share:
                    body, headers, sid = previous  # Zalo's redelivery: the same bytes again
                else:
                    body, headers, sid = signed_event(rng, self.citizens[index])
                    previous = (body, headers, sid)
                load.sent += 1
                began = loop.time()
                try:
                    async with session.post(self.url, data=body, headers=headers) as response:
                        answer = await response.text()
                        status = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                    load.errors[type(error).__name__] += 1
                    continue
                ended = loop.time()
                if status != 200 or '"ok"' not in answer:
                    load.errors[f"HTTP {status}"] += 1
                    if len(load.samples) < 5:
                        load.samples.append(f"HTTP {status}: {' '.join(answer.split())[:200]}")
                    continue
                load.ok_ids.add(sid)
                if measured and ended <= end:
                    load.latencies.append(ended - began)

        await asyncio.gather(*(client(i) for i in range(self.concurrency)))
        if not measured:
            return
        after = (self.server.cpu_seconds(), time.process_time())
        load.window += seconds
        if load.server_cpu_seconds is not None and None not in (before[0], after[0]):
            load.server_cpu_seconds += after[0] - before[0]
        else:
            load.server_cpu_seconds = None
        load.client_cpu_seconds += after[1] - before[1]


# --- the run ------------------------------------------------------------------------------------

def service_config(path: Path, url: str, port: int, zalo_port: int, pool_size: int | None) -> None:
    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    fake = f"http://127.0.0.1:{zalo_port}"
    path.write_text(
        f"[storage]\nurl = {q(url)}\n" + (f"pool_size = {pool_size}\n" if pool_size else "")
        + f'\n[web]\nhost = "127.0.0.1"\nport = {port}\npublic_url = {q(f"http://127.0.0.1:{port}")}\n'
        + f"\n[zalo]\nenabled = true\napp_id = {q(APP_ID)}\noa_id = {q(OA_ID)}\n"
        + 'oa_secret_env = "FI_BENCH_ZALO_OA_SECRET"\napp_secret_env = "FI_BENCH_ZALO_APP_SECRET"\n'
        + f"api_base_url = {q(fake)}\noauth_base_url = {q(fake)}\nzns_base_url = {q(fake)}\n",
        encoding="utf-8")


VERIFY_SQL = {
    "messages": "SELECT count(*) FROM messages WHERE channel = 'zalo' AND direction = 'in' AND id > {floor}",
    "complaints": "SELECT count(*) FROM complaints WHERE channel = 'zalo' AND id > {complaint_floor}",
    "citizens": "SELECT count(DISTINCT sender) FROM messages WHERE channel = 'zalo' AND id > {floor}",
    "greetings": "SELECT count(*) FROM outbox WHERE key LIKE 'zalo-greeting:%' AND id > {outbox_floor}",
    "sent_greetings": "SELECT count(*) FROM outbox WHERE key LIKE 'zalo-greeting:%' AND status = 'sent' "
                      "AND id > {outbox_floor}",
    "acks": "SELECT count(*) FROM outbox WHERE key LIKE 'ack:%' AND complaint_id > {complaint_floor}",
    "sent_acks": "SELECT count(*) FROM outbox WHERE key LIKE 'ack:%' AND status = 'sent' "
                 "AND complaint_id > {complaint_floor}",
}


async def floors(url: str) -> dict[str, int]:
    found = await store_query(url, {"floor": "SELECT coalesce(max(id), 0) FROM messages",
                                    "complaint_floor": "SELECT coalesce(max(id), 0) FROM complaints",
                                    "outbox_floor": "SELECT coalesce(max(id), 0) FROM outbox"})
    return found or {"floor": 0, "complaint_floor": 0, "outbox_floor": 0}


def report(load: Load) -> None:
    cpu = f"{load.server_cpu_seconds / load.window:4.0%}" if load.server_cpu_seconds is not None and load.window \
        else "?"
    print(f"  {load.name:8s} {load.rate:8.1f} req/s   p50 {load.percentile(0.5) * 1000:7.1f} ms   "
          f"p99 {load.percentile(0.99) * 1000:7.1f} ms   ({len(load.latencies)} in {load.window:.1f} s; server CPU "
          f"{cpu}, load generator CPU {load.client_cpu_seconds / max(load.window, 1e-9):4.0%})")
    if load.errors:
        print(f"  {load.name}: {sum(load.errors.values())} ERRORS of {load.sent}: "
              + ", ".join(f"{k} x{v}" for k, v in load.errors.most_common()))
        for sample in load.samples:
            print(f"    e.g. {sample}")


async def run(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    workdir = Path(tempfile.mkdtemp(prefix="fi-bench-zalo-"))
    url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    slice_seconds = args.seconds / args.rounds
    print(f"feedback-intake Zalo webhook benchmark: {args.concurrency} clients, signed Zalo events "
          f"({args.duplicate_share:.0%} repeated as retries); per target {args.warmup:g} s warm-up + "
          f"{args.seconds:g} s in {args.rounds} alternating slice(s); {os.cpu_count()} CPUs; {url.split('://')[0]}")
    fake = FakeZalo()
    await fake.start()
    bare = Server("bare", [sys.executable, str(Path(__file__).resolve()), "--bare-server"], free_port(),
                  workdir / "bare.log")
    bare.argv.append(str(bare.port))
    port = free_port()
    service = Server("service", service_command() + ["serve", "--config", str(workdir / "config.toml")], port,
                     workdir / "service.log")
    service_config(workdir / "config.toml", url, port, fake.port, args.pool_size)
    os.environ["FI_BENCH_ZALO_OA_SECRET"] = OA_SECRET  # the service process inherits them
    os.environ["FI_BENCH_ZALO_APP_SECRET"] = APP_SECRET
    setup = await asyncio.create_subprocess_exec(
        *service_command(), "zalo", "set-token", "--access-token", "bench-access", "--refresh-token", "bench-refresh",
        "--expires-in", "90000", "--config", str(workdir / "config.toml"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await setup.communicate()
    if setup.returncode != 0:
        raise RuntimeError(f"zalo set-token failed: {err.decode()[-300:]}")
    targets: list[Target] = []
    problems: list[str] = []
    try:
        before = await floors(url)
        for server in (bare, service):
            server.start(workdir)
        for server in (bare, service):
            await wait_healthy(server)
        targets = [Target(bare, f"http://127.0.0.1:{bare.port}", args.concurrency, args.duplicate_share, args.seed),
                   Target(service, f"http://127.0.0.1:{port}", args.concurrency, args.duplicate_share, args.seed + 1)]
        for target in targets:
            await target.open()
            await target.run(args.warmup, measured=False)
        for _ in range(args.rounds):
            for target in targets:
                await target.run(slice_seconds, measured=True)
        for target in targets:
            await target.close()
        # The dispatcher sends one message at a time, behind intake under this load: give it
        # time to send the rest to the fake Zalo (which runs in this loop, so wait without blocking).
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            queued = await store_query(url, {k: VERIFY_SQL[k].format(**before)
                                             for k in ("acks", "sent_acks", "greetings", "sent_greetings")})
            # Done when the store has every message sent (the fake may count a retried one twice).
            if queued is not None and queued["sent_acks"] + queued["sent_greetings"] >= \
                    queued["acks"] + queued["greetings"]:
                break
            await asyncio.sleep(0.2)
        code = await asyncio.to_thread(service.stop)
        await asyncio.to_thread(bare.stop)
        if code not in (0, None):
            problems.append(f"service exited with {code} after SIGTERM")
        bare_load, service_load = targets[0].load, targets[1].load
        print()
        report(bare_load)
        report(service_load)
        found = await store_query(url, {k: v.format(**before) for k, v in VERIFY_SQL.items()})
        if found is None:
            problems.append("the store has no tables")
        else:
            print(f"  store: {found['messages']} Zalo messages stored (= {len(service_load.ok_ids)} distinct msg_ids "
                  f"answered 200) from {found['citizens']} citizens, {found['complaints']} complaints, "
                  f"{found['acks']} acknowledgements queued ({found['sent_acks']} sent), {found['greetings']} "
                  f"greetings ({found['sent_greetings']} sent); {fake.sent} reached the fake Zalo")
            if found["messages"] != len(service_load.ok_ids):
                problems.append(f"store has {found['messages']} messages, expected {len(service_load.ok_ids)}")
            if found["greetings"] != found["citizens"]:
                problems.append(f"{found['greetings']} greetings for {found['citizens']} citizens")
            if found["sent_greetings"] != found["greetings"]:
                problems.append(f"{found['greetings'] - found['sent_greetings']} greetings not sent after --drain")
            if found["acks"] != found["complaints"]:
                problems.append(f"{found['acks']} acknowledgements for {found['complaints']} complaints")
            if found["sent_acks"] != found["acks"]:
                problems.append(f"{found['acks'] - found['sent_acks']} acknowledgements not sent after --drain")
        for load in (bare_load, service_load):
            if load.errors:
                problems.append(f"{load.name}: {sum(load.errors.values())} requests failed")
            if not load.latencies:
                problems.append(f"{load.name}: nothing completed in the measured time")
        ratio = service_load.rate / bare_load.rate if bare_load.rate else 0.0
        met = ratio >= TARGET_RATIO
        print(f"\n  ratio service/bare: {ratio:.3f}   service p99 {service_load.percentile(0.99) * 1000:.1f} ms   "
              f"target >= {TARGET_RATIO}: {'MET' if met else 'NOT MET'}")
        if problems:
            print("  RUN HAD PROBLEMS (figures not valid):")
            for problem in problems:
                print(f"    - {problem}")
        else:
            print("  run clean: every answer 200, store matches the answers")
        return 1 if args.check and (problems or not met) else 0
    finally:
        for target in targets:
            await target.close()
        await asyncio.to_thread(bare.stop)
        await asyncio.to_thread(service.stop)
        await fake.stop()
        if args.keep:
            print(f"  kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measured slices (default 5)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--duplicate-share", type=float, default=0.02,
                        help="share of requests that repeat the client's previous one, as Zalo's redelivery (default 0.02)")
    parser.add_argument("--database-url", default=None, help="store for the service (default: temporary SQLite)")
    parser.add_argument("--pool-size", type=int, default=None, help="[storage] pool_size for the service")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="at most this many seconds for the queued acknowledgements to go out (default 30)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 below ratio {TARGET_RATIO} or on problems")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server is not None:
        run_bare_server(args.bare_server)
        return 0
    if args.concurrency < 1 or args.seconds <= 0 or args.rounds < 1 or not 0 <= args.duplicate_share < 1:
        parser.error("--concurrency and --rounds >= 1, --seconds > 0, 0 <= --duplicate-share < 1")
    try:
        return asyncio.run(run(args))
    except (RuntimeError, OSError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
