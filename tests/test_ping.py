"""ping: TCP-connect probes on real loopback sockets, ICMP as root, pure logic unit-tested."""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import struct

import pytest
from click.testing import CliRunner

from socktools.ping import probe as ping
from socktools.cli import main
from tests.conftest import ipv6_loopback_available, skip_without_ipv6
from socktools.ping.probe import PingConfig, Probe, icmp_name, probes, resolve_target, summarize, tcp_probe


@pytest.fixture
def listening_port():
    with socket.create_server(("127.0.0.1", 0), backlog=64) as lsock:
        yield lsock.getsockname()[1]


def _target(port, host="127.0.0.1"):
    return resolve_target(PingConfig(host=host, port=port))


def test_tcp_probe_connects(listening_port):
    p = tcp_probe(_target(listening_port), 1, timeout=5)
    assert p.ok and p.error is None and p.time_ms is not None and p.time_ms > 0
    assert p.peer == f"127.0.0.1:{listening_port}"


def test_tcp_probe_refused(closed_port):
    p = tcp_probe(_target(closed_port[1]), 7, timeout=5)
    assert not p.ok and p.seq == 7 and p.time_ms is None
    assert p.error == "ECONNREFUSED" and p.errno == errno.ECONNREFUSED
    assert p.detail.startswith("connection refused")


