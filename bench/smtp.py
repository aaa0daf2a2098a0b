"""Benchmark: complaints per second accepted over SMTP by the email channel.

Not a test. It measures, in one run on this machine, two SMTP servers under the same load
from the same client:

* service: ``feedback-intake serve`` with ``[email] enabled``, on a temporary SQLite
  file (or --database-url); each mail is parsed, stored as a new complaint with its
  acknowledgement queued in the outbox, and answered 250 only after the commit; the
  outbox dispatcher meanwhile sends the acknowledgements to a sink relay (a third
  process, the same bare server);
* bare: an aiosmtpd server (``--bare-server PORT``, defined here) started the same way
  as the service's (``loop.create_server``, same size limit and SMTPUTF8) whose handler
  only answers 250: the ceiling of aiosmtpd plus this client.

Each server runs in its own process; the client (aiosmtplib, N connections, each sending
mail after mail on one SMTP session as a sending mail server does) runs in this one.
Only 127.0.0.1. The machine is small and shared, so the figure that counts is the ratio
service / bare, measured in alternating slices so that noise falls on both alike. After
the run the store is read back: one complaint, one email message and one queued
acknowledgement for every 250.

    python bench/smtp.py                    # 2 s warm-up + 10 s measured each, 16 connections
    python bench/smtp.py --check            # exit 1 if the ratio is below the target
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

from common import free_port, Server, store_query, TEXTS

TARGET_RATIO = 0.5
DOMAIN = "feedback.example.gov.vn"
RECIPIENT = f"phananh@{DOMAIN}"
MAX_MESSAGE_BYTES = 10_485_760
SUBJECTS = ("Đèn đường hỏng", "Rác thải không được thu gom", "Nắp cống vỡ", "Karaoke đến khuya", "Hồ sơ chậm",
            "Mất nước hai ngày", "Ổ gà trên đường Láng")
NAMES = ("Nguyễn Văn An", "Trần Thị Bình", "Lê Minh Châu", "Phạm Quốc Dũng", "")
SLOT = "citizen-slot"  # replaced in each mail by the sender's unique local part


# --- the bare baseline server (runs in its own process; also the relay sink) ----------------------

def run_bare_server(port: int) -> None:
    """aiosmtpd on loop.create_server, as the service starts it; DATA only answers 250."""
    from aiosmtpd.smtp import SMTP

    class Bare:
        async def handle_DATA(self, server, session, envelope) -> str:
            return "250 OK"

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Bare(), data_size_limit=MAX_MESSAGE_BYTES, enable_SMTPUTF8=True, hostname="bare.bench",
                         ident="bare", loop=loop), "127.0.0.1", port)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(serve())


# --- servers -----------------------------------------------------------------------------------------

async def wait_for_smtp(server: Server, timeout: float = 60.0) -> None:
    """Until the server answers its 220 greeting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 2)
            greeting = await asyncio.wait_for(reader.readline(), 2)
            writer.close()
            if greeting.startswith(b"220"):
                return
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.name} not answering SMTP after {timeout:.0f} s:\n{server.log_tail()}")


def service_config(path: Path, url: str, web_port: int, smtp_port: int, relay_port: int) -> None:
    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    path.write_text(
        f"[storage]\nurl = {q(url)}\n\n"
        f'[web]\nhost = "127.0.0.1"\nport = {web_port}\npublic_url = {q(f"http://127.0.0.1:{web_port}")}\n\n'
        f'[email]\nenabled = true\nhost = "127.0.0.1"\nport = {smtp_port}\naccept_domains = [{q(DOMAIN)}]\n'
        f'from_address = {q(RECIPIENT)}\nrelay_host = "127.0.0.1"\nrelay_port = {relay_port}\n'
        f"max_message_bytes = {MAX_MESSAGE_BYTES}\n",
        encoding="utf-8")


# --- the load -----------------------------------------------------------------------------------------

def templates(rng: random.Random, count: int = 64) -> list[bytes]:
    """New complaints as mail clients write them (UTF-8, quoted-printable), with a slot for
    what makes each mail unique; made before the run, so the client spends its time sending."""
    made = []
    for _ in range(count):
        mail = EmailMessage(policy=SMTP_POLICY)
        name = rng.choice(NAMES)
        mail["From"] = f"{name} <{SLOT}@example.vn>" if name else f"{SLOT}@example.vn"
        mail["To"] = RECIPIENT
        mail["Subject"] = rng.choice(SUBJECTS)
        mail["Message-ID"] = f"<bench.{SLOT}.{rng.getrandbits(64):x}@client.bench>"
        mail["Date"] = "Mon, 02 Nov 2026 08:00:00 +0700"
        mail.set_content(rng.choice(TEXTS) + "\n\n" + rng.choice(TEXTS), cte="quoted-printable")
        made.append(mail.as_bytes())
    return made


