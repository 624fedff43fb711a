"""Best-of and interleaved timing.

On a machine shared with other work a single measurement is as likely to be
slow as not, so every figure is the best (min) of several reps, and the
sides of a comparison take turns rep by rep (rep 1 of every side, then rep 2
of every side, ...) so a slow spell lands on all of them, not on one.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

from .workers import Worker


def interleave(columns: Sequence[Tuple[str, Worker, str]], n: Dict[str, int], reps: int,
               pause: float = 0.05) -> Dict[str, List[float]]:
    """Time every column (name, worker, mode) ``reps`` times, interleaved: one
    rep of each column in turn (the starting column rotates), sleeping
    ``pause`` s between columns so a spinning thread pool of the previous side
    has gone idle. ``n[name]``: units per rep. Returns the seconds per unit of
    each rep, per column (a column whose worker died keeps what it had)."""
    out: Dict[str, List[float]] = {c[0]: [] for c in columns}
    for r in range(reps):
        order = list(columns[r % len(columns):]) + list(columns[:r % len(columns)]) if columns else []
        for name, w, mode in order:
            res = w.run(n[name], mode)
            if res is not None:
                out[name].append(res["seconds"] / n[name])
            time.sleep(pause)
    return out


def best_times(fns: Dict[str, Callable[[], None]], reps: int, min_time: float,
               clock: Callable[[], float] = time.perf_counter) -> Dict[str, float]:
    """In-process counterpart of :func:`interleave`: after one warm-up call
    each, per rep loop every callable in turn for >= ``min_time`` seconds;
    returns the best seconds per call of each. ``clock``: wall time by
    default; ``time.thread_time`` counts only the CPU time of this thread (for
    direction on a machine shared with other jobs)."""
    best = {k: float("inf") for k in fns}
    for f in fns.values():  # warm-up (page faults, caches)
        f()
    for _ in range(reps):
        for k, f in fns.items():
            n, t0 = 0, clock()
            while True:
                f()
                n += 1
                dt = clock() - t0
                if dt >= min_time:
                    break
            best[k] = min(best[k], dt / n)
    return best


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
