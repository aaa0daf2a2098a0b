"""Group py-spy's collapsed stacks (``py-spy record --format raw``) of the serving process into
where a complaint's CPU goes: HTTP, parsing, validation, routing, incident grouping, other
domain work, database (by the function that issued the statements), outbox claim and update,
outbound HTTP (or the SMTP relay), logging, metrics.

    python bench/profile_split.py /tmp/sms.txt --requests 1234 [--cpu-seconds 9.1] [--rate 200]

Each stack (root first) is put in one bucket: the frame nearest the leaf that belongs to a
known library or module decides (so a JSON decode inside the Zalo webhook is parsing, an
``hmac`` call inside the Twilio check is validation, a SQLAlchemy execute is database), then
the stack's context refines it: database work under the outbox dispatcher is "outbox claim
and update"; database work is further split by the nearest project function above it. The
event loop waiting in ``epoll`` and aiosqlite's thread waiting for its next call are idle
(py-spy counts them as active with --nonblocking) and left out. With --cpu-seconds (the process's CPU measured from /proc over the same time) the
shares are applied to that, else to the samples / rate.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]+?)(?::\d+)?\)$")
PROJECT = re.compile(r"^(bot|channels|service/(?!cli|commands|app)|storage|contract)/")

# (bucket, file pattern), tried on each frame from the leaf up; the first that matches decides.
MARKERS = [
    ("logging", re.compile(r"^(logging/|bot/logs\.py)")),
    ("metrics", re.compile(r"^(prometheus_client/|bot/metrics\.py)")),
    ("outbound (HTTP, SMTP relay)", re.compile(r"^(aiohttp/(client|connector|client_proto|client_reqrep|tracing)|"
                                               r"aiosmtplib/|smtplib\.py|"
                                 r"channels/[a-z]+/(sender|twilio|generic|api|client|relay)\.py:(\w+\.)?send|yarl/)")),
    ("database", re.compile(r"^(sqlalchemy/|aiosqlite/|asyncpg/|greenlet|storage/|sqlite3)")),
    ("parsing", re.compile(r"^(multidict/|urllib/parse\.py|json/|email/|"
                           r"aiohttp/(multipart|formdata|web_request)\.py)")),
    ("validation", re.compile(r"^(hmac\.py|hashlib|phonenumbers/|email_validator/|twilio/|pydantic/|"
                              r"channels/sms/(common|twilio|generic|webhook)\.py|channels/web/(form|csrf|open311)\.py|"
                              r"channels/zalo/|contract/fields\.py|bot/guard\.py)")),
    ("routing", re.compile(r"^bot/(routing|directory)\.py")),
    ("incident grouping", re.compile(r"^bot/incidents/")),
    ("HTTP/SMTP server (aiohttp, aiosmtpd, asyncio)",
     re.compile(r"^(aiohttp/|aiosmtpd/|asyncio/streams\.py|service/edge\.py)")),
]
DISPATCH = re.compile(r"^bot/(dispatcher|delivery)\.py")
IDLE = {"EpollSelector.select", "select", "Queue.get", "Condition.wait", "Event.wait"}
ORDER = ["HTTP/SMTP server (aiohttp, aiosmtpd, asyncio)", "parsing", "validation", "routing", "incident grouping",
         "domain (other bot/)", "database", "database: SQLite engine (aiosqlite thread)", "outbox claim and update",
         "outbound (HTTP, SMTP relay)", "dispatcher (other)", "logging", "metrics",
         "socket reads (any connection: HTTP, database, gateways)", "event loop (other)"]


def _aiosqlite_wait_line() -> int | None:
    """The line where aiosqlite's worker thread waits for the next call (``tx.get()``): a C
    call, so py-spy's leaf is that Python line, and with --nonblocking it cannot tell the
    wait from work. Samples there are idle, not "running SQLite"."""
    try:
        import inspect

        import aiosqlite.core
        lines, first = inspect.getsourcelines(aiosqlite.core._connection_worker_thread)
    except (ImportError, AttributeError, OSError, TypeError):
        return None
    return next((first + i for i, line in enumerate(lines) if "tx.get()" in line), None)


AIOSQLITE_WAIT = _aiosqlite_wait_line()


def waiting_in_aiosqlite(leaf: str, wait_line: int | None = AIOSQLITE_WAIT) -> bool:
    """True for a stack whose leaf is aiosqlite's worker thread waiting for work."""
    return wait_line is not None and leaf.strip() == f"_connection_worker_thread (aiosqlite/core.py:{wait_line})"


