"""Shared parts of the desk's tests (this module holds no tests itself): units and staff,
the running service, signing in as a browser does (the link read from the message the
outbox queued for the person), the forms' hidden fields, and filing complaints.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import aiohttp
import pytest
from sqlalchemy import select

from bot.intake import receive
from contract.messages import Inbound
from storage.models import OutboxMessage, Staff
from tests.conftest import RunningService, merge, start_service

PUBLIC_URL = "http://phananh.example.vn"
UNITS = [{"slug": "tiep-nhan", "name": "Bộ phận tiếp nhận", "name_en": "Reception desk"},
         {"slug": "quan-ly-do-thi", "name": "Phòng Quản lý đô thị", "name_en": "Urban management office"}]
STAFF = [
    {"slug": "nguyen-van-an", "name": "Nguyễn Văn An", "unit": "tiep-nhan", "role": "agent", "telegram_chat_id": 2001},
    {"slug": "le-thi-hoa", "name": "Lê Thị Hoa", "unit": "tiep-nhan", "role": "head", "telegram_chat_id": 2002},
    {"slug": "tran-van-binh", "name": "Trần Văn Bình", "unit": "quan-ly-do-thi", "role": "agent",
     "telegram_chat_id": 3001},
    {"slug": "pham-quan-tri", "name": "Phạm Quản Trị", "unit": "tiep-nhan", "role": "admin",
     "email": "quantri@example.gov.vn"},
]
RULES = {"default_unit": "tiep-nhan",
         "rules": [{"unit": "quan-ly-do-thi", "keywords": ["lấn chiếm vỉa hè", "rác thải"]}]}
DESK_CONFIG = {"units": UNITS, "staff": STAFF, "routing": RULES, "web": {"public_url": PUBLIC_URL}}
HIDDEN = re.compile(r'name="(csrf_token|submission)" value="([^"]*)"')


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden fields of the first form on a page (the anti-forgery token, a submission id)."""
    return dict(HIDDEN.findall(page))


@pytest.fixture
async def desk(make_config, clock) -> AsyncIterator[RunningService]:
    """The service with two units, their staff and an admin, on a free port."""
    running, runner = await start_service(make_config(DESK_CONFIG), clock=clock, run_dispatcher=False,
                                          run_scheduler=False)
    yield running
    await runner.cleanup()


async def start_desk(make_config, clock, extra: dict | None = None, **kwargs):
    """The desk's service with extra configuration; returns (service, runner)."""
    return await start_service(make_config(merge(DESK_CONFIG, extra or {})), clock=clock, **kwargs)


async def latest_link(service: RunningService, slug: str) -> str:
    """The path of the newest sign-in link queued for a staff member."""
    async with service.core.sessions() as session:
        member = await session.scalar(select(Staff).where(Staff.slug == slug))
        rows = (await session.scalars(select(OutboxMessage).where(OutboxMessage.key.like(f"desk-link:{member.id}:%"))
                                      .order_by(OutboxMessage.id.desc()))).all()
    assert rows, f"no sign-in link was queued for {slug}"
    return urlsplit(link_in(rows[0].payload["text"])).path


def link_in(text: str) -> str:
    """The sign-in URL in a message's text."""
    found = re.search(r"https?://\S+/desk/sign-in/\S+", text)
    assert found, f"no sign-in link in {text!r}"
    return found.group(0)


async def ask_for_link(client: aiohttp.ClientSession, who: str) -> int:
    """Ask for a sign-in link as the sign-in page does; the answer's status."""
    async with client.get("/desk/sign-in") as response:
        fields = hidden_fields(await response.text())
    async with client.post("/desk/sign-in", data={**fields, "who": who}, allow_redirects=False) as response:
        return response.status


async def use_link(client: aiohttp.ClientSession, path: str) -> aiohttp.ClientResponse:
    """Open a sign-in link and press its button; the POST's answer (read)."""
    async with client.get(path) as response:
        fields = hidden_fields(await response.text())
    async with client.post(path, data=fields, allow_redirects=False) as response:
        await response.read()
        return response


async def signed_in(service: RunningService, slug: str) -> aiohttp.ClientSession:
    """A browser-like client signed in as a staff member (close it after use)."""
    client = service.client()
    assert await ask_for_link(client, slug) == 200
    response = await use_link(client, await latest_link(service, slug))
    assert response.status == 303, response.status
    assert response.headers["Location"] == "/desk/queue/mine"
    return client


async def page(client: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    """GET a desk page: its status and text (redirects not followed)."""
    async with client.get(path, allow_redirects=False) as response:
        return response.status, await response.text()


async def post_form(client: aiohttp.ClientSession, form_page: str, action: str, **values: str) -> tuple[int, str]:
    """POST a form with the hidden fields of the page it is on; status and Location (or text)."""
    async with client.get(form_page) as response:
        fields = hidden_fields(await response.text())
    async with client.post(action, data={**fields, **values}, allow_redirects=False) as response:
        return response.status, response.headers.get("Location") or await response.text()


async def file_complaint(service: RunningService, text: str, *, channel: str = "sms", sender: str = "+84912345678",
                         at: datetime | None = None, external_id: str | None = None) -> str:
    """File a complaint through intake as a channel would; its tracking code."""
    core = service.core
    result = await receive(core, Inbound(channel=channel, external_id=external_id, sender=sender, text=text,
                                         received_at=at or core.clock.now()))
    return result.tracking_code


@dataclass
class Browser:
    """Clients signed in as each staff member of the tests' configuration."""

    agent: aiohttp.ClientSession
    head: aiohttp.ClientSession
    other: aiohttp.ClientSession
    admin: aiohttp.ClientSession

    async def close(self) -> None:
        for client in (self.agent, self.head, self.other, self.admin):
            await client.close()
