"""Satisfaction on the status page ("Khách về, được hài lòng"): once a complaint is
resolved, /track/{code} offers a 1-5 rating with an optional comment, protected against
forgery like the complaint form; a rating is recorded through bot.satisfaction and the
page thanks the citizen; a later rating replaces the earlier one; an open complaint
cannot be rated.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from bot import lifecycle, tracking
from storage.models import Complaint, Event
from tests.conftest import get_form, start_service

COMPLAINT = "Cống thoát nước trước nhà số 15 ngõ Thịnh Hào bị tắc, nước bẩn tràn lên mặt đường."
ANSWER = "Đội thoát nước đã thông cống sáng nay."
TOKEN = re.compile(r'name="csrf_token" value="([^"]*)"')
LABELS = ["1 rất không hài lòng", "2 không hài lòng", "3 bình thường", "4 hài lòng", "5 rất hài lòng"]


class RatingForm(HTMLParser):
    """The rating form as a screen reader finds it: radios with their labels, the comment, the legend."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.action: str | None = None
        self.radios: list[str] = []
        self.labels: dict[str, str] = {}
        self.legend = ""
        self.errors: list[str] = []
        self._collect: tuple[str, dict] | None = None
        self._text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("action", "").endswith("/rating"):
            self.action = a["action"]
        if tag == "input" and a.get("type") == "radio" and a.get("name") == "rating":
            self.radios.append(a["id"])
        if tag in ("label", "legend") or (tag == "p" and a.get("class") == "error"):
            self._collect, self._text = (tag, a), []

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._collect and self._collect[0] == tag:
            text = "".join(self._text).strip()
            if tag == "label":
                self.labels[self._collect[1].get("for", "")] = text
            elif tag == "legend":
                self.legend = text
            else:
                self.errors.append(text)
            self._collect = None


@pytest.fixture
async def staffed(make_config, clock) -> AsyncIterator:
    running, runner = await start_service(make_config({"staff": [{"slug": "an", "name": "An", "unit": "tiep-nhan"}]}),
                                          clock=clock)
    yield running
    await runner.cleanup()


async def file_complaint(service) -> str:
    async with service.client() as client:
        form = dict(await get_form(client), text=COMPLAINT)
        async with client.post("/", data=form, allow_redirects=False) as response:
            assert response.status == 303
            return response.headers["Location"].split("/track/")[1].split("?")[0]


async def resolved(service) -> str:
    code = await file_complaint(service)
    await lifecycle.resolve(service.core, code, "an", ANSWER)
    return code


