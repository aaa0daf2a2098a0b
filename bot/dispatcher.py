"""The dispatcher: one per process, it sends what the outbox holds through the channels'
senders, several messages at once (``outbox.concurrency``), each channel in a lane of its
own: a slow provider holds back only its own channel's messages.

Each process's dispatcher is a worker with a name that stays the same across restarts
(``outbox.worker_name``, by default the host and the web port) and an incarnation that
does not, and it keeps a heartbeat in the store. It claims messages for its incarnation;
right before handing a few to their senders it marks them as being sent (with the last
few's "sent" marks); each one's outcome is written as soon as its own send returns (sends
that return together are marked sent in one write: ``delivery.SentMarks``). A restarted process takes back its
earlier incarnation's unfinished claims at once; other processes take over a process's
claims when its heartbeat stops (``outbox.takeover_seconds``). Claimed messages never
handed to a sender are queued again as they were; those being sent are queued marked
unsure, and their next attempt asks the provider first where the sender can look a
message up (``lookup``), else sends again with our reference, which providers that
dedupe recognise. What stays possible is a second copy of the messages that were in
flight on a channel that can neither dedupe nor be asked: at most ``outbox.concurrency``
per such channel per crash (Telegram's and email's lanes may each have a group in flight).
On a channel that can be asked (its sender has ``lookup``: SMS, Zalo) the
whole claimed batch is in flight at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import delivery, outbox
from bot.core import Core
from bot.outbox import Claim
from contract.delivery import PermanentDeliveryError, Sender, TransientDeliveryError, UnknownDeliveryError
from storage.db import upsert
from storage.models import OutboxMessage, Worker

log = logging.getLogger(__name__)

# How far behind ours a provider's clock may be: a look-up takes what it sent from this long
# before the row was queued (anything earlier cannot be this row's message).
LOOKUP_SKEW = timedelta(minutes=5)


def worker_name(configured: str, port: int) -> str:
    """A worker's name: the configured one, else host:port, else (port 0: tests) a random one."""
    if configured:
        return configured
    if port:
        return f"{socket.gethostname()[:80]}:{port}"
    return f"{socket.gethostname()[:60]}:{uuid.uuid4().hex[:12]}"


def in_turns(claims: list[Claim]) -> list[list[Claim]]:
    """The claims by recipient, each recipient's in the order they were queued: one
    recipient's messages go out one after another (a greeting before the acknowledgement
    queued with it), different recipients' at once."""
    turns: dict[tuple[str, str], list[Claim]] = {}
    for claim in sorted(claims, key=lambda claim: claim.id):
        turns.setdefault((claim.channel, claim.message.recipient), []).append(claim)
    return list(turns.values())


