"""Open311 GeoReport v2 as a real client speaks it: form-encoded POSTs to the .json (and
.xml) paths of the running service, GETs with the specification's filters, and errors in
the specification's format.

The POST body in tests/fixtures/open311/ is what FixMyStreet's Open311 client sends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl
from xml.etree import ElementTree

import aiohttp
import pytest
from sqlalchemy import func, select

from bot import lifecycle, tracking
from storage.models import Attachment, Complaint, Contact, Message, OutboxMessage
from tests.conftest import start_service

FIXTURES = Path(__file__).parent / "fixtures" / "open311"
KEYS = "fms-key-4f1c9a, crm-key-77b2e0"
FMS_KEY, CRM_KEY = "fms-key-4f1c9a", "crm-key-77b2e0"
PREFIX = "/open311/v2"
TEXT = "Cây đổ chắn ngang đường Hoàng Quốc Việt sau cơn mưa, xe không qua được."
STAFF = {"staff": [{"slug": "an", "name": "An", "unit": "tiep-nhan"}]}


def fixmystreet_post(**changes: str | None) -> list[tuple[str, str]]:
    """FixMyStreet's recorded POST, with fields changed (or removed with None)."""
    body = (FIXTURES / "fixmystreet_post.txt").read_text().strip().replace("{api_key}", FMS_KEY)
    fields = parse_qsl(body, keep_blank_values=True)
    fields = [(name, changes.get(name, value)) for name, value in fields if changes.get(name, value) is not None]
    present = {name for name, _ in fields}
    return fields + [(name, value) for name, value in changes.items() if name not in present and value is not None]


@pytest.fixture
async def open311(make_config, clock, monkeypatch) -> AsyncIterator:
    """The service with Open311 on, two partners' keys, and one officer."""
    monkeypatch.setenv("OPEN311_API_KEYS", KEYS)
    config = make_config({"open311": {"enabled": True}} | STAFF, environ={"OPEN311_API_KEYS": KEYS})
    running, runner = await start_service(config, clock=clock)
    yield running
    await runner.cleanup()


