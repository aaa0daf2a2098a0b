"""Tests for the configuration: the reference file, the errors an operator reads, secrets.

The reference file is tested as what it promises to be: the built-in defaults exactly,
every key documented, and its commented-out examples a working configuration once
uncommented. Errors are tested by the key they name, because that is what an operator
looks for; `check-config` is run as the real command in its own process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import typing
from datetime import date
from pathlib import Path

import pytest
from pydantic import BaseModel

from service.config import Config, ConfigError, load_config, parse_config, secret, secret_values

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
# A commented-out setting or table header, as opposed to prose: "# key = value", "# [[staff]]".
COMMENTED_SETTING = re.compile(r"^# (\[\[?[a-z0-9_.]+\]\]?|[a-z_][a-z0-9_]* = .*)$")
TWILIO = {"name": "twilio", "kind": "twilio", "number": "+84912345678", "secret_env": "TWILIO_AUTH_TOKEN",
          "account_sid": "AC" + "0123456789abcdef" * 2}


def uncommented_example() -> str:
    """The reference file with its commented-out example settings switched on."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    return "\n".join(line[2:] if COMMENTED_SETTING.match(line) else line for line in lines) + "\n"


def env_names(text: str) -> dict[str, str]:
    """An environment that sets every variable a configuration text names."""
    names = re.findall(r'^\s*(?:#\s*)?[a-z_]+_env\s*=\s*"([A-Z0-9_]+)"', text, flags=re.MULTILINE)
    return {name: f"value-of-{name.lower()}-0123456789" for name in names}


def problems(data: dict, environ: dict | None = None) -> list[str]:
    """The problems parse_config reports for data (the test fails if there are none)."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ or {})
    assert caught.value.problems, "a ConfigError must list its problems"
    return caught.value.problems


def problems_for_file(tmp_path: Path, text: str, environ: dict | None = None) -> list[str]:
    path = tmp_path / "feedback.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return caught.value.problems


def one_problem_starting(found: list[str], prefix: str) -> str:
    matching = [p for p in found if p.startswith(prefix)]
    assert matching, f"no problem starts with {prefix!r}: {found}"
    return matching[0]


def model_keys(model: type[BaseModel], prefix: str = "") -> typing.Iterator[tuple[str, type[BaseModel] | None, bool]]:
    """Every key of the model as (dotted path, nested model or None, whether it is a list of tables)."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        nested = next((a for a in (annotation, *typing.get_args(annotation))
                       if isinstance(a, type) and issubclass(a, BaseModel)), None)
        yield path, nested, nested is not None and typing.get_origin(annotation) is list
        if nested is not None:
            # A table of tables by name ([zalo.zns_templates.<kind>]): its keys under any name.
            yield from model_keys(nested, path + (".*." if typing.get_origin(annotation) is dict else "."))


def lookup(data: dict, path: str) -> list:
    """The values at a dotted path; a list of tables contributes each of its entries."""
    values = [data]
    for part in path.split("."):
        found = []
        for value in values:
            items = value if isinstance(value, list) else [value]
            if part == "*":
                found += [v for item in items if isinstance(item, dict) for v in item.values()]
                continue
            found += [item[part] for item in items if isinstance(item, dict) and part in item]
        values = found
    return values


# ------------------------------------------------------------------------- the reference file

def test_the_example_file_is_exactly_the_builtin_defaults():
    assert load_config(EXAMPLE, {}).model_dump() == load_config(None, {}).model_dump() == Config().model_dump()


def test_every_key_appears_in_the_example_file():
    text = uncommented_example()
    data = tomllib.loads(text)
    missing = [path for path, _, _ in model_keys(Config) if not lookup(data, path)]
    assert not missing, f"keys not documented in config.example.toml: {missing}"


def test_the_commented_out_examples_are_a_valid_configuration():
    text = uncommented_example()
    config = parse_config(tomllib.loads(text), env_names(text))
    # They show each list table, and each kind of SMS gateway.
    assert config.staff and config.routing.rules and len(config.units) > 1
    assert {g.kind for g in config.sms.gateways} == {"twilio", "android", "generic"}
    assert config.deadlines.overrides
    assert config.web.csrf_secret_env and config.email.relay_password_env and config.telegram.webhook_secret_env


