"""The report's plots, drawn by matplotlib into inline SVG strings.

Why matplotlib: it draws without a browser or a JavaScript bundle (the page
is plain HTML + SVG: it opens offline, prints, and weighs tens of kilobytes,
where plotly's inlined bundle alone is ~4.5 MB); it has a real log axis; it
is the plotting library people already have.  Text stays text in the SVG
(``svg.fonttype: none``), so the page's font is used and it stays searchable.

Inputs are the flood JSON document's parts (latencies in microseconds, hdr
blobs in nanoseconds).  Latency axes are drawn in microseconds and every
tick is labelled by :func:`~socktools.flood.report.format_us`, the formatter
of the tables, the annotations and the text report: a value reads the same
everywhere on the page, with its unit on it.  Each function returns ``None`` when there is nothing
to draw, so the page can say so instead of showing an empty frame.
"""

from __future__ import annotations

import io
import math
from typing import Optional

from socktools.flood import stats as st
from socktools.flood.timeline import is_partial

__all__ = ["available", "spectrum", "over_time", "over_time_rows", "connect_distribution", "log_ticks",
           "tick_label", "PALETTE", "MAX_LOG_TICKS"]

#: Colours (colour-blind safe, Okabe-Ito) for: round trip, uncorrected, connect, first reply, p99, max.
PALETTE = {"latency": "#0072B2", "latency_uncorrected": "#999999", "connect": "#E69F00",
           "first_reply": "#009E73", "p50": "#0072B2", "p99": "#D55E00", "max": "#CC79A7",
           "rps": "#009E73", "errors": "#D55E00"}
_INK = "#2b2f36"
_GRID = "#e3e6ea"

#: The percentiles marked on the spectrum's axis, as HdrHistogram's plotter marks them.
SPECTRUM_TICKS = (0.0, 90.0, 99.0, 99.9, 99.99, 99.999, 99.9999)

#: Most labels on a log latency axis: the 1-2-5 steps of four decades (12 labels, ~20 px apart on
#: the shorter over-time axis) fit at 10 pt without touching; a wider range gets its decades alone.
MAX_LOG_TICKS = 12


def available() -> bool:
    """Whether matplotlib (the ``report`` extra) can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    plt.rcParams.update({
        "svg.fonttype": "none", "font.family": "sans-serif", "font.size": 10,
        "axes.edgecolor": _GRID, "axes.labelcolor": _INK, "axes.titlesize": 11,
        "axes.titleweight": "bold", "axes.titlelocation": "left", "axes.titlecolor": _INK,
        "xtick.color": _INK, "ytick.color": _INK, "axes.grid": True, "grid.color": _GRID,
        "grid.linewidth": 0.8, "axes.spines.top": False, "axes.spines.right": False,
        "legend.frameon": False, "figure.dpi": 96,
    })
    return plt


def _svg(fig, name: str) -> str:
    """The figure as an ``<svg>`` element (no XML prologue); ids salted by ``name`` so that
    several plots on one page never share a clip-path id."""
    plt = _plt()
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": f"socktools-{name}"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    start = text.find("<svg")
    svg = text[start:]
    # Scale with the page: drop the fixed size, keep the viewBox.
    head, rest = svg.split(">", 1)
    head = " ".join(p for p in head.split(" ") if not p.startswith(("width=", "height=")))
    return f'{head} class="plot" role="img" aria-label="{name}">{rest}'


def log_ticks(lo: float, hi: float) -> list:
    """Ticks for a log axis from ``lo`` to ``hi``: every decade and the 2 and 5 between them,
    or (past :data:`MAX_LOG_TICKS`) the decades alone, every n-th one if even those crowd."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))

    def within(steps, stride=1):
        return [float(f"{m}e{k}") for k in range(first, last + 1) if k % stride == 0
                for m in steps if lo <= m * 10.0 ** k <= hi]

    ticks = within((1, 2, 5))
    stride = 1
    while len(ticks) > MAX_LOG_TICKS:
        ticks = within((1,), stride)
        stride += 1
    return [int(t) if t.is_integer() else t for t in ticks]


def tick_label(us: float) -> str:
    """A latency tick's label (microseconds in), written as the tables write it."""
    return "0" if us == 0 else _fmt_us(us)


