"""The one timing helper the benchmarks share: the best of a few wall-clock runs."""

from __future__ import annotations

import time


def timed(fn, repeat: int = 1) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn`` (the least disturbed by the machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