async def post(service, fields, fmt: str = "json", headers: dict | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession(service.url) as client:
        async with client.post(f"{PREFIX}/requests.{fmt}", data=fields, headers=headers) as response:
            return response.status, response.content_type, await response.text()


async def get(service, path: str, **params: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession(service.url) as client, client.get(PREFIX + path, params=params) as response:
        return response.status, response.content_type, await response.text()


async def count(service, model) -> int:
    async with service.core.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def file(service, text: str = TEXT, **fields: str) -> str:
    """File a request; public (shown in listings) unless ``public`` says otherwise ("" leaves it out)."""
    fields = {"public": "true"} | fields
    status, _, body = await post(service, {"api_key": CRM_KEY, "service_code": "moi-truong", "description": text,
                                           "address_string": "Cầu Giấy"} | {k: v for k, v in fields.items() if v})
    assert status == 200, body
    return json.loads(body)[0]["service_request_id"]


def error_of(body: str) -> tuple[int, str]:
    [error] = json.loads(body)
    return error["code"], error["description"]


# ---------------------------------------------------------------------------- posting


async def test_a_fixmystreet_request_becomes_a_complaint_with_our_tracking_code(open311):
    status, content_type, body = await post(open311, fixmystreet_post())
    assert status == 200 and content_type == "application/json"
    [answer] = json.loads(body)
    code = answer["service_request_id"]
    assert tracking.is_valid(code, "PA") and answer["account_id"] is None
    assert code in answer["service_notice"] and "Bộ phận tiếp nhận" in answer["service_notice"]
    async with open311.core.sessions() as session:
        complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
        contact = await session.get(Contact, complaint.contact_id)
        alternate = await session.get(Contact, complaint.alternate_contact_id)
        message = await session.scalar(select(Message).where(Message.complaint_id == complaint.id))
        media = await session.scalar(select(Attachment))
        ack = await session.scalar(select(OutboxMessage).where(OutboxMessage.key.like("ack:%")))
    assert complaint.channel == "open311" and complaint.category == "giao-thong"
    assert complaint.text.startswith("Ổ gà lớn giữa đường Nguyễn Trãi")
    assert (complaint.latitude, complaint.longitude) == (20.99382, 105.811249)
    assert complaint.area == "214 Nguyễn Trãi, Thanh Xuân, Hà Nội"
    # Email first: the answer goes by email; the phone is kept as the second way.
    assert (contact.channel, contact.address, contact.display_name) == ("email", "Hoa.Tran@example.vn", "Trần Thị Hoa")
    assert (alternate.channel, alternate.address) == ("sms", "+84912345678")
    assert (ack.channel, ack.recipient) == ("email", "Hoa.Tran@example.vn") and code in ack.payload["text"]
    assert message.external_id is None  # GeoReport gives no id of the client's own
    # media_url is kept as a link for staff, never fetched.
    assert (media.filename, media.content_type, media.data, media.reference) == (
        "media_url", "text/uri-list", None, "https://fixmystreet.example.vn/photo/4821.0.full.jpeg")
    # The citizen reads it on the status page like any other complaint.
    async with aiohttp.ClientSession(open311.url) as client, client.get(f"/track/{code}") as response:
        assert response.status == 200 and code in await response.text()


async def test_a_request_posted_to_the_xml_path_is_answered_in_xml(open311):
    status, content_type, body = await post(open311, fixmystreet_post(), fmt="xml")
    assert status == 200 and content_type == "text/xml"
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ElementTree.fromstring(body)
    assert root.tag == "service_requests"
    [request] = root.findall("request")
    assert tracking.is_valid(request.findtext("service_request_id"), "PA")
    assert request.find("account_id").text is None


async def test_the_api_key_may_come_in_the_query_string(open311):
    async with aiohttp.ClientSession(open311.url) as client:
        async with client.post(f"{PREFIX}/requests.json", params={"api_key": CRM_KEY},
                               data=fixmystreet_post(api_key=None)) as response:
            assert response.status == 200


@pytest.mark.parametrize(("changes", "status_code", "description"), [
    ({"service_code": None}, 400, "service_code is required"),
    ({"service_code": ""}, 400, "service_code is required"),
    ({"service_code": "o-ga"}, 404, "service_code 'o-ga' not found"),
    ({"api_key": None}, 403, "api_key is required"),
    ({"api_key": "fms-key-4f1c9b"}, 403, "api_key is not valid"),
    ({"api_key": FMS_KEY + ", " + CRM_KEY}, 403, "api_key is not valid"),
    ({"jurisdiction_id": "hcm.example.gov.vn"}, 404,
     "jurisdiction_id 'hcm.example.gov.vn' is not served here; this endpoint serves 'feedback.example.gov.vn'"),
    ({"description": "x" * 4001}, 400, "description is longer than 4000 characters"),
    ({"description": None, "media_url": None}, 400, "description is required"),
    ({"lat": None, "long": None, "address_string": None}, 400,
     "a location is required: lat and long, or address_string"),
    ({"email": "hoa@"}, 400, "email is not a valid email address"),
    ({"phone": "12345"}, 400, "phone is not a valid phone number"),
    ({"media_url": "file:///etc/passwd"}, 400, "media_url must be an http or https URL of at most 1000 characters"),
    ({"address_string": "P" * 201}, 400, "address_string is longer than 200 characters"),
])
async def test_a_bad_request_is_refused_in_geo_report_s_format_and_nothing_is_stored(
        open311, changes, status_code, description):
    status, content_type, body = await post(open311, fixmystreet_post(**changes))
    assert (status, content_type) == (status_code, "application/json")
    assert error_of(body) == (status_code, description)
    assert await count(open311, Complaint) == 0 and await count(open311, Message) == 0


@pytest.mark.parametrize(("lat", "long"), [
    ("abc", "105.81"), ("91", "105.81"), ("-90.5", "105.81"), ("21.02", "181"), ("21.02", "-180.01"),
    ("nan", "105.81"), ("21.02", "inf"), ("21.02", ""), ("", "105.81"), ("21,02", "105,81"), ("1e3", "105"),
])
async def test_bad_lat_long_is_refused(open311, lat, long):
    status, _, body = await post(open311, fixmystreet_post(lat=lat, long=long))
    assert status == 400
    code, description = error_of(body)
    assert code == 400 and "lat" in description and "long" in description
    assert await count(open311, Complaint) == 0


async def test_a_description_of_4000_characters_is_taken(open311):
    status, _, _ = await post(open311, fixmystreet_post(description="đ" * 4000))
    assert status == 200


async def test_errors_on_the_xml_path_are_xml(open311):
    status, content_type, body = await post(open311, fixmystreet_post(api_key="sai"), fmt="xml")
    assert (status, content_type) == (403, "text/xml")
    root = ElementTree.fromstring(body)
    assert root.tag == "errors"
    assert [(e.findtext("code"), e.findtext("description")) for e in root.findall("error")] == [
        ("403", "api_key is not valid")]


async def test_a_json_body_is_refused(open311):
    async with aiohttp.ClientSession(open311.url) as client:
        async with client.post(f"{PREFIX}/requests.json", json=dict(fixmystreet_post())) as response:
            assert response.status == 400
            assert "form-encoded" in error_of(await response.text())[1]
    assert await count(open311, Complaint) == 0


async def test_a_request_past_the_body_limit_is_refused_with_413(open311):
    status, _, body = await post(open311, fixmystreet_post(attribute_padding="x" * (2 * 1024 * 1024)))
    assert status == 413 and error_of(body)[0] == 413
    assert await count(open311, Complaint) == 0


@pytest.mark.parametrize("key", ["", "has space", "x" * 101, "khóa"])
async def test_a_malformed_idempotency_key_is_refused(open311, key):
    status, _, body = await post(open311, fixmystreet_post(), headers={"Idempotency-Key": key})
    assert status == 400 and "Idempotency-Key" in error_of(body)[1]
    assert await count(open311, Complaint) == 0


async def test_the_same_idempotency_key_files_one_complaint(open311):
    headers = {"Idempotency-Key": "fms-4821-attempt"}
    first = await post(open311, fixmystreet_post(), headers=headers)
    again = await post(open311, fixmystreet_post(), headers=headers)
    assert first[0] == again[0] == 200
    assert json.loads(first[2])[0]["service_request_id"] == json.loads(again[2])[0]["service_request_id"]
    # The same key from another partner is another request.
    other = await post(open311, fixmystreet_post(api_key=CRM_KEY), headers=headers)
    assert json.loads(other[2])[0]["service_request_id"] != json.loads(first[2])[0]["service_request_id"]
    assert await count(open311, Complaint) == 2


async def test_without_an_idempotency_key_every_post_is_a_new_complaint(open311):
    await post(open311, fixmystreet_post())
    await post(open311, fixmystreet_post())
    assert await count(open311, Complaint) == 2


# ---------------------------------------------------------------------------- services and discovery


async def test_services_are_the_complaint_categories(open311):
    status, content_type, body = await get(open311, "/services.json")
    assert status == 200 and content_type == "application/json"
    services = json.loads(body)
    assert [s["service_code"] for s in services] == [c.slug for c in open311.core.config.categories]
    assert services[1] == {"service_code": "giao-thong", "service_name": "Giao thông, đường sá",
                           "description": "Traffic, roads", "metadata": False, "type": "realtime",
                           "keywords": "", "group": ""}


async def test_services_in_xml(open311):
    status, content_type, body = await get(open311, "/services.xml", jurisdiction_id="feedback.example.gov.vn")
    assert status == 200 and content_type == "text/xml"
    root = ElementTree.fromstring(body)
    assert root.tag == "services"
    assert [s.findtext("service_code") for s in root.findall("service")][:2] == ["moi-truong", "giao-thong"]
    assert root.find("service").findtext("metadata") == "false"


async def test_a_service_definition_and_an_unknown_service(open311):
    status, _, body = await get(open311, "/services/dien-nuoc.json")
    assert status == 200 and json.loads(body) == {"service_code": "dien-nuoc", "attributes": []}
    status, _, body = await get(open311, "/services/khong-co.json")
    assert status == 404 and error_of(body) == (404, "service_code 'khong-co' not found")


async def test_discovery_names_this_endpoint_and_both_formats(open311):
    status, _, body = await get(open311, "/discovery.json")
    assert status == 200
    [endpoint] = json.loads(body)["endpoints"]
    assert endpoint["url"] == "http://127.0.0.1:8080/open311/v2"
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["formats"] == ["application/json", "text/xml"]


async def test_an_unknown_path_or_format_under_open311_is_a_geo_report_error(open311):
    status, content_type, body = await get(open311, "/nothing.json")
    assert (status, content_type) == (404, "application/json") and error_of(body)[0] == 404
    status, content_type, _ = await get(open311, "/services.csv")
    assert status == 404
    status, content_type, body = await get(open311, "/nothing.xml")
    assert (status, content_type) == (404, "text/xml")


async def test_open311_is_off_unless_enabled(service):
    async with aiohttp.ClientSession(service.url) as client, client.get(f"{PREFIX}/services.json") as response:
        assert response.status == 404


# ---------------------------------------------------------------------------- reading requests


async def test_a_request_s_status_follows_the_complaint(open311):
    code = await file(open311)
    status, _, body = await get(open311, f"/requests/{code}.json")
    assert status == 200
    [request] = json.loads(body)
    async with open311.core.sessions() as session:
        complaint = await session.scalar(select(Complaint))
    assert request == {
        "service_request_id": code, "status": "open", "status_notes": "Mới tiếp nhận",
        "service_name": "Môi trường, vệ sinh", "service_code": "moi-truong",
        "agency_responsible": "Bộ phận tiếp nhận", "service_notice": None,
        "requested_datetime": "2026-11-02T08:00:00+07:00", "updated_datetime": "2026-11-02T08:00:00+07:00",
        "expected_datetime": complaint.first_response_due.astimezone(open311.core.config.tz).isoformat(),
        "description": TEXT, "urgency": "normal",
    }
    open311.core.clock.advance(hours=3)
    await lifecycle.resolve(open311.core, code, "an", "Đã cưa và dọn cây đổ, đường đã thông.")
    _, _, body = await get(open311, f"/requests/{code}.json")
    [request] = json.loads(body)
    assert (request["status"], request["status_notes"]) == ("closed", "Đã cưa và dọn cây đổ, đường đã thông.")
    assert request["updated_datetime"] == "2026-11-02T11:00:00+07:00"


async def test_a_request_by_id_in_xml(open311):
    code = await file(open311)
    status, content_type, body = await get(open311, f"/requests/{code}.xml")
    assert status == 200 and content_type == "text/xml"
    request = ElementTree.fromstring(body).find("request")
    assert request.findtext("service_request_id") == code and request.findtext("status") == "open"
    assert request.find("service_notice").text is None


async def test_unknown_and_malformed_request_ids(open311):
    unknown = tracking.new_code("PA")
    status, _, body = await get(open311, f"/requests/{unknown}.json")
    assert status == 404 and error_of(body) == (404, f"service_request_id {unknown} not found")
    status, _, body = await get(open311, "/requests/PA-7KQ4.json")
    assert status == 400 and "service_request_id is not valid" in error_of(body)[1]


async def test_requests_by_id_need_no_key_and_other_filters_are_ignored(open311):
    first, second = await file(open311), await file(open311, service_code="giao-thong")
    status, _, body = await get(open311, "/requests.json",
                                service_request_id=f"{first},{second.lower()}", service_code="dien-nuoc")
    assert status == 200
    assert sorted(r["service_request_id"] for r in json.loads(body)) == sorted([first, second])
    status, _, body = await get(open311, "/requests.json", service_request_id="PA-XXXX")
    assert status == 400


async def test_listing_requests_without_ids_needs_a_key(open311):
    await file(open311)
    status, _, body = await get(open311, "/requests.json")
    assert status == 403 and error_of(body) == (403, "api_key is required")
    status, _, _ = await get(open311, "/requests.json", api_key="sai")
    assert status == 403
    status, _, body = await get(open311, "/requests.json", api_key=FMS_KEY)
    assert status == 200 and len(json.loads(body)) == 1


async def test_requests_filtered_by_service_status_and_dates(open311):
    clock = open311.core.clock
    old = await file(open311, service_code="giao-thong")  # Monday 2 November 2026, 08:00 in Hà Nội
    clock.advance(days=100)
    recent = await file(open311)
    resolved = await file(open311, service_code="giao-thong")
    await lifecycle.resolve(open311.core, resolved, "an", "Đã xử lý.")

    async def ids(**params: str) -> list[str]:
        status, _, body = await get(open311, "/requests.json", api_key=CRM_KEY, **params)
        assert status == 200, body
        return [r["service_request_id"] for r in json.loads(body)]

    assert await ids() == [resolved, recent]  # the last 90 days by default, newest first
    assert await ids(start_date="2026-11-01T00:00:00+07:00") == [resolved, recent, old]
    assert await ids(start_date="2026-11-01T00:00:00Z", end_date="2026-11-03T00:00:00Z") == [old]
    assert await ids(end_date="2026-11-03T00:00:00+07:00") == [old]
    assert await ids(start_date="2026-11-01T00:00:00+07:00", service_code="giao-thong") == [resolved, old]
    assert await ids(start_date="2026-11-01T00:00:00+07:00", status="open") == [recent, old]
    assert await ids(status="closed") == [resolved]
    assert await ids(status="open,closed") == [resolved, recent]


@pytest.mark.parametrize(("params", "status_code"), [
    ({"start_date": "hôm qua"}, 400), ({"end_date": "2026-13-01T00:00:00Z"}, 400),
    ({"start_date": "2026-11-05T00:00:00Z", "end_date": "2026-11-01T00:00:00Z"}, 400),
    ({"status": "pending"}, 400), ({"service_code": "khong-co"}, 404),
    ({"jurisdiction_id": "other.example"}, 404),
])
async def test_bad_filters_are_refused(open311, params, status_code):
    status, _, body = await get(open311, "/requests.json", api_key=CRM_KEY, **params)
    assert status == status_code and error_of(body)[0] == status_code


async def test_listed_requests_carry_no_personal_data(open311):
    await post(open311, fixmystreet_post())
    _, _, body = await get(open311, "/requests.json", api_key=CRM_KEY)
    _, _, xml = await get(open311, "/requests.xml", api_key=CRM_KEY)
    for answer in (body, xml):
        leaked = [item for item in ("Hoa", "Trần", "example.vn", "0912", "912345678", "Nguyễn Trãi", "20.99",
                                    "105.81", "fixmystreet.example.vn/photo", "Ổ gà") if item in answer]
        assert leaked == []


async def test_a_private_request_never_appears_in_a_listing_and_shows_no_text(open311):
    """The citizen chooses: by default the text is private; a listing shows only public
    requests, and a public one's text has phone numbers and e-mail addresses taken out."""
    private = await file(open311, public="")
    told_no = await file(open311, "Rác ùn ứ ở chợ Nghĩa Tân, liên hệ 0912345678.", public="false")
    public = await file(open311, "Rác ùn ứ ở chợ Nghĩa Tân, gọi 0912 345 678 hoặc an@example.vn.")
    status, _, body = await get(open311, "/requests.json", api_key=FMS_KEY)
    assert status == 200
    listed = json.loads(body)
    assert [r["service_request_id"] for r in listed] == [public]
    assert listed[0]["description"] == "Rác ùn ứ ở chợ Nghĩa Tân, gọi *** hoặc ***."
    # Its own code finds a private request, as the citizen's status page does, without its text.
    for code in (private, told_no):
        _, _, body = await get(open311, f"/requests/{code}.json")
        [request] = json.loads(body)
        assert request["service_request_id"] == code and request["description"] is None
    async with open311.core.sessions() as session:
        flags = dict((await session.execute(select(Complaint.tracking_code, Complaint.public))).all())
    assert flags == {private: False, told_no: False, public: True}


async def test_public_must_be_true_or_false(open311):
    status, _, body = await post(open311, {"api_key": CRM_KEY, "service_code": "moi-truong", "description": TEXT,
                                           "address_string": "Cầu Giấy", "public": "maybe"})
    assert status == 400 and error_of(body) == (400, "public must be true or false")
    assert await count(open311, Complaint) == 0
