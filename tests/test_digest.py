"""Digests for unit heads, from a store seeded through the real lifecycle on an injected
clock: the figures, the text (masked), the chart, the outbox messages, once per period,
the schedule and the catch-up after a restart."""

from __future__ import annotations

import asyncio
import base64
import io
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from PIL import Image
from sqlalchemy import func, select

from bot import charts, crontab, digests, intake, lifecycle, satisfaction
from bot.clock import FrozenClock
from service.config import parse_config
from bot.core import Core
from bot.sweep import sweep
from contract.messages import Inbound
from storage.models import DigestRun, OutboxMessage

HANOI = ZoneInfo("Asia/Ho_Chi_Minh")
UNITS = [{"slug": "tiep-nhan", "name": "Bộ phận tiếp nhận", "name_en": "Reception desk"},
         {"slug": "dien-luc", "name": "Điện lực Cầu Giấy", "name_en": "Cau Giay Power"}]
STAFF = [
    {"slug": "truong", "name": "Trần Trưởng", "unit": "tiep-nhan", "role": "head", "telegram_chat_id": 1001,
     "email": "truong@example.gov.vn"},
    {"slug": "an", "name": "Lê An", "unit": "tiep-nhan", "role": "agent", "telegram_chat_id": 1002},
    {"slug": "binh", "name": "Phạm Bình", "unit": "tiep-nhan", "role": "agent"},
    {"slug": "dl-head", "name": "Hoàng Điện", "unit": "dien-luc", "role": "head", "email": "dien@example.gov.vn"},
]
CONFIG = {"units": UNITS, "staff": STAFF, "satisfaction": {"reopen_on_low_rating": False},
          "routing": {"default_unit": "tiep-nhan"}}
PHONE_IN_TEXT = "0987 654 321"
PHONE_IN_COMMENT = "0912 345 678"


def local(*args) -> datetime:
    return datetime(*args, tzinfo=HANOI)


async def file(core: Core, external_id: str, sender: str | None = None,
               text: str = "Đèn đường hỏng trước số 5 ngõ 12, tối rất nguy hiểm.") -> str:
    channel = "sms" if sender else "web"
    result = await intake.receive(core, Inbound(channel=channel, external_id=external_id, sender=sender, text=text,
                                                received_at=core.clock.now()))
    return result.tracking_code


async def seed_week(core: Core) -> dict[str, str]:
    """Week 45 of 2026 (Monday 2 to Sunday 8 November) in the reception desk, as it happened.

    A: in Mon 08:00, answered Mon 10:00 by An (2 h), resolved Mon 11:00, rated 2 with a phone in the comment.
    B: in Mon 09:00, answered Mon 13:00 by Bình (4 h), resolved Tue 09:00, rated 5.
    C: in Mon 10:00 with a phone in the text, never answered; missed Wed 10:00, apologised: overdue.
    D: in Mon 11:00, missed Wed 11:00 (apologised), answered Thu 09:00 by An (70 h, late); still open.
    E: in Tue 09:00 (web, anonymous), answered Tue 15:00 by An (6 h), resolved Wed 09:00.
    """
    clock: FrozenClock = core.clock
    codes = {}
    clock.set(local(2026, 11, 2, 8, 0))
    codes["A"] = await file(core, "A", "+84912345678")
    await lifecycle.assign(core, codes["A"], "an")
    clock.set(local(2026, 11, 2, 9, 0))
    codes["B"] = await file(core, "B", "+84912345001")
    clock.set(local(2026, 11, 2, 10, 0))
    await lifecycle.answer(core, codes["A"], "an", "Chúng tôi đã cử người kiểm tra.")
    codes["C"] = await file(core, "C", "+84912345002", text=f"Nước mất ba ngày, gọi tôi {PHONE_IN_TEXT}.")
    clock.set(local(2026, 11, 2, 11, 0))
    await lifecycle.resolve(core, codes["A"], "an")
    codes["D"] = await file(core, "D", "+84912345003")
    clock.set(local(2026, 11, 2, 13, 0))
    await lifecycle.answer(core, codes["B"], "binh", "Đã tiếp nhận, đang xử lý.")
    clock.set(local(2026, 11, 2, 14, 0))
    await satisfaction.rate(core, codes["A"], 2, f"Chưa hài lòng, gọi {PHONE_IN_COMMENT}")
    clock.set(local(2026, 11, 3, 9, 0))
    await lifecycle.resolve(core, codes["B"], "binh")
    codes["E"] = await file(core, "E", None)
    clock.set(local(2026, 11, 3, 10, 0))
    await satisfaction.rate(core, codes["B"], 5)
    clock.set(local(2026, 11, 3, 15, 0))
    await lifecycle.answer(core, codes["E"], "an", "Đã sửa xong.")
    clock.set(local(2026, 11, 4, 9, 0))
    await lifecycle.resolve(core, codes["E"], "an")
    clock.set(local(2026, 11, 4, 11, 30))
    assert (await sweep(core)).apologies == 2  # C and D
    clock.set(local(2026, 11, 5, 9, 0))
    await lifecycle.answer(core, codes["D"], "an", "Xin lỗi vì chậm trễ, đã xử lý.")
    clock.set(local(2026, 11, 9, 8, 0))  # Monday: the weekly digest's morning
    return codes


