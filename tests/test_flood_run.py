"""flood on real loopback sockets: the worker and the runner against real servers.

Embedded servers are the real `socktools serve` (started and stopped by each
test on a free port); misbehaving servers are small threads in the test.
"""

from __future__ import annotations

import itertools
import socket

import pytest

from socktools import errors, protocol, reference
from socktools.flood.config import FloodConfig
from socktools.flood.report import render_table, server_check, to_json
from socktools.flood.runner import run_flood
from socktools.flood.worker import run_worker

from tests.threadserver import ThreadServer

pytestmark = pytest.mark.timeout(60)


def cfg(address, **kw) -> FloodConfig:
    kw.setdefault("conns", 4)
    kw.setdefault("workers", 1)
    kw.setdefault("duration", 0.3)
    return FloodConfig(address=address, **kw)


# ----------------------------------------------------------------- against the real server

def test_echo_over_two_workers_counts_exactly_what_the_server_saw():
    config = FloodConfig(conns=20, workers=2, duration=0.5, embedded=True)
    result = run_flood(config)
    c = result.totals.counters
    assert c["established"] == 20 and c["failed"] == 0 and not result.totals.errors
    assert c["requests"] == c["responses"] and c["unanswered"] == 0
    assert c["traffic_responses"] > 20
    assert result.totals.histograms["latency"].get_total_count() == c["traffic_responses"]
    summary = result.server["summary"]
    assert summary["bytes_in"] == c["bytes_out"] == c["bytes_in"] == summary["bytes_out"]
    assert c["bytes_out"] == 64 * c["requests"]
    assert server_check(result)["equal"]
    assert summary["accepted"] == 20
    assert len(result.totals.workers) == 2 and {w.established for w in result.totals.workers} == {10}
    assert "server check flood sent" in render_table(result)


def test_framed_requests_equal_the_servers_count_exactly():
    config = FloodConfig(mode="framed", conns=10, workers=2, requests=500, duration=30, embedded=True)
    result = run_flood(config)
    c = result.totals.counters
    assert not result.totals.errors and not result.totals.protocol_errors
    assert c["traffic_requests"] == 500 == c["traffic_responses"]
    assert c["requests"] == 510 == c["responses"]  # + each connection's confirming request
    assert result.server["summary"]["requests"] == c["requests"]
    assert result.server["summary"]["responses"] == c["responses"]
    assert to_json(result)["server_check"] == {"measure": "requests", "flood": 510, "server": 510, "equal": True}


def test_open_loop_rate_reports_corrected_and_uncorrected_latency():
    config = FloodConfig(conns=5, workers=1, rate=400.0, duration=0.5, embedded=True)
    result = run_flood(config)
    c = result.totals.counters
    assert not result.totals.errors
    assert 190 <= c["traffic_requests"] <= 202  # 400/s for 0.5 s, on a fixed schedule
    assert c["traffic_requests"] == c["traffic_responses"]
    corrected = result.totals.histograms["latency"]
    uncorrected = result.totals.histograms["latency_uncorrected"]
    assert corrected.get_total_count() == uncorrected.get_total_count() == c["traffic_responses"]
    # Counted from the scheduled time, every sample is at least its uncorrected self.
    for p in (50, 90, 99, 100):
        assert corrected.get_value_at_percentile(p) >= uncorrected.get_value_at_percentile(p)
    assert "coordinated omission corrected" in render_table(result)


def test_connect_mode_churns_exactly_the_requested_connections():
    config = FloodConfig(mode="connect", conns=4, workers=1, requests=60, duration=30, embedded=True)
    result = run_flood(config)
    c = result.totals.counters
    assert c["cycles"] == 60 == c["attempted"] and c["failed"] == 0
    assert result.server["summary"]["accepted"] == 60
    assert result.totals.histograms["connect"].get_total_count() == 60
    assert to_json(result)["connections"]["per_second"] > 0


