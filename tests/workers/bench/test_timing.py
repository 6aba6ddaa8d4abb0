"""The benchmarks' one timer (workers/bench/timing.py)."""

import time

import pytest

from workers.bench.timing import RepeatTimer, percentiles_ms


def test_warm_up_runs_are_not_kept_and_each_run_is_numbered():
    timer = RepeatTimer(warmup=2, runs=3)
    seen = []
    for n in timer:
        seen.append(n)
        time.sleep(0.03 if n < 2 else 0.001)  # slow warm-up runs, as a first call is
    assert seen == [0, 1, 2, 3, 4]
    assert len(timer.seconds) == 3
    assert timer.min_s() <= timer.median_s() < 0.02  # the slow warm-up left out
    assert 0 < timer.percentile_ms(50) < 20


def test_a_timer_looped_again_starts_afresh():
    timer = RepeatTimer(runs=2)
    for _ in timer:
        pass
    for _ in timer:
        time.sleep(0.01)
    assert len(timer.seconds) == 2 and timer.min_s() >= 0.01


def test_a_timer_refuses_nonsense_and_reading_before_any_run():
    with pytest.raises(ValueError, match="runs >= 1"):
        RepeatTimer(runs=0)
    with pytest.raises(ValueError, match="loop over the timer first"):
        RepeatTimer().median_s()


def test_latencies_are_reported_as_p50_and_p99_in_ms():
    assert percentiles_ms(list(range(1, 101))) == {"p50_ms": 50.5, "p99_ms": 99.0}
