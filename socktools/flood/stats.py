"""Statistics of a flood run: latency histograms, counters and the failure tally.

Pure data: nothing here reads a clock, prints or touches a socket.  Times are
integers of nanoseconds that the caller measured (``time.perf_counter_ns``).

Histograms are HdrHistograms (1 ns .. 1 day, 3 significant digits), merged by
addition and carried between processes in their standard encoded form, so the
percentiles of a multi-worker run are those of all samples together -- never
an average of per-worker percentiles.

Recording cost matters: at 150,000 round trips/s per worker a plain
``HdrHistogram.record_value`` (~1.5 us of Python) would cost more than the
rest of the round trip.  :class:`Recorder` keeps the counts in a plain list,
indexed exactly as HdrHistogram indexes its own counts array (see
:func:`counts_index`), so recording is a few integer operations and the
conversion to an HdrHistogram happens once per snapshot, not once per sample.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional

from hdrh.histogram import HdrHistogram

__all__ = ["LOWEST", "HIGHEST", "SIGNIFICANT", "COUNTS_LEN", "counts_index", "Recorder",
           "new_histogram", "encode", "decode", "summarize", "WorkerStats", "Tick", "Totals",
           "merge", "add_tally", "tally_total", "HISTOGRAMS", "traffic_ended"]

#: Histogram range: 1 ns to one day (a run is bounded well below that), with
#: 3 significant digits -- the resolution wrk2 and tcpkali report.
LOWEST = 1
HIGHEST = 86_400 * 1_000_000_000
SIGNIFICANT = 3

# With lowest=1 and 3 significant digits HdrHistogram uses sub-buckets of 2048
# (2**11) entries, of which the upper half (1024, 2**10) is new per bucket.
_SUB_BITS = 11
_HALF_BITS = 10

#: Histograms a worker keeps, by name.
HISTOGRAMS = ("connect", "first_reply", "latency", "latency_uncorrected", "send_lag", "handshake", "open")


def counts_index(value: int) -> int:
    """Index of ``value`` in HdrHistogram's counts array (lowest 1, 3 digits).

    Equal to ``HdrHistogram(1, HIGHEST, 3)._counts_index_for(value)``; written
    out because the worker's hot path inlines it.
    """
    shift = value.bit_length() - _SUB_BITS
    return (shift << _HALF_BITS) + (value >> shift) if shift > 0 else value


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST, HIGHEST, SIGNIFICANT)


#: Length of the counts array (the same for every histogram of this shape).
COUNTS_LEN = new_histogram().counts_len
_MAX_INDEX = COUNTS_LEN - 1


class Recorder:
    """Cheap recording of nanosecond values; an exact HdrHistogram on demand.

    ``counts`` is public so that a hot loop can inline :func:`counts_index`
    and do ``counts[i] += 1`` itself (an ``IndexError`` means the value is
    beyond :data:`HIGHEST`: call :meth:`record` for it, which clamps).
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = [0] * COUNTS_LEN

    def record(self, value: int) -> None:
        """Record one value in nanoseconds (negative counts as 0, huge as :data:`HIGHEST`)."""
        idx = counts_index(value) if value > 0 else 0
        self.counts[idx if idx <= _MAX_INDEX else _MAX_INDEX] += 1

    def take(self) -> Optional[HdrHistogram]:
        """The values recorded since the last take, as an HdrHistogram (None if none); resets.

        The reset is in place: a hot loop may hold a reference to ``counts``.
        """
        counts = self.counts
        nonzero = list(itertools.compress(range(COUNTS_LEN), counts))
        if not nonzero:
            return None
        hist = new_histogram()
        target = hist.counts
        total = 0
        for i in nonzero:
            c = counts[i]
            counts[i] = 0
            target[i] = c
            total += c
        hist.set_internal_tacking_values(nonzero[0], nonzero[-1], total)
        return hist

    def total(self) -> int:
        """Values recorded since the last take."""
        return sum(self.counts)


def encode(hist: Optional[HdrHistogram]) -> Optional[str]:
    """The standard compressed, base64 form (``HISTFAAA...``), or None for an empty histogram."""
    if hist is None or hist.get_total_count() == 0:
        return None
    blob = hist.encode()
    return blob.decode("ascii") if isinstance(blob, bytes) else blob