def test_tcp_probe_times_out_when_the_accept_queue_is_full():
    """A listener whose accept queue is full drops SYNs: the client sees no answer at all."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        port = lsock.getsockname()[1]
        fillers = []
        try:
            # Fill the queue (never accept); a bounded number of nonblocking connects.
            for _ in range(8):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
                fillers.append(c)
            p = tcp_probe(_target(port), 1, timeout=0.3)
        finally:
            for c in fillers:
                c.close()
    assert not p.ok and p.error == "ETIMEDOUT" and "0.3 s" in p.detail


def test_ipv6_probe():
    skip_without_ipv6()
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as lsock:
        p = tcp_probe(_target(lsock.getsockname()[1], "::1"), 1, timeout=5)
    assert p.ok and p.peer.startswith("[::1]:")


def test_probes_pacing_with_injected_clock(monkeypatch):
    """The interval runs start to start; a fallen-behind schedule does not burst."""
    now = [0.0]
    sleeps = []

    def sleep(d):
        sleeps.append(round(d, 6))
        now[0] += d

    cfg = PingConfig(port=1, count=3, interval=1.0)
    calls = []

    def fake(target, seq, timeout):
        calls.append(seq)
        now[0] += 0.25          # each probe "takes" 250 ms
        return Probe(seq, True, 0.1, target.display)

    monkeypatch.setattr(ping, "tcp_probe", fake)
    out = list(probes(cfg, _target(1), sleep=sleep, clock=lambda: now[0]))
    assert [p.seq for p in out] == calls == [1, 2, 3]
    assert sleeps == [0.75, 0.75]     # no sleep after the last probe


def test_summarize_like_ping():
    results = [Probe(1, True, 1.0, "x"), Probe(2, True, 3.0, "x"),
               Probe(3, False, None, "x", error="ECONNREFUSED"),
               Probe(4, False, None, "x", error="ETIMEDOUT"),
               Probe(5, False, None, "x", error="ECONNREFUSED")]
    s = summarize(results)
    assert (s.sent, s.received, s.loss_pct) == (5, 2, 60.0)
    assert (s.min_ms, s.avg_ms, s.max_ms, s.stddev_ms) == (1.0, 2.0, 3.0, 1.0)
    assert s.failures == (("ECONNREFUSED", 2), ("ETIMEDOUT", 1))
    empty = summarize([Probe(1, False, None, "x", error="ECONNREFUSED")])
    assert empty.loss_pct == 100.0 and empty.avg_ms is None
    assert summarize([]).sent == 0
    one = summarize([Probe(1, True, 0.5, "x")])
    assert one.stddev_ms == 0.0 and not math.isnan(one.stddev_ms)


def test_icmp_names():
    assert icmp_name(3, 3) == "destination port unreachable (3/3)"
    assert icmp_name(3, 1) == "destination host unreachable (3/1)"
    assert icmp_name(11, 0) == "time to live exceeded in transit (11/0)"
    assert icmp_name(0, 0) == "echo reply (0/0)"
    assert icmp_name(1, 4, v6=True) == "destination port unreachable (1/4)"
    assert icmp_name(3, 99) == "destination unreachable, code 99 (3/99)"
    assert icmp_name(42, 0) == "ICMP type 42 (42/0)"


def _pinger(v6=False, ident=0x1234):
    """An IcmpPinger without its raw socket, to unit-test reply matching."""
    p = object.__new__(ping.IcmpPinger)
    p.ident, p.v6 = ident, v6
    return p


def _ipv4(proto, payload, ttl=64):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, ttl, proto, 0,
                       socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1")) + payload


def test_icmp_request_checksum_and_reply_matching():
    p = _pinger()
    req = p._request(7)
    assert req[0] == 8 and ping._checksum(req) == 0           # a valid checksum sums to zero
    assert struct.unpack("!HH", req[4:8]) == (0x1234, 7)
    reply = b"\x00\x00\x00\x00" + req[4:]
    assert p._match(_ipv4(1, reply, ttl=61), None, 7) == (0, 0, 61)
    assert p._match(_ipv4(1, reply), None, 8) is None          # late answer to another probe
    assert _pinger(ident=1)._match(_ipv4(1, reply), None, 7) is None   # another pinger's


def test_icmp_error_quoting_our_request_is_named():
    p = _pinger()
    quoted = _ipv4(1, p._request(3))[:28]                     # IP header + first 8 bytes
    err = _ipv4(1, struct.pack("!BBHI", 3, 3, 0, 0) + quoted)
    assert p._match(err, None, 3) == (3, 3, 64)
    assert p._match(err, None, 4) is None
    udp_quoted = _ipv4(17, b"\0" * 8)[:28]                      # an error about someone's UDP
    assert p._match(_ipv4(1, struct.pack("!BBHI", 3, 3, 0, 0) + udp_quoted), None, 3) is None


def test_icmpv6_matching():
    p = _pinger(v6=True)
    req = p._request(2)
    assert req[0] == 128
    assert p._match(bytes([129, 0, 0, 0]) + req[4:], 64, 2) == (129, 0, 64)
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(req), 58, 64,
                      socket.inet_pton(socket.AF_INET6, "::1"), socket.inet_pton(socket.AF_INET6, "::1"))
    err = struct.pack("!BBHI", 1, 4, 0, 0) + ip6 + req
    assert p._match(err, 64, 2) == (1, 4, 64)
    assert icmp_name(1, 4, v6=True) == "destination port unreachable (1/4)"


def test_cli_all_received(listening_port):
    r = CliRunner().invoke(main, ["ping", "127.0.0.1", "--port", str(listening_port),
                                  "--count", "3", "--interval", "10ms"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    for seq in (1, 2, 3):
        assert any(line.startswith(f"connected to 127.0.0.1:{listening_port}: seq={seq} time=")
                   for line in lines)
    assert "3 probes sent, 3 connected, 0% loss" in r.output
    assert "rtt min/avg/max/stddev = " in r.output


def test_cli_closed_port_fails_every_probe(closed_port):
    r = CliRunner().invoke(main, ["ping", f"127.0.0.1:{closed_port[1]}", "-c", "3", "-i", "10ms"])
    assert r.exit_code == 1
    failures = [line for line in r.output.splitlines() if line.startswith("no connection to")]
    assert len(failures) == 3 and all("ECONNREFUSED - connection refused" in f for f in failures)
    assert "3 probes sent, 0 connected, 100% loss" in r.output
    assert "ECONNREFUSED x3" in r.output
    assert "rtt" not in r.output


def test_cli_json(closed_port, listening_port):
    r = CliRunner().invoke(main, ["ping", "127.0.0.1", "-p", str(listening_port), "-c", "2",
                                  "-i", "10ms", "--json"])
    doc = json.loads(r.output)
    assert r.exit_code == 0 and doc["summary"]["received"] == 2 and len(doc["probes"]) == 2
    r = CliRunner().invoke(main, ["ping", "127.0.0.1", "-p", str(closed_port[1]), "-c", "1", "--json"])
    doc = json.loads(r.output)
    assert r.exit_code == 1 and doc["summary"]["failures"] == {"ECONNREFUSED": 1}
    assert doc["probes"][0]["errno"] == errno.ECONNREFUSED


def test_cli_usage_errors():
    runner = CliRunner()
    r = runner.invoke(main, ["ping", "127.0.0.1:5", "--port", "6"])
    assert r.exit_code == 2 and "port given twice" in r.output
    r = runner.invoke(main, ["ping", "127.0.0.1", "--interval", "1ms"])
    assert r.exit_code == 2 and "--interval" in r.output
    r = runner.invoke(main, ["ping", "127.0.0.1", "--count", "-1"])
    assert r.exit_code == 2 and "--count" in r.output


def test_cli_icmp_without_privilege_explains(monkeypatch):
    import socktools.kernel.doctor
    monkeypatch.setattr(socktools.kernel.doctor, "net_raw_privilege", lambda: (False, "not root and no CAP_NET_RAW"))
    r = CliRunner().invoke(main, ["ping", "127.0.0.1", "--icmp", "-c", "1"])
    assert r.exit_code == 3
    assert "needs root or CAP_NET_RAW" in r.output and "drop --icmp" in r.output
    assert r.output.startswith("socktools: ") and len(r.output.strip().splitlines()) == 1
    assert "Traceback" not in r.output


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="ICMP echo needs root")
def test_cli_icmp_as_root():
    r = CliRunner().invoke(main, ["ping", "127.0.0.1", "--icmp", "-c", "2", "-i", "50ms", "-W", "2s"])
    assert r.exit_code == 0, r.output
    assert "reply from 127.0.0.1: icmp_seq=1 ttl=" in r.output
    assert "2 probes sent, 2 received, 0% loss" in r.output
    if not ipv6_loopback_available():
        return            # no IPv6 loopback here
    r = CliRunner().invoke(main, ["ping", "::1", "--icmp", "-c", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["probes"][0]["icmp"] == [129, 0]


def test_ping_and_sniff_name_every_icmp_type_and_code_with_the_same_words():
    """One table (socktools.icmpnames): what `ping --icmp` reports, `sniff` shows."""
    from socktools.capture.icmp import describe_icmp, describe_icmpv6
    from socktools.icmpnames import ICMP_TYPES, ICMPV6_TYPES

    for v6, table, describe in ((False, ICMP_TYPES, describe_icmp), (True, ICMPV6_TYPES, describe_icmpv6)):
        for kind, (_, codes) in table.items():
            for code in codes or {0: None}:
                words = icmp_name(kind, code, v6=v6).rsplit(" (", 1)[0]
                # 8 bytes of ICMP header with a zero rest-of-header: no id/seq/MTU suffixes.
                shown = describe(bytes([kind, code]) + b"\0" * 30, 0)
                assert words in shown, (v6, kind, code, words, shown)