def test_every_key_has_a_comment_paragraph_before_it():
    lines = uncommented_example().splitlines()
    table, seen, bare = "", set(), []
    for number, line in enumerate(lines):
        header = re.match(r"^\[\[?([a-z0-9_.]+)\]\]?$", line)
        setting = re.match(r"^([a-z_][a-z0-9_]*) = ", line)
        if header:
            table = header[1]
        if not setting:
            continue
        key = f"{table}.{setting[1]}"
        if key not in seen and not lines[number - 1].startswith("#"):
            bare.append(key)
        seen.add(key)
    assert not bare, f"keys without a comment right above their first appearance: {bare}"


def test_the_example_file_has_no_secret_values():
    text = EXAMPLE.read_text(encoding="utf-8")
    for line in text.splitlines():
        match = re.match(r"^#? ?([a-z_]*(?<![a-z])(?:token|password|secret|keys?)(?![a-z])[a-z_]*) = ", line)
        if match:
            assert match[1].endswith("_env"), f"{match[1]} in the example holds a secret, not a variable name"


# ------------------------------------------------------------------------- unknown keys and types

@pytest.mark.parametrize("text, expected", [
    ('bogus = 1\n', "bogus: unknown key"),
    ('[web]\nbogus = 1\n', "web.bogus: unknown key"),
    ('[web]\nprot = 8080\n', "web.prot: unknown key (did you mean 'port'?)"),
    ('[[sms.gateways]]\nname = "twilio"\nkind = "twilio"\nnumber = "+84912345678"\n'
     'secret_env = "TWILIO_AUTH_TOKEN"\naccount_sid = "AC0123456789abcdef0123456789abcdef"\nbogus = 1\n',
     "sms.gateways[0].bogus: unknown key"),
    ('[[routing.rules]]\nunit = "tiep-nhan"\nkeywords = ["rác"]\nkeyword = ["x"]\n',
     "routing.rules[0].keyword: unknown key (did you mean 'keywords'?)"),
])
def test_an_unknown_key_is_named(tmp_path, text, expected):
    assert expected in problems_for_file(tmp_path, text)


@pytest.mark.parametrize("text, key", [
    ('[web]\nport = "8080"\n', "web.port: must be a valid integer (got '8080')"),
    ('[web]\nport = 70000\n', "web.port: must be less than or equal to 65535"),
    ('[email]\nenabled = "yes"\n', "email.enabled: must be a valid boolean (got 'yes')"),
    ('[email]\naccept_domains = "feedback.example.gov.vn"\n', "email.accept_domains: must be a valid list"),
    ('[deadlines]\nworking_days = [1, 2, 8]\n', "deadlines.working_days[2]: must be less than or equal to 7"),
    ('[deadlines]\nfirst_response_hours = "16"\n', "deadlines.first_response_hours: must be a valid number"),
    ('sms = []\n', "sms: must be a table"),
    ('[units]\nslug = "x"\nname = "X"\n', "units: must be a list of tables: write [[units]]"),
    ('[[staff]]\nslug = "a"\nname = "A"\nunit = "tiep-nhan"\ntelegram_chat_id = "12345"\n',
     "staff[0].telegram_chat_id: must be a valid integer"),
    ('[[staff]]\nslug = "a"\nname = "A"\nunit = "tiep-nhan"\nrole = "boss"\n',
     "staff[0].role: must be 'agent', 'head' or 'admin' (got 'boss')"),
    ('[[sms.gateways]]\nname = "x"\nsecret_env = "X"\n', "sms.gateways[0].kind: required key is missing"),
    ('[service]\ntracking_prefix = "pa"\n', "service.tracking_prefix: must be 1 to 4 capital letters"),
    ('[service]\ntimezone = "Asia/Hanoi_City"\n', "service.timezone: unknown time zone 'Asia/Hanoi_City'"),
])
def test_a_wrong_type_or_value_is_named(tmp_path, text, key):
    found = problems_for_file(tmp_path, text)
    assert any(p.startswith(key) for p in found), found


def test_every_problem_is_reported_at_once(tmp_path):
    found = problems_for_file(tmp_path, '[web]\nport = "x"\nbogus = 1\n[email]\nport = -1\n[outbox]\nbatch_size = 0\n')
    for key in ("web.port:", "web.bogus:", "email.port:", "outbox.batch_size:"):
        one_problem_starting(found, key)


