"""Thresholds, sans-I/O: parsing, units, and checks against a flood JSON document."""

from __future__ import annotations

import pytest

from socktools.flood import stats as st
from socktools.flood.thresholds import ThresholdError, check_all, parse


def doc_with(latencies_ns, *, errors=0, rps=1000.0):
    hist = st.new_histogram()
    for v in latencies_ns:
        hist.record_value(v)
    summary = st.summarize(hist)
    summary["hdr"] = st.encode(hist)
    return {"latency_us": summary, "connect_us": None, "errors_total": errors,
            "connections": {"failed": 0, "lost": 0, "attempted": 10, "per_second": 50.0},
            "requests": {"unanswered": 0, "traffic_answered": 100, "per_second": rps, "sent": 110}}


@pytest.mark.parametrize("text, metric, op, limit", [
    ("p99<5ms", "p99", "<", 5000.0),
    ("p50 < 1ms", "p50", "<", 1000.0),
    ("p99.999<=2s", "p99.999", "<=", 2_000_000.0),
    ("max<250us", "max", "<", 250.0),
    ("p90<500µs", "p90", "<", 500.0),
    ("p50<800ns", "p50", "<", 0.8),
    ("connect_p99<50ms", "connect_p99", "<", 50_000.0),
    ("errors==0", "errors", "==", 0.0),
    ("rps>10000", "rps", ">", 10_000.0),
    ("rps>=10k", "rps", ">=", 10_000.0),
    ("requests>1M", "requests", ">", 1_000_000.0),
    ("error_rate<0.001", "error_rate", "<", 0.001),
])
def test_parse(text, metric, op, limit):
    t = parse(text)
    assert (t.metric, t.op, t.limit) == (metric, op, limit)


@pytest.mark.parametrize("text, says", [
    ("p99<5", "needs a unit"),
    ("p0<5ms", "between 0 and 100"),
    ("p100.1<5ms", "between 0 and 100"),
    ("latency<5ms", "unknown metric"),
    ("errors==1ms", "plain number"),
    ("rps>>5", "METRIC OP VALUE"),
    ("", "METRIC OP VALUE"),
])
def test_bad_thresholds_say_why(text, says):
    with pytest.raises(ThresholdError, match=says):
        parse(text)


def test_checks_read_the_document():
    doc = doc_with([1_000_000] * 98 + [9_000_000, 20_000_000], errors=2, rps=5000.0)
    got = check_all([parse(t) for t in ("p50<2ms", "p99<5ms", "p99.99<30ms", "errors==0", "rps>1000")], doc)
    assert [c["passed"] for c in got] == [True, False, True, False, True]
    assert got[0]["actual"] == doc["latency_us"]["p50"]
    # p99.99 is not in the summary: it comes from the histogram itself
    assert got[2]["actual"] == pytest.approx(20_000.0, rel=1e-3)


def test_nothing_measured_fails():
    doc = doc_with([1000])
    (c,) = check_all([parse("connect_p99<1s")], doc)
    assert c["actual"] is None and c["passed"] is False


def test_errors_count_every_failure_and_reply_failures_have_a_name():
    # Every reply a 500: no errno, no protocol error -- and the gate must still close.
    doc = doc_with([1_000_000] * 10)
    doc.update(reply_failures_total=50, confirm_reply_failures_total=2)
    got = check_all([parse(t) for t in ("errors==0", "error_rate<0.01", "reply_failures==0",
                                        "failed_replies<=50")], doc)
    assert [c["actual"] for c in got] == [52, 52 / 120, 50, 50]
    assert [c["passed"] for c in got] == [False, False, False, True]
