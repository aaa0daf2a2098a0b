"""The serving process and Python's cyclic garbage collector: the start-up heap frozen out of
its way, and how long each of its runs holds the process.

A full collection (generation 2) walks every container object the process holds, and while
it runs nothing else in the process does: no request is answered, no message sent. Most of
those objects are made at start-up and live as long as the process: modules and their
functions, the message catalogue, phone number metadata, SQLAlchemy's tables and compiled
statements, the channels' routes, about 164,000 of a serving process's 190,000. Under load
(``bench/sms.py``) a full collection came every few seconds, walked them all and held the
event loop about 100 ms each time: most of the slowest 1 % of answers had waited for one
(bench/README.md, "Full collections").

``freeze`` runs once the service has started: a last collection for what start-up left as
garbage, then ``gc.freeze()`` moves every object still alive out of the collector's sight
(the CPython documentation's advice for long-lived start-up objects). Later collections walk
only what was made since; a full one then took 4-27 ms in the benchmarks. The cost: a
start-up object that later becomes garbage in a reference cycle is never collected (one
freed by its reference count is freed as before). That is bounded by the start-up heap and
does not grow with time.

``tune`` then spaces the young collections out: one every ``YOUNG`` container objects
allocated and not yet freed, not every 700 (CPython 3.11's default). Nearly all a request
allocates (SQLAlchemy's statements and rows, aiohttp's request, a parsed mail, the log
record) is freed by its reference count within the request; at 700 a young collection
came every few requests, walked the objects of the requests under way, and moved them on
to the older generations, to be walked again there. At 3,000 the collector's time while
serving halved (``bench/sms.py``: 232-291 → 111-125 ms a run; ``bench/smtp.py``: 319-324 →
209-216 ms) with the young runs still at most 5 ms and the peak RSS within 0-4 MiB of
before (134-136 MiB). At 10,000 it fell further on SMS (to 32-44 ms), but a young run
over parsed mails took up to 25 ms and the SMTP benchmark's peak RSS grew by 6 MiB
(bench/README.md, eleventh session). The older generations keep their thresholds: a
middle collection after ten young, a full one after ten middle.

``Pauses`` records each run's duration, by generation, in the service's metrics
(``feedback_intake_gc_pause_seconds``), so an operator sees what the collector costs the
answers. The callback runs inside the collector, in whichever thread allocated: it only
adds floats to histogram children made beforehand (a float is not tracked by the
collector, so nothing it does can start a collection while it holds a metric's lock).
"""

from __future__ import annotations

import gc
import time

from prometheus_client import Histogram


# Container objects allocated, less those freed, between two young collections (CPython: 700).
YOUNG = 3_000


def tune() -> tuple[int, int, int]:
    """Young collections every ``YOUNG`` net allocations; the older generations' thresholds as
    they were. The thresholds now in force."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)
    return gc.get_threshold()


def freeze() -> int:
    """Collect start-up's garbage and freeze what is left; how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class Pauses:
    """Observes how long each collection takes into ``histogram`` (labelled by generation)
    from ``install()`` to ``remove()``."""

    def __init__(self, histogram: Histogram) -> None:
        self._children = [histogram.labels(str(generation)) for generation in range(3)]
        self._started = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._children[info["generation"]].observe(time.perf_counter() - self._started)

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
