"""stall --udp on real datagram sockets: the sender is never stopped, the receiver's kernel
drops, and every datagram is accounted for -- sent = reached the receiver + dropped by its
kernel, exactly.

With stall's own receiver the datagrams that reached it are read back and counted; against
``serve --udp --mode sink`` the worker is stopped (SIGSTOP) while stall sends, so it reads
nothing, then continued and stopped: its own count of what it received and of the kernel's
drops at its sockets is the check of what stall inferred.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess

import pytest
from click.testing import CliRunner

from socktools.cli import stall as cli_stall
from socktools.kernel.udpstats import read_counters
from socktools.stall.config import StallConfig
from socktools.stall.udp import run_udp_stall
from tests.conftest import socktools_cmd, wait_until
from tests.test_serve_udp import stats_until


def stall_json(*args: str, timeout: float = 60) -> tuple:
    out = subprocess.run(socktools_cmd("stall", "--udp", "--json", *args), capture_output=True, text=True,
                         timeout=timeout)
    return out.returncode, json.loads(out.stdout), out.stderr


@pytest.mark.parametrize("host, chunk, rcvbuf", [("127.0.0.1", 1024, None), ("127.0.0.1", 65507, 1),
                                                 ("::1", 100, 4096)])
def test_every_datagram_sent_to_its_own_receiver_is_held_or_dropped_by_the_kernel_exactly(host, chunk, rcvbuf):
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    before = read_counters()
    r = run_udp_stall(StallConfig(udp=True, host=host, chunk=chunk, rcvbuf=rcvbuf, count=3000, settle=0.1))
    after = read_counters()
    s, a = r.send, r.account
    assert s.attempted == 3000 and s.sent + sum(s.refused.values()) == 3000
    assert a.counted and a.sent == s.sent
    assert a.dropped > 0 and a.reached > 0                  # 3,000 overflow every buffer here
    assert a.sent == a.reached + a.dropped and a.unaccounted == 0
    assert a.held_bytes == a.reached * chunk and a.foreign == 0
    # the buffer keeps the first to arrive: once full, every later (equal) datagram is dropped
    assert (a.held_first, a.held_last) == (0, a.reached - 1)
    assert r.receiver.dropped == a.dropped and r.receiver.recv_q >= a.held_bytes
    # the machine counts them too (other programs' datagrams can only add to its delta)
    if before is not None:
        assert after["RcvbufErrors"] - before["RcvbufErrors"] >= a.dropped
        assert a.machine_rcvbuf_errors >= a.dropped
    assert r.ok and r.outcome == "dropped"


def test_the_json_is_one_object_with_the_equation_and_exit_0():
    pytest.importorskip("jsonschema", reason="jsonschema not installed (pip install jsonschema)")
    from tests.test_json_schemas import validate
    rc, doc, err = stall_json("--rcvbuf", "1", "--count", "200", "--settle", "100ms")
    assert rc == 0, err
    validate(doc, "stall")
    assert doc["ok"] is True and doc["outcome"] == "dropped" and doc["transport"] == "udp"
    a = doc["account"]
    assert a["sent"] == 200 == a["reached"] + a["dropped"] and a["unaccounted"] == 0 and a["counted"]
    assert doc["receiver"]["source"] == "SO_MEMINFO" and doc["config"]["udp"] is True
    assert doc["config"]["chunk"] == 1024       # the datagram's default size, not TCP's 64 KiB


def test_datagrams_that_all_fit_are_no_drop_and_exit_1():
    rc, doc, err = stall_json("--count", "10", "--settle", "100ms")
    assert rc == 1
    assert doc["ok"] is False and doc["outcome"] == "fit"
    assert doc["account"]["reached"] == 10 and doc["account"]["dropped"] == 0
    assert "fit in the receiver's buffer" in err


def test_nobody_bound_at_the_port_is_econnrefused_explained():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # closed: nobody is bound there now, and the kernel answers ICMP port unreachable
    rc, doc, err = stall_json("--port", str(port), "--settle", "100ms")
    assert rc == 1
    assert doc["ok"] is False and doc["outcome"] == "failed" and doc["error"] == "ECONNREFUSED"
    assert "ICMP port unreachable" in doc["message"] and doc["phase"] == "send"


@pytest.mark.parametrize("workers", [1, 2])
def test_against_a_stopped_udp_sink_stall_infers_what_the_sink_then_counts(start_server, workers):
    srv = start_server("--udp", "--mode", "sink", "--rcvbuf", "1", "--workers", str(workers),
                       "--stats-interval", "100ms", json_events=True)
    if workers == 2:
        assert wait_until(lambda: len(srv.worker_pids()) == 2)
    readers = [srv.pid] if workers == 1 else srv.worker_pids()
    sent = 400
    for pid in readers:
        os.kill(pid, signal.SIGSTOP)        # the sink reads nothing while stall sends
    try:
        rc, doc, err = stall_json("--port", str(srv.port), "--count", str(sent), "--chunk", "1000",
                                  "--settle", "200ms")
    finally:
        for pid in readers:
            os.kill(pid, signal.SIGCONT)
    assert rc == 0, err
    a, rv = doc["account"], doc["receiver"]
    assert doc["outcome"] == "dropped" and rv["kind"] == "target" and rv["source"] == "sock_diag"
    assert rv["sockets"] >= workers and srv.pid in [pid for pid, _ in rv["pids"]]
    assert a["sent"] == sent and not a["counted"] and a["unaccounted"] is None
    assert a["dropped"] >= 1 and a["reached"] == sent - a["dropped"]
    assert rv["recv_q"] > 0                  # the stopped sink held what reached it
    # continued, the sink reads what its kernel held: its count is what stall inferred
    ev = stats_until(srv, lambda ev: ev["datagrams_in"] + ev["kernel_drops"] == sent)
    assert ev["datagrams_in"] == a["reached"]
    srv.stop()
    summary = srv.final_summary()
    assert summary["datagrams_in"] == a["reached"] and summary["kernel_drops"] == a["dropped"]
    assert summary["bytes_in"] == a["reached"] * 1000


def test_against_a_reading_udp_sink_nothing_is_dropped_and_the_outcome_says_reading(start_server):
    srv = start_server("--udp", "--mode", "sink", "--stats-interval", "100ms", json_events=True)
    # 50 datagrams fit the sink's default buffer even unread; it reads them: its queue empties
    rc, doc, err = stall_json("--port", str(srv.port), "--count", "50", "--settle", "1s")
    assert rc == 1
    assert doc["outcome"] == "reading" and doc["account"]["dropped"] == 0 and doc["receiver"]["recv_q"] == 0
    assert "read every datagram" in err
    stats_until(srv, lambda ev: ev["datagrams_in"] == 50)


@pytest.mark.parametrize("args, option", [
    (["--udp", "--tls"], "--tls"),
    (["--udp", "--chunk", "65508"], "--chunk"),
    (["--udp", "--drain"], "--drain"),
    (["--udp", "--mode", "redis", "--command", "SET k v"], "--mode"),
    (["--udp", "--send", "hello"], "--send"),
    (["--udp", "--count", "0"], "--count"),
    (["--udp", "--count", "1000001"], "--count"),
    (["--count", "5"], "--count"),
    (["--udp", "--port", "9000", "--rcvbuf", "4096"], "--rcvbuf"),
])
def test_options_that_do_not_apply_to_datagrams_are_usage_errors_naming_the_option(args, option):
    result = CliRunner().invoke(cli_stall.command, args)
    assert result.exit_code == 2, result.output
    assert re.search(f"Invalid value for '?{option}'?:", result.output), result.output


def test_a_udp_chunk_of_the_largest_payload_is_accepted_and_the_default_size_is_the_datagrams_own():
    config = StallConfig(udp=True, chunk=65507)
    assert config.chunk == 65507 and config.datagrams == 10_000
    assert StallConfig(udp=True).chunk == 1024 and StallConfig().chunk == 65536


def test_a_receiver_whose_counts_cannot_be_read_is_unseen_not_fit(monkeypatch):
    """A server on another host (or namespace) is in no socket table here: stall must not say
    the datagrams fit -- it cannot know -- but that their fate is unseen, and why."""
    from socktools.kernel import socktable, udpstats
    from socktools.stall.udpreport import render_udp_report, udp_failure_line

    def unreadable(host, port, *, processes=False):
        raise socktable.SocketTableUnavailable("no socket table in this test")
    monkeypatch.setattr(udpstats, "bound_sockets", unreadable)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:    # bound, never reads
        server.bind(("127.0.0.1", 0))
        r = run_udp_stall(StallConfig(udp=True, port=server.getsockname()[1], count=500, settle=0.05))
    assert r.send.sent == 500 and r.account.dropped is None and r.account.reached is None
    assert r.outcome == "unseen" and not r.ok
    assert "no socket table in this test" in r.receiver.unavailable
    assert "no socket table in this test" in udp_failure_line(r)
    assert "could not read" in render_udp_report(r)


def test_the_timeout_bounds_the_send_and_the_account_stays_exact():
    from socktools.stall.config import MAX_UDP_COUNT
    r = run_udp_stall(StallConfig(udp=True, count=MAX_UDP_COUNT, timeout=0.05, settle=0.01, chunk=64))
    assert r.send.stopped_by == "timeout" and 0 < r.send.attempted < MAX_UDP_COUNT
    assert r.account.sent == r.account.reached + r.account.dropped and r.account.unaccounted == 0


def test_udp_with_a_unix_socket_is_a_usage_error_naming_unix(tmp_path):
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        result = CliRunner().invoke(cli_stall.command, ["--udp", "--unix", path])
    assert result.exit_code == 2, result.output
    assert re.search("Invalid value for '?--unix'?:", result.output), result.output
