"""Property tests at the edges (issue 18): arbitrary bodies, correctly signed, posted to the
running service in each webhook dialect (Twilio, the Android app, the generic gateway) and
to Open311. Whatever the body, the answer is a 4xx with a message and nothing stored, or
a 2xx that stored at most one message, and posting the same body again stores nothing
more. Never a 5xx.

Hypothesis runs in a worker thread; each example calls into the service's event loop,
where the real service on a real socket answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from storage.models import Complaint, Message
from tests.conftest import start_service
from tests.test_sms_support import (android_headers, generic_headers, operator, post, sms_config,  # noqa: F401
                                    sms_service, twilio_signature, twilio_url)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
KEY = "crm-key-77b2e0"

# Text with every kind of character a sender may put in it: controls, NUL, combining
# marks, lone surrogates (JSON escapes them), and plain Vietnamese.
ANY_TEXT = st.text(max_size=60) | st.sampled_from(["", " ", "\x00", "Mất điện ở ngõ 5", "TT PA-7KQ4-M9XS", "5",
                                                   "a\u0300", "\ud800", "\x1b[2J", "x" * 400])
FORM_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60) | st.sampled_from(
    ["", "\x00", "Mất điện ở ngõ 5", "0912345678", "+84912345678", "VIETTEL", "1_0", "٢١", "21.03", "x" * 300])
PHONES = st.sampled_from(["0912345678", "+84912345678", "VIETTEL", "", "8080", "+84 91 234 56 78"]) | ANY_TEXT
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | ANY_TEXT
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=10)
DEEP = st.integers(min_value=900, max_value=3000).map(lambda depth: "[" * depth + "]" * depth)


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # ASCII: lone surrogates travel escaped, as a sender may write them


def _generic_bodies() -> st.SearchStrategy[bytes]:
    sms = st.fixed_dictionaries({}, optional={
        "id": ANY_TEXT | st.integers(), "from": PHONES, "text": ANY_TEXT | JSON_VALUES, "to": JSON_VALUES,
        "received_at": st.sampled_from(["2026-11-02T08:00:00+07:00", "2026-11-02", "yesterday"]) | JSON_VALUES})
    return st.one_of(sms.map(_dumps), JSON_VALUES.map(_dumps), DEEP.map(str.encode), st.binary(max_size=80))


def _android_bodies() -> st.SearchStrategy[bytes]:
    payload = st.fixed_dictionaries({}, optional={
        "messageId": ANY_TEXT | st.integers(), "message": ANY_TEXT | JSON_VALUES, "sender": PHONES,
        "phoneNumber": PHONES, "receivedAt": st.sampled_from(["2026-11-02T08:00:00.000+07:00", "x"]) | JSON_VALUES})
    event = st.fixed_dictionaries({"event": st.sampled_from(["sms:received", "sms:sent", "system:ping"]) | ANY_TEXT},
                                  optional={"payload": payload | JSON_VALUES, "id": ANY_TEXT})
    return st.one_of(event.map(_dumps), JSON_VALUES.map(_dumps), DEEP.map(str.encode), st.binary(max_size=80))


def _twilio_bodies() -> st.SearchStrategy[bytes]:
    fields = st.fixed_dictionaries({}, optional={
        "MessageSid": FORM_TEXT, "SmsSid": FORM_TEXT, "From": PHONES.filter(lambda v: "\ud800" not in v),
        "To": FORM_TEXT, "Body": FORM_TEXT, "NumMedia": st.sampled_from(["0", "1", "2", "١", "1_0", "-1", "x"]),
        "MediaUrl0": st.sampled_from(["https://api.twilio.com/m/1", "javascript:x", "https://x/\x00"]) | FORM_TEXT,
        "MediaContentType0": FORM_TEXT, "SmsStatus": st.sampled_from(["received", "delivered"]) | FORM_TEXT,
        "MessageStatus": FORM_TEXT, "Extra": FORM_TEXT})
    return st.one_of(fields.map(lambda data: urlencode(data).encode()), st.binary(max_size=80))


def _open311_forms() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({"api_key": st.sampled_from([KEY, KEY, "wrong", ""])}, optional={
        "service_code": st.sampled_from(["moi-truong", "giao-thong", "nope", ""]) | FORM_TEXT,
        "description": FORM_TEXT, "lat": st.sampled_from(["21.0285", "-90", "91", "1_0", "٢١", "nan", ""]) | FORM_TEXT,
        "long": st.sampled_from(["105.8542", "180", "1e1", ""]) | FORM_TEXT,
        "address_string": FORM_TEXT, "email": st.sampled_from(["an@example.vn", "x@", ""]) | FORM_TEXT,
        "phone": PHONES.filter(lambda v: "\ud800" not in v), "first_name": FORM_TEXT, "last_name": FORM_TEXT,
        "media_url": st.sampled_from(["https://fms.example/p/1.jpg", "ftp://x", ""]) | FORM_TEXT,
        "jurisdiction_id": st.sampled_from(["feedback.example.gov.vn", "other"])})


async def _count(core, model) -> int:
    async with core.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def _check_property(core, model, post_once: Callable[[], Awaitable[tuple[int, str]]]) -> None:
    """One example: a 4xx with a message and nothing stored, or a 2xx storing at most one;
    the same request again stores nothing more; never a 5xx."""
    before = await _count(core, model)
    status, answer = await post_once()
    after = await _count(core, model)
    assert status < 500, answer
    if status >= 400:
        assert answer.strip() and after == before, (status, answer)
        return
    assert 200 <= status < 300 and after - before <= 1, (status, answer)
    again, _ = await post_once()
    assert again < 500 and await _count(core, model) == after


async def _run(examples: st.SearchStrategy, check: Callable[[object], Awaitable[None]]) -> None:
    """Run Hypothesis in a worker thread; each example is awaited on this loop."""
    loop = asyncio.get_running_loop()

    @SETTINGS
    @given(examples)
    def prop(example: object) -> None:
        asyncio.run_coroutine_threadsafe(check(example), loop).result(timeout=60)

    await asyncio.to_thread(prop)


async def test_any_signed_generic_webhook_is_a_4xx_with_a_message_or_stored_once(sms_service):
    async def check(body: bytes) -> None:
        await _check_property(sms_service.core, Message,
                              lambda: post(sms_service, "nha-mang", body, generic_headers(body)))

    await _run(_generic_bodies(), check)


async def test_any_signed_android_webhook_is_a_4xx_with_a_message_or_stored_once(sms_service):
    async def check(body: bytes) -> None:
        timestamp = int(sms_service.core.clock.now().timestamp())
        await _check_property(sms_service.core, Message,
                              lambda: post(sms_service, "android", body, android_headers(body, timestamp)))

    await _run(_android_bodies(), check)


async def test_any_signed_twilio_webhook_is_a_4xx_with_a_message_or_stored_once(sms_service):
    async def check(body: bytes) -> None:
        try:
            signature = twilio_signature(twilio_url(), body)
        except UnicodeDecodeError:
            signature = "not-computable"
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
        await _check_property(sms_service.core, Message, lambda: post(sms_service, "twilio", body, headers))

    await _run(_twilio_bodies(), check)


async def test_any_open311_request_is_a_geo_report_error_or_stored_once(make_config, clock, monkeypatch):
    monkeypatch.setenv("OPEN311_API_KEYS", KEY)
    config = make_config({"open311": {"enabled": True, "limit_per_client": 0}}, environ={"OPEN311_API_KEYS": KEY})
    service, runner = await start_service(config, clock=clock)
    counter = iter(range(10**6))

    async def check(form: dict[str, str]) -> None:
        idempotency = {"Idempotency-Key": f"prop-{next(counter)}"}

        async def post_once() -> tuple[int, str]:
            async with aiohttp.ClientSession(service.url) as http, http.post(
                    "/open311/v2/requests.json", data=form, headers=idempotency) as answer:
                text = await answer.text()
                if answer.status >= 400:
                    [error] = json.loads(text)  # GeoReport's error format, whatever went wrong
                    assert error["code"] == answer.status and error["description"].strip()
                return answer.status, text

        await _check_property(service.core, Complaint, post_once)

    try:
        await _run(_open311_forms(), check)
    finally:
        await runner.cleanup()
