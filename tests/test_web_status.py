"""The public side of a complaint filed on the web form: the status page (/track/{code}),
the JSON status API (/api/v1/complaints/{code}), what the citizen is sent, and what
neither ever shows (personal data, raw markup).

Tracking codes as typed by citizens: malformed is a 400 that says what is wrong,
well-formed but unknown is a 404, and a code in another spelling (lower case, no
hyphens) redirects the page to its normal form.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import pytest
from markupsafe import escape
from sqlalchemy import func, select

from bot import lifecycle, tracking
from storage.models import Complaint, OutboxMessage
from tests.conftest import get_form, start_service

COMPLAINT = "Vỉa hè phố Kim Mã bị chiếm dụng để bán hàng, người đi bộ phải đi xuống lòng đường."
SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE_BREAKOUT = '"><img src=x onerror=alert(1)>'
CITIZEN = {"name": "Nguyễn Thị Hoa", "phone": "0987 654 321", "email": "hoa.nguyen@example.vn"}
# What the citizen's personal data looks like in any form it might be rendered in.
PERSONAL = ["Nguyễn Thị Hoa", "Hoa", "0987", "987654321", "+84987654321", "hoa.nguyen", "example.vn"]
ANSWER = "Đội quản lý trật tự đô thị phường đã kiểm tra và giải tỏa vỉa hè sáng nay."


def unknown_code() -> str:
    return tracking.new_code("PA")


class Tags(HTMLParser):
    """The element names on a page: to check that markup from input never became markup."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.feed(page)

    def handle_starttag(self, tag: str, attrs) -> None:
        self.names.add(tag)


async def file_complaint(service, lang: str = "vi", **fields: str) -> str:
    """File a complaint through the form as a browser does; its tracking code."""
    async with service.client() as client:
        form = dict(await get_form(client, f"/?lang={lang}"), text=COMPLAINT, lang=lang) | fields
        async with client.post("/", data=form, allow_redirects=False) as response:
            assert response.status == 303, await response.text()
            return response.headers["Location"].split("/track/")[1].split("?")[0]


