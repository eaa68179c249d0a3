"""Interval records from workers' ticks, and the histogram moments: pure data, no sockets."""

from __future__ import annotations

import random

from socktools.flood import stats as st
from socktools.flood.intervals import Intervals


def tick(worker, seq, *, requests=0, phase="traffic", latencies=()):
    rec = st.Recorder()
    for v in latencies:
        rec.record(v)
    return st.Tick(worker=worker, seq=seq, phase=phase, established=10, open=10, failed=0,
                   requests=requests, responses=requests + 10, traffic_responses=requests,
                   bytes_out=requests * 64, bytes_in=requests * 64, errors=0,
                   latency=st.encode(rec.take()))


def test_an_interval_waits_for_every_running_worker_then_merges_exactly():
    out = []
    iv = Intervals(0.5, out.append)
    iv.add(tick(0, 1, requests=100, latencies=[1000] * 100))
    iv.flush([0, 1])
    assert out == []                                  # worker 1 has not reported tick 1
    iv.add(tick(1, 1, requests=50, latencies=[3000] * 50))
    iv.flush([0, 1])
    [rec] = out
    assert rec["requests"] == 150 and rec["rps"] == 300.0
    assert rec["latency"]["count"] == 150
    assert 3.0 <= rec["latency"]["max"] <= 3.003     # 3 significant digits


def test_a_worker_that_skipped_ticks_counts_for_the_intervals_it_spans():
    out = []
    iv = Intervals(1.0, out.append)
    iv.add(tick(0, 1, requests=10))
    iv.add(tick(1, 3, requests=30))                   # busy: ticks 1 and 2 skipped
    iv.add(tick(0, 2, requests=20))
    iv.add(tick(0, 3, requests=30))
    iv.flush([0, 1])
    # Worker 1's work lands in the interval its late tick closes; nothing is counted twice.
    assert [r["requests"] for r in out] == [10, 10, 40]


def test_an_ended_worker_keeps_its_counts_with_nothing_open():
    out = []
    iv = Intervals(1.0, out.append)
    iv.add(tick(0, 1, requests=10))
    iv.add(tick(1, 1, requests=10))
    iv.flush([0, 1])
    iv.end(1)                                         # finished (or lost)
    iv.add(tick(0, 2, requests=15))
    iv.flush([0])
    assert out[-1]["requests"] == 5 and out[-1]["open"] == 10
    assert iv.latest(1).requests == 10


def test_intervals_before_anyone_reported_are_the_connect_phase():
    out = []
    iv = Intervals(1.0, out.append)
    iv.add(tick(0, 2, phase="connect"))
    iv.add(tick(1, 2, phase="connect"))
    iv.flush([0, 1])
    assert [r["phase"] for r in out] == ["connect", "connect"]


def test_moments_equal_hdrhistograms_own_mean_and_stdev():
    rng = random.Random(7)
    for lo, hi in ((1, 2000), (50_000, 20_000_000), (1, 10 ** 12)):
        rec = st.Recorder()
        for _ in range(5000):
            rec.record(rng.randint(lo, hi))
        hist = rec.take()
        mean, stdev = st.moments(hist)
        assert mean == hist.get_mean_value()
        assert abs(stdev - hist.get_stddev()) <= 1e-9 * stdev
