"""Requests to the web form that are refused before the form is read: too large (413),
not a form (415), not from our form (400). Each gets a clear page, stores nothing,
and leaves the service serving the next request.

A 20 MB body is sent twice over: with a Content-Length, which the service refuses
before reading a byte of it, and chunked without one, which it refuses once
``client_max_size`` (``[web] max_body_bytes``) is passed while reading. A multipart form
(with files) is read as a stream: past the fields' limit plus ``max_attachments`` files
of ``max_attachment_bytes`` it is refused the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
from sqlalchemy import func, select

from storage.models import Complaint, Message, OutboxMessage
from tests.conftest import get_form

COMPLAINT = "Rác thải tập kết sai chỗ trước cổng trường tiểu học Nghĩa Tân suốt một tuần nay."
TWENTY_MB = 20 * 1024 * 1024
FORM = "application/x-www-form-urlencoded"
TOO_LARGE = "Nội dung gửi lên quá lớn (tối đa 1024 KB)."
UPLOAD_TOO_LARGE = "Nội dung gửi lên quá lớn: tối đa 3 tệp kèm theo, mỗi tệp tối đa 5 MB."


async def stored(core) -> tuple[int, int, int]:
    async with core.sessions() as session:
        return tuple([await session.scalar(select(func.count()).select_from(model))
                      for model in (Complaint, Message, OutboxMessage)])


async def a_valid_form(client: aiohttp.ClientSession) -> bytes:
    """A form that would be filed if it were not for what is appended to it."""
    return urlencode(dict(await get_form(client), text=COMPLAINT)).encode()


async def in_chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def still_serving(service) -> None:
    """The same browser and a new one both get the form."""
    for _ in range(2):
        async with service.client() as client, client.get("/") as response:
            assert response.status == 200


async def test_twenty_megabytes_with_content_length_is_refused(service):
    async with service.client() as client:
        body = await a_valid_form(client) + b"&padding=" + b"x" * TWENTY_MB
        async with client.post("/", data=body, headers={"Content-Type": FORM}) as response:
            assert response.status == 413
            assert TOO_LARGE in await response.text()
        async with client.get("/") as response:
            assert response.status == 200
    assert await stored(service.core) == (0, 0, 0)
    await still_serving(service)


async def test_twenty_megabytes_chunked_without_length_is_refused(service):
    async with service.client() as client:
        body = await a_valid_form(client) + b"&padding=" + b"x" * TWENTY_MB
        async with client.post("/", data=in_chunks(body), headers={"Content-Type": FORM}) as response:
            assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
            assert "Content-Length" not in response.request_info.headers
            assert response.status == 413
            assert TOO_LARGE in await response.text()
    assert await stored(service.core) == (0, 0, 0)
    await still_serving(service)


async def test_twenty_megabyte_file_in_a_multipart_form_is_refused(service):
    # Past everything the form could hold (the fields and three 5 MB files): refused while reading.
    async with service.client() as client:
        hidden = await get_form(client)
        body = aiohttp.FormData(dict(hidden, text=COMPLAINT))
        body.add_field("attachments", in_chunks(b"\xff" * TWENTY_MB), filename="anh.jpg", content_type="image/jpeg")
        async with client.post("/", data=body) as response:
            assert response.status == 413
            assert UPLOAD_TOO_LARGE in await response.text()
    assert await stored(service.core) == (0, 0, 0)
    await still_serving(service)


async def test_twenty_megabytes_announced_in_content_length_are_refused_before_reading(service):
    async with service.client() as client:
        hidden = await get_form(client)
        body = aiohttp.FormData(dict(hidden, text=COMPLAINT))
        body.add_field("attachments", b"\xff" * TWENTY_MB, filename="anh.jpg", content_type="image/jpeg")
        async with client.post("/", data=body) as response:
            assert response.request_info.headers.get("Content-Length")
            assert response.status == 413
            assert UPLOAD_TOO_LARGE in await response.text()
    assert await stored(service.core) == (0, 0, 0)
    await still_serving(service)


async def test_a_file_under_a_field_the_form_does_not_have_is_a_bad_request(service):
    async with service.client() as client:
        hidden = await get_form(client)
        body = aiohttp.FormData(dict(hidden, text=COMPLAINT))
        body.add_field("photo", b"\xff\xd8\xff" + b"\x00" * 100, filename="anh.jpg", content_type="image/jpeg")
        async with client.post("/", data=body) as response:
            assert response.status == 400
    assert await stored(service.core) == (0, 0, 0)


async def test_a_megabyte_of_text_in_a_multipart_form_is_refused(service):
    async with service.client() as client:
        hidden = await get_form(client)
        body = aiohttp.FormData(dict(hidden, text=COMPLAINT, name="x" * (2 * 1024 * 1024)))
        body.add_field("attachments", b"", filename="", content_type="application/octet-stream")
        async with client.post("/", data=body) as response:
            assert response.status == 413
    assert await stored(service.core) == (0, 0, 0)
    await still_serving(service)


async def test_the_size_limit_is_told_in_english_to_an_english_browser(service):
    async with service.client() as client:
        body = b"text=x&padding=" + b"x" * (2 * 1024 * 1024)
        async with client.post("/", data=body, headers={"Content-Type": FORM, "Accept-Language": "en"}) as response:
            assert response.status == 413
            assert "What you sent is too large (at most 1024 KB)." in await response.text()


async def test_json_is_refused_as_unsupported_media_type(service):
    async with service.client() as client:
        hidden = await get_form(client)
        async with client.post("/", json=dict(hidden, text=COMPLAINT)) as response:
            assert response.status == 415
            assert response.content_type == "text/html"
    assert await stored(service.core) == (0, 0, 0)


async def test_post_without_content_type_is_refused(service):
    async with service.client() as client:
        async with client.post("/", data=b"text=hello", headers={"Content-Type": ""}) as response:
            assert response.status == 415
    assert await stored(service.core) == (0, 0, 0)


async def test_post_without_submission_id_is_a_bad_request(service):
    async with service.client() as client:
        hidden = await get_form(client)
        del hidden["submission_id"]
        async with client.post("/", data=dict(hidden, text=COMPLAINT)) as response:
            assert response.status == 400
            assert "Yêu cầu không hợp lệ." in await response.text()
    assert await stored(service.core) == (0, 0, 0)


async def test_post_with_a_malformed_submission_id_is_a_bad_request(service):
    async with service.client() as client:
        hidden = await get_form(client)
        async with client.post("/", data=dict(hidden, text=COMPLAINT, submission_id="../../etc/passwd")) as response:
            assert response.status == 400
    assert await stored(service.core) == (0, 0, 0)


async def test_form_in_an_unknown_charset_is_a_bad_request_not_a_server_error(service):
    async with service.client() as client:
        body = await a_valid_form(client)
        async with client.post("/", data=body, headers={"Content-Type": f"{FORM}; charset=x-no-such-charset"}) as response:
            assert response.status == 400
    assert await stored(service.core) == (0, 0, 0)


async def test_form_that_is_not_valid_utf8_is_not_a_server_error(service):
    async with service.client() as client:
        body = await a_valid_form(client) + b"&name=%FF%FE%C3"
        async with client.post("/", data=body, headers={"Content-Type": FORM}, allow_redirects=False) as response:
            assert response.status == 303  # undecodable bytes become U+FFFD; the complaint is filed
    assert await stored(service.core) == (1, 1, 0)