def test_numbers_take_integers_where_a_fraction_is_allowed(tmp_path):
    path = tmp_path / "feedback.toml"
    path.write_text("[scheduler]\nsweep_seconds = 30\n[deadlines]\nfirst_response_hours = 8\n", encoding="utf-8")
    config = load_config(path, {})
    assert config.scheduler.sweep_seconds == 30.0 and config.deadlines.first_response_hours == 8.0


def test_days_may_be_toml_dates_or_quoted(tmp_path):
    path = tmp_path / "feedback.toml"
    path.write_text('[deadlines]\nextra_days_off = [2026-02-16, "2026-02-20"]\n'
                    'extra_working_days = [2026-02-28]\nholidays_country = ""\n', encoding="utf-8")
    deadlines = load_config(path, {}).deadlines
    assert deadlines.extra_days_off == [date(2026, 2, 16), date(2026, 2, 20)]
    assert deadlines.extra_working_days == [date(2026, 2, 28)]
    assert deadlines.holidays_country is None


# ------------------------------------------------------------------------- secrets

def test_a_missing_secret_names_the_key_and_the_variable():
    found = problems({"sms": {"gateways": [TWILIO]}})
    assert found == ["sms.gateways[0].secret_env: environment variable TWILIO_AUTH_TOKEN is not set"]


def test_a_secret_that_is_set_passes():
    config = parse_config({"sms": {"gateways": [TWILIO]}}, {"TWILIO_AUTH_TOKEN": "0123456789abcdef"})
    assert secret(config.sms.gateways[0].secret_env, {"TWILIO_AUTH_TOKEN": "0123456789abcdef"}) == "0123456789abcdef"


def test_an_empty_secret_counts_as_missing():
    assert problems({"sms": {"gateways": [TWILIO]}}, {"TWILIO_AUTH_TOKEN": ""})


def test_secrets_of_features_that_are_on_are_all_checked():
    found = problems({"telegram": {"enabled": True, "mode": "webhook", "webhook_secret_env": "TG_SECRET",
                                   "api_base_url": "http://127.0.0.1:8081/bot"},
                      "open311": {"enabled": True},
                      "email": {"enabled": True, "relay_username_env": "SMTP_USER", "relay_password_env": "SMTP_PASS"},
                      "web": {"csrf_secret_env": "CSRF_KEY"}})
    assert sorted(found) == sorted([
        "web.csrf_secret_env: environment variable CSRF_KEY is not set",
        "email.relay_username_env: environment variable SMTP_USER is not set",
        "email.relay_password_env: environment variable SMTP_PASS is not set",
        "telegram.token_env: environment variable TELEGRAM_BOT_TOKEN is not set",
        "telegram.webhook_secret_env: environment variable TG_SECRET is not set",
        "open311.api_keys_env: environment variable OPEN311_API_KEYS is not set",
    ])


def test_secrets_of_features_that_are_off_are_not_needed():
    config = parse_config({"telegram": {"enabled": False}, "open311": {"enabled": False}}, {})
    assert config.telegram.token_env == "TELEGRAM_BOT_TOKEN"


def test_a_telegram_webhook_secret_must_follow_telegrams_rule():
    data = {"telegram": {"enabled": True, "mode": "webhook", "webhook_secret_env": "TG_SECRET",
                         "api_base_url": "http://127.0.0.1:8081/bot"}}
    found = problems(data, {"TELEGRAM_BOT_TOKEN": "123:abc", "TG_SECRET": "not allowed: spaces!"})
    problem = one_problem_starting(found, "telegram.webhook_secret_env:")
    assert "not allowed" not in problem, "the secret's value must never be echoed"


def test_a_secret_pasted_where_its_variable_name_belongs_is_refused_and_not_echoed():
    token = "f3a9c2d1e8b74a6f9c0d1e2f3a4b5c6d"
    found = problems({"sms": {"gateways": [dict(TWILIO, secret_env=token)]}})
    problem = one_problem_starting(found, "sms.gateways[0].secret_env:")
    assert token not in problem and "NAME of an environment variable" in problem


