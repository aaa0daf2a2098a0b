"""The real command, in its own process: `feedback-intake serve`, `db upgrade`, and SIGTERM."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from service import heap
from tests.conftest import get_form

COMPLAINT = "Rác thải đổ trộm ở đầu ngõ 34 phố Hoàng Quốc Việt đã một tuần chưa được thu gom."
PHONE = "0912345678"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder: Path, database_url: str, port: int, auto_upgrade: bool = True) -> Path:
    path = folder / "feedback.toml"
    path.write_text(
        f'[storage]\nurl = "{database_url}"\nauto_upgrade = {str(auto_upgrade).lower()}\n'
        f'[web]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    return path


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


async def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 30) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(int(seconds * 10)):
            if process.poll() is not None:
                raise AssertionError(f"serve exited early: {process.stderr.read()}")
            try:
                async with http.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("serve did not become healthy")


async def count_complaints(database_url: str) -> int:
    from sqlalchemy import func, select

    from storage.db import create_engine
    from storage.models import Complaint

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.scalar(select(func.count()).select_from(Complaint))
    finally:
        await engine.dispose()


@pytest.fixture
def serve(tmp_path: Path, database_url: str):
    """Start `feedback-intake serve` on a free port; yields (url, process)."""
    processes: list[subprocess.Popen] = []

    def start(auto_upgrade: bool = True, url: str | None = None) -> tuple[str, subprocess.Popen]:
        port = free_port()
        config = write_config(tmp_path, url or database_url, port, auto_upgrade)
        process = subprocess.Popen(command("serve", "--config", str(config)), cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        return f"http://127.0.0.1:{port}", process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


async def submit(http: aiohttp.ClientSession, text: str) -> str | None:
    form = dict(await get_form(http), text=text, phone=PHONE)
    async with http.post("/", data=form, allow_redirects=False) as response:
        return response.headers["Location"] if response.status == 303 else None


async def test_serve_takes_a_complaint_and_stops_cleanly_on_sigterm(serve, database_url):
    url, process = serve()
    await wait_healthy(url, process)
    async with aiohttp.ClientSession(url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        location = await submit(http, COMPLAINT)
        assert location and location.startswith("/track/PA-")
        async with http.get(location) as response:
            assert response.status == 200
            assert COMPLAINT not in await response.text()  # the citizen's text is not public
        # Submissions in flight when SIGTERM arrives are either refused or stored: never
        # answered 303 and then lost.
        in_flight = [asyncio.create_task(submit(http, f"{COMPLAINT} ({i})")) for i in range(20)]
        await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    accepted = [o for o in outcomes if isinstance(o, str)]
    assert await count_complaints(database_url) == 1 + len(accepted)
    assert "stopped" in stderr
    # Logs are one line per event and never show a citizen's phone number.
    assert PHONE not in stderr and "+84912345678" not in stderr and "912345678" not in stderr


def metric(exposition: str, name: str) -> float | None:
    """A sample's value in Prometheus' text format (None when absent)."""
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


async def test_serve_freezes_its_start_up_heap_spaces_young_collections_and_reports_the_pauses(serve):
    """Once started, the objects start-up made are frozen out of the collector's way (full
    collections held the event loop about 100 ms each under load), young collections come
    every ``heap.YOUNG`` objects, not every 700, and each collection's pause is in /metrics,
    by generation."""
    url, process = serve()
    await wait_healthy(url, process)
    async with aiohttp.ClientSession(url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for n in range(3):
            assert (await submit(http, f"{COMPLAINT} ({n})") or "").startswith("/track/PA-")
        async with http.get("/metrics") as response:
            assert response.status == 200
            exposition = await response.text()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    # Modules, the catalogue, phone metadata, SQLAlchemy's tables: well over ten thousand.
    assert (metric(exposition, "feedback_intake_gc_frozen_objects") or 0) > 10_000
    # The thresholds in force, as the process read them back after setting them.
    started = [line for line in stderr.splitlines() if "service.app started " in line]
    assert len(started) == 1 and f"gc_thresholds={heap.YOUNG}/10/10" in started[0], started
    # Three complaints still allocate more than one young generation's worth of objects.
    assert (metric(exposition, 'feedback_intake_gc_pause_seconds_count{generation="0"}') or 0) >= 1
    assert metric(exposition, 'feedback_intake_gc_pause_seconds_count{generation="2"}') is not None


async def test_db_upgrade_migrates_a_fresh_database(tmp_path, database_url):
    if database_url.startswith("sqlite"):
        # A database file that was never migrated: serve without auto_upgrade has no tables.
        fresh = tmp_path / "fresh.db"
        database_url = f"sqlite+aiosqlite:///{fresh}"
        config = write_config(tmp_path, database_url, free_port(), auto_upgrade=False)
        result = subprocess.run(command("db", "upgrade", "--config", str(config)), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        assert "database at revision" in result.stdout
        tables = {row[0] for row in sqlite3.connect(fresh).execute("SELECT name FROM sqlite_master")}
        assert {"complaints", "messages", "outbox", "events", "contacts"} <= tables
    else:
        config = write_config(tmp_path, database_url, free_port(), auto_upgrade=False)
        result = subprocess.run(command("db", "upgrade", "--config", str(config)), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr


def test_every_command_has_help():
    for args in (["--help"], ["serve", "--help"], ["check-config", "--help"], ["db", "upgrade", "--help"]):
        result = subprocess.run(command(*args), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and "usage: feedback-intake" in result.stdout, args


def test_serve_refuses_a_bad_configuration(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[web]\nport = "eighty"\n', encoding="utf-8")
    result = subprocess.run(command("serve", "--config", str(bad)), capture_output=True, text=True, timeout=30,
                            env={k: v for k, v in os.environ.items() if k != "FEEDBACK_INTAKE_CONFIG"})
    assert result.returncode == 2
    assert "web.port" in result.stderr


def imported_by_serving(*packages: str) -> list[str]:
    """The modules of these packages that importing what ``serve`` imports loads."""
    names = ", ".join(repr(p) for p in packages)
    found = subprocess.run([sys.executable, "-c", "import sys, service.cli, service.app, service.commands; "
                            f"print(sorted(m for m in sys.modules if m.split('.')[0] in ({names},)))"],
                           capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    return ast.literal_eval(found.stdout)


async def test_serve_migrates_in_a_process_of_its_own_and_never_loads_alembic(tmp_path, serve):
    """Alembic (about 11 MiB) is imported only by the migration's own process: everything
    the serving process imports leaves it out, and serve still migrates a fresh store."""
    assert imported_by_serving("alembic", "mako") == []
    fresh = tmp_path / "fresh" / "feedback.db"
    url, process = serve(url=f"sqlite+aiosqlite:///{fresh}")
    await wait_healthy(url, process)
    tables = {row[0] for row in sqlite3.connect(fresh).execute("SELECT name FROM sqlite_master")}
    assert {"complaints", "messages", "outbox", "alembic_version"} <= tables


async def test_the_serving_process_loads_pillow_only_with_a_photo(tmp_path, serve):
    """Pillow (2.3 MiB resident) is imported by the first photo checked or shown, not by
    serving: a running service that has seen no photo has not mapped Pillow's C library."""
    assert imported_by_serving("PIL") == []
    url, process = serve(url=f"sqlite+aiosqlite:///{tmp_path / 'feedback.db'}")
    await wait_healthy(url, process)
    libraries = Path(f"/proc/{process.pid}/maps").read_text()
    assert "sqlite3" in libraries  # the check reads the right process's libraries
    assert "PIL" not in libraries and "_imaging" not in libraries


def test_a_failed_migration_stops_serve_and_does_not_show_the_database_password(tmp_path):
    config = write_config(tmp_path, "postgresql+asyncpg://feedback:s3cr3t-pass@127.0.0.1:1/nowhere", free_port())
    result = subprocess.run(command("serve", "--config", str(config)), cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "storage.upgrade:" in result.stderr and "migrating the store failed" in result.stderr
    assert "s3cr3t-pass" not in result.stderr + result.stdout
