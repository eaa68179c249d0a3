"""``--decode auto`` on streams that are not the framed protocol: the wire parsers are tried,
and what none of them parses is shown raw — nothing is hidden.

Sans-I/O at the StreamDecoder (fed whole, byte by byte, at random splits), then through the
CLI on a synthesized pcap of a redis conversation (the issue's 27-byte SET request).
"""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from socktools.capture import dissect as d
from socktools.capture.reassembly import AUTO_DECIDE_BYTES, MessageEvent, Note, StreamDecoder
from socktools.cli import main
from tests.test_sniff_files import CPORT, PORT, T0, ether, ip_tcp, pcap_ns

SET = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"          # the 27 bytes
assert len(SET) == 27
HTTP_GET = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def feed_all(dec: StreamDecoder, data: bytes, cuts, fin: bool = True) -> list:
    events, pos = [], 0
    for n, cut in enumerate(list(cuts) + [len(data)]):
        if cut > pos:
            events += dec.feed(pos, data[pos:cut], n + 1)
            pos = cut
    if fin:
        events += dec.finish(99)
    return events


def splits(data: bytes):
    """Whole, byte by byte, and five random splits (seeded)."""
    rnd = random.Random(len(data))
    yield []
    yield range(1, len(data))
    for _ in range(5):
        yield sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, 3)))


@pytest.mark.parametrize("role,data,protocol,summaries", [
    ("request", SET + b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "redis", ["['SET', 'k', 'v']", "['GET', 'k']"]),
    ("response", b"+OK\r\n$1\r\nv\r\n", "redis", ["OK", "'v'"]),
    ("response", b":1\r\n", "redis", ["(integer) 1"]),
    ("request", HTTP_GET, "http", ["GET /index.html"]),
    ("response", HTTP_OK, "http", ["HTTP 200"]),
    ("response", b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n" + b"x" * 20000, "http",
     ["HTTP 200"]),                                  # longer than the guessing bound
    ("request", b"hello there\nsecond line\n", "line", None),
])
def test_auto_finds_the_wire_protocol_that_parses(role, data, protocol, summaries):
    for cuts in splits(data):
        events = feed_all(StreamDecoder("auto", role), data, cuts)
        msgs = [e for e in events if isinstance(e, MessageEvent)]
        assert msgs and all(m.content_type == protocol for m in msgs), (cuts, events)
        if summaries is not None:
            assert [m.content_preview for m in msgs] == summaries, (cuts, events)
        assert sum(m.wire_size for m in msgs) == len(data)
        assert not [e for e in events if isinstance(e, Note) and e.kind == "not-framed"], events


def test_auto_still_decodes_the_framed_protocol_first():
    from socktools import reference
    req = reference.make_request("search", "morpheus")
    for cuts in splits(req):
        events = feed_all(StreamDecoder("auto", "request"), req, cuts)
        assert [e.content_type for e in events if isinstance(e, MessageEvent)] == ["text/json"]


@pytest.mark.parametrize("data", [b"*2\r\x00\x01\x02 binary, no protocol at all",
                                  b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"])
def test_bytes_no_parser_takes_are_shown_raw_not_hidden(data):
    for cuts in splits(data):
        dec = StreamDecoder("auto", "request")
        events, pos, unseen = [], 0, None
        for n, cut in enumerate(list(cuts) + [len(data)]):
            events += dec.feed(pos, data[pos:cut], n + 1)
            if dec.showing_raw and unseen is None:
                unseen = data[:pos]    # this segment and later ones get the per-packet preview
            pos = cut
        events += dec.finish(99)
        if unseen is None:
            unseen = data
        assert dec.showing_raw or not dec.decoding
        assert not [e for e in events if isinstance(e, MessageEvent)]
        notes = " ".join(e.text for e in events if isinstance(e, Note))
        if unseen:                     # every byte held while deciding is shown in a note
            assert unseen[:4].hex(" ") in notes, (cuts, events)


def test_an_undecided_stream_stops_guessing_after_the_bound():
    dec = StreamDecoder("auto", "request")
    junk = b"*" + b"x" * (AUTO_DECIDE_BYTES + 100)     # no CRLF: redis and line would wait forever
    events = dec.feed(0, junk, 1)
    assert dec.showing_raw and any(isinstance(e, Note) for e in events)
    assert not dec.guesses


# ------------------------------------------------------------ through the CLI, from a pcap
def conversation(request: bytes, reply: bytes):
    seq = {"c": 1000, "s": 5000}
    steps = [("c", d.SYN, b""), ("s", d.SYN | d.ACK, b""), ("c", d.ACK, b""),
             ("c", d.PSH | d.ACK, request), ("s", d.PSH | d.ACK, reply),
             ("c", d.FIN | d.ACK, b""), ("s", d.FIN | d.ACK, b""), ("c", d.ACK, b"")]
    out, ts = [], T0
    for who, flags, payload in steps:
        other = "s" if who == "c" else "c"
        src, dst = (CPORT, PORT) if who == "c" else (PORT, CPORT)
        out.append((ts, ether(ip_tcp(src, dst, seq[who], seq[other] if flags & d.ACK else 0,
                                     flags, payload))))
        seq[who] += len(payload) + (1 if flags & (d.SYN | d.FIN) else 0)
        ts += 1000
    return out


def test_sniff_auto_shows_a_redis_conversation(tmp_path):
    path = tmp_path / "redis.pcap"
    path.write_bytes(pcap_ns(conversation(SET, b"+OK\r\n")))
    res = CliRunner().invoke(main, ["sniff", "-r", str(path)])
    assert res.exit_code == 0, res.output
    assert "request #1: redis" in res.stdout and "['SET', 'k', 'v']" in res.stdout, res.stdout
    assert "response #1: redis" in res.stdout and "OK" in res.stdout
    assert "not the framed protocol" not in res.stdout
    objs = [json.loads(ln) for ln in CliRunner().invoke(
        main, ["sniff", "-r", str(path), "--json"]).stdout.splitlines()]
    assert objs[-1]["connections"][0]["messages"] == {"requests": 1, "responses": 1}


def test_sniff_auto_shows_the_raw_bytes_it_promised(tmp_path):
    junk = b"*2\r\x00\x01binary junk that is no protocol"
    path = tmp_path / "junk.pcap"
    path.write_bytes(pcap_ns(conversation(junk, b"\x00\x00\x00")))
    res = CliRunner().invoke(main, ["sniff", "-r", str(path)])
    assert res.exit_code == 0, res.output
    assert junk[:16].hex(" ") in res.stdout, res.stdout
