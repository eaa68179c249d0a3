"""flood --stages: the ramp's arithmetic (no sockets), its config and CLI, and real ramped runs.

The arithmetic is :mod:`socktools.flood.stages`: the target at a time, the per-worker shares,
the rate's integral and the due times it gives.  The real runs go against a `socktools serve`
the test starts (and stops) on a free loopback port; they assert what a ramp guarantees --
never more than the peak open, the open count rising to the peak then falling, every request
answered and equal to the server's own count, the ramped schedule's exact size -- not timings.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import deque
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from socktools.errors import OptionError
from socktools.flood import lifecycle as lc
from socktools.flood import stages as stg
from socktools.flood import stats as st
from socktools.flood.config import FloodConfig
from socktools.flood.exchange import ClosedLoop
from socktools.flood.paced import OpenLoop
from socktools.flood.report import render_table
from socktools.flood.runner import run_flood
from socktools.flood.timeline import rows
from socktools.flood.session import Session, Slot
from socktools.flood.worker import RAMP_STEP, run_worker
from socktools.wire.spec import WireSpec, build
from test_flood_session import FakeConn

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------- the arithmetic, no sockets

def test_stages_parse_with_and_without_rates():
    assert stg.parse("10s:100,30s:500,10s:0") == ((10.0, 100, None), (30.0, 500, None), (10.0, 0, None))
    assert stg.parse(" 500ms:20:1000 , 1m:0:0") == ((0.5, 20, 1000.0), (60.0, 0, 0.0))


@pytest.mark.parametrize("bad, says", [
    ("", "DURATION:CONNS"), ("10s", "DURATION:CONNS"), ("10s:100,", "DURATION:CONNS"),
    ("10x:5", "not a duration"), ("10s:-5", "not a number"), ("10s:five", "not a number"),
    ("10s:5:fast", "not a rate"), ("10s:5:-1", "not a rate"), ("10s:5:inf", "not a rate"),
    ("10ms:5", "at least 50ms"), ("1s:5:10,1s:0", "every stage a rate"), ("1s:0,2s:0", "above 0"),
    ("1s:5:0", "rate above 0"), (",".join(["1s:1"] * (stg.MAX_STAGES + 1)), f"at most {stg.MAX_STAGES}"),
])
def test_a_bad_stage_says_what_is_wrong(bad, says):
    with pytest.raises(ValueError, match=says):
        stg.parse(bad)


def test_the_target_ramps_linearly_from_zero_through_each_stage():
    stages = stg.parse("1s:100,2s:500,1s:0")
    assert [stg.conns_at(stages, t) for t in (0, 0.25, 0.5, 1.0, 2.0, 3.0, 3.5, 4.0, 9.0)] == \
        [0, 25, 50, 100, 300, 500, 250, 0, 0]
    assert stg.total(stages) == 4.0 and stg.peak_conns(stages) == 500
    rated = stg.parse("1s:10:1000,1s:10:3000")
    assert [stg.rate_at(rated, t) for t in (0, 0.5, 1.0, 1.5, 2.0)] == [0, 500, 1000, 2000, 3000]
    assert stg.rate_at(rated, 1.5, share=0.25) == 500


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_the_workers_shares_add_up_to_the_target_at_every_moment(workers):
    stages = stg.parse("1s:13,1s:40,0.5s:0")
    for k in range(0, 51):
        t = k * 0.05
        shares = [stg.conns_at(stages, t, w, workers) for w in range(workers)]
        assert sum(shares) == stg.conns_at(stages, t)
        assert max(shares) - min(shares) <= 1     # the round-robin deal of connection numbers


def test_the_rate_integral_is_the_area_under_the_ramp():
    stages = stg.parse("1s:1:1000,2s:1:1000,1s:1:0")
    assert stg.integral(stages, 0.5) == pytest.approx(125)      # half the first triangle: 500 x 0.5 / 2
    assert stg.integral(stages, 1.0) == pytest.approx(500)
    assert stg.integral(stages, 3.0) == pytest.approx(2500)
    assert stg.integral(stages, 4.0) == pytest.approx(3000)
    assert stg.integral(stages, 10.0) == pytest.approx(3000)
    assert stg.scheduled(stages) == 3000 and stg.scheduled(stages, share=0.5) == 1500
    # not a whole number: the schedule is its floor
    assert stg.scheduled(stg.parse("1s:1:3")) == 1                # 1.5 requests' worth


@pytest.mark.parametrize("text", ["1s:1:1000,2s:1:1000,1s:1:0", "0.3s:4:200,0.3s:4:200",
                                  "0.5s:3:7,1s:3:0,0.5s:3:900"])
def test_the_nth_request_is_due_when_the_integral_reaches_n(text):
    stages = stg.parse(text)
    for share in (1.0, 0.5, 1 / 3):
        total = stg.scheduled(stages, share)
        dues = [stg.due_ns(stages, n, share) for n in range(1, total + 1)]
        assert dues == sorted(dues) and dues[-1] <= stg.total(stages) * 1e9 + 1
        for n in random.Random(total).sample(range(1, total + 1), min(total, 40)):
            assert stg.integral(stages, dues[n - 1] / 1e9, share) == pytest.approx(n, abs=1e-3)
        assert stg.due_ns(stages, total + 1, share) is None     # beyond the schedule: never due


def test_a_fixed_rate_stage_is_due_every_one_over_the_rate():
    stages = stg.check(((1.0, 1, 100.0), (1.0, 1, 100.0)))     # ramps to 100/s in 1 s, then holds
    start = stg.due_ns(stages, 50)                  # the ramp's 50 requests: 1 s
    assert start == 1_000_000_000
    assert [stg.due_ns(stages, 50 + k) - start for k in (1, 2, 10)] == [10_000_000, 20_000_000, 100_000_000]


# ----------------------------------------------------------------- config, lifecycle, CLI

def test_the_stages_set_the_duration_the_connections_and_the_rate():
    cfg = FloodConfig(stages="1s:10,2s:30,1s:0", conns=None, duration=None)
    assert (cfg.duration, cfg.conns, cfg.rate, cfg.staged_rate) == (4.0, 30, None, False)
    rated = FloodConfig(stages="1s:10:100,1s:0:0", conns=None, duration=None)
    assert (rated.conns, rated.rate, rated.staged_rate) == (10, 100.0, True)
    again = dataclasses.replace(rated, workers=2)      # a copy validates again, unchanged
    assert again.stages == rated.stages and again.conns == 10


@pytest.mark.parametrize("kw, says", [
    (dict(duration=5.0), "no --duration"), (dict(conns=7), "no --conns"),
    (dict(stages="1s:10:100", rate=50.0), "no --rate"), (dict(rate=50.0), "not --rate"),
    (dict(mode="connect"), "connect mode"), (dict(stages="1s:x"), "not a number"),
    (dict(stages=""), "DURATION:CONNS"),
])
def test_a_stage_that_conflicts_is_an_option_error_naming_stages(kw, says):
    fields = dict(stages="1s:10", conns=None, duration=None)
    fields.update(kw)
    with pytest.raises(OptionError, match=says) as err:
        FloodConfig(**fields)
    assert err.value.option == "stages"


def test_a_ramp_connection_joins_the_traffic_and_a_retired_one_closes():
    class S:
        index = 3
        state = lc.RAMPING
    slot = S()
    assert [lc.step(slot, e) for e in ("made", "retire", "closed")] == [lc.TRAFFIC, lc.RETIRING, lc.CLOSED]
    with pytest.raises(lc.LifecycleError, match="connection 3"):
        lc.step(S(), "retire")      # still connecting: the ramp retires only connections in traffic


@pytest.mark.parametrize("args, says", [
    (["--stages", "1s:10", "--duration", "5s"], "no --duration"),
    (["--stages", "1s:10", "--conns", "7"], "no --conns"),
    (["--stages", "1s:10:100", "--rate", "50"], "no --rate"),
    (["--stages", "1s:10", "--rate", "50"], "not --rate"),
    (["--stages", "1s"], "DURATION:CONNS"),
    (["--stages", "1s:10", "--mode", "connect"], "connect mode"),
])
def test_cli_a_bad_stages_is_a_usage_error_naming_the_option(args, says):
    from socktools.cli.flood import command
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2, result.output
    assert "--stages" in result.output and says in " ".join(result.output.split())


# ----------------------------------------------------------------- real runs

def _traffic(result) -> list:
    return [r for r in rows(result) if r["phase"] == "traffic"]


@pytest.mark.parametrize("pipeline", [1, 4])    # the fixed-reply hot loop; the parsing loop
def test_the_open_connections_follow_the_ramp_and_every_answer_is_counted(start_server, pipeline):
    srv = start_server("--mode", "echo", json_events=True)
    # Up to 20, up to 40 and hold there (so some tick sees the peak), then down to 0.
    cfg = FloodConfig(address=("127.0.0.1", srv.port), port=srv.port, workers=1, conns=None,
                      duration=None, stages="0.4s:20,0.4s:40,0.5s:40,0.4s:0", interval=0.1,
                      pipeline=pipeline)
    result = run_flood(cfg)
    srv.stop()
    c = result.totals.counters
    traffic = _traffic(result)
    opened = [r["open"] for r in traffic]
    peak = opened.index(max(opened))
    # The ramp: never above the peak; it reaches it; up to it and down from it without a dip
    # back (the controller only opens while the target rises and only retires while it falls);
    # the first and the last traffic intervals are below the peak.
    assert max(opened) == 40 and all(0 <= n <= 40 for n in opened)
    assert opened[:peak + 1] == sorted(opened[:peak + 1])
    assert opened[peak:] == sorted(opened[peak:], reverse=True)
    assert opened[0] < 40 and opened[-1] < 40
    # Each row carries the stages' target at its end, the whole run's (one worker: its share).
    assert max(r["target_conns"] for r in traffic) == 40 and all(r["target_rps"] is None for r in traffic)
    # Every connection the ramp opened was made; none failed or was lost; the ramp down closed
    # them cleanly, each after its last answer: nothing unanswered, nothing in error.
    assert c["attempted"] == c["connected"] == c["established"] >= 40
    assert c["failed"] == c["lost"] == c["unanswered"] == c["reconnects"] == 0 and not result.totals.errors
    assert c["confirm_requests"] == 0                      # no confirming trip: made into the traffic
    assert c["traffic_requests"] == c["traffic_responses"] == c["requests"] == c["responses"] > 0
    assert result.totals.histograms["latency"].get_total_count() == c["traffic_responses"]
    table = render_table(result)
    assert "stages  0.4s:20, 0.4s:40, 0.5s:40, 0.4s:0  (duration:conns" in table
    assert "first round trips" not in table                 # none confirmed these connections
    summary = srv.final_summary()                           # the server's own count
    assert summary["bytes_in"] == summary["bytes_out"] == c["bytes_out"] == c["bytes_in"] == 64 * c["requests"]


def test_a_ramped_rate_schedules_exactly_the_integral_of_the_ramp(start_server):
    srv = start_server("--mode", "echo", json_events=True)
    # 0 -> 200/s in 0.3 s, 200/s for 0.3 s, down to 0 (and no connection) in 0.2 s:
    # 30 + 60 + 20 = 110 requests, on 4 connections at most.
    cfg = FloodConfig(address=("127.0.0.1", srv.port), port=srv.port, workers=1, conns=None,
                      duration=None, stages="0.3s:4:200,0.3s:4:200,0.2s:0:0")
    assert stg.scheduled(cfg.stages) == 110
    # A clock at half speed: when the loop's timer ends the traffic, the pacer's clock has seen
    # only half the stages; every request of the schedule still goes out, none beyond it.
    base = time.perf_counter_ns()
    clock = lambda: base + (time.perf_counter_ns() - base) // 2   # noqa: E731
    stats = run_worker(cfg, 0, clock=clock)
    srv.stop()
    assert stats.scheduled == 110
    # Due while no connection was open (the ramp starts from none, ends with none): late, not sent.
    assert stats.traffic_requests + stats.late == 110 and stats.late < 110
    assert stats.traffic_responses == stats.traffic_requests and stats.unanswered == 0
    assert stats.failed == stats.lost == 0 and not stats.errors
    assert srv.final_summary()["bytes_in"] == 64 * stats.traffic_requests == stats.bytes_out


def test_the_ramp_controller_step_fits_the_shortest_stage():
    assert stg.MIN_STAGE == RAMP_STEP


# ----------------------------------------------------------------- retiring, without sockets

class RetiringConn(FakeConn):
    """A fake connection that, as the real one, runs its protocol's ``connection_lost`` on close."""

    def __init__(self, slot, protocol) -> None:
        super().__init__(slot)
        self.protocol = protocol

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(self, None)

    abort = close


