"""The service with its Zalo channel on, talking to the fake Zalo servers (tests/zalo_fake.py):
configuration, secrets in the environment, the first token pair stored, and helpers to read
back what the store and the fake saw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from bot import credentials
from storage.models import Complaint, Message, OutboxMessage
from tests.conftest import RunningService, merge, start_service
from tests.telegram_fake import eventually
from tests.zalo_fake import APP_ID, APP_SECRET, OA_ID, OA_SECRET, FakeZalo

OA_SECRET_ENV, APP_SECRET_ENV = "ZALO_OA_SECRET", "ZALO_APP_SECRET"
ZALO_ENV = {OA_SECRET_ENV: OA_SECRET, APP_SECRET_ENV: APP_SECRET}
PUBLIC_URL = "http://phananh.example.vn"


def zalo_overrides(fake: FakeZalo, **zalo: object) -> dict:
    """Configuration for a service whose Zalo channel talks to the fake."""
    section = {"enabled": True, "app_id": APP_ID, "oa_id": OA_ID, "oa_secret_env": OA_SECRET_ENV,
               "app_secret_env": APP_SECRET_ENV, "api_base_url": fake.url, "oauth_base_url": fake.url,
               "zns_base_url": fake.url}
    return {"zalo": {**section, **zalo}, "web": {"public_url": PUBLIC_URL}}


@pytest.fixture
def zalo_env(monkeypatch) -> dict[str, str]:
    """The Zalo secrets in the environment, where the service reads them."""
    for name, value in ZALO_ENV.items():
        monkeypatch.setenv(name, value)
    return ZALO_ENV


@dataclass
class ZaloWorld:
    """The running service with its Zalo channel, and the fake Zalo it talks to."""

    service: RunningService
    fake: FakeZalo

    @property
    def core(self):
        return self.service.core

    @property
    def webhook(self) -> str:
        return f"{self.service.url}/webhooks/zalo"

    async def post(self, event: dict, **kw) -> int:
        """Zalo posts a signed event to the service."""
        return await self.fake.post(self.webhook, event, **kw)

    async def count(self, model, *where) -> int:
        async with self.core.sessions() as session:
            return await session.scalar(select(func.count()).select_from(model).where(*where))

    async def messages(self) -> list[Message]:
        async with self.core.sessions() as session:
            return list((await session.scalars(select(Message).where(Message.channel == "zalo")
                                               .order_by(Message.id))).all())

    async def complaints(self) -> list[Complaint]:
        async with self.core.sessions() as session:
            return list((await session.scalars(select(Complaint).order_by(Complaint.id))).all())

    async def outbox(self, *where) -> list[OutboxMessage]:
        async with self.core.sessions() as session:
            return list((await session.scalars(select(OutboxMessage).where(*where).order_by(OutboxMessage.id))).all())

    async def sent_to(self, user: str, count: int = 1, contains: str = "") -> list:
        """Wait until the fake has accepted ``count`` consultation messages to a user (containing a text)."""
        def found():
            return [c for c in self.fake.sent if c.user_id == user and contains in c.text]

        async def enough():
            return len(found()) >= count

        await eventually(enough)
        return found()


async def store_first_pair(core, fake: FakeZalo) -> None:
    """What `feedback-intake zalo set-token` does with the pair the OA's admin obtained."""
    await credentials.store(core, "zalo", {"access_token": fake.access_token, "refresh_token": fake.refresh_token,
                                           "expires_at": None})


@pytest.fixture
async def start_zalo(make_config, fake_zalo, zalo_env, clock):
    """Start the service with Zalo on (extra config merged in); stopped after the test."""
    runners = []

    async def start(extra: dict | None = None, **zalo: object) -> ZaloWorld:
        config = make_config(merge(zalo_overrides(fake_zalo, **zalo), extra or {}), zalo_env)
        running, runner = await start_service(config, clock=clock)
        runners.append(runner)
        await store_first_pair(running.core, fake_zalo)
        return ZaloWorld(running, fake_zalo)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def zalo(start_zalo) -> AsyncIterator[ZaloWorld]:
    """The service with Zalo on, default settings."""
    yield await start_zalo()
