"""ping --udp on real datagram sockets: round trips to socat's UDP echo, every reply matched by
the sequence number in flood's datagram header (a late reply named late, a duplicate
duplicated), ECONNREFUSED per probe at a closed port, silence as a timeout, the usage errors."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import socktools_cmd, wait_until
from tests.udppeers import SocatUdpEcho, UdpEcho, closed_udp_port


def ping(*args: str, timeout: float = 60):
    return subprocess.run(socktools_cmd("ping", "--udp", *args), capture_output=True, text=True, timeout=timeout)


def test_round_trips_to_socats_udp_echo_and_the_summary():
    with SocatUdpEcho() as echo:
        out = ping(f"127.0.0.1:{echo.port}", "-c", "3", "-i", "10ms")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"PING 127.0.0.1 (127.0.0.1:{echo.port}): UDP echo (24-byte datagrams), 3 probes"
    for seq in (1, 2, 3):
        assert re.fullmatch(rf"reply from 127\.0\.0\.1:{echo.port}: seq={seq} bytes=24 time=\d+\.\d{{3}} ms",
                            lines[seq]), lines[seq]
    assert f"--- 127.0.0.1:{echo.port} udp ping statistics ---" in lines
    assert any(line.startswith("3 probes sent, 3 received, 0% loss") for line in lines)
    assert any(line.startswith("rtt min/avg/max/stddev = ") for line in lines)
    assert "datagrams: 3 sent, 3 answered, 0 late, 0 lost, 0 duplicated" in lines


def test_every_probe_to_a_closed_port_is_refused_by_icmp_and_said_so():
    port = closed_udp_port()
    out = ping("--port", str(port), "-c", "2", "-i", "10ms", "-W", "5s")
    assert out.returncode == 1
    words = f"nobody listens on UDP port {port} at 127.0.0.1: the kernel there answered with ICMP port unreachable"
    assert out.stdout.count(words) == 2, out.stdout
    assert "ECONNREFUSED x2" in out.stdout
    assert "datagrams: 2 sent, 0 answered, 0 late, 2 lost, 0 duplicated" in out.stdout


def test_a_silent_server_is_a_timeout_per_probe():
    with UdpEcho(silent=True) as peer:
        out = ping("--port", str(peer.port), "-c", "2", "-i", "10ms", "-W", "200ms")
        assert wait_until(lambda: peer.received == 2)       # both arrived; neither was answered
    assert out.returncode == 1
    assert out.stdout.count("timeout - no reply within 0.2s: UDP does not say whether the datagram or its "
                            "reply was lost, or whether anyone listens") == 2


def test_a_reply_after_its_timeout_is_named_late_not_received():
    """The peer answers probe 1 only when probe 2 arrives: probe 1 times out, and its reply
    comes during probe 2, matched by its sequence number -- late, not probe 2's."""
    with UdpEcho(hold_first=True) as peer:
        out = ping("--port", str(peer.port), "-c", "2", "-i", "10ms", "-W", "1s", "--json")
    doc = json.loads(out.stdout)
    p1, p2 = doc["probes"]
    assert p1["ok"] is False and p1["error"] == "timeout"
    assert p2["ok"] is True and p2["events"] == [{"kind": "late", "seq": 1}]
    d = doc["summary"]["datagrams"]
    assert (d["sent"], d["answered"], d["late"], d["lost"]) == (2, 1, 1, 0)
    assert out.returncode == 0


def test_a_duplicate_reply_is_named_duplicated():
    with UdpEcho(copies=2) as peer:
        out = ping("--port", str(peer.port), "-c", "2", "-i", "10ms")
    assert out.returncode == 0, out.stderr
    assert f"duplicate reply from 127.0.0.1:{peer.port}: seq=1" in out.stdout
    assert "datagrams: 2 sent, 2 answered, 0 late, 0 lost, 1 duplicated" in out.stdout


def test_the_json_of_a_udp_ping_follows_the_published_schema():
    pytest.importorskip("jsonschema", reason="jsonschema not installed (pip install jsonschema)")
    from tests.test_json_schemas import validate
    with UdpEcho() as peer:
        out = ping("--port", str(peer.port), "-c", "2", "-i", "10ms", "--json")
    doc = json.loads(out.stdout)
    validate(doc, "ping")
    assert doc["target"]["mode"] == "udp" and doc["summary"]["received"] == 2
    assert [p["size"] for p in doc["probes"]] == [24, 24]
    refused = ping("--port", str(closed_udp_port()), "-c", "1", "--json")
    validate(json.loads(refused.stdout), "ping")


@pytest.mark.parametrize("args,option", [
    (["--port", "9", "--icmp"], "--icmp"),
    (["--port", "9", "--tls"], "--tls"),
    ([], "--port"),
])
def test_what_udp_ping_cannot_do_is_a_usage_error_naming_the_option(args, option):
    out = ping(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert option in out.stderr and "Traceback" not in out.stderr


def test_a_unix_socket_is_not_for_udp(tmp_path):
    import socket
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        out = ping("--unix", path)
    assert out.returncode == 2 and "--unix" in out.stderr


def test_the_help_shows_a_real_udp_example():
    out = subprocess.run(socktools_cmd("ping", "--help"), capture_output=True, text=True, timeout=30)
    assert "socktools ping --udp --port 9000" in out.stdout


def test_the_udp_lines_on_hand_made_probes():
    """The report alone: events above the probe's line, the ledger's odd counts added when not 0."""
    import socket

    from socktools.ping.report import probe_line, summary_lines
    from socktools.ping.results import Probe, Target, summarize
    counts = {"sent": 3, "answered": 2, "late": 0, "lost": 1, "duplicated": 0, "reordered": 1, "truncated": 0,
              "foreign": 2, "stale": 0, "refused": 0}
    probes = [Probe(1, True, 0.5, "127.0.0.1:9", size=24, events=()),
              Probe(2, True, 0.25, "127.0.0.1:9", size=20, events=(("foreign", None), ("stale", 1))),
              Probe(3, False, None, "127.0.0.1:9", error="timeout", detail="no reply within 1s: ...",
                    elapsed_ms=1000.0, events=(), counts=counts)]
    assert probe_line(probes[1], False).splitlines() == [
        "foreign datagram from 127.0.0.1:9: not an echo of this ping's datagrams",
        "reply from 127.0.0.1:9 to a probe too old to place: seq=1",
        "reply from 127.0.0.1:9: seq=2 bytes=20 time=0.250 ms"]
    assert probe_line(probes[2], False) == "no reply from 127.0.0.1:9: seq=3 timeout - no reply within 1s: ..."
    stats = summarize(probes)
    assert stats.datagrams == counts and stats.received == 2
    lines = summary_lines(Target("127.0.0.1", socket.AF_INET, ("127.0.0.1", 9), "127.0.0.1:9"), stats, 2.0, False)
    assert lines[0] == "--- 127.0.0.1:9 udp ping statistics ---"
    assert "datagrams: 3 sent, 2 answered, 0 late, 1 lost, 0 duplicated, 1 reordered, 2 foreign" in lines
    assert Probe(1, True, 0.1, "x").to_dict().keys().isdisjoint({"size", "events"})   # TCP's JSON unchanged
