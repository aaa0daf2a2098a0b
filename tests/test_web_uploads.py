"""Photos and documents on the web form, end to end: a browser-like client posts a
multipart form to the real service, and the test looks at what was stored.

A good file is stored with the complaint, in the same transaction, with its SHA-256; an
officer of the unit can open it; the public status page and API never show it. Every bad
file (one that lies about its type, a decompression bomb, a path for a name, one file
too many, too large, cut short) is refused beside the file field with a clear message,
the citizen's text is kept, and nothing at all is stored.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import func, select

from bot import staff
from storage.models import Attachment, Complaint, Message, OutboxMessage
from tests.conftest import get_form, start_service
from tests.fixtures.web import files
from tests.test_web_form import FormPage

COMPLAINT = "Đèn đường ngõ 42 phố Láng Hạ bị hỏng, cột đèn nghiêng sắp đổ, xin xem ảnh kèm theo."
STAFF = {"staff": [{"slug": "an", "name": "Lê An", "unit": "tiep-nhan"}]}


@pytest.fixture
async def staffed(make_config, clock) -> AsyncIterator:
    """The service with one officer, An, at the reception desk."""
    running, runner = await start_service(make_config(STAFF), clock=clock)
    yield running
    await runner.cleanup()


async def post_with_files(client: aiohttp.ClientSession, attached: list[tuple[str, bytes, str]],
                          **fields: str) -> tuple[int, str, str | None]:
    """Post the form as a browser does (multipart), with files as (name, bytes, declared type)."""
    form = aiohttp.FormData(dict(await get_form(client), text=COMPLAINT) | fields)
    for filename, data, content_type in attached:
        form.add_field("attachments", data, filename=filename, content_type=content_type)
    async with client.post("/", data=form, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers.get("Location")


async def stored(core) -> tuple[int, int, int, int]:
    """(complaints, messages, attachments, outbox rows) in the store."""
    async with core.sessions() as session:
        return tuple([await session.scalar(select(func.count()).select_from(model))
                      for model in (Complaint, Message, Attachment, OutboxMessage)])


def refused_beside_the_file_field(page: str, message: str) -> None:
    form = FormPage(page)
    assert form.error_beside("attachments") == message
    assert ("#attachments", message) in form.summary
    assert form.value("text") == COMPLAINT  # the citizen's words are kept


# ---------------------------------------------------------------------------- good files


async def test_a_photo_and_a_pdf_are_stored_with_the_complaint_and_the_officer_can_open_them(staffed):
    photo, pdf = files.photo(), files.pdf()
    async with staffed.client() as client:
        status, _, location = await post_with_files(
            client, [("đèn-đường.jpg", photo, "image/jpeg"), ("don-kien-nghi.pdf", pdf, "application/pdf")])
    assert status == 303
    code = location.split("/track/")[1].split("?")[0]
    async with staffed.core.sessions() as session:
        rows = (await session.execute(
            select(Attachment, Complaint.tracking_code).join(Message, Message.id == Attachment.message_id)
            .join(Complaint, Complaint.id == Message.complaint_id).order_by(Attachment.id))).all()
    assert [(a.filename, a.content_type, a.size, code_) for a, code_ in rows] == [
        ("đèn-đường.jpg", "image/jpeg", len(photo), code), ("don-kien-nghi.pdf", "application/pdf", len(pdf), code)]
    assert [a.sha256 for a, _ in rows] == [hashlib.sha256(photo).hexdigest(), hashlib.sha256(pdf).hexdigest()]
    # Staff open them through the application, as the Telegram side does.
    officer = await staff.by_slug(staffed.core, "an")
    case = await staff.case(staffed.core, officer, code)
    listed = [item for message in case.messages for item in message.attachments]
    assert [(name, kind) for _, name, kind, _ in listed] == [("đèn-đường.jpg", "image/jpeg"),
                                                              ("don-kien-nghi.pdf", "application/pdf")]
    stored = await staff.attachment(staffed.core, officer, rows[0][0].id)
    assert (stored.filename, stored.content_type, stored.data, stored.reference) == (
        "đèn-đường.jpg", "image/jpeg", photo, None)
    with pytest.raises(staff.NotAllowed):
        await staff.attachment(staffed.core, None, rows[0][0].id)


async def test_the_public_status_never_shows_the_files(service):
    async with service.client() as client:
        status, _, location = await post_with_files(client, [("anh-hien-truong.jpg", files.photo(), "image/jpeg")])
        assert status == 303
        code = location.split("/track/")[1].split("?")[0]
        for path in (location, f"/track/{code}", f"/track/{code}?lang=en", f"/api/v1/complaints/{code}"):
            async with client.get(path) as response:
                assert response.status == 200
                page = await response.text()
            assert "anh-hien-truong" not in page and "attachment" not in page.lower() and "<img" not in page


@pytest.mark.parametrize(("filename", "kind", "content_type"), [
    ("anh.png", "PNG", "image/png"), ("anh.webp", "WEBP", "image/webp"), ("ANH.JPEG", "JPEG", "image/jpeg")])
async def test_png_webp_and_jpeg_photos_are_taken(service, filename, kind, content_type):
    async with service.client() as client:
        status, _, _ = await post_with_files(client, [(filename, files.photo(kind), content_type)])
    assert status == 303
    async with service.core.sessions() as session:
        assert (await session.scalar(select(Attachment.content_type))) == content_type


async def test_the_type_stored_is_the_content_s_not_the_browser_s(service):
    # Browsers send application/octet-stream for types they do not know; the content decides.
    async with service.client() as client:
        status, _, _ = await post_with_files(client, [("IMG_0042", files.photo(), "application/octet-stream")])
    assert status == 303
    async with service.core.sessions() as session:
        attachment = await session.scalar(select(Attachment))
    assert (attachment.filename, attachment.content_type) == ("IMG_0042.jpg", "image/jpeg")


async def test_a_decomposed_vietnamese_file_name_is_stored_composed(service):
    decomposed = unicodedata.normalize("NFD", "ảnh ổ gà.jpg")  # as a Mac sends it
    async with service.client() as client:
        status, _, _ = await post_with_files(client, [(decomposed, files.photo(), "image/jpeg")])
    assert status == 303
    async with service.core.sessions() as session:
        assert await session.scalar(select(Attachment.filename)) == "ảnh ổ gà.jpg"


async def test_an_empty_file_field_is_no_attachment(service):
    # What a browser sends when the citizen chose no file: a part with an empty name and body.
    async with service.client() as client:
        status, _, _ = await post_with_files(client, [("", b"", "application/octet-stream")])
    assert status == 303
    assert await stored(service.core) == (1, 1, 0, 0)


async def test_a_resubmitted_form_with_files_stores_them_once(service):
    async with service.client() as client:
        form_fields = dict(await get_form(client), text=COMPLAINT)
        for _ in range(2):
            form = aiohttp.FormData(form_fields)
            form.add_field("attachments", files.photo(), filename="anh.jpg", content_type="image/jpeg")
            async with client.post("/", data=form, allow_redirects=False) as response:
                assert response.status == 303
    assert await stored(service.core) == (1, 1, 1, 0)


# ---------------------------------------------------------------------------- bad files

LIES = [
    # (file name, content, declared type, message)
    ("anh.jpg", files.HTML, "image/jpeg", "Tệp «anh.jpg» không phải ảnh JPEG, PNG, WebP hoặc tài liệu PDF."),
    ("hoa-don.pdf", files.EXE, "application/pdf", "Tệp «hoa-don.pdf» không phải ảnh JPEG, PNG, WebP hoặc tài liệu PDF."),
    ("anh.png", files.photo(), "image/png",
     "Tệp «anh.png» có tên hoặc loại không khớp với nội dung (nội dung là JPEG). Vui lòng kiểm tra lại tệp."),
    ("anh.jpg", files.pdf(), "image/jpeg",
     "Tệp «anh.jpg» có tên hoặc loại không khớp với nội dung (nội dung là PDF). Vui lòng kiểm tra lại tệp."),
    ("anh.jpg", files.photo(), "application/pdf",
     "Tệp «anh.jpg» có tên hoặc loại không khớp với nội dung (nội dung là JPEG). Vui lòng kiểm tra lại tệp."),
    ("anh.jpg.exe", files.photo(), "application/octet-stream",
     "Tệp «anh.jpg.exe» có tên hoặc loại không khớp với nội dung (nội dung là JPEG). Vui lòng kiểm tra lại tệp."),
    ("anh.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/svg+xml",
     "Tệp «anh.svg» không phải ảnh JPEG, PNG, WebP hoặc tài liệu PDF."),
]


@pytest.mark.parametrize(("filename", "data", "content_type", "message"), LIES)
async def test_a_file_that_lies_about_its_type_is_refused(service, filename, data, content_type, message):
    async with service.client() as client:
        status, page, _ = await post_with_files(client, [(filename, data, content_type)])
    assert status == 422
    refused_beside_the_file_field(page, message)
    assert await stored(service.core) == (0, 0, 0, 0)


@pytest.mark.parametrize(("filename", "data"), [
    ("bom.png", files.bomb_png()),  # 854 bytes claiming 100 000 x 100 000 pixels
    ("to.jpg", files.huge_jpeg(8000, 7000)),  # a real 56-megapixel JPEG of 650 KB
])
async def test_a_decompression_bomb_or_huge_picture_is_refused_before_decoding(service, filename, data):
    async with service.client() as client:
        status, page, _ = await post_with_files(client, [(filename, data, "")])
    assert status == 422
    refused_beside_the_file_field(
        page, f"Ảnh «{filename}» quá lớn: tối đa 50 triệu điểm ảnh. Vui lòng gửi ảnh nhỏ hơn.")
    assert await stored(service.core) == (0, 0, 0, 0)


async def test_the_pixel_limit_comes_from_the_configuration(make_config, clock):
    running, runner = await start_service(make_config({"web": {"max_image_pixels": 100_000}}), clock=clock)
    try:
        async with running.client() as client:
            status, page, _ = await post_with_files(client, [("anh.jpg", files.photo(size=(640, 480)), "image/jpeg")])
        assert status == 422
        refused_beside_the_file_field(page, "Ảnh «anh.jpg» quá lớn: tối đa 0.1 triệu điểm ảnh. Vui lòng gửi ảnh nhỏ hơn.")
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("filename", ["../../etc/passwd.jpg", "..\\..\\Windows\\win.ini.jpg", "/etc/cron.d/anh.jpg",
                                      "C:anh.jpg", "anh.jpg:payload", ".."])
async def test_a_file_name_with_a_path_in_it_is_refused(service, filename):
    async with service.client() as client:
        status, page, _ = await post_with_files(client, [(filename, files.photo(), "image/jpeg")])
    assert status == 422
    form = FormPage(page)
    assert form.error_beside("attachments").startswith("Tên tệp «")
    assert "không hợp lệ" in form.error_beside("attachments") and form.value("text") == COMPLAINT
    assert await stored(service.core) == (0, 0, 0, 0)


@pytest.mark.parametrize(("raw_name", "statuses"), [
    ("anh\x01.jpg", (400, 422)),  # a control character: aiohttp's own parser may refuse it first
    ("..%2F..%2Fetc%2Fanh.jpg", (422,)),  # escaped slashes, decoded before the name is checked
    ("%2E%2E", (422,)),
])
async def test_a_hand_made_file_name_is_refused(service, raw_name, statuses):
    # Browsers and HTTP clients will not send these names as they are; a hand-made request can.
    async with service.client() as client:
        hidden = await get_form(client)
        boundary = "----feedback-test-boundary"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                 for name, value in dict(hidden, text=COMPLAINT).items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="attachments"; filename="{raw_name}"\r\n'
                     f'Content-Type: image/jpeg\r\n\r\n'.encode() + files.photo() + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        async with client.post("/", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                               allow_redirects=False) as response:
            assert response.status in statuses
            if response.status == 422:
                assert "không hợp lệ" in FormPage(await response.text()).error_beside("attachments")
    assert await stored(service.core) == (0, 0, 0, 0)


async def test_one_file_too_many_is_refused_and_nothing_is_stored(service):
    four = [(f"anh-{i}.jpg", files.photo(), "image/jpeg") for i in range(4)]
    async with service.client() as client:
        status, page, _ = await post_with_files(client, four)
    assert status == 422
    refused_beside_the_file_field(page, "Chỉ gửi được tối đa 3 tệp kèm theo.")
    assert await stored(service.core) == (0, 0, 0, 0)


async def test_a_file_over_the_size_limit_is_refused_with_the_text_kept(service):
    big = files.photo() + b"\x00" * (5 * 1024 * 1024)  # a JPEG with 5 MB of trailing bytes
    async with service.client() as client:
        status, page, _ = await post_with_files(client, [("anh-lon.jpg", big, "image/jpeg")])
    assert status == 422
    refused_beside_the_file_field(page, "Tệp «anh-lon.jpg» quá lớn: mỗi tệp tối đa 5 MB.")
    assert await stored(service.core) == (0, 0, 0, 0)


@pytest.mark.parametrize(("filename", "data", "content_type", "message"), [
    ("cat-do.jpg", files.truncated_jpeg(), "image/jpeg", "Tệp «cat-do.jpg» bị hỏng hoặc không đọc được."),
    ("cat-do.pdf", files.pdf()[:-200], "application/pdf", "Tệp «cat-do.pdf» bị hỏng hoặc không đọc được."),
    ("rong.jpg", b"", "image/jpeg", "Tệp «rong.jpg» không có nội dung."),
])
async def test_a_damaged_or_empty_file_is_refused(service, filename, data, content_type, message):
    async with service.client() as client:
        status, page, _ = await post_with_files(client, [(filename, data, content_type)])
    assert status == 422
    refused_beside_the_file_field(page, message)
    assert await stored(service.core) == (0, 0, 0, 0)


async def test_good_files_beside_a_bad_one_are_not_half_stored(service):
    attached = [("anh-1.jpg", files.photo(), "image/jpeg"), ("don.pdf", files.pdf(), "application/pdf"),
                ("anh-2.jpg", files.HTML, "image/jpeg")]
    async with service.client() as client:
        status, _, _ = await post_with_files(client, attached)
    assert status == 422
    assert await stored(service.core) == (0, 0, 0, 0)


async def test_files_sent_with_another_mistake_must_be_chosen_again(service):
    async with service.client() as client:
        status, page, _ = await post_with_files(client, [("anh.jpg", files.photo(), "image/jpeg")], phone="12345")
    assert status == 422
    form = FormPage(page)
    assert form.error_beside("phone") == "Số điện thoại không hợp lệ."
    assert form.error_beside("attachments") == ("Vì lý do an toàn, trình duyệt không giữ lại tệp đã chọn: "
                                                "vui lòng chọn lại tệp kèm theo.")
    assert await stored(service.core) == (0, 0, 0, 0)


async def test_the_refusal_is_in_english_for_an_english_form(service):
    async with service.client() as client:
        form = aiohttp.FormData(dict(await get_form(client, "/?lang=en"), text=COMPLAINT, lang="en"))
        form.add_field("attachments", files.HTML, filename="photo.jpg", content_type="image/jpeg")
        async with client.post("/", data=form) as response:
            assert response.status == 422
            page = await response.text()
    assert FormPage(page).error_beside("attachments") == \
        "The file “photo.jpg” is not a JPEG, PNG or WebP photo or a PDF document."


async def test_the_form_offers_the_file_field_with_its_limits(service):
    async with service.client() as client, client.get("/") as response:
        page = await response.text()
    form = FormPage(page)
    control = form.controls["attachments"]
    assert control["type"] == "file" and "multiple" in control
    assert control["accept"] == "image/jpeg,image/png,image/webp,application/pdf"
    assert form.labels["attachments"] == "Ảnh hoặc tài liệu kèm theo (không bắt buộc)"
    assert "Tối đa 3 tệp: ảnh JPEG, PNG, WebP hoặc tài liệu PDF, mỗi tệp không quá 5 MB." in page
    assert 'enctype="multipart/form-data"' in page


async def test_no_file_field_when_attachments_are_turned_off(make_config, clock):
    running, runner = await start_service(make_config({"web": {"max_attachments": 0}}), clock=clock)
    try:
        async with running.client() as client:
            async with client.get("/") as response:
                assert "attachments" not in FormPage(await response.text()).controls
            status, _, _ = await post_with_files(client, [("anh.jpg", files.photo(), "image/jpeg")])
        assert status == 400
        assert await stored(running.core) == (0, 0, 0, 0)
    finally:
        await runner.cleanup()


async def test_a_refused_anti_forgery_token_with_a_file_asks_for_the_file_again(service):
    async with service.client() as client:
        status, page, _ = await post_with_files(client, [("anh.jpg", files.photo(), "image/jpeg")],
                                                csrf_token="0" * 64)
    assert status == 403
    form = FormPage(page)
    assert form.value("text") == COMPLAINT
    assert form.error_beside("attachments").startswith("Vì lý do an toàn")
    assert await stored(service.core) == (0, 0, 0, 0)
