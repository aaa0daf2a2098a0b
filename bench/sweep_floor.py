"""The sweep's floor on SQLite: the least work that does what the sweep guarantees for a
backlog of missed first-response deadlines, on the service's own store (``sweep.py --floor``).

The target (10,000 overdue complaints in under 1.5 s at 1,000,000 stored) says nothing of
what the database alone costs with this schema. ``sweep.py``'s baseline (one bulk UPDATE of
a column and an INSERT of minimal outbox rows) is less than the guarantee; this is the
guarantee with nothing else, written with the standard library's ``sqlite3`` on the same
file (no project code, no SQLAlchemy, no event loop), in batches of 1,000 complaints, one
transaction each (``BEGIN IMMEDIATE``, the service's pragmas):

- read the due complaints through ``ix_complaints_next_check_at``, oldest first, joined to
  their contact (the SMS number), and the unit heads' Telegram chats;
- per complaint, the new deadline (one for the whole run: it starts now), an apology to the
  citizen and an escalation to the unit head, each an outbox row with its key, its
  reference where the channel's delivery reports need it (SMS), its text from the
  service's Vietnamese template and a JSON payload;
- the marks that make it happen once (``apologised_for_due``, ``reminded_for_due``, the new
  ``first_response_due``, ``escalation_count``, ``next_check_at``) by one ``executemany``
  UPDATE, an 'apologised' and an 'escalated' audit event each by one INSERT, the two outbox
  rows each by another; then COMMIT.

It leaves out, against the service: urgency and incidents (a lead's riders), the choice of
contact point among several, reply threads, the staff directory's rules (assignees,
overnight holds), the message's summary and rendering data, working hours in the next
check (here simply two hours before the new deadline), and all of SQLAlchemy. Times are
written as SQLAlchemy writes them to SQLite (naive UTC text), so the store stays the
service's; ``sweep.reset`` puts it back afterwards.
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


def timed(path: str, now: datetime, new_due: datetime) -> tuple[float, float, int]:
    """``sweep_floor``'s wall time, this process's CPU time meanwhile, and what it processed."""
    started, cpu = time.perf_counter(), time.process_time()
    done = sweep_floor(path, now, new_due)
    return time.perf_counter() - started, time.process_time() - cpu, done
