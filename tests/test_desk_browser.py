"""The desk in a real headless Chromium (Debian's, driven by Playwright), keyboard only, at
1280 and 390 pixels: an officer signs in with the link the fake Telegram chat received,
finds a complaint by a search typed without diacritics, answers it, and the citizen's SMS
reaches the fake gateway; an officer of another unit can neither find nor open it. axe-core
(from npm, tests/axe.py) checks every desk page on the way, and the head's and admin's
pages too: no serious or critical violation.

Chromium and axe-core are required in CI (FEEDBACK_BROWSER_TESTS_REQUIRED=1) and skipped
elsewhere without them. The pages carry no script and their policy allows none, so they
work the same with JavaScript off; it is on only because axe needs its timers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from bot.intake import receive
from contract.messages import Inbound
from storage.models import OutboxMessage
from tests.axe import assert_no_serious_violations, axe  # noqa: F401 - fixture
from tests.conftest import merge, start_service
from tests.desk_support import STAFF, link_in
from tests.telegram_fake import FakeBotApi, fake_api, telegram_overrides  # noqa: F401 - fixture
from tests.test_browser_form import browser, focused, screenshot  # noqa: F401 - fixture
from tests.test_sms_support import SECRETS, FakeOperator, gateways, operator  # noqa: F401 - fixture

WIDTHS = {1280: {"width": 1280, "height": 800}, 390: {"width": 390, "height": 844}}
CITIZEN = "+84912345678"
COMPLAINT = "Mất điện cả khu tập thể Thành Công từ 6 giờ sáng, tủ lạnh hỏng hết đồ ăn."
ANSWER = "Điện lực Đống Đa đã khắc phục sự cố lúc 14:00. Xin lỗi vì sự bất tiện."


@pytest.fixture
async def world(make_config, clock, fake_api: FakeBotApi, operator: FakeOperator, monkeypatch) -> AsyncIterator:
    """The service with Telegram (fake Bot API), three SMS gateways (fake operator) and the desk."""
    environ = {"TELEGRAM_BOT_TOKEN": "7012345678:AAFakeTokenForTests_abcdefghijklmnop", **SECRETS}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    config = make_config(merge(telegram_overrides(fake_api), {
        "staff": STAFF, "sms": {"gateways": gateways(operator.url)},
        "routing": {"default_unit": "tiep-nhan",
                    "rules": [{"unit": "quan-ly-do-thi", "keywords": ["lấn chiếm vỉa hè"]}]}}), environ)
    running, runner = await start_service(config, clock=clock)
    fake_api.deliver_to = running.url
    fake_api.known_chats.update({2001, 2002, 3001})
    yield running, fake_api, operator
    await runner.cleanup()


async def tab_to(page, element_id: str, limit: int = 60) -> None:
    """Press Tab until the element has the focus, as a keyboard user does."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await focused(page) == element_id:
            return
    raise AssertionError(f"#{element_id} cannot be reached with Tab (focus is on {await focused(page)})")


async def check(page, axe_source: str, where: str) -> None:
    await assert_no_serious_violations(page, axe_source, where)


async def sign_in_by_keyboard(page, service, api: FakeBotApi, slug: str, chat: int, axe_source: str,
                              width: int) -> None:
    """Ask for a link with the keyboard, take it from the Telegram chat, press the button."""
    mark = api.mark()
    await page.goto(service.url + "/desk/sign-in")
    await check(page, axe_source, f"sign-in, {width} px")
    await tab_to(page, "who")
    await page.keyboard.type(slug)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert "Hãy xem tin nhắn của bạn" in await page.content()
    await check(page, axe_source, f"link sent, {width} px")
    call = await api.wait_for("sendMessage", chat, mark, contains="/desk/sign-in/")
    link = urlsplit(link_in(call.text))
    await page.goto(service.url + link.path)
    await check(page, axe_source, f"confirm, {width} px")
    await tab_to(page, "confirm")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert page.url.endswith("/desk/queue/mine")


@pytest.mark.parametrize("width", [1280, 390])
async def test_an_officer_signs_in_from_telegram_finds_by_unaccented_search_and_answers_by_sms(
        world, browser, axe, width):
    service, api, operator = world
    result = await receive(service.core, Inbound(channel="sms", external_id=f"sms-{width}", sender=CITIZEN,
                                                 text=COMPLAINT, received_at=service.core.clock.now(), via="twilio"))
    code = result.tracking_code
    context = await browser.new_context(viewport=WIDTHS[width], locale="vi-VN", is_mobile=width < 600,
                                        has_touch=width < 600)
    page = await context.new_page()
    try:
        await sign_in_by_keyboard(page, service, api, "nguyen-van-an", 2001, axe, width)
        await check(page, axe, f"my queue, {width} px")
        await tab_to(page, "q")
        await page.keyboard.type("mat dien")
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        await check(page, axe, f"search results, {width} px")
        await tab_to(page, f"case-{code}")
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        assert page.url.endswith(f"/desk/case/{code}")
        await check(page, axe, f"case, {width} px")
        await tab_to(page, "answer-text")
        await page.keyboard.type(ANSWER)
        await tab_to(page, "send-answer", limit=3)
        async with page.expect_navigation():
            await page.keyboard.press("Enter")
        assert "Đã gửi trả lời." in await page.content()
        await check(page, axe, f"case after the answer, {width} px")
        await screenshot(page, f"desk-case-{width}.png")
        delivered = await operator.wait(1)
        answers = [sms for sms in delivered if sms.to == CITIZEN and "Điện lực Đống Đa đã khắc phục" in sms.text]
        assert answers, delivered
        async with service.core.sessions() as session:
            row = await session.scalar(select(OutboxMessage).where(OutboxMessage.key.like("answer:%")))
        assert row.status == "sent" and row.channel == "sms"
        width_used = await page.evaluate("document.documentElement.scrollWidth")
        assert width_used <= WIDTHS[width]["width"], f"the case page is {width_used} px wide"
    finally:
        await context.close()
    # An officer of another unit: not in the search results, and the page is refused.
    context = await browser.new_context(viewport=WIDTHS[width], locale="vi-VN")
    page = await context.new_page()
    try:
        await sign_in_by_keyboard(page, service, api, "tran-van-binh", 3001, axe, width)
        await page.goto(service.url + "/desk/queue/all?q=mat+dien")
        assert f"/desk/case/{code}" not in await page.content()
        response = await page.goto(service.url + f"/desk/case/{code}")
        assert response.status == 403
        await check(page, axe, f"refused, {width} px")
    finally:
        await context.close()


async def test_the_heads_and_admins_pages_have_no_serious_accessibility_violation(world, browser, axe):
    service, api, _ = world
    await receive(service.core, Inbound(channel="sms", external_id="sms-h", sender=CITIZEN, text=COMPLAINT,
                                        received_at=service.core.clock.now(), via="twilio"))
    failures = []
    for width in WIDTHS:
        context = await browser.new_context(viewport=WIDTHS[width], locale="vi-VN")
        page = await context.new_page()
        try:
            await sign_in_by_keyboard(page, service, api, "le-thi-hoa", 2002, axe, width)
            for path in ("/desk/dashboard", "/desk/dashboard?lang=en", "/desk/queue/unit?lang=vi",
                         "/desk/queue/all?status=new&date_from=2026-11-01", "/desk/queue/overdue",
                         "/desk/admin"):
                await page.goto(service.url + path)
                try:
                    await check(page, axe, f"{path}, {width} px")
                except AssertionError as failure:
                    failures.append(str(failure))
        finally:
            await context.close()
    assert not failures, "\n".join(failures)
