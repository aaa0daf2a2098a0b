"""What operators and browsers rely on besides the form: security headers on every
answer, the health check and the Prometheus metrics."""

from __future__ import annotations

import pytest

from tests.conftest import get_form

COMPLAINT = "Nước sinh hoạt khu tập thể Thành Công bị đục và có mùi lạ từ hôm qua."
CSP = "default-src 'none'"


@pytest.mark.parametrize("path", ["/", "/track", "/track/PA-7KQ4", "/no-such-page", "/api/v1/complaints/x",
                                  "/healthz", "/static/style.css", "/openapi.json", "/open311/v2/services.json"])
async def test_security_headers_on_every_answer(service, path):
    async with service.client() as client, client.get(path, allow_redirects=False) as response:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Security-Policy"].startswith(CSP)
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_security_headers_on_the_redirect_after_filing(service):
    async with service.client() as client:
        form = dict(await get_form(client), text=COMPLAINT)
        async with client.post("/", data=form, allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Content-Security-Policy"].startswith(CSP)


async def test_form_page_is_not_cached(service):
    async with service.client() as client, client.get("/") as response:
        assert response.headers["Cache-Control"] == "no-store"  # it carries a CSRF token


async def test_unknown_page_is_a_404_page_in_the_site_layout(service):
    async with service.client() as client, client.get("/no-such-page") as response:
        assert response.status == 404 and response.content_type == "text/html"
        assert '<meta name="viewport"' in await response.text()


async def test_language_link_on_a_page_at_a_double_slash_path_stays_on_this_site(service):
    # "//evil.example/x" as a link would lead to evil.example; the link must stay local.
    async with service.client() as client, client.get(service.url + "//evil.example/x") as response:
        page = await response.text()
    assert 'href="//evil.example' not in page
    assert 'href="/evil.example/x?lang=en"' in page


async def test_health_check_answers_json_when_the_store_answers(service):
    async with service.client() as client, client.get("/healthz") as response:
        assert response.status == 200 and response.content_type == "application/json"
        assert await response.json() == {"status": "ok", "database": "ok"}


async def test_metrics_count_a_web_complaint(service):
    async with service.client() as client:
        form = dict(await get_form(client), text=COMPLAINT)
        async with client.post("/", data=form, allow_redirects=False) as response:
            assert response.status == 303
        async with client.get("/metrics") as response:
            assert response.status == 200 and response.content_type == "text/plain"
            metrics = await response.text()
    assert 'feedback_intake_complaints_received_total{channel="web"} 1.0' in metrics.splitlines()
    assert "feedback_intake_outbox_messages" in metrics


async def test_metrics_do_not_count_a_refused_form(service):
    async with service.client() as client:
        async with client.post("/", data=dict(await get_form(client), text="")) as response:
            assert response.status == 422
        async with client.get("/metrics") as response:
            metrics = await response.text()
    assert 'feedback_intake_complaints_received_total{channel="web"}' not in metrics


async def test_a_method_the_page_does_not_take_is_405_with_allow(service):
    async with service.client() as client, client.delete("/track/PA-7KQ4-M9XS") as response:
        assert response.status == 405
        assert "GET" in response.headers["Allow"]
