"""The benchmarks' one timer (the pattern of faiss' contrib/evaluation.py RepeatTimer), and
how a latency distribution is reported.

    timer = RepeatTimer(warmup=1, runs=5)
    for _ in timer:
        encoder.encode(texts)
    timer.median_s(), timer.min_s()

Each pass of the loop's body is one run; the first `warmup` runs are not kept (a first
call pays for allocations, caches and lazy loading). The loop yields the run's number
(warm-up runs first), for a body that varies its input from run to run.
"""

import statistics
import time
from collections.abc import Iterator, Sequence

import numpy as np


class RepeatTimer:
    """Seconds of each run of a loop's body after `warmup` runs (see the module's
    docstring). The same timer may be looped again: each loop starts afresh."""

    def __init__(self, warmup: int = 0, runs: int = 1) -> None:
        if runs < 1 or warmup < 0:
            raise ValueError(f"a timer needs runs >= 1 and warmup >= 0, got {runs} and {warmup}")
        self.warmup, self.runs = warmup, runs
        self.seconds: list[float] = []

    def __iter__(self) -> Iterator[int]:
        self.seconds = []
        for n in range(self.warmup + self.runs):
            started = time.perf_counter()
            yield n
            if n >= self.warmup:
                self.seconds.append(time.perf_counter() - started)

    def median_s(self) -> float:
        """The median run: what a run usually costs."""
        return statistics.median(self._timed())

    def min_s(self) -> float:
        """The fastest run: what the hardware can do, not what a busy moment allowed."""
        return min(self._timed())

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self._timed(), q) * 1000)

    def _timed(self) -> list[float]:
        if not self.seconds:
            raise ValueError("no run timed yet: loop over the timer first")
        return self.seconds


def percentiles_ms(values_ms: Sequence[float], qs: Sequence[int] = (50, 99)) -> dict[str, float]:
    """A latency distribution as the benchmarks report it: {"p50_ms": ..., "p99_ms": ...},
    in milliseconds to one decimal."""
    values = np.asarray(values_ms, dtype=float)
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 1) for q in qs}