@dataclass
class Load:
    """What one target's slices produced, added up."""

    name: str
    accepted_prefix: str
    window: float = 0.0
    latencies: list[float] = field(default_factory=list)
    total_ok: int = 0
    total_sent: int = 0
    errors: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
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

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(detail)


class Target:
    """A server under load: N SMTP sessions kept open, each sending mail after mail."""

    def __init__(self, server: Server, accepted_prefix: str, concurrency: int, seed: int, max_messages: int):
        self.server, self.concurrency, self.budget = server, concurrency, max_messages
        self.load = Load(server.name, accepted_prefix)
        self.rngs = [random.Random(seed * 1000 + i) for i in range(concurrency)]
        self.mails = templates(random.Random(seed))
        self.clients: list = [None] * concurrency
        self.sent = 0

    async def _client(self, index: int):
        import aiosmtplib

        if self.clients[index] is None:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.server.port, timeout=60, start_tls=False,
                                     local_hostname="client.bench")
            await client.connect()
            self.clients[index] = client
        return self.clients[index]

    async def close(self) -> None:
        for client in self.clients:
            if client is not None:
                try:
                    await client.quit()
                except Exception:  # closing after the measurement: nothing to report
                    client.close()

    async def run(self, seconds: float, measured: bool) -> None:
        """Every session sends mail back to back for ``seconds``; mails in flight then finish."""
        import aiosmtplib

        loop, load = asyncio.get_running_loop(), self.load
        cpu_before = (self.server.cpu_seconds(), time.process_time())
        slice_end = loop.time() + seconds

        async def session(index: int) -> None:
            rng = self.rngs[index]
            while loop.time() < slice_end and self.budget > 0:
                self.budget -= 1
                self.sent += 1
                # A new citizen each time, as at a city's address: no sender reaches the rate limit.
                local = f"citizen{index}.{self.sent}"
                sender = f"{local}@example.vn"
                raw = rng.choice(self.mails).replace(SLOT.encode(), local.encode())
                load.total_sent += 1
                began = loop.time()
                try:
                    client = await self._client(index)
                    _, answer = await client.sendmail(sender, [RECIPIENT], raw)
                except aiosmtplib.SMTPResponseException as error:
                    load.error(f"SMTP {error.code}", f"{error.code} {error.message[:200]}")
                    continue
                except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as error:
                    load.error(type(error).__name__, f"{type(error).__name__}: {error}")
                    self.clients[index] = None  # reconnect
                    continue
                ended = loop.time()
                if not answer.startswith(load.accepted_prefix):
                    load.error("unexpected answer", answer[:200])
                    continue
                load.total_ok += 1
                if measured and ended <= slice_end:
                    load.latencies.append(ended - began)

        await asyncio.gather(*(session(i) for i in range(self.concurrency)))
        if not measured:
            return
        cpu_after = (self.server.cpu_seconds(), time.process_time())
        load.window += seconds
        if load.server_cpu_seconds is not None and None not in (cpu_before[0], cpu_after[0]):
            load.server_cpu_seconds += cpu_after[0] - cpu_before[0]
        else:
            load.server_cpu_seconds = None
        load.client_cpu_seconds += cpu_after[1] - cpu_before[1]


def report(load: Load) -> None:
    server_cpu = (f"server CPU {load.server_cpu_seconds / load.window:4.0%}"
                  if load.server_cpu_seconds is not None and load.window else "server CPU ?")
    client_cpu = load.client_cpu_seconds / load.window if load.window else 0.0
    print(f"  {load.name:8s} {load.rate:8.1f} mail/s   p50 {load.percentile(0.50) * 1000:7.1f} ms   "
          f"p99 {load.percentile(0.99) * 1000:7.1f} ms   ({len(load.latencies)} in {load.window:.1f} s; "
          f"{server_cpu}, client CPU {client_cpu:4.0%})")
    if load.errors:
        print(f"  {load.name}: {sum(load.errors.values())} ERRORS of {load.total_sent} mails: "
              + ", ".join(f"{k} x{v}" for k, v in load.errors.most_common()))
        for sample in load.error_samples:
            print(f"    e.g. {sample}")


