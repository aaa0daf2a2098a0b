"""The outbox dispatcher against a sender that talks HTTP to a local fake gateway.

The fake gateway is a real aiohttp server on a free port that answers as scripted
(500, 400, 200, or a slow 200); the sender maps HTTP answers to delivery errors the way
the real gateway senders do: 5xx and connection errors are transient, 4xx permanent.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from collections import Counter

import aiohttp
from aiohttp import web
from sqlalchemy import event, func, select, text

from bot import intake, outbox
from service.config import Config
from bot.core import Core, OutboxSignal
from service.assembly import open_core
from bot.dispatcher import LOOKUP_SKEW, Dispatcher
from contract.delivery import PermanentDeliveryError, TransientDeliveryError
from contract.messages import Inbound, Outgoing
from storage.db import read_aside
from storage.models import OutboxMessage
from tests.conftest import plan_of, statements
from tests.telegram_fake import eventually


class FakeGateway:
    """A local HTTP endpoint standing in for an SMS operator's API."""

    def __init__(self, script: list[int] | None = None, delay: float = 0.0, slow: dict[str, float] | None = None,
                 together: int = 0):
        self.script = list(script or [])
        self.together = together  # answer nothing until this many requests are in, then all at once
        self.arrived = 0
        self.gate = asyncio.Event()
        self.delay = delay
        self.slow = dict(slow or {})  # a message's key: seconds its answer takes
        self.received: list[dict] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.together:
            self.arrived += 1
            if self.arrived >= self.together:
                self.gate.set()
            await self.gate.wait()
        if self.delay or body.get("key") in self.slow:
            await asyncio.sleep(self.slow.get(body.get("key"), self.delay))
        status = self.script.pop(0) if self.script else 200
        if status == 200:
            self.received.append(body)
            return web.json_response({"id": f"gw-{len(self.received)}"})
        return web.json_response({"error": "scripted"}, status=status)

    async def start(self) -> FakeGateway:
        app = web.Application()
        app.router.add_post("/messages", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/messages"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


class HttpSender:
    """Sends outgoing messages as JSON POSTs, as the generic SMS gateway does."""

    channel = "sms"

    def __init__(self, url: str):
        self.url = url

    async def send(self, message: Outgoing) -> str | None:
        try:
            async with aiohttp.ClientSession() as http, http.post(
                self.url, json={"to": message.recipient, "text": message.text, "key": message.key}
            ) as response:
                if response.status >= 500:
                    raise TransientDeliveryError(f"gateway answered {response.status}")
                if response.status >= 400:
                    raise PermanentDeliveryError(f"gateway refused: {response.status}")
                return (await response.json())["id"]
        except aiohttp.ClientConnectionError as error:
            raise TransientDeliveryError(f"cannot reach gateway: {error}") from error


async def hold_the_store(core: Core, held: list) -> None:
    """Take every connection the pool gives (SQLite: one; PostgreSQL: pool_size and as many
    more, storage.db), each in a transaction, as a long intake batch holds the store."""
    for _ in range(1 if core.engine.dialect.name == "sqlite" else 2):
        connection = await core.engine.connect()
        await connection.begin()
        held.append(connection)


def let_go(held: list) -> None:
    """Give back what ``hold_the_store`` took."""
    while held:
        asyncio.ensure_future(held.pop().close())


async def queue(core: Core, count: int = 1, channel: str = "sms") -> None:
    async with core.sessions() as session, session.begin():
        for i in range(count):
            await outbox.enqueue(session, core.clock.now(), Outgoing(
                key=f"test:{channel}:{i}", channel=channel, recipient=f"+8491234{i:04d}", text=f"Tin nhắn {i}"))


async def stored(core: Core) -> list[OutboxMessage]:
    async with core.sessions() as session:
        return (await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()


async def test_a_transient_failure_is_retried_after_backoff_then_sent(core):
    gateway = await FakeGateway(script=[500]).start()
    try:
        dispatcher = Dispatcher(core, {"sms": HttpSender(gateway.url)})
        await queue(core)
        assert await dispatcher.run_once() == 1
        [row] = await stored(core)
        assert (row.status, row.attempts, row.last_error) == ("queued", 1, "gateway answered 500")
        wait = (row.next_attempt_at - core.clock.now()).total_seconds()
        base = core.config.outbox.backoff_base_seconds
        assert 0.8 * base <= wait <= 1.2 * base
        # Not due yet: nothing is claimed before the backoff has passed.
        assert await dispatcher.run_once() == 0
        core.clock.advance(seconds=wait + 0.01)
        assert await dispatcher.run_once() == 1
        [row] = await stored(core)
        assert (row.status, row.attempts, row.external_id, row.last_error) == ("sent", 2, "gw-1", None)
        assert gateway.received == [{"to": "+84912340000", "text": "Tin nhắn 0", "key": "test:sms:0"}]
    finally:
        await gateway.stop()


async def test_one_recipient_s_messages_go_out_in_the_order_queued_others_at_the_same_time(core):
    # The first message to +84900000001 is slow to answer: the two queued after it for the same
    # person wait for it (a greeting must not arrive after the acknowledgement queued with it),
    # while another person's message, sent in the same round of four, goes out meanwhile.
    assert core.config.outbox.concurrency == 4
    gateway = await FakeGateway(slow={"a:1": 0.5}).start()
    try:
        dispatcher = Dispatcher(core, {"sms": HttpSender(gateway.url)})
        async with core.sessions() as session, session.begin():
            await outbox.enqueue_many(session, core.clock.now(), [outbox.Queued(Outgoing(
                key=key, channel="sms", recipient=to, text=key)) for key, to in (
                    ("a:1", "+84900000001"), ("a:2", "+84900000001"), ("b:1", "+84900000002"),
                    ("a:3", "+84900000001"), ("c:1", "+84900000003"), ("b:2", "+84900000002"))])
        assert await dispatcher.run_once() == 6
        order = [body["key"] for body in gateway.received]
        assert [key for key in order if key.startswith("a:")] == ["a:1", "a:2", "a:3"]
        assert [key for key in order if key.startswith("b:")] == ["b:1", "b:2"]
        assert order.index("b:1") < order.index("a:1")  # not held behind another person's slow send
        assert {row.status for row in await stored(core)} == {"sent"}
    finally:
        await gateway.stop()


async def test_sends_that_return_together_are_marked_sent_together(make_config, clock):
    # Eight sends answered at the same moment: their rows are marked in fewer writes than
    # eight (the first write may go alone, the others wait for it and go in the next), each
    # row with its own provider id and time.
    core = await open_core(make_config({"outbox": {"concurrency": 8}}), clock=clock)
    gateway = await FakeGateway(together=8).start()
    marks = []

    def count(_conn, _cursor, statement, _parameters, _context, executemany):
        if statement.lstrip().upper().startswith("UPDATE OUTBOX") and "sent_at" in statement:
            marks.append(executemany)

    event.listen(core.engine.sync_engine, "before_cursor_execute", count)
    try:
        await queue(core, 8)
        assert await Dispatcher(core, {"sms": HttpSender(gateway.url)}).run_once() == 8
        rows = await stored(core)
        assert [row.status for row in rows] == ["sent"] * 8 and all(row.sent_at for row in rows)
        assert sorted(row.external_id for row in rows) == sorted(f"gw-{i}" for i in range(1, 9))
        assert 1 <= len(marks) < 8 and any(marks)  # executemany: several rows in one statement
    finally:
        event.remove(core.engine.sync_engine, "before_cursor_execute", count)
        await gateway.stop()
        await core.close()


async def test_marks_handed_over_while_the_store_is_busy_go_in_one_write(make_config, clock):
    """A write of "sent" marks takes every mark handed over until its transaction has begun:
    while other transactions hold the store (intake's; on SQLite the process's one
    connection), sends that return one after another go in one write, not the first alone
    and the rest in the next; and none returns before its row is committed."""
    from bot.delivery import SentMarks

    core = await open_core(make_config({"storage": {"pool_size": 1}}), clock=clock)
    held = []
    try:
        await queue(core, 3)
        claims = await outbox.claim(core, "worker-a", ["sms"], 3)
        await outbox.start(core, "worker-a", [claim.id for claim in claims])
        marks = SentMarks(core)
        def wanted(statement: str) -> bool:
            return statement.lstrip().upper().startswith("UPDATE OUTBOX") and "sent_at" in statement

        with statements(core, wanted) as writes:
            await hold_the_store(core, held)
            first = asyncio.create_task(marks.mark(claims[0], "gw-1", False))
            await asyncio.sleep(0.05)  # its write waits for the store
            rest = [asyncio.create_task(marks.mark(claim, f"gw-{n}", False)) for n, claim in enumerate(claims[1:], 2)]
            await asyncio.sleep(0.05)
            assert not any(task.done() for task in [first, *rest])
            while held:
                await held.pop().close()
            await asyncio.wait_for(asyncio.gather(first, *rest), 10)
        assert len(writes) == 1
        rows = await stored(core)
        assert [(row.status, row.external_id) for row in rows] == [("sent", f"gw-{n}") for n in (1, 2, 3)]
    finally:
        for connection in held:
            await connection.close()
        await core.close()


class AskedHttpSender(HttpSender):
    """The same, with a provider that can be asked what became of a send (as Twilio can)."""

    async def lookup(self, message: Outgoing, since: datetime) -> list[str]:
        return []


async def test_a_channel_that_can_be_asked_sends_its_whole_batch_at_once_the_others_four_at_a_time(core):
    """A send whose outcome is unknown after a crash is asked about (``lookup``) before it
    goes again, so on such a channel the whole claimed batch goes at once, marked as being
    sent in one transaction; on a channel that cannot be asked, ``outbox.concurrency`` at a
    time, each group in a transaction of its own."""
    def starts(statement: str) -> bool:
        return statement.lstrip().upper().startswith("UPDATE OUTBOX") and "attempts" in statement

    together = await FakeGateway(together=10).start()  # answers none until ten are in
    plain = await FakeGateway().start()
    try:
        await queue(core, 10, channel="sms")
        with statements(core, starts) as marked:
            assert await asyncio.wait_for(Dispatcher(core, {"sms": AskedHttpSender(together.url)}).run_once(), 20) == 10
        assert len(marked) == 1 and len(together.received) == 10
        await queue(core, 10, channel="telegram")
        with statements(core, starts) as marked:
            assert await Dispatcher(core, {"telegram": HttpSender(plain.url)}).run_once() == 10
        assert core.config.outbox.concurrency == 4 and len(marked) == 3  # 4, 4 and 2
        assert [row.status for row in await stored(core)] == ["sent"] * 20
    finally:
        await together.stop()
        await plain.stop()


async def test_rows_on_a_channel_that_can_be_asked_are_marked_being_sent_in_their_claims_transaction(core):
    """Their whole batch goes at once, so the claim marks them as being sent (one transaction
    where there were two, each waiting for the store under load); rows on the other
    channels are only claimed, and marked in groups just before they go."""
    await queue(core, 3, channel="sms")
    await queue(core, 3, channel="telegram")
    nowhere = "http://127.0.0.1:9/"
    dispatcher = Dispatcher(core, {"sms": AskedHttpSender(nowhere), "telegram": HttpSender(nowhere)})
    claims = await dispatcher.claim()  # one transaction (outbox.claim)
    assert len(claims) == 6
    assert all(claim.attempts == 0 for claim in claims)  # the attempt about to be made is the first
    rows = {(row.channel, row.status, row.attempts) for row in await stored(core)}
    assert rows == {("sms", "sending", 1), ("telegram", "claimed", 0)}


async def telegram_hangs(core: Core, hanging: FakeGateway) -> None:
    """Queue a Telegram message and wake the dispatcher; return once its send hangs at the
    gateway (a round of the Telegram lane under way until the test lets it go)."""
    await queue(core, 1, channel="telegram")
    core.outbox_ready.set()

    async def telegram_in_flight() -> bool:
        return hanging.arrived == 1

    await eventually(telegram_in_flight)


async def test_a_channel_whose_provider_hangs_does_not_hold_back_another_channels_messages(core):
    """Each channel is sent in a lane of its own: while a Telegram send hangs (a provider
    that takes its time, a flood wait sat out in place; up to ``send_timeout_seconds``),
    SMS acknowledgements queued meanwhile still go. In one round for every channel they
    waited for the hanging send."""
    hanging = FakeGateway(together=1_000)  # answers nothing until the test lets it
    hanging, fast = await hanging.start(), await FakeGateway().start()
    dispatcher = Dispatcher(core, {"telegram": HttpSender(hanging.url), "sms": AskedHttpSender(fast.url)})
    running = asyncio.create_task(dispatcher.run())
    try:
        await telegram_hangs(core, hanging)
        await queue(core, 3, channel="sms")
        core.outbox_ready.set()

        async def sms_sent() -> bool:
            return sum(row.status == outbox.SENT for row in await stored(core) if row.channel == "sms") == 3

        await eventually(sms_sent, 5)
        assert len(fast.received) == 3 and hanging.received == []
        assert [row.status for row in await stored(core) if row.channel == "telegram"] == [outbox.SENDING]
        hanging.gate.set()

        async def all_sent() -> bool:
            return all(row.status == outbox.SENT for row in await stored(core))

        await eventually(all_sent, 5)
        assert len(hanging.received) == 1
    finally:
        hanging.gate.set()
        dispatcher.stop()
        await asyncio.wait_for(running, 10)
        await hanging.stop()
        await fast.stop()


def test_a_signal_wakes_the_channels_it_names_and_a_signal_naming_none_wakes_every_one():
    signal = OutboxSignal()
    assert signal.take() == set() and not signal.is_set()
    signal.set({"sms"})
    signal.set(["email"])
    assert signal.is_set() and signal.take() == {"sms", "email"} and not signal.is_set()
    signal.set({"sms"})
    signal.set()  # a caller that does not say: every channel
    signal.set({"zalo"})
    assert signal.take() is None
    signal.set({"sms"})
    signal.clear()
    assert signal.take() == set()


async def test_intake_wakes_the_dispatcher_for_the_channels_it_queued_on_not_the_idle_others(make_core):
    """Intake's signal names the channels its batch queued on (``OutboxSignal``): while a
    Telegram round is under way, SMS complaints filed one after another make the dispatcher
    claim for SMS, and no longer each time for Zalo too, which has nothing queued (on SQLite
    a write transaction in vain on the one connection, per intake batch). A signal naming no
    channel (the Telegram message here) and the poll still claim for every channel."""
    core = await make_core({"outbox": {"poll_seconds": 30, "heartbeat_seconds": 30, "takeover_seconds": 60}})
    hanging, fast, idle = (await FakeGateway(together=1_000).start(), await FakeGateway().start(),
                           await FakeGateway().start())
    dispatcher = Dispatcher(core, {"telegram": HttpSender(hanging.url), "sms": AskedHttpSender(fast.url),
                                   "zalo": HttpSender(idle.url)})

    def claim(sql: str) -> bool:
        return sql.startswith("SELECT outbox.id") and "outbox.channel IN" in sql

    with statements(core, claim) as claims:
        running = asyncio.create_task(dispatcher.run())
        try:
            await telegram_hangs(core, hanging)  # a signal naming no channel
            assert any("zalo" in str(parameters) for _, parameters in claims)  # the first claims: every channel
            before = len(claims)
            for n in range(5):
                await intake.receive(core, Inbound(channel="sms", external_id=f"SM{n}", sender=f"+8491200000{n}",
                                                   text=f"Đèn đường hỏng ở ngõ {n} phố Trần Duy Hưng",
                                                   received_at=core.clock.now()))

                async def acknowledged() -> bool:
                    return len(fast.received) == n + 1

                await eventually(acknowledged, 5)
            during = [parameters for _, parameters in claims[before:]]
            assert any("sms" in str(parameters) for parameters in during), during
            assert not any("zalo" in str(parameters) or "telegram" in str(parameters) for parameters in during), during
            assert idle.received == [] and hanging.received == []
        finally:
            hanging.gate.set()
            dispatcher.stop()
            await asyncio.wait_for(running, 10)
            for gateway in (hanging, fast, idle):
                await gateway.stop()


class PhotoSender(AskedHttpSender):
    """A provider that can be asked about a text, but not whether the photos after it went
    (as Zalo's conversation)."""

    def looks_up(self, message: Outgoing) -> bool:
        return not message.text.startswith("Ảnh")


async def test_a_message_its_provider_cannot_be_asked_about_goes_in_a_group_and_its_recipients_later_ones_after_it(
        core):
    """On a channel that can be asked, a message the provider cannot be asked about (a Zalo
    answer with photos) is not sent with the whole batch at once, or a crash could send a
    batch of them twice: it goes in a group of ``outbox.concurrency``, marked as being sent
    just before, and its recipient's later messages wait for it, in the order queued."""
    gateway = await FakeGateway().start()
    texts = [("+84911000001", "Ảnh hiện trường"), ("+84911000001", "Câu trả lời"), ("+84911000002", "Câu trả lời"),
             *((f"+8491100001{n}", f"Ảnh {n}") for n in range(5))]
    async with core.sessions() as session, session.begin():
        for n, (recipient, words) in enumerate(texts):
            await outbox.enqueue(session, core.clock.now(), Outgoing(
                key=f"photo:{n}", channel="sms", recipient=recipient, text=words))
    dispatcher = Dispatcher(core, {"sms": PhotoSender(gateway.url)})
    try:
        claims = await dispatcher.claim()
        assert [row.status for row in await stored(core)] == ["claimed", "claimed", "sending"] + ["claimed"] * 5
        # Each claim says whether it was marked as being sent when claimed: the send goes by that.
        assert [claim.started for claim in claims] == [False, False, True] + [False] * 5
        await dispatcher.send(claims)
        assert [row.status for row in await stored(core)] == ["sent"] * 8
        first = [body["text"] for body in gateway.received if body["to"] == "+84911000001"]
        assert first == ["Ảnh hiện trường", "Câu trả lời"]
        assert gateway.received[0]["to"] == "+84911000002"  # the one that could go at once went first
    finally:
        await gateway.stop()


async def test_where_a_send_can_be_asked_about_the_next_to_its_recipient_does_not_wait_for_its_mark(
        make_config, clock):
    """One recipient's messages go one after another. On a channel whose sender can be asked
    what became of a send, the next goes as soon as the last one's send returns: a crash
    before its "sent" mark is written leaves it unsure, and it is looked up, not sent twice.
    Elsewhere a group of ``outbox.concurrency`` (here 1) is marked as being sent only with
    or after the last group's "sent" marks (at most one group unrecorded at a crash), so
    the next waits until the mark is written. The gateway holds every connection the store
    gives (as an intake batch does under load) from the moment it has answered the first."""
    core = await open_core(make_config({"storage": {"pool_size": 1}, "outbox": {"concurrency": 1}}), clock=clock)
    held: list = []
    arrived_while_held: list[bool] = []

    class HoldingGateway(FakeGateway):
        async def handle(self, request: web.Request) -> web.Response:
            arrived_while_held.append(bool(held))
            if held:
                release()
            else:
                await hold_the_store(core, held)
                asyncio.get_running_loop().call_later(1.5, release)
            return await super().handle(request)

    def release() -> None:
        let_go(held)

    try:
        for channel, sender in (("sms", AskedHttpSender), ("telegram", HttpSender)):
            gateway = await HoldingGateway().start()
            arrived_while_held.clear()
            try:
                async with core.sessions() as session, session.begin():
                    for number in range(2):
                        await outbox.enqueue(session, core.clock.now(), Outgoing(
                            key=f"test:{channel}:{number}", channel=channel, recipient="+84912340000",
                            text=f"Tin nhắn {number}"))
                assert await asyncio.wait_for(Dispatcher(core, {channel: sender(gateway.url)}).run_once(), 20) == 2
                assert [body["key"] for body in gateway.received] == [f"test:{channel}:0", f"test:{channel}:1"]
                assert arrived_while_held == [False, channel == "sms"], channel
            finally:
                release()
                await gateway.stop()
        assert [row.status for row in await stored(core)] == ["sent"] * 4
    finally:
        release()
        await core.close()


async def test_a_group_is_marked_being_sent_in_the_write_of_the_last_groups_sent_marks(make_config, clock):
    """On a channel that cannot be asked, each group of ``outbox.concurrency`` waits for the
    store once, not twice: its "being sent" mark goes in the same transaction as the "sent"
    marks of the group before (here the store is held while the first group's sends return,
    so all of them and the next group's start are waiting for the same write)."""
    core = await open_core(make_config({"storage": {"pool_size": 1}, "outbox": {"concurrency": 2}}), clock=clock)
    held: list = []
    writes: list[tuple[int, str]] = []
    commits = [0]

    class HoldingGateway(FakeGateway):
        holding = False

        async def handle(self, request: web.Request) -> web.Response:
            if not self.holding:  # the first request holds the store; the others go by
                self.holding = True
                await hold_the_store(core, held)
                asyncio.get_running_loop().call_later(0.5, release)
            return await super().handle(request)

    def release() -> None:
        let_go(held)

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE OUTBOX") and ("sent_at" in statement or "attempts" in statement):
            writes.append((commits[0], "sent" if "sent_at" in statement else "start"))

    def committed(conn):
        commits[0] += 1

    gateway = await HoldingGateway().start()
    event.listen(core.engine.sync_engine, "before_cursor_execute", record)
    event.listen(core.engine.sync_engine, "commit", committed)
    try:
        await queue(core, 4, channel="telegram")
        assert await asyncio.wait_for(Dispatcher(core, {"telegram": HttpSender(gateway.url)}).run_once(), 20) == 4
        by_transaction: dict[int, set[str]] = {}
        for transaction, kind in writes:
            by_transaction.setdefault(transaction, set()).add(kind)
        assert [kind for _, kind in writes].count("start") == 2
        assert {"sent", "start"} in by_transaction.values(), writes
        assert [row.status for row in await stored(core)] == ["sent"] * 4
    finally:
        event.remove(core.engine.sync_engine, "before_cursor_execute", record)
        event.remove(core.engine.sync_engine, "commit", committed)
        release()
        await gateway.stop()
        await core.close()


async def test_backoff_grows_exponentially_and_is_capped():
    delays = [outbox.backoff(attempt, 30, 3600) for attempt in range(1, 10)]
    assert 24 <= delays[0] <= 36 and 48 <= delays[1] <= 72 and 96 <= delays[2] <= 144
    assert all(d <= 3600 * 1.2 for d in delays) and delays[-1] >= 3600 * 0.8
    assert outbox.backoff(1, 30, 3600, retry_after=500) == 500


async def test_a_permanent_failure_gives_up_with_the_reason(core):
    gateway = await FakeGateway(script=[400]).start()
    try:
        await queue(core)
        await Dispatcher(core, {"sms": HttpSender(gateway.url)}).run_once()
        [row] = await stored(core)
        assert row.status == "failed" and row.last_error == "permanent: gateway refused: 400"
        assert gateway.received == []
    finally:
        await gateway.stop()


async def test_an_unreachable_gateway_is_retried_until_attempts_run_out(make_config, clock):
    gateway = await FakeGateway().start()
    url = gateway.url
    await gateway.stop()  # connection refused from now on
    core = await open_core(make_config({"outbox": {"max_attempts": 3}}), clock=clock)
    try:
        await queue(core)
        dispatcher = Dispatcher(core, {"sms": HttpSender(url)})
        for _ in range(3):
            assert await dispatcher.run_once() == 1
            clock.advance(hours=2)
        [row] = await stored(core)
        assert row.status == "failed" and row.attempts == 3
        assert row.last_error.startswith("gave up after 3 attempts: cannot reach gateway")
        assert await dispatcher.run_once() == 0
    finally:
        await core.close()


async def test_messages_for_a_channel_without_a_sender_stay_queued(core):
    await queue(core, channel="email")
    assert await Dispatcher(core, {"sms": HttpSender("http://127.0.0.1:9/")}).run_once() == 0
    [row] = await stored(core)
    assert (row.status, row.attempts) == ("queued", 0)


async def test_enqueue_with_a_key_already_queued_adds_nothing(core):
    await queue(core)
    await queue(core)
    assert len(await stored(core)) == 1


async def test_a_restarted_process_takes_back_its_claims_at_once(core):
    """Killed after claiming a batch and handing two messages to the sender: the same
    worker, started again, queues the untouched ones as they were and the two in flight
    as unsure; nothing is lost, and only those two can go out twice."""
    gateway = await FakeGateway().start()
    try:
        await queue(core, count=5)
        dead = Dispatcher(core, {"sms": HttpSender(gateway.url)}, name="web-1")
        claims = await dead.claim()
        await outbox.start(core, dead.holder, [claims[0].id, claims[1].id])  # ... and the process dies
        restarted = Dispatcher(core, {"sms": HttpSender(gateway.url)}, name="web-1")
        assert await restarted.register() == 5
        rows = await stored(core)
        assert [(row.status, row.unsure, row.claimed_by) for row in rows] == \
            [("queued", True, None)] * 2 + [("queued", False, None)] * 3
        assert await restarted.run_once() == 5
        rows = await stored(core)
        assert {row.status for row in rows} == {"sent"}
        # No lookup on this sender: the two unsure ones went again, and say so.
        assert [row.resent for row in rows] == [True, True, False, False, False]
        assert len(gateway.received) == 5
    finally:
        await gateway.stop()


async def test_a_dead_process_s_claims_are_taken_over_when_its_heartbeat_stops(make_config, clock):
    config = make_config({"outbox": {"heartbeat_seconds": 5, "takeover_seconds": 20}})
    cores = [await open_core(config, clock=clock) for _ in range(2)]
    gateway = await FakeGateway().start()
    try:
        await queue(cores[0], count=3)
        dead = Dispatcher(cores[0], {"sms": HttpSender(gateway.url)}, name="web-1")
        claims = await dead.claim()
        await outbox.start(cores[0], dead.holder, [claims[0].id])  # ... and web-1's machine goes away
        alive = Dispatcher(cores[1], {"sms": HttpSender(gateway.url)}, name="web-2")
        assert await alive.run_once() == 0  # web-1's heartbeat is fresh: its claims are its own
        clock.advance(seconds=10)
        assert await alive.run_once() == 0  # one beat missed is no death
        clock.advance(seconds=15)
        assert await alive.run_once() == 3  # 25 s without a beat: taken over, and sent
        rows = await stored(cores[0])
        assert [(row.status, row.resent) for row in rows] == [("sent", True), ("sent", False), ("sent", False)]
    finally:
        for core in cores:
            await core.close()
        await gateway.stop()


class LookupSender(HttpSender):
    """An HTTP sender whose provider can be asked whether it has a message (like Twilio's list)."""

    def __init__(self, url: str, gateway: FakeGateway):
        super().__init__(url)
        self.gateway = gateway
        self.lookups = 0

    async def lookup(self, message: Outgoing, since: datetime) -> list[str]:
        self.lookups += 1
        return [f"gw-{index + 1}" for index, body in reversed(list(enumerate(self.gateway.received)))
                if body["key"] == message.key]


async def test_a_send_without_an_answer_in_time_is_looked_up_not_sent_twice(make_config, clock):
    """A gateway slower than the send timeout takes the message all the same: the next
    attempt finds it there instead of sending it again."""
    gateway = await FakeGateway(delay=0.6).start()
    core = await open_core(make_config({"outbox": {"send_timeout_seconds": 0.3}}), clock=clock)
    try:
        await queue(core)
        sender = LookupSender(gateway.url, gateway)
        dispatcher = Dispatcher(core, {"sms": sender})
        assert await dispatcher.run_once() == 1
        [row] = await stored(core)
        assert (row.status, row.unsure) == ("queued", True) and row.last_error.startswith("outcome unknown")
        await asyncio.sleep(0.5)  # the gateway finishes taking it
        clock.advance(seconds=60)
        assert await dispatcher.run_once() == 1
        [row] = await stored(core)
        assert (row.status, row.external_id, row.resent, sender.lookups) == ("sent", "gw-1", False, 1)
        assert len(gateway.received) == 1
    finally:
        await core.close()
        await gateway.stop()


class TextLookupSender(HttpSender):
    """A provider asked by recipient and words, as Twilio's list and Zalo's conversation are:
    it answers with every message it took with the same text, newest first."""

    def __init__(self, url: str, gateway: FakeGateway):
        super().__init__(url)
        self.gateway = gateway
        self.since: list[datetime] = []

    async def lookup(self, message: Outgoing, since: datetime) -> list[str]:
        self.since.append(since)
        return [f"gw-{index + 1}" for index, body in reversed(list(enumerate(self.gateway.received)))
                if (body["to"], body["text"]) == (message.recipient, message.text)]


async def test_a_look_up_does_not_take_the_same_words_sent_earlier_for_the_unsure_message(make_config, clock):
    """The same reply to the same citizen twice ("please write in words" for two stickers):
    when the second's send gets no answer, the first is in the provider's list too. If the
    second went, it is found (the newest not recorded for another row); if it did not, the
    first is not taken for it, and it is sent, not lost. The look-up is bounded by when the
    row was queued (a few minutes before, for the provider's clock)."""
    gateway = await FakeGateway(script=[200, 200, 500, 200], slow={"reply:2": 0.6, "reply:3": 0.6}).start()
    core = await open_core(make_config({"outbox": {"send_timeout_seconds": 0.3}}), clock=clock)
    sender = TextLookupSender(gateway.url, gateway)
    dispatcher = Dispatcher(core, {"sms": sender})

    async def reply(number: int) -> OutboxMessage:
        async with core.sessions() as session, session.begin():
            await outbox.enqueue(session, core.clock.now(), Outgoing(
                key=f"reply:{number}", channel="sms", recipient="+84912340000", text="Xin gửi phản ánh bằng chữ."))
        assert await dispatcher.run_once() == 1  # no answer in time for 2 and 3: unsure
        await asyncio.sleep(0.5)  # the gateway ends its answer: took 2, refused 3
        gateway.slow.pop(f"reply:{number}", None)  # and answers in time from now on
        clock.advance(seconds=60)
        if (await stored(core))[-1].status == "queued":
            assert await dispatcher.run_once() == 1
        return (await stored(core))[-1]

    try:
        first = await reply(1)
        assert (first.status, first.external_id, sender.since) == ("sent", "gw-1", [])
        clock.advance(minutes=10)
        second = await reply(2)
        assert (second.status, second.external_id, second.resent) == ("sent", "gw-2", False)  # found, not resent
        third = await reply(3)
        assert (third.status, third.external_id, third.resent) == ("sent", "gw-3", True)  # not taken for gw-2
        assert [body["key"] for body in gateway.received] == ["reply:1", "reply:2", "reply:3"]
        assert sender.since == [row.created_at - LOOKUP_SKEW for row in (second, third)]
    finally:
        await core.close()
        await gateway.stop()


async def test_stopping_gives_back_what_was_claimed_and_not_started(core):
    await queue(core, count=3)
    dispatcher = Dispatcher(core, {"sms": HttpSender("http://127.0.0.1:9/")}, name="web-1")
    await dispatcher.claim()
    await dispatcher.leave()
    rows = await stored(core)
    assert {(row.status, row.claimed_by) for row in rows} == {("queued", None)}


async def test_two_dispatchers_send_each_message_exactly_once(make_config, clock):
    """Two processes' dispatchers on one database (each with its own engine and pool)."""
    gateway = await FakeGateway(delay=0.01).start()
    config: Config = make_config({"outbox": {"batch_size": 5}})
    cores = [await open_core(config, clock=clock) for _ in range(2)]
    try:
        await queue(cores[0], count=60)
        dispatchers = [Dispatcher(core, {"sms": HttpSender(gateway.url)}) for core in cores]

        async def drain(dispatcher: Dispatcher) -> int:
            sent = 0
            while claimed := await dispatcher.run_once():
                sent += claimed
            return sent

        shares = await asyncio.gather(*(drain(d) for d in dispatchers))
        assert sum(shares) == 60
        assert Counter(body["key"] for body in gateway.received) == {f"test:sms:{i}": 1 for i in range(60)}
        assert {row.status for row in await stored(cores[0])} == {"sent"}
    finally:
        for core in cores:
            await core.close()
        await gateway.stop()


async def test_the_running_dispatcher_wakes_on_commit_and_stops_cleanly(core):
    gateway = await FakeGateway().start()
    try:
        dispatcher = Dispatcher(core, {"sms": HttpSender(gateway.url)})
        task = asyncio.create_task(dispatcher.run())
        await queue(core, count=3)
        core.outbox_ready.set()
        for _ in range(200):
            if len(gateway.received) == 3:
                break
            await asyncio.sleep(0.01)
        dispatcher.stop()
        await asyncio.wait_for(task, timeout=5)
        assert len(gateway.received) == 3
    finally:
        await gateway.stop()


async def test_gauges_report_the_queue_from_the_store(core):
    await queue(core, count=2)
    core.clock.advance(seconds=90)
    await outbox.refresh_gauges(core)
    text = core.metrics.exposition().decode()
    assert 'feedback_intake_outbox_messages{status="queued"} 2.0' in text
    assert "feedback_intake_outbox_oldest_queued_age_seconds 90.0" in text


async def test_a_scrape_reads_the_work_in_hand_by_index_and_the_history_every_five_minutes(core):
    """Counting what was sent reads every message ever sent (at 1,000,000 rows 1.5 s on
    SQLite): not at every scrape."""
    def gauge(name: str) -> str:
        return next(line for line in core.metrics.exposition().decode().splitlines() if line.startswith(name))

    async def send(key: str) -> None:
        async with core.sessions() as session, session.begin():
            await session.execute(text("UPDATE outbox SET status = 'sent' WHERE key = :key"), {"key": key})

    await queue(core, count=3)
    await send("test:sms:0")
    await outbox.refresh_gauges(core)
    assert gauge('feedback_intake_outbox_messages{status="sent"}').endswith(" 1.0")
    assert gauge('feedback_intake_outbox_final_messages{channel="sms",state="sent"}').endswith(" 1.0")
    assert gauge('feedback_intake_outbox_messages{status="queued"}').endswith(" 2.0")

    await send("test:sms:1")
    core.clock.advance(seconds=299)
    with statements(core, lambda statement: "outbox" in statement) as seen:
        await outbox.refresh_gauges(core)
    assert gauge('feedback_intake_outbox_messages{status="queued"}').endswith(" 1.0")  # the work in hand: now
    assert gauge('feedback_intake_outbox_messages{status="sent"}').endswith(" 1.0")  # the history: as read
    assert gauge('feedback_intake_outbox_final_messages{channel="sms",state="sent"}').endswith(" 1.0")
    [(active, parameters)] = [(statement, parameters) for statement, parameters in seen if "count(" in statement]
    assert "ix_outbox_status_next_attempt_at" in await plan_of(core, active, parameters, "active-gauges")

    core.clock.advance(seconds=1)
    await outbox.refresh_gauges(core)
    assert gauge('feedback_intake_outbox_messages{status="sent"}').endswith(" 2.0")
    assert gauge('feedback_intake_outbox_final_messages{channel="sms",state="sent"}').endswith(" 2.0")


async def test_the_history_is_counted_without_waiting_for_the_connection_intake_holds(core):
    """A count over every message ever sent runs aside (``storage.db.read_aside``): while a
    transaction holds the process's one SQLite connection, it reads the last commit."""
    await queue(core, count=3)
    statement = select(func.count()).select_from(OutboxMessage)
    async with core.engine.begin() as held:  # intake's transaction, not committed yet
        await held.execute(text("UPDATE outbox SET status = 'sent' WHERE key = 'test:sms:0'"))
        assert await asyncio.wait_for(read_aside(core.engine, statement), 10) == [(3,)]
        [(sent,)] = await asyncio.wait_for(read_aside(
            core.engine, statement.where(OutboxMessage.status == "sent")), 10)
        assert sent == 0  # what is committed, not what the held transaction wrote


async def test_a_claim_takes_its_batch_and_no_more_even_with_statistics_from_a_quiet_outbox(core):
    """PostgreSQL planned the claim as a semi join re-running the LIMIT per row: with the
    planner's statistics taken while the outbox was empty, one claim of 20 took all 300."""
    async with core.sessions() as session, session.begin():
        if session.bind.dialect.name == "postgresql":
            await session.execute(text("ANALYZE outbox"))
    await queue(core, count=300)
    dispatcher = Dispatcher(core, {"sms": HttpSender("http://127.0.0.1:9/")})
    claimed = await dispatcher.claim(limit=20)
    assert len(claimed) == 20
    rows = await stored(core)
    assert sum(row.status == "claimed" for row in rows) == 20
    assert sum(row.status == "queued" for row in rows) == 280


async def test_a_claim_marks_its_rows_by_primary_key_not_by_reading_the_queue(core):
    """The claim's UPDATE names its rows by id and is planned through the primary key: with
    "AND status = 'queued'" SQLite (no statistics) read every queued row through the status
    index, 5 ms a claim with 50,000 queued."""
    await queue(core, count=60)
    with statements(core, lambda statement: statement.lstrip().upper().startswith("UPDATE OUTBOX")
                    and "claimed_by" in statement) as updates:
        claimed = await Dispatcher(core, {"sms": HttpSender("http://127.0.0.1:9/")}).claim(limit=20)
    assert len(claimed) == 20 and sum(row.status == "claimed" for row in await stored(core)) == 20
    [(statement, parameters)] = updates
    plan = await plan_of(core, statement, parameters)
    assert ("INTEGER PRIMARY KEY" if core.engine.dialect.name == "sqlite" else "pk_outbox") in plan, plan


async def test_our_messages_are_found_by_the_provider_s_id_through_an_index(core):
    """A provider's report naming only its own id, a staff member's reply to a notification
    and a citizen's reply to one of our mails find our message by the provider's id through
    ``ix_outbox_channel_external_id`` (migration 0010): each read the whole outbox before."""
    from bot import delivery, intake, staff
    from contract.messages import Inbound

    await queue(core, count=5)
    async with core.sessions() as session, session.begin():
        for number, row in enumerate((await session.scalars(select(OutboxMessage))).all()):
            row.status, row.external_id = "sent", f"gw-{number}"
    with statements(core, lambda statement: statement.lstrip().upper().startswith("SELECT")
                    and "outbox.external_id" in statement) as lookups:
        assert await delivery.report(core, "sms", "delivered", external_id="gw-3") is True
        assert await staff.code_for_message(core, "sms", "gw-2") is None  # these rows name no complaint
        await intake.receive(core, Inbound(channel="email", external_id="<reply-1@example.vn>",
                                           sender="dan@example.vn", text="Vẫn chưa sửa.", received_at=core.clock.now(),
                                           in_reply_to=("<ack-1@feedback.example.gov.vn>",)))
    assert len(lookups) == 3, [s for s, _ in lookups]
    for number, (statement, parameters) in enumerate(lookups):
        plan = await plan_of(core, statement, parameters, tag=str(number))
        assert "ix_outbox_channel_external_id" in plan, (statement, plan)
