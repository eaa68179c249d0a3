"""Toxics against real servers behind `socktools proxy`: redis-server and nginx, timed at the client.

Timing assertions are lower bounds ("took at least the toxic's time"), which a busy machine
cannot break; upper bounds are only ever "less than the toxic's time" with the toxic gone.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from tests.conftest import socktools_cmd
from tests.peers import NGINX_BIG, Nginx, Redis
from tests.proxy_helpers import ProxyProcess, connect, recv_exactly, recv_until_closed

PING = b"*1\r\n$4\r\nPING\r\n"


def proxied(port: int, *toxics: str) -> ProxyProcess:
    args = ["--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{port}"]
    for t in toxics:
        args += ["--toxic", t]
    return ProxyProcess(*args)


def request(*args: str) -> dict:
    """`socktools request ... --json` (the product's own client): its JSON document."""
    out = subprocess.run(socktools_cmd("request", "--json", "--timeout", "30s", *args),
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


@pytest.fixture
def redis(tmp_path):
    with Redis(tmp_path) as r:
        yield r


@pytest.fixture
def nginx(tmp_path):
    with Nginx(tmp_path) as n:
        yield n


def test_redis_through_a_plain_proxy(redis):
    with proxied(redis.port) as px:
        doc = request("-p", str(px.port), "--mode", "redis", "--command", "SET k hello")
        assert doc["ok"] and doc["reply"]["value"] == "OK"
        doc = request("-p", str(px.port), "--mode", "redis", "--command", "GET k")
        assert doc["reply"]["value"] == "hello"


def test_latency_on_redis_replies_is_at_least_the_toxics(redis):
    with proxied(redis.port, "latency:latency=150") as px:
        doc = request("-p", str(px.port), "--mode", "redis", "--command", "PING")
        assert doc["reply"]["value"] == "PONG" and doc["total_ms"] >= 150
        # Several round trips on one connection: each one pays it.
        with connect(px.port) as c:
            for _ in range(3):
                start = time.perf_counter()
                c.sendall(PING)
                assert recv_exactly(c, 7) == b"+PONG\r\n"
                assert time.perf_counter() - start >= 0.150


def test_latency_both_ways_adds_up(redis):
    with proxied(redis.port, "latency:latency=100", "latency:latency=100,stream=upstream") as px:
        doc = request("-p", str(px.port), "--mode", "redis", "--command", "PING")
        assert doc["reply"]["value"] == "PONG" and doc["total_ms"] >= 200


def test_bandwidth_on_a_large_nginx_body_takes_size_over_rate(nginx):
    rate_kb = 100      # 100 KB/s: NGINX_BIG (100 kB) takes at least 1 s
    with proxied(nginx.port, f"bandwidth:rate={rate_kb}") as px:
        start = time.perf_counter()
        doc = request("-p", str(px.port), "--mode", "http", "--path", "/big")
        took = time.perf_counter() - start
        assert doc["ok"] and doc["reply"]["summary"] == "HTTP 200"
        assert doc["bytes_received"] > NGINX_BIG
        assert took >= doc["bytes_received"] / (rate_kb * 1000)
        assert doc["total_ms"] / 1000 >= NGINX_BIG / (rate_kb * 1000)


def test_reset_peer_is_seen_by_the_client_as_econnreset(redis):
    with proxied(redis.port, "reset_peer:timeout=0") as px:
        with connect(px.port) as c:
            c.sendall(PING)
            with pytest.raises(ConnectionResetError):
                while c.recv(100):
                    pass
        doc = request("-p", str(px.port), "--mode", "redis", "--command", "PING")
        assert not doc["ok"] and "ECONNRESET" in json.dumps(doc)
        ev = px.wait_event(lambda e: e["event"] == "connection")
        assert ev["how"] == "reset-by-toxic" and ev["to_client"] == 0


def test_reset_peer_after_a_timeout(redis):
    with proxied(redis.port, "reset_peer:timeout=300") as px:
        with connect(px.port) as c:
            start = time.perf_counter()
            c.sendall(PING)
            with pytest.raises(ConnectionResetError):
                while c.recv(100):
                    pass
            assert time.perf_counter() - start >= 0.300


def test_timeout_holds_the_reply_then_closes(redis):
    with proxied(redis.port, "timeout:timeout=400") as px:
        with connect(px.port) as c:
            start = time.perf_counter()
            c.sendall(PING)
            assert recv_until_closed(c) == b""          # no reply, then the close
            assert time.perf_counter() - start >= 0.400


def test_timeout_zero_holds_until_the_client_gives_up(redis):
    with proxied(redis.port, "timeout:timeout=0") as px:
        with connect(px.port, timeout=1.0) as c:
            c.sendall(PING)
            with pytest.raises(socket.timeout):        # neither a reply nor a close
                c.recv(100)


@pytest.mark.parametrize("limit", [1, 1000, 65536])
def test_limit_data_cuts_an_nginx_body_at_exactly_n_bytes(nginx, limit):
    with proxied(nginx.port, f"limit_data:bytes={limit}") as px:
        with connect(px.port, timeout=10) as c:
            c.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            got = recv_until_closed(c)
        assert len(got) == limit and got.startswith(b"HTTP/1.1 200"[:limit])


def test_slicer_delivers_a_redis_value_whole(redis):
    value = "v" * 5000
    with proxied(redis.port, "slicer:average_size=64,size_variation=32,delay=100") as px:
        request("-p", str(px.port), "--mode", "redis", "--command", f"SET big {value}")
        doc = request("-p", str(px.port), "--mode", "redis", "--command", "GET big")
        assert doc["reply"]["value"] == value


def test_slow_close_delays_nginxs_close(nginx):
    with proxied(nginx.port, "slow_close:delay=400") as px:
        with connect(px.port, timeout=10) as c:
            start = time.perf_counter()
            c.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
            got = recv_until_closed(c)                 # the reply, then (400 ms after nginx's) the close
            assert time.perf_counter() - start >= 0.400
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"bye\n")


def test_a_proxy_taken_down_refuses_redis_clients_and_comes_back(redis):
    toxiproxy = pytest.importorskip("toxiproxy", reason="toxiproxy-python not installed "
                                                        "(pip install toxiproxy-python)")
    with ProxyProcess("--api", "127.0.0.1:0") as px:
        server = toxiproxy.Toxiproxy()
        server.update_api_consumer("127.0.0.1", px.api)
        proxy = server.create(upstream=f"127.0.0.1:{redis.port}", name="redis")
        port = proxy.listen.rsplit(":", 1)[1]
        with proxy.down():
            doc = request("-p", port, "--mode", "redis", "--command", "PING")
            assert not doc["ok"] and "ECONNREFUSED" in json.dumps(doc)
        doc = request("-p", port, "--mode", "redis", "--command", "PING")
        assert doc["reply"]["value"] == "PONG"
        px.stop()


def test_a_reset_in_the_middle_of_the_third_redis_reply(redis):
    """The issue's example: the message toxic resets the connection 3 bytes into the 3rd reply."""
    with proxied(redis.port, "message:protocol=redis,nth=3,action=reset,cut=3") as px:
        with connect(px.port) as c:
            for _ in range(2):
                c.sendall(PING)
                assert recv_exactly(c, 7) == b"+PONG\r\n"
            c.sendall(PING)
            got = b""
            with pytest.raises(ConnectionResetError):
                while True:
                    data = c.recv(100)
                    assert data, "closed with a FIN, not a reset"
                    got += data
            assert got in (b"", b"+PO")        # the cut bytes, if they came before the RST
        ev = px.wait_event(lambda e: e["event"] == "connection")
        assert ev["how"] == "reset-by-toxic" and ev["to_client"] == 14 + 3


def test_a_delayed_reply_matching_a_regex(redis):
    with proxied(redis.port, "message:protocol=redis,match=^'slow',action=delay,delay=300") as px:
        redis.command("SET", "k", "slow")
        with connect(px.port) as c:
            c.sendall(PING)
            assert recv_exactly(c, 7) == b"+PONG\r\n"
            c.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
            start = time.perf_counter()
            assert recv_exactly(c, 10) == b"$4\r\nslow\r\n"
            assert time.perf_counter() - start >= 0.300