@pytest.fixture
async def staffed(make_core) -> Core:
    return await make_core(CONFIG)


@pytest.fixture
async def week(staffed) -> tuple[Core, dict[str, str]]:
    return staffed, await seed_week(staffed)


def week45(core: Core) -> digests.Period:
    return digests.period_for("weekly", core.clock.now(), core.config.tz)


async def outbox_rows(core: Core, prefix: str = "digest:") -> list[OutboxMessage]:
    async with core.sessions() as session:
        return list((await session.scalars(select(OutboxMessage).where(OutboxMessage.key.startswith(prefix))
                                           .order_by(OutboxMessage.id))).all())


async def digest_runs(core: Core) -> int:
    async with core.sessions() as session:
        return await session.scalar(select(func.count()).select_from(DigestRun))


# ---------------------------------------------------------------------------- periods and schedule

@pytest.mark.parametrize("moment, kind, first, last", [
    (local(2026, 11, 9, 8, 0), "daily", date(2026, 11, 8), date(2026, 11, 8)),
    (local(2026, 11, 9, 0, 30), "daily", date(2026, 11, 8), date(2026, 11, 8)),  # 17:30 UTC the day before
    (local(2026, 11, 8, 23, 59), "daily", date(2026, 11, 7), date(2026, 11, 7)),
    (local(2026, 11, 9, 8, 0), "weekly", date(2026, 11, 2), date(2026, 11, 8)),
    (local(2026, 11, 15, 23, 0), "weekly", date(2026, 11, 2), date(2026, 11, 8)),  # Sunday: last week still
    (local(2027, 1, 4, 8, 0), "weekly", date(2026, 12, 28), date(2027, 1, 3)),  # across the new year
])
def test_a_digest_covers_the_day_or_iso_week_before_in_the_service_time_zone(moment, kind, first, last):
    period = digests.period_for(kind, moment, HANOI)
    assert (period.first_day, period.last_day) == (first, last)
    assert period.start == local(first.year, first.month, first.day).astimezone(timezone.utc)
    assert period.end - period.start == timedelta(days=(last - first).days + 1)


def test_periods_are_named_and_parsed_as_days_and_iso_weeks():
    now = local(2026, 11, 9, 8, 0)
    assert digests.parse_period("2026-W45", now, HANOI) == digests.period_for("weekly", now, HANOI)
    assert digests.parse_period("2026-11-08", now, HANOI) == digests.period_for("daily", now, HANOI)
    assert digests.parse_period("weekly", now, HANOI).name == "2026-W45"
    assert digests.parse_period("2026-11-08", now, HANOI).name == "2026-11-08"
    for bad in ("2026-W54", "yesterday", "2026-13-01", ""):
        with pytest.raises(digests.DigestError):
            digests.parse_period(bad, now, HANOI)