def decode(blob: Optional[str]) -> Optional[HdrHistogram]:
    if not blob:
        return None
    return HdrHistogram.decode(blob)


def add_into(total: Optional[HdrHistogram], other: Optional[HdrHistogram]) -> Optional[HdrHistogram]:
    """``total + other`` (either may be None); adds in place when ``total`` exists."""
    if other is None or other.get_total_count() == 0:
        return total
    if total is None:
        total = new_histogram()
    total.add(other)
    return total


#: Percentiles every report shows.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def median_of_index(index: int) -> int:
    """The value hdrh's mean and stdev use for counts index ``index``: the middle of its bucket.

    Equal to ``hist._hdr_median_equiv_value(hist.get_value_from_index(index))`` for
    this shape (lowest 1, 3 digits), without two method calls per bucket.
    """
    bucket = (index >> _HALF_BITS) - 1
    sub = (index & ((1 << _HALF_BITS) - 1)) + (1 << _HALF_BITS)
    if bucket < 0:
        sub -= 1 << _HALF_BITS
        bucket = 0
    return (sub << bucket) + ((1 << bucket) >> 1)


def moments(hist: HdrHistogram) -> tuple:
    """(mean, stdev) in nanoseconds, equal to ``get_mean_value()`` / ``get_stddev()``.

    hdrh computes those with its recorded-value iterator, which walks every bucket
    up to the maximum in Python: ~0.7 s each for a histogram reaching 200 ms,
    long enough for the runner to fall behind its one-per-second interval
    records and never get back to its Ctrl-C check.  The same sums over the
    non-zero buckets only (a few hundred) take about a millisecond.
    """
    counts = hist.counts
    nonzero = itertools.compress(range(len(counts)), counts)
    pairs = [(counts[i], median_of_index(i)) for i in nonzero]
    total = sum(c for c, _ in pairs)
    if not total:
        return 0.0, 0.0
    mean = sum(c * v for c, v in pairs) / total
    var = sum(c * (v - mean) * (v - mean) for c, v in pairs) / total
    return mean, math.sqrt(var)


def summarize(hist: Optional[HdrHistogram]) -> Optional[dict]:
    """count/min/mean/stdev/p50/p90/p99/p99.9/max of a histogram, in microseconds."""
    if hist is None or hist.get_total_count() == 0:
        return None
    us = 1000.0
    mean, stdev = moments(hist)
    out = {"count": hist.get_total_count(),
           "min": round(hist.get_min_value() / us, 3),
           "mean": round(mean / us, 3),
           "stdev": round(stdev / us, 3)}
    values = hist.get_percentile_to_value_dict(list(PERCENTILES))
    for p in PERCENTILES:
        out[f"p{p:g}"] = round(values[p] / us, 3)
    out["max"] = round(hist.get_max_value() / us, 3)
    return out


# --------------------------------------------------------------------- the failure tally

def add_tally(table: dict, phase: str, key: str, n: int = 1) -> None:
    """``table[phase][key] += n`` -- failures by phase (socket/connect/send/recv) and errno."""
    inner = table.setdefault(phase, {})
    inner[key] = inner.get(key, 0) + n


def merge_tally(into: dict, other: dict) -> dict:
    for phase, inner in other.items():
        for key, n in inner.items():
            add_tally(into, phase, key, n)
    return into


def tally_total(table: dict) -> int:
    return sum(n for inner in table.values() for n in inner.values())


# --------------------------------------------------------------------- per-worker results

