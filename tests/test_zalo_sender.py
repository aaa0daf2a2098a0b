"""The Zalo senders against the fake Zalo servers over HTTP: consultation messages and what
Zalo's error codes mean (only error 0 is success; an expired or invalid token is renewed and
the message tried once more; window, quota and blocking errors are permanent with Zalo's
reason; the network and HTTP errors are transient), one refresh when two processes find the
token expired together, the window each declares, and ZNS template messages filled as
configured, from a message queued on channel "zns".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
import pytest

from bot import credentials, windows
from channels.zalo.api import ZaloApi
from channels.zalo.sender import ZaloSender, ZnsSender, tracking_id
from contract.delivery import PermanentDeliveryError, ReplyWindow, TransientDeliveryError
from contract.messages import Attachment, Outgoing
from service.assembly import make_port, open_core
from tests.conftest import merge
from tests.telegram_fake import eventually
from tests.zalo_fake import (  # noqa: F401
    APP_SECRET,
    CITIZEN,
    OAUTH_REFRESH_INVALID,
    OUT_OF_QUOTA,
    RATE_LIMITED,
    TOKEN_INVALID,
    USER_RESTRICTED,
    ZNS_DAILY_QUOTA,
    FakeZalo,
    fake_zalo,
)
from tests.zalo_world import ZALO_ENV, start_zalo, store_first_pair, zalo_env, zalo_overrides  # noqa: F401

PHONE = "+84912345678"
TEMPLATES = {"acknowledgement": {"template_id": "306415", "params": {
    "code": "ma_phan_anh", "date": "ngay_tiep_nhan", "status_url": "link_tra_cuu"}, "max_length": 100},
    "survey": {"template_id": "306420", "params": {"code": "ma_phan_anh", "text": "noi_dung"}}}


@dataclass
class Process:
    """What one process of the service has for Zalo: a core, its port and the two senders."""

    core: object
    zalo: ZaloSender
    zns: ZnsSender
    http: aiohttp.ClientSession


@pytest.fixture
async def processes(make_config, fake_zalo, clock) -> AsyncIterator:
    """Make processes (each its own core and engine, as separate processes would be) on one database."""
    made: list[Process] = []

    async def make(**zalo: object) -> Process:
        config = make_config(merge(zalo_overrides(fake_zalo, zns_templates=TEMPLATES), {"zalo": zalo}), ZALO_ENV)
        core = await open_core(config, clock=clock)
        port = make_port(core)
        api = ZaloApi(port, config.zalo, APP_SECRET, clock)
        api.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        process = Process(core, ZaloSender(port, config.zalo, api), ZnsSender(port, config.zalo, api), api.http)
        made.append(process)
        return process

    yield make
    for process in made:
        await process.http.close()
        await process.core.close()


def message(text: str = "Phường đã tiếp nhận phản ánh của Quý ông/bà.", key: str = "answer:1", **kw) -> Outgoing:
    fields = dict(channel="zalo", recipient=CITIZEN, text=text, key=key, kind="answer", tracking_code="PA-7KQ4-M9XS",
                  status_url="http://phananh.example.vn/track/PA-7KQ4-M9XS")
    return Outgoing(**{**fields, **kw})


async def ready(make, fake: FakeZalo, **zalo) -> Process:
    process = await make(**zalo)
    await store_first_pair(process.core, fake)
    fake.interacted(CITIZEN)
    return process


# -------------------------------------------------------------------- consultation messages

async def test_a_message_is_sent_with_the_stored_token_and_zalos_id_returned(processes, fake_zalo):
    process = await ready(processes, fake_zalo)
    external_id = await process.zalo.send(message())
    [call] = fake_zalo.sent
    assert call.headers["access_token"] == fake_zalo.access_token
    assert call.body == {"recipient": {"user_id": CITIZEN},
                         "message": {"text": "Phường đã tiếp nhận phản ánh của Quý ông/bà."}}
    assert external_id == call.answer["data"]["message_id"]


async def test_a_long_text_is_shortened_to_zalos_limit_ending_with_the_status_page(processes, fake_zalo):
    process = await ready(processes, fake_zalo)
    await process.zalo.send(message("Trả lời rất dài. " * 200))
    [call] = fake_zalo.sent
    assert len(call.text) <= 2000 and call.text.endswith("http://phananh.example.vn/track/PA-7KQ4-M9XS")


async def test_a_photo_with_a_web_address_follows_the_text(processes, fake_zalo):
    process = await ready(processes, fake_zalo)
    photo = Attachment("anh.jpg", "image/jpeg", reference="https://phananh.example.vn/files/anh.jpg")
    await process.zalo.send(message(attachments=(photo,)))
    text, image = fake_zalo.sent
    element = image.body["message"]["attachment"]["payload"]["elements"][0]
    assert element == {"media_type": "image", "url": "https://phananh.example.vn/files/anh.jpg"}


async def test_an_expired_token_is_refreshed_once_and_the_message_sent(processes, fake_zalo):
    process = await ready(processes, fake_zalo)
    old = fake_zalo.access_token
    fake_zalo.expire_access_token()
    await process.zalo.send(message())
    assert fake_zalo.refreshes == 1
    refused, refresh, sent = fake_zalo.calls
    assert refused.answer["error"] == -220 and refresh.endpoint == "refresh"
    assert refresh.headers["secret_key"] == APP_SECRET and refresh.body["grant_type"] == "refresh_token"
    assert sent.ok and sent.headers["access_token"] == fake_zalo.access_token != old
    stored = await credentials.read(process.core, "zalo")
    assert stored["access_token"] == fake_zalo.access_token and stored["refresh_token"] == fake_zalo.refresh_token
    assert stored["expires_at"] is not None  # Zalo said expires_in: 90000
    # The next message uses the new token without a refresh.
    await process.zalo.send(message(key="answer:2"))
    assert fake_zalo.refreshes == 1 and len(fake_zalo.sent) == 2


async def test_an_invalid_token_is_renewed_too(processes, fake_zalo):
    process = await ready(processes, fake_zalo)
    await credentials.store(process.core, "zalo", {"access_token": "not-a-token", "refresh_token": fake_zalo.refresh_token})
    await process.zalo.send(message())
    assert fake_zalo.calls[0].answer["error"] == TOKEN_INVALID and fake_zalo.refreshes == 1 and len(fake_zalo.sent) == 1


async def test_a_stored_expiry_renews_before_calling(processes, fake_zalo, clock):
    process = await ready(processes, fake_zalo)
    await credentials.store(process.core, "zalo", {"access_token": fake_zalo.access_token,
                                                   "refresh_token": fake_zalo.refresh_token,
                                                   "expires_at": (clock.now() + timedelta(minutes=2)).isoformat()})
    await process.zalo.send(message())
    assert [c.endpoint for c in fake_zalo.calls] == ["refresh", "cs"]


async def test_a_refused_refresh_keeps_the_stored_pair_and_says_to_set_a_token(processes, fake_zalo):
    process = await ready(processes, fake_zalo)
    before = await credentials.read(process.core, "zalo")
    fake_zalo.expire_access_token()
    fake_zalo.fail("refresh", OAUTH_REFRESH_INVALID)
    with pytest.raises(TransientDeliveryError, match="set-token"):
        await process.zalo.send(message())
    assert await credentials.read(process.core, "zalo") == before
    assert fake_zalo.calls[1].answer["error_name"] == "Invalid refresh token"


async def test_no_token_stored_waits_for_an_operator(processes, fake_zalo):
    process = await processes()
    with pytest.raises(TransientDeliveryError, match="zalo set-token"):
        await process.zalo.send(message())
    assert fake_zalo.calls == []


async def test_two_processes_finding_the_token_expired_refresh_it_once(processes, fake_zalo):
    first, second = await ready(processes, fake_zalo), await processes()
    fake_zalo.expire_access_token()
    spent = fake_zalo.refresh_token
    await asyncio.gather(first.zalo.send(message(key="answer:1")), second.zalo.send(message(key="answer:2")))
    assert fake_zalo.refreshes == 1  # the one-use refresh token was spent once
    refreshes = [c for c in fake_zalo.calls if c.endpoint == "refresh"]
    assert [c.body["refresh_token"] for c in refreshes] == [spent]
    assert len(fake_zalo.sent) == 2
    assert await credentials.read(first.core, "zalo") == await credentials.read(second.core, "zalo")


@pytest.mark.parametrize("setup, meaning", [
    (lambda fake: fake.interacted(CITIZEN, fake.now - timedelta(days=8)), "no interaction with the OA in the past 7"),
    (lambda fake: fake.blocked.__setitem__(CITIZEN, USER_RESTRICTED), "blocked this kind of message"),
    (lambda fake: fake.fail("cs", OUT_OF_QUOTA), "out of quota"),
])
async def test_window_quota_and_blocking_are_permanent_with_zalos_reason(processes, fake_zalo, setup, meaning):
    process = await ready(processes, fake_zalo)
    setup(fake_zalo)
    with pytest.raises(PermanentDeliveryError, match=meaning):
        await process.zalo.send(message())


async def test_the_old_eight_replies_rule_is_refused_with_out_of_quota(processes, fake_zalo):
    process = await ready(processes, fake_zalo, free_replies=8)
    fake_zalo.reply_limit = 8
    for n in range(8):
        await process.zalo.send(message(key=f"answer:{n}"))
    with pytest.raises(PermanentDeliveryError, match=r"\(-211\)"):
        await process.zalo.send(message(key="answer:9"))


async def test_network_http_errors_and_the_rate_limit_are_transient(processes, fake_zalo):
    process = await ready(processes, fake_zalo)
    fake_zalo.fail_http("cs", 502)
    with pytest.raises(TransientDeliveryError, match="HTTP 502"):
        await process.zalo.send(message())
    fake_zalo.fail("cs", RATE_LIMITED)
    with pytest.raises(TransientDeliveryError, match="rate limited") as caught:
        await process.zalo.send(message())
    assert caught.value.retry_after == 60.0
    fake_zalo.hang("cs", 5)
    with pytest.raises(TransientDeliveryError, match="no answer in time"):
        await process.zalo.send(message())
    process.zalo.api.config = process.zalo.api.config.model_copy(update={"api_base_url": "http://127.0.0.1:9"})
    process.zalo.config = process.zalo.api.config
    with pytest.raises(TransientDeliveryError, match="cannot reach Zalo"):
        await process.zalo.send(message())


async def test_a_send_whose_answer_was_lost_is_found_in_the_conversation(processes, fake_zalo, clock):
    """Zalo took the message but its answer never came: the look-up finds it among the OA's
    own messages to the citizen (not the citizen's message with the same words, not another
    citizen's), through the pages of the listing; a message never sent is not found."""
    process = await ready(processes, fake_zalo)
    lost = message("Phường đã tiếp nhận phản ánh PA-7KQ4-M9XS.")
    queued = clock.now()
    fake_zalo.lose_answer("cs", 2.5)  # longer than the client waits (2 s)
    with pytest.raises(TransientDeliveryError, match="no answer in time"):
        await process.zalo.send(lost)
    [taken] = fake_zalo.sent
    assert await process.zalo.lookup(lost, queued) == [taken.answer["data"]["message_id"]]

    other = "5816257339045276999"
    fake_zalo.interacted(other)
    await process.zalo.send(message(lost.text, key="answer:other", recipient=other))
    for number in range(12):  # the citizen writes on: the OA's message is now on the second page
        fake_zalo.text(CITIZEN, f"Tin nhắn {number}")
    fake_zalo.text(CITIZEN, process.zalo.text_for(message("Chưa gửi.")))  # the citizen's own words
    assert await process.zalo.lookup(lost, queued) == [taken.answer["data"]["message_id"]]
    assert await process.zalo.lookup(message("Chưa gửi.", key="answer:2"), queued) == []
    asked = [c for c in fake_zalo.calls if c.endpoint == "conversation"]
    assert {c.body["count"] for c in asked} == {10} and {c.body["offset"] for c in asked} == {0, 10}
    assert all(c.body["user_id"] == CITIZEN for c in asked)
    assert len(fake_zalo.sent) == 2  # looking up sends nothing

    clock.advance(timedelta(minutes=10))  # the same reply again, queued later: both are candidates
    again = clock.now()
    await process.zalo.send(message(lost.text, key="answer:again"))
    newer = fake_zalo.sent[-1].answer["data"]["message_id"]
    assert await process.zalo.lookup(lost, queued) == [newer, taken.answer["data"]["message_id"]]
    assert await process.zalo.lookup(lost, again) == [newer]  # what went before it was queued is not it
    clock.advance(timedelta(days=3))  # older than the span asked about: not this send's
    assert await process.zalo.lookup(lost, queued) == []


async def test_a_look_up_reads_past_listing_items_it_cannot_read(processes, fake_zalo, clock):
    """Zalo's listing is outside input: an item that is not an object, or whose time cannot
    be read, neither fails the look-up nor ends it; the message further down is found."""
    process = await ready(processes, fake_zalo)
    lost = message("Phường đã tiếp nhận phản ánh PA-7KQ4-M9XS.")
    queued = clock.now()
    await process.zalo.send(lost)
    [taken] = fake_zalo.sent
    fake_zalo.conversations[CITIZEN] += ["?", None, 7, {"src": 0, "time": "hôm qua", "message": "Lời khác."},
                                         {"src": "1", "time": None, "message": lost.text, "message_id": "x"}]
    assert await process.zalo.lookup(lost, queued) == [taken.answer["data"]["message_id"]]


async def test_a_look_up_zalo_refuses_sends_again_and_one_the_network_loses_stays_unsure(processes, fake_zalo, clock):
    process = await ready(processes, fake_zalo)
    fake_zalo.fail("conversation", -201)  # e.g. the app may not read conversations
    assert await process.zalo.lookup(message(), clock.now()) == []
    fake_zalo.fail_http("conversation", 502)
    with pytest.raises(TransientDeliveryError, match="HTTP 502"):
        await process.zalo.lookup(message(), clock.now())
    fake_zalo.fail("conversation", RATE_LIMITED)
    with pytest.raises(TransientDeliveryError, match="rate limited"):
        await process.zalo.lookup(message(), clock.now())
    fake_zalo.hang("conversation", 2.5)
    with pytest.raises(TransientDeliveryError, match="no answer in time"):
        await process.zalo.lookup(message(), clock.now())
    photo = Attachment("anh.jpg", "image/jpeg", reference="https://phananh.example.vn/files/anh.jpg")
    calls = len(fake_zalo.calls)
    assert await process.zalo.lookup(message(attachments=(photo,)), clock.now()) == []  # its photos could not be checked
    assert not process.zalo.looks_up(message(attachments=(photo,))) and process.zalo.looks_up(message())
    assert len(fake_zalo.calls) == calls


async def test_the_window_is_declared_from_the_configuration(processes, fake_zalo):
    assert (await processes()).zalo.window == ReplyWindow(48.0, None)
    assert (await processes(free_replies=8, window_hours=24.0)).zalo.window == ReplyWindow(24.0, 8)


# -------------------------------------------------------------------- ZNS

async def test_zns_carries_only_the_kinds_with_a_template(processes, fake_zalo):
    process = await ready(processes, fake_zalo)
    assert process.zns.kinds == {"acknowledgement", "survey"}
    with pytest.raises(PermanentDeliveryError, match="no template for messages of kind 'answer'"):
        await process.zns.send(message(channel="zns", recipient=PHONE))
    with pytest.raises(PermanentDeliveryError, match="not a Vietnamese mobile"):
        await process.zns.send(message(channel="zns", recipient="+4930123456", kind="survey"))
    assert fake_zalo.calls == []


async def test_zns_errors_are_explained(processes, fake_zalo):
    process = await ready(processes, fake_zalo)
    fake_zalo.add_template("306420", "ma_phan_anh", "noi_dung")
    fake_zalo.fail("zns", ZNS_DAILY_QUOTA)
    with pytest.raises(PermanentDeliveryError, match="daily ZNS quota"):
        await process.zns.send(message(channel="zns", recipient=PHONE, kind="survey"))
    with pytest.raises(PermanentDeliveryError, match=r"\(-109\).*not approved"):
        await process.zns.send(message(channel="zns", recipient=PHONE, kind="acknowledgement"))


async def test_a_message_queued_on_zns_goes_by_the_right_template_with_its_parameters(start_zalo, fake_zalo, clock):
    world = await start_zalo(zns_templates=TEMPLATES)
    fake_zalo.add_template("306415", "ma_phan_anh", "ngay_tiep_nhan", "link_tra_cuu")
    fake_zalo.add_template("306420", "ma_phan_anh", "noi_dung")
    port = make_port(world.core)
    key = "ack:42"
    await port.reply(Outgoing(channel="zns", recipient=PHONE, key=key, kind="acknowledgement",
                              text="Chúng tôi đã tiếp nhận phản ánh PA-7KQ4-M9XS.", tracking_code="PA-7KQ4-M9XS",
                              status_url="http://phananh.example.vn/track/PA-7KQ4-M9XS"))
    survey_text = "Phản ánh PA-7KQ4-M9XS đã được giải quyết. Xin đánh giá mức độ hài lòng từ 1 đến 5."
    await port.reply(Outgoing(channel="zns", recipient=PHONE, key="survey:42", kind="survey", text=survey_text,
                              tracking_code="PA-7KQ4-M9XS"))

    async def both():
        return len(fake_zalo.zns_sent) == 2
    await eventually(both)
    ack, survey = sorted(fake_zalo.zns_sent, key=lambda c: c.body["template_id"])
    assert ack.body == {"phone": "84912345678", "template_id": "306415", "tracking_id": tracking_id(key),
                        "template_data": {"ma_phan_anh": "PA-7KQ4-M9XS", "ngay_tiep_nhan": "02/11/2026",
                                          "link_tra_cuu": "http://phananh.example.vn/track/PA-7KQ4-M9XS"}}
    assert ack.headers["access_token"] == fake_zalo.access_token
    assert survey.body["template_data"]["noi_dung"] == "Phản ánh PA-7KQ4-M9XS đã được…"  # 30 characters at most
    assert len(survey.body["template_data"]["noi_dung"]) <= 30

    async def recorded():  # the store records a send just after Zalo answers it
        return {row.status for row in await world.outbox()} == {"sent"}
    await eventually(recorded)
    rows = await world.outbox()
    assert {row.external_id for row in rows} == {c.answer["data"]["msg_id"] for c in fake_zalo.zns_sent}
    quota = await credentials.read(world.core, "zalo-zns-quota")
    assert quota["daily"] == "500" and quota["remaining"] in ("498", "499")


def test_tracking_ids_come_from_the_outbox_key():
    assert tracking_id("ack:42") == "ack:42"
    long = tracking_id("survey:" + "x" * 200)
    assert long.startswith("fi-") and len(long) == 43 and long == tracking_id("survey:" + "x" * 200)


async def test_window_use_counts_what_was_sent_since_each_citizen_wrote(start_zalo, fake_zalo, clock):
    world = await start_zalo()
    for user, text in ((CITIZEN, "Đèn đường ngõ 12 hỏng."), ("5816257339045276999", "Rác ở ngõ 34.")):
        assert await world.post(fake_zalo.text(user, text)) == 200
    await world.sent_to(CITIZEN, 2)
    await world.sent_to("5816257339045276999", 2)

    async def recorded():
        return len([r for r in await world.outbox() if r.status == "sent"]) == 4
    await eventually(recorded)
    use = await windows.window_use(world.core, "zalo", 48)
    assert (use.citizens, use.replies, use.most) == (2, 4, 2)
    clock.advance(timedelta(hours=49))
    assert await windows.window_use(world.core, "zalo", 48) == windows.WindowUse(0, 0, 0)


async def test_a_process_reads_the_token_pair_once_and_takes_a_newer_one_when_zalo_refuses_its_own(
        processes, fake_zalo):
    """The pair is kept in the process (it was read from the store for every message: a
    transaction each); when Zalo refuses the kept token, the pair another process renewed
    meanwhile is taken from the store, and the one-use refresh token is not spent again."""
    from sqlalchemy import event

    process = await ready(processes, fake_zalo)
    reads: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM settings" in statement:
            reads.append(statement)

    event.listen(process.core.engine.sync_engine, "before_cursor_execute", record)
    try:
        for number in range(5):
            await process.zalo.send(message(key=f"answer:{number}"))
        assert len(reads) == 1 and len(fake_zalo.sent) == 5
        other = await processes()
        fake_zalo.expire_access_token()
        await other.zalo.send(message(key="answer:other"))
        assert fake_zalo.refreshes == 1
        await process.zalo.send(message(key="answer:9"))
    finally:
        event.remove(process.core.engine.sync_engine, "before_cursor_execute", record)
    assert fake_zalo.refreshes == 1
    assert fake_zalo.sent[-1].headers["access_token"] == fake_zalo.access_token and len(fake_zalo.sent) == 7