def fires(schedule: str | crontab.Crontab, start: datetime, count: int) -> list[datetime]:
    if isinstance(schedule, str):
        schedule = crontab.Crontab.parse(schedule)
    trigger = schedule.trigger(HANOI)
    out, moment = [], start
    for _ in range(count):
        moment = trigger.get_next_fire_time(None, moment + timedelta(seconds=1))
        out.append(moment.astimezone(HANOI))
    return out


@pytest.mark.parametrize("expression", ["0 8 * * mon-fri", "0 8 * * 1-5"])
def test_the_weekday_schedule_fires_monday_to_friday_at_eight(expression):
    # APScheduler 3 counts weekdays from 0 = Monday; crontab from 0 = Sunday. Both spellings
    # of "weekdays" must fire Monday to Friday, never on the weekend.
    times = fires(expression, local(2026, 11, 1, 12, 0), 10)  # from Sunday noon
    assert [t.isoweekday() for t in times] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert {(t.hour, t.minute) for t in times} == {(8, 0)}
    assert times[0] == local(2026, 11, 2, 8, 0)


def test_the_default_configuration_sends_daily_on_weekdays_and_weekly_on_monday():
    config = parse_config({}, {})
    schedules = dict(digests.schedules(config))
    daily = fires(schedules["daily"], local(2026, 11, 1, 12, 0), 5)
    weekly = fires(schedules["weekly"], local(2026, 11, 1, 12, 0), 3)
    assert [t.isoweekday() for t in daily] == [1, 2, 3, 4, 5]
    assert weekly == [local(2026, 11, 2, 8, 0), local(2026, 11, 9, 8, 0), local(2026, 11, 16, 8, 0)]
    assert dict(digests.schedules(parse_config({"digests": {"weekly_schedule": ""}}, {}))) == \
        {"daily": schedules["daily"]}


def test_a_bad_weekly_schedule_is_a_configuration_problem_naming_the_key():
    from service.config import ConfigError

    with pytest.raises(ConfigError) as error:
        parse_config({"digests": {"weekly_schedule": "0 8 * * 1-9"}}, {})
    assert error.value.problems == ["digests.weekly_schedule: day of week '9' is outside 0-7"]


@pytest.mark.parametrize("field, names", [
    ("*", "*"), ("0", "sun"), ("7", "sun"), ("1", "mon"), ("6", "sat"), ("1-5", "mon,tue,wed,thu,fri"),
    ("0,6", "sun,sat"), ("5-7", "sun,fri,sat"), ("*/2", "sun,tue,thu,sat"), ("1/2", "sun,mon,wed,fri"),
    ("mon-fri", "mon,tue,wed,thu,fri"), ("SAT,sun", "sun,sat"),
])
def test_crontab_weekdays_become_names_apscheduler_reads_the_same_way(field, names):
    assert crontab.weekdays(field) == names


def test_the_catch_up_finds_the_last_time_that_passed_within_the_window():
    trigger = crontab.Crontab.parse("0 8 * * mon-fri").trigger(HANOI)
    day = timedelta(days=1)
    assert crontab.last_fire(trigger, local(2026, 11, 3, 9, 0), day) == local(2026, 11, 3, 8, 0)
    assert crontab.last_fire(trigger, local(2026, 11, 3, 7, 0), day) == local(2026, 11, 2, 8, 0)
    # At the very time, the job itself runs: the catch-up is for times already past, and
    # the day before is a whole day ago, out of the window (as Friday is on a Monday).
    assert crontab.last_fire(trigger, local(2026, 11, 3, 8, 0), day) is None
    assert crontab.last_fire(trigger, local(2026, 11, 2, 8, 0), day) is None
    assert crontab.last_fire(trigger, local(2026, 11, 2, 8, 1), day) == local(2026, 11, 2, 8, 0)


# ---------------------------------------------------------------------------- figures and text

