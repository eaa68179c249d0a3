"""Pass/fail criteria for a flood run, in the spirit of k6's thresholds: ``p99<5ms``.

Sans-I/O: :func:`parse` turns the text into a :class:`Threshold` (or raises
:class:`ThresholdError` with a message fit for a usage error), and
:meth:`Threshold.check` reads a flood JSON document (``report.to_json``), so
a saved result can be checked again later (``socktools report``).

Grammar: ``METRIC OP VALUE``, spaces allowed.

* latency metrics (``VALUE`` needs a unit: ``ns``, ``us``/``µs``, ``ms``, ``s``):
  ``p50``, ``p99.9``, any ``pN`` with 0 < N <= 100, ``min``, ``mean``, ``max``
  of the round trips; the same with a prefix for the other histograms:
  ``connect_p99``, ``first_reply_p50``, ``send_lag_max``, ``uncorrected_p99``;
* counts and rates (plain numbers, ``k``/``M`` suffixes allowed): ``errors``
  (every failure: errno and protocol errors of every phase, requests never
  answered, and replies that failed -- the confirming ones too),
  ``reply_failures`` (alias ``failed_replies``: traffic replies that arrived
  whole but failed, an HTTP 500, a redis ``-ERR``), ``failed`` (connections
  never confirmed), ``lost``, ``unanswered``, ``requests`` (answered in the
  traffic phase), ``rps`` (answered requests/s), ``cps`` (connections/s),
  ``error_rate`` (``errors`` per attempted connection and request, a
  fraction: ``error_rate<0.001``);
* ``OP`` is one of ``<`` ``<=`` ``>`` ``>=`` ``==`` ``!=``.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Optional

__all__ = ["Threshold", "ThresholdError", "parse", "check_all", "failures", "HISTOGRAM_PREFIXES", "COUNTS"]


class ThresholdError(ValueError):
    """The text is not a threshold; the message says why and shows an example."""


_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}

#: Metric prefix -> the JSON document's histogram key (all in microseconds).
HISTOGRAM_PREFIXES = {"": "latency_us", "connect_": "connect_us", "first_reply_": "first_reply_us",
                      "send_lag_": "send_lag_us", "uncorrected_": "latency_uncorrected_us"}

_TIME_UNITS = {"ns": 0.001, "us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0}
_COUNT_SUFFIX = {"": 1.0, "k": 1e3, "M": 1e6}

def failures(doc: dict) -> int:
    """Every failure of a run: errors of every phase (errno, protocol, no-reply) and the replies
    that failed, confirming ones included.  Summed from the parts, so that a document saved
    before ``failures_total`` existed is read the same way."""
    return (doc["errors_total"] + doc.get("reply_failures_total", 0)
            + doc.get("confirm_reply_failures_total", 0))


#: Count and rate metrics -> how to read them from the JSON document.
COUNTS = {
    "errors": failures,
    "reply_failures": lambda d: d.get("reply_failures_total", 0),
    "failed_replies": lambda d: d.get("reply_failures_total", 0),
    "failed": lambda d: d["connections"]["failed"],
    "lost": lambda d: d["connections"]["lost"],
    "unanswered": lambda d: d["requests"]["unanswered"],
    "requests": lambda d: d["requests"]["traffic_answered"],
    "rps": lambda d: d["requests"]["per_second"],
    "cps": lambda d: d["connections"]["per_second"],
    "error_rate": lambda d: failures(d) / max(1, d["connections"]["attempted"] + d["requests"]["sent"]),
}

_EXPR = re.compile(r"^\s*([A-Za-z_]+(?:\d+(?:\.\d+)?)?)\s*(<=|>=|==|!=|<|>)\s*"
                   r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-zµ]*)\s*$")
_STAT = re.compile(r"^(p\d+(?:\.\d+)?|min|mean|max)$")
_EXAMPLES = "examples: p99<5ms, connect_p99<50ms, errors==0, rps>10000"


@dataclass(frozen=True)
class Threshold:
    """One parsed criterion: ``metric op limit`` (latencies in microseconds)."""

    text: str
    metric: str          # "p99", "connect_p99", "errors", ...
    op: str
    limit: float         # microseconds for latency metrics, the plain number otherwise
    histogram: Optional[str] = None   # JSON key of the histogram, latency metrics only
    stat: Optional[str] = None        # "p99", "max", ...

    def actual(self, doc: dict) -> Optional[float]:
        """The run's value of the metric (None: nothing was measured, e.g. no latencies)."""
        if self.histogram is None:
            return float(COUNTS[self.metric](doc))
        summary = doc.get(self.histogram)
        if not summary:
            return None
        if self.stat in summary:
            return float(summary[self.stat])
        from socktools.flood import stats as st
        hist = st.decode(summary.get("hdr"))
        if hist is None:
            return None
        return hist.get_value_at_percentile(float(self.stat[1:])) / 1000.0

    def check(self, doc: dict) -> dict:
        """``{"threshold", "metric", "op", "limit", "actual", "passed"}``; nothing measured fails."""
        value = self.actual(doc)
        passed = value is not None and _OPS[self.op](value, self.limit)
        unit = "us" if self.histogram else None
        return {"threshold": self.text, "metric": self.metric, "op": self.op, "limit": self.limit,
                "unit": unit, "actual": value, "passed": passed}


def parse(text: str) -> Threshold:
    """``"p99<5ms"`` -> :class:`Threshold`; raises :class:`ThresholdError`."""
    m = _EXPR.match(text or "")
    if not m:
        raise ThresholdError(f"{text!r} is not METRIC OP VALUE ({_EXAMPLES})")
    name, op, number, unit = m.groups()
    value = float(number)
    for prefix in sorted(HISTOGRAM_PREFIXES, key=len, reverse=True):
        rest = name[len(prefix):]
        if name.startswith(prefix) and _STAT.match(rest):
            if rest.startswith("p") and not 0 < float(rest[1:]) <= 100:
                raise ThresholdError(f"{text!r}: a percentile is between 0 and 100")
            if unit not in _TIME_UNITS:
                raise ThresholdError(f"{text!r}: a latency needs a unit (ns, us, ms, s), e.g. {name}{op}5ms")
            return Threshold(text.strip(), name, op, value * _TIME_UNITS[unit],
                             histogram=HISTOGRAM_PREFIXES[prefix], stat=rest)
    if name in COUNTS:
        if unit not in _COUNT_SUFFIX:
            raise ThresholdError(f"{text!r}: {name} is a plain number (k and M allowed), not {unit!r}")
        return Threshold(text.strip(), name, op, value * _COUNT_SUFFIX[unit])
    known = ", ".join(["pN", "min", "mean", "max", *(p + "pN" for p in HISTOGRAM_PREFIXES if p), *COUNTS])
    raise ThresholdError(f"{text!r}: unknown metric {name!r} (known: {known})")


def check_all(thresholds, doc: dict) -> list:
    """Every threshold checked against ``doc``, in the order given."""
    return [t.check(doc) for t in thresholds]
