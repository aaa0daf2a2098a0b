"""axe-core finds no serious or critical WCAG 2.0/2.1 A or AA violation on any public page,
in Vietnamese and in English, on a 1280-pixel desktop and a 390-pixel phone.

Each test is one page (or one state of a page) of the real service in Debian's Chromium,
seen four ways: the browser's language set to Vietnamese or English (the service follows
Accept-Language, and the page's ``lang`` is checked), at each width. All four are checked
before the test fails, so its message lists every view with a problem. The service's
Content-Security-Policy stays on: axe is run through the DevTools protocol (see
tests/axe.py). JavaScript is on in the browser (axe needs its timers); the pages have none.

axe-core comes from npm (tests/axe.py says where it is looked for); without it these tests
are skipped, or fail where FEEDBACK_BROWSER_TESTS_REQUIRED=1 (CI), as without Chromium.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bot import lifecycle, satisfaction, tracking
# axe and browser are fixtures, used by their names.
from tests.axe import (  # noqa: F401
    AXE_CORE_RANGE,
    assert_no_serious_violations,
    axe,
    axe_path,
    axe_version,
    judge,
    violations,
)
from tests.conftest import start_service
from tests.test_browser_form import COMPLAINT, browser  # noqa: F401

LANGUAGES = {"vi": "vi-VN", "en": "en-US"}
WIDTHS = {1280: {"width": 1280, "height": 800}, 390: {"width": 390, "height": 844}}
ANSWER = "Công ty chiếu sáng đã thay bóng đèn mới."

Visit = Callable[..., Awaitable[None]]


@pytest.fixture
async def staffed(make_config, clock) -> AsyncIterator:
    running, runner = await start_service(make_config({"staff": [{"slug": "an", "name": "An", "unit": "tiep-nhan"}]}),
                                          clock=clock)
    yield running
    await runner.cleanup()


async def new_page(browser, lang: str, width: int):
    """A page in a fresh context: the browser's language and the screen's width."""
    context = await browser.new_context(viewport=WIDTHS[width], locale=LANGUAGES[lang],
                                        is_mobile=width < 600, has_touch=width < 600)
    return context, await context.new_page()


async def goto(page, url: str, status: int = 200) -> None:
    response = await page.goto(url)
    assert response.status == status, f"{url}: {response.status}, expected {status}"


async def submit(page, status: int) -> None:
    """Send the page's first form with its button, as a citizen does (the complaint form, or
    the rating form above "not fixed"); the answer must have the status."""
    async with page.expect_navigation() as navigation:
        await page.locator("main form button[type=submit]").first.click()
    response = await navigation.value
    assert response.status == status, f"{page.url}: {response.status}, expected {status}"


async def file_complaint(page, url: str) -> str:
    """File a complaint through the form; the page is left on its 'received' status page."""
    await goto(page, url + "/")
    await page.locator("#text").fill(COMPLAINT)
    await submit(page, 200)
    assert "/track/PA-" in page.url and "filed=1" in page.url
    return (await page.locator("#tracking-code").inner_text()).strip()


async def check_view(browser, axe, visit: Visit, lang: str, width: int) -> str | None:
    """Open the page with visit(page, lang); axe's serious or critical findings, described."""
    context, page = await new_page(browser, lang, width)
    try:
        await visit(page, lang)
        assert await page.get_attribute("html", "lang") == lang, f"{page.url} is not in {lang}"
        found = await violations(page, axe)
    finally:
        await context.close()
    return judge(found, f"{lang}, {width} px, {page.url}")


async def check_views(browser, axe, visit: Visit) -> None:
    """The page in each language at each width; fail, after all four, on what axe finds."""
    failures = [failure for lang in LANGUAGES for width in WIDTHS
                if (failure := await check_view(browser, axe, visit, lang, width))]
    assert not failures, "axe found serious or critical violations:\n" + "\n".join(failures)


async def test_the_harness_finds_a_missing_label_and_poor_contrast(service, browser, axe):
    """axe runs under the pages' Content-Security-Policy and sees them: break the form, it says so."""
    context, page = await new_page(browser, "vi", 390)
    try:
        await goto(page, service.url + "/")
        version = await axe_version(page, axe)
        print(f"axe-core {version} from {axe_path()}")
        wanted = AXE_CORE_RANGE.lstrip("~") + "."
        assert version.startswith(wanted), (f"axe-core {version} is not the {AXE_CORE_RANGE} that CI runs: "
                                            f"npm install --no-save --prefix . axe-core@{AXE_CORE_RANGE}")
        await assert_no_serious_violations(page, axe)
        await page.evaluate("document.querySelector('label[for=area]').remove();"
                            "document.querySelector('#attachments-hint').style.color = '#bbb'")
        with pytest.raises(AssertionError) as failed:
            await assert_no_serious_violations(page, axe, "the broken form")
        found = await violations(page, axe)
    finally:
        await context.close()
    assert {(violation["id"], violation["impact"]) for violation in found} == {
        ("label", "critical"), ("color-contrast", "serious")}
    message = str(failed.value)
    assert message.startswith("axe found serious or critical violations on the broken form:\n")
    assert "- label (critical): Form elements must have labels" in message
    assert '    at #area: <input id="area" name="area"' in message
    assert "- color-contrast (serious)" in message and 'at #attachments-hint: <p class="hint"' in message