def test_interval_events_are_emitted_while_running():
    events = []
    config = FloodConfig(conns=4, workers=2, duration=0.7, interval=0.2, embedded=True)
    result = run_flood(config, on_event=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan" and "server" in kinds and "go" in kinds
    ticks = [e for e in events if e["event"] == "interval"]
    assert len(ticks) >= 3
    assert [t["t"] for t in ticks] == sorted(t["t"] for t in ticks)
    assert any(t["phase"] == "traffic" and t["rps"] > 0 and t["latency"] for t in ticks)
    # Deltas add up to no more than the run's total (the rest is in the final drain/close).
    assert sum(t["responses"] for t in ticks) <= result.totals.counters["responses"]


# ----------------------------------------------------------------- failures, tallied

def test_refused_connections_are_tallied_by_phase_with_meaning(closed_port):
    stats = run_worker(cfg(closed_port, conns=5), 0)
    assert stats.errors == {"connect": {"ECONNREFUSED": 5}}
    assert stats.failed == 5 and stats.established == 0 and stats.attempted == 5
    exp = errors.lookup("ECONNREFUSED")
    assert "nothing is listening" in exp.meaning


def test_a_server_that_never_answers_times_out_in_the_connect_phase():
    """The kernel completes the handshake (connect() "succeeds"), but nobody ever answers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # never accepts: the first round trip can never complete
    try:
        stats = run_worker(cfg(silent.getsockname(), conns=3, connect_timeout=0.3), 0)
    finally:
        silent.close()
    assert stats.connected == 3 and stats.established == 0
    assert stats.errors == {"recv": {errors.TIMEOUT: 3}}


def test_echo_server_returning_extra_bytes_is_a_protocol_error():
    def handle(conn):
        while data := conn.recv(65536):
            conn.sendall(data + b"!")
    srv = ThreadServer(handle)
    try:
        stats = run_worker(cfg(srv.address, conns=2), 0)
    finally:
        srv.close()
    assert stats.protocol_errors == {"echo-surplus": 2}
    assert stats.errors == {"recv": {errors.PROTOCOL_ERROR: 2}}


def test_framed_server_without_keep_alive_is_reported_as_such():
    def handle(conn):
        dec = protocol.Decoder()
        while True:
            dec.receive_data(conn.recv(65536))
            msg = dec.next_event()
            if isinstance(msg, protocol.Message):
                plain = protocol.Message({k: v for k, v in msg.header.items() if k != "keep-alive"},
                                         msg.content, msg.value, msg.wire_size)
                conn.sendall(reference.respond(plain))
                return
    srv = ThreadServer(handle)
    try:
        stats = run_worker(cfg(srv.address, conns=2, mode="framed"), 0)
    finally:
        srv.close()
    assert stats.protocol_errors == {"no-keep-alive": 2}
    assert stats.established == 0


def test_framed_answers_split_in_pieces_are_decoded_and_checked():
    """A reply trickling in a few bytes at a time goes through the decoder, not the fast path."""
    req = protocol.Decoder()
    req.receive_data(reference.make_request("search", "ring", keep_alive=True))
    answer = reference.respond(req.next_event())

    def handle(conn):
        dec = protocol.Decoder()
        while data := conn.recv(65536):
            dec.receive_data(data)
            while isinstance(dec.next_event(), protocol.Message):
                for i in range(0, len(answer), 7):
                    conn.sendall(answer[i:i + 7])
    srv = ThreadServer(handle)
    try:
        stats = run_worker(cfg(srv.address, conns=2, mode="framed", value="ring", requests=20,
                               duration=10), 0)
    finally:
        srv.close()
    assert not stats.errors and stats.traffic_responses == 20 and stats.established == 2


def test_server_closing_at_once_fails_the_connection_not_the_run():
    srv = ThreadServer(lambda conn: conn.close())
    try:
        stats = run_worker(cfg(srv.address, conns=3), 0)
    finally:
        srv.close()
    assert stats.established == 0 and stats.failed == 3
    keys = {k for inner in stats.errors.values() for k in inner}
    assert keys <= {errors.PEER_CLOSED, "ECONNRESET", "EPIPE"} and keys


def test_echo_answers_arriving_byte_by_byte_count_as_whole_round_trips():
    def handle(conn):
        while data := conn.recv(65536):
            for i in range(len(data)):
                conn.sendall(data[i:i + 1])
    srv = ThreadServer(handle)
    try:
        stats = run_worker(cfg(srv.address, conns=2, size=16, requests=30, duration=10), 0)
    finally:
        srv.close()
    assert not stats.errors
    assert stats.traffic_responses == 30 == stats.traffic_requests
    assert stats.bytes_in == stats.bytes_out == 16 * 32


def test_connect_rate_paces_the_connect_phase(closed_port):
    """5 connections at 50/s cannot all start sooner than 4 intervals (80 ms) apart."""
    srv = ThreadServer(lambda conn: [conn.sendall(d) for d in iter(lambda: conn.recv(65536), b"")])
    try:
        stats = run_worker(cfg(srv.address, conns=5, connect_rate=50.0, requests=5, duration=10), 0)
    finally:
        srv.close()
    assert stats.established == 5 and not stats.errors
    start, end = stats.phases["connect"]
    assert (end - start) / 1e9 >= 0.079


def test_a_crashing_worker_is_reported_not_hidden(monkeypatch, closed_port):
    import socktools.flood.runner as runner

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "run_worker", boom)  # the forked worker inherits it
    result = run_flood(FloodConfig(conns=2, workers=2, duration=0.2, address=closed_port))
    assert len(result.crashed) == 2
    assert all("crashed: RuntimeError: boom" in line for line in result.crashed)
    assert "worker trouble" in render_table(result)


def test_echo_batches_count_exactly_and_a_surplus_mid_run_is_caught(monkeypatch):
    """Many connections answered per poll go through FixedLoop.data_batch; the
    counts stay exact, and one connection whose server sends a byte too many
    is failed as echo-surplus while the others carry on."""
    from socktools.flood import exchange
    sizes = []
    real = exchange.FixedLoop.data_batch

    def spy(self, conns, datas):
        sizes.append(len(conns))
        return real(self, conns, datas)

    monkeypatch.setattr(exchange.FixedLoop, "data_batch", spy)
    arrivals = itertools.count()

    def handle(conn):
        bad = next(arrivals) == 4  # the 5th connection turns bad on its 50th answer
        rounds = 0
        while data := conn.recv(65536):
            rounds += 1
            conn.sendall(data + b"!" if bad and rounds == 50 else data)
    srv = ThreadServer(handle)
    try:
        stats = run_worker(cfg(srv.address, conns=40, size=64, requests=6000, duration=20), 0)
    finally:
        srv.close()
    assert max(sizes) > 1, "no poll delivered several answers at once"
    assert stats.errors == {"recv": {"protocol-error": 1}}
    assert stats.lost == 1 and stats.established == 40
    assert stats.traffic_requests == 6000
    # Every request sent was answered except the one whose answer was bad.
    assert stats.traffic_responses == 5999
    assert stats.bytes_out == 64 * (6000 + 40)


def test_a_bug_in_flood_code_ends_those_connections_and_the_run_goes_on(monkeypatch, caplog):
    """An exception from flood's own protocol code is tallied as phase 'internal' and
    logged; the other connections finish the run."""
    import types

    from socktools.flood import exchange
    from socktools.flood.report import _errors_list
    calls = itertools.count()
    real = exchange.FixedLoop.data_received

    def buggy(self, conn, data):
        if next(calls) == 20:
            raise ValueError("a bug in data_received")
        return real(self, conn, data)

    monkeypatch.setattr(exchange.FixedLoop, "data_received", buggy)
    monkeypatch.setattr(exchange.FixedLoop, "data_batch", None)  # every answer through data_received
    srv = ThreadServer(lambda conn: [conn.sendall(d) for d in iter(lambda: conn.recv(65536), b"")])
    try:
        with caplog.at_level("ERROR", logger="socktools.core.loop"):
            stats = run_worker(cfg(srv.address, conns=4, size=64, requests=400, duration=20), 0)
    finally:
        srv.close()
    assert stats.errors == {"internal": {"ValueError": 1}}
    assert stats.established == 4 and stats.lost == 1
    assert stats.traffic_requests == 400 and stats.traffic_responses == 399
    assert any("FixedLoop raised ValueError" in r.getMessage() for r in caplog.records)
    (row,) = _errors_list(types.SimpleNamespace(errors=stats.errors))
    assert row["phase"] == "internal" and "flood's own code" in row["meaning"]
