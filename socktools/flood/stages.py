"""Load stages (``--stages 10s:100,30s:500,10s:0``): the ramp's arithmetic, without I/O.

k6's ``stages``: the traffic starts from 0 open connections (and, when the stages carry a
rate, from 0 requests/s) and moves linearly to each stage's target over the stage's duration;
the traffic lasts the sum of the durations.  This module answers three questions for the
worker's ramp controller and the open loop's pacer, given the time since the traffic began:

* :func:`conns_at` -- how many connections should be open (a whole number, per worker share);
* :func:`rate_at` -- the request rate's target;
* :func:`due_ns` / :func:`scheduled` -- when the n-th request is due: the n-th (counting from
  1) is due when the integral of the rate reaches n, so a run schedules
  ``floor(integral of the rate over the stages)`` requests.

Per-worker shares are the ones flood uses for ``--conns`` and ``--rate``: connection numbers
are dealt round-robin (worker ``w`` of ``W`` holds numbers ``w, w+W, ...``), so of a target of
``N`` connections worker ``w`` holds ``len(range(w, N, W))``; its rate is the stage rate times
its share of the pool (``conns_of(w) / conns``).
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple, Optional

__all__ = ["Stage", "parse", "total", "peak_conns", "peak_rate", "conns_at", "rate_at",
           "integral", "due_ns", "scheduled", "MAX_STAGES", "MIN_STAGE"]

#: Stages at most: a ramp of more steps than this is a script, not an option (k6 users write a
#: handful); it also bounds the linear scans below, done once per controller step.
MAX_STAGES = 100

#: The shortest stage, in seconds: the ramp controller adjusts the open connections every
#: :data:`socktools.flood.worker.RAMP_STEP` (50 ms); a shorter stage would be skipped whole.
MIN_STAGE = 0.05

#: Slack for float rounding when a schedule's integral lands on a whole number of requests
#: (1e-6 requests: far below one request, far above a double's error at a day's rate).
_EPS = 1e-6

_NS = 1_000_000_000

# A stage's duration: the CLI's spelling (10s, 500ms, 2m, 1.5); the CLI's own parser is in
# cli/, which flood may not import.
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


class Stage(NamedTuple):
    duration: float          # seconds
    conns: int               # open connections at the stage's end
    rate: Optional[float]    # requests/s at the stage's end (None: the stages set no rate)


def parse(text: str) -> tuple:
    """``"10s:100,30s:500:2000"`` -> Stages.  Raises ValueError saying what is wrong.

    Every stage has a duration and a connection target; either every stage has a rate (a third
    field) or none has."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(f"expected DURATION:CONNS[:RATE] stages separated by commas, not {text!r}")
    if len(parts) > MAX_STAGES:
        raise ValueError(f"at most {MAX_STAGES} stages, not {len(parts)}")
    stages = []
    for p in parts:
        fields = p.split(":")
        if len(fields) not in (2, 3):
            raise ValueError(f"stage {p!r}: expected DURATION:CONNS or DURATION:CONNS:RATE")
        try:
            duration = parse_duration(fields[0])
        except ValueError:
            raise ValueError(f"stage {p!r}: {fields[0]!r} is not a duration (e.g. 10s, 500ms, 1m)") from None
        if not fields[1].isdigit():
            raise ValueError(f"stage {p!r}: {fields[1]!r} is not a number of connections")
        rate = None
        if len(fields) == 3:
            try:
                rate = float(fields[2])
            except ValueError:
                rate = -1.0
            if not rate >= 0 or math.isinf(rate):
                raise ValueError(f"stage {p!r}: {fields[2]!r} is not a rate (requests/s, >= 0)")
        stages.append(Stage(duration, int(fields[1]), rate))
    return check(tuple(stages))


