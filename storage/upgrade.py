"""Bring a store's schema to the newest migration in a process of its own.

``feedback-intake serve`` migrates this way (``upgrade_apart``) so that Alembic and the
migration scripts, about 11 MiB once imported, are never loaded into the serving process,
whose memory under load is held to 150 MB (issue 16). The database URL is handed over on
standard input, never on the command line, where other users of the machine could read
its password.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from storage import db


def upgrade_apart(url: str, busy_timeout_ms: int = 5000) -> None:
    """Migrate ``url`` in a child process (``python -m storage.upgrade``); RuntimeError if it fails."""
    done = subprocess.run([sys.executable, "-m", "storage.upgrade", str(int(busy_timeout_ms))], input=url.encode(),
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"migrating the store failed (exit {done.returncode}); the reason is above")


async def _upgrade(url: str, busy_timeout_ms: int) -> None:
    engine = db.create_engine(url, busy_timeout_ms=busy_timeout_ms, pool_size=1)
    try:
        await db.upgrade(engine)
    finally:
        await engine.dispose()


def main(argv: list[str]) -> int:
    url = sys.stdin.read().strip()
    if not url:
        print("storage.upgrade: the database URL is read from standard input", file=sys.stderr)
        return 2
    try:
        asyncio.run(_upgrade(url, int(argv[1]) if len(argv) > 1 else 5000))
    except Exception as error:  # noqa: BLE001 - one line for the operator, not a traceback with the URL
        reason = str(error).replace(url, "<the database URL>")  # it may hold a password
        print(f"storage.upgrade: {type(error).__name__}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
