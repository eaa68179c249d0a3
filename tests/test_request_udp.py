"""request --udp on real datagram sockets: socat's UDP echo, dnsmasq answering a DNS query sent
as a raw datagram, a closed port (ICMP port unreachable -> ECONNREFUSED), a server that never
answers (the timeout), a reply cut by a small buffer (MSG_TRUNC), and the usage errors."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from socktools.request.udp import datagrams
from tests.conftest import socktools_cmd, wait_until
from tests.udppeers import Dnsmasq, SocatUdpEcho, UdpEcho, a_records, closed_udp_port, dns_query


def request(*args: str, timeout: float = 30):
    return subprocess.run(socktools_cmd("request", "--udp", *args), capture_output=True, text=True,
                          timeout=timeout)


def test_one_datagram_to_socats_echo_comes_back_with_its_size_time_and_sender():
    with SocatUdpEcho() as echo:
        out = request("--port", str(echo.port), "--mode", "raw", "--send", r"hello\x00world\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "b'hello\\x00world\\n'\n"
    assert f"12 bytes from 127.0.0.1:{echo.port} in " in out.stderr and " ms" in out.stderr


def test_several_sends_are_several_datagrams_each_reply_shown_in_order():
    with SocatUdpEcho() as echo:
        out = request("--port", str(echo.port), "--mode", "line", "--send", "one", "--send", "two",
                      "--send", "three", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] is True and doc["udp"] is True and doc["mode"] == "line"
    assert [d["request"] for d in doc["datagrams"]] == ["one", "two", "three"]
    assert [d["reply"]["bytes"] for d in doc["datagrams"]] == ["one\n", "two\n", "three\n"]
    assert all(d["peer"] == f"127.0.0.1:{echo.port}" and d["ms"] > 0 for d in doc["datagrams"])
    assert doc["bytes_sent"] == doc["bytes_received"] == 4 + 4 + 6


def test_the_text_of_a_conversation_heads_each_datagram():
    with UdpEcho() as echo:
        out = request("--port", str(echo.port), "--mode", "raw", "--send", "a", "--send", "bb")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("--- 1: a, ") and lines[0].endswith(f"1 byte from 127.0.0.1:{echo.port}")
    assert lines[1] == "b'a'"
    assert lines[2].startswith("--- 2: bb, ") and lines[2].endswith(f"2 bytes from 127.0.0.1:{echo.port}")
    assert lines[3] == "b'bb'"
    assert echo.got[:2] == [b"a", b"bb"]


def test_dnsmasq_answers_a_dns_query_sent_from_a_file(tmp_path):
    query = tmp_path / "query.bin"
    query.write_bytes(dns_query("example.test"))
    with Dnsmasq() as dns:
        out = request("--port", str(dns.port), "--mode", "raw", "--send-file", str(query), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    step = doc["datagrams"][0]
    assert step["bytes_sent"] == len(dns_query("example.test"))
    assert step["peer"] == f"127.0.0.1:{dns.port}" and step["truncated"] is False
    reply = bytes.fromhex(step["reply"]["hex"])
    assert len(reply) == step["bytes_received"]
    assert a_records(reply) == ["127.0.0.1"]


def test_dnsmasq_answers_a_dns_query_typed_with_escapes():
    typed = "".join(f"\\x{b:02x}" for b in dns_query("example.test", qid=0x0102))
    with Dnsmasq() as dns:
        out = request("--port", str(dns.port), "--send", typed, "--json")     # raw: the --udp default
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["mode"] == "raw"
    assert a_records(bytes.fromhex(doc["datagrams"][0]["reply"]["hex"]), qid=0x0102) == ["127.0.0.1"]


def test_a_closed_port_is_refused_by_icmp_and_said_so_plainly():
    port = closed_udp_port()
    out = request("--port", str(port), "--send", "anyone?", "--timeout", "5s")
    assert out.returncode == 1
    assert (f"nobody listens on UDP port {port} at 127.0.0.1: the kernel there answered with ICMP port "
            "unreachable") in out.stderr
    out = request("--port", str(port), "--send", "anyone?", "--json")
    doc = json.loads(out.stdout)
    assert out.returncode == 1 and doc["ok"] is False
    assert doc["error"]["error"] == "ECONNREFUSED" and doc["error"]["phase"] == "recv"


def test_a_server_that_never_answers_is_a_timeout_that_claims_nothing():
    with UdpEcho(silent=True) as peer:
        out = request("--port", str(peer.port), "--send", "hello?", "--timeout", "300ms", "--json")
        assert wait_until(lambda: peer.got == [b"hello?"])      # it arrived; no reply came
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["error"]["error"] == "timeout"
    assert doc["error"]["message"] == ("no reply within 0.3s: UDP does not say whether the datagram or its "
                                       "reply was lost, or whether anyone listens")
    assert doc["datagrams"][0]["reply"] is None and doc["datagrams"][0]["ms"] is None


def test_a_reply_larger_than_the_buffer_is_said_truncated():
    with SocatUdpEcho() as echo:
        out = request("--port", str(echo.port), "--send", "x" * 300, "--reply-bytes", "100", "--json")
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    step = doc["datagrams"][0]
    assert step["truncated"] is True and step["bytes_received"] == 300
    assert len(step["reply"]["bytes"]) == 100
    assert step["failures"][0]["kind"] == "truncated"
    assert "a 300-byte datagram read into a 100-byte buffer" in step["failures"][0]["detail"]
    assert "truncated" in out.stderr


def test_a_reply_that_does_not_match_is_a_failure():
    with UdpEcho() as echo:
        out = request("--port", str(echo.port), "--send", "PONG?", "--reply-match", "^PONG$")
    assert out.returncode == 1
    assert out.stdout == "b'PONG?'\n"
    assert "wrong-reply" in out.stderr


def test_no_reply_sends_and_waits_for_nothing():
    with UdpEcho(silent=True) as peer:
        out = request("--port", str(peer.port), "--send", "log line", "--no-reply")
        assert wait_until(lambda: peer.got == [b"log line"])
    assert out.returncode == 0, out.stderr
    assert out.stdout == "(sent; no reply expected)\n"


def test_a_duplicate_already_waiting_is_not_taken_for_the_next_reply():
    """The peer answers the first datagram twice; the second copy is in our socket's queue before
    the second datagram leaves (the clock hook waits for the peer to have sent both), so it is
    set aside, counted, and the second reply is the second datagram's own."""
    with UdpEcho(copies=2) as echo:
        def clock():
            if echo.received:
                assert echo.answered.wait(10)
            return time.perf_counter()
        result = datagrams("127.0.0.1", echo.port, [b"first", b"second"], timeout=5.0, clock=clock)
    assert [s.received for s in result.steps] == [b"first", b"second"]
    assert [s.ignored for s in result.steps] == [0, 1]


