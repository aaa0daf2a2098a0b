"""The fault suite's harness: the real service in child processes under SMS load, killed
with SIGKILL at random points and started again, with the store made unreachable for a
while, counting what citizens got. Used by tests/test_faults.py (short, in CI) and
bench/faults.py (long).

The load is what a gateway does: signed webhooks of the generic gateway, each SMS from
its own phone, posted again until answered 2xx (a gateway retries what it could not
deliver). The fake operator (tests/test_sms_support.py) takes the acknowledgements and,
like a real operator with idempotency keys, keeps one copy per key; it also counts every
request, so a message sent twice is seen even though the citizen gets it once.

A run prints: accepted, stored, acknowledged, delivered, lost, doubled (a citizen who got
two copies), sent again (a second request for one message, which the operator recognised),
and the seconds from recovery until the outbox was empty.

The same on Zalo (``zalo_killed_under_load``): signed ``user_send_text`` events from new
citizens, posted until answered 200, and the fake Zalo (tests/zalo_fake.py, on the real
clock) taking the greetings and acknowledgements. Zalo keeps no key of ours, so any second
send is a second copy; a send whose outcome a kill left unknown must be found by the
look-up in the OA's conversation, not sent again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from sqlalchemy import func, select

from bot import credentials
from bot.clock import SystemClock
from service.assembly import open_core
from service.config import parse_config
from storage.models import Complaint, OutboxMessage
from tests.test_sms_support import GENERIC_SECRET, SECRETS, FakeOperator, generic_headers
from tests.zalo_fake import APP_ID, OA_ID, FakeZalo, signed_delivery
from tests.zalo_world import ZALO_ENV

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port no one listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def toml(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Process:
    """One service process: its config file, port and the child running it."""

    name: str
    port: int
    config: Path
    child: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {**os.environ, **SECRETS, **ZALO_ENV}
        # The log goes to a file: a pipe nobody reads fills up and blocks the process's logging.
        with open(self.config.with_suffix(".log"), "ab") as log:
            self.child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service.cli", "serve", "--config", str(self.config), cwd=ROOT, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.child.returncode is not None:
                    tail = self.config.with_suffix(".log").read_text(encoding="utf-8", errors="replace")[-2000:]
                    raise RuntimeError(f"{self.name} exited: {tail}")
                try:
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye."""
        if self.child is not None and self.child.returncode is None:
            self.child.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.child is not None and self.child.returncode is None:
            self.child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.child.wait(), 30)
            except asyncio.TimeoutError:
                self.child.kill()
        if self.child is not None:
            await self.child.wait()


# The outbox's batch: on SMS (the generic gateway here) all of it is in flight at once, so
# it bounds what a kill may send a second time (which the gateway recognises).
BATCH_SIZE = 20


def write_config(folder: Path, name: str, database_url: str, operator_url: str, port: int, *,
                 concurrency: int = 4, zalo_url: str | None = None) -> Path:
    """A service on this database with the generic gateway (and Zalo, talking to the fake at
    ``zalo_url``), its dispatcher named for restarts."""
    zalo = "" if zalo_url is None else f"""
[zalo]
enabled = true
app_id = {toml(APP_ID)}
oa_id = {toml(OA_ID)}
oa_secret_env = "ZALO_OA_SECRET"
app_secret_env = "ZALO_APP_SECRET"
api_base_url = {toml(zalo_url)}
oauth_base_url = {toml(zalo_url)}
zns_base_url = {toml(zalo_url)}
"""
    text = zalo + f"""
[storage]
url = {toml(database_url)}
[web]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
[sms]
followup_window_hours = 0.0
[[sms.gateways]]
name = "nha-mang"
kind = "generic"
number = "UBND.HN"
api_url = {toml(operator_url + "/send")}
secret_env = "FI_TEST_GENERIC_SECRET"
[outbox]
poll_seconds = 0.1
batch_size = {BATCH_SIZE}
concurrency = {concurrency}
heartbeat_seconds = 0.5
takeover_seconds = 2.0
worker_name = {toml(name)}
backoff_base_seconds = 0.2
backoff_max_seconds = 2.0
max_attempts = 50
send_timeout_seconds = 5.0
[scheduler]
sweep_seconds = 3600.0
"""
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def sms_body(number: int) -> bytes:
    """The generic gateway's webhook for SMS number ``number``, each from its own phone."""
    return json.dumps({"id": f"load-{number}", "from": f"+84915{number:06d}", "to": "UBND.HN",
                       "text": f"Đèn đường số {number} ngõ 12 bị hỏng, tối om."}, ensure_ascii=False).encode()


