"""The message catalogue: both languages complete, same parameters, the charter recognisable."""

from __future__ import annotations

import pytest

from bot.texts import LANGUAGES, Catalogue, placeholders
from bot.tracking import TrackingCodeError, normalise


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue()


def test_every_language_has_every_key_with_the_same_parameters(catalogue):
    vietnamese = catalogue.texts["vi"]
    for language in LANGUAGES:
        texts = catalogue.texts[language]
        assert set(texts) == set(vietnamese), language
        for key, template in texts.items():
            assert placeholders(template) == placeholders(vietnamese[key]), (language, key)


def test_every_status_has_a_label(catalogue):
    for status in ("new", "assigned", "answered", "resolved", "reopened", "closed"):
        assert catalogue.get("vi", f"status.{status}") != catalogue.get("en", f"status.{status}")


def test_the_charter_speaks_in_the_texts(catalogue):
    assert catalogue.get("vi", "citizen.apology", code="PA-1", due="x").startswith(
        "Chúng tôi xin lỗi vì đã để Quý ông/bà chờ đợi.")
    assert "Kính chào" in catalogue.get("vi", "citizen.greeting", service="UBND")
    ack = catalogue.get("vi", "citizen.acknowledgement", code="PA-7KQ4-M9XS", unit="Phường Dịch Vọng",
                        due="17:00 ngày 03/11/2026", track_url="https://x/track/PA-7KQ4-M9XS")
    assert "PA-7KQ4-M9XS" in ack and "Phường Dịch Vọng" in ack and "17:00 ngày 03/11/2026" in ack
    assert "1 (rất không hài lòng)" in catalogue.get("vi", "citizen.survey", code="PA-1")


@pytest.mark.parametrize("requested, chosen", [
    ("en", "en"), ("en-US", "en"), ("EN_gb", "en"), ("vi-VN", "vi"), ("fr", "vi"), (None, "vi"), ("", "vi"),
])
def test_language_choice_falls_back_to_the_default(catalogue, requested, chosen):
    assert catalogue.language(requested) == chosen


@pytest.mark.parametrize("text, reason, vietnamese", [
    ("", "empty", "chưa nhập mã phản ánh."),
    ("PA-7KQ4-M9X0", "character", "ký tự '0' không có trong mã phản ánh (mã không dùng 0, O, 1, I, L, U)."),
    ("HN-7KQ4-M9XS", "prefix", "mã phản ánh bắt đầu bằng PA-, không phải HN-."),
    ("PA-7KQ4-M9X", "length", "mã phản ánh có 8 ký tự sau PA- (ví dụ PA-7KQ4-M9XS); mã này có 7."),
    ("PA-7KQ4-M9XT", "typo", "PA-7KQ4-M9XT không phải mã phản ánh hợp lệ, có thể gõ nhầm một ký tự."),
])
def test_a_bad_tracking_code_is_explained_in_the_citizens_language(catalogue, text, reason, vietnamese):
    with pytest.raises(TrackingCodeError) as caught:
        normalise(text, "PA")
    assert caught.value.reason == reason
    assert catalogue.get("vi", f"tracking.{reason}", **caught.value.params) == vietnamese
    assert catalogue.get("en", f"tracking.{reason}", **caught.value.params) != vietnamese


def test_a_pages_table_holds_its_prefix_in_its_language_and_cannot_be_changed(tmp_path):
    """``table`` (every page's texts): the keys under the prefix without it, the language's text
    where it has one and Vietnamese where it does not; made once and shared, so read-only."""
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "vi.toml").write_text('[web]\ntitle = "Phản ánh"\nsend = "Gửi"\n[desk]\ntitle = "Bàn"\n',
                                    encoding="utf-8")
    (folder / "en.toml").write_text('[web]\ntitle = "Feedback"\n', encoding="utf-8")
    catalogue = Catalogue(folder=folder)
    assert dict(catalogue.table("en", "web.")) == {"title": "Feedback", "send": "Gửi"}
    assert dict(catalogue.table("vi", "web.")) == {"title": "Phản ánh", "send": "Gửi"}
    assert dict(catalogue.table("en-US", "desk.")) == {"title": "Bàn"}
    assert catalogue.table("en", "web.") is catalogue.table("en-GB", "web.")
    with pytest.raises(TypeError):
        catalogue.table("en", "web.")["title"] = "changed"  # type: ignore[index]
    assert catalogue.table("en", "web.")["title"] == "Feedback"