async def test_the_weekly_digest_reports_the_weeks_figures(week):
    core, codes = week
    digest, _ = await digests.preview(core, "tiep-nhan", week45(core))
    f = digest.figures.period
    assert (f.new, f.answered, f.answered_on_time, f.resolved, f.open, f.overdue) == (5, 4, 3, 3, 2, 1)
    assert (f.ratings, f.rating_average) == (2, 3.5)
    # Times to first answer: 2 h, 4 h, 6 h, 70 h. Continuous percentiles (as PostgreSQL's
    # percentile_cont): the median halfway between 4 and 6; the 90th at 2.7 of 3 steps.
    assert f.response_median_seconds == pytest.approx(5 * 3600, abs=1)
    assert f.response_p90_seconds == pytest.approx((6 + 0.7 * 64) * 3600, abs=1)
    assert f.on_time_rate == 0.75
    assert [o.code for o in digest.figures.overdue] == [codes["C"]]
    assert [(r.code, r.rating, r.assignee) for r in digest.figures.lowest] == [(codes["A"], 2, "Lê An")]
    assert [(o.name, o.ratings, o.average) for o in digest.figures.officers] == [("Lê An", 1, 2.0),
                                                                                ("Phạm Bình", 1, 5.0)]


async def test_the_daily_digest_counts_only_its_day(week):
    core, _ = week
    digest, _ = await digests.preview(core, "tiep-nhan", digests.parse_period("2026-11-02", core.clock.now(),
                                                                              core.config.tz))
    f = digest.figures.period
    assert (f.new, f.answered, f.answered_on_time, f.resolved, f.ratings) == (4, 2, 2, 1, 1)
    assert (f.open, f.overdue) == (2, 1)  # where things stand now, whatever the period
    assert f.response_median_seconds == pytest.approx(3 * 3600, abs=1)


async def test_the_digest_text_is_formal_vietnamese_with_personal_data_masked(week):
    core, codes = week
    digest, _ = await digests.preview(core, "tiep-nhan", week45(core))
    text = digest.text
    assert digest.subject == ("Báo cáo tổng hợp hằng tuần: Bộ phận tiếp nhận, tuần 45 năm 2026 "
                              "(từ 02/11/2026 đến 08/11/2026)")
    assert text.startswith(digest.subject + "\nSố liệu tính đến 08:00 ngày 09/11/2026.")
    assert "Trong kỳ: 5 phản ánh mới, 4 phản ánh được trả lời, 3 phản ánh đã giải quyết." in text
    assert "Hiện còn 2 phản ánh đang xử lý, trong đó 1 phản ánh quá hạn." in text
    assert "trung vị 5 giờ; 90% phản ánh được trả lời trong vòng 2 ngày 3 giờ." in text
    assert "Tỷ lệ trả lời đúng hạn: 75,0% (3/4 phản ánh)." in text
    assert "bình quân 3,5/5 (2 lượt đánh giá)" in text
    assert f"• {codes['C']}: tiếp nhận cách đây 6 ngày 22 giờ, cán bộ: chưa phân công. Nước mất ba ngày, " \
           "gọi tôi 098* *** 321." in text
    assert f"• {codes['A']}: 2/5, cán bộ: Lê An. Ý kiến: Chưa hài lòng, gọi 091* *** 678" in text
    assert "• Lê An: 2,0/5 (1 lượt đánh giá)\n• Phạm Bình: 5,0/5 (1 lượt đánh giá)" in text
    for raw in (PHONE_IN_TEXT, PHONE_IN_COMMENT, "+84912345678", "0912345678"):
        assert raw not in text


async def test_the_digest_in_english(week):
    core, _ = week
    digest, _ = await digests.preview(core, "tiep-nhan", week45(core), language="en")
    assert digest.subject == "Weekly digest: Reception desk, week 45 of 2026 (02 Nov 2026 to 08 Nov 2026)"
    assert "Answered on time: 75.0% (3 of 4)." in digest.text
    assert "median 5 h; 90% answered within 2 d 3 h." in digest.text


