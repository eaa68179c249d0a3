#!/usr/bin/env python3
"""flood's histogram summary against hdrhistogram's own mean and stddev, side by side.

flood summarises one histogram per interval in the runner -- the loop that also
watches for Ctrl-C -- and several more for every report.  hdrhistogram's
``get_mean_value()`` / ``get_stddev()`` walk every bucket up to the maximum in
Python; ``socktools.flood.stats.moments`` sums the non-zero buckets only.  This
script builds latency histograms of increasing spread (a lognormal body around
~160 us, a tail out to the given maximum), checks that both give the same
numbers, and prints the time of each and the ratio.  The target: a summary of
a one-second interval must take well under that second (here: under 100 ms for
a tail reaching 10 s), so the runner never falls behind its intervals.

Usage:
  python benchmarks/bench_summary.py            # 5 runs each, ~30 s
  python benchmarks/bench_summary.py --runs 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from socktools.flood import stats as st


def histogram(samples: int, tail_ns: int, seed: int):
    rng = random.Random(seed)
    hist = st.new_histogram()
    for _ in range(samples):
        hist.record_value(int(rng.lognormvariate(12, 1.0)) + 1)
    for i in range(1, 11):   # a sparse tail up to tail_ns
        hist.record_value(tail_ns * i // 10)
    return hist


def timed(fn, runs: int) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--samples", type=int, default=50_000)
    args = ap.parse_args()
    print(f"{'tail to':>10} {'buckets':>8} {'hdrh mean+stddev':>17} {'moments':>9} {'ratio':>7}  same")
    worst = 0.0
    for tail_ms in (1, 10, 200, 10_000):
        hist = histogram(args.samples, tail_ms * 1_000_000, seed=tail_ms)
        ref = (hist.get_mean_value(), hist.get_stddev())
        ours = st.moments(hist)
        same = abs(ref[0] - ours[0]) <= 1e-9 * ref[0] and abs(ref[1] - ours[1]) <= 1e-6 * ref[1]
        slow = timed(lambda: (hist.get_mean_value(), hist.get_stddev()), args.runs)
        fast = timed(lambda: st.moments(hist), args.runs)
        worst = max(worst, fast)
        nonzero = sum(1 for c in hist.counts if c)
        print(f"{tail_ms:>8}ms {nonzero:>8,} {slow * 1000:>14.1f} ms {fast * 1000:>6.1f} ms "
              f"{slow / fast:>6.0f}x  {'yes' if same else 'NO'}")
    print(f"target: moments under 100 ms at every spread: {'met' if worst < 0.1 else 'NOT met'} "
          f"(worst {worst * 1000:.1f} ms; the machine may be shared, rerun when quiet)")


if __name__ == "__main__":
    main()