@dataclass
class Load:
    """Messages a gateway must hand over; it keeps trying each until it gets a 2xx."""

    total: int
    accepted: set[int] = field(default_factory=set)
    attempts: int = 0
    failures: Counter = field(default_factory=Counter)

    async def deliver(self, processes: list[Process], number: int, http: aiohttp.ClientSession) -> None:
        body = sms_body(number)
        headers = generic_headers(body, GENERIC_SECRET)
        while True:
            self.attempts += 1
            target = random.choice(processes)
            try:
                async with http.post(f"{target.url}/webhooks/sms/nha-mang", data=body, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=10)) as response:
                    if 200 <= response.status < 300:
                        self.accepted.add(number)
                        return
                    self.failures[response.status] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                self.failures[type(error).__name__] += 1
            await asyncio.sleep(0.05)

    async def run(self, processes: list[Process], concurrency: int = 16) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for number in range(self.total):
            queue.put_nowait(number)
        async with aiohttp.ClientSession() as http:
            async def worker() -> None:
                while not queue.empty():
                    await self.deliver(processes, queue.get_nowait(), http)

            await asyncio.gather(*(worker() for _ in range(concurrency)))


@dataclass
class Outcome:
    """What the citizens got."""

    accepted: int
    stored: int
    acknowledged: int  # complaints with an acknowledgement the operator took
    delivered: int  # acknowledgements the operator took, one per key
    lost: int  # accepted SMS with no complaint, or a complaint whose citizen got nothing
    doubled: int  # citizens who got two copies
    sent_again: int  # second requests for one message (recognised by the operator)
    resent_rows: int  # outbox rows marked sent again after an unknown outcome
    drained_seconds: float

    def line(self) -> str:
        return (f"accepted {self.accepted}, stored {self.stored}, acknowledged {self.acknowledged}, delivered "
                f"{self.delivered}, lost {self.lost}, doubled {self.doubled}, sent again {self.sent_again} "
                f"(rows marked resent: {self.resent_rows}), outbox empty {self.drained_seconds:.1f} s after "
                f"recovery")


async def drain(database_url: str, expected: int, timeout: float = 120.0, prefix: str = "ack:",
                per_complaint: int = 1) -> float:
    """Seconds until every acknowledgement of ``expected`` complaints is sent (every message
    whose key starts with ``prefix``, ``per_complaint`` of them for each)."""
    config = parse_config({"storage": {"url": database_url}, "web": {"port": 0}}, {})
    core = await open_core(config, upgrade=False)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            async with core.sessions() as session:
                complaints = await session.scalar(select(func.count()).select_from(Complaint))
                waiting = await session.scalar(select(func.count()).select_from(OutboxMessage).where(
                    OutboxMessage.status != "sent", OutboxMessage.key.startswith(prefix)))
                acks = await session.scalar(select(func.count()).select_from(OutboxMessage).where(
                    OutboxMessage.key.startswith(prefix)))
            if complaints >= expected and acks >= per_complaint * complaints and waiting == 0:
                return time.monotonic() - started
            await asyncio.sleep(0.2)
    finally:
        await core.close()
    raise AssertionError(f"the outbox did not drain in {timeout:.0f} s")


async def outcome(database_url: str, load: Load, operator: FakeOperator, drained: float) -> Outcome:
    config = parse_config({"storage": {"url": database_url}, "web": {"port": 0}}, {})
    core = await open_core(config, upgrade=False)
    try:
        async with core.sessions() as session:
            stored = set((await session.scalars(select(Complaint.text))).all())
            resent = await session.scalar(select(func.count()).select_from(OutboxMessage)
                                          .where(OutboxMessage.resent.is_(True)))
    finally:
        await core.close()
    stored_numbers = {number for number in load.accepted
                      if f"Đèn đường số {number} ngõ 12 bị hỏng, tối om." in stored}
    phones = Counter(d.to for d in operator.delivered)
    acknowledged = {number for number in stored_numbers if phones.get(f"+84915{number:06d}")}
    requests = Counter(operator.requested_ids)
    return Outcome(
        accepted=len(load.accepted), stored=len(stored_numbers), acknowledged=len(acknowledged),
        delivered=sum(phones.values()), lost=len(load.accepted - acknowledged),
        doubled=sum(1 for count in phones.values() if count > 1),
        sent_again=sum(count - 1 for count in requests.values() if count > 1), resent_rows=resent,
        drained_seconds=drained)