async def test_a_quiet_unit_has_a_digest_of_nothing(week):
    core, _ = week
    digest, _ = await digests.preview(core, "dien-luc", week45(core))
    f = digest.figures.period
    assert f.quiet and f.on_time_rate is None and f.rating_average is None
    assert "chưa có phản ánh nào được trả lời" in digest.text and "chưa có lượt đánh giá nào" in digest.text
    assert not digest.figures.overdue and not digest.figures.lowest


async def test_percentiles_interpolate_like_percentile_cont_on_every_database(staffed):
    core, clock = staffed, staffed.clock
    # Ten complaints answered after 1..10 hours; then p50 = 5.5 h and p90 = 9.1 h.
    start = local(2026, 11, 2, 8, 0)
    for n in range(1, 11):
        clock.set(start + timedelta(minutes=n))
        code = await file(core, f"P{n}", f"+8491200{n:04d}")
        clock.set(start + timedelta(minutes=n, hours=n))
        await lifecycle.answer(core, code, "an", "Đã xử lý.")
    clock.set(local(2026, 11, 9, 8, 0))
    digest, _ = await digests.preview(core, "tiep-nhan", week45(core))
    assert digest.figures.period.response_median_seconds == pytest.approx(5.5 * 3600, abs=1)
    assert digest.figures.period.response_p90_seconds == pytest.approx(9.1 * 3600, abs=1)


# ---------------------------------------------------------------------------- chart

async def test_the_chart_is_a_png_of_the_expected_size_with_the_weeks_bars(week):
    core, _ = week
    digest, png = await digests.preview(core, "tiep-nhan", week45(core))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.verify()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == charts.SIZE == (800, 450)
    colours = {colour for _, colour in image.getcolors(maxcolors=800 * 450)}
    for hex_colour in (charts.NEW_COLOUR, charts.RESOLVED_COLOUR, charts.ON_TIME_COLOUR):
        assert tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)) in colours, hex_colour
    days = digest.figures.days
    assert len(days) == 30 and days[-1].start == local(2026, 11, 8).astimezone(timezone.utc)
    monday, tuesday = days[-7], days[-6]
    assert (monday.new, monday.resolved, monday.answered, monday.answered_on_time) == (4, 1, 2, 2)
    assert (tuesday.new, tuesday.resolved, tuesday.answered, tuesday.answered_on_time) == (1, 1, 1, 1)
    assert sum(d.new for d in days) == 5 and sum(d.answered for d in days) == 4


def test_the_chart_s_words_are_drawn_in_a_font_with_vietnamese_letters():
    # Pillow's built-in font has no "ả" or "ờ": without the TrueType font the Vietnamese
    # labels would come out as boxes.
    from PIL import ImageFont

    path = charts._font_path()
    assert path is not None and path.name == "DejaVuSans.ttf"
    font = ImageFont.truetype(str(path), charts.FONT_SIZE)
    for letter in "ảờưđệ":
        assert font.getmask(letter).getbbox() is not None, letter


async def test_a_chart_with_no_complaints_is_still_a_chart(week):
    core, _ = week
    _, png = await digests.preview(core, "dien-luc", week45(core))
    assert Image.open(io.BytesIO(png)).size == charts.SIZE


# ---------------------------------------------------------------------------- sending, once

async def test_the_digest_goes_to_the_unit_head_on_telegram_and_email_with_the_chart(week):
    core, _ = week
    outcome = await digests.send(core, "tiep-nhan", week45(core))
    assert (outcome.result, outcome.messages) == ("queued", 2)
    rows = await outbox_rows(core)
    assert sorted((r.channel, r.recipient) for r in rows) == [("email", "truong@example.gov.vn"),
                                                              ("telegram", "1001")]
    for row in rows:
        payload = row.payload
        assert payload["subject"].startswith("Báo cáo tổng hợp hằng tuần: Bộ phận tiếp nhận")
        assert payload["text"].startswith(payload["subject"])
        assert (payload["audience"], payload["kind"]) == ("staff", "digest")
        assert row.key.startswith("digest:weekly:2026-W45:tiep-nhan:")
        [attachment] = payload["attachments"]
        assert (attachment["content_type"], attachment["filename"]) == ("image/png", "digest-tiep-nhan-2026-W45.png")
        assert attachment["content_id"] == digests.CHART_CONTENT_ID
        assert Image.open(io.BytesIO(base64.b64decode(attachment["base64"]))).size == charts.SIZE
        assert row.complaint_id is None
    assert await digest_runs(core) == 1


