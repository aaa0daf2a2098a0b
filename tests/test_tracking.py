"""Tests for tracking codes: format, randomness, the check character, parsing and search."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import tracking
from bot.tracking import ALPHABET, TrackingCodeError, find_codes, is_valid, new_code, normalise

PREFIX = "PA"
# Valid codes (their check characters were computed once and are checked below).
CODE = "PA-7KQ4-M9XS"
OTHER = "PA-8W3R-T5YP"


def _chars(code: str) -> str:
    """The eight characters of a code, without prefix and hyphens."""
    return code[len(PREFIX) + 1:].replace("-", "")


# --- format and randomness -------------------------------------------------------------------


def test_alphabet_leaves_out_confusable_characters():
    assert len(ALPHABET) == 30 == len(set(ALPHABET))
    assert not set("01ILOU") & set(ALPHABET)
    assert ALPHABET == "".join(sorted(ALPHABET))


def test_sample_codes_are_valid():
    assert is_valid(CODE, PREFIX)
    assert is_valid(OTHER, PREFIX)


@pytest.mark.parametrize("prefix", ["PA", "A", "HCM", "DNNG"])
def test_new_code_format(prefix):
    for _ in range(200):
        code = new_code(prefix)
        assert re.fullmatch(rf"{prefix}-[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}", code), code
        assert is_valid(code, prefix)
        assert normalise(code, prefix) == code


@pytest.mark.parametrize("prefix", ["", "pa", "PAXYZ", "P4", "PÁ", " PA"])
def test_bad_prefix_is_a_configuration_error_not_a_typo(prefix):
    for call in (lambda: new_code(prefix), lambda: normalise("7KQ4M9XS", prefix),
                 lambda: is_valid("7KQ4M9XS", prefix), lambda: find_codes("x", prefix)):
        with pytest.raises(ValueError) as info:
            call()
        assert not isinstance(info.value, TrackingCodeError)


def test_ten_thousand_codes_are_all_but_never_alike():
    """Codes are drawn from about 1.9e10 bodies (30 ** 7, less those whose check value has no
    character or that are all letters or all digits), so 10,000 of them hold two alike about
    once in 390 runs (the birthday bound, n ** 2 / 2N): CI met one, 9,999 distinct of 10,000.
    Two pairs alike happen about once in 300,000 runs; a generator with four random characters
    instead of seven (30 ** 4 bodies) gives dozens of pairs (67 in a run I tried)."""
    codes = [new_code(PREFIX) for _ in range(10_000)]
    assert len(codes) - len(set(codes)) <= 1


def test_codes_are_not_sequential():
    codes = [new_code(PREFIX) for _ in range(1_000)]
    # Consecutive codes share about 8/30 characters by chance; a counter would share ~7.
    same = sum(a == b for x, y in zip(codes, codes[1:]) for a, b in zip(_chars(x), _chars(y)))
    assert same / (len(codes) - 1) < 1.0
    # Every character shows up in every random position.
    for position in (3, 4, 5, 6, 8, 9, 10):
        assert {code[position] for code in codes} == set(ALPHABET)


def test_new_codes_mix_letters_and_digits():
    for _ in range(2_000):
        chars = set(new_code(PREFIX)[3:].replace("-", ""))
        assert chars & set("23456789")
        assert chars - set("23456789")


# --- the check character ---------------------------------------------------------------------


def test_check_character_catches_every_substitution_and_adjacent_transposition():
    codes = [new_code(PREFIX) for _ in range(200)]
    for code in codes:
        chars = _chars(code)
        for i, original in enumerate(chars):
            for replacement in ALPHABET:
                if replacement != original:
                    typo = chars[:i] + replacement + chars[i + 1:]
                    assert not is_valid(typo, PREFIX), (code, typo)
        for i in range(len(chars) - 1):
            if chars[i] != chars[i + 1]:
                swapped = chars[:i] + chars[i + 1] + chars[i] + chars[i + 2:]
                assert not is_valid(swapped, PREFIX), (code, swapped)


def test_check_character_also_catches_jump_transpositions():
    # Not promised, but the distinct weights give it for free; guard against a regression.
    for code in [new_code(PREFIX) for _ in range(100)]:
        chars = _chars(code)
        for i in range(len(chars)):
            for j in range(i + 2, len(chars)):
                if chars[i] != chars[j]:
                    swapped = list(chars)
                    swapped[i], swapped[j] = swapped[j], swapped[i]
                    assert not is_valid("".join(swapped), PREFIX)


def test_exactly_one_check_character_per_body_or_none():
    rng = random.Random(7)
    bodies_without = 0
    for _ in range(3_000):
        body = "".join(rng.choice(ALPHABET) for _ in range(7))
        matches = [c for c in ALPHABET if is_valid(body + c, PREFIX)]
        assert len(matches) <= 1
        bodies_without += not matches
    # The 31st check value has no character: about 1 body in 31.
    assert 30 < bodies_without < 200


# --- normalise -------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", [
    "PA-7KQ4-M9XS",
    "pa-7kq4-m9xs",
    "PA 7KQ4 M9XS",
    "  pa7kq4m9xs \n",
    "PA7KQ4-M9XS",
    "PA--7KQ4--M9XS",
    "-PA-7KQ4-M9XS-",
    "PA\u20137KQ4\u2013M9XS",       # en dashes from a word processor
    "PA \u2014 7KQ4 \u2014 M9XS",   # em dashes with spaces
    "PA\u22127KQ4\u2212M9XS",       # minus sign
    "7KQ4M9XS",
    "7kq4-m9xs",
    "7KQ4 M9XS",
    "\uff30\uff21-\uff17\uff2b\uff31\uff14-\uff2d\uff19\uff38\uff33",  # full-width keyboard
])
def test_normalise_accepts_how_people_type_codes(typed):
    assert normalise(typed, PREFIX) == CODE


def test_normalise_uses_the_given_prefix():
    code = new_code("HCM")
    body = code[4:]
    assert normalise(body.lower(), "HCM") == code
    assert normalise(code.replace("-", " "), "HCM") == code


def test_normalise_does_not_guess_confusable_characters():
    with pytest.raises(TrackingCodeError, match=r"'O' is not used in tracking codes"):
        normalise("PA-7KQ4-M9XO", PREFIX)


@pytest.mark.parametrize("typed, message", [
    ("", r"empty"),
    ("  - ", r"empty"),
    ("PA-7KQ4-M9X", r"8 characters after PA- .*has 7"),
    ("7KQ4M9X", r"8 characters after PA- .*has 7"),
    ("PA-7KQ4-M9XSS", r"8 characters after PA- .*has 9"),
    ("PA-7KQ4-M9XS-22", r"has 10"),
    ("PA-7K0Q-M9XS", r"'0' is not used in tracking codes \(0, 1, I, L, O and U are never used\)"),
    ("PA-7KQ4-M9X1", r"'1' is not used"),
    ("pa-7kq4-m9xi", r"'I' is not used"),
    ("PA-7KQ4-M9XL", r"'L' is not used"),
    ("PA-7KQ4-M9XU", r"'U' is not used"),
    ("PA/7KQ4/M9XS", r"'/' is not used"),
    ("[PA-7KQ4-M9XS]", r"'\[' is not used"),
    ("PA-7KQ4-M9XĐ", r"'Đ' is not used"),
    ("XY-7KQ4-M9XS", r"start with PA-, not XY-"),
    ("PA-7KQ4-M9XT", r"PA-7KQ4-M9XT is not a valid tracking code: the check character does not "
                     r"match, probably a typo"),
    ("PA-K7Q4-M9XS", r"check character does not match, probably a typo"),
])
def test_normalise_says_what_is_wrong(typed, message):
    with pytest.raises(TrackingCodeError, match=message):
        normalise(typed, PREFIX)
    assert not is_valid(typed, PREFIX)


def test_tracking_code_error_is_a_value_error():
    with pytest.raises(ValueError):
        normalise("nope", PREFIX)


# --- find_codes ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("TT pa-7kq4-m9xs", [CODE]),
    ("Re: [PA-7KQ4-M9XS] ngập nước", [CODE]),
    ("Fwd: RE: Phản ánh PA-7KQ4-M9XS – đường Lê Lợi", [CODE]),
    ("Mã phản ánh:PA 7KQ4 M9XS, cảm ơn", [CODE]),
    ("Mã số (PA7KQ4M9XS).", [CODE]),
    ("đã gửi 7KQ4-M9XS hôm qua", [CODE]),
    ("kiểm tra giúp «7kq4–m9xs»!", [CODE]),
    ("PA-7KQ4-M9XS và PA-8W3R-T5YP, lại PA-7KQ4-M9XS", [CODE, OTHER]),
    ("8W3R-T5YP rồi pa 7kq4 m9xs", [OTHER, CODE]),
    ("tra cứu ＰＡ－７ＫＱ４－Ｍ９ＸＳ", [CODE]),
    ("mã PA-7KQ4-M9XT sai một ký tự", []),          # typo: check character fails
    ("PA-7KQ4-M9XO", []),
    ("XPA-7KQ4-M9XS", []),                         # inside a longer run
    ("PA-7KQ4-M9XSA", []),
    ("ngậpPA-7KQ4-M9XS", []),                      # glued to a Vietnamese word
    ("PA-7KQ4-M9XSđường", []),
    ("XY-7KQ4-M9XS", []),                          # someone else's prefix
    ("", []),
])
def test_find_codes(text, expected):
    assert find_codes(text, PREFIX) == expected


def test_find_codes_with_other_prefix():
    code = new_code("HCM")
    text = f"Re: [{code.lower()}] and {CODE}"
    assert find_codes(text, "HCM") == [code]


def test_find_codes_finds_every_issued_code_in_any_written_form():
    for code in [new_code(PREFIX) for _ in range(500)]:
        unprefixed = code[3:]
        assert find_codes(f"Mã: {code} nhé", PREFIX) == [code]
        assert find_codes(f"mã {unprefixed.lower()} nhé", PREFIX) == [code]


ORDINARY_TEXT = [
    "Đường Nguyễn Huệ bị ngập nước sau cơn mưa lớn tối qua, xe máy không đi được.",
    "Đèn đường hỏng ở ngõ 123 phố Tây Sơn, quận Đống Đa, Hà Nội từ ngày 12-11-2025.",
    "Rác thải chưa được thu gom 3 ngày nay tại phường 7, quận 3, TP.HCM.",
    "Xin chao, toi muon phan anh ve tinh trang o nhiem tieng on tai khu pho.",
    "The streetlight on Hai Ba Trung is broken since 2025-11-20T18:30:00+07:00.",
    "A well-made back-seat hand-made cake-walk; state-wide data-base pass-byte.",
    "BACK-SEAT MADE-EASY THAT-WAS DEAD-BEEF CAFE-BABE FACE-FEED",
    "Pa said: call me at 0912 345 678 or +84 912 345 678, or 0912-345-678.",
    "Landline 028-3823-4567, (024) 3825 6789, 028.3823.4567, fax 3823-4567.",
    "Số tài khoản 2345-6789-2345-6789, hoá đơn 9876-5432, mã bưu chính 700000.",
    "Version 2.3.4-5678, build 2024-5678, order #4567-8923, PIN 2345 6789.",
    "UUID 9f3b2c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d and sha 3a7bd3e2360a3d29eea436fcfb7e44c7.",
    "HTTP/1.1 404 Not Found; port 8080; 2026-11-25T10:00:00.123Z INFO bot.intake ok",
]


@pytest.mark.parametrize("text", ORDINARY_TEXT)
def test_find_codes_no_false_positives(text):
    assert find_codes(text, PREFIX) == []


def test_find_codes_ignores_digit_only_and_letter_only_pairs_without_prefix():
    rng = random.Random(11)
    for pool in ("23456789", "ABCDEFGHJKMNPQRSTVWXYZ"):
        for _ in range(1_000):
            body = "".join(rng.choice(pool) for _ in range(7))
            for check in ALPHABET:
                chars = body + check
                if is_valid(chars, PREFIX) and set(chars) <= set(pool):
                    assert find_codes(f"số {chars[:4]}-{chars[4:]}", PREFIX) == []
                    # With the prefix written out it is a code all the same.
                    assert find_codes(f"số PA-{chars[:4]}-{chars[4:]}", PREFIX) == [
                        f"PA-{chars[:4]}-{chars[4:]}"]


def test_find_codes_no_false_positives_on_random_phone_numbers():
    rng = random.Random(3)
    for _ in range(2_000):
        mobile = "0" + rng.choice("35789") + "".join(rng.choice("0123456789") for _ in range(8))
        landline = "02" + "".join(rng.choice("0123456789") for _ in range(9))
        forms = [mobile, f"{mobile[:4]} {mobile[4:7]} {mobile[7:]}",
                 f"{mobile[:4]}-{mobile[4:7]}-{mobile[7:]}", f"+84{mobile[1:]}",
                 f"{landline[:3]}-{landline[3:7]}-{landline[7:]}",
                 f"({landline[:3]}) {landline[3:7]} {landline[7:]}",
                 f"{landline[:3]}.{landline[3:7]}.{landline[7:]}"]
        for form in forms:
            assert find_codes(f"SĐT: {form}.", PREFIX) == [], form


@given(number=st.integers(min_value=0, max_value=len(ALPHABET) ** 7 - 1))
def test_a_code_body_is_one_draw_written_in_base_30(number):
    """A code's seven characters are one draw below 30 ** 7 written in base 30: each number
    its own body, so every body is as likely as any other."""
    body = tracking._body(number)
    assert len(body) == 7 and set(body) <= set(ALPHABET)
    assert sum(ALPHABET.index(char) * len(ALPHABET) ** place for place, char in enumerate(body)) == number
