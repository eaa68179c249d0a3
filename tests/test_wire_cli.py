"""flood and request options for other servers: usage errors naming the option, help examples,
and sniff's wire decoders on reassembled streams (no sockets)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from socktools.capture.reassembly import MessageEvent, Note, StreamDecoder
from socktools.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("args, option, words", [
    (["--mode", "raw", "--send", "x", "--reply-until", "\\n", "--reply-bytes", "4"], "--reply-bytes",
     "exactly one reply framing"),
    (["--mode", "raw", "--send", "x\\q", "--reply-until", "\\n"], "--send", "unknown escape"),
    (["--mode", "raw", "--send", "x", "--reply-prefix", ">X"], "--reply-prefix", "not a length prefix"),
    (["--protocol", "no_such_pkg.mod:Proto"], "--protocol", "cannot import"),
    (["--protocol", "json:JSONDecoder"], "--protocol", "lacks the exchange interface"),
    (["--mode", "raw", "--send", "x", "--no-reply"], "--no-reply", "needs --rate"),
    (["--mode", "echo", "--reply-bytes", "4"], "--reply-bytes", "not for --mode echo"),
    (["--mode", "redis", "--command", "GET 'x"], "--command", "cannot split"),
    (["--mode", "raw", "--protocol", "json:JSONDecoder"], "--mode", "--protocol is the mode"),
    (["--mode", "raw", "--send", "x", "--reply-until-close", "--reply-until", "\\n"], "--reply-until-close",
     "exactly one reply framing"),
    (["--mode", "line", "--send", "x", "--reply-until-close"], "--reply-until-close", "only for --mode raw"),
    (["--mode", "raw", "--send", "x", "--reply-until-close", "-P", "2"], "--pipeline", "one request"),
])
def test_flood_bad_exchange_options_are_usage_errors_naming_the_option(args, option, words):
    result = run("flood", "--port", "9", *args)
    assert result.exit_code == 2, result.output
    assert option in result.output and words in result.output
    assert "Traceback" not in result.output


def test_flood_mode_for_another_server_needs_its_port():
    result = run("flood", "--mode", "redis")
    assert result.exit_code == 2 and "give its --port" in result.output


@pytest.mark.parametrize("args, option", [
    (["--mode", "raw", "--send", "x", "--reply-until", "\\n", "--no-reply"], "--no-reply"),
    (["--mode", "raw", "--send", "x", "--reply-until", "\\x1"], "--reply-until"),
    (["--reply-until", "\\n", "search", "x"], "--reply-until"),
])
def test_request_bad_options_name_the_option(args, option):
    result = run("request", "--port", "9", *args)
    assert result.exit_code == 2 and option in result.output, result.output


@pytest.mark.parametrize("command, words", [
    ("flood", ["--mode redis --command", "--mode http --path", "--reply-until", "--protocol socktools.examples."]),
    ("request", ["--mode redis --command 'INFO server'", "--mode http --path /", "--reply-until '\\r\\n'"]),
])
def test_help_shows_real_examples_of_each_mode(command, words):
    result = run(command, "--help")
    assert result.exit_code == 0
    for w in words:
        assert w in result.output


# ----------------------------------------------------------------- sniff --decode redis|http|line

def feed_bytes(decoder: StreamDecoder, data: bytes, step: int) -> list:
    out = []
    for i in range(0, len(data), step):
        out += decoder.feed(i, data[i:i + step], i // step + 1)
    return out


@pytest.mark.parametrize("step", [1, 5, 1000])
def test_sniff_decodes_redis_both_ways_with_the_packets_spanned(step):
    requests = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    events = feed_bytes(StreamDecoder("redis", "request"), requests, step)
    assert [e.content_preview for e in events] == ["['PING']", "['SET', 'k', 'v']"]
    assert [e.wire_size for e in events] == [14, 27]
    assert events[1].first_packet == 14 // step + 1
    replies = feed_bytes(StreamDecoder("redis", "response"), b"+PONG\r\n-ERR no\r\n", step)
    assert [(e.role, e.content_preview) for e in replies] == [("response", "PONG"), ("response", "(error) ERR no")]


def test_sniff_decodes_http_requests_and_responses():
    req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
    events = StreamDecoder("http", "request").feed(0, req, 1)
    assert [e.content_preview for e in events] == ["GET /a", "POST /b"]
    resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    (ev,) = StreamDecoder("http", "response").feed(0, resp, 1)
    assert isinstance(ev, MessageEvent) and ev.header["status"] == 404 and ev.wire_size == len(resp)


def test_sniff_line_decoding_and_a_stream_that_is_not_redis():
    events = StreamDecoder("line", "request").feed(0, b"HELLO\r\nWORLD\n", 1)
    assert [e.wire_size for e in events] == [7, 6]
    d = StreamDecoder("redis", "response")
    (note,) = d.feed(0, b"GET / HTTP/1.1\r\n", 1)
    assert isinstance(note, Note) and note.kind == "decode-error" and d.showing_raw


def test_sniff_decode_redis_on_a_capture_of_a_reply_nested_past_the_cap_says_so(tmp_path):
    from tests.test_sniff_files import ACK, CPORT, FIN, PORT, PSH, SYN, T0, ether, ip_tcp, pcap_ns
    from socktools.wire.redis import MAX_DEPTH
    request, reply = b"*1\r\n$4\r\nPING\r\n", b"*1\r\n" * 5000 + b"+x\r\n"
    seq = {"c": 1000, "s": 5000}
    packets = []
    for who, flags, payload in [("c", SYN, b""), ("s", SYN | ACK, b""), ("c", ACK, b""), ("c", PSH | ACK, request),
                                ("s", PSH | ACK, reply), ("c", FIN | ACK, b""), ("s", FIN | ACK, b"")]:
        other = "s" if who == "c" else "c"
        src, dst = (CPORT, PORT) if who == "c" else (PORT, CPORT)
        packets.append(ip_tcp(src, dst, seq[who], seq[other] if flags & ACK else 0, flags, payload))
        seq[who] += len(payload) + (1 if flags & (SYN | FIN) else 0)
    path = tmp_path / "deep.pcap"
    path.write_bytes(pcap_ns([(T0 + i * 1000, ether(p)) for i, p in enumerate(packets)]))
    result = CliRunner().invoke(main, ["sniff", "-r", str(path), "--port", str(PORT), "--decode", "redis"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "['PING']" in result.output
    assert f"response stream is not redis after 0 message(s): RESP aggregates nested deeper than {MAX_DEPTH}" \
        in result.output