async def rate(client, code: str, page: str, **fields: str) -> tuple[int, str, str | None]:
    form = {"csrf_token": TOKEN.search(page).group(1), "lang": "vi"} | fields
    async with client.post(f"/track/{code}/rating", data=form, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers.get("Location")


async def complaint(service, code: str) -> Complaint:
    async with service.core.sessions() as session:
        return await session.scalar(select(Complaint).where(Complaint.tracking_code == code))


async def test_a_resolved_complaint_offers_the_rating_form_with_labelled_choices(staffed):
    code = await resolved(staffed)
    async with staffed.client() as client, client.get(f"/track/{code}") as response:
        form = RatingForm(await response.text())
    assert form.action == f"/track/{code}/rating"
    assert form.radios == [f"rating-{n}" for n in range(1, 6)]
    assert [form.labels[radio] for radio in form.radios] == LABELS
    assert form.labels["comment"] == "Góp ý thêm (không bắt buộc)"
    assert form.legend == "Quý ông/bà hài lòng với kết quả giải quyết ở mức nào?"


async def test_an_open_complaint_has_no_rating_form(staffed):
    code = await file_complaint(staffed)
    async with staffed.client() as client, client.get(f"/track/{code}") as response:
        assert RatingForm(await response.text()).action is None


async def test_the_citizen_rates_and_is_thanked_and_a_later_rating_replaces_it(staffed):
    code = await resolved(staffed)
    async with staffed.client() as client:
        async with client.get(f"/track/{code}") as response:
            page = await response.text()
        status, _, location = await rate(client, code, page, rating="4", comment="Cán bộ xử lý nhanh, cảm ơn.")
        assert status == 303 and location == f"/track/{code}?rated=1&lang=vi#rating-thanks"
        async with client.get(location) as response:
            thanked = await response.text()
        assert "Cảm ơn Quý ông/bà đã đánh giá." in thanked
        assert (await complaint(staffed, code)).rating == 4
        status, _, _ = await rate(client, code, thanked, rating="5")
        assert status == 303
    stored = await complaint(staffed, code)
    assert (stored.rating, stored.rating_comment) == (5, None)
    async with staffed.core.sessions() as session:
        rated = (await session.scalars(select(Event.detail).where(Event.kind == "rated").order_by(Event.id))).all()
    assert [(d["rating"], d["previous"], d["via"]) for d in rated] == [(4, None, "web"), (5, 4, "web")]
    # The rating and its comment are the citizen's own: the public page does not show them.
    assert "Cán bộ xử lý nhanh" not in thanked


async def test_a_rating_without_a_choice_is_refused_with_the_comment_kept(staffed):
    code = await resolved(staffed)
    async with staffed.client() as client:
        async with client.get(f"/track/{code}") as response:
            page = await response.text()
        status, answer, _ = await rate(client, code, page, comment="Chưa hài lòng lắm")
    assert status == 422
    assert RatingForm(answer).errors == ["Vui lòng chọn một mức đánh giá từ 1 đến 5."]
    assert '<a href="#rating-1">Vui lòng chọn một mức đánh giá từ 1 đến 5.</a>' in answer
    assert "Chưa hài lòng lắm</textarea>" in answer
    assert (await complaint(staffed, code)).rating is None


@pytest.mark.parametrize("value", ["0", "6", "5.0", "năm", "-1"])
async def test_a_rating_outside_one_to_five_is_refused(staffed, value):
    code = await resolved(staffed)
    async with staffed.client() as client:
        async with client.get(f"/track/{code}") as response:
            page = await response.text()
        status, _, _ = await rate(client, code, page, rating=value)
    assert status == 422
    assert (await complaint(staffed, code)).rating is None


async def test_a_rating_without_the_anti_forgery_token_is_refused(staffed):
    code = await resolved(staffed)
    async with staffed.client() as client:
        async with client.post(f"/track/{code}/rating", data={"rating": "1", "csrf_token": "0" * 64},
                               allow_redirects=False) as response:
            assert response.status == 403
            assert "Biểu mẫu đã hết hạn hoặc không hợp lệ." in await response.text()
    assert (await complaint(staffed, code)).rating is None


async def test_an_open_complaint_cannot_be_rated(staffed):
    code = await file_complaint(staffed)
    async with staffed.client() as client:
        async with client.get("/") as response:  # a page with a token for this browser
            page = await response.text()
        status, answer, _ = await rate(client, code, page, rating="5")
    assert status == 409
    assert "Chỉ đánh giá được phản ánh đã được giải quyết." in answer
    assert (await complaint(staffed, code)).rating is None


async def test_rating_an_unknown_or_malformed_code(staffed):
    async with staffed.client() as client:
        async with client.get("/") as response:
            page = await response.text()
        status, answer, _ = await rate(client, "PA-7KQ4", page, rating="5")
        assert status == 400 and "Mã phản ánh không hợp lệ" in answer
        unknown = tracking.new_code("PA")
        status, answer, _ = await rate(client, unknown, page, rating="5")
        assert status == 404 and unknown in answer


async def test_a_low_rating_reopens_the_complaint_for_the_head(staffed):
    code = await resolved(staffed)
    async with staffed.client() as client:
        async with client.get(f"/track/{code}") as response:
            page = await response.text()
        status, _, location = await rate(client, code, page, rating="1", comment="Cống lại tắc ngay hôm sau")
        assert status == 303
        async with client.get(location) as response:
            after = await response.text()
    assert (await complaint(staffed, code)).status == "reopened"
    assert 'data-status="reopened"' in after and RatingForm(after).action is None
    assert "Cảm ơn Quý ông/bà đã đánh giá." in after


async def test_the_rating_form_in_english(staffed):
    code = await resolved(staffed)
    async with staffed.client() as client, client.get(f"/track/{code}?lang=en") as response:
        form = RatingForm(await response.text())
    assert [form.labels[radio] for radio in form.radios][0] == "1 very dissatisfied"
    assert form.labels["rating-5"] == "5 very satisfied"