def check(stages: tuple) -> tuple:
    """Stages (tuples of duration, conns, rate) as :class:`Stage`, or ValueError."""
    stages = tuple(Stage(float(d), int(c), None if r is None else float(r)) for d, c, r in stages)
    if not stages or len(stages) > MAX_STAGES:
        raise ValueError(f"give 1 to {MAX_STAGES} stages")
    for s in stages:
        if s.duration < MIN_STAGE:
            raise ValueError(f"each stage lasts at least {MIN_STAGE * 1000:g}ms (the ramp's step), "
                             f"not {s.duration:g}s")
        if s.conns < 0 or (s.rate is not None and s.rate < 0):
            raise ValueError("stage targets must be >= 0")
    if len({s.rate is None for s in stages}) > 1:
        raise ValueError("give every stage a rate (DURATION:CONNS:RATE) or none")
    if peak_conns(stages) < 1:
        raise ValueError("at least one stage needs a connection target above 0")
    if stages[0].rate is not None and peak_rate(stages) <= 0:
        raise ValueError("at least one stage needs a rate above 0")
    return stages


def total(stages: tuple) -> float:
    return sum(s.duration for s in stages)


def peak_conns(stages: tuple) -> int:
    return max(s.conns for s in stages)


def peak_rate(stages: tuple) -> Optional[float]:
    return None if stages[0].rate is None else max(s.rate for s in stages)


def _at(stages: tuple, t: float, field: int) -> float:
    """The linear ramp of ``field`` (1: conns, 2: rate) at ``t`` seconds, from 0 at t=0."""
    start = 0.0
    before = 0.0
    for s in stages:
        if t < start + s.duration:
            frac = max(0.0, t - start) / s.duration
            return before + (s[field] - before) * frac
        start += s.duration
        before = s[field]
    return before


def conns_at(stages: tuple, t: float, worker: int = 0, workers: int = 1) -> int:
    """Open connections worker ``worker`` of ``workers`` should hold ``t`` s into the traffic:
    its share (the round-robin deal of connection numbers) of the whole run's target, which is
    the ramp rounded to the nearest whole connection."""
    n = math.floor(_at(stages, t, 1) + 0.5)
    return len(range(worker, n, workers))


def rate_at(stages: tuple, t: float, share: float = 1.0) -> float:
    """The rate's target ``t`` s into the traffic (times ``share``: a worker's part)."""
    return _at(stages, t, 2) * share


def integral(stages: tuple, t: float, share: float = 1.0) -> float:
    """Requests the ramped rate schedules in the first ``t`` seconds (times ``share``)."""
    done = 0.0
    start = 0.0
    before = 0.0
    for s in stages:
        d = min(max(0.0, t - start), s.duration)
        # the area under a line from ``before`` to the stage's rate, over d of its duration
        done += before * d + (s.rate - before) * d * d / (2 * s.duration)
        start += s.duration
        before = s.rate
        if t <= start:
            break
    return done * share


def scheduled(stages: tuple, share: float = 1.0) -> int:
    """Requests a whole run schedules: ``floor`` of the rate's integral over the stages."""
    return math.floor(integral(stages, total(stages), share) + _EPS)


def due_ns(stages: tuple, n: int, share: float = 1.0) -> Optional[int]:
    """When the ``n``-th request (from 1) is due, in ns since the traffic began: the moment the
    rate's integral (times ``share``) reaches ``n``; None if it never does within the stages."""
    if share <= 0:
        return None
    want = n / share              # in whole-run requests
    start = 0.0
    before = 0.0
    for s in stages:
        area = (before + s.rate) * s.duration / 2
        if want <= area + _EPS:
            a = (s.rate - before) / (2 * s.duration)   # area(tau) = a tau^2 + before tau
            if abs(a) < 1e-12:
                tau = want / before if before > 0 else 0.0
            else:
                # the root in [0, duration]; written to avoid cancellation when a is small
                tau = 2 * want / (before + math.sqrt(max(0.0, before * before + 4 * a * want)))
            return int((start + min(max(tau, 0.0), s.duration)) * _NS)
        want -= area
        start += s.duration
        before = s.rate
    return None
