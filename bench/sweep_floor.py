"""The sweep's floor: the least work that does what the sweep guarantees for a backlog of
missed first-response deadlines, on the service's own store (``sweep.py --floor``).

The targets (10,000 overdue complaints in under 1.5 s on SQLite and 1 s on PostgreSQL, at
1,000,000 stored) say nothing of what the database alone costs with this schema.
``sweep.py``'s baseline (one bulk UPDATE of a column and an INSERT of minimal outbox rows,
through SQLAlchemy's executemany) is less than the guarantee; this is the guarantee with
nothing else, on the same store, with no project code and no SQLAlchemy: on SQLite the
standard library's ``sqlite3`` (no event loop either), on PostgreSQL asyncpg alone
(``sweep_floor_postgres``). In batches of 1,000 complaints, one transaction each
(SQLite: ``BEGIN IMMEDIATE`` and the service's pragmas; PostgreSQL: the rows claimed ``FOR
UPDATE SKIP LOCKED``, each write one statement from arrays):

- read the due complaints through ``ix_complaints_next_check_at``, oldest first, joined to
  their contact (the SMS number), and the unit heads' Telegram chats;
- per complaint, the new deadline (one for the whole run: it starts now), an apology to the
  citizen and an escalation to the unit head, each an outbox row with its key, its
  reference where the channel's delivery reports need it (SMS), its text from the
  service's Vietnamese template and a JSON payload;
- the marks that make it happen once (``apologised_for_due``, ``reminded_for_due``, the new
  ``first_response_due``, ``escalation_count``, ``next_check_at``) by one UPDATE (on
  SQLite an ``executemany``), an 'apologised' and an 'escalated' audit event each by one
  INSERT, the two outbox rows each by another; then COMMIT.

It leaves out, against the service: urgency and incidents (a lead's riders), the choice of
contact point among several, reply threads, the staff directory's rules (assignees,
overnight holds), the message's summary and rendering data, working hours in the next
check (here simply two hours before the new deadline), a second lane on PostgreSQL, and
all of SQLAlchemy. Times are written as SQLAlchemy writes them (on SQLite naive UTC
text), so the store stays the service's; ``sweep.reset`` puts it back afterwards.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson

BATCH = 1000
HANOI = ZoneInfo("Asia/Ho_Chi_Minh")
APOLOGY = ("Chúng tôi xin lỗi vì đã để Quý ông/bà chờ đợi. Phản ánh {code} chưa được trả lời đúng hạn; "
           "thời hạn mới dự kiến: {due}.")
ESCALATION = ("Báo cáo lãnh đạo: phản ánh {code} ({unit}) quá hạn trả lời lúc {due} (lần {count}). Đã gửi lời xin "
              "lỗi tới người dân; hạn mới: {new_due}. Cán bộ: {assignee}.")


def stored(moment: datetime) -> str:
    """A time as SQLAlchemy stores it in SQLite: naive UTC, microseconds."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def read_time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


def shown(moment: datetime) -> str:
    return moment.astimezone(HANOI).strftime("%H:%M ngày %d/%m/%Y")