async def get(service, path: str, **headers: str) -> tuple[int, str, dict]:
    async with service.client() as client, client.get(path, headers=headers, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers


async def outbox(service) -> list[OutboxMessage]:
    async with service.core.sessions() as session:
        return list((await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


@pytest.fixture
async def staffed(make_config, clock) -> AsyncIterator:
    """The service with one officer, An, at the reception desk, to answer complaints."""
    config = make_config({"staff": [{"slug": "an", "name": "An", "unit": "tiep-nhan"}]})
    running, runner = await start_service(config, clock=clock)
    yield running
    await runner.cleanup()


# ---------------------------------------------------------------------------- tracking codes

MALFORMED = {
    "PA-7KQ4": "a tracking code has 8 characters after PA-",
    "PA-7KQ4-M9XD-7KQ4": "a tracking code has 8 characters after PA-",
    "PA-0KQ4-M9XD": "is not used in tracking codes",
    "XY-7KQ4-M9XD": "tracking codes start with PA-, not XY-",
    "PA-7KQ4-M9X%3C": "is not used in tracking codes",
}


# The page explains in the citizen's language (Vietnamese by default).
MALFORMED_VI = {
    "PA-7KQ4": "mã phản ánh có 8 ký tự sau PA-",
    "PA-7KQ4-M9XD-7KQ4": "mã phản ánh có 8 ký tự sau PA-",
    "PA-0KQ4-M9XD": "không có trong mã phản ánh",
    "XY-7KQ4-M9XD": "mã phản ánh bắt đầu bằng PA-, không phải XY-",
    "PA-7KQ4-M9X%3C": "không có trong mã phản ánh",
}


@pytest.mark.parametrize(("code", "reason"), MALFORMED_VI.items())
async def test_malformed_code_on_the_status_page_says_what_is_wrong(service, code, reason):
    status, page, _ = await get(service, f"/track/{code}")
    assert status == 400
    assert "Mã phản ánh không hợp lệ" in page and reason in page


async def test_malformed_code_is_explained_in_english_on_the_english_page(service):
    status, page, _ = await get(service, "/track/XY-7KQ4-M9XD?lang=en")
    assert status == 400 and "tracking codes start with PA-, not XY-." in page


async def test_code_with_a_wrong_check_character_is_called_a_typo(service):
    code = unknown_code()
    last = code[-1]
    typo = code[:-1] + next(c for c in tracking.ALPHABET if c != last)
    status, page, _ = await get(service, f"/track/{typo}")
    assert status == 400 and "có thể gõ nhầm một ký tự" in page


@pytest.mark.parametrize(("code", "reason"), MALFORMED.items())
async def test_malformed_code_in_the_api_is_a_400_saying_what_is_wrong(service, code, reason):
    status, body, headers = await get(service, f"/api/v1/complaints/{code}")
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["error"] == "invalid_code" and reason in answer["message"]


async def test_unknown_code_on_the_status_page_is_not_found(service):
    code = unknown_code()
    status, page, _ = await get(service, f"/track/{code}")
    assert status == 404
    assert f"Không tìm thấy phản ánh có mã {code}." in page


async def test_unknown_code_in_the_api_is_not_found(service):
    status, body, _ = await get(service, f"/api/v1/complaints/{unknown_code()}")
    assert status == 404 and json.loads(body)["error"] == "not_found"


@pytest.mark.parametrize("spelling", [str.lower, lambda code: code.replace("-", ""),
                                      lambda code: code.lower().replace("-", " ")])
async def test_code_in_another_spelling_redirects_to_its_normal_form(service, spelling):
    code = unknown_code()
    status, _, headers = await get(service, f"/track/{spelling(code)}")
    assert status == 301
    assert headers["Location"] == f"/track/{code}"


async def test_redirect_keeps_the_language(service):
    code = unknown_code()
    status, _, headers = await get(service, f"/track/{code.lower()}?lang=en")
    assert status == 301 and headers["Location"] == f"/track/{code}?lang=en"


async def test_api_answers_for_a_code_in_another_spelling(service):
    code = await file_complaint(service)
    status, body, _ = await get(service, f"/api/v1/complaints/{code.lower().replace('-', '')}")
    assert status == 200 and json.loads(body)["code"] == code


async def test_lookup_form_redirects_to_the_status_page(service):
    code = unknown_code()
    status, _, headers = await get(service, f"/track?code={code.lower()}")
    assert status == 303 and headers["Location"] == f"/track/{code}?lang=vi"


# ---------------------------------------------------------------------------- the public status


async def test_api_gives_the_public_status(service):
    code = await file_complaint(service, category="trat-tu")
    status, body, headers = await get(service, f"/api/v1/complaints/{code}")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    answer = json.loads(body)
    async with service.core.sessions() as session:
        complaint = await session.scalar(select(Complaint))
    assert answer["code"] == code
    assert answer["status"] == "new"
    assert answer["unit"]["slug"] == "tiep-nhan" and answer["unit"]["name"] == "Bộ phận tiếp nhận"
    assert answer["created"] == "2026-11-02T01:00:00Z"
    assert answer["due"] == complaint.first_response_due.isoformat().replace("+00:00", "Z")
    assert answer["due"] > answer["created"]
    assert answer["replies"] == []


async def test_api_shows_no_personal_data(service):
    code = await file_complaint(service, **CITIZEN, area="Ba Đình")
    _, body, _ = await get(service, f"/api/v1/complaints/{code}")
    leaked = [item for item in PERSONAL + [COMPLAINT[:20], "Ba Đình"] if item in body]
    assert leaked == []


async def test_status_page_shows_no_personal_data(service):
    code = await file_complaint(service, **CITIZEN, area="Ba Đình")
    for path in (f"/track/{code}", f"/track/{code}?new=1", f"/track/{code}?lang=en"):
        status, page, _ = await get(service, path)
        assert status == 200
        leaked = [item for item in PERSONAL + [COMPLAINT[:20], "Ba Đình"] if item in page]
        assert leaked == [], path


async def test_status_page_in_english(service):
    code = await file_complaint(service, lang="en")
    status, page, headers = await get(service, f"/track/{code}?lang=en")
    assert status == 200 and headers["Content-Language"] == "en"
    assert "Track a complaint" in page and "Received" in page and "Reception desk" in page
    assert "No answer yet." in page


async def test_status_page_follows_accept_language(service):
    code = await file_complaint(service)
    _, page, _ = await get(service, f"/track/{code}", **{"Accept-Language": "en-GB,en;q=0.8"})
    assert '<html lang="en">' in page and "Reception desk" in page


# ---------------------------------------------------------------------------- telling the citizen


async def test_citizen_who_leaves_an_email_gets_the_acknowledgement_by_email(service):
    code = await file_complaint(service, email="Hoa.Nguyen@Example.VN")
    [ack] = await outbox(service)
    assert ack.channel == "email" and ack.recipient == "Hoa.Nguyen@example.vn"
    assert code in ack.payload["text"]


async def test_citizen_without_phone_or_email_is_sent_nothing(service):
    await file_complaint(service, name="Hoa")
    assert await outbox(service) == []


async def test_anonymous_citizen_reads_the_answer_on_the_status_page(staffed):
    code = await file_complaint(staffed)
    await lifecycle.answer(staffed.core, code, "an", ANSWER)
    status, page, _ = await get(staffed, f"/track/{code}")
    assert status == 200
    assert ANSWER in page and "Đã trả lời" in page
    assert await outbox(staffed) == []  # nowhere to send it: the page is the channel


async def test_anonymous_citizen_reads_the_answer_in_the_api(staffed):
    code = await file_complaint(staffed)
    await lifecycle.answer(staffed.core, code, "an", ANSWER)
    _, body, _ = await get(staffed, f"/api/v1/complaints/{code}")
    answer = json.loads(body)
    assert answer["status"] == "answered"
    assert [reply["text"] for reply in answer["replies"]] == [ANSWER]
    assert answer["replies"][0]["at"] == "2026-11-02T01:00:00Z"


# ---------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("payload", [SCRIPT, ATTRIBUTE_BREAKOUT])
async def test_markup_from_the_form_never_reaches_the_status_page_raw(service, payload):
    code = await file_complaint(service, text=f"{COMPLAINT} {payload}", name=payload, area=payload)
    status, page, _ = await get(service, f"/track/{code}?new=1")
    assert status == 200
    assert payload not in page
    assert not {"script", "img"} & Tags(page).names


@pytest.mark.parametrize("payload", [SCRIPT, ATTRIBUTE_BREAKOUT])
async def test_markup_in_an_answer_is_shown_escaped(staffed, payload):
    code = await file_complaint(staffed)
    await lifecycle.answer(staffed.core, code, "an", f"Xem {payload} tại đây")
    _, page, _ = await get(staffed, f"/track/{code}")
    assert payload not in page
    assert not {"script", "img"} & Tags(page).names
    assert f"Xem {escape(payload)} tại đây" in page


async def test_markup_in_a_looked_up_code_is_shown_escaped(service):
    status, page, _ = await get(service, "/track?code=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert status == 400
    assert SCRIPT not in page and "script" not in Tags(page).names
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in page


async def test_markup_in_the_code_of_the_path_is_shown_escaped(service):
    status, page, _ = await get(service, "/track/%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert status == 400
    assert ATTRIBUTE_BREAKOUT not in page and "img" not in Tags(page).names


async def test_no_complaint_is_stored_by_reading_status(service):
    await get(service, f"/track/{unknown_code()}")
    await get(service, f"/api/v1/complaints/{unknown_code()}")
    async with service.core.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Complaint)) == 0
