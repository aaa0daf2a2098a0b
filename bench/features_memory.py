"""Memory the incident matcher's features cache takes when a storm's texts all differ.

The intake benchmarks send a handful of texts again and again, so the cache of decoded
features (``bot/incidents/candidates.py``, ``FEATURE_CACHE``) holds a few entries there.
Here N distinct texts (random mixes of the benchmarks' words, each with its own house
number and coordinates) are stored as intake stores them and read back as the candidate
search reads them; the process's RSS is read before and after.

    python bench/features_memory.py [--texts 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import TEXTS  # noqa: E402
from bot.incidents import candidates, match  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000)
    args = parser.parse_args()
    words = " ".join(TEXTS).split()
    rng = random.Random(1)
    stored = []
    for i in range(args.texts):
        found = match.features(" ".join(rng.choice(words) for _ in range(25)) + f" so {i}")
        stored.append((json.dumps(found.to_json()), 21.0 + rng.random() / 10, 105.8 + rng.random() / 10))
    before = rss_mib()
    for data, latitude, longitude in stored:
        candidates._features(data, latitude, longitude)
    after = rss_mib()
    print(f"{args.texts} distinct features read; cache holds {len(candidates._known)} "
          f"(cap {candidates.FEATURE_CACHE}); RSS +{after - before:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
