"""storage/json_text.py: the store's JSON columns written with orjson, Vietnamese as UTF-8,
and read back as they were written, on the test's database (SQLite file or PostgreSQL)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from sqlalchemy import select, text

from storage import json_text
from storage.models import Event

APOLOGY = {"text": "Chúng tôi xin lỗi vì đã để Quý ông/bà chờ đợi. Phản ánh PA-00002698 quá hạn.",
           "kind": "apology", "language": "vi", "in_reply_to": [], "via": None, "actions": [],
           "render": {"text_key": "citizen.apology", "params": {"due": "10:00 ngày 05/11/2026"}},
           "score": 0.8125, "attempt": 3, "urgent": True}


async def test_an_event_s_detail_is_stored_as_utf_8_and_read_back_the_same(core):
    now = datetime(2026, 12, 6, 3, 0, tzinfo=timezone.utc)
    async with core.sessions() as session, session.begin():
        session.add(Event(complaint_id=None, at=now, actor="system", kind="test", detail=APOLOGY))
    async with core.sessions() as session:
        assert (await session.scalars(select(Event.detail).where(Event.kind == "test"))).one() == APOLOGY
        stored = (await session.execute(text("SELECT CAST(detail AS TEXT) FROM events WHERE kind = 'test'"))).scalar_one()
    assert "Chúng tôi xin lỗi" in stored and "\\u" not in stored  # not "Ch\u00fang t\u00f4i"
    assert json.loads(stored) == APOLOGY  # what any other reader of the store gets too
    assert len(stored.encode()) < len(json.dumps(APOLOGY).encode())


def test_what_orjson_refuses_is_written_by_json_and_reads_back():
    lone = {"text": "m\udcc3t \udc80i\u1ec7n"}  # an undecodable byte kept by the email parser
    written = json_text.dumps(lone)
    written.encode("utf-8")  # still valid UTF-8 for the driver: the surrogates are escaped
    assert "\\udcc3" in written and json_text.loads(written) == lone
    huge = {"n": 2**70}
    assert json_text.loads(json_text.dumps(huge)) == huge
    assert json_text.loads('{"x": NaN}')["x"] != json_text.loads('{"x": NaN}')["x"]  # an older row's NaN


def test_keys_and_values_are_written_as_json_wrote_them():
    value = {1: "một", None: [1, 2.5, None, False], 2.5: "x", "nested": {"a": (1, 2)}, "empty": {}}
    assert json.loads(json_text.dumps(value)) == json.loads(json.dumps(value))
    assert list(json.loads(json_text.dumps(value))) == ["1", "null", "2.5", "nested", "empty"]


@dataclass
class _Thing:
    name: str


@pytest.mark.parametrize("value", [{"at": datetime(2026, 12, 6, tzinfo=timezone.utc)}, {"s": {1, 2}},
                                   {"thing": _Thing("x")}])
def test_what_json_refused_is_still_refused(value):
    with pytest.raises(TypeError):
        json.dumps(value)
    with pytest.raises(TypeError):
        json_text.dumps(value)
