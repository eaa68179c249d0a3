"""Files other tools read: ``.hgrm``, HdrHistogram interval logs (``.hlog``), CSV.

* ``.hgrm`` -- the percentile distribution wrk2 prints and HdrHistogram's
  plotter (``plotFiles.html``) reads: written by hdrhistogram's own
  ``output_percentile_distribution``, values in milliseconds (wrk2's unit);
* ``.hlog`` -- HdrHistogram's interval log (format 1.2), one compressed
  histogram of nanoseconds per interval, readable by ``HistogramLogProcessor``
  and by ``hdrh.log.HistogramLogReader``; timestamps in seconds relative to
  ``#[BaseTime]`` (the run's start); the intervals add up to the whole run;
* CSV -- one row per interval (:mod:`.timeline` rows), latencies in microseconds.

Each function takes the JSON document (``report.to_json``), so a saved result
can be exported later as well.  They write to an open text/binary file.
"""

from __future__ import annotations

import csv
from datetime import datetime, timezone

from socktools.flood import stats as st
from socktools.flood.timeline import ROW_FIELDS, is_partial

__all__ = ["write_hgrm", "write_hlog", "write_csv", "CSV_LATENCY", "HGRM_UNIT_RATIO"]

#: .hgrm values are in milliseconds, as wrk2 prints them (our histograms count nanoseconds).
HGRM_UNIT_RATIO = 1_000_000.0

#: Latency columns of the CSV, after :data:`~socktools.flood.timeline.ROW_FIELDS`.
CSV_LATENCY = ("count", "min", "mean", "p50", "p90", "p99", "p99.9", "max")


def write_hgrm(doc: dict, out, histogram: str = "latency_us") -> bool:
    """The round-trip percentile distribution into binary file ``out``; False if no latency."""
    hist = st.decode((doc.get(histogram) or {}).get("hdr"))
    if hist is None:
        return False
    hist.output_percentile_distribution(out, HGRM_UNIT_RATIO)
    return True


def _started_epoch(doc: dict) -> float:
    return datetime.fromisoformat(doc["started"].replace("Z", "+00:00")).timestamp()


def write_hlog(doc: dict, out) -> int:
    """One interval histogram per row into text file ``out``; returns how many intervals.

    The header is written here rather than by ``HistogramLogWriter.output_start_time``,
    which fails in hdrhistogram 0.10 (it calls ``datetime.iso_format``); the lines
    are those of the Java writer.
    """
    from hdrh.log import HistogramLogWriter
    started = _started_epoch(doc)
    when = datetime.fromtimestamp(started, timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")
    writer = HistogramLogWriter(out)
    writer.output_comment(f"[Logged with socktools {doc.get('socktools_version', '')} flood: "
                          f"round-trip latency, values in nanoseconds]")
    writer.output_log_format_version()
    out.write(f"#[StartTime: {started:.3f} (seconds since epoch), {when}]\n")
    writer.output_base_time(started * 1000.0)
    writer.output_legend()
    n = 0
    for row in doc.get("intervals", []):
        hist = st.decode((row.get("latency") or {}).get("hdr")) or st.new_histogram()
        # Stamped on the histogram (ms, relative to the base time): the writer's own
        # arguments treat a start of 0.0 as "not given".
        hist.set_start_time_stamp(row["start"] * 1000.0)
        hist.set_end_time_stamp(row["end"] * 1000.0)
        writer.output_interval_histogram(hist, max_value_unit_ratio=HGRM_UNIT_RATIO)
        n += 1
    return n


def csv_rows(doc: dict) -> list:
    """The CSV's rows as dicts (header names as keys), one per interval."""
    out = []
    for row in doc.get("intervals", []):
        # (.get: rows saved before --stages have no target columns)
        line = {name: row.get(name) for name in ROW_FIELDS if name != "partial"}
        line["partial"] = is_partial(row)      # also for documents saved before rows carried it
        lat = row.get("latency") or {}
        for name in CSV_LATENCY:
            line[f"latency_{name}_us" if name != "count" else "latency_count"] = lat.get(name, "")
        out.append(line)
    return out


def write_csv(doc: dict, out) -> int:
    """One row per interval into text file ``out`` (opened with ``newline=""``); returns rows."""
    rows = csv_rows(doc)
    header = list(ROW_FIELDS) + [f"latency_{n}_us" if n != "count" else "latency_count" for n in CSV_LATENCY]
    w = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return len(rows)
