"""/openapi.json describes the HTTP API as this process serves it, and schemathesis holds
the running service to it: generated requests (valid and invalid) against every
operation, with no 5xx and every answer matching the document (status code, content
type, headers, body schema).

schemathesis runs as its own process, as a CI job would run it, against the service on a
real socket; the service keeps serving in this test's event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sqlalchemy import func, select

from service import openapi
from storage.models import Complaint
from tests.conftest import start_service

KEYS = "schemathesis-key-1d9e, other-key-55aa"
CHECKS = ",".join(["not_a_server_error", "status_code_conformance", "content_type_conformance",
                   "response_headers_conformance", "response_schema_conformance"])


@pytest.fixture
async def open311(make_config, clock, monkeypatch) -> AsyncIterator:
    monkeypatch.setenv("OPEN311_API_KEYS", KEYS)
    config = make_config({"open311": {"enabled": True}}, environ={"OPEN311_API_KEYS": KEYS})
    running, runner = await start_service(config, clock=clock)
    yield running
    await runner.cleanup()


async def test_the_document_is_served_and_describes_the_public_api(open311):
    async with aiohttp.ClientSession(open311.url) as client, client.get("/openapi.json") as response:
        assert response.status == 200 and response.content_type == "application/json"
        document = await response.json()
    assert document["openapi"].startswith("3.1")
    assert {"/api/v1/complaints/{code}", "/healthz", "/metrics", "/open311/v2/services.{format}",
            "/open311/v2/requests.{format}", "/open311/v2/requests/{service_request_id}.{format}",
            "/open311/v2/services/{service_code}.{format}", "/open311/v2/discovery.{format}"} <= set(document["paths"])
    post = document["paths"]["/open311/v2/requests.{format}"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/x-www-form-urlencoded"}
    assert post["security"] == [{"open311ApiKey": []}]
    # The citizen's HTML pages are for browsers, not part of the API.
    assert "/" not in document["paths"] and "/track/{code}" not in document["paths"]


def test_open311_and_webhooks_appear_only_when_configured(make_config):
    plain = openapi.document(make_config())
    assert not [path for path in plain["paths"] if path.startswith(("/open311/", "/webhooks/"))]
    environ = {"NHA_MANG_SECRET": "s3cret", "TELEGRAM_BOT_TOKEN": "123:abc", "TELEGRAM_SECRET": "hook-secret",
               "OPEN311_API_KEYS": "k"}
    config = make_config({
        "web": {"public_url": "https://phananh.example.vn"},
        "sms": {"gateways": [{"name": "nha-mang", "kind": "generic", "api_url": "https://sms.example.vn/send",
                              "secret_env": "NHA_MANG_SECRET"}]},
        "telegram": {"enabled": True, "mode": "webhook", "webhook_secret_env": "TELEGRAM_SECRET"},
        "open311": {"enabled": True}}, environ=environ)
    document = openapi.document(config)
    sms = document["paths"]["/webhooks/sms/{gateway}"]["post"]
    assert sms["parameters"][0]["schema"]["enum"] == ["nha-mang"]
    assert "/webhooks/telegram" in document["paths"]
    assert document["servers"] == [{"url": "https://phananh.example.vn"}]
    services = document["components"]["schemas"]["Service"]["properties"]["service_code"]["enum"]
    assert services == [c.slug for c in config.categories]


async def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(open311, tmp_path: Path):
    settings = tmp_path / "schemathesis.toml"
    # The key lets generated requests past the 403 into intake and the listings.
    settings.write_text('[auth.openapi.open311ApiKey]\napi_key = "schemathesis-key-1d9e"\n', encoding="utf-8")
    command = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(settings), "--no-color",
               "run", f"{open311.url}/openapi.json", "--url", open311.url, "--checks", CHECKS,
               "--phases", "examples,coverage,fuzzing", "--max-examples", "60", "--seed", "69", "--workers", "1",
               "--request-timeout", "20", "--suppress-health-check", "all", "--max-failures", "20"]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, SCHEMATHESIS_TELEMETRY="false"))
    output, _ = await asyncio.wait_for(process.communicate(), timeout=480)
    report = output.decode("utf-8", "replace")
    assert process.returncode == 0, report[-12000:]
    assert "passed" in report.lower()
    # It did reach the service: complaints were filed through Open311 by generated requests
    # (the listing shows only those filed as public; the store has them all).
    async with open311.core.sessions() as session:
        filed = await session.scalar(select(func.count()).select_from(Complaint).where(Complaint.channel == "open311"))
    assert filed, "schemathesis filed no request"
    async with aiohttp.ClientSession(open311.url) as client:
        async with client.get("/open311/v2/requests.json", params={"api_key": "other-key-55aa"}) as response:
            assert response.status == 200
            assert all(item["description"] is not None for item in json.loads(await response.text()))