def test_only_serious_and_critical_violations_fail(capsys):
    def violation(rule: str, impact: str) -> dict:
        return {"id": rule, "impact": impact, "help": "Help", "helpUrl": "https://example.org/" + rule,
                "nodes": [{"target": ["#x"], "html": "<p id=x>", "failureSummary": "Fix it"}]}

    assert judge([violation("minor-rule", "minor"), violation("moderate-rule", "moderate")], "a page") is None
    assert "minor-rule (minor)" in capsys.readouterr().out
    failure = judge([violation("moderate-rule", "moderate"), violation("critical-rule", "critical")], "a page")
    assert failure == ("a page:\n- critical-rule (critical): Help <https://example.org/critical-rule>\n"
                       "    at #x: <p id=x>\n      Fix it")
    assert "moderate-rule" in capsys.readouterr().out


async def test_the_complaint_form(service, browser, axe):
    async def visit(page, lang):
        await goto(page, service.url + "/")

    await check_views(browser, axe, visit)


async def test_the_form_with_errors_on_its_fields(service, browser, axe):
    async def visit(page, lang):
        await goto(page, service.url + "/")
        await page.locator("#text").fill("Hỏng")  # too short
        await page.locator("#phone").fill("12345")
        await page.locator("#email").fill("not an address")
        await submit(page, 422)
        assert await page.locator(".error-summary li").count() == 3

    await check_views(browser, axe, visit)


async def test_the_status_page_of_a_new_complaint_when_received(service, browser, axe):
    async def visit(page, lang):
        await file_complaint(page, service.url)
        assert await page.locator(".received").count() == 1

    await check_views(browser, axe, visit)


async def test_the_status_page_of_a_new_complaint(service, browser, axe):
    async def visit(page, lang):
        code = await file_complaint(page, service.url)
        await goto(page, f"{service.url}/track/{code}")
        assert await page.locator("#status").get_attribute("data-status") == "new"

    await check_views(browser, axe, visit)


async def test_the_status_page_of_a_resolved_complaint_with_its_rating_form(staffed, browser, axe):
    async def visit(page, lang):
        code = await file_complaint(page, staffed.url)
        await lifecycle.resolve(staffed.core, code, "an", ANSWER)
        await goto(page, f"{staffed.url}/track/{code}")
        assert await page.locator("#rating input[type=radio]").count() == 5
        assert await page.locator(".replies li").count() == 1

    await check_views(browser, axe, visit)


async def test_the_rating_form_sent_without_a_choice(staffed, browser, axe):
    async def visit(page, lang):
        code = await file_complaint(page, staffed.url)
        await lifecycle.resolve(staffed.core, code, "an", ANSWER)
        await goto(page, f"{staffed.url}/track/{code}")
        await page.locator("#comment").fill("Chưa rõ.")
        await submit(page, 422)
        assert await page.locator("#rating-error").count() == 1

    await check_views(browser, axe, visit)


async def test_the_status_page_after_a_rating(staffed, browser, axe):
    async def visit(page, lang):
        code = await file_complaint(page, staffed.url)
        await lifecycle.resolve(staffed.core, code, "an", ANSWER)
        await goto(page, f"{staffed.url}/track/{code}")
        await page.locator("#rating-4").check()
        await submit(page, 200)
        assert await page.locator("#rating-thanks").count() == 1

    await check_views(browser, axe, visit)


async def test_the_lookup_page(service, browser, axe):
    async def visit(page, lang):
        await goto(page, service.url + "/track")

    await check_views(browser, axe, visit)


async def test_the_lookup_page_with_a_mistyped_code(service, browser, axe):
    async def visit(page, lang):
        await goto(page, service.url + "/track?code=PA-1234", 400)
        assert await page.locator(".error-summary").count() == 1

    await check_views(browser, axe, visit)


@pytest.mark.parametrize(("path", "status"), [
    pytest.param(lambda: f"/track/{tracking.new_code('PA')}", 404, id="unknown-code"),
    pytest.param(lambda: "/track/PA-12", 400, id="bad-code"),
    pytest.param(lambda: "/no-such-page", 404, id="no-such-page"),
])
async def test_an_error_page(service, browser, axe, path, status):
    async def visit(page, lang):
        await goto(page, service.url + path(), status)
        assert await page.locator(".error-summary").count() == 1

    await check_views(browser, axe, visit)


async def test_the_scorecard(staffed, browser, axe):
    # A unit with figures: one complaint answered and rated, so the page shows numbers too.
    context, page = await new_page(browser, "vi", 1280)
    code = await file_complaint(page, staffed.url)
    await context.close()
    await lifecycle.resolve(staffed.core, code, "an", ANSWER)
    await satisfaction.rate(staffed.core, code, 5, None)

    async def visit(page, lang):
        await goto(page, staffed.url + "/scorecard")
        figures = await page.locator("section.unit[data-unit=tiep-nhan] dd").all_inner_texts()
        assert any("5,0/5" in figure or "5.0/5" in figure for figure in figures), figures

    await check_views(browser, axe, visit)
