"""The SMS keys of the configuration: what each gateway kind accepts, and secrets that must be set."""

from __future__ import annotations

import pytest

from service.app import build_app
from service.config import ConfigError, parse_config

ANDROID = {"name": "android", "kind": "android", "api_url": "http://192.168.1.50:8080", "secret_env": "SIGNING_KEY"}


def problems(data: dict, environ: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ)
    return caught.value.problems


def test_the_android_login_defaults_to_the_apps_own():
    gateway = parse_config({"sms": {"gateways": [ANDROID]}}, {"SIGNING_KEY": "k" * 16}).sms.gateways[0]
    assert (gateway.api_username, gateway.api_password_env) == ("sms", "SIGNING_KEY")
    gateway = parse_config({"sms": {"gateways": [dict(ANDROID, username="x9Kp2", password_env="APP_PASSWORD")]}},
                           {"SIGNING_KEY": "k" * 16, "APP_PASSWORD": "p" * 16}).sms.gateways[0]
    assert (gateway.api_username, gateway.api_password_env) == ("x9Kp2", "APP_PASSWORD")


def test_the_apps_password_variable_must_be_set():
    found = problems({"sms": {"gateways": [dict(ANDROID, password_env="APP_PASSWORD")]}}, {"SIGNING_KEY": "k"})
    assert found == ["sms.gateways[0].password_env: environment variable APP_PASSWORD is not set"]


@pytest.mark.parametrize("kind, extra", [("generic", {"api_url": "https://sms.example.vn/send"}),
                                         ("twilio", {"number": "+84241234567", "account_sid": "AC" + "0" * 32})])
@pytest.mark.parametrize("key, value", [("username", "sms"), ("password_env", "APP_PASSWORD")])
def test_the_android_login_is_only_for_android(kind, extra, key, value):
    gateway = dict({"name": "gw", "kind": kind, "secret_env": "SECRET"}, **extra, **{key: value})
    found = problems({"sms": {"gateways": [gateway]}}, {"SECRET": "s", "APP_PASSWORD": "p"})
    assert f"sms.gateways[0].{key}: only used by kind 'android' (the app's API login)" in found


def test_a_user_name_that_would_break_basic_auth_is_refused():
    found = problems({"sms": {"gateways": [dict(ANDROID, username="sms:admin")]}}, {"SIGNING_KEY": "k"})
    assert found == ["sms.gateways[0].username: must be the app's user name, without spaces or ':'"]


@pytest.mark.parametrize("key, value", [("max_segments", 0), ("max_segments", 11), ("max_body_bytes", 100),
                                        ("signature_max_age_seconds", 1), ("max_segments", "4")])
def test_sms_limits_are_checked(key, value):
    found = problems({"sms": {key: value}}, {})
    assert len(found) == 1 and found[0].startswith(f"sms.{key}:")


def test_the_service_will_not_start_without_a_gateways_secret(make_config, monkeypatch):
    config = make_config({"sms": {"gateways": [ANDROID]}}, {"SIGNING_KEY": "k" * 16})
    monkeypatch.delenv("SIGNING_KEY", raising=False)
    expected = r"sms.gateways\[0\].secret_env: environment variable SIGNING_KEY is not set"
    with pytest.raises(RuntimeError, match=expected):
        build_app(config)
