"""The fault suite, short: the real service killed with SIGKILL under SMS load and under
Zalo load, on SQLite with one process and on PostgreSQL with two, and the store out of
reach for a while.
bench/faults.py runs the long version (1,500 messages and more).

What must hold: no SMS a gateway got a 2xx for is lost; every citizen is acknowledged;
no citizen gets a copy twice (the generic gateway recognises our reference); at most the
messages in flight at each kill are sent a second time (on SMS, which can be asked or
dedupes, a whole claimed batch: ``outbox.batch_size``).
"""

from __future__ import annotations

from tests.conftest import POSTGRES_ADMIN_URL
from tests.faults_harness import BATCH_SIZE, killed_under_load, store_away_under_load, zalo_killed_under_load

CONCURRENCY = 4


async def test_kill_minus_nine_twice_under_sms_load_loses_nothing_and_doubles_nothing(tmp_path, database_url):
    processes = 2 if POSTGRES_ADMIN_URL else 1  # SQLite's one writer: one process per file here
    result = await killed_under_load(tmp_path, database_url, messages=240, kills=2, processes=processes,
                                     concurrency=CONCURRENCY)
    print(result.line())
    assert result.accepted == result.stored == result.acknowledged == 240
    assert result.lost == 0 and result.doubled == 0
    assert result.sent_again <= 2 * BATCH_SIZE
    assert result.delivered == 240


async def test_the_store_out_of_reach_for_a_few_seconds_loses_nothing(tmp_path, database_url):
    processes = 2 if POSTGRES_ADMIN_URL else 1
    result = await store_away_under_load(tmp_path, database_url, messages=150, seconds=3.0, processes=processes)
    print(result.line())
    assert result.accepted == result.stored == result.acknowledged == 150
    assert result.lost == 0 and result.doubled == 0 and result.delivered == 150


async def test_kill_minus_nine_twice_under_zalo_load_loses_nothing_and_doubles_nothing(tmp_path, database_url):
    """Zalo keeps no key of ours: a message a kill left unsure is found in the OA's
    conversation with the citizen, or it would reach them twice."""
    processes = 2 if POSTGRES_ADMIN_URL else 1
    result = await zalo_killed_under_load(tmp_path, database_url, messages=160, kills=2, processes=processes)
    print(result.line())
    assert result.accepted == result.stored == result.greeted == result.acknowledged == 160
    assert result.doubled == 0