def test_secret_values_returns_what_the_logs_must_redact():
    environ = {"TWILIO_AUTH_TOKEN": "twilio-token-value", "TELEGRAM_BOT_TOKEN": "123456:telegram-token",
               "OPEN311_API_KEYS": "key-one, key-two,", "UNRELATED": "not-a-secret"}
    config = parse_config({"sms": {"gateways": [TWILIO]},
                           "storage": {"url": "postgresql+asyncpg://feedback:db-password@db.internal/feedback"}},
                          environ)
    values = secret_values(config, environ)
    assert set(values) == {"twilio-token-value", "123456:telegram-token", "key-one", "key-two", "db-password"}


def test_secret_values_skips_unset_variables():
    assert secret_values(load_config(None, {}), {}) == []


# ------------------------------------------------------------------------- references

def test_a_staff_member_of_an_unknown_unit_is_named():
    found = problems({"staff": [{"slug": "an", "name": "An", "unit": "phong-khong-co"}]})
    assert found == ["staff[0].unit: no unit 'phong-khong-co' in [[units]]"]


def test_a_missing_default_unit_is_named():
    found = problems({"units": [{"slug": "ubnd", "name": "UBND"}]})
    assert found == ["routing.default_unit: no unit 'tiep-nhan' in [[units]]"]


def test_a_rule_for_an_unknown_unit_or_category_is_named():
    found = problems({"routing": {"rules": [{"unit": "tiep-nhan", "keywords": ["rác"]},
                                            {"unit": "ve-sinh", "categories": ["moi-truong", "cay-xanh"]}]}})
    assert sorted(found) == ["routing.rules[1].categories[1]: no category 'cay-xanh' in [[categories]]",
                             "routing.rules[1].unit: no unit 've-sinh' in [[units]]"]


def test_duplicate_slugs_name_both_entries():
    found = problems({"units": [{"slug": "tiep-nhan", "name": "A"}, {"slug": "tiep-nhan", "name": "B"}],
                      "staff": [{"slug": "an", "name": "An", "unit": "tiep-nhan", "telegram_chat_id": 5},
                                {"slug": "binh", "name": "Bình", "unit": "tiep-nhan", "telegram_chat_id": 5}]})
    assert "units[1].slug: unit 'tiep-nhan' is already used by units[0]" in found
    assert "staff[1].telegram_chat_id: chat id 5 is already used by staff[0]" in found


def test_a_rule_without_conditions_is_refused():
    found = problems({"routing": {"rules": [{"unit": "tiep-nhan"}]}})
    assert one_problem_starting(found, "routing.rules[0]: a rule needs keywords")


@pytest.mark.parametrize("keywords", [[""], ["  "], ["rác", "!!!"]])
def test_a_keyword_that_can_never_match_is_refused(keywords):
    found = problems({"routing": {"rules": [{"unit": "tiep-nhan", "keywords": keywords}]}})
    one_problem_starting(found, f"routing.rules[0].keywords[{len(keywords) - 1}]:")


def test_a_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "feedback.toml"
    path.write_text('[service]\nname = "Cổng phản ánh"\n', encoding="utf-8-sig")
    assert load_config(path, {}).service.name == "Cổng phản ánh"


def test_a_rule_names_only_known_channels():
    found = problems({"routing": {"rules": [{"unit": "tiep-nhan", "channels": ["sms", "fax"]}]}})
    assert one_problem_starting(found, "routing.rules[0].channels[1]: unknown channel 'fax'")


# ------------------------------------------------------------------------- values an operator gets wrong

@pytest.mark.parametrize("url", ["phananh.hanoi.gov.vn", "ftp://phananh.hanoi.gov.vn", "https://",
                                 "https://phananh.hanoi.gov.vn/track/", "https://phananh.hanoi.gov.vn/index.html",
                                 "https://phananh.hanoi.gov.vn/?lang=en", "https://phananh.hanoi.gov.vn/#form",
                                 "https://admin:hunter2@phananh.hanoi.gov.vn", "https://phananh.hanoi.gov.vn:99999",
                                 "https://phananh.hanoi.gov.vn /"])
def test_a_public_url_that_is_not_a_base_address_is_refused(url):
    problem = one_problem_starting(problems({"web": {"public_url": url}}), "web.public_url:")
    assert "hunter2" not in problem