async def profile(server: Server, output: str, seconds: float) -> None:
    """py-spy record on the server process for ``seconds`` (--profile FILE)."""
    beside = Path(sys.executable).with_name("py-spy")
    command = str(beside) if beside.exists() else shutil.which("py-spy")
    if not command:
        print("  --profile: py-spy not found (pip install py-spy)", file=sys.stderr)
        return
    out = Path(output).resolve()
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    recorder = await asyncio.create_subprocess_exec(
        command, "record", "--pid", str(server.process.pid), "--duration", str(max(1, round(seconds))),
        "--rate", "250", "--format", fmt, "--output", str(out), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await recorder.communicate()
    if recorder.returncode != 0:
        print(f"  py-spy failed: {stderr.decode(errors='replace').strip()[-500:]}", file=sys.stderr)
    else:
        print(f"  profile of the service: {out} ({fmt})")


# --- reading the store back ---------------------------------------------------------------------------

VERIFY_SQL = {
    "complaints": "SELECT count(*) FROM complaints WHERE id > {floor} AND channel = 'email'",
    "messages": "SELECT count(*) FROM messages WHERE complaint_id > {floor} AND channel = 'email' "
                "AND direction = 'in'",
    "acks": "SELECT count(*) FROM outbox WHERE complaint_id > {floor} AND channel = 'email' AND key LIKE 'ack:%'",
    "acks_sent": "SELECT count(*) FROM outbox WHERE complaint_id > {floor} AND channel = 'email' "
                 "AND key LIKE 'ack:%' AND status = 'sent'",
}


async def verify(url: str, floor: int, load: Load) -> list[str]:
    found = await store_query(url, {k: v.format(floor=floor) for k, v in VERIFY_SQL.items()})
    if found is None:
        return ["the store has no complaints table"]
    print(f"  store: {found['complaints']} email complaints and {found['messages']} messages "
          f"(= {load.total_ok} answered 250), {found['acks']} acknowledgements queued, "
          f"{found['acks_sent']} of them sent to the sink relay by the end")
    return [f"{name}: store has {found[name]}, expected {load.total_ok}"
            for name in ("complaints", "messages", "acks") if found[name] != load.total_ok]


# --- the run -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating slices per target (default 5)")
    parser.add_argument("--concurrency", type=int, default=16, help="SMTP sessions at once (default 16)")
    parser.add_argument("--max-messages", type=int, default=200_000, help="cap on mails per target")
    parser.add_argument("--database-url", default=None, help="the service's store (default: a temporary SQLite file)")
    parser.add_argument("--no-relay", action="store_true",
                        help="no sink relay: acknowledgements stay queued (the outbox backs off), so the figure is "
                             "what taking mail alone costs")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if the ratio is below {TARGET_RATIO}")
    parser.add_argument("--profile", metavar="FILE",
                        help="after the run, load the service once more under py-spy; .svg, .json or collapsed text")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server:
        run_bare_server(args.bare_server)
        return 0
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-smtp-"))
    url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'feedback.db'}"
    beside = Path(sys.executable).with_name("feedback-intake")
    command = str(beside) if beside.exists() else shutil.which("feedback-intake")
    if not command:
        print("feedback-intake not found: activate the project's virtualenv (pip install -e .)", file=sys.stderr)
        return 2
    me = [sys.executable, str(Path(__file__).resolve())]
    sink_port, bare_port, smtp_port, web_port = free_port(), free_port(), free_port(), free_port()
    service_config(workdir / "config.toml", url, web_port, smtp_port, sink_port)
    sink = Server("sink", me + ["--bare-server", str(sink_port)], sink_port, workdir / "sink.log")
    bare = Server("bare", me + ["--bare-server", str(bare_port)], bare_port, workdir / "bare.log")
    service = Server("service", [command, "serve", "--config", str(workdir / "config.toml")], smtp_port,
                     workdir / "service.log")
    servers = [bare, service] if args.no_relay else [sink, bare, service]
    targets: list[Target] = []
    problems: list[str] = []
    try:
        for server in servers:
            server.start(workdir)
        for server in servers:
            await wait_for_smtp(server)
        floor = (await store_query(url, {"max": "SELECT coalesce(max(id), 0) FROM complaints"}) or {"max": 0})["max"]
        targets = [Target(bare, "OK", args.concurrency, args.seed, args.max_messages),
                   Target(service, "2.0.0 Taken as ", args.concurrency, args.seed + 1, args.max_messages)]
        print(f"SMTP intake benchmark: {args.concurrency} sessions, {args.warmup:g} s warm-up + "
              f"{args.seconds:g} s measured per target in {args.rounds} alternating slices; "
              f"store {url.split('://')[0]}{'; no relay' if args.no_relay else ''}")
        for target in targets:
            await target.run(args.warmup, measured=False)
        for _ in range(args.rounds):
            for target in targets:
                await target.run(args.seconds / args.rounds, measured=True)
        if args.profile:
            await asyncio.gather(profile(service, args.profile, args.seconds),
                                 targets[1].run(args.seconds, measured=False))
        for target in targets:
            await target.close()
            report(target.load)
        bare_load, service_load = targets[0].load, targets[1].load
        ratio = service_load.rate / bare_load.rate if bare_load.rate else 0.0
        await asyncio.sleep(1.0)  # let the dispatcher catch up a little before the count
        service.stop()
        problems = await verify(url, floor, service_load)
        problems += [f"{load.name}: {sum(load.errors.values())} errors" for load in (bare_load, service_load)
                     if load.errors]
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(f"  ratio service/bare: {ratio:.3f} (target >= {TARGET_RATIO}: {verdict})")
        for problem in problems:
            print(f"  PROBLEM: {problem}")
        if args.check and (ratio < TARGET_RATIO or problems):
            return 1
        return 0
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"  kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
