"""The fake Zalo servers themselves: the webhook signature is Zalo's documented formula, the
recorded payloads and the event builders agree, the refresh token works once, an expired token
answers Zalo's code, the free window refuses what it should, ZNS checks a template's parameters,
and the scripted failures happen. Everything over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import web

from tests.zalo_fake import (  # noqa: F401
    APP_ID,
    APP_SECRET,
    CITIZEN,
    FIXTURES,
    NO_INTERACTION,
    NO_INTERACTION_7_DAYS,
    OA_ID,
    OA_SECRET,
    OAUTH_REFRESH_INVALID,
    OUT_OF_QUOTA,
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    USER_RESTRICTED,
    ZNS_NO_ZALO_ACCOUNT,
    ZNS_PARAM_MISSING,
    ZNS_PHONE_INVALID,
    ZNS_TEMPLATE_DATA_INVALID,
    ZNS_TEMPLATE_ID_INVALID,
    FakeZalo,
    fake_zalo,
    fixture,
    signature,
    signed_delivery,
)

# The event of Zalo's own webhook page (developers.zalo.me, "Sự kiện người dùng gửi tin nhắn"),
# serialised compactly; its MAC with the secret below was computed outside Python:
#   printf '%s' "360846524940903967${BODY}154390853474oa-secret-for-tests" | sha256sum
DOC_EVENT = {"app_id": "360846524940903967", "sender": {"id": "246845883529197922"},
             "user_id_by_app": "552177279717587730", "recipient": {"id": "388613280878808645"},
             "event_name": "user_send_text", "message": {"text": "message", "msg_id": "96d3cdf3af150460909"},
             "timestamp": "154390853474"}
DOC_MAC = "cdabc9ba695434cf5d97bedcb4be39e0cc643780d7a90e226b597313ead155eb"
PHONE = "84912345678"


async def call(fake: FakeZalo, path: str, *, json_body=None, form=None, headers=None, timeout=5.0):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
            http.post(fake.url + path, json=json_body, data=form, headers=headers or {}) as response:
        assert response.status == 200, response.status
        return await response.json()


async def send(fake: FakeZalo, text: str = "Phường đã tiếp nhận phản ánh.", user: str = CITIZEN, token=None):
    return await call(fake, "/v3.0/oa/message/cs", headers={"access_token": token or fake.access_token},
                      json_body={"recipient": {"user_id": user}, "message": {"text": text}})


async def refresh(fake: FakeZalo, refresh_token: str, secret: str = APP_SECRET):
    return await call(fake, "/v4/oa/access_token", headers={"secret_key": secret},
                      form={"refresh_token": refresh_token, "app_id": APP_ID, "grant_type": "refresh_token"})


async def zns(fake: FakeZalo, data: dict, template_id="306415", phone=PHONE):
    return await call(fake, "/message/template", headers={"access_token": fake.access_token},
                      json_body={"phone": phone, "template_id": template_id, "template_data": data,
                                 "tracking_id": "phan-anh-1042"})


# -------------------------------------------------------------------- the webhook side

def test_signature_is_the_documented_formula_on_the_docs_example():
    body = json.dumps(DOC_EVENT, separators=(",", ":")).encode()
    assert signature("360846524940903967", body, "154390853474", "oa-secret-for-tests") == DOC_MAC
    raw, headers = signed_delivery("360846524940903967", "oa-secret-for-tests", DOC_EVENT)
    assert raw == body
    assert headers["X-ZEvent-Signature"] == f"mac={DOC_MAC}"
    assert "num_retry" not in headers


def test_signed_delivery_signs_the_raw_body_app_id_and_timestamp_of_the_body():
    event = fixture("user_send_text")
    raw, headers = signed_delivery(APP_ID, OA_SECRET, event)
    assert "Đèn đường".encode() in raw  # UTF-8 as is, not \u escapes
    concatenated = APP_ID + raw.decode() + json.loads(raw)["timestamp"] + OA_SECRET
    assert headers["X-ZEvent-Signature"] == "mac=" + hashlib.sha256(concatenated.encode()).hexdigest()
    escaped, escaped_headers = signed_delivery(APP_ID, OA_SECRET, event, ascii_only=True)
    assert escaped != raw and escaped_headers["X-ZEvent-Signature"] != headers["X-ZEvent-Signature"]
    again, retry_headers = signed_delivery(APP_ID, OA_SECRET, event, retry=1)
    assert again == raw and retry_headers["num_retry"] == "1"
    assert retry_headers["X-ZEvent-Signature"] == headers["X-ZEvent-Signature"]


def test_recorded_payloads_have_zalos_shapes():
    names = sorted(p.stem for p in FIXTURES.glob("*.json"))
    assert len(names) == 13
    for name in names:
        recorded = fixture(name)
        events = [d["event"] for d in recorded["deliveries"]] if "deliveries" in recorded else [recorded]
        for event in events:
            assert event["app_id"] == APP_ID and event["timestamp"].isdigit() and len(event["timestamp"]) == 13
            people = [event.get(k, {}).get("id") for k in ("sender", "recipient", "follower")]
            assert all(isinstance(p, str) and p.isdigit() for p in people if p is not None)
    assert [a["type"] for a in fixture("user_send_image")["message"]["attachments"]] == ["image", "image"]
    location = fixture("user_send_location")["message"]["attachments"][0]["payload"]
    assert location["coordinates"] == {"latitude": "21.0285112", "longitude": "105.8047953"}
    first, second = fixture("user_send_text_redelivered")["deliveries"]
    assert first["event"] == second["event"] and second["headers"] == {"num_retry": "1"}
    assert fixture("user_seen_message")["sender"]["id"] == OA_ID  # receipts come from the OA's side


def shape(value):
    """The structure of a payload: keys and value types, not the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


