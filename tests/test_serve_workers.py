"""`feedback-intake serve --workers N`, for real: processes sharing one port, the parent
that restarts a worker that dies, and SIGTERM that stops them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import get_form
from tests.test_serve import COMPLAINT, PHONE, command, count_complaints, free_port, wait_healthy, write_config


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not serving either.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


@pytest.fixture
def workers(tmp_path: Path, database_url: str):
    """Start `serve --workers 2`; yields (url, process, log path)."""
    started: list[subprocess.Popen] = []

    def start(extra: str = "") -> tuple[str, subprocess.Popen, Path]:
        port = free_port()
        config = write_config(tmp_path, database_url, port)
        config.write_text(config.read_text(encoding="utf-8") + extra, encoding="utf-8")
        log = tmp_path / "serve.log"
        process = subprocess.Popen(command("serve", "--workers", "2", "--config", str(config)), cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=open(log, "w"), text=True)
        started.append(process)
        return f"http://127.0.0.1:{port}", process, log

    yield start
    for process in started:
        if process.poll() is None:
            for pid in children(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.kill()
            process.wait()


async def answering_workers(url: str, tries: int = 200) -> dict[str, int]:
    """Which workers answer /healthz over fresh connections (the kernel picks one per connection)."""
    seen: dict[str, int] = {}
    for _ in range(tries):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with http.get(f"{url}/healthz") as response:
                assert response.status == 200
                worker = response.headers["X-Worker"]
                seen[worker] = seen.get(worker, 0) + 1
        if len(seen) == 2:
            break
    return seen


async def wait_for_both(url: str, seconds: float = 60) -> None:
    """Until both workers answer (worker 1 starts once worker 0 listens)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if set(await answering_workers(url, tries=20)) == {"0", "1"}:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("not both workers answer")


async def submit(url: str, text: str) -> tuple[str, str | None]:
    """One web-form complaint over fresh connections; (the worker that took the POST, where it redirected)."""
    async with aiohttp.ClientSession(url, cookie_jar=aiohttp.CookieJar(unsafe=True),
                                     connector=aiohttp.TCPConnector(force_close=True)) as http:
        form = dict(await get_form(http), text=text, phone=PHONE)
        async with http.post("/", data=form, allow_redirects=False) as response:
            return response.headers["X-Worker"], response.headers.get("Location") if response.status == 303 else None


async def test_two_workers_share_the_port_take_complaints_and_stop_on_sigterm(workers, database_url):
    smtp_port = free_port()
    # Only worker 0 listens for mail: a second SMTP server on the port would fail to start.
    url, process, log = workers(f'[email]\nenabled = true\nport = {smtp_port}\n')
    await wait_healthy(url, process, seconds=60)
    await wait_for_both(url)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        assert smtp.noop()[0] == 250
    pids = children(process.pid)
    assert len(pids) == 2, pids
    # Either worker files a complaint (the form's key is shared through the store: a form
    # fetched from one worker is accepted by the other).
    results = await asyncio.gather(*(submit(url, f"{COMPLAINT} ({i})") for i in range(24)))
    assert all(location and location.startswith("/track/PA-") for _, location in results), results
    assert {worker for worker, _ in results} == {"0", "1"}
    assert await count_complaints(database_url) == 24
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert not any(alive(pid) for pid in pids)
    text = log.read_text()
    assert "workers stopped" in text and "worker exited" not in text
    assert PHONE not in text and "912345678" not in text


async def test_a_worker_that_dies_is_started_again(workers):
    url, process, log = workers()
    await wait_healthy(url, process, seconds=60)
    await wait_for_both(url)
    [first] = [int(pid) for pid in re.findall(r"worker started worker=1 pid=(\d+)", log.read_text())]
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        again = re.findall(r"worker started worker=1 pid=(\d+)", log.read_text())
        if len(again) == 2:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"worker 1 not started again:\n{log.read_text()[-2000:]}")
    assert "worker exited; starting it again worker=1" in log.read_text()
    assert int(again[1]) != first and int(again[1]) in children(process.pid)
    await wait_for_both(url)  # the new worker listens
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