async def test_a_digest_is_sent_once_per_unit_and_period(week):
    core, _ = week
    period = week45(core)
    assert (await digests.send(core, "tiep-nhan", period)).result == "queued"
    core.clock.advance(hours=1)
    assert (await digests.send(core, "tiep-nhan", period)).result == "already sent"
    assert len(await outbox_rows(core)) == 2 and await digest_runs(core) == 1
    daily = digests.period_for("daily", core.clock.now(), core.config.tz)
    assert (await digests.send(core, "tiep-nhan", daily)).result in ("queued", "already sent")


async def test_concurrent_sends_of_the_same_digest_queue_it_once(week):
    core, _ = week
    period = week45(core)
    outcomes = await asyncio.gather(*[digests.send(core, "tiep-nhan", period) for _ in range(4)])
    assert sorted(o.result for o in outcomes) == ["already sent"] * 3 + ["queued"]
    assert len(await outbox_rows(core)) == 2 and await digest_runs(core) == 1


async def test_a_period_not_over_yet_is_refused(week):
    core, _ = week
    this_week = digests.parse_period("2026-W46", core.clock.now(), core.config.tz)
    with pytest.raises(digests.DigestError):
        await digests.send(core, "tiep-nhan", this_week)
    with pytest.raises(digests.DigestError):
        await digests.send(core, "no-such-unit", week45(core))
    assert await digest_runs(core) == 0


async def test_only_the_configured_channels_are_used(make_core, clock):
    core = await make_core({**CONFIG, "digests": {"channels": ["email"]}})
    await seed_week(core)
    assert (await digests.send(core, "tiep-nhan", week45(core))).messages == 1
    assert [(r.channel, r.recipient) for r in await outbox_rows(core)] == [("email", "truong@example.gov.vn")]


async def test_a_unit_without_a_head_reports_to_the_admins_and_without_either_to_nobody(make_core):
    staff = [m for m in STAFF if m["role"] != "head"]
    core = await make_core({**CONFIG, "staff": staff + [
        {"slug": "admin", "name": "Quản trị", "unit": "dien-luc", "role": "admin", "telegram_chat_id": 9001}]})
    await seed_week(core)
    outcome = await digests.send(core, "tiep-nhan", week45(core))
    assert outcome.result == "queued"
    assert [(r.channel, r.recipient) for r in await outbox_rows(core)] == [("telegram", "9001")]

    lonely = await make_core({**CONFIG, "staff": staff}, FrozenClock(core.clock.now()))
    period = digests.parse_period("2026-W44", lonely.clock.now(), lonely.config.tz)
    assert (await digests.send(lonely, "tiep-nhan", period)).result == "no recipients"


async def test_the_schedule_skips_quiet_units_and_sends_the_others(week):
    core, _ = week
    outcomes = {o.unit: o.result for o in await digests.send_all(core, "weekly")}
    assert outcomes == {"tiep-nhan": "queued", "dien-luc": "quiet"}
    assert await digest_runs(core) == 1
    # Asked for by hand, a quiet digest is sent all the same.
    assert (await digests.send(core, "dien-luc", week45(core))).result == "queued"


