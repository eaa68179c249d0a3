"""flood's pure parts: histogram recording and exact merging, tallies, config shares, limits, report.

No sockets here; the run itself is tested in test_flood_run.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from socktools.flood import limits
from socktools.flood import stats as st
from socktools.flood.config import FloodConfig, split
from socktools.flood.report import format_us, render_live, render_table, to_json
from socktools.flood.result import FloodResult, generator_warnings, traffic_seconds


# ----------------------------------------------------------------- histograms

@given(hs.integers(min_value=0, max_value=st.HIGHEST))
@settings(max_examples=500)
def test_counts_index_is_hdrhistograms_own(value):
    assert st.counts_index(value) == _REFERENCE._counts_index_for(value)


_REFERENCE = st.new_histogram()


def test_recorder_equals_record_value_exactly():
    rng = random.Random(7)
    values = [rng.randint(1, 10 ** 9) for _ in range(5000)] + [1, 2047, 2048, 4095, 4096]
    rec, ref = st.Recorder(), st.new_histogram()
    for v in values:
        rec.record(v)
        ref.record_value(v)
    got = rec.take()
    assert got.get_total_count() == ref.get_total_count() == len(values)
    for p in (0, 50, 90, 99, 99.9, 100):
        assert got.get_value_at_percentile(p) == ref.get_value_at_percentile(p)
    assert got.get_min_value() == ref.get_min_value()
    assert got.get_max_value() == ref.get_max_value()


def test_recorder_take_resets_in_place_for_hot_loops_holding_the_list():
    rec = st.Recorder()
    counts = rec.counts
    rec.record(1000)
    assert rec.total() == 1
    assert rec.take().get_total_count() == 1
    assert rec.counts is counts and rec.total() == 0
    assert rec.take() is None  # nothing new
    counts[st.counts_index(5000)] += 1  # what the worker's inlined hot path does
    assert rec.take().get_value_at_percentile(100) == _REFERENCE.get_highest_equivalent_value(5000)


def test_recorder_clamps_out_of_range_values():
    rec = st.Recorder()
    rec.record(-5)
    rec.record(st.HIGHEST * 10)
    hist = rec.take()
    assert hist.get_total_count() == 2
    assert hist.get_min_value() == 0
    assert hist.get_max_value() >= st.HIGHEST


def test_merge_of_workers_equals_one_histogram_of_all_samples():
    """Percentiles of the merge are those of the pooled samples, not an average of per-worker ones."""
    rng = random.Random(1)
    fast = [rng.randint(10_000, 20_000) for _ in range(3000)]      # worker 0: ~15 us
    slow = [rng.randint(1_000_000, 2_000_000) for _ in range(300)]  # worker 1: ~1.5 ms
    workers, pooled = [], st.new_histogram()
    for i, values in enumerate((fast, slow)):
        rec = st.Recorder()
        for v in values:
            rec.record(v)
            pooled.record_value(v)
        workers.append(st.WorkerStats(worker=i, histograms={"latency": st.encode(rec.take())}))
    merged = st.merge(workers).histograms["latency"]
    assert merged.get_total_count() == 3300
    for p in (50, 90, 95, 99, 99.9):
        assert merged.get_value_at_percentile(p) == pooled.get_value_at_percentile(p)
    # The pooled p95 is a slow sample; averaging the two workers' p95s would say otherwise.
    assert merged.get_value_at_percentile(95) > 1_000_000


def test_encode_decode_round_trip_and_empty():
    assert st.encode(None) is None and st.decode(None) is None
    rec = st.Recorder()
    for v in (5, 50, 500, 5000, 50_000):
        rec.record(v)
    blob = st.encode(rec.take())
    assert isinstance(blob, str) and blob.startswith("HISTF")
    back = st.decode(blob)
    assert back.get_total_count() == 5 and back.get_value_at_percentile(100) >= 50_000
    json.dumps(blob)  # travels in the JSON result as is


def test_summarize_in_microseconds():
    hist = st.new_histogram()
    for v in (1000, 2000, 3000, 4000):  # ns
        hist.record_value(v)
    s = st.summarize(hist)
    assert s["count"] == 4 and s["min"] == 1.0
    assert s["max"] == pytest.approx(4.0, rel=1e-3)  # the bucket's highest equivalent value
    assert set(s) >= {"p50", "p90", "p99", "p99.9", "mean", "stdev"}
    assert st.summarize(None) is None


def test_tally_by_phase_and_errno_merges():
    a, b = {}, {}
    st.add_tally(a, "connect", "ECONNREFUSED")
    st.add_tally(a, "connect", "ECONNREFUSED")
    st.add_tally(b, "socket", "EMFILE", 3)
    st.add_tally(b, "connect", "ECONNREFUSED")
    merged = st.merge([st.WorkerStats(errors=a), st.WorkerStats(errors=b)])
    assert merged.errors == {"connect": {"ECONNREFUSED": 3}, "socket": {"EMFILE": 3}}
    assert st.tally_total(merged.errors) == 6


def test_merge_adds_counters_and_spans_phases():
    w0 = st.WorkerStats(worker=0, requests=10, bytes_out=640, phases={"traffic": [100, 200]})
    w1 = st.WorkerStats(worker=1, requests=5, bytes_out=320, phases={"traffic": [90, 250]})
    t = st.merge([w0, w1])
    assert t.counters["requests"] == 15 and t.counters["bytes_out"] == 960
    assert t.phases["traffic"] == [90, 250]


# ----------------------------------------------------------------- config shares

@given(hs.integers(min_value=1, max_value=5000), hs.integers(min_value=1, max_value=64))
def test_connections_requests_and_rates_split_exactly(conns, workers):
    cfg = FloodConfig(conns=conns, workers=workers, requests=12345, rate=1000.0)
    assert sum(cfg.conns_of(w) for w in range(workers)) == conns
    assert sum(cfg.requests_of(w) for w in range(workers)) == 12345
    assert sum(cfg.rate_of(w) for w in range(workers)) == pytest.approx(1000.0)
    assert sum(split(conns, workers, w) for w in range(workers)) == conns


def test_sources_are_spread_round_robin():
    cfg = FloodConfig(conns=6, sources=("127.0.0.2", "127.0.0.3"))
    assert [cfg.source_of(i) for i in range(4)] == ["127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"]
    assert FloodConfig().source_of(0) is None


@pytest.mark.parametrize("kwargs, words", [
    ({"mode": "ping"}, "mode"),
    ({"conns": 0}, "conns"),
    ({"duration": None, "requests": None}, "duration"),
    ({"mode": "connect", "rate": 10.0}, "connect-rate"),
    ({"size": 0}, "size"),
])
def test_config_rejects_nonsense(kwargs, words):
    with pytest.raises(ValueError, match=words):
        FloodConfig(**kwargs)


def test_config_is_picklable_and_frozen():
    import pickle
    cfg = FloodConfig(conns=3, address=("127.0.0.1", 1234), sources=("127.0.0.2",))
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(Exception):
        cfg.conns = 4  # type: ignore[misc]


# ----------------------------------------------------------------- pre-flight limits

@pytest.fixture
def fake_limits(monkeypatch):
    def setup(fd_limit=1024, hard=1024, ports=(32768, 60999)):
        monkeypatch.setattr(limits, "fd_limits", lambda: (fd_limit, hard))
        monkeypatch.setattr(limits, "port_range", lambda: ports)
        monkeypatch.setattr(limits, "cpu_count", lambda: 2)
    return setup


def test_plan_says_plainly_when_fds_cannot_fit(fake_limits):
    fake_limits(fd_limit=1024, hard=4096)
    p = limits.plan(FloodConfig(conns=3000, workers=1, address=("127.0.0.1", 9)))
    assert len(p.problems) == 1
    assert "3,032 file descriptors" in p.problems[0] and "EMFILE" in p.problems[0]
    assert "ulimit -n 3,032" in p.problems[0]  # fits under the hard limit: raise it
    p = limits.plan(FloodConfig(conns=9000, workers=1, address=("127.0.0.1", 9)))
    assert "--workers 10" in p.problems[0]     # beyond the hard limit: more processes


def test_plan_chooses_enough_workers_when_not_given(fake_limits):
    fake_limits(fd_limit=1024)
    p = limits.plan(FloodConfig(conns=5000, workers=0, address=("127.0.0.1", 9)))   # 0: flood chooses
    assert p.config.workers == 6 and not p.problems
    assert any("6 worker processes" in n for n in p.notes)
    p = limits.plan(FloodConfig(conns=50, workers=0, embedded=True))
    assert p.config.workers == 1 and p.config.server_workers == 1  # 2 CPUs shared with the server


def test_plan_ports_per_source(fake_limits):
    fake_limits(fd_limit=1 << 20, hard=1 << 20, ports=(40000, 40999))
    cfg = FloodConfig(conns=5000, workers=8, address=("127.0.0.1", 9))
    p = limits.plan(replace(cfg, sources=("127.0.0.1",)))     # the user's one source address
    assert any("EADDRNOTAVAIL" in x and "--source" in x for x in p.problems)
    p = limits.plan(cfg)  # none chosen, a loopback target: flood spreads by itself,
    assert not p.problems and len(p.config.sources) == 15  # each range at most a third full
    assert p.config.sources[0] == "127.0.0.1"
    assert any("127.0.0.1-127.0.0.15" in n for n in p.notes)
    p = limits.plan(FloodConfig(conns=5000, workers=8, address=("127.0.0.1", 9),
                                sources=tuple(f"127.0.0.{i}" for i in range(2, 10))))
    assert not p.problems and p.conns_per_source == 625
    assert any("fill 62%" in n and "connect() slows down" in n for n in p.notes)


# ----------------------------------------------------------------- report views

def _result(**over) -> FloodResult:
    rec = st.Recorder()
    for v in range(10_000, 20_000, 10):
        rec.record(v)
    errs: dict = {}
    st.add_tally(errs, "connect", "ECONNREFUSED", 2)
    st.add_tally(errs, "recv", "peer-closed", 1)
    w = st.WorkerStats(worker=0, conns=10, attempted=10, connected=8, established=8, failed=2,
                       requests=1008, responses=1008, confirm_requests=8, traffic_requests=1000,
                       traffic_responses=1000, bytes_out=64512, bytes_in=64512,
                       connect_bytes_out=512, connect_bytes_in=512, errors=errs,
                       histograms={"latency": st.encode(rec.take())},
                       phases={"connect": [0, 10_000_000], "traffic": [10_000_000, 1_010_000_000]},
                       traffic_cpu=0.95, traffic_wall=1.0)
    cfg = FloodConfig(conns=10, address=("127.0.0.1", 4000), duration=1.0)
    plan = limits.Plan(config=cfg, fd_soft_before=1024, fd_limit=1024, fd_hard=1024, fds_per_worker=42,
                       server_fds_per_worker=0, port_range=(32768, 60999), conns_per_source=10)
    result = FloodResult(config=cfg, plan=plan, totals=st.merge([w]),
                         server={"command": "socktools serve --mode echo", "summary": {"bytes_in": 64512}})
    for k, v in over.items():
        setattr(result, k, v)
    result.warnings = generator_warnings(result)
    return result


def test_table_shows_rates_percentiles_failures_with_meaning_and_fix():
    text = render_table(_result())
    assert "8 of 10 established" in text and "2 failed" in text
    assert "1,000 sent · 1,000 answered · 1,000/s" in text
    assert "ECONNREFUSED" in text and "connection refused" in text and "fix: start the server" in text
    assert "peer-closed" in text
    assert "p99.9" in text and "round trip" in text
    assert "flood sent 64,512 bytes in all, the server received 64,512: equal" in text
    assert "warning: 1 of 1 flood worker(s) used 95% of a CPU" in text


def test_json_is_complete_and_serialisable():
    doc = to_json(_result())
    json.dumps(doc)
    assert doc["requests"]["per_second"] == 1000.0
    assert doc["latency_us"]["count"] == 1000 and doc["latency_us"]["hdr"].startswith("HISTF")
    assert doc["latency_us"]["p50"] == pytest.approx(15.0, rel=0.01)
    assert {e["error"] for e in doc["errors"]} == {"ECONNREFUSED", "peer-closed"}
    err = next(e for e in doc["errors"] if e["error"] == "ECONNREFUSED")
    assert err["phase"] == "connect" and err["count"] == 2 and err["fix"]
    assert doc["server_check"] == {"measure": "bytes", "flood": 64512, "server": 64512, "equal": True}
    assert doc["bytes"]["traffic_sent"] == 64000


def test_traffic_seconds_runs_to_the_end_of_the_drain():
    t = st.merge([st.WorkerStats(phases={"traffic": [0, 1_000_000_000], "drain": [1_000_000_000, 1_500_000_000]})])
    assert traffic_seconds(t) == 1.5


def test_format_and_live_line():
    assert format_us(12.345) == "12.3µs"
    assert format_us(4567) == "4.57ms"
    assert format_us(2_500_000) == "2.5s"
    assert format_us(None) == "-"
    line = render_live({"t": 2.5, "phase": "traffic", "open": 500, "rps": 12345.0,
                        "p99_so_far": 812.0, "errors": 3}, 500)
    assert "500/500" in line and "12,345 req/s" in line and "812µs" in line and "errors 3" in line


def test_the_config_says_what_the_user_chose():
    assert not FloodConfig(workers=0).workers_chosen and FloodConfig(workers=3).workers_chosen
    assert not FloodConfig().sources_chosen and FloodConfig(sources=("127.0.0.2",)).sources_chosen