def sweep_floor(path: str, now: datetime, new_due: datetime, busy_timeout_ms: int = 5000,
                checkpoint_pages: int = 20_000) -> int:
    """Apologise to and escalate every complaint due at ``now``; how many were processed."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       f"busy_timeout={busy_timeout_ms}", f"wal_autocheckpoint={checkpoint_pages}"):
            db.execute(f"PRAGMA {pragma}")
        now_stored, new_due_stored = stored(now), stored(new_due)
        next_check = stored(new_due - timedelta(hours=2))
        new_due_shown = shown(new_due)
        done = 0
        while True:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute(
                "SELECT c.id, c.tracking_code, c.unit_id, c.first_response_due, c.escalation_count, k.address "
                "FROM complaints AS c JOIN contacts AS k ON k.id = c.contact_id "
                "WHERE c.next_check_at IS NOT NULL AND c.next_check_at <= ? ORDER BY c.next_check_at LIMIT ?",
                (now_stored, BATCH)).fetchall()
            if not rows:
                db.execute("COMMIT")
                return done
            heads = {unit_id: (chat, name) for unit_id, chat, name in db.execute(
                "SELECT s.unit_id, s.telegram_chat_id, u.name FROM staff AS s JOIN units AS u ON u.id = s.unit_id "
                "WHERE s.role = 'head' AND s.active")}
            marks, events, outbox = [], [], []
            for id_, code, unit_id, missed_stored, count, phone in rows:
                missed = read_time(missed_stored)
                stamp = missed.isoformat()
                count += 1
                marks.append((missed_stored, missed_stored, new_due_stored, count, next_check, id_))
                events.append((id_, now_stored, "system", "apologised",
                               orjson.dumps({"missed_due": stamp, "new_due": new_due.isoformat()}).decode()))
                key = f"apology:{id_}:{stamp}"
                text = APOLOGY.format(code=code, due=new_due_shown)
                outbox.append((key, "fi-" + hashlib.sha256(key.encode()).hexdigest()[:32], "sms", phone, id_,
                               orjson.dumps({"text": text, "language": "vi", "kind": "apology"}).decode()))
                chat, unit = heads[unit_id]
                key = f"escalation:{id_}:{stamp}"
                text = ESCALATION.format(code=code, unit=unit, due=shown(missed), count=count, new_due=new_due_shown,
                                         assignee="chưa phân công")
                outbox.append((key, None, "telegram", str(chat), id_,
                               orjson.dumps({"text": text, "language": "vi", "kind": "escalation"}).decode()))
                events.append((id_, now_stored, "system", "escalated",
                               orjson.dumps({"missed_due": stamp, "count": count}).decode()))
            db.executemany("UPDATE complaints SET apologised_for_due = ?, reminded_for_due = ?, first_response_due = ?, "
                           "escalation_count = ?, next_check_at = ? WHERE id = ?", marks)
            db.executemany("INSERT INTO events (complaint_id, at, actor, kind, detail) VALUES (?, ?, ?, ?, ?)", events)
            db.executemany("INSERT INTO outbox (key, reference, channel, recipient, complaint_id, payload, status, "
                           "attempts, next_attempt_at, created_at, unsure, resent) "
                           f"VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, '{now_stored}', '{now_stored}', 0, 0)", outbox)
            db.execute("COMMIT")
            done += len(rows)
    finally:
        db.close()


async def sweep_floor_postgres(url: str, now: datetime, new_due: datetime) -> int:
    """The same on PostgreSQL with asyncpg alone: the due rows claimed ``FOR UPDATE SKIP
    LOCKED``, and each batch's marks, events and messages written as one statement each from
    one array per column (``unnest``), one transaction a batch, one connection."""
    import asyncpg

    db = await asyncpg.connect(url)
    try:
        next_check = new_due - timedelta(hours=2)
        new_due_shown, new_due_stamp = shown(new_due), new_due.isoformat()
        done = 0
        while True:
            async with db.transaction():
                rows = await db.fetch(
                    "SELECT c.id, c.tracking_code, c.unit_id, c.first_response_due, c.escalation_count, k.address "
                    "FROM complaints AS c JOIN contacts AS k ON k.id = c.contact_id WHERE c.next_check_at <= $1 "
                    "ORDER BY c.next_check_at LIMIT $2 FOR UPDATE OF c SKIP LOCKED", now, BATCH)
                if not rows:
                    return done
                heads = {r["unit_id"]: (r["telegram_chat_id"], r["name"]) for r in await db.fetch(
                    "SELECT s.unit_id, s.telegram_chat_id, u.name FROM staff AS s JOIN units AS u ON u.id = s.unit_id "
                    "WHERE s.role = 'head' AND s.active")}
                ids, missed_dues, counts = [], [], []
                event_ids, kinds, details = [], [], []
                keys, references, channels, recipients, message_ids, payloads = [], [], [], [], [], []
                for id_, code, unit_id, missed, count, phone in rows:
                    stamp = missed.isoformat()
                    count += 1
                    ids.append(id_)
                    missed_dues.append(missed)
                    counts.append(count)
                    event_ids += (id_, id_)
                    kinds += ("apologised", "escalated")
                    details += (orjson.dumps({"missed_due": stamp, "new_due": new_due_stamp}).decode(),
                                orjson.dumps({"missed_due": stamp, "count": count}).decode())
                    chat, unit = heads[unit_id]
                    key = f"apology:{id_}:{stamp}"
                    keys += (key, f"escalation:{id_}:{stamp}")
                    references += ("fi-" + hashlib.sha256(key.encode()).hexdigest()[:32], None)
                    channels += ("sms", "telegram")
                    recipients += (phone, str(chat))
                    message_ids += (id_, id_)
                    payloads += (
                        orjson.dumps({"text": APOLOGY.format(code=code, due=new_due_shown), "language": "vi",
                                      "kind": "apology"}).decode(),
                        orjson.dumps({"text": ESCALATION.format(code=code, unit=unit, due=shown(missed), count=count,
                                                                new_due=new_due_shown, assignee="chưa phân công"),
                                      "language": "vi", "kind": "escalation"}).decode())
                await db.execute(
                    "UPDATE complaints SET apologised_for_due = v.missed, reminded_for_due = v.missed, "
                    "first_response_due = $4, escalation_count = v.count, next_check_at = $5 "
                    "FROM unnest($1::bigint[], $2::timestamptz[], $3::int[]) AS v(id, missed, count) "
                    "WHERE complaints.id = v.id", ids, missed_dues, counts, new_due, next_check)
                await db.execute(
                    "INSERT INTO events (complaint_id, at, actor, kind, detail) "
                    "SELECT v.id, $2, 'system', v.kind, v.detail::json "
                    "FROM unnest($1::bigint[], $3::text[], $4::text[]) AS v(id, kind, detail)",
                    event_ids, now, kinds, details)
                await db.execute(
                    "INSERT INTO outbox (key, reference, channel, recipient, complaint_id, payload, status, attempts, "
                    "next_attempt_at, created_at, unsure, resent) "
                    "SELECT v.key, v.reference, v.channel, v.recipient, v.id, v.payload::json, 'queued', 0, $7, $7, "
                    "false, false FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], "
                    "$6::text[]) AS v(key, reference, channel, recipient, id, payload)",
                    keys, references, channels, recipients, message_ids, payloads, now)
            done += len(rows)
    finally:
        await db.close()


def timed(path: str, now: datetime, new_due: datetime) -> tuple[float, float, int]:
    """``sweep_floor``'s wall time, this process's CPU time meanwhile, and what it processed."""
    started, cpu = time.perf_counter(), time.process_time()
    done = sweep_floor(path, now, new_due)
    return time.perf_counter() - started, time.process_time() - cpu, done


async def timed_postgres(url: str, now: datetime, new_due: datetime) -> tuple[float, float, int]:
    """``sweep_floor_postgres``'s wall time, this process's CPU time meanwhile (not the
    server's), and what it processed."""
    started, cpu = time.perf_counter(), time.process_time()
    done = await sweep_floor_postgres(url, now, new_due)
    return time.perf_counter() - started, time.process_time() - cpu, done