async def test_after_a_restart_in_the_middle_the_catch_up_sends_only_what_was_missing(week, make_core):
    core, codes = week
    # Monday 08:00 came while the service was down for one unit's digest: the first unit's
    # went out before the restart, the second unit's did not.
    await lifecycle.reassign(core, codes["D"], "dien-luc", by="truong", reason="dung-don-vi")
    daily = digests.period_for("daily", core.clock.now(), core.config.tz)
    weekly = week45(core)
    assert (await digests.send(core, "tiep-nhan", weekly)).result == "queued"
    before = {r.key for r in await outbox_rows(core)}

    core.clock.set(local(2026, 11, 9, 9, 30))
    restarted = await make_core(CONFIG, FrozenClock(core.clock.now()))
    outcomes = {(o.unit, o.period.kind): o.result for o in await digests.catch_up(restarted)}
    assert outcomes[("tiep-nhan", "weekly")] == "already sent"
    assert outcomes[("dien-luc", "weekly")] == "queued"
    assert daily.kind == "daily" and outcomes[("tiep-nhan", "daily")] in ("quiet", "queued")
    after = [r for r in await outbox_rows(core) if r.key not in before]
    assert {r.recipient for r in after if ":weekly:" in r.key} == {"dien@example.gov.vn"}
    # A second restart finds nothing more to send.
    again = await make_core(CONFIG, FrozenClock(core.clock.now()))
    assert {o.result for o in await digests.catch_up(again)} <= {"already sent", "quiet"}


async def test_the_running_service_catches_up_the_digest_it_missed(make_config, make_core):
    from tests.conftest import start_service

    core = await make_core(CONFIG)
    await seed_week(core)
    clock = FrozenClock(local(2026, 11, 9, 9, 0))  # an hour after Monday's digests were due
    _, runner = await start_service(make_config(CONFIG), clock=clock, run_dispatcher=False)
    try:
        for _ in range(200):
            if any(":weekly:" in r.key for r in await outbox_rows(core)):
                break
            await asyncio.sleep(0.05)
        keys = [r.key for r in await outbox_rows(core)]
    finally:
        await runner.cleanup()
    assert sorted(k for k in keys if ":weekly:" in k) == [
        "digest:weekly:2026-W45:tiep-nhan:1:email", "digest:weekly:2026-W45:tiep-nhan:1:telegram"]


async def test_the_digest_reads_a_units_rows_through_its_per_unit_indexes(week):
    """The migrated schema has the model's indexes on complaints, and no statement the digest
    runs scans the complaints table (each reads index ranges: the unit's rows of the period
    or of the chart's days, its open ones, the open ones by age), as the database plans it."""
    import re

    from sqlalchemy import event, inspect

    from storage.models import Complaint

    core, _ = week
    async with core.engine.connect() as conn:
        migrated = await conn.run_sync(lambda sync: {ix["name"] for ix in inspect(sync).get_indexes("complaints")})
    declared = {index.name for index in Complaint.__table__.indexes}
    assert {"ix_complaints_unit_first_response", "ix_complaints_unit_resolved", "ix_complaints_unit_rated"} <= declared
    assert declared <= migrated

    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "complaints" in statement:
            statements.append((statement, parameters))

    event.listen(core.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with core.sessions() as session, session.begin():
            digest = await digests.compose(core, session, "tiep-nhan", week45(core), core.clock.now())
    finally:
        event.remove(core.engine.sync_engine, "before_cursor_execute", record)
    assert digest.figures.period.overdue and digest.figures.overdue and digest.figures.lowest  # every query ran
    assert len(statements) >= 10

    sqlite = core.engine.dialect.name == "sqlite"
    used: set[str] = set()
    async with core.engine.connect() as conn:
        if not sqlite:
            # An empty table's plan says little about a million rows' (bench/README.md has
            # those); here only that an index serves each statement at all.
            await conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in statements:
            rows = (await conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement,
                                               parameters)).all()
            plan = "\n".join(str(row[-1]) for row in rows)
            if sqlite:
                assert not re.search(r"\bSCAN complaints(?! USING)", plan), (statement, plan)
            else:
                assert "Seq Scan on complaints" not in plan, (statement, plan)
            used |= set(re.findall(r"ix_complaints_\w+", plan))
    if sqlite:  # SQLite plans without statistics the same on 5 rows as on a million
        assert {"ix_complaints_unit_created", "ix_complaints_unit_first_response", "ix_complaints_unit_resolved",
                "ix_complaints_unit_rated", "ix_complaints_unit_queue", "ix_complaints_open_created"} <= used, used