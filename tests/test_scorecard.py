"""The public scorecard page on the real service: each unit's on-time rate and satisfaction
over the last 30 and 90 days, in both languages, with no personal data."""

from __future__ import annotations

import re

import pytest

from bot import lifecycle, satisfaction
from tests.conftest import start_service
from tests.test_digest import CONFIG, PHONE_IN_COMMENT, STAFF, file, local, seed_week

CELL = re.compile(r'<dd data-measure="(\w+)" data-days="(\d+)">([^<]*)</dd>')


def figures(page: str) -> dict[str, dict[tuple[str, int], str]]:
    """The page's figures by unit slug, then by (measure, days)."""
    out = {}
    for section in re.findall(r'<section class="unit" data-unit="([\w-]+)">(.*?)</section>', page, re.S):
        out[section[0]] = {(measure, int(days)): value for measure, days, value in CELL.findall(section[1])}
    return out


@pytest.fixture
async def scored(make_core, make_config):
    core = await make_core(CONFIG)
    # In September, beyond 30 days but within 90 of the page's day: answered in an hour, rated 4.
    core.clock.set(local(2026, 9, 10, 9, 0))
    old = await file(core, "old", "+84912345020")
    core.clock.set(local(2026, 9, 10, 10, 0))
    await lifecycle.answer(core, old, "an", "Đã xử lý.")
    await lifecycle.resolve(core, old, "an")
    await satisfaction.rate(core, old, 4, f"Tốt, gọi {PHONE_IN_COMMENT}")
    codes = await seed_week(core)  # leaves the clock on Monday 9 November, 08:00
    running, runner = await start_service(make_config(CONFIG), clock=core.clock)
    yield running, codes
    await runner.cleanup()


async def test_each_unit_shows_its_on_time_rate_and_satisfaction_over_30_and_90_days(scored):
    running, _ = scored
    async with running.client() as client, client.get("/scorecard") as response:
        assert response.status == 200
        assert response.headers["Content-Language"] == "vi"
        assert response.headers["Cache-Control"].startswith("public")
        page = await response.text()
    assert "Kết quả giải quyết phản ánh của các đơn vị" in page
    shown = figures(page)
    assert shown["tiep-nhan"] == {
        ("on_time", 30): "75,0% (4 phản ánh được trả lời)",
        ("on_time", 90): "80,0% (5 phản ánh được trả lời)",
        ("satisfaction", 30): "3,5/5 (2 lượt đánh giá)",
        ("satisfaction", 90): "3,7/5 (3 lượt đánh giá)",
        ("disputed", 30): "0,0% (0/3 lần giải quyết)",
        ("disputed", 90): "0,0% (0/4 lần giải quyết)",
    }
    assert set(shown["dien-luc"].values()) == {"Chưa có số liệu"}
    assert "Trả lời đúng hạn, 30 ngày gần nhất" in page and "Mức độ hài lòng, 90 ngày gần nhất" in page


async def test_the_scorecard_in_english(scored):
    running, _ = scored
    async with running.client() as client, client.get("/scorecard?lang=en") as response:
        page = await response.text()
    assert "How each unit answers complaints" in page and "Reception desk" in page
    assert figures(page)["tiep-nhan"][("on_time", 30)] == "75.0% (4 complaints answered)"
    assert figures(page)["dien-luc"][("satisfaction", 90)] == "No figures yet"


async def test_the_scorecard_shows_no_personal_data(scored):
    running, codes = scored
    async with running.client() as client, client.get("/scorecard") as response:
        page = await response.text()
    personal = list(codes.values()) + [m["name"] for m in STAFF] + [m.get("email") for m in STAFF if m.get("email")]
    personal += ["+84912345678", "0912", "0987", "Chưa hài lòng", "Nước mất"]
    for value in personal:
        assert value not in page, value
