"""--decode: requests and replies matched in order, the upstream time beside the client's
(sans-I/O with a hand-turned clock), then through the real proxy in front of redis and nginx."""

from __future__ import annotations

import random

import pytest
from click.testing import CliRunner

from socktools.cli import main
from socktools.proxy.decode import MAX_UNANSWERED, Watch
from tests.peers import Nginx, Redis
from tests.proxy_helpers import ProxyProcess, connect, recv_exactly

REQ = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
REP = b"+PONG\r\n+OK\r\n"


class Clock:
    def __init__(self) -> None:
        self.t = 10.0

    def __call__(self) -> float:
        return self.t


def watch(mode: str = "redis"):
    clock = Clock()
    seen = []
    stops = []
    w = Watch(mode, lambda ex, done: seen.append((ex.request, ex.reply, ex.sent_at - ex.read_at,
                                                  ex.reply_read_at - ex.sent_at, done - ex.read_at)),
              clock, stops.append)
    return w, clock, seen, stops


def feed_split(w, stream, data, rng):
    cuts = sorted(rng.sample(range(1, len(data)), min(5, len(data) - 1)))
    for a, b in zip([0] + cuts, cuts + [len(data)]):
        w.read(stream, data[a:b])


@pytest.mark.parametrize("seed", range(20))
def test_pipelined_requests_are_matched_with_their_replies_in_order(seed):
    rng = random.Random(seed)
    w, clock, seen, _ = watch()
    feed_split(w, "upstream", REQ, rng)          # read from the client at t=10
    clock.t = 10.2
    w.delivered("upstream", 14)                   # PING handed to the server 200 ms later (a toxic)
    clock.t = 10.3
    w.delivered("upstream", len(REQ))
    clock.t = 10.301
    feed_split(w, "downstream", REP, rng)         # both replies read 1 ms later
    clock.t = 10.5
    w.delivered("downstream", 7)
    assert [s[:2] for s in seen] == [("['PING']", "PONG")]
    clock.t = 10.6
    w.delivered("downstream", len(REP))
    assert [s[:2] for s in seen] == [("['PING']", "PONG"), ("['SET', 'k', 'v']", "OK")]
    (_, _, wait1, up1, client1), (_, _, wait2, up2, client2) = seen
    assert (wait1, up1, client1) == pytest.approx((0.2, 0.101, 0.5))
    assert (wait2, up2, client2) == pytest.approx((0.3, 0.001, 0.6))


def test_byte_by_byte():
    w, clock, seen, _ = watch()
    for i in range(len(REQ)):
        w.read("upstream", REQ[i:i + 1])
        w.delivered("upstream", i + 1)
    for i in range(len(REP)):
        w.read("downstream", REP[i:i + 1])
        w.delivered("downstream", i + 1)
    assert [s[:2] for s in seen] == [("['PING']", "PONG"), ("['SET', 'k', 'v']", "OK")]


def test_http_exchanges():
    w, clock, seen, _ = watch("http")
    req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    rep = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n"
    w.read("upstream", req)
    w.delivered("upstream", len(req))
    w.read("downstream", rep)
    w.delivered("downstream", len(rep))
    assert [s[:2] for s in seen] == [("GET /a", "HTTP 404")]


def test_garbage_stops_decoding_that_connection_with_a_reason():
    w, clock, seen, stops = watch()
    w.read("upstream", b"PING\r\n")               # an inline command: not RESP
    assert len(stops) == 1 and "RESP" in stops[0]
    w.read("upstream", REQ)
    w.delivered("upstream", 100)
    assert seen == [] and len(stops) == 1


def test_a_pipeline_without_replies_is_bounded():
    w, clock, seen, stops = watch()
    w.read("upstream", b"*1\r\n$4\r\nPING\r\n" * (MAX_UNANSWERED + 1))
    assert stops and str(MAX_UNANSWERED) in stops[0]
    assert not w.unanswered and not w.to_send


def test_decode_takes_only_modes_with_a_decoder():
    r = CliRunner().invoke(main, ["proxy", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:1", "--decode", "echo"])
    assert r.exit_code == 2 and "--decode" in r.output


# ------------------------------------------------------------------ through the proxy
def test_redis_exchanges_with_the_upstream_time_beside_the_clients(tmp_path):
    with Redis(tmp_path) as redis, ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{redis.port}",
                                                "--decode", "redis", "--toxic", "latency:latency=100") as px:
        with connect(px.port) as c:
            c.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n")
            assert recv_exactly(c, 5) == b"+OK\r\n"
            c.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
            assert recv_exactly(c, 11) == b"$5\r\nhello\r\n"
        first = px.wait_event(lambda e: e["event"] == "exchange")
        second = px.wait_event(lambda e: e["event"] == "exchange" and e is not first)
    assert (first["request"], first["reply"]) == ("['SET', 'k', 'hello']", "OK")
    assert (second["request"], second["reply"]) == ("['GET', 'k']", "'hello'")
    for ev in (first, second):
        # The toxic acts after the reply was read from redis: the client's time holds it, the
        # upstream time does not.
        assert ev["client_ms"] >= 100
        assert ev["client_ms"] - ev["upstream_ms"] >= 100 - 0.01


def test_nginx_exchanges(tmp_path):
    with Nginx(tmp_path) as nginx, ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{nginx.port}",
                                                "--decode", "http") as px:
        with connect(px.port) as c:
            c.sendall(b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while got.count(b"HTTP/1.1") < 2 or not got.endswith(b"ok\n"):
                got += c.recv(65536)
        a = px.wait_event(lambda e: e["event"] == "exchange")
        b = px.wait_event(lambda e: e["event"] == "exchange" and e is not a)
    assert [(a["request"], a["reply"]), (b["request"], b["reply"])] == [("GET /fail", "HTTP 500"), ("GET /", "HTTP 200")]
    assert a["upstream_ms"] >= 0 and a["client_ms"] >= a["upstream_ms"]