def _spectrum_points(blob: Optional[str]) -> Optional[tuple]:
    hist = st.decode(blob)
    if hist is None:
        return None
    xs, ys = [], []
    for it in hist.get_percentile_iterator(5):
        p = it.percentile_level_iterated_to
        if p >= 100.0:
            break
        xs.append(1.0 / (1.0 - p / 100.0))
        ys.append(it.value_iterated_to / 1000.0)      # ns -> µs
    xs.append(xs[-1] * 10 if xs else 1.0)             # the maximum, one decade further right
    ys.append(hist.get_max_value() / 1000.0)
    return xs, ys


def spectrum(doc: dict) -> Optional[str]:
    """Latency by percentile on HdrHistogram's axis: x = 1/(1-percentile), log scale."""
    series = []
    for name, label in (("latency", "round trip"), ("latency_uncorrected", "round trip, uncorrected"),
                        ("first_reply", "first reply"), ("connect", "connect")):
        pts = _spectrum_points((doc.get(f"{name}_us") or {}).get("hdr"))
        if pts:
            series.append((name, label, pts))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10.6, 4.2))
    for name, label, (xs, ys) in series:
        ax.step(xs, ys, where="post", color=PALETTE[name], linewidth=1.8, label=label)
    ax.set_xscale("log")
    _latency_yscale(ax, [y for _, _, (_, ys) in series for y in ys])
    # Mark the percentiles the tables show on the round trip's curve.
    main = (doc.get("latency_us") or {})
    for key in ("p50", "p99", "p99.9"):
        if main.get(key) is not None:
            q = float(key[1:])
            x, y = 1 / (1 - q / 100), main[key]
            ax.plot([x], [y], "o", color=PALETTE["latency"], markersize=4)
            left = key == "p50"      # at the axis' left edge: write it to the right of its dot
            ax.annotate(f"{key} {_fmt_us(main[key])}", (x, y), xytext=(6, -4) if left else (-6, 8),
                        textcoords="offset points", ha="left" if left else "right", fontsize=9, color=_INK)
    right = max(xs[-1] for _, _, (xs, _) in series)
    ticks = [t for t in SPECTRUM_TICKS if 1 / (1 - t / 100) <= right * 1.01]
    ax.set_xticks([1 / (1 - t / 100) for t in ticks])
    ax.set_xticklabels([f"{t:g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(1, right)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency")
    ax.legend(loc="upper left")
    return _svg(fig, "latency-spectrum")


def _latency_yscale(ax, values_us) -> None:
    """A log y axis when the tail is far above the body (else the body is a flat line at 0),
    labelled in the tables' units (:func:`tick_label`)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    positive = [v for v in values_us if v and v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_yscale("log")
        lo, hi = min(positive) * 0.7, max(positive) * 1.4
        ax.yaxis.set_major_locator(FixedLocator(log_ticks(lo, hi)))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_ylim(lo, hi)
    else:
        ax.set_ylim(bottom=0, top=max(positive, default=1) * 1.1)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: tick_label(v)))


def over_time_rows(intervals: list) -> tuple:
    """(drawn, left out): the interval rows the over-time plot draws, and the partial ones it
    leaves out.  The run's tail (:func:`~socktools.flood.timeline.is_partial`) holds few samples
    over a span that includes the drain: drawn, its p99 would spike and its rate drop for no
    reason in the run.  A run shorter than one interval has only that row: it is drawn."""
    rows = [r for r in intervals if r["end"] > r["start"]]
    whole = [r for r in rows if not is_partial(r)]
    if not whole:
        return rows, []
    return whole, [r for r in rows if is_partial(r)]


def over_time(intervals: list) -> Optional[str]:
    """Round-trip p50/p99/max per interval above, the rate below, intervals with new failures shaded.

    The rate is answered requests/s, or connections/s when no request was
    answered (connect mode: the churn is the traffic).  The partial tail is
    left out (:func:`over_time_rows`).  A ``--stages`` run gets a third panel, the open
    connections at each interval's end beside the stages' target, and its rate target (if
    the stages set one) dashed over the measured rate.
    """
    rows, _ = over_time_rows(intervals)
    if not rows:
        return None
    prev_est = 0
    cps = []
    for r in rows:
        cps.append(max(0, r["established"] - prev_est) / (r["end"] - r["start"]))
        prev_est = r["established"]
    measured = any(r.get("latency") for r in rows)
    rate, rate_label = ([r["rps"] for r in rows], "answered req/s") if any(r["rps"] for r in rows) else \
        (cps, "connections/s")
    if not measured and not any(rate):
        return None
    plt = _plt()
    staged = any(r.get("target_conns") is not None for r in rows)
    heights = ([3] if measured else []) + [2] + ([2] if staged else [])
    fig, axes = plt.subplots(len(heights), 1, figsize=(10.6, 0.2 + 1.3 * sum(heights)), sharex=True,
                             squeeze=False, gridspec_kw={"height_ratios": heights, "hspace": 0.12})
    axes = list(axes[:, 0])
    lat = axes.pop(0) if measured else None
    thr = axes.pop(0)
    xs = [r["end"] for r in rows]
    edges = [rows[0]["start"]] + xs
    if measured:
        drawn = []
        for key, label in (("max", "max"), ("p99", "p99"), ("p50", "p50")):
            vals = [r["latency"][key] if r.get("latency") else float("nan") for r in rows]
            drawn += vals
            lat.stairs(vals, edges, color=PALETTE[key], linewidth=2.0 if key != "max" else 1.0,
                       linestyle="-" if key != "max" else (0, (2, 2)), label=label, baseline=None)
        lat.set_ylabel("round trip")
        _latency_yscale(lat, [v for v in drawn if v == v])
        lat.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=3)   # above: never over a line
    thr.stairs(rate, edges, color=PALETTE["rps"], fill=True, alpha=0.35)
    thr.stairs(rate, edges, color=PALETTE["rps"], linewidth=1.6, baseline=None)
    thr.set_ylabel(rate_label)
    if any(r.get("target_rps") is not None for r in rows):
        _target(thr, rows, xs, "target_rps")
    if staged:
        _open_and_target(axes.pop(0), rows, xs)
    else:
        thr.set_xlabel("seconds since start")
    thr.set_ylim(bottom=0)
    thr.yaxis.set_major_formatter(_thousands())
    prev = 0
    for r in rows:
        if r["errors"] > prev:
            thr.axvspan(r["start"], r["end"], color=PALETTE["errors"], alpha=0.12, linewidth=0)
        prev = r["errors"]
    thr.set_xlim(edges[0], edges[-1])
    return _svg(fig, "over-time")


def _target(ax, rows: list, xs: list, key: str) -> None:
    """The stages' target (at each interval's end, from 0 at the first one's start): dashed."""
    ax.plot([rows[0]["start"]] + xs, [0] + [r.get(key) or 0 for r in rows], color=_INK, linewidth=1.2,
            linestyle=(0, (4, 3)), label="target (--stages)")
    ax.legend(loc="upper left", frameon=False)     # a ramp starts from 0: the corner is free


def _open_and_target(ax, rows: list, xs: list) -> None:
    """--stages: the open connections at each interval's end, beside the stages' target."""
    ax.plot(xs, [r["open"] for r in rows], color=PALETTE["connect"], linewidth=2.0, marker="o",
            markersize=3, label="open connections")
    _target(ax, rows, xs, "target_conns")
    ax.set_ylabel("open connections")
    ax.set_xlabel("seconds since start")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(_thousands())


def _thousands():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda v, _: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}")


