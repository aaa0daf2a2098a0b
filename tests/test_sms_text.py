"""Outgoing SMS text without a server: parts per encoding, plain letters, shortening that
never cuts a tracking code, a link or a phone number, and the status request's grammar."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import tracking
from channels.sms import commands
from channels.sms.common import normalise_phone
from channels.sms.text import (ELLIPSIS, encoding, is_gsm, prepare, protected_spans, segments, shorten, to_gsm)


@pytest.mark.parametrize("text, parts", [
    ("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3),  # GSM-7: 160, then 153 a part
    ("ă" * 70, 1), ("ă" * 71, 2), ("ă" * 134, 2), ("ă" * 135, 3),  # UCS-2: 70, then 67 a part
    ("{" * 80, 1), ("{" * 81, 2), ("a" * 158 + "€", 1), ("a" * 159 + "€", 2),  # extension characters take two places
    ("😀" * 35, 1), ("😀" * 36, 2), ("", 1),  # beyond the BMP: two UTF-16 units
])
def test_parts_are_counted_as_phones_count_them(text, parts):
    assert segments(text) == parts


def test_a_single_vietnamese_letter_makes_the_message_ucs2():
    assert encoding("Phan anh PA-7KQ4-M9XS") == "GSM-7" and encoding("Phản ánh PA-7KQ4-M9XS") == "UCS-2"


@pytest.mark.parametrize("vietnamese, plain", [
    ("Đã tiếp nhận phản ánh", "Da tiep nhan phan anh"),
    ("Hạn trả lời: 17:00 ngày 03/11/2026", "Han tra loi: 17:00 ngay 03/11/2026"),
    ("ƯU TIÊN xử lý đường Nguyễn Chí Thanh", "UU TIEN xu ly duong Nguyen Chi Thanh"),
    ("“Ngõ 12” – đèn hỏng…", '"Ngo 12" - den hong...'),
    ("Cảm ơn 🙏", "Cam on ?"),
])
def test_plain_letters_drop_the_diacritics_and_fit_gsm_7(vietnamese, plain):
    assert to_gsm(vietnamese) == plain and is_gsm(plain)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_plain_letters_are_always_gsm_7(text):
    assert is_gsm(to_gsm(text))


CODE = "PA-7KQ4-M9XS"
LINK = "https://phananh.example.gov.vn/track/PA-7KQ4-M9XS"
_word = st.sampled_from(["đèn", "đường", "hỏng", "ngõ", "12", "Trần", "Duy", "Hưng", "phường", "the", "street",
                         "lamp", "0912 345 678", "PA 7KQ4 M9XS", CODE, LINK, "www.hanoi.gov.vn/a-b", "7KQ4-M9XS",
                         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"])


@settings(max_examples=400, deadline=None)
@given(words=st.lists(_word, max_size=120), separators=st.lists(st.sampled_from([" ", "  ", "\n", ", "]),
                                                                 min_size=120, max_size=120),
       max_segments=st.integers(1, 5), with_tail=st.booleans())
def test_shortening_never_cuts_a_code_a_link_or_a_number(words, separators, max_segments, with_tail):
    text = "".join(word + separator for word, separator in zip(words, separators, strict=False)).strip()
    tail = f"Xem đầy đủ: {LINK}" if with_tail else ""
    result = shorten(text, max_segments, tail)
    if result == text:
        assert segments(text) <= max_segments
        return
    if result == tail:
        return  # nothing of the text fitted beside the link
    ending = f"{ELLIPSIS}\n{tail}" if tail else ELLIPSIS
    assert result.endswith(ending) and segments(result) <= max_segments
    head = result[:-len(ending)]
    assert head.strip() and text.startswith(head)
    cut = len(head)
    for start, end in protected_spans(text, "PA"):
        assert not start < cut < end, (text[start:end], head[-30:])


def test_a_text_that_fits_is_sent_whole():
    text = f"Phản ánh {CODE} đã được tiếp nhận. Tra cứu: {LINK}"
    assert prepare(text, ascii_only=False, max_segments=2, tail="x") == text


def test_a_long_text_ends_with_its_link():
    text = ("Đơn vị đã kiểm tra hiện trường và sẽ sửa chữa trong tuần tới. " * 10).strip()
    result = prepare(text, ascii_only=False, max_segments=3, tail=f"Xem đầy đủ: {LINK}")
    assert result.endswith(f"...\nXem đầy đủ: {LINK}") and segments(result) == 3


def test_one_unbroken_word_is_cut_inside_rather_than_lost():
    result = shorten("x" * 500, 1)
    assert result == "x" * 157 + ELLIPSIS


def test_when_only_the_link_fits_the_link_is_sent():
    text = f"{LINK} " * 5
    assert shorten(text, 1, f"Xem đầy đủ: {LINK}") == f"Xem đầy đủ: {LINK}"


@pytest.mark.parametrize("text, language, code", [
    ("TT PA-7KQ4-M9XS", "vi", CODE), ("tt pa 7kq4 m9xs", "vi", CODE), ("Tt: PA7KQ4M9XS.", "vi", CODE),
    ("Trạng thái PA-7KQ4-M9XS", "vi", CODE), ("TRANG THAI: 7kq4-m9xs", "vi", CODE),
    ("tra cứu PA–7KQ4–M9XS", "vi", CODE), ("STATUS PA-7KQ4-M9XS", "en", CODE), ("Status pa-7kq4-m9xs", "en", CODE),
    ("TT", "vi", None), ("status", "en", None),
])
def test_status_requests_are_read_in_any_case_and_spelling(text, language, code):
    request = commands.parse(text, "PA")
    assert request is not None and (request.language, request.code, request.problem) == (language, code, None)


@pytest.mark.parametrize("text", ["TT Đông Anh có rác thải", "Status of the road on Kim Ma is bad", "TTPA7KQ4M9XS",
                                  "Tổ dân phố 5 báo cáo", "tt 5 ngõ 12", "PA-7KQ4-M9XS"])
def test_other_texts_are_not_status_requests(text):
    assert commands.parse(text, "PA") is None


def test_a_mistyped_code_is_a_request_with_a_problem():
    request = commands.parse("TT PA-7KQ4-M9XT", "PA")
    assert request.code is None and "check character" in request.problem


def test_every_issued_code_is_understood_after_tt():
    for _ in range(200):
        code = tracking.new_code("PA")
        assert commands.parse(f"tt {code.lower().replace('-', ' ')}", "PA").code == code


@pytest.mark.parametrize("raw, address, is_phone", [
    ("0912345678", "+84912345678", True), ("+84 912 345 678", "+84912345678", True),
    ("84912345678", "+84912345678", True), ("(024) 3825 3536", "+842438253536", True),
    ("+1 650 555 1212", "+16505551212", True), ("VIETTEL", "VIETTEL", False), ("8079", "8079", False),
    ("", "", False),
])
def test_phone_numbers_are_normalised_to_e164(raw, address, is_phone):
    phone = normalise_phone(raw, "VN")
    assert (phone.address, phone.is_phone) == (address, is_phone)