def _pipelined(kind):
    """A session in traffic with one connection of ``kind``'s loop, three GETs in flight."""
    spec = WireSpec(mode="redis", commands=("GET k",))
    extra = dict(stages="1s:1:100,1s:0:0") if kind is OpenLoop else dict(stages="1s:1,1s:0")
    cfg = FloodConfig(address=("127.0.0.1", 9), port=9, mode="redis", wire=spec, workers=1, pipeline=3,
                      conns=None, duration=None, **extra)
    clock = SimpleNamespace(now=0)
    loop = SimpleNamespace(call_later=lambda delay, cb: None, connections={})
    proto = build(spec)
    s = Session(cfg, 0, loop, lambda: clock.now, st.WorkerStats(), proto, lambda conn: None, lambda: 0)
    traffic = kind(s, None)
    s.start_traffic(traffic)
    slot = Slot(0, 0, lc.RAMPING)
    slot.parser = proto.parser()
    conn = RetiringConn(slot, traffic)
    s.adopt(conn)
    lc.step(slot, "made")
    if kind is OpenLoop:
        traffic.order = [conn]
        slot.times, slot.dues, slot.backlog = deque([10, 10, 10]), deque([5, 6, 7]), deque([8])
        traffic.sent = 3
    else:
        traffic.send_first(conn, 10)              # three requests leave at t=10
    conn.written.clear()
    return s, clock, traffic, conn


