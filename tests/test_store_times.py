"""Times in the store: ``storage.models.UTCDateTime``.

On SQLite a time is written and read in one call (``_to_sqlite``, ``_from_sqlite``) instead
of SQLAlchemy's DATETIME formatting and parsing followed by the type's own step. These
tests hold the short way to the long one: the same text written for every aware time, the
same time read back from every text SQLAlchemy's way can read, the same refusals; and, on a
real SQLite file, times that compare in SQL as they compare in Python.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import processors

from storage.models import UTCDateTime

DIALECT = sqlite.dialect()
TYPE = UTCDateTime().dialect_impl(DIALECT)
WRITE = TYPE.bind_processor(DIALECT)
READ = TYPE.result_processor(DIALECT, None)
# SQLAlchemy's own way, as the type took it before: its step, then DATETIME's.
DATETIME_WRITE = sqlite.DATETIME().bind_processor(DIALECT)


def written_before(value: datetime) -> str:
    return DATETIME_WRITE(UTCDateTime().process_bind_param(value, DIALECT))


def read_before(stored: str) -> datetime:
    return UTCDateTime().process_result_value(processors.str_to_datetime(stored), DIALECT)


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
aware = st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets)


@given(aware)
@settings(max_examples=500)
def test_a_time_is_written_as_sqlalchemy_wrote_it(value):
    assert WRITE(value) == written_before(value)
    assert len(WRITE(value)) == 26


@given(aware, st.sampled_from([" ", "T"]), st.sampled_from(["microseconds", "milliseconds", "seconds", "minutes"]),
       st.booleans())
@settings(max_examples=500)
def test_every_text_sqlalchemy_reads_is_read_as_it_read_it(value, separator, timespec, with_offset):
    stored = value.isoformat(separator, timespec)
    if not with_offset:
        stored = stored[:-6]
    assert READ(stored) == read_before(stored)
    assert READ(stored).tzinfo is timezone.utc


@given(st.text(alphabet="0123456789-:. T+", min_size=26, max_size=26))
@settings(max_examples=500)
def test_any_text_of_the_stored_length_is_read_as_before_or_refused_as_before(stored):
    try:
        expected = read_before(stored)
    except ValueError:
        with pytest.raises(ValueError):
            READ(stored)
    else:
        assert READ(stored) == expected


def test_nothing_stays_nothing_and_a_naive_time_is_refused():
    assert WRITE(None) is None and READ(None) is None
    with pytest.raises(ValueError, match="naive datetime"):
        WRITE(datetime(2026, 11, 4, 3, 7, 12))
    assert READ("2026-11-04") == datetime(2026, 11, 4, tzinfo=timezone.utc)  # a date alone, as before


def test_times_in_a_sqlite_file_compare_in_sql_as_in_python(tmp_path):
    table = Table("times", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))
    engine = create_engine(f"sqlite:///{tmp_path / 'times.db'}")
    hanoi = timezone(timedelta(hours=7))
    moments = [datetime(2026, 11, 4, 10, 0, tzinfo=hanoi), datetime(2026, 11, 4, 3, 0, 0, 1, tzinfo=timezone.utc),
               datetime(2026, 11, 4, 2, 59, 59, 999999, tzinfo=timezone.utc), datetime(2026, 11, 4, 3, 0, tzinfo=timezone.utc)]
    with engine.begin() as connection:
        table.create(connection)
        connection.execute(insert(table), [{"id": n, "at": moment} for n, moment in enumerate(moments)])
        stored = connection.execute(text("SELECT at FROM times ORDER BY id")).scalars().all()
        assert stored == ["2026-11-04 03:00:00.000000", "2026-11-04 03:00:00.000001", "2026-11-04 02:59:59.999999",
                          "2026-11-04 03:00:00.000000"]
        back = connection.execute(select(table.c.at).order_by(table.c.id)).scalars().all()
        assert back == moments and all(moment.tzinfo is timezone.utc for moment in back)
        due = connection.execute(select(table.c.id).where(table.c.at <= moments[3]).order_by(table.c.id)).scalars()
        assert due.all() == [0, 2, 3]  # the equal times, written the same, are due
    engine.dispose()
