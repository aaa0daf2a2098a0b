"""Tests for logging: masking of phones and e-mails, secrets, and one line per event."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from bot.logs import (MaskingFormatter, _render_value, configure_logging, mask_email, mask_personal_data,
                      mask_phone)

PHONE = "+84912345678"
MASKED_PHONE = "+84 91* *** 678"
LINE_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@pytest.fixture(autouse=True)
def restore_logging():
    """Put the root logger back as it was, so tests do not leak handlers into each other."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    # Only handlers configure_logging() installed: pytest's own come and go per test phase.
    for handler in list(root.handlers):
        if handler not in handlers and type(handler).__module__ == "bot.logs":
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def output():
    """A StringIO that configure_logging() writes to, with DEBUG on and two secrets."""
    stream = io.StringIO()
    configure_logging("DEBUG", secrets=["s3cr3t-gateway-key", "123456:ABC-bot-token", "abc", ""],
                      stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[str]:
    """The lines written to ``stream`` so far."""
    return stream.getvalue().splitlines()


# --- mask_phone, mask_email ------------------------------------------------------------------


MASK_PHONE = [
    ("+84912345678", "+84 91* *** 678"),
    ("0912345678", "091* *** 678"),
    ("+84 912 345 678", "+84 91* *** 678"),
    ("0912.345.678", "091* *** 678"),
    ("0912-345-678", "091* *** 678"),
    ("(+84) 912 345 678", "+84 91* *** 678"),
    ("0084912345678", "+84 91* *** 678"),
    ("02838234567", "028* **** 567"),
    ("(028) 3823 4567", "028* **** 567"),
    ("+14155552671", "+1 41* **** 671"),
    ("+442071838750", "+44 20* **** 750"),
    ("+8613812345678", "+86 13* ***** 678"),
    ("12345", "***45"),
    ("", "***"),
    ("không có", "***"),
]


@pytest.mark.parametrize("number, masked", MASK_PHONE)
def test_mask_phone(number, masked):
    assert mask_phone(number) == masked


@pytest.mark.parametrize("address, masked", [
    ("nguyen.van.a@example.com", "n***@example.com"),
    ("a@hanoi.gov.vn", "a***@hanoi.gov.vn"),
    ("Tran.Thi+phananh@mail.example.vn", "T***@mail.example.vn"),
    ("not an address", "***"),
])
def test_mask_email(address, masked):
    assert mask_email(address) == masked


# --- mask_personal_data ----------------------------------------------------------------------


MASK_PERSONAL_DATA = [
    ("SĐT: 0912 345 678, email nguyen.van.a@example.com",
     "SĐT: 091* *** 678, email n***@example.com"),
    ("gọi +84-912-345-678 hoặc 0912.345.678/0987654321",
     "gọi +84 91* *** 678 hoặc 091* *** 678/098* *** 321"),
    ("0912345678,0987654321", "091* *** 678,098* *** 321"),
    ("SĐT0912345678 nhé", "SĐT091* *** 678 nhé"),
    ("from=+84912345678 to=+14155552671", "from=+84 91* *** 678 to=+1 41* **** 671"),
    ("(+84) 912 345 678", "+84 91* *** 678"),
    ("Văn phòng (028) 3823 4567 hoặc 024.3825.6789", "Văn phòng 028* **** 567 hoặc 024* **** 789"),
    ("+44 20 7183 8750.", "+44 20* **** 750."),
    ("phone 0084912345678", "phone +84 91* *** 678"),
    ("0912345678@gmail.com", "0***@gmail.com"),
    ("email=le.b@example.org;", "email=l***@example.org;"),
    ("Mailto:<Pham@Example.COM>", "Mailto:<P***@Example.COM>"),
]


@pytest.mark.parametrize("text, masked", MASK_PERSONAL_DATA)
def test_mask_personal_data(text, masked):
    assert mask_personal_data(text) == masked


PERSONAL = [text for text, _ in (*MASK_PHONE, *MASK_PERSONAL_DATA) if sum(map(str.isdigit, text)) > 5]


@pytest.mark.parametrize("text", PERSONAL)
def test_a_line_masks_every_kind_of_number_and_address_wherever_it_stands(text):
    """A line is searched for personal data only when it may hold some (an "@", seven
    digits): each kind of number and address is masked in the message, in a field, and at
    the start of the message, right after the time stamp."""
    masked = mask_personal_data(text)
    assert masked != text
    formatter = MaskingFormatter()
    for message, fields, written in ((text, None, masked), (f"from {text} ok", None, f"from {masked} ok"),
                                     ("x", {"to": text}, f"x to={mask_personal_data(_render_value(text))}")):
        record = logging.makeLogRecord({"msg": message, "levelname": "INFO", "name": "n", "created": 1795600800.5,
                                        "msecs": 500.0, "fields": fields})
        assert formatter.format(record) == f"2026-11-25T10:00:00.500Z INFO n {written}"


@pytest.mark.parametrize("text", [
    "code=PA-7KQ4-M9XS PA-2345-6789 HCM-8W3R-T5YP 7KQ4-M9XS",
    "2026-11-25T10:00:00.123Z INFO bot.intake complaint received",
    "at 2025-11-20T18:30:00+07:00 and 2025-11-20 18:30:00,123456789 and 10:00:00.0912345678",
    "HTTP/1.1 404 Not Found status=200 port=8080 127.0.0.1:8080 [::1]:443",
    "took 1234 ms, 56 rows, id 42, 3 retries, 12.5% of 0.912345",
    "unix time 1764064800 and 1764064800123",
    "CCCD-like 001099012345 price 1.500.000đ date 05-11-2026 and 05/11/2026",
    "sha 3a7bd3e0912345678a9e uuid 550e8400-e29b-41d4-a716-446655440000",
    "version 2.0.912345678 and build 4.0912345678",
    "no at sign here, just a user@localhost",
])
def test_mask_personal_data_leaves_other_numbers_alone(text):
    assert mask_personal_data(text) == text


def test_masking_is_idempotent():
    once = mask_personal_data("0912345678 +84912345678 a.b@example.com (028) 3823 4567")
    assert mask_personal_data(once) == once


# --- MaskingFormatter through configure_logging ----------------------------------------------


def test_line_format_with_fields(output):
    logging.getLogger("bot.intake").info(
        "complaint received",
        extra={"fields": {"channel": "web", "code": "PA-7KQ4-M9XS", "ward": "Phường 7",
                          "empty": "", "quote": 'say "hi"', "n": 3}})
    [line] = lines(output)
    assert LINE_START.match(line)
    assert line.split(" ", 1)[1] == (
        'INFO bot.intake complaint received channel=web code=PA-7KQ4-M9XS ward="Phường 7" '
        'empty="" quote="say \\"hi\\"" n=3')


def test_timestamp_is_utc_with_milliseconds():
    record = logging.makeLogRecord({"msg": "x", "levelname": "INFO", "name": "n",
                                    "created": 1795600800.123456, "msecs": 123.456})
    formatter = MaskingFormatter()
    assert formatter.format(record) == "2026-11-25T10:00:00.123Z INFO n x"
    # The same formatter goes on to the next second, and back (a record from another thread).
    for created, written in ((1795600801.5, "10:00:01.500"), (1795600799.25, "09:59:59.250"),
                             (1795600801.125, "10:00:01.125")):
        later = logging.makeLogRecord({"msg": "x", "levelname": "INFO", "name": "n", "created": created,
                                       "msecs": (created - int(created)) * 1000})
        assert formatter.format(later) == f"2026-11-25T{written}Z INFO n x"


def test_a_value_with_any_kind_of_space_or_an_equals_sign_is_quoted(output):
    logging.getLogger("bot.intake").info("x", extra={"fields": {
        "nbsp": "Phường\u00a07", "tab": "a\tb", "ideographic": "a\u3000b", "eq": "a=b", "plain": "Phường_7"}})
    [line] = lines(output)
    assert line.split(" ", 4)[4] == 'nbsp="Phường\u00a07" tab="a\tb" ideographic="a\u3000b" eq="a=b" plain=Phường_7'


def test_phone_in_args_is_masked(output):
    logging.getLogger("bot.sms").info("from %s", PHONE)
    [line] = lines(output)
    assert line.endswith(f"INFO bot.sms from {MASKED_PHONE}")
    assert "912345678" not in output.getvalue()


def test_personal_data_in_fields_is_masked(output):
    logging.getLogger("bot.email").warning(
        "bounce", extra={"fields": {"phone": "0912 345 678", "sender": "nguyen.van.a@example.com",
                                    "code": "PA-7KQ4-M9XS"}})
    [line] = lines(output)
    assert line.endswith('WARNING bot.email bounce phone="091* *** 678" '
                         'sender=n***@example.com code=PA-7KQ4-M9XS')


def test_exception_traceback_is_masked_and_on_one_line(output):
    log = logging.getLogger("bot.intake")
    try:
        raise ValueError(f"cannot reach {PHONE} or tran.b@example.vn\nsecond line")
    except ValueError:
        log.exception("delivery failed")
    [line] = lines(output)
    assert "ERROR bot.intake delivery failed\\nTraceback (most recent call last):\\n" in line
    assert f"ValueError: cannot reach {MASKED_PHONE} or t***@example.vn\\nsecond line" in line
    assert "912345678" not in line and "tran.b" not in line


def test_exception_text_is_not_cached_unmasked_on_the_record():
    try:
        raise RuntimeError(PHONE)
    except RuntimeError:
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "boom", (),
                                                   sys.exc_info())
    assert MASKED_PHONE in MaskingFormatter().format(record)
    assert record.exc_text is None


