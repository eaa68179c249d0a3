"""A flood run over time: the interval rows every report, export and threshold reads.

The runner emits one record per tick (``config.interval`` seconds, aligned on
the run's epoch); this module turns them into rows with explicit ``start`` /
``end`` seconds and adds a last, partial row (``"partial": true``) for what the final reports
carried after the last complete tick (the drain, the tail of the traffic
phase).  So the rows add up *exactly* to the totals: their request counts to
the run's, their latency histograms (by HdrHistogram addition) to the run's
latency histogram -- the property an HdrHistogram interval log promises its
readers (``HistogramLogProcessor`` adds intervals to get any time range).

Pure data: no clock, no printing.  Latencies are in microseconds; ``hdr``
blobs are HdrHistograms of nanoseconds (like every blob flood writes).
"""

from __future__ import annotations

from typing import Optional

from socktools.flood import stats as st

__all__ = ["DEFAULT_INTERVAL", "ROW_FIELDS", "rows", "is_partial", "subtract", "row_histogram"]

#: Tick length when the user gives no --interval: iperf3's default reporting
#: interval, fine enough to see a stall, coarse enough to cost nothing (one
#: encoded histogram per worker per second).
DEFAULT_INTERVAL = 1.0

#: Counters of a row, in the order the CSV writes them (latency columns follow).
ROW_FIELDS = ("start", "end", "phase", "partial", "established", "open", "failed", "errors", "requests",
              "responses", "traffic_responses", "rps", "bytes_out", "bytes_in", "target_conns", "target_rps")
#: --stages: the stages' targets at the row's end (None without stages, and in the partial tail).
_TARGETS = ("target_conns", "target_rps")
_DELTAS = ("requests", "responses", "traffic_responses", "bytes_out", "bytes_in")


def subtract(total, part):
    """``total - part`` as a new HdrHistogram (None if empty); ``part`` must be contained in ``total``.

    hdrh has ``add`` but no ``subtract``: this works on the counts arrays, as
    :class:`~socktools.flood.stats.Recorder` does (same shape: 1 ns .. 1 day, 3 digits).
    """
    if total is None:
        return None
    out = st.new_histogram()
    counts = list(total.counts)
    if part is not None:
        for i, c in enumerate(part.counts):
            if c:
                counts[i] = max(0, counts[i] - c)
    nonzero = [i for i, c in enumerate(counts) if c]
    if not nonzero:
        return None
    for i in nonzero:
        out.counts[i] = counts[i]
    out.set_internal_tacking_values(nonzero[0], nonzero[-1], sum(counts[i] for i in nonzero))
    return out


def _row(record: dict, interval: float) -> dict:
    end = float(record["t"])
    row = {"start": round(max(0.0, end - interval), 3), "end": round(end, 3), "phase": record.get("phase"),
           "partial": False}
    for name in ROW_FIELDS[4:]:
        row[name] = record.get(name, None if name in _TARGETS else 0)
    row["latency"] = record.get("latency")
    return row


def rows(result) -> list:
    """The interval rows of a :class:`~socktools.flood.runner.FloodResult`, tail included."""
    interval = result.config.interval or DEFAULT_INTERVAL
    out = [_row(r, interval) for r in result.intervals]
    t = result.totals
    c = t.counters
    ends = [b for (_, b) in t.phases.values()]
    run_end = (max(ends) - result.epoch_ns) / 1e9 if ends and result.epoch_ns else (out[-1]["end"] if out else 0.0)
    last_end = out[-1]["end"] if out else 0.0
    seen = {name: sum(r[name] for r in out) for name in _DELTAS}
    tail = {name: c[name] - seen[name] for name in _DELTAS}
    so_far = None
    for r in out:
        so_far = st.add_into(so_far, row_histogram(r))
    rest = subtract(t.histograms.get("latency"), so_far)
    if rest is not None or any(tail.values()) or not out:
        length = max(0.0, run_end - last_end)
        summary = st.summarize(rest)
        if summary is not None:
            summary["hdr"] = st.encode(rest)
        established = c["established"] if result.config.mode != "connect" else c["cycles"]
        out.append({"start": round(last_end, 3), "end": round(max(run_end, last_end), 3), "phase": "end",
                    "partial": True,
                    "established": established, "open": 0, "failed": c["failed"] + c["lost"],
                    "errors": st.tally_total(t.errors), **tail,
                    "rps": round(tail["traffic_responses"] / length, 1) if length > 0 else 0.0,
                    "target_conns": None, "target_rps": None, "latency": summary})
        # keep the ROW_FIELDS order
        out[-1] = {k: out[-1][k] for k in (*ROW_FIELDS, "latency")}
    return out


def is_partial(row: dict) -> bool:
    """Whether ``row`` is the run's tail rather than a whole interval: fewer samples over a span
    that includes the drain, so its p99 and its rate are not comparable with the others.
    (Documents saved before rows carried ``partial`` mark the tail by its phase.)"""
    return bool(row.get("partial", row.get("phase") == "end"))


def row_histogram(row: dict) -> Optional[object]:
    """The row's latency HdrHistogram (nanoseconds), or None."""
    lat = row.get("latency")
    return st.decode(lat.get("hdr")) if lat else None