def parse_frame(frame: str) -> tuple[str, str]:
    found = FRAME.match(frame.strip())
    if not found:
        return frame.strip(), ""
    path = found["file"]
    # py-spy shortens site-packages paths to "package/module.py"; the standard library too.
    return found["function"], path


def bucket_of(frames: list[tuple[str, str]]) -> tuple[str, str | None]:
    """(bucket, detail) for one stack, root first."""
    if frames and frames[-1][0] in IDLE:
        return "idle", None
    files = [f"{path}:{function}" for function, path in frames]
    in_thread = bool(frames) and frames[0][0].startswith("Thread._bootstrap")
    if in_thread and any(path.startswith("aiosqlite/") for _, path in frames):
        if any(function == "BaseEventLoop.call_soon_threadsafe" for function, _ in frames):
            return "database: SQLite engine (aiosqlite thread)", "handing the result back (waking the event loop)"
        return "database: SQLite engine (aiosqlite thread)", "running SQLite (" + frames[-1][0] + ")"
    dispatching = any(DISPATCH.match(path) for _, path in frames)
    bucket = None
    index = -1
    for index in range(len(frames) - 1, -1, -1):
        if files[index].startswith(("asyncio/selector_events.py", "asyncio/transports.py")):
            continue  # a socket's send or receive belongs to whoever called it
        for name, pattern in MARKERS:
            if pattern.match(files[index]):
                bucket = name
                break
        if bucket:
            break
    if bucket is None:
        functions = {function for function, _ in frames}
        if functions & {"BaseSelectorEventLoop._read_from_self", "BaseSelectorEventLoop._write_to_self"}:
            return "database", "the event loop woken by a thread (aiosqlite's results)"
        if frames and frames[-1][0].startswith("_SelectorSocketTransport._read_ready"):
            return "socket reads (any connection: HTTP, database, gateways)", None
        project = [i for i, (_, path) in enumerate(frames) if PROJECT.match(path)]
        if project:
            function, path = frames[project[-1]]
            bucket = "dispatcher (other)" if dispatching else "domain (other bot/)"
            return bucket, f"{path}:{function}"
        return "event loop (other)", None
    if bucket == "database":
        # The statement's issuer: the nearest project frame above the first database frame.
        first_db = next(i for i, f in enumerate(files) if MARKERS[3][1].match(f))
        callers = [frames[i] for i in range(first_db) if PROJECT.match(frames[i][1])]
        detail = f"{callers[-1][1]}:{callers[-1][0]}" if callers else statement_kind(frames)
        if dispatching:
            return "outbox claim and update", detail
        return "database", detail
    if dispatching and bucket not in ("outbound (HTTP, SMTP relay)", "logging", "metrics"):
        return "dispatcher (other)", f"{frames[index][1]}:{frames[index][0]}"
    return bucket, None


