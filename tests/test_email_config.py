"""The email section's own checks: what would make the channel silently wrong is refused
at load, naming the key."""

from __future__ import annotations

import pytest

from service.config import ConfigError, parse_config


def problems(email: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config({"email": email}, {})
    return caught.value.problems


def test_replies_must_come_back_to_this_server():
    assert problems({"enabled": True, "accept_domains": ["phananh.hanoi.gov.vn"]}) == [
        "email.from_address: must be at one of accept_domains, so that citizens' replies come back to this "
        "server; 'feedback.example.gov.vn' is not listed"]
    parse_config({"email": {"enabled": False, "accept_domains": ["phananh.hanoi.gov.vn"]}}, {})  # off: no matter


def test_attachment_types_are_media_types():
    assert problems({"attachment_types": ["image/jpeg", "JPEG", "image/*", ".exe"]}) == [
        "email.attachment_types[1]: 'JPEG' is not a lowercase media type such as 'image/jpeg' or 'image/*'",
        "email.attachment_types[3]: '.exe' is not a lowercase media type such as 'image/jpeg' or 'image/*'"]


def test_a_ca_file_must_exist(tmp_path):
    [problem] = problems({"relay_ca_file": str(tmp_path / "missing.pem")})
    assert problem.startswith("email.relay_ca_file: no file ")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert parse_config({"email": {"relay_ca_file": str(tmp_path / "ca.pem")}}, {}).email.relay_ca_file


@pytest.mark.parametrize("key, value", [("rate_limit_messages", -1), ("rate_limit_window_seconds", 0),
                                        ("max_attachments", -1), ("max_attachment_bytes", 0)])
def test_limits_are_positive(key, value):
    [problem] = problems({key: value})
    assert problem.startswith(f"email.{key}: ")
