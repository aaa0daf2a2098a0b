"""The web form in a real headless Chromium (Debian's ``chromium``, driven by Playwright),
on a 320-pixel-wide phone screen, with JavaScript turned off, using the keyboard only:
fill the form in Vietnamese, attach a photo, send, read the tracking code, open the status
page; the errors' summary takes the focus; a resolved complaint is rated with the keyboard.

Screenshots at phone width are saved in test-artifacts/ (the paths are printed).

Chromium is required in CI: .ci/run installs it and sets FEEDBACK_BROWSER_TESTS_REQUIRED=1,
so there a missing browser fails. On a developer's machine without Debian's `chromium`
these tests are skipped with a message saying how to install it, so that the README's
test command works with nothing but Python.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot import lifecycle
from storage.models import Attachment, Complaint
from tests.conftest import start_service
from tests.fixtures.web import files

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PHONE = {"width": 320, "height": 640}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
COMPLAINT = ("Đèn đường ở ngõ 34 phố Nguyễn Chí Thanh đã hỏng hơn một tuần, buổi tối rất tối, "
             "người đi bộ và trẻ em đi học về rất nguy hiểm.")


def chromium_path() -> str:
    """Debian's Chromium; missing, it fails where required (CI) and is skipped elsewhere."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("FEEDBACK_BROWSER_TESTS_REQUIRED") == "1":
        pytest.fail("chromium is not installed: apt-get install -y chromium (.ci/run does it)")
    pytest.skip("browser tests need Debian's chromium: apt-get install -y chromium")


@pytest.fixture
async def browser() -> AsyncIterator:
    """A headless Chromium, with no download of a browser of Playwright's own."""
    executable = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def phone(browser) -> AsyncIterator:
    """A page on a 320-pixel-wide phone, Vietnamese, with JavaScript off."""
    context = await browser.new_context(viewport=PHONE, java_script_enabled=False, locale="vi-VN",
                                        has_touch=True, is_mobile=True)
    page = await context.new_page()
    yield page
    await context.close()


@pytest.fixture
async def staffed(make_config, clock) -> AsyncIterator:
    running, runner = await start_service(make_config({"staff": [{"slug": "an", "name": "An", "unit": "tiep-nhan"}]}),
                                          clock=clock)
    yield running
    await runner.cleanup()


async def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


async def focused(page) -> str:
    """The id (or, without one, the tag and class) of the element that has the keyboard focus."""
    return await page.evaluate("(() => { const e = document.activeElement;"
                               " return e.id || (e.tagName.toLowerCase() + '.' + e.className); })()")


