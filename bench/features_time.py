"""What ``match.features`` costs a text: the benchmarks' texts and a storm's.

Intake reduces each new complaint to its features once (bench/README.md, "Kinds of event in
one pass over the words"). Prints the best of five passes, in µs a text, for the six texts
the benchmarks send (``common.TEXTS``) and for 2,000 storm texts (``common.storm_text``, as
``--distinct-texts`` sends them). ``python bench/features_time.py`` measures this checkout's
code; ``PYTHONPATH=<another checkout> python bench/features_time.py`` that checkout's (its
``bot`` and ``bench.common`` come first), for a before and after in the same hour.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # after PYTHONPATH: see above

from bench.common import TEXTS, storm_text  # noqa: E402
from bot.incidents import match  # noqa: E402


def per_text(texts: list[str], passes: int = 5) -> float:
    """The best pass's time a text, in µs."""
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        for text in texts:
            match.features(text)
        best = min(best, (time.perf_counter() - started) / len(texts) * 1e6)
    return best


def main() -> int:
    rng = random.Random(7)
    storm = [storm_text(rng, number) for number in range(2000)]
    for name, texts in (("the benchmarks' six texts", list(TEXTS)), ("2,000 storm texts", storm)):
        print(f"{name}: {per_text(texts):.1f} µs a text")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
