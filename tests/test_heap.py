"""The serving process and the garbage collector (``service/heap.py``): each collection's
pause observed by generation, only while installed."""

from __future__ import annotations

import gc

from bot.metrics import Metrics
from service import heap


def _counts(metrics: Metrics) -> dict[str, float]:
    return {sample.labels["generation"]: sample.value for family in metrics.gc_pauses.collect()
            for sample in family.samples if sample.name.endswith("_count")}


def test_each_collection_is_observed_by_its_generation_while_installed():
    metrics = Metrics()
    pauses = heap.Pauses(metrics.gc_pauses)
    assert _counts(metrics) == {"0": 0, "1": 0, "2": 0}
    pauses.install()
    pauses.install()  # once only
    try:
        for generation in (0, 1, 1, 2, 2, 2):
            gc.collect(generation)
    finally:
        pauses.remove()
    counts = _counts(metrics)
    # Collections the test's own allocations start meanwhile are counted too: at least.
    assert counts["1"] >= 2 and counts["2"] >= 3 and counts["0"] >= 1, counts
    assert counts["2"] <= 3 + 1, counts  # installed once: a collection is not counted twice
    gc.collect(2)
    assert _counts(metrics)["2"] == counts["2"]  # removed: no longer observed
    pauses.remove()  # removing twice is harmless
