"""The wrk harness of the benchmarks (bench/common.py, bench/wrk/replay.lua): each pre-generated
request is sent once, in order, each wrk thread its own slice; a file that runs out is
reported; a load generator at its cores' limit fails the run as generator-bound; and
bench/profile_split.py puts collapsed stacks in the right buckets.

Needs wrk (apt-get install wrk): skipped without it, unless FEEDBACK_BENCH_TESTS_REQUIRED=1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # the benchmarks import their siblings by name

import common  # noqa: E402
import profile_split  # noqa: E402


def need_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.environ.get("FEEDBACK_BENCH_TESTS_REQUIRED") == "1":
        pytest.fail("wrk is not installed and FEEDBACK_BENCH_TESTS_REQUIRED=1 (apt-get install wrk)")
    pytest.skip("wrk is not installed (apt-get install wrk; FEEDBACK_BENCH_TESTS_REQUIRED=1 makes this a failure)")


async def recording_target() -> tuple[web.AppRunner, int, list[int]]:
    """A tiny HTTP target in this process: records the number each POST body carries."""
    seen: list[int] = []

    async def post(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append(int(form["n"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1], seen


def numbered(port: int, first: int, count: int) -> list[bytes]:
    return [common.raw_request("POST", "/x", port, {"Content-Type": "application/x-www-form-urlencoded"},
                               f"n={n}".encode()) for n in range(first, first + count)]


@pytest.mark.parametrize("threads", [1, 2])
async def test_each_request_is_sent_once_in_order(tmp_path, threads):
    need_wrk()
    runner, port, seen = await recording_target()
    try:
        path = tmp_path / "requests.bin"
        common.write_requests(path, numbered(port, 0, 200_000))
        run = await common.run_wrk(f"http://127.0.0.1:{port}/", path, 1, threads=threads, connections=4)
    finally:
        await runner.cleanup()
    assert run.ok > 0 and run.reused == 0 and run.pool == 200_000
    assert len(seen) == len(set(seen)), "a request was sent twice"
    assert len(seen) >= run.ok and run.sent >= len(seen)
    # Each thread walks its own slice (n = k, k + T, ...) in order: what arrived is the start of each
    # slice, less at most the requests in flight when wrk stopped (4 connections).
    for k in range(threads):
        mine = {n for n in seen if n % threads == k}
        assert mine and len(set(range(k, max(mine) + 1, threads)) - mine) <= 4
    assert sum(count for _, count in run.hist) > 0 and run.cpu_seconds > 0


async def test_a_file_that_runs_out_is_reported(tmp_path):
    need_wrk()
    runner, port, seen = await recording_target()
    try:
        path = tmp_path / "requests.bin"
        common.write_requests(path, numbered(port, 0, 20))
        run = await common.run_wrk(f"http://127.0.0.1:{port}/", path, 1, threads=1, connections=2)
    finally:
        await runner.cleanup()
    assert run.pool == 20 and run.reused > 0 and len(seen) > len(set(seen))
    tally = common.Tally("service")
    tally.add(run, server_cpu=0.1, bench_cpu=0.0, measured=True, threads=1)
    problems: list[str] = []
    args = argparse.Namespace(check=True, threads=1)
    assert common.judge(common.Tally("bare"), tally, problems, args) == 1
    assert any("sent a second time" in p for p in problems)


def fake_run(cpu_seconds: float, seconds: float = 2.0, requests: int = 1000) -> common.WrkRun:
    return common.WrkRun(requests=requests, seconds=seconds, errors={"status": 0}, sent=requests, pool=requests,
                         reused=0, hist=[[1000, requests // 2], [5000, requests // 2]], cpu_seconds=cpu_seconds,
                         output="")


def test_generator_bound_rule():
    assert common.generator_bound(1.9, 2.0, threads=1)  # 95 % of its one core
    assert not common.generator_bound(1.0, 2.0, threads=1)
    assert not common.generator_bound(1.9, 2.0, threads=2, cores=2)  # two cores: 48 %
    assert common.generator_bound(3.7, 2.0, threads=2, cores=2)
    assert common.generator_bound(1.9, 2.0, threads=4, cores=1)  # threads beyond the cores do not count


def test_a_generator_bound_run_fails_even_without_check(capsys):
    bare, service = common.Tally("bare"), common.Tally("service")
    bare.add(fake_run(cpu_seconds=1.95), server_cpu=1.0, bench_cpu=0.0, measured=True, threads=1)
    service.add(fake_run(cpu_seconds=0.1, requests=300), server_cpu=1.9, bench_cpu=0.0, measured=True, threads=1)
    code = common.judge(bare, service, [], argparse.Namespace(check=False, threads=1))
    assert code == common.EXIT_GENERATOR_BOUND != 0
    assert "generator-bound" in capsys.readouterr().out
    # The same figures with the generator at half a core: a valid run (ratio 0.3, p99 5 ms).
    bare, service = common.Tally("bare"), common.Tally("service")
    bare.add(fake_run(cpu_seconds=1.0), server_cpu=1.0, bench_cpu=0.0, measured=True, threads=1)
    service.add(fake_run(cpu_seconds=0.1, requests=300), server_cpu=1.9, bench_cpu=0.0, measured=True, threads=1)
    assert common.judge(bare, service, [], argparse.Namespace(check=True, threads=1)) == 0
    assert service.percentile_ms(0.5) == 1.0 and service.percentile_ms(0.99) == 5.0


def test_check_fails_below_the_targets():
    bare, service = common.Tally("bare"), common.Tally("service")
    bare.add(fake_run(cpu_seconds=1.0, requests=10_000), server_cpu=1.0, bench_cpu=0.0, measured=True, threads=1)
    service.add(fake_run(cpu_seconds=0.1, requests=1_000), server_cpu=1.9, bench_cpu=0.0, measured=True, threads=1)
    assert common.judge(bare, service, [], argparse.Namespace(check=True, threads=1)) == 1  # ratio 0.1
    assert common.judge(bare, service, [], argparse.Namespace(check=False, threads=1)) == 0


def test_with_a_floor_check_judges_the_service_against_the_floor(capsys):
    # Issue 16's revision: with --floor, service/floor decides, not service/bare.
    bare, floor, service = common.Tally("bare"), common.Tally("floor"), common.Tally("service")
    bare.add(fake_run(cpu_seconds=1.0, requests=10_000), server_cpu=1.0, bench_cpu=0.0, measured=True, threads=1)
    floor.add(fake_run(cpu_seconds=0.2, requests=2_000), server_cpu=1.0, bench_cpu=0.0, measured=True, threads=1)
    service.add(fake_run(cpu_seconds=0.1, requests=400), server_cpu=1.0, bench_cpu=0.0, measured=True, threads=1)
    check = argparse.Namespace(check=True, threads=1)
    assert common.judge(bare, service, [], check) == 1  # service/bare 0.04
    assert common.judge(bare, service, [], check, floor=floor) == 0  # service/floor 0.2 >= 0.1
    out = capsys.readouterr().out
    assert "ratio service/floor: 0.200" in out and "service/floor >= 0.1: MET" in out
    assert common.judge(bare, service, [], check, floor=floor, target_floor_ratio=0.25) == 1
    assert "service/floor >= 0.25: NOT MET" in capsys.readouterr().out
    # A run with problems fails whatever the ratio.
    assert common.judge(bare, service, ["service: status 500 x1"], check, floor=floor) == 1


def test_profile_split_buckets():
    stacks = "\n".join([
        "process 1:\"serve\";serve (service/app.py:10);_handle_request (aiohttp/web_protocol.py:1) 10",
        "process 1:\"serve\";serve (service/app.py:10);webhook (channels/sms/webhook.py:5);"
        "post (aiohttp/web_request.py:700);parse_qsl (urllib/parse.py:1) 5",
        "process 1:\"serve\";serve (service/app.py:10);webhook (channels/sms/webhook.py:5);"
        "valid (channels/sms/twilio.py:9);new (hmac.py:1) 4",
        "process 1:\"serve\";serve (service/app.py:10);receive (bot/intake.py:50);_file_many (bot/intake.py:80);"
        "AsyncSession.execute (sqlalchemy/ext/asyncio/session.py:1) 20",
        "process 1:\"serve\";serve (service/app.py:10);Dispatcher.send (bot/dispatcher.py:3);sent (bot/delivery.py:4);"
        "AsyncSession.execute (sqlalchemy/ext/asyncio/session.py:1) 6",
        "process 1:\"serve\";serve (service/app.py:10);Dispatcher.send (bot/dispatcher.py:3);"
        "SmsSender.send (channels/sms/sender.py:4);ClientSession._request (aiohttp/client.py:1) 3",
        "process 1:\"serve\";Thread._bootstrap (threading.py:1);_connection_worker_thread (aiosqlite/core.py:1) 8",
        "process 1:\"serve\";serve (service/app.py:10);Logger.info (logging/__init__.py:1) 2",
        # aiosqlite's thread waiting for its next call (a C call: py-spy's leaf is that line): idle.
        f"process 1:\"serve\";Thread._bootstrap (threading.py:1);"
        f"_connection_worker_thread (aiosqlite/core.py:{profile_split.AIOSQLITE_WAIT}) 7",
        "process 1:\"serve\";serve (service/app.py:10);BaseEventLoop._run_once (asyncio/base_events.py:1);"
        "EpollSelector.select (selectors.py:1) 50",
        # A statement in SQLAlchemy's greenlet (no caller of ours on its stack): Core's own
        # execution, whose name holds aiosqlite's ``Connection._execute``, and the hand-off.
        "process 1:\"serve\";greenlet_spawn (sqlalchemy/util/concurrency.py:1);"
        "Connection._execute_clauseelement (sqlalchemy/engine/base.py:1);"
        "DefaultExecutionContext._init_compiled (sqlalchemy/engine/default.py:1) 9",
        "process 1:\"serve\";greenlet_spawn (sqlalchemy/util/concurrency.py:1);"
        "AsyncAdapt_aiosqlite_cursor.execute (sqlalchemy/dialects/sqlite/aiosqlite.py:1);"
        "Connection._execute (aiosqlite/core.py:1) 2",
    ])
    result = profile_split.split(stacks, rate=100)
    buckets = result["buckets"]
    assert profile_split.AIOSQLITE_WAIT is not None and profile_split.AIOSQLITE_WAIT > 1
    assert result["idle"] == 57
    assert buckets["HTTP/SMTP server (aiohttp, aiosmtpd, asyncio)"] == 10
    assert buckets["parsing"] == 5 and buckets["validation"] == 4
    database = result["details"]["database"]
    assert buckets["database"] == 31 and database["bot/intake.py:_file_many"] == 20
    assert database["aiosqlite: handing a call to its thread"] == 2
    assert database["SQLAlchemy Core: cache key and parameters (caller not on the greenlet's stack)"] == 9
    assert buckets["outbox claim and update"] == 6 and buckets["outbound (HTTP, SMTP relay)"] == 3
    assert buckets["database: SQLite engine (aiosqlite thread)"] == 8 and buckets["logging"] == 2
    text = profile_split.render(result, requests=29, cpu_seconds=0.58)
    assert "CPU per complaint: 20.00 ms" in text


def test_sms_floor_option_parses():
    import sms

    assert sms.parse(["--floor"]).floor and not sms.parse([]).floor
    with pytest.raises(SystemExit):
        sms.parse(["--floor", "--gateway", "generic"])  # the floor takes Twilio's webhook only


def test_smtp_floor_option_parses():
    import smtp

    assert smtp.parse(["--floor"]).floor and not smtp.parse([]).floor
    with pytest.raises(SystemExit):
        smtp.parse(["--floor", "--no-relay"])  # the floor sends its acknowledgements to the sink


def test_the_service_measured_can_be_another_install(tmp_path, monkeypatch):
    """FEEDBACK_BENCH_SERVICE names the ``feedback-intake`` the benchmarks start (a virtualenv
    with the project alone, as deployed, for its memory); a name that is no file stops the run."""
    monkeypatch.delenv(common.SERVICE_ENV, raising=False)
    assert Path(common.service_command()[0]).name == "feedback-intake"
    script = tmp_path / "bin" / "feedback-intake"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    monkeypatch.setenv(common.SERVICE_ENV, str(script))
    assert common.service_command() == [str(script)]
    monkeypatch.setenv(common.SERVICE_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit, match="no such file"):
        common.service_command()


def test_features_time_prints_a_cost_a_text_for_both_sets(capsys):
    """``bench/features_time.py`` (the README's before and after of ``match.features``)."""
    import features_time

    assert features_time.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["the benchmarks' six texts", "2,000 storm texts"]
    for line in lines:
        assert float(line.split(": ")[1].split(" µs")[0]) > 0, line
