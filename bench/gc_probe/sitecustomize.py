"""The garbage collector's pauses in a serving process, from outside it: for comparing code
that does not report them itself (``feedback_intake_gc_pause_seconds`` came with
``service/heap.py``).

    FEEDBACK_GC_PROBE_DIR=/tmp/gc PYTHONPATH=bench/gc_probe python bench/sms.py ...

Python imports ``sitecustomize`` at start-up in every process that has it on its path; in
each ``serve`` process this one times every collection (``gc.callbacks``) and, at exit,
writes to ``$FEEDBACK_GC_PROBE_DIR/gc.<pid>`` how many collections of each generation ran,
their total, longest and median pause, and each full collection's pause and when it came
(seconds after the process started). Other processes (the benchmark, wrk's helpers) write
nothing. The callback does not call ``gc.get_freeze_count()``: that counts the frozen
objects one by one, at every collection.
"""

import atexit
import gc
import os
import sys
import time

_DIRECTORY = os.environ.get("FEEDBACK_GC_PROBE_DIR")
_T0 = time.perf_counter()
_started = [0.0]
_pauses: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 2: []}


def _callback(phase, info):
    now = time.perf_counter()
    if phase == "start":
        _started[0] = now
    else:
        _pauses[info["generation"]].append(((now - _started[0]) * 1000, now - _T0))


def _write():
    lines = []
    for generation, pauses in _pauses.items():
        ms = sorted(pause for pause, _ in pauses)
        if ms:
            lines.append(f"gen{generation}: n={len(ms)} total={sum(ms):.0f} ms max={ms[-1]:.1f} ms "
                         f"median={ms[len(ms) // 2]:.2f} ms over 20 ms: {sum(1 for m in ms if m > 20)}")
    lines += [f"  full collection {pause:.1f} ms at {at:.1f} s" for pause, at in _pauses[2]]
    with open(os.path.join(_DIRECTORY, f"gc.{os.getpid()}"), "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


if _DIRECTORY and "serve" in sys.argv:
    gc.callbacks.append(_callback)
    atexit.register(_write)
