"""What the benchmarks share: free ports, the service's command, server processes they
start and stop, waiting for health, and counting rows in the store afterwards."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


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