class Dispatcher:
    """Sends queued outbox messages through the channels' senders."""

    def __init__(self, core: Core, senders: Mapping[str, Sender], name: str | None = None):
        self.core = core
        self.senders = dict(senders)
        # Channels whose senders can be asked what became of a send: their batch goes at once.
        self.asked = frozenset(channel for channel, sender in self.senders.items() if hasattr(sender, "lookup"))
        self.name = name or worker_name("", 0)
        self.incarnation = str(uuid.uuid4())
        self.holder = f"{self.name}/{self.incarnation}"
        self._stopping = asyncio.Event()
        self._beat: datetime | None = None
        self._in_flight: set[int] = set()  # claimed rows this incarnation is working on now
        self._marks = delivery.SentMarks(core)  # sends that returned together are marked together

    # ------------------------------------------------------------------ the worker's life

    async def register(self) -> int:
        """Take the name for this incarnation; take back what an earlier one left claimed."""
        now = self.core.clock.now()
        async with self.core.sessions() as session, session.begin():
            statement = upsert(session, Worker).values(name=self.name, incarnation=self.incarnation,
                                                       started_at=now, heartbeat_at=now)
            await session.execute(statement.on_conflict_do_update(
                index_elements=["name"], set_={"incarnation": self.incarnation, "started_at": now,
                                               "heartbeat_at": now}))
            earlier = list((await session.scalars(
                select(OutboxMessage.claimed_by).distinct()
                .where(OutboxMessage.claimed_by.like(f"{self.name}/%"), OutboxMessage.claimed_by != self.holder)
            )).all())
            requeued, unsure = await outbox.recover(session, earlier)
        self._beat = now
        if requeued or unsure:
            log.warning("outbox: took back an earlier run's messages", extra={"fields": {
                "worker": self.name, "requeued": requeued, "unsure": unsure}})
            self.core.outbox_ready.set()
        return requeued + unsure

    async def heartbeat(self) -> int:
        """Say this incarnation is alive; take over the claims of processes that are not."""
        now = self.core.clock.now()
        async with self.core.sessions() as session, session.begin():
            statement = upsert(session, Worker).values(name=self.name, incarnation=self.incarnation,
                                                       started_at=now, heartbeat_at=now)
            await session.execute(statement.on_conflict_do_update(
                index_elements=["name"], set_={"incarnation": self.incarnation, "heartbeat_at": now}))
            # Rows of this incarnation it no longer works on: a round that failed halfway
            # (the store away between the claim and the results) left them claimed.
            own = await outbox.recover_own(session, self.holder, self._in_flight)
            taken = await self._take_over(session, now)
        self._beat = now
        if any(own):
            log.warning("outbox: took back rows a failed round left claimed", extra={"fields": {
                "requeued": own[0], "unsure": own[1]}})
            self.core.outbox_ready.set()
        return taken + sum(own)

    async def _take_over(self, session: AsyncSession, now: datetime) -> int:
        limit = now - timedelta(seconds=self.core.config.outbox.takeover_seconds)
        dead = (await session.execute(
            select(Worker.name, Worker.incarnation).where(Worker.heartbeat_at < limit, Worker.name != self.name)
            .with_for_update(skip_locked=True))).all()
        if not dead:
            return 0
        requeued, unsure = await outbox.recover(session, [f"{name}/{incarnation}" for name, incarnation in dead])
        await session.execute(delete(Worker).where(Worker.name.in_([name for name, _ in dead])))
        log.warning("outbox: took over the messages of stopped processes", extra={"fields": {
            "workers": len(dead), "requeued": requeued, "unsure": unsure}})
        if requeued or unsure:
            self.core.outbox_ready.set()
        return requeued + unsure

    async def leave(self) -> None:
        """Stopping cleanly: give back what was claimed and not started, and the name."""
        released = await outbox.release(self.core, self.holder)
        async with self.core.sessions() as session, session.begin():
            await session.execute(delete(Worker).where(Worker.name == self.name,
                                                       Worker.incarnation == self.incarnation))
        if released:
            self.core.outbox_ready.set()

    # ------------------------------------------------------------------ sending

    async def claim(self, limit: int | None = None) -> list[Claim]:
        """Claim due messages for the channels this process can send on."""
        if not self.senders:
            return []
        if self._beat is None:
            await self.register()
        return await outbox.claim(self.core, self.holder, self.senders, limit or self.core.config.outbox.batch_size,
                                  start_now=self.at_once)

    def at_once(self, claims: list[Claim]) -> set[int]:
        """The claims that go at once (marked as being sent when claimed): those on a channel
        whose sender can be asked what became of a send, unless it cannot be asked about that
        message (``looks_up``: a Zalo message with photos) or about an earlier one to the same
        recipient in the batch, which go in groups and the recipient's later ones after them."""
        held: set[tuple[str, str]] = set()
        chosen: set[int] = set()
        for claim in sorted(claims, key=lambda claim: claim.id):
            turn = (claim.channel, claim.message.recipient)
            if claim.channel not in self.asked or turn in held:
                continue
            looks_up = getattr(self.senders[claim.channel], "looks_up", None)
            if looks_up is not None and not looks_up(claim.message):
                held.add(turn)
            else:
                chosen.add(claim.id)
        return chosen

    async def send_one(self, claim: Claim, marks: list[asyncio.Future] | None = None) -> str:
        """Send one message that is marked as being sent; record how it went.

        With ``marks`` (a channel that can be asked, so a send whose mark is not yet written
        is looked up after a crash, not sent twice), its "sent" mark is handed over and its
        future put there, and the next message to the same recipient goes without waiting
        for the write; else it returns once the mark is written."""
        config = self.core.config.outbox
        sender = self.senders[claim.channel]
        attempt = claim.attempts + 1
        lookup = getattr(sender, "lookup", None)
        if claim.unsure and lookup is not None:
            # The last attempt may have left: ask the provider before sending again.
            try:
                found = await asyncio.wait_for(self._look_up(lookup, claim), timeout=config.send_timeout_seconds)
            except Exception as error:  # noqa: BLE001 - cannot tell: try again later, still unsure
                return await self._retry(claim, attempt, f"looking the message up failed: {error}", None, True)
            if found is not None:
                await self._mark(claim, found, False, marks)
                return self._done(claim, "sent", attempt, None)
        try:
            external_id = await asyncio.wait_for(sender.send(claim.message), timeout=config.send_timeout_seconds)
        except PermanentDeliveryError as error:
            await delivery.failed(self.core, claim, f"permanent: {error}")
            return self._done(claim, "failed", attempt, str(error))
        except (UnknownDeliveryError, asyncio.TimeoutError) as error:
            reason = str(error) or "no answer in time"
            return await self._retry(claim, attempt, f"outcome unknown: {reason}",
                                     getattr(error, "retry_after", None), True)
        except Exception as error:  # transient by default: a bug in a sender must not drop mail
            retry_after = error.retry_after if isinstance(error, TransientDeliveryError) else None
            return await self._retry(claim, attempt, str(error) or type(error).__name__, retry_after, False)
        if claim.unsure:
            self.core.metrics.resends.labels(claim.channel).inc()
        await self._mark(claim, external_id, claim.unsure, marks)
        return self._done(claim, "sent", attempt, None)

    async def _look_up(self, lookup, claim: Claim) -> str | None:
        """The provider's id for an unsure row's message, if it went: the newest the sender
        finds (same recipient and content, sent since a moment before the row was queued)
        that no other row of ours is recorded with. The same reply sent to the same citizen
        earlier, or another unsure row's copy already found, is so not taken for this one."""
        candidates = list(await lookup(claim.message, claim.queued_at - LOOKUP_SKEW))
        if not candidates:
            return None
        taken = await self._marks.taken(claim, candidates)
        return next((candidate for candidate in candidates if candidate not in taken), None)

    async def _mark(self, claim: Claim, external_id: str | None, resent: bool,
                    marks: list[asyncio.Future] | None) -> None:
        if marks is None:
            await self._marks.mark(claim, external_id, resent=resent)
        else:
            marks.append(self._marks.hand_over(claim, external_id, resent))

    async def _retry(self, claim: Claim, attempt: int, reason: str, retry_after: float | None, unsure: bool) -> str:
        if attempt >= self.core.config.outbox.max_attempts:
            await delivery.failed(self.core, claim, f"gave up after {attempt} attempts: {reason}")
            return self._done(claim, "failed", attempt, reason)
        await delivery.retry(self.core, claim, reason, outbox.next_attempt(self.core, attempt, retry_after), unsure)
        return self._done(claim, "retry", attempt, reason)

    def _done(self, claim: Claim, result: str, attempt: int, error: str | None) -> str:
        self.core.metrics.outbox_sends.labels(claim.channel, result).inc()
        log.log(logging.INFO if result == "sent" else logging.WARNING, "outbox send",
                extra={"fields": {"id": claim.id, "key": claim.message.key, "channel": claim.channel,
                                  "result": result, "attempt": attempt, "error": error}})
        return result

    async def send(self, claims: list[Claim]) -> None:
        """Send claimed messages, one recipient's in turn: on channels whose sender can be
        asked what became of a send (``lookup``), the whole batch at once (``at_once``); on the
        others ``outbox.concurrency`` at a time, since a crash may send what is in flight there
        twice.

        The rows on a channel that can be asked were marked as being sent when claimed
        (``claim``), and a recipient's next message goes as soon as the last one's send
        returns. Each group of the others is marked as being sent in the write of the last
        group's "sent" marks (``SentMarks.start``), so at most one group is in flight
        unrecorded. The round ends when every "sent" mark is written. Under load on SQLite
        each transaction waits for an intake batch (20-75 ms): in groups of four marked in
        transactions of their own, acknowledgements went out at a tenth of the rate
        complaints came in (bench/README.md, 2026-12-06, seventh and eighth sessions)."""
        size = self.core.config.outbox.concurrency
        asked: list[Claim] = []
        others: list[Claim] = []
        for claim in claims:  # those ``at_once`` chose when they were claimed
            (asked if claim.started else others).append(claim)
        marks: list[asyncio.Future] = []
        if asked:  # marked as being sent when claimed: they go even when stopping
            await asyncio.gather(*(self._send_in_turn(turn, marks) for turn in in_turns(asked)))
        for group in (others[start:start + size] for start in range(0, len(others), size)):
            if self._stopping.is_set():
                break  # what is left is given back by leave()
            # Written with (or after) the last group's "sent" marks: at most one group is
            # being sent, unrecorded, at any moment, and one wait for the store per group.
            await self._marks.start(self.holder, [claim.id for claim in group])
            await asyncio.gather(*(self._send_in_turn(turn, marks) for turn in in_turns(group)))
        for error in await asyncio.gather(*marks):
            if error is not None:
                raise error  # the rows stay being sent: the heartbeat takes them back, unsure

    async def _send_in_turn(self, claims: list[Claim], marks: list[asyncio.Future] | None = None) -> None:
        for claim in claims:
            await self.send_one(claim, marks)

    async def beat(self) -> None:
        """Register at first, then keep the heartbeat when it is due."""
        now = self.core.clock.now()
        if self._beat is None:
            await self.register()
        elif now - self._beat >= timedelta(seconds=self.core.config.outbox.heartbeat_seconds):
            await self.heartbeat()

    async def run_once(self) -> int:
        """One round on every channel together: beat if due, claim a batch, send it; return how
        many were claimed."""
        await self.beat()
        claims = await self.claim()
        self._in_flight.update(claim.id for claim in claims)
        try:
            await self.send(claims)
        finally:
            self._in_flight.difference_update(claim.id for claim in claims)
        return len(claims)

    async def run(self) -> None:
        """Dispatch until stopped, each channel in a lane of its own: a round of one channel's
        messages does not wait for another's. A mail relay that takes its time, or Telegram's
        flood control sat out in place, held back every SMS and Zalo acknowledgement of the
        process until the round's slowest send returned (up to ``send_timeout_seconds`` a
        group). A channel is claimed for again once its round ends; the loop wakes on the
        core's signal, a round's end, each poll and each heartbeat. A signal that names its
        channels (intake's and the sweep's, ``OutboxSignal``) wakes the claim for those alone:
        while one channel's round runs in a storm, each intake or backlog batch no longer
        claims in vain for the idle others (a write transaction on SQLite's one connection
        each time)."""
        config = self.core.config.outbox
        if not self.senders:
            # No channel to send on in this process: its messages wait in the outbox.
            await self._stopping.wait()
            return
        lanes: dict[str, asyncio.Task] = {}
        due = set(self.senders)  # the channels to claim for once idle
        try:
            while not self._stopping.is_set():
                for channel in [channel for channel, task in lanes.items() if task.done()]:
                    del lanes[channel]
                    due.add(channel)  # its round is over: more may be due
                # Taken before the claim: a message queued while it runs wakes the wait below.
                signalled = self.core.outbox_ready.take()
                due.update(self.senders if signalled is None else signalled & self.senders.keys())
                idle = [channel for channel in self.senders if channel not in lanes and channel in due]
                claims: list[Claim] = []
                try:
                    await self.beat()
                    if idle:
                        claims = await outbox.claim(self.core, self.holder, idle, config.batch_size,
                                                    start_now=self.at_once)
                        due.difference_update(idle)
                except Exception:
                    log.exception("outbox dispatch failed; retrying")
                by_channel: dict[str, list[Claim]] = {}
                for claim in claims:
                    by_channel.setdefault(claim.channel, []).append(claim)
                for channel, theirs in by_channel.items():
                    self._in_flight.update(claim.id for claim in theirs)
                    lanes[channel] = asyncio.create_task(self._round(theirs), name=f"outbox-{channel}")
                if len(claims) >= config.batch_size:
                    due.update(idle)
                    continue  # more may be due on the channels still idle
                waiters = [asyncio.ensure_future(self.core.outbox_ready.wait()),
                           asyncio.ensure_future(self._stopping.wait())]
                woken, _ = await asyncio.wait([*waiters, *lanes.values()],
                                              timeout=min(config.poll_seconds, config.heartbeat_seconds),
                                              return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
                if not woken:  # the poll: retries and held messages come due on any channel
                    due.update(self.senders)
        finally:
            if lanes:  # rows handed to senders finish; the rest is given back below
                await asyncio.gather(*lanes.values(), return_exceptions=True)
            try:
                await self.leave()
            except Exception:  # the store may be what stopped us; the heartbeat will tell
                log.warning("outbox: could not give back claims on stopping", exc_info=True)

    async def _round(self, claims: list[Claim]) -> None:
        """One channel's claimed messages sent (a lane's round)."""
        try:
            await self.send(claims)
        except Exception:
            log.exception("outbox dispatch failed; retrying")
        finally:
            self._in_flight.difference_update(claim.id for claim in claims)

    def stop(self) -> None:
        """Finish the messages being sent, then stop; the rest stays queued."""
        self._stopping.set()