@pytest.mark.parametrize("url, kept", [("https://phananh.hanoi.gov.vn", "https://phananh.hanoi.gov.vn"),
                                       ("https://phananh.hanoi.gov.vn/", "https://phananh.hanoi.gov.vn"),
                                       ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
                                       ("https://hanoi.gov.vn/phan-anh/", "https://hanoi.gov.vn/phan-anh")])
def test_a_public_url_is_kept_without_a_trailing_slash(url, kept):
    assert parse_config({"web": {"public_url": url}}, {}).web.public_url == kept


@pytest.mark.parametrize("domains, expected", [
    ([], "email.accept_domains: must list at least one domain"),
    (["Feedback.Hanoi.gov.vn"], "email.accept_domains[0]: must be lowercase: write 'feedback.hanoi.gov.vn'"),
    (["hanoi.gov.vn", "phananh@hanoi.gov.vn"], "email.accept_domains[1]: 'phananh@hanoi.gov.vn' is not a domain"),
    (["hanoi.gov.vn", "hanoi.gov.vn"], "email.accept_domains[1]: 'hanoi.gov.vn' is already listed"),
    ([""], "email.accept_domains[0]:"),
])
def test_accept_domains_must_be_lowercase_domain_names(domains, expected):
    one_problem_starting(problems({"email": {"accept_domains": domains}}), expected)


def test_a_from_address_must_be_an_address():
    one_problem_starting(problems({"email": {"from_address": "Phản ánh <phananh@hanoi.gov.vn>"}}),
                         "email.from_address:")


def test_a_twilio_gateway_may_leave_api_url_to_the_default():
    config = parse_config({"sms": {"gateways": [TWILIO]}}, {"TWILIO_AUTH_TOKEN": "x" * 32})
    assert config.sms.gateways[0].api_url == ""
    assert config.sms.gateways[0].base_url == "https://api.twilio.com"


@pytest.mark.parametrize("gateway, expected", [
    ({"account_sid": ""}, "sms.gateways[0].account_sid: required for a Twilio gateway"),
    ({"account_sid": "SK0123456789abcdef0123456789abcdef"}, "sms.gateways[0].account_sid: must be the 34-character"),
    ({"number": ""}, "sms.gateways[0].number: required for a Twilio gateway"),
    ({"number": "0912 345 678"}, "sms.gateways[0].number: must be an E.164 number"),
    ({"kind": "android", "account_sid": ""}, "sms.gateways[0].api_url: required for kind 'android'"),
    ({"kind": "generic", "account_sid": ""}, "sms.gateways[0].api_url: required for kind 'generic'"),
    ({"kind": "generic", "api_url": "https://sms.example.vn/send"}, "sms.gateways[0].account_sid: only used by"),
    ({"api_url": "api.twilio.com"}, "sms.gateways[0].api_url: must be an http:// or https:// URL"),
    ({"name": "Twilio VN"}, "sms.gateways[0].name: must be a short identifier"),
])
def test_an_sms_gateway_has_what_its_kind_needs(gateway, expected):
    one_problem_starting(problems({"sms": {"gateways": [dict(TWILIO, **gateway)]}}, {"TWILIO_AUTH_TOKEN": "x"}),
                         expected)


@pytest.mark.parametrize("kind, api_url", [("android", "http://192.168.1.50:8080"),
                                           ("generic", "https://sms.example.vn/api/v1/send?format=json")])
def test_android_and_generic_gateways_with_an_api_url_pass(kind, api_url):
    gateway = {"name": kind, "kind": kind, "api_url": api_url, "secret_env": "SMS_SECRET"}
    assert parse_config({"sms": {"gateways": [gateway]}}, {"SMS_SECRET": "s" * 32}).sms.gateways[0].kind == kind


def test_gateway_names_are_unique():
    found = problems({"sms": {"gateways": [TWILIO, TWILIO]}}, {"TWILIO_AUTH_TOKEN": "x"})
    assert "sms.gateways[1].name: gateway name 'twilio' is already used by sms.gateways[0]" in found


@pytest.mark.parametrize("url", ["api.telegram.org/bot", "ftp://api.telegram.org/bot", "https://api.telegram.org"])
def test_the_telegram_api_base_url_is_an_http_url_the_token_fits(url):
    one_problem_starting(problems({"telegram": {"api_base_url": url}}), "telegram.api_base_url:")


