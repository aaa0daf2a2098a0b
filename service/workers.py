"""``feedback-intake serve --workers N``: N serving processes on one port, and a parent that
keeps them running.

Each worker is a whole ``serve`` process with its own event loop, listening on the same
host and port with ``SO_REUSEPORT``: the kernel spreads new connections over them, so a
machine's cores share the intake. The parent only starts, watches and stops them:

* worker 0 starts first and alone: it migrates the schema and syncs units, staff and
  rules; the others start once it listens, and find both done;
* worker 0 is the *primary*: it alone runs what must run once per deployment or cannot
  share a port: the scheduler (sweeps, digests, surveys), the SMTP server and Telegram
  polling. Every worker takes HTTP requests (forms, webhooks, Open311, the desk) and runs
  an outbox dispatcher under its own name (``[outbox] worker_name`` or host:port, then
  ``#index``), so one worker's restart takes back only its own claims;
* SIGTERM or SIGINT to the parent goes to every worker; each finishes the requests in
  flight and stops (as ``serve`` does), and the parent waits for them all, killing one
  that is still running after ``[web] shutdown_timeout_seconds`` and a margin;
* a worker that exits on its own is logged with its exit code and started again, after a
  pause that grows while it keeps dying young.

On PostgreSQL any worker may take any request: intake's unique constraints, the
outbox's ``FOR UPDATE SKIP LOCKED`` claims and the workers table already let several
processes share one database. On SQLite the workers share one file: WAL lets them read
at once, ``BEGIN IMMEDIATE`` (tried every millisecond, ``storage/sqlite_driver.py``) and
``[storage] busy_timeout_ms`` make their writers queue on the file's lock, so it is
correct, but the writes stay one at a time: more workers add little there.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# How long worker 0 may take to migrate, sync and listen before the parent gives up.
START_TIMEOUT_SECONDS = 120.0
# Pause before starting a worker again; doubled while it keeps dying within YOUNG_SECONDS.
RESTART_PAUSE_SECONDS = 1.0
RESTART_PAUSE_MAX_SECONDS = 30.0
YOUNG_SECONDS = 10.0
# Beyond the configured shutdown timeout, what a worker gets to close before it is killed.
STOP_MARGIN_SECONDS = 15.0


@dataclass(frozen=True)
class Slot:
    """Which worker a serving process is: its index of how many, and whether it is the primary."""

    index: int = 0
    count: int = 1

    @property
    def primary(self) -> bool:
        """Worker 0 runs the singletons: scheduler, SMTP server, Telegram polling."""
        return self.index == 0

    @property
    def shared_port(self) -> bool:
        """True when other workers listen on the same port (SO_REUSEPORT)."""
        return self.count > 1


@dataclass
class _Worker:
    slot: Slot
    process: subprocess.Popen | None = None
    started: float = 0.0
    pause: float = RESTART_PAUSE_SECONDS
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    """Starts N workers, restarts one that dies, and stops them all on SIGTERM/SIGINT."""

    count: int
    config_path: str | None
    shutdown_timeout: float
    workers: list[_Worker] = field(default_factory=list)
    stopping: bool = False

    def command(self, slot: Slot, ready_fd: int | None) -> list[str]:
        """The command line of one worker: ``serve`` with its slot (and a pipe to say it listens)."""
        argv = [sys.executable, "-m", "service.cli", "serve", "--worker", f"{slot.index}/{slot.count}"]
        if ready_fd is not None:
            argv += ["--ready-fd", str(ready_fd)]
        if self.config_path:
            argv += ["--config", self.config_path]
        return argv

    def start(self, worker: _Worker, wait: bool) -> bool:
        """Start one worker; with ``wait``, return only when it listens (False: it did not)."""
        if not wait:
            worker.process = subprocess.Popen(self.command(worker.slot, None))
            worker.started, worker.restart_at = time.monotonic(), None
            log.info("worker started", extra={"fields": {"worker": worker.slot.index, "pid": worker.process.pid}})
            return True
        read_fd, write_fd = os.pipe()
        try:
            worker.process = subprocess.Popen(self.command(worker.slot, write_fd), pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        worker.started, worker.restart_at = time.monotonic(), None
        log.info("worker started", extra={"fields": {"worker": worker.slot.index, "pid": worker.process.pid}})
        try:
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while not self.stopping and time.monotonic() < deadline:
                ready, _, _ = select.select([read_fd], [], [], 0.2)
                if ready:
                    return os.read(read_fd, 16) != b""  # EOF: it exited before listening
                if worker.process.poll() is not None:
                    return False
            return False
        finally:
            os.close(read_fd)

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit code of the whole service."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.workers = [_Worker(Slot(index, self.count)) for index in range(self.count)]
        log.info("starting workers", extra={"fields": {"workers": self.count}})
        if not self.start(self.workers[0], wait=True):
            if not self.stopping:
                log.error("worker 0 did not start; stopping", extra={"fields": {
                    "code": self.workers[0].process.poll()}})
            self.stop()
            return 0 if self.stopping else 1
        for worker in self.workers[1:]:
            self.start(worker, wait=False)
        while not self.stopping:
            self._watch()
            time.sleep(0.2)
        self.stop()
        return 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _watch(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None:
                if now >= worker.restart_at:
                    worker.restarts += 1
                    self.start(worker, wait=False)
                continue
            code = worker.process.poll() if worker.process is not None else None
            if code is None:
                continue
            young = now - worker.started < YOUNG_SECONDS
            worker.pause = min(worker.pause * 2, RESTART_PAUSE_MAX_SECONDS) if young else RESTART_PAUSE_SECONDS
            worker.restart_at = now + worker.pause
            log.error("worker exited; starting it again", extra={"fields": {
                "worker": worker.slot.index, "pid": worker.process.pid, "code": code,
                "in_seconds": round(worker.pause, 1)}})

    def stop(self) -> None:
        """SIGTERM to every running worker, wait for all, kill one that outlives the timeout."""
        running = [w.process for w in self.workers if w.process is not None and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + STOP_MARGIN_SECONDS
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker did not stop in time; killed", extra={"fields": {"pid": process.pid}})
                process.kill()
                process.wait()
        log.info("workers stopped", extra={"fields": {"workers": len(running)}})


def parse_slot(value: str) -> Slot:
    """``--worker I/N`` as a Slot."""
    index, _, count = value.partition("/")
    slot = Slot(int(index), int(count))
    if not 0 <= slot.index < slot.count:
        raise ValueError(f"worker {value}: the index must be below the count")
    return slot
