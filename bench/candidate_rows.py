"""The CPU of reading the incident candidate search's rows: the time of each row converted
by the ORM (``storage.models.UTCDateTime``) as before 2026-12-06, or read as the driver gives
it (``bot.incidents.candidates.COLUMNS``), alternately, on a store kept by
``bench/incidents.py --keep`` (SQLite).

    python bench/incidents.py --keep            # prints the store's folder
    python bench/candidate_rows.py DIR [--rows 300] [--runs 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Text, cast, select, text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine  # noqa: E402

from bot.incidents import candidates  # noqa: E402
from storage.models import Complaint  # noqa: E402

CONVERTED = (Complaint.id, Complaint.tracking_code, Complaint.incident_id, Complaint.created_at, Complaint.latitude,
             Complaint.longitude, cast(Complaint.match_features, Text).label("match_features"))


async def main(folder: Path, rows: int, runs: int, rounds: int) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{folder / 'feedback.db'}")
    try:
        async with AsyncSession(engine) as session:
            for _ in range(rounds):
                for name, columns in (("times converted by the ORM", CONVERTED),
                                      ("times as stored (candidates.COLUMNS)", candidates.COLUMNS)):
                    statement = select(*columns).where(text(candidates.OPEN_CONDITION)) \
                        .order_by(Complaint.created_at.desc()).limit(rows)
                    await session.execute(statement)  # compiled and cached
                    started, count = time.process_time(), 0
                    for _ in range(runs):
                        count += len((await session.execute(statement)).all())
                    print(f"{name:40s} {(time.process_time() - started) / count * 1e6:5.2f} µs of CPU a row "
                          f"({count} rows, both threads)")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.store, args.rows, args.runs, args.rounds))