def connect_distribution(doc: dict) -> Optional[str]:
    """How long connections took to confirm: a histogram on a log time axis."""
    hist = st.decode((doc.get("connect_us") or {}).get("hdr"))
    if hist is None:
        return None
    import numpy as np
    # Over the non-zero buckets only (hdrh's recorded-value iterator walks every bucket).
    import itertools
    raw = hist.counts
    nonzero = list(itertools.compress(range(len(raw)), raw))
    values = [st.median_of_index(i) / 1000.0 for i in nonzero]
    counts = [raw[i] for i in nonzero]
    lo, hi = max(min(values), 0.001), max(values)
    if hi <= lo:
        hi = lo * 1.5
    bins = np.geomspace(lo / 1.05, hi * 1.05, 40)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10.6, 3.2))
    ax.hist(values, bins=bins, weights=counts, color=PALETTE["connect"], alpha=0.85, edgecolor="white",
            linewidth=0.5)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_us(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    for key, style in (("p50", "-"), ("p99", "--")):
        v = doc["connect_us"][key]
        ax.axvline(v, color=_INK, linestyle=style, linewidth=1)
        ax.annotate(f"{key} {_fmt_us(v)}", (v, 1), xycoords=("data", "axes fraction"), xytext=(4, -12),
                    textcoords="offset points", fontsize=9, color=_INK)
    ax.set_xlabel("connect() to handshake complete")
    ax.set_ylabel("connections")
    return _svg(fig, "connect-time")


def _fmt_us(us: float) -> str:
    from socktools.flood.report import format_us
    return format_us(us)