async def killed_during(load: Load | ZaloLoad, running: list[Process], messages: int, kills: int) -> None:
    """Run the load; ``kills`` times, at a random point, one process is killed with SIGKILL
    and started again."""
    sending = asyncio.create_task(load.run(running))
    for _ in range(kills):
        target = len(load.accepted) + random.randint(messages // (4 * kills), messages // (2 * kills))
        while len(load.accepted) < min(target, messages - 1) and not sending.done():
            await asyncio.sleep(0.01)
        victim = random.choice(running)
        victim.kill()
        await victim.child.wait()
        await asyncio.sleep(random.uniform(0.0, 0.5))
        await victim.start()
    await sending


async def killed_under_load(folder: Path, database_url: str, *, messages: int, kills: int, processes: int = 1,
                            concurrency: int = 4) -> Outcome:
    """SMS load on ``processes`` service processes; ``kills`` times one of them is killed
    with SIGKILL at a random point and started again; then wait for the outbox to drain."""
    operator = await FakeOperator().start()
    running = [Process(f"web-{i + 1}", free_port(), Path()) for i in range(processes)]
    for process in running:
        process.config = write_config(folder, process.name, database_url, operator.url, process.port,
                                      concurrency=concurrency)
    try:
        for process in running:
            await process.start()
        load = Load(messages)
        await killed_during(load, running, messages, kills)
        drained = await drain(database_url, messages)
        return await outcome(database_url, load, operator, drained)
    finally:
        for process in running:
            await process.stop()
        await operator.stop()


class StoreAway:
    """Makes the store unreachable for a while, as a network cut or a busy backup would:
    PostgreSQL refuses new connections and drops the open ones; a SQLite file is held by
    another connection's exclusive lock (the service's busy timeout runs out)."""

    def __init__(self, database_url: str):
        self.url = database_url
        self._sqlite = None

    async def __aenter__(self) -> StoreAway:
        if self.url.startswith("sqlite"):
            self._sqlite = sqlite3.connect(self.url.split("///", 1)[1], timeout=30, isolation_level=None)
            self._sqlite.execute("BEGIN EXCLUSIVE")
        else:
            await self._postgres(allow=False)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
        else:
            await self._postgres(allow=True)

    async def _postgres(self, allow: bool) -> None:
        base, name = self.url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)
        admin = await asyncpg.connect(f"{base}/postgres")
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
            if not allow:
                await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        finally:
            await admin.close()


async def store_away_under_load(folder: Path, database_url: str, *, messages: int, seconds: float,
                                processes: int = 1) -> Outcome:
    """SMS load while the store is out of reach for ``seconds``: the gateways get 5xx and
    try again, and nothing is lost or doubled once the store is back."""
    operator = await FakeOperator().start()
    running = [Process(f"web-{i + 1}", free_port(), Path()) for i in range(processes)]
    for process in running:
        process.config = write_config(folder, process.name, database_url, operator.url, process.port)
    try:
        for process in running:
            await process.start()
        load = Load(messages)
        sending = asyncio.create_task(load.run(running))
        while len(load.accepted) < messages // 3 and not sending.done():
            await asyncio.sleep(0.01)
        async with StoreAway(database_url):
            await asyncio.sleep(seconds)
        await sending
        drained = await drain(database_url, messages)
        return await outcome(database_url, load, operator, drained)
    finally:
        for process in running:
            await process.stop()
        await operator.stop()


async def gateway_down_under_load(folder: Path, database_url: str, *, messages: int, refusals: int, slow: int,
                                  processes: int = 1) -> Outcome:
    """The gateway answers 503 to ``refusals`` requests, then takes ``slow`` more without an
    answer in time (it takes them all the same), then is back: every message goes out once."""
    operator = await FakeOperator().start()
    operator.slow_seconds = 6.0  # past the service's send_timeout_seconds (5)
    operator.fail_next(*[503] * refusals, *["slow"] * slow)
    running = [Process(f"web-{i + 1}", free_port(), Path()) for i in range(processes)]
    for process in running:
        process.config = write_config(folder, process.name, database_url, operator.url, process.port)
    try:
        for process in running:
            await process.start()
        load = Load(messages)
        await load.run(running)
        drained = await drain(database_url, messages, timeout=300)
        return await outcome(database_url, load, operator, drained)
    finally:
        for process in running:
            await process.stop()
        await operator.stop()


def zalo_user(number: int) -> str:
    """Citizen ``number``'s Zalo id (19 digits, as Zalo's)."""
    return f"58162573{number:011d}"


def zalo_text(number: int) -> str:
    return f"Rác ở đầu ngõ {number} phố Huế chưa được thu gom ba hôm nay."