async def tab_to(page, element_id: str, limit: int = 12) -> None:
    """Press Tab until the element has the focus, as a keyboard user does."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await focused(page) == element_id:
            return
    raise AssertionError(f"#{element_id} cannot be reached with Tab (focus is on {await focused(page)})")


async def fits_the_screen(page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide on a {PHONE['width']} px screen"


async def test_a_citizen_files_a_complaint_with_a_photo_on_a_phone_with_the_keyboard(staffed, phone, tmp_path):
    photo = tmp_path / "đèn-hỏng.jpg"
    photo.write_bytes(files.photo())
    await phone.goto(staffed.url + "/")
    assert await phone.get_attribute("html", "lang") == "vi"
    await fits_the_screen(phone)

    await tab_to(phone, "text")
    await phone.keyboard.type(COMPLAINT)
    await tab_to(phone, "category")
    await phone.keyboard.press("ArrowDown")
    await phone.keyboard.press("ArrowDown")
    assert await phone.locator("#category").input_value() == "giao-thong"
    await tab_to(phone, "area")
    await phone.keyboard.type("Phường Láng Hạ, quận Đống Đa")
    await tab_to(phone, "attachments")
    # A file chooser is the operating system's dialog: the one step a test cannot type.
    await phone.locator("#attachments").set_input_files(str(photo))
    await tab_to(phone, "name")
    await phone.keyboard.type("Nguyễn Thị Lan")
    await tab_to(phone, "phone")
    await phone.keyboard.type("0912 345 678")
    await fits_the_screen(phone)
    await screenshot(phone, "form-320.png")

    await phone.keyboard.press("Tab")  # email
    await phone.keyboard.press("Tab")  # the send button
    assert await phone.evaluate("document.activeElement.type") == "submit"
    async with phone.expect_navigation():
        await phone.keyboard.press("Enter")
    assert "/track/PA-" in phone.url and "filed=1" in phone.url
    code = (await phone.locator("#tracking-code").inner_text()).strip()
    assert await phone.locator(".received h1").inner_text() == "Đã tiếp nhận phản ánh"
    await fits_the_screen(phone)
    await screenshot(phone, "received-320.png")

    # Later, the citizen looks the code up, typed in lower case, without hyphens.
    await phone.goto(staffed.url + "/track")
    await tab_to(phone, "code")
    await phone.keyboard.type(code.lower().replace("-", ""))
    async with phone.expect_navigation():
        await phone.keyboard.press("Enter")
    assert phone.url.startswith(f"{staffed.url}/track/{code}")
    assert (await phone.locator("#tracking-code").inner_text()).strip() == code
    assert await phone.locator("#status").inner_text() == "Mới tiếp nhận"
    assert await phone.locator("#unit").inner_text() == "Bộ phận tiếp nhận"
    page_text = await phone.locator("body").inner_text()
    assert "đèn-hỏng" not in page_text and "Nguyễn Thị Lan" not in page_text and "0912" not in page_text
    assert await phone.locator("img").count() == 0
    await fits_the_screen(phone)
    await screenshot(phone, "status-320.png")

    async with staffed.core.sessions() as session:
        complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
        attachment = await session.scalar(select(Attachment))
    assert complaint.text == COMPLAINT and complaint.category == "giao-thong"
    assert complaint.area == "Phường Láng Hạ, quận Đống Đa"
    assert (attachment.filename, attachment.content_type) == ("đèn-hỏng.jpg", "image/jpeg")
    assert attachment.sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()


async def test_a_mistake_is_summarised_and_the_summary_takes_the_focus(service, phone):
    await phone.goto(service.url + "/")
    await tab_to(phone, "text")
    await phone.keyboard.type("Hỏng")  # too short
    await tab_to(phone, "phone")
    await phone.keyboard.type("12345")
    await phone.keyboard.press("Tab")
    await phone.keyboard.press("Tab")
    async with phone.expect_navigation():
        await phone.keyboard.press("Enter")
    # No script: the summary has autofocus, so the keyboard and the screen reader start there.
    assert await focused(phone) == "div.error-summary"
    links = phone.locator(".error-summary a")
    assert await links.all_inner_texts() == [
        "Nội dung quá ngắn: vui lòng mô tả rõ hơn (ít nhất 10 ký tự).", "Số điện thoại không hợp lệ."]
    await phone.keyboard.press("Tab")
    assert await phone.evaluate("document.activeElement.getAttribute('href')") == "#text"
    await phone.keyboard.press("Enter")
    assert phone.url.endswith("#text")
    assert await phone.locator("#text").input_value() == "Hỏng"  # what was typed is kept
    await fits_the_screen(phone)
    await screenshot(phone, "errors-320.png")


async def test_a_resolved_complaint_is_rated_with_the_keyboard(staffed, phone):
    await phone.goto(staffed.url + "/")
    await tab_to(phone, "text")
    await phone.keyboard.type(COMPLAINT)
    await tab_to(phone, "email")
    await phone.keyboard.press("Tab")
    async with phone.expect_navigation():
        await phone.keyboard.press("Enter")
    code = (await phone.locator("#tracking-code").inner_text()).strip()
    await lifecycle.resolve(staffed.core, code, "an", "Công ty chiếu sáng đã thay bóng đèn mới.")

    await phone.goto(f"{staffed.url}/track/{code}")
    await tab_to(phone, "rating-1")
    for _ in range(3):  # arrow keys move through a radio group and choose
        await phone.keyboard.press("ArrowDown")
    assert await phone.locator("#rating-4").is_checked()
    await phone.keyboard.press("Tab")
    assert await focused(phone) == "comment"
    await phone.keyboard.type("Xử lý nhanh, cảm ơn.")
    await phone.keyboard.press("Tab")
    await fits_the_screen(phone)
    await screenshot(phone, "rating-320.png")
    async with phone.expect_navigation():
        await phone.keyboard.press("Enter")
    assert "Cảm ơn Quý ông/bà đã đánh giá." in await phone.locator("#rating-thanks").inner_text()
    async with staffed.core.sessions() as session:
        complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
    assert (complaint.rating, complaint.rating_comment) == (4, "Xử lý nhanh, cảm ơn.")