@dataclass
class WorkerStats:
    """What one worker reports at the end (and, partly, in each :class:`Tick`).

    Counters are totals over the worker's life, each counted where it happens.
    ``requests`` and ``responses`` include each connection's first, confirming
    round trip (``confirm_requests``/``confirm_responses``); the ``traffic_*``
    figures do not, and nor do ``reply_failures`` and ``reply_classes``: the
    confirming replies' are apart (``confirm_reply_*``).
    ``histograms`` maps a name from :data:`HISTOGRAMS` to its encoded form.
    ``phases`` maps a phase name to ``[start_ns, end_ns]`` on the shared
    monotonic clock.
    """

    worker: int = 0
    conns: int = 0                 # connections (connect mode: slots) asked of this worker
    attempted: int = 0             # connect() calls (socket() failures included)
    connected: int = 0             # handshakes completed
    established: int = 0           # confirmed by a first reply
    failed: int = 0                # attempts that never got confirmed
    cancelled: int = 0             # attempts still pending when the run ended (not failures)
    lost: int = 0                  # confirmed connections that failed later
    open_at_end: int = 0           # confirmed and still open when the traffic phase ended
    cycles: int = 0                # connect mode: connect + reply + close completed
    requests: int = 0              # requests handed to the kernel
    responses: int = 0             # complete responses received
    confirm_requests: int = 0
    confirm_responses: int = 0     # confirming replies received (write-only: none)
    traffic_requests: int = 0
    traffic_responses: int = 0
    unanswered: int = 0            # requests never answered: owed when their connection ended
                                   # or when the drain did (also tallied as a no-reply error)
    bytes_out: int = 0
    bytes_in: int = 0
    connect_bytes_out: int = 0     # of those, exchanged before confirmation (the first round trip)
    connect_bytes_in: int = 0
    errors: dict = field(default_factory=dict)           # phase -> errno name -> count
    protocol_errors: dict = field(default_factory=dict)  # kind -> count
    reply_failures: dict = field(default_factory=dict)   # kind -> detail -> count (whole replies)
    confirm_reply_failures: dict = field(default_factory=dict)   # the same, confirming replies
    samples: dict = field(default_factory=dict)          # kind -> first bytes of one such reply
    reply_classes: dict = field(default_factory=dict)    # HTTP status class -> count
    confirm_reply_classes: dict = field(default_factory=dict)   # the same, confirming replies
    histograms: dict = field(default_factory=dict)       # name -> encoded histogram
    phases: dict = field(default_factory=dict)           # name -> [start_ns, end_ns]
    traffic_cpu: float = 0.0       # CPU seconds this process used in the traffic phase
    traffic_wall: float = 0.0      # wall seconds of the traffic phase
    scheduled: int = 0             # --rate: sends scheduled by the pacer
    late: int = 0                  # --no-reply: due but not sent (the connection's buffer was full)
    max_buffered: int = 0          # --no-reply: most unsent bytes one connection held in flood
    reconnects: int = 0            # connections reopened after the server's clean close (or --churn)
    opened: int = 0                # opening conversations completed (--greeting, --setup, a plug-in's)
    traffic_opened: int = 0        # ... of them, during the traffic (replacements, --churn, the ramp)
    refused: int = 0               # openings the server refused (each ends its connection)
    refusals: dict = field(default_factory=dict)         # the server's words -> count (bounded)
    resent: int = 0                # pipelined past such a close (never answered): sent again
    rss_start: int = 0             # bytes, before opening connections
    rss_connected: int = 0         # bytes, after the connect phase
    fd_limit: int = 0
    stopped_early: bool = False
    datagrams: dict = field(default_factory=dict)   # --udp: the ledgers' counts (wire.datagram.COUNTS)
    tls_handshakes: int = 0        # --tls: handshakes completed (connect time and handshake apart)
    tls_offered: int = 0           # --tls-resume: of those, how many offered an earlier session
    tls_resumed: int = 0           # ... and how many the server resumed (session_reused)
    tls_negotiated: dict = field(default_factory=dict)   # "TLSv1.3 CIPHER ALPN" -> handshakes
    hints: list = field(default_factory=list)   # what a reply says about a mistake (errors.tls_hint)


def traffic_ended(s: WorkerStats, started: int, now: int, cpu_started: float) -> None:
    """Stamp the traffic phase on ``s`` as it ends: its span (ns, the shared clock), its wall
    seconds, and the CPU seconds this process spent in it (from ``cpu_started``,
    ``time.process_time()`` as it began)."""
    s.phases["traffic"] = [started, now]
    s.traffic_wall = (now - started) / 1e9
    s.traffic_cpu = time.process_time() - cpu_started


@dataclass
class Tick:
    """A worker's snapshot every ``interval`` seconds: cumulative counters, histogram deltas."""

    worker: int
    seq: int                       # tick number: due at epoch + seq * interval
    phase: str
    established: int
    open: int
    failed: int
    requests: int
    responses: int
    traffic_responses: int
    bytes_out: int
    bytes_in: int
    errors: int                    # failures so far (all phases)
    latency: Optional[str] = None  # encoded histogram of the traffic latencies since the last tick
    target_conns: Optional[int] = None    # --stages: this worker's share of the targets now
    target_rps: Optional[float] = None    # (None: no stages; no rate in the stages)