def test_secrets_are_replaced(output):
    log = logging.getLogger("bot.sms")
    log.info("calling gateway with key=%s", "s3cr3t-gateway-key",
             extra={"fields": {"url": "https://api.telegram.org/bot123456:ABC-bot-token/send"}})
    try:
        raise PermissionError("token 123456:ABC-bot-token rejected")
    except PermissionError:
        log.exception("telegram")
    text = output.getvalue()
    assert "s3cr3t-gateway-key" not in text and "123456:ABC-bot-token" not in text
    assert "key=*** url=https://api.telegram.org/bot***/send" in text
    assert "PermissionError: token *** rejected" in text


def test_short_and_empty_secrets_are_ignored(output):
    logging.getLogger("x").info("abc and abcd")
    [line] = lines(output)
    assert line.endswith("INFO x abc and abcd")


def test_longest_secret_wins():
    formatter = MaskingFormatter(["token", "token-with-suffix"])
    record = logging.makeLogRecord({"msg": "token-with-suffix and token", "levelname": "INFO",
                                    "name": "x"})
    assert formatter.format(record).endswith("INFO x *** and ***")


def test_multi_line_message_becomes_one_line(output):
    logging.getLogger("bot.web").info("line one\nline two\r\nforged 2026-01-01T00:00:00.000Z "
                                      "ERROR admin\u2028x\x85y")
    [line] = lines(output)
    assert line.endswith("INFO bot.web line one\\nline two\\r\\nforged 2026-01-01T00:00:00.000Z "
                         "ERROR admin\\u2028x\\x85y")
    assert output.getvalue().count("\n") == 1