async def test_builders_make_the_recorded_shapes(fake_zalo):
    f = fake_zalo
    built = {
        "user_send_text": f.text(CITIZEN, "Đèn đường hỏng"),
        "user_send_image": f.images(CITIZEN, b"\xff\xd8a", b"\xff\xd8b", text="Rác"),
        "user_send_file": f.file(CITIZEN, b"%PDF-1.4", "don.pdf"),
        "user_send_location": f.location(CITIZEN, 21.0285112, 105.8047953),
        "user_send_sticker": f.sticker(CITIZEN),
        "user_send_link": f.link(CITIZEN, "https://hanoimoi.vn/a.html", "Ngập"),
        "user_send_audio": f.audio(CITIZEN),
        "user_send_video": f.video(CITIZEN, b"mp4", "Nước tràn"),
        "follow": f.follow(CITIZEN),
        "unfollow": f.follow(CITIZEN, unfollow=True),
        "user_seen_message": f.seen(CITIZEN, "8f7e6d5c4b3a29181706", "1a2b3c4d5e6f70819203"),
    }
    for name, event in built.items():
        assert shape(event) == shape(fixture(name)), name
    async with aiohttp.ClientSession() as http:  # the attachments can be downloaded
        async with http.get(built["user_send_file"]["message"]["attachments"][0]["payload"]["url"]) as response:
            assert (response.status, await response.read()) == (200, b"%PDF-1.4")