def test_a_telegram_webhook_needs_https_on_a_port_telegram_calls():
    environ = {"TELEGRAM_BOT_TOKEN": "123:abc", "TG_SECRET": "s3cret-token"}
    telegram = {"enabled": True, "mode": "webhook", "webhook_secret_env": "TG_SECRET"}
    for url in ("http://phananh.hanoi.gov.vn", "https://phananh.hanoi.gov.vn:8080"):
        one_problem_starting(problems({"telegram": telegram, "web": {"public_url": url}}, environ), "web.public_url:")
    assert parse_config({"telegram": telegram, "web": {"public_url": "https://phananh.hanoi.gov.vn"}}, environ)
    # A local Bot API server calls any address.
    local = dict(telegram, api_base_url="http://127.0.0.1:8081/bot")
    assert parse_config({"telegram": local, "web": {"public_url": "http://127.0.0.1:8080"}}, environ)


def test_a_telegram_webhook_without_a_secret_is_refused():
    found = problems({"telegram": {"enabled": True, "mode": "webhook", "api_base_url": "http://127.0.0.1:1/bot"}},
                     {"TELEGRAM_BOT_TOKEN": "123:abc"})
    assert "telegram.webhook_secret_env: required when telegram.mode is 'webhook'" in found


def test_relay_login_needs_both_halves():
    one_problem_starting(problems({"email": {"relay_username_env": "SMTP_USER"}}), "email.relay_password_env:")


@pytest.mark.parametrize("deadlines, expected", [
    ({"working_hours": ["08:00-12:00", "11:30-17:00"]}, "deadlines.working_hours[1]: '11:30-17:00' overlaps"),
    ({"working_hours": ["8h-12h"]}, "deadlines.working_hours[0]: '8h-12h' is not of the form HH:MM-HH:MM"),
    ({"working_hours": ["13:00-12:00"]}, "deadlines.working_hours[0]: '13:00-12:00' must end after it starts"),
    ({"working_hours": []}, "deadlines.working_hours: must list at least one interval"),
    ({"working_days": [1, 1, 2]}, "deadlines.working_days: lists a weekday twice"),
    ({"holidays_country": "XX"}, "deadlines.holidays_country: 'XX' is not a country code"),
    ({"resolution_hours": 4.0}, "deadlines.resolution_hours: (4) must not be shorter than first_response_hours"),
    ({"urgent": {"first_response_hours": 6.0}},
     "deadlines.urgent.resolution_hours: (4) must not be shorter than first_response_hours"),
    ({"complex": {"resolution_hours": 4.0}},
     "deadlines.complex.resolution_hours: (4) must not be shorter than first_response_hours"),
    ({"extra_days_off": [date(2026, 2, 21)], "extra_working_days": [date(2026, 2, 21)]},
     "deadlines.extra_working_days: 2026-02-21 is also in extra_days_off"),
    ({"extra_days_off": ["21/02/2026"]}, "deadlines.extra_days_off[0]: must be a date like 2026-09-02"),
])
def test_deadline_settings_that_cannot_work_are_refused(deadlines, expected):
    one_problem_starting(problems({"deadlines": deadlines}), expected)


@pytest.mark.parametrize("override, expected", [
    ({"first_response_hours": 4.0}, "deadlines.overrides[0]: an override needs a unit, a category or both"),
    ({"category": "dien-nuoc"}, "deadlines.overrides[0]: an override needs first_response_hours"),
    ({"category": "nuoc-sach", "first_response_hours": 4.0},
     "deadlines.overrides[0].category: no category 'nuoc-sach' in [[categories]]"),
    ({"unit": "dien-luc", "first_response_hours": 4.0}, "deadlines.overrides[0].unit: no unit 'dien-luc' in [[units]]"),
    ({"category": "dien-nuoc", "first_response_hours": 100.0},
     "deadlines.overrides[0].resolution_hours: (80, with defaults filled in) must not be shorter"),
    ({"category": "dien-nuoc", "first_response_hours": 0}, "deadlines.overrides[0].first_response_hours: must be greater"),
])
def test_a_deadline_override_must_say_what_it_changes_and_for_what(override, expected):
    one_problem_starting(problems({"deadlines": {"overrides": [override]}}), expected)