@dataclass
class Totals:
    """All workers merged.  Histograms are live HdrHistogram objects (not picklable)."""

    workers: list
    counters: dict
    errors: dict
    protocol_errors: dict
    histograms: dict
    phases: dict
    traffic_cpu: float
    traffic_wall_max: float
    stopped_early: bool
    reply_failures: dict = field(default_factory=dict)   # kind -> detail -> count
    samples: dict = field(default_factory=dict)          # kind -> first bytes of one offender
    reply_classes: dict = field(default_factory=dict)    # HTTP status class -> count
    confirm_reply_failures: dict = field(default_factory=dict)
    confirm_reply_classes: dict = field(default_factory=dict)
    refusals: dict = field(default_factory=dict)         # the server's words -> count (openings)
    datagrams: dict = field(default_factory=dict)        # --udp: summed over the workers
    tls_negotiated: dict = field(default_factory=dict)   # "version cipher alpn" -> handshakes
    hints: list = field(default_factory=list)            # distinct, in the order the workers saw them


_SUMMED = ("conns", "attempted", "connected", "established", "failed", "cancelled", "lost", "open_at_end",
           "cycles", "requests", "responses", "confirm_requests", "confirm_responses", "traffic_requests",
           "traffic_responses", "unanswered", "bytes_out", "bytes_in", "connect_bytes_out",
           "connect_bytes_in", "scheduled", "late", "reconnects", "resent", "tls_handshakes", "tls_offered",
           "tls_resumed", "opened", "traffic_opened", "refused")


def merge(stats: Iterable[WorkerStats]) -> Totals:
    """Add up workers exactly: counters, tallies, histograms (decoded and added), phase spans."""
    stats = list(stats)
    counters = {name: sum(getattr(s, name) for s in stats) for name in _SUMMED}
    counters["max_buffered"] = max((s.max_buffered for s in stats), default=0)
    errs: dict = {}
    perrs: dict = {}
    rfail: dict = {}
    cfail: dict = {}
    samples: dict = {}
    classes: dict = {}
    cclasses: dict = {}
    hists: dict = {}
    phases: dict = {}
    grams: dict = {}
    negotiated: dict = {}
    hints: list = []
    refusals: dict = {}
    for s in stats:
        for name, n in s.datagrams.items():
            grams[name] = grams.get(name, 0) + n
        for what, n in s.tls_negotiated.items():
            negotiated[what] = negotiated.get(what, 0) + n
        hints.extend(h for h in s.hints if h not in hints)
        for words, n in s.refusals.items():
            refusals[words] = refusals.get(words, 0) + n
        merge_tally(errs, s.errors)
        for kind, n in s.protocol_errors.items():
            perrs[kind] = perrs.get(kind, 0) + n
        merge_tally(rfail, s.reply_failures)
        merge_tally(cfail, s.confirm_reply_failures)
        for kind, text in s.samples.items():
            samples.setdefault(kind, text)
        for cls, n in s.reply_classes.items():
            classes[cls] = classes.get(cls, 0) + n
        for cls, n in s.confirm_reply_classes.items():
            cclasses[cls] = cclasses.get(cls, 0) + n
        for name, blob in s.histograms.items():
            hists[name] = add_into(hists.get(name), decode(blob))
        for name, (start, end) in s.phases.items():
            if name in phases:
                lo, hi = phases[name]
                phases[name] = [min(lo, start), max(hi, end)]
            else:
                phases[name] = [start, end]
    return Totals(workers=stats, counters=counters, errors=errs, protocol_errors=perrs,
                  histograms=hists, phases=phases,
                  traffic_cpu=sum(s.traffic_cpu for s in stats),
                  traffic_wall_max=max((s.traffic_wall for s in stats), default=0.0),
                  stopped_early=any(s.stopped_early for s in stats),
                  reply_failures=rfail, samples=samples, reply_classes=classes,
                  confirm_reply_failures=cfail, confirm_reply_classes=cclasses, datagrams=grams,
                  tls_negotiated=negotiated, hints=hints, refusals=refusals)