@pytest.mark.parametrize("args,option", [
    (["--port", "9", "--send", "x", "--tls"], "--tls"),
    (["--port", "9", "--send", "x", "--greeting"], "--greeting"),
    (["--port", "9", "--send", "x", "--reply-until-close"], "--reply-until-close"),
    (["--port", "9", "--send", "x", "--reply-until", r"\n"], "--reply-until"),
    (["--port", "9", "--send", "x", "--reply-prefix", ">H"], "--reply-prefix"),
    (["--port", "9", "--mode", "redis", "--command", "PING"], "--mode"),
    (["--port", "9", "--mode", "http"], "--mode"),
    (["--port", "9", "--mode", "framed"], "--mode"),
    (["--port", "9", "--protocol", "socktools.examples.memcached:Memcached", "--command", "get k"],
     "--protocol"),
    (["--port", "9", "--send", "x" * 65_508], "--send"),
    (["--port", "9", "--mode", "line", "--send", "x" * 65_507], "--send"),
    (["--port", "9", "--send", "x", "--timeout", "0"], "--timeout"),
    (["--port", "9", "--send", "x", "--reply-bytes", "70000"], "--reply-bytes"),
    (["--port", "9", "--mode", "line", "--send", "x", "--reply-bytes", "10"], "--reply-bytes"),
    (["--port", "9"], "--send"),
    (["127.0.0.1", "9", "search", "x"], "give HOST PORT or nothing"),
])
def test_what_a_datagram_cannot_carry_is_a_usage_error_naming_the_option(args, option):
    out = request(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert option in out.stderr and "Traceback" not in out.stderr


def test_a_file_larger_than_a_datagram_is_a_usage_error_naming_the_option(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 70_000)
    out = request("--port", "9", "--send-file", str(big))
    assert out.returncode == 2 and "--send-file" in out.stderr and "65,507" in out.stderr


def test_a_unix_socket_is_not_for_udp_and_the_usage_error_names_unix(tmp_path):
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        out = request("--unix", path, "--send", "x")
    assert out.returncode == 2 and "--unix" in out.stderr and "UDP" in out.stderr


def test_the_json_of_a_datagram_request_follows_the_published_schema():
    pytest.importorskip("jsonschema", reason="jsonschema not installed (pip install jsonschema)")
    from tests.test_json_schemas import validate
    with UdpEcho() as echo:
        ok = request("--port", str(echo.port), "--send", "a", "--send", "b", "--json")
    validate(json.loads(ok.stdout), "request")
    refused = request("--port", str(closed_udp_port()), "--send", "a", "--json")
    validate(json.loads(refused.stdout), "request")


def test_the_help_shows_a_real_udp_example():
    out = subprocess.run(socktools_cmd("request", "--help"), capture_output=True, text=True, timeout=30)
    assert "socktools request --udp --port 53 --mode raw --send-file query.bin" in out.stdout

