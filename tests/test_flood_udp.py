"""flood --udp on real datagram sockets: every datagram accounted for, losses attributed.

The peers: socat's UDP echo (Debian), and an echo server (tests/udppeers.py) that counts what it
receives (the receiver's own count, which flood's must equal) and can be made to drop: a
receive buffer at the kernel's minimum that it does not read until the kernel has dropped.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import socktools_cmd, wait_until
from tests.peers import free_port
from tests.udppeers import UdpEcho


def flood(*args: str, timeout: float = 60) -> tuple:
    out = subprocess.run(socktools_cmd("flood", "--udp", "--json", *args), capture_output=True, text=True,
                         timeout=timeout)
    doc = json.loads(out.stdout) if out.stdout.strip().startswith("{") else None
    return out.returncode, doc, out.stderr


def test_every_datagram_is_answered_and_the_servers_count_equals_floods():
    with UdpEcho() as echo:
        rc, doc, err = flood("--port", str(echo.port), "--conns", "8", "--workers", "2", "--requests", "4000")
        received = echo.received
    assert rc == 0, err
    d = doc["datagrams"]
    assert d["sent"] == d["answered"] == 4000 == received
    assert d["lost"] == d["late"] == d["duplicated"] == d["foreign"] == 0
    assert doc["requests"]["traffic_answered"] == 4000
    assert doc["latency_us"]["count"] == 4000


def test_the_kernels_drops_at_a_full_receive_buffer_are_the_losses_to_the_datagram():
    """sent = what the server received + what its kernel dropped, and every lost datagram is
    one the kernel dropped (the server's buffer, or ours for a reply): none unexplained."""
    with UdpEcho(hold=True) as echo:
        rc, doc, err = flood("--port", str(echo.port), "--conns", "4", "--workers", "1", "--rate", "20000",
                             "--duration", "1s", "--size", "1000", "--reply-timeout", "2s")
        received = echo.received
    d = doc["datagrams"]
    assert d["server_drops"] is not None and d["server_drops"] >= 1, err
    assert d["sent"] == received + d["server_drops"]
    assert d["lost"] == d["server_drops"] + d["client_drops"] == d["lost_at_receive_buffer"]
    assert d["lost_unexplained"] == 0
    assert d["sent"] == d["answered"] + d["late"] + d["lost"]
    # a failure of the run, by name, like an unanswered TCP request (what --threshold errors==0 reads)
    assert {"phase": "recv", "error": "datagram-lost", "count": d["lost"]}.items() <= \
        next(e for e in doc["errors"] if e["error"] == "datagram-lost").items()
    assert doc["failures_total"] >= d["lost"]
    assert rc == 0, err


def test_a_port_nobody_listens_on_is_refused_by_icmp_and_every_datagram_lost():
    port = free_port()
    rc, doc, err = flood("--port", str(port), "--conns", "2", "--requests", "10", "--reply-timeout", "200ms")
    assert rc == 1
    d = doc["datagrams"]
    assert d["answered"] == 0 and d["lost"] == d["sent"] >= 2
    assert any(e["error"] == "ECONNREFUSED" for e in doc["errors"]), doc["errors"]


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed (apt-get install socat)")
def test_socats_udp_echo_answers_every_datagram():
    port = free_port()
    proc = subprocess.Popen(["socat", "-T2", f"UDP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", "PIPE"])
    try:
        def listening():
            out = subprocess.run(["ss", "-Huan", f"sport = :{port}"], capture_output=True, text=True).stdout
            return bool(out.strip())
        assert wait_until(listening), "socat did not bind"
        rc, doc, err = flood("--port", str(port), "--conns", "1", "--requests", "500")
    finally:
        proc.terminate()
        proc.wait(10)
    assert rc == 0, err
    assert doc["datagrams"]["answered"] == doc["datagrams"]["sent"] == 500


def test_the_text_report_says_where_the_datagrams_went():
    with UdpEcho() as echo:
        out = subprocess.run(socktools_cmd("flood", "--udp", "--port", str(echo.port), "--conns", "2",
                                           "--requests", "100"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "datagrams    100 sent · 100 answered · 0 lost" in out.stdout
    assert "sockets      2 of 2 UDP sockets connected · 0 failed" in out.stdout


@pytest.mark.parametrize("args,option", [
    (["--udp", "--port", "9", "--mode", "redis", "--command", "PING"], "--mode"),
    (["--udp", "--port", "9", "--size", "70000"], "--size"),
    (["--udp", "--port", "9", "--size", "10"], "--size"),
    (["--udp", "--port", "9", "--pipeline", "2"], "--pipeline"),
    (["--port", "9", "--reply-timeout", "1s"], "--reply-timeout"),
    (["--udp", "--port", "9", "--stages", "1s:10"], "--stages"),
    (["--udp", "--port", "9", "--tls", "--insecure"], "--tls"),
])
def test_what_a_datagram_flood_cannot_do_is_a_usage_error_naming_the_option(args, option):
    out = subprocess.run(socktools_cmd("flood", *args), capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert option in out.stderr and "Traceback" not in out.stderr


def test_the_json_of_a_datagram_flood_follows_the_published_schema():
    pytest.importorskip("jsonschema", reason="jsonschema not installed (pip install jsonschema)")
    from tests.test_json_schemas import validate
    with UdpEcho() as echo:
        rc, doc, err = flood("--port", str(echo.port), "--conns", "2", "--requests", "50")
    assert rc == 0, err
    validate(doc, "flood")
    assert doc["config"]["udp"] is True and doc["config"]["reply_timeout"] == 1.0


# ------------------------------------------------------------------ your own bytes: raw and line
def test_raw_dns_queries_against_dnsmasq_every_one_answered_and_counted_by_dnsmasq(tmp_path):
    """flood --udp --mode raw: a DNS query as the datagram (no header of ours), one in flight
    per socket; dnsmasq's own log counts the queries, and every answer holds 127.0.0.1."""
    from tests.udppeers import Dnsmasq, dns_query
    query = tmp_path / "query.bin"
    query.write_bytes(dns_query("example.test"))
    log = tmp_path / "dnsmasq.log"
    log.touch(mode=0o666)               # dnsmasq drops root before it opens its log
    with Dnsmasq(log=log) as dns:
        rc, doc, err = flood("--port", str(dns.port), "--mode", "raw", "--send-file", str(query), "--conns", "4",
                             "--workers", "2", "--requests", "1000", "--reply-match", "\\x7f\\x00\\x00\\x01")
        assert rc == 0, err
        assert wait_until(lambda: dns.queries() >= 1000, 10), dns.queries()
        counted = dns.queries()
    d = doc["datagrams"]
    assert d["sent"] == d["answered"] == counted == 1000
    assert d["lost"] == d["mismatched"] == 0 and doc["failures_total"] == 0


def test_raw_replies_that_do_not_match_are_answers_that_failed():
    with UdpEcho() as echo:
        rc, doc, err = flood("--port", str(echo.port), "--mode", "line", "--send", "PING", "--conns", "2",
                             "--requests", "20", "--reply-match", "^PONG")
    assert rc == 0, err
    d = doc["datagrams"]
    assert (d["answered"], d["mismatched"]) == (20, 20)
    assert doc["reply_failures"] == {"wrong-reply": {"did not match --reply-match": 20}}


def test_raw_datagrams_a_silent_server_never_answers_are_lost():
    with UdpEcho(silent=True) as echo:
        rc, doc, err = flood("--port", str(echo.port), "--mode", "raw", "--send", "hello", "--conns", "2",
                             "--requests", "6", "--reply-timeout", "100ms")
    d = doc["datagrams"]
    assert rc == 1 and d["answered"] == 0 and d["lost"] == d["sent"] >= 2


@pytest.mark.parametrize("args,option", [
    (["--mode", "raw", "--send", "A", "--reply-until", "\\n"], "--reply-until"),
    (["--mode", "raw", "--send", "A", "--reply-bytes", "4"], "--reply-bytes"),
    (["--mode", "raw", "--send", "A", "--no-reply"], "--no-reply"),
    (["--mode", "line", "--send", "A", "--greeting"], "--greeting"),
    (["--mode", "raw", "--send", "A", "--rate", "100"], "--rate"),
    (["--mode", "raw", "--send-file", "BIG"], "--send-file"),
])
def test_raw_over_udp_refuses_what_a_datagram_cannot_do_naming_the_option(tmp_path, args, option):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 70_000)
    argv = [str(big) if a == "BIG" else a for a in args]
    out = subprocess.run(socktools_cmd("flood", "--udp", "--port", "9", *argv), capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2, out.stderr
    assert option in out.stderr and "Traceback" not in out.stderr
