"""What the benchmarks share: free ports, the service's command, server processes they
start and stop, waiting for health, and counting rows in the store afterwards."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

LOCAL_HOSTS = ("127.0.0.1",)
# This machine's PostgreSQL server, for --postgres (each benchmark makes and drops its database).
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Complaints as citizens write them, for the benchmarks' load and seed data.
TEXTS = (
    "Đèn đường ngõ 12 phố Trần Duy Hưng hỏng ba hôm nay, buổi tối rất tối và nguy hiểm.",
    "Rác thải ở đầu ngõ 45 Nguyễn Chí Thanh không được thu gom từ thứ Hai, bốc mùi rất khó chịu. "
    "Đề nghị phường cho xe đến thu gom sớm.",
    "Nắp cống trước số nhà 88 đường Láng bị vỡ, xe máy đi qua rất dễ sụp bánh. Xin cơ quan chức năng "
    "sớm thay nắp cống mới trước khi có tai nạn xảy ra, nhất là vào giờ tan tầm khi đường đông.",
    "Nhà hàng xóm hát karaoke đến 1 giờ sáng nhiều đêm liền, ảnh hưởng giấc ngủ của cả khu tập thể.",
    "Hồ sơ đăng ký hộ kinh doanh nộp từ ba tuần trước nhưng chưa có kết quả, tra cứu trực tuyến "
    "không thấy cập nhật trạng thái. Mong bộ phận một cửa phản hồi.",
    "Water has been cut off in our building for two days without notice; please tell us when it returns.",
)


def log(message: str = "") -> None:
    """Print a line at once (the benchmarks run long)."""
    print(message, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_command() -> list[str]:
    """The venv's ``feedback-intake`` script, else the one on PATH."""
    beside = Path(sys.executable).with_name("feedback-intake")
    found = str(beside) if beside.exists() else shutil.which("feedback-intake")
    if not found:
        raise SystemExit("feedback-intake not found: activate the project's virtualenv (pip install -e .)")
    return [found]


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    expected_status: int = 200
    process: subprocess.Popen | None = None
    _log: object = None

    def start(self, cwd: Path) -> None:
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def cpu_seconds(self) -> float | None:
        """user + system CPU time of the server process so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError, AttributeError):
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL as a last resort; returns the exit code."""
        code = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  {self.name}: did not stop within {timeout:.0f} s of SIGTERM; killing", file=sys.stderr)
                self.process.kill()
                code = self.process.wait()
        elif self.process is not None:
            code = self.process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


async def wait_healthy(server: Server, timeout: float = 60.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{server.port}/healthz"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.name} not healthy after {timeout:.0f} s:\n{server.log_tail()}")


# --- load generator ------------------------------------------------------------------------

def _plain_pg(url: str) -> str:
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


def sqlite_path(url: str) -> Path:
    return Path(url.split(":///", 1)[1].split("?", 1)[0])


async def store_query(url: str, queries: dict[str, str]) -> dict[str, int] | None:
    """Run count queries on the store; None when its tables do not exist yet."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if not path.exists():
            return None
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return {name: connection.execute(sql).fetchone()[0] for name, sql in queries.items()}
        except sqlite3.OperationalError:
            return None
        finally:
            connection.close()
    import asyncpg

    connection = await asyncpg.connect(_plain_pg(url))
    try:
        return {name: await connection.fetchval(sql) for name, sql in queries.items()}
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await connection.close()


def plain_pg_url(url: str) -> str:
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


def check_local(url: str) -> None:
    host = make_url(url).host
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"refusing database host {host!r}: this benchmark only uses 127.0.0.1")


@dataclass
class Database:
    """Where the benchmark runs: a SQLite file in a temp folder, or a PostgreSQL database."""

    url: str
    kind: str  # sqlite | postgresql
    admin_url: str | None = None
    name: str | None = None
    folder: Path | None = None
    created: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace, prefix: str) -> Database:
        """From --postgres (and --admin-url), --database-url, or else a temporary SQLite file."""
        database_url = getattr(args, "database_url", None)
        if args.postgres and database_url:
            raise SystemExit("give --postgres or --database-url, not both")
        if args.postgres:
            check_local(args.admin_url)
            name = f"fi_bench_{prefix}_{uuid.uuid4().hex[:10]}"
            base = plain_pg_url(args.admin_url).rsplit("/", 1)[0]
            url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
            return cls(url, "postgresql", admin_url=args.admin_url, name=name)
        if database_url:
            url = database_url
            if url.startswith("sqlite"):
                raise SystemExit("for SQLite leave out --database-url: a temp file is made and removed")
            if not url.startswith("postgresql+asyncpg://"):
                raise SystemExit("--database-url must be postgresql+asyncpg://...@127.0.0.1:5432/<name>")
            check_local(url)
            name = make_url(url).database or ""
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
                raise SystemExit(f"database name {name!r}: use lowercase letters, digits and '_'")
            admin = plain_pg_url(url).rsplit("/", 1)[0] + "/postgres"
            return cls(url, "postgresql", admin_url=admin, name=name)
        folder = Path(tempfile.mkdtemp(prefix=f"fi-bench-{prefix}-"))
        return cls(f"sqlite+aiosqlite:///{folder / 'feedback.db'}", "sqlite", folder=folder)

    async def create(self) -> None:
        if self.kind != "postgresql":
            return
        import asyncpg

        admin = await asyncpg.connect(plain_pg_url(self.admin_url))
        try:
            try:
                await admin.execute(f'CREATE DATABASE "{self.name}"')
            except asyncpg.DuplicateDatabaseError:
                raise SystemExit(f"database {self.name!r} exists already; refusing to use (and drop) it") from None
            self.created = True
        finally:
            await admin.close()

    async def drop(self, keep: bool) -> None:
        if self.kind == "sqlite":
            if keep:
                log(f"kept SQLite store: {self.folder}")
            elif self.folder:
                shutil.rmtree(self.folder, ignore_errors=True)
            return
        if not self.created:
            return
        if keep:
            log(f"kept PostgreSQL database {self.name!r}; drop it with DROP DATABASE \"{self.name}\"")
            return
        import asyncpg

        admin = await asyncpg.connect(plain_pg_url(self.admin_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            log(f"dropped PostgreSQL database {self.name!r}")
        finally:
            await admin.close()

    async def size(self, core) -> str:
        """The store's size on disk."""
        if self.kind == "sqlite" and self.folder:
            total = sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
            return f"{total / 2**20:.0f} MiB (db + wal)"
        async with core.engine.connect() as conn:
            total = (await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar()
        return f"{total / 2**20:.0f} MiB"