def test_two_deadline_overrides_for_the_same_scope_are_refused():
    override = {"category": "dien-nuoc", "first_response_hours": 4.0}
    found = problems({"deadlines": {"overrides": [override, override]}})
    assert "deadlines.overrides[1]: covers the same unit and category as overrides[0]" in found


@pytest.mark.parametrize("schedule", ["0 8 * *", "0 25 * * *", "0 8 * * 1-9", "0 8 * * 5-1", "*/0 8 * * *", "daily"])
def test_a_digest_schedule_must_be_a_crontab_expression(schedule):
    one_problem_starting(problems({"digests": {"schedule": schedule}}), "digests.schedule:")


@pytest.mark.parametrize("schedule", ["0 8 * * 1-5", "30 7 * * mon-fri", "0 8,17 1 * *", "*/15 * * * 0,7", "0 8 * jan-dec *"])
def test_ordinary_digest_schedules_pass(schedule):
    assert parse_config({"digests": {"schedule": schedule}}, {}).digests.schedule.expression == schedule


def test_backoff_cap_is_not_below_its_base():
    one_problem_starting(problems({"outbox": {"backoff_base_seconds": 60.0, "backoff_max_seconds": 30.0}}),
                         "outbox.backoff_max_seconds:")


# ------------------------------------------------------------------------- reading the file

def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path):
    found = problems_for_file(tmp_path, '[web]\nport = 8080\nhost = "127.0.0.1\n')
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'feedback.toml'}: not valid TOML") and "line 3" in found[0]


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nowhere.toml", {})
    assert caught.value.problems == [f"{tmp_path / 'nowhere.toml'}: cannot read: No such file or directory"]


def test_a_file_not_in_utf8_is_named(tmp_path):
    path = tmp_path / "feedback.toml"
    path.write_bytes('[service]\nname = "Cổng"\n'.encode("utf-16"))  # a Windows editor's "Unicode"
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.problems[0].startswith(f"{path}: not UTF-8")


# ------------------------------------------------------------------------- the check-config command

def check_config(path: Path, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `feedback-intake check-config` with only the given environment."""
    script = Path(sys.executable).with_name("feedback-intake")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", **(environ or {})}
    return subprocess.run([*command, "check-config", str(path)], capture_output=True, text=True, env=env,
                          cwd=path.parent, timeout=60)


def test_check_config_says_ok_for_a_good_file(tmp_path):
    path = tmp_path / "feedback.toml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    result = check_config(path)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_check_config_checks_secrets_in_its_own_environment(tmp_path):
    path = tmp_path / "feedback.toml"
    path.write_text(uncommented_example(), encoding="utf-8")
    environ = env_names(uncommented_example())
    assert check_config(path, environ).stdout.strip() == "ok"
    del environ["TWILIO_AUTH_TOKEN"]
    result = check_config(path, environ)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "sms.gateways[0].secret_env: environment variable TWILIO_AUTH_TOKEN is not set"]


def test_check_config_prints_every_problem_and_fails_for_a_bad_file(tmp_path):
    path = tmp_path / "feedback.toml"
    path.write_text('[web]\nport = "eighty"\nbogus = 1\n[[staff]]\nslug = "an"\nname = "An"\nunit = "tiep-nhan"\n'
                    'role = "boss"\n', encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 1
    assert "ok" not in result.stdout.split()
    lines = result.stdout.splitlines()
    for key in ("web.port:", "web.bogus: unknown key", "staff[0].role:"):
        one_problem_starting(lines, key)


def test_check_config_names_the_file_with_a_syntax_error(tmp_path):
    path = tmp_path / "feedback.toml"
    path.write_text("[web\nport = 8080\n", encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{path}: not valid TOML")


def test_a_desk_open_around_the_clock_is_a_valid_configuration():
    config = parse_config({"deadlines": {"working_hours": ["00:00-24:00"], "working_days": [1, 2, 3, 4, 5, 6, 7]}}, {})
    assert config.deadlines.working_hours.texts() == ["00:00-24:00"]
    one_problem_starting(problems({"deadlines": {"working_hours": ["00:00-24:30"]}}),
                         "deadlines.working_hours[0]: '00:00-24:30' is not of the form HH:MM-HH:MM")