def test_newlines_in_field_values_are_escaped(output):
    logging.getLogger("x").info("m", extra={"fields": {"text": "Đường ngập\nSĐT 0912345678"}})
    [line] = lines(output)
    assert line.endswith('INFO x m text="Đường ngập\\nSĐT 091* *** 678"')


def test_stack_info_stays_on_one_line(output):
    logging.getLogger("x").info("here", stack_info=True)
    [line] = lines(output)
    assert "\\nStack (most recent call last):\\n" in line


def test_one_line_per_event(output):
    log = logging.getLogger("bot.intake")
    for i in range(5):
        log.info("event %d\nwith newline", i)
    assert len(lines(output)) == 5
    assert all(LINE_START.match(line) for line in lines(output))


def test_formatter_works_with_caplog(caplog):
    # pytest reuses its capture handler across tests, so its formatter is put back.
    previous = caplog.handler.formatter
    caplog.handler.setFormatter(MaskingFormatter(["hunter22"]))
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("bot.x").info("pw hunter22 from %s", "0912345678")
        assert caplog.text.rstrip("\n").endswith("INFO bot.x pw *** from 091* *** 678")
    finally:
        caplog.handler.setFormatter(previous)


# --- configure_logging -----------------------------------------------------------------------


def test_configure_logging_sets_level(output):
    logging.getLogger("x").debug("shown")
    configure_logging("warning", stream=output)
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown too")
    assert [line.split(" ", 3)[3] for line in lines(output)] == ["shown", "shown too"]
    assert logging.getLogger().level == logging.WARNING


def test_configure_logging_rejects_unknown_level():
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("LOUD", stream=io.StringIO())


def test_configure_logging_is_idempotent_and_replaces_only_its_own_handler():
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        first, second = io.StringIO(), io.StringIO()
        configure_logging(stream=first)
        configure_logging(stream=second, secrets=["topsecret"])
        ours = [h for h in root.handlers if type(h).__module__ == "bot.logs"]
        assert len(ours) == 1 and foreign in root.handlers
        logging.getLogger("x").info("topsecret")
    finally:
        root.removeHandler(foreign)
    assert first.getvalue() == ""
    assert lines(second)[0].endswith("INFO x ***")


def test_broken_log_call_does_not_print_raw_arguments(capsys, output):
    [handler] = [h for h in logging.getLogger().handlers if type(h).__module__ == "bot.logs"]
    record = logging.getLogger("bot.sms").makeRecord(
        "bot.sms", logging.INFO, "sms.py", 7, "from %d", (PHONE,), None)
    handler.handle(record)  # "%d" with a string: the message cannot be built
    err = capsys.readouterr().err
    assert "logging error: TypeError for a record from bot.sms at sms.py:7" in err
    assert "912345678" not in err and output.getvalue() == ""


def test_configure_logging_defaults_to_stderr(capsys):
    configure_logging()
    logging.getLogger("x").info("to stderr %s", PHONE)
    assert capsys.readouterr().err.rstrip("\n").endswith(f"INFO x to stderr {MASKED_PHONE}")
