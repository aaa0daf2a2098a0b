"""Reports: every complaint with its timings as CSV or JSON, no personal data unless asked,
through the module and through `feedback-intake report` (with a progress bar on a terminal)."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import termios
from datetime import date

import pytest

from bot import lifecycle, reports
from tests.test_digest import CONFIG, PHONE_IN_COMMENT, PHONE_IN_TEXT, file, local, seed_week
from tests.test_digest_processes import ROOT, command, write_config

WEEK = reports.Selection(date(2026, 11, 2), date(2026, 11, 8))


@pytest.fixture
async def week(make_core):
    core = await make_core(CONFIG)
    return core, await seed_week(core)


async def export(core, selection: reports.Selection = WEEK, fmt: str = "csv", chunk: int = reports.CHUNK) -> str:
    out = io.StringIO()
    await reports.export(core, selection, out, fmt, chunk=chunk)
    return out.getvalue()


async def test_the_csv_holds_every_complaint_with_its_timings_and_rating(week):
    core, codes = week
    text = await export(core)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].split(",") == list(reports.COLUMNS)
    by_code = {row["code"]: row for row in rows}
    assert list(by_code) == [codes[k] for k in "ABCDE"]  # in the order received
    a, c, d = by_code[codes["A"]], by_code[codes["C"]], by_code[codes["D"]]
    assert (a["received_at"], a["first_response_at"], a["resolved_at"]) == (
        "2026-11-02T08:00:00+07:00", "2026-11-02T10:00:00+07:00", "2026-11-02T11:00:00+07:00")
    assert (a["unit"], a["status"], a["officer"], a["channel"]) == ("tiep-nhan", "resolved", "an", "sms")
    assert (a["response_hours"], a["resolution_hours"], a["answered_on_time"]) == ("2.0", "3.0", "true")
    assert (a["rating"], a["rated_at"], a["apologies"]) == ("2", "2026-11-02T14:00:00+07:00", "0")
    assert a["rating_comment"] == "Chưa hài lòng, gọi 091* *** 678"
    assert (c["status"], c["first_response_at"], c["answered_on_time"], c["apologies"]) == ("new", "", "", "1")
    assert (d["response_hours"], d["answered_on_time"], d["officer"]) == ("70.0", "false", "an")
    for personal in ("+84912345678", PHONE_IN_COMMENT, PHONE_IN_TEXT, "Nước mất ba ngày", "contact_address"):
        assert personal not in text


async def test_contacts_and_texts_only_when_asked_for(week):
    core, codes = week
    text = await export(core, reports.Selection(WEEK.since, WEEK.until, with_contacts=True))
    rows = {row["code"]: row for row in csv.DictReader(io.StringIO(text))}
    a, c, e = rows[codes["A"]], rows[codes["C"]], rows[codes["E"]]
    assert (a["contact_channel"], a["contact_address"]) == ("sms", "+84912345678")
    assert a["rating_comment"] == f"Chưa hài lòng, gọi {PHONE_IN_COMMENT}"
    assert c["text"] == f"Nước mất ba ngày, gọi tôi {PHONE_IN_TEXT}."
    assert (e["contact_channel"], e["contact_address"]) == ("", "")  # an anonymous web form


async def test_json_has_the_same_rows_with_types(week):
    core, codes = week
    rows = json.loads(await export(core, fmt="json"))
    assert [row["code"] for row in rows] == [codes[k] for k in "ABCDE"]
    assert set(rows[0]) == set(reports.COLUMNS)
    assert (rows[0]["rating"], rows[0]["answered_on_time"], rows[0]["response_hours"]) == (2, True, 2.0)
    assert (rows[2]["rating"], rows[2]["answered_on_time"]) == (None, None)
    assert json.loads(await export(core, reports.Selection(date(2026, 1, 1), date(2026, 1, 2)), "json")) == []


async def test_the_dates_are_whole_days_in_the_service_time_zone(week):
    core, _ = week
    core.clock.set(local(2026, 11, 8, 23, 30))
    late_sunday = await file(core, "late", "+84912345010")
    core.clock.set(local(2026, 11, 9, 0, 30))
    early_monday = await file(core, "early", "+84912345011")
    codes = [row["code"] for row in json.loads(await export(core, fmt="json"))]
    assert late_sunday in codes and early_monday not in codes
    monday = [row["code"] for row in json.loads(
        await export(core, reports.Selection(date(2026, 11, 9), date(2026, 11, 9)), "json"))]
    assert monday == [early_monday]


async def test_paging_in_small_chunks_reads_every_row_once(week):
    core, _ = week
    core.clock.set(local(2026, 11, 6, 9, 0))
    for n in range(7):  # the same moment: the pages must break ties by id, not lose or repeat rows
        await file(core, f"same-{n}", f"+8491234{n:04d}")
    whole = await export(core, chunk=reports.CHUNK)
    assert len(whole.splitlines()) == 1 + 12
    assert await export(core, chunk=2) == whole and await export(core, chunk=1) == whole


async def test_a_unit_and_bad_selections(week):
    core, codes = week
    await lifecycle.reassign(core, codes["C"], "dien-luc", by="truong", reason="dung-don-vi")
    rows = json.loads(await export(core, reports.Selection(WEEK.since, WEEK.until, unit="dien-luc"), "json"))
    assert [row["code"] for row in rows] == [codes["C"]]
    for selection in (reports.Selection(WEEK.since, WEEK.until, unit="khong-co"),
                      reports.Selection(WEEK.until, WEEK.since)):
        with pytest.raises(reports.ReportError):
            await export(core, selection)
    with pytest.raises(reports.ReportError):
        await export(core, fmt="xlsx")


def report_command(config, *extra: str) -> list[str]:
    return command("report", "--since", "2026-11-02", "--until", "2026-11-08", "--config", str(config), *extra)


async def test_the_report_command_writes_a_file_and_standard_output(week, database_url, tmp_path):
    _, codes = week
    config = write_config(tmp_path, database_url)
    target = tmp_path / "report.json"
    done = await asyncio.to_thread(subprocess.run, report_command(config, "--format", "json", "--output",
                                                                  str(target)),
                                   cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [row["code"] for row in json.loads(target.read_text(encoding="utf-8"))] == [codes[k] for k in "ABCDE"]
    assert f"wrote 5 complaints to {target}" in done.stderr

    piped = await asyncio.to_thread(subprocess.run, report_command(config, "--unit", "tiep-nhan"),
                                    cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 6
    assert "%|" not in piped.stderr  # no progress bar when nobody watches a terminal

    refused = await asyncio.to_thread(subprocess.run, report_command(config, "--unit", "khong-co", "--output",
                                                                     str(tmp_path / "x.csv")),
                                      cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "no unit 'khong-co'" in refused.stderr
    assert not (tmp_path / "x.csv").exists()


def run_on_a_terminal(args: list[str]) -> tuple[int, bytes]:
    """Run a command with its standard error on a pseudo-terminal; return what the terminal showed."""
    master, slave = pty.openpty()
    # A terminal 100 columns wide, as a person's would be (a new pseudo-terminal has none).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    shown = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        shown += data
    os.close(master)
    return process.wait(timeout=120), shown


async def test_a_progress_bar_on_a_terminal(week, database_url, tmp_path):
    config = write_config(tmp_path, database_url)
    code, shown = await asyncio.to_thread(run_on_a_terminal,
                                          report_command(config, "--output", str(tmp_path / "r.csv")))
    assert code == 0, shown
    assert b"100%" in shown and b"5/5" in shown and b"complaints" in shown