# SQLAlchemy runs an AsyncSession's statements in a greenlet, whose stack py-spy shows without the
# coroutine that awaits it: for those, name the kind of statement from SQLAlchemy's own frames.
STATEMENT_KINDS = [
    ("_BulkORMInsert", "INSERT (ORM bulk insert; caller not on the greenlet's stack)"),
    ("_BulkORMUpdate", "UPDATE (ORM bulk update; caller not on the greenlet's stack)"),
    ("_BulkUDCompileState", "UPDATE/DELETE (ORM; caller not on the greenlet's stack)"),
    ("_get_crud_kv_pairs", "INSERT/UPDATE parameters (ORM; caller not on the greenlet's stack)"),
    ("commit", "COMMIT"),
    ("_connection_for_bind", "BEGIN / connection from the pool"),
    ("_load_on_pk_identity", "SELECT by primary key (Session.get)"),
    ("_AbstractORMCompileState", "SELECT (ORM; caller not on the greenlet's stack)"),
    # SQLAlchemy Core's own execution (cache key, parameters through the columns' types):
    # named apart from aiosqlite's ``Connection._execute``, which it contains.
    ("Connection._execute_clauseelement", "SQLAlchemy Core: cache key and parameters (caller not on the greenlet's stack)"),
    ("Connection._execute", "aiosqlite: handing a call to its thread", "aiosqlite/"),
    ("Connection.cursor", "aiosqlite: handing a call to its thread", "aiosqlite/"),
]


def statement_kind(frames: list[tuple[str, str]]) -> str:
    for marker, kind, *within in STATEMENT_KINDS:
        prefix = within[0] if within else ""  # where the function must be, for a name two libraries share
        if any(marker in function and path.startswith(prefix) for function, path in frames):
            return kind
    return "other SQLAlchemy / driver work, caller not on the stack"


def split(text: str, rate: float = 200.0) -> dict:
    """{bucket: samples}, {bucket: Counter(detail: samples)}, idle samples, active samples."""
    buckets: Counter = Counter()
    details: dict[str, Counter] = {}
    idle = 0
    for line in text.splitlines():
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            samples = int(count)
        except ValueError:
            continue
        parts = stack.split(";")
        if parts and parts[0].startswith("process "):
            parts = parts[1:]
        if parts and parts[0].startswith("thread "):
            parts = parts[1:]
        frames = [parse_frame(p) for p in parts if p]
        bucket, detail = ("idle", None) if parts and waiting_in_aiosqlite(parts[-1]) else bucket_of(frames)
        if bucket == "idle":
            idle += samples
            continue
        buckets[bucket] += samples
        if detail:
            details.setdefault(bucket, Counter())[detail] += samples
    return {"buckets": buckets, "details": details, "idle": idle, "rate": rate}


def render(result: dict, requests: int, cpu_seconds: float | None = None, top: int = 8) -> str:
    buckets, details, rate = result["buckets"], result["details"], result["rate"]
    active = sum(buckets.values())
    if not active or not requests:
        return "  (no samples or no requests)"
    total_ms = (cpu_seconds if cpu_seconds is not None else active / rate) * 1000 / requests
    basis = "measured CPU (/proc)" if cpu_seconds is not None else f"samples at {rate:g}/s"
    lines = [f"  CPU per complaint: {total_ms:.2f} ms ({basis}; {active} active samples, {result['idle']} idle "
             f"(epoll, aiosqlite waiting) left out, {requests} requests)",
             f"  {'bucket':46} {'share':>6} {'ms/complaint':>13}"]
    for name in ORDER + sorted(set(buckets) - set(ORDER)):
        if not buckets.get(name):
            continue
        share = buckets[name] / active
        lines.append(f"  {name:46} {share:6.1%} {share * total_ms:13.3f}")
        for detail, samples in details.get(name, Counter()).most_common(top):
            lines.append(f"      {detail[:70]:70} {samples / active:6.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--requests", type=int, required=True, help="requests answered while it was recorded")
    parser.add_argument("--cpu-seconds", type=float, default=None, help="the process's CPU over the same time")
    parser.add_argument("--rate", type=float, default=200.0, help="py-spy --rate (default 200)")
    args = parser.parse_args(argv)
    with open(args.file, encoding="utf-8", errors="replace") as source:
        print(render(split(source.read(), args.rate), args.requests, args.cpu_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