@dataclass
class ZaloLoad:
    """Zalo's webhook deliveries: each event is posted again until it is answered 200."""

    fake: FakeZalo
    total: int
    accepted: set[int] = field(default_factory=set)

    async def deliver(self, processes: list[Process], number: int, http: aiohttp.ClientSession) -> None:
        event = self.fake.text(zalo_user(number), zalo_text(number), msg_id=f"load{number:016d}")
        body, headers = signed_delivery(self.fake.app_id, self.fake.oa_secret, event)
        while True:
            target = random.choice(processes)
            try:
                async with http.post(f"{target.url}/webhooks/zalo", data=body, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=10)) as response:
                    if response.status == 200:
                        self.accepted.add(number)
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.05)

    async def run(self, processes: list[Process], concurrency: int = 16) -> None:
        numbers = list(range(self.total))
        async with aiohttp.ClientSession() as http:
            async def worker() -> None:
                while numbers:
                    await self.deliver(processes, numbers.pop(0), http)

            await asyncio.gather(*(worker() for _ in range(concurrency)))


@dataclass
class ZaloOutcome:
    """What the Zalo citizens got."""

    accepted: int
    stored: int
    greeted: int  # citizens who got the greeting
    acknowledged: int  # citizens who got the acknowledgement with their complaint's code
    doubled: int  # citizens who got one of those twice
    looked_up: int  # rows the look-up found sent (a kill had left them unsure)
    resent_rows: int  # rows sent again after an unknown outcome

    def line(self) -> str:
        return (f"accepted {self.accepted}, stored {self.stored}, greeted {self.greeted}, acknowledged "
                f"{self.acknowledged}, doubled {self.doubled}, conversation look-ups {self.looked_up}, "
                f"rows sent again {self.resent_rows}")


async def zalo_killed_under_load(folder: Path, database_url: str, *, messages: int, kills: int,
                                 processes: int = 1) -> ZaloOutcome:
    """Zalo load on ``processes`` service processes; ``kills`` times one is killed with
    SIGKILL at a random point and started again; then wait for the outbox to drain."""
    fake = await FakeZalo(clock=SystemClock()).start()
    operator = await FakeOperator().start()
    running = [Process(f"web-{i + 1}", free_port(), Path()) for i in range(processes)]
    for process in running:
        process.config = write_config(folder, process.name, database_url, operator.url, process.port,
                                      zalo_url=fake.url)
    try:
        await running[0].start()  # makes the store; then the OA's first token pair goes in
        config = parse_config({"storage": {"url": database_url}, "web": {"port": 0}}, {})
        core = await open_core(config, upgrade=False)
        try:
            await credentials.store(core, "zalo", {"access_token": fake.access_token,
                                                   "refresh_token": fake.refresh_token, "expires_at": None})
        finally:
            await core.close()
        for process in running[1:]:
            await process.start()
        load = ZaloLoad(fake, messages)
        await killed_during(load, running, messages, kills)
        await drain(database_url, messages, prefix="", per_complaint=2)  # a greeting and an acknowledgement
        return await _zalo_outcome(database_url, load, fake)
    finally:
        for process in running:
            await process.stop()
        await operator.stop()
        await fake.stop()


async def _zalo_outcome(database_url: str, load: ZaloLoad, fake: FakeZalo) -> ZaloOutcome:
    config = parse_config({"storage": {"url": database_url}, "web": {"port": 0}}, {})
    core = await open_core(config, upgrade=False)
    try:
        async with core.sessions() as session:
            codes = dict((await session.execute(select(Complaint.text, Complaint.tracking_code))).all())
            resent = await session.scalar(select(func.count()).select_from(OutboxMessage)
                                          .where(OutboxMessage.resent.is_(True)))
    finally:
        await core.close()
    copies = Counter((call.user_id, call.text) for call in fake.sent)
    greeted = acknowledged = stored = 0
    for number in load.accepted:
        user, code = zalo_user(number), codes.get(zalo_text(number))
        stored += code is not None
        texts = [text for (to, text) in copies if to == user]
        acknowledged += code is not None and any(code in text for text in texts)
        greeted += any(code is None or code not in text for text in texts)
    looked_up = sum(1 for call in fake.calls if call.endpoint == "conversation")
    return ZaloOutcome(accepted=len(load.accepted), stored=stored, greeted=greeted, acknowledged=acknowledged,
                       doubled=len({to for (to, _), count in copies.items() if count > 1}), looked_up=looked_up,
                       resent_rows=resent)