async def test_post_delivers_what_a_verifier_of_the_documented_formula_accepts(fake_zalo):
    received = []

    async def webhook(request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw)
        mac = hashlib.sha256(f"{body['app_id']}{raw.decode()}{body['timestamp']}{OA_SECRET}".encode()).hexdigest()
        received.append((request.headers.get("num_retry"), request.headers["X-ZEvent-Signature"] == f"mac={mac}",
                         body["message"]["msg_id"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/zalo/webhook", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/zalo/webhook"
    try:
        event = fake_zalo.text(CITIZEN, "Cống bị tắc")
        assert await fake_zalo.post(url, event) == 200
        assert await fake_zalo.post(url, event, retry=1) == 200  # delivered twice: same msg_id
        assert await fake_zalo.post(url, event, oa_secret="wrong") == 200
    finally:
        await runner.cleanup()
    msg_id = event["message"]["msg_id"]
    assert received == [(None, True, msg_id), ("1", True, msg_id), (None, False, msg_id)]


# -------------------------------------------------------------------- OAuth

async def test_refresh_token_works_once_and_retires_the_old_access_token(fake_zalo):
    old_access, old_refresh = fake_zalo.access_token, fake_zalo.refresh_token
    answer = await refresh(fake_zalo, old_refresh)
    assert set(answer) == {"access_token", "refresh_token", "expires_in"} and answer["expires_in"] == "90000"
    assert answer["access_token"] != old_access and answer["refresh_token"] != old_refresh
    again = await refresh(fake_zalo, old_refresh)
    assert again["error"] == OAUTH_REFRESH_INVALID and again["error_name"] == "Invalid refresh token"
    assert "access_token" not in again
    assert (await refresh(fake_zalo, answer["refresh_token"], secret="wrong"))["error"] == -14004
    assert fake_zalo.refreshes == 1
    fake_zalo.interacted(CITIZEN)
    assert (await send(fake_zalo, token=old_access))["error"] == TOKEN_EXPIRED
    assert (await send(fake_zalo, token=answer["access_token"]))["error"] == 0


async def test_an_expired_access_token_answers_zalos_code_until_refreshed(fake_zalo, clock):
    fake_zalo.interacted(CITIZEN)
    assert (await send(fake_zalo))["error"] == 0
    fake_zalo.expire_access_token()
    assert await send(fake_zalo) == {"error": TOKEN_EXPIRED, "message": "access_token is expired or removed"}
    assert (await send(fake_zalo, token="not-a-token"))["error"] == TOKEN_INVALID
    fresh = await refresh(fake_zalo, fake_zalo.refresh_token)
    assert (await send(fake_zalo, token=fresh["access_token"]))["error"] == 0
    clock.advance(hours=25)  # the documented lifetime, on the test's clock
    assert (await send(fake_zalo))["error"] == TOKEN_EXPIRED


# -------------------------------------------------------------------- the free window

async def test_window_refuses_the_ninth_reply_under_the_old_rule(fake_zalo):
    fake_zalo.reply_limit = 8
    assert (await send(fake_zalo))["error"] == NO_INTERACTION  # never wrote to the OA
    fake_zalo.text(CITIZEN, "Vỉa hè bị lấn chiếm")
    answers = [await send(fake_zalo, f"Trả lời {n}") for n in range(9)]
    assert [a["error"] for a in answers] == [0] * 8 + [OUT_OF_QUOTA]
    assert answers[0]["data"]["quota"] == {"quota_type": "reply", "remain": "7", "total": "8"}
    assert answers[7]["data"]["quota"]["remain"] == "0" and answers[0]["data"]["user_id"] == CITIZEN
    assert len(fake_zalo.sent) == 8
    fake_zalo.text(CITIZEN, "Cảm ơn")  # the citizen writes again: a new window
    assert (await send(fake_zalo))["error"] == 0


async def test_window_by_time_48h_free_then_billed_then_refused_after_7_days(fake_zalo, clock):
    fake_zalo.text(CITIZEN, "Cây đổ chắn đường")
    clock.advance(hours=47)
    assert (await send(fake_zalo))["error"] == TOKEN_EXPIRED  # 25 h passed: the channel must refresh
    await refresh(fake_zalo, fake_zalo.refresh_token)
    assert (await send(fake_zalo))["data"]["quota"] == {"quota_type": "reply"}
    clock.advance(hours=2)
    assert "quota" not in (await send(fake_zalo))["data"]  # past 48 h: sent, but billed
    clock.advance(days=6)
    await refresh(fake_zalo, fake_zalo.refresh_token)
    assert (await send(fake_zalo))["error"] == NO_INTERACTION_7_DAYS
    fake_zalo.interaction_window = timedelta(hours=48)  # a stricter window can be configured
    fake_zalo.interacted(CITIZEN, clock.now() - timedelta(hours=49))
    assert (await send(fake_zalo))["error"] == NO_INTERACTION_7_DAYS


# -------------------------------------------------------------------- ZNS

async def test_zns_checks_the_templates_parameters_exactly(fake_zalo):
    fake_zalo.add_template("306415", "ma_phan_anh", "trang_thai")
    good = {"ma_phan_anh": "PA-1042", "trang_thai": "Đã xử lý"}
    answer = await zns(fake_zalo, good, phone="0912345678")
    assert answer["error"] == 0 and answer["data"]["quota"] == {"dailyQuota": "500", "remainingQuota": "499"}
    assert (await zns(fake_zalo, {"ma_phan_anh": "PA-1042"}))["error"] == ZNS_PARAM_MISSING
    assert (await zns(fake_zalo, {**good, "ghi_chu": "x"}))["error"] == ZNS_TEMPLATE_DATA_INVALID
    assert (await zns(fake_zalo, good, template_id="999"))["error"] == ZNS_TEMPLATE_ID_INVALID
    assert (await zns(fake_zalo, good, phone="024 3825 3536"))["error"] == ZNS_PHONE_INVALID
    fake_zalo.no_zalo.add(PHONE)
    assert (await zns(fake_zalo, good))["error"] == ZNS_NO_ZALO_ACCOUNT
    assert [c.body["template_data"] for c in fake_zalo.zns_sent] == [good]


# -------------------------------------------------------------------- scripted misbehaviour

async def test_scripted_codes_http_errors_and_hangs(fake_zalo):
    fake_zalo.interacted(CITIZEN)
    fake_zalo.fail("cs", USER_RESTRICTED, times=2, target=CITIZEN)
    assert [(await send(fake_zalo))["error"] for _ in range(3)] == [USER_RESTRICTED, USER_RESTRICTED, 0]
    fake_zalo.blocked[CITIZEN] = USER_RESTRICTED
    assert (await send(fake_zalo))["message"] == "User has restricted this message type from your OA"
    del fake_zalo.blocked[CITIZEN]
    fake_zalo.fail_http("cs", 502)
    with pytest.raises(AssertionError, match="502"):
        await send(fake_zalo)
    fake_zalo.hang("refresh", seconds=30)
    with pytest.raises(asyncio.TimeoutError):
        await call(fake_zalo, "/v4/oa/access_token", form={}, timeout=0.2)
    started = time.monotonic()
    await fake_zalo.stop()  # a hanging request does not hold the test up
    assert time.monotonic() - started < 5
    await fake_zalo.start()
