"""The web form end to end: a real service on a free port, an HTTP client acting as a browser."""

from __future__ import annotations

from sqlalchemy import func, select

from storage.models import Complaint, Contact, Event, OutboxMessage
from tests.conftest import get_form

COMPLAINT = "Đèn đường ngõ 12 phố Trần Duy Hưng hỏng ba hôm nay, buổi tối rất tối và nguy hiểm."


async def count(core, model) -> int:
    async with core.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def test_citizen_files_a_complaint_and_reads_its_status(service):
    async with service.client() as client:
        hidden = await get_form(client)
        form = dict(hidden, text=COMPLAINT, area="Cầu Giấy", category="giao-thong", name="Nguyễn Văn An",
                    phone="0912 345 678", email="")
        async with client.post("/", data=form, allow_redirects=False) as response:
            assert response.status == 303
            location = response.headers["Location"]
        assert location.startswith("/track/PA-")
        code = location.split("/track/")[1].split("?")[0]
        async with client.get(location) as response:
            page = await response.text()
            assert response.status == 200
    assert code in page
    assert "Mới tiếp nhận" in page  # status: new
    assert "Bộ phận tiếp nhận" in page  # the default unit
    assert "Thời hạn trả lời dự kiến" in page
    # Personal data never reaches the public page.
    assert "0912" not in page and "Nguyễn Văn An" not in page
    async with service.core.sessions() as session:
        complaint = await session.scalar(select(Complaint).where(Complaint.tracking_code == code))
        contact = await session.get(Contact, complaint.contact_id)
        ack = await session.scalar(select(OutboxMessage).where(OutboxMessage.complaint_id == complaint.id))
        events = (await session.scalars(select(Event.kind).where(Event.complaint_id == complaint.id))).all()
    assert complaint.text == COMPLAINT and complaint.area == "Cầu Giấy" and complaint.category == "giao-thong"
    assert (contact.channel, contact.address) == ("sms", "+84912345678")
    assert ack.channel == "sms" and ack.recipient == "+84912345678" and code in ack.payload["text"]
    assert events == ["created"]


async def test_resubmitting_the_same_form_files_one_complaint(service):
    async with service.client() as client:
        form = dict(await get_form(client), text=COMPLAINT)
        locations = []
        for _ in range(3):
            async with client.post("/", data=form, allow_redirects=False) as response:
                assert response.status == 303
                locations.append(response.headers["Location"])
    assert len(set(locations)) == 1
    assert await count(service.core, Complaint) == 1