@pytest.mark.parametrize("kind", ["closed", "open"])
def test_a_retired_connection_answers_what_it_owes_sends_nothing_new_then_closes(kind):
    s, clock, traffic, conn = _pipelined(ClosedLoop if kind == "closed" else OpenLoop)
    sent = traffic.requests_sent()
    traffic.retire([conn])
    assert conn.ctx.state == lc.RETIRING and conn not in s.live and conn in s.retiring
    clock.now = 50
    conn.protocol.data_received(conn, b"$-1\r\n$-")       # one answer and a piece of the next
    assert not conn.closed
    conn.protocol.data_received(conn, b"1\r\n$-1\r\n")     # the second and third
    # The open loop's request queued before the retirement goes out (scheduled in the traffic) ...
    assert conn.written == ([] if kind == "closed" else [b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"])
    assert conn.closed == (kind == "closed")               # the closed loop owed no more
    if kind == "open":
        conn.protocol.data_received(conn, b"$-1\r\n")      # ... and its answer is awaited too
    # Answered (each latency counted as the loop counts it), nothing new sent, closed by us:
    # not a failure, not unanswered, not lost.
    assert conn.closed and conn.ctx.state == lc.CLOSED and not s.retiring
    hist = s.rec["latency"].take()
    assert hist.get_total_count() == (3 if kind == "closed" else 4)
    assert traffic.requests_sent() == sent + (0 if kind == "closed" else 1)
    c = s.stats
    assert c.unanswered == c.lost == c.failed == 0 and not c.errors and s.phase == "traffic"
