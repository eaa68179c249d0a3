"""The Toxiproxy-compatible API: request framing (sans-I/O), the routes' JSON, and the real
``toxiproxy-python`` client driving a running `socktools proxy`."""

from __future__ import annotations

import json
import random
import socket
import time

import pytest

from socktools.proxy.api import VERSION, handle
from socktools.proxy.config import ProxyConfig
from socktools.proxy.httpd import MAX_BODY, RequestError, RequestReader
from socktools.proxy.runner import ProxyServer
from tests.proxy_helpers import ProxyProcess, connect, echo, in_thread, recv_exactly, recv_until_closed
from tests.threadserver import ThreadServer

pytest.importorskip("httptools", reason="httptools not installed (pip install httptools)")

TWO = (b"POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
       b'{"name": "a"}'
       b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
WANT = [("POST", "/proxies", b'{"name": "a"}', True), ("GET", "/version", b"", True)]


# ------------------------------------------------------------------ framing
def test_requests_are_framed_whole():
    assert RequestReader().feed(TWO) == WANT


def test_requests_are_framed_byte_by_byte():
    reader = RequestReader()
    got = []
    for i in range(len(TWO)):
        got += reader.feed(TWO[i:i + 1])
    assert got == WANT


def test_requests_are_framed_at_random_splits():
    rng = random.Random(5)
    for _ in range(50):
        reader = RequestReader()
        cuts = sorted(rng.sample(range(1, len(TWO)), 4))
        got = []
        for a, b in zip([0] + cuts, cuts + [len(TWO)]):
            got += reader.feed(TWO[a:b])
        assert got == WANT


def test_a_chunked_body_and_connection_close():
    raw = (b"POST /populate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           b"3\r\n[{}\r\n1\r\n]\r\n0\r\n\r\n")
    assert RequestReader().feed(raw) == [("POST", "/populate", b"[{}]", False)]


def test_garbage_is_a_400_and_an_oversized_body_a_413():
    with pytest.raises(RequestError) as err:
        RequestReader().feed(b"\x16\x03\x01 hello\r\n\r\n")
    assert err.value.status == 400
    with pytest.raises(RequestError) as err:
        RequestReader().feed(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1) + b"x" * (MAX_BODY + 1))
    assert err.value.status == 413


# ------------------------------------------------------------------ routes
@pytest.fixture
def table():
    server = ProxyServer(ProxyConfig(api="127.0.0.1:0"), on_event=lambda ev: None)
    yield server
    server.close()


def call(server, method, path, doc=None, raw=None):
    body = raw if raw is not None else (json.dumps(doc).encode() if doc is not None else b"")
    return handle(server, method, path, body)


def test_proxies_are_created_shown_updated_and_deleted(table):
    status, doc = call(table, "POST", "/proxies", {"name": "redis", "upstream": "127.0.0.1:6379",
                                                   "listen": "127.0.0.1:0"})
    assert status == 201
    assert set(doc) == {"name", "listen", "upstream", "enabled", "toxics"}
    assert doc["enabled"] is True and doc["toxics"] == [] and not doc["listen"].endswith(":0")
    assert call(table, "GET", "/proxies") == (200, {"redis": doc})
    assert call(table, "GET", "/proxies/redis") == (200, doc)
    status, down = call(table, "POST", "/proxies/redis", {"enabled": False})
    assert status == 200 and down["enabled"] is False
    with pytest.raises(OSError):       # down: nothing listens there any more
        socket.create_connection(("127.0.0.1", int(doc["listen"].rsplit(":", 1)[1])), timeout=2).close()
    assert call(table, "PATCH", "/proxies/redis", {"enabled": True})[1]["enabled"] is True
    assert call(table, "DELETE", "/proxies/redis") == (204, None)
    assert call(table, "GET", "/proxies/redis")[0] == 404


def test_toxics_are_added_listed_updated_and_removed(table):
    call(table, "POST", "/proxies", {"name": "p", "upstream": "127.0.0.1:1"})
    status, doc = call(table, "POST", "/proxies/p/toxics", {"type": "latency", "attributes": {"latency": 5}})
    assert status == 200
    assert doc == {"name": "latency_downstream", "type": "latency", "stream": "downstream", "toxicity": 1.0,
                   "attributes": {"latency": 5, "jitter": 0}}
    assert call(table, "GET", "/proxies/p/toxics") == (200, [doc])
    status, new = call(table, "PATCH", "/proxies/p/toxics/latency_downstream", {"attributes": {"jitter": 2}})
    assert status == 200 and new["attributes"] == {"latency": 5, "jitter": 2}
    assert call(table, "GET", "/proxies/p")[1]["toxics"] == [new]
    assert call(table, "DELETE", "/proxies/p/toxics/latency_downstream") == (204, None)
    assert call(table, "GET", "/proxies/p/toxics") == (200, [])


@pytest.mark.parametrize("method,path,doc,raw,status,words", [
    ("POST", "/proxies", None, b"{not json", 400, "bad request body"),
    ("POST", "/proxies", {"upstream": "127.0.0.1:1"}, None, 400, "missing required field: name"),
    ("POST", "/proxies", {"name": "x"}, None, 400, "missing required field: upstream"),
    ("POST", "/proxies/p/toxics", {"type": "lag"}, None, 400, "unknown toxic type 'lag'"),
    ("POST", "/proxies/p/toxics", {"type": "latency", "attributes": {"latancy": 1}}, None, 400,
     "unknown attribute 'latancy'"),
    ("POST", "/proxies/p/toxics", {"type": "latency", "stream": "sideways"}, None, 400, "stream"),
    ("POST", "/proxies/p/toxics", {"type": "latency", "attributes": {"latency": "9"}}, None, 400, "whole number"),
    ("POST", "/proxies/nope/toxics", {"type": "latency"}, None, 404, "proxy not found: 'nope'"),
    ("DELETE", "/proxies/p/toxics/nope", None, None, 404, "toxic not found: 'nope'"),
    ("POST", "/proxies", {"name": "p", "upstream": "127.0.0.1:1"}, None, 409, "proxy already exists"),
    ("GET", "/nowhere", None, None, 404, "no such route"),
    ("DELETE", "/version", None, None, 405, "not allowed"),
])
def test_bad_requests_get_toxiproxys_error_shape(table, method, path, doc, raw, status, words):
    call(table, "POST", "/proxies", {"name": "p", "upstream": "127.0.0.1:1"})
    got_status, got = call(table, method, path, doc, raw)
    assert got_status == status and got["status"] == status and words in got["error"]


def test_a_toxic_name_taken_is_a_409(table):
    call(table, "POST", "/proxies", {"name": "p", "upstream": "127.0.0.1:1"})
    call(table, "POST", "/proxies/p/toxics", {"type": "timeout"})
    assert call(table, "POST", "/proxies/p/toxics", {"type": "timeout"})[0] == 409


def test_populate_reset_and_version(table):
    status, doc = call(table, "POST", "/populate", [{"name": "a", "upstream": "127.0.0.1:1"},
                                                     {"name": "b", "upstream": "127.0.0.1:2", "enabled": False}])
    assert status == 201 and [p["name"] for p in doc["proxies"]] == ["a", "b"]
    assert doc["proxies"][1]["enabled"] is False
    call(table, "POST", "/proxies/a/toxics", {"type": "latency"})
    assert call(table, "POST", "/reset") == (204, None)
    assert all(p["enabled"] and not p["toxics"] for p in call(table, "GET", "/proxies")[1].values())
    assert call(table, "GET", "/version") == (200, {"version": VERSION})
    # a bad entry creates nothing
    status, err = call(table, "POST", "/populate", [{"name": "c", "upstream": "127.0.0.1:3"}, {"name": "d"}])
    assert status == 400 and "upstream" in err["error"] and "c" not in call(table, "GET", "/proxies")[1]


def test_a_listen_address_in_use_is_a_500_with_the_errno(table):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status, err = call(table, "POST", "/proxies", {"name": "x", "upstream": "127.0.0.1:1",
                                                      "listen": f"127.0.0.1:{port}"})
    assert status == 500 and "EADDRINUSE" in err["error"]


# ------------------------------------------------------------------ the real client
def round_trip(port: int, sock=None) -> float:
    own = sock is None
    sock = sock or connect(port, timeout=10)
    try:
        start = time.perf_counter()
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        return time.perf_counter() - start
    finally:
        if own:
            sock.close()


@pytest.fixture
def toxiproxy_client():
    toxiproxy = pytest.importorskip("toxiproxy", reason="toxiproxy-python not installed "
                                                        "(pip install toxiproxy-python)")
    from toxiproxy.api import APIConsumer
    with ProxyProcess("--api", "127.0.0.1:0") as px:
        old = APIConsumer.host, APIConsumer.port
        server = toxiproxy.Toxiproxy()
        server.update_api_consumer("127.0.0.1", px.api)
        try:
            yield server, px
        finally:
            server.update_api_consumer(*old)
            px.stop()


#: The latency the client asks for: large against a loopback round trip, so "at least this
#: much" with it and "less than this" without it hold on any machine.
LATENCY_MS = 1000


def test_toxiproxy_python_drives_the_proxy(toxiproxy_client):
    server, px = toxiproxy_client
    with ThreadServer(echo) as srv:
        assert server.running() and b"socktools" in server.version()
        proxy = server.create(upstream=f"127.0.0.1:{srv.port}", name="echo")
        assert set(server.proxies()) == {"echo"}
        port = int(proxy.listen.rsplit(":", 1)[1])
        assert round_trip(port) < LATENCY_MS / 1000

        # A toxic added while a connection is open acts on it too, as in Toxiproxy.
        held = connect(port, timeout=10)
        proxy.add_toxic(type="latency", attributes={"latency": LATENCY_MS})
        assert list(proxy.toxics()) == ["latency_downstream"]
        assert proxy.toxics()["latency_downstream"].attributes == {"latency": LATENCY_MS, "jitter": 0}
        assert round_trip(port) >= LATENCY_MS / 1000
        assert round_trip(port, held) >= LATENCY_MS / 1000

        proxy.destroy_toxic("latency_downstream")
        assert proxy.toxics() == {}
        assert round_trip(port) < LATENCY_MS / 1000
        assert round_trip(port, held) < LATENCY_MS / 1000
        held.close()

        with proxy.down():
            with pytest.raises(ConnectionRefusedError):
                connect(port, timeout=5)
        assert round_trip(port) < LATENCY_MS / 1000        # up again, on the same port

        proxy.add_toxic(type="limit_data", stream="upstream", attributes={"bytes": 2})
        server.reset()
        assert proxy.toxics() == {}
        assert proxy.destroy()
        assert server.proxies() == {}


def test_toxiproxy_python_errors_come_back_as_its_exceptions(toxiproxy_client):
    from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
    server, px = toxiproxy_client
    proxy = server.create(upstream="127.0.0.1:1", name="p")
    with pytest.raises(ProxyExists):
        server.create(upstream="127.0.0.1:1", name="p")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="packet_loss")
    with pytest.raises(NotFound):
        proxy.destroy_toxic("nothing")


def test_metrics_count_the_bytes_of_open_and_closed_connections():
    import urllib.request
    with ThreadServer(echo) as srv, ProxyProcess("--api", "127.0.0.1:0") as px:
        req = urllib.request.Request(f"http://127.0.0.1:{px.api}/proxies", method="POST",
                                     data=json.dumps({"name": "e", "upstream": f"127.0.0.1:{srv.port}"}).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            port = int(json.loads(resp.read())["listen"].rsplit(":", 1)[1])
        with connect(port) as c:                 # a closed connection: 5 bytes each way
            c.sendall(b"hello")
            assert recv_exactly(c, 5) == b"hello"
        px.wait_event(lambda e: e["event"] == "connection")
        held = connect(port)                     # an open one: 3 more
        held.sendall(b"abc")
        assert recv_exactly(held, 3) == b"abc"
        with urllib.request.urlopen(f"http://127.0.0.1:{px.api}/metrics", timeout=10) as resp:
            kind = resp.headers["Content-Type"]
            text = resp.read().decode()
        held.close()
        px.stop()
    assert kind.startswith("text/plain; version=0.0.4")
    labels = f'proxy="e",listener="127.0.0.1:{port}",upstream="127.0.0.1:{srv.port}"'
    for metric in ("toxiproxy_proxy_received_bytes_total", "toxiproxy_proxy_sent_bytes_total"):
        assert f"# TYPE {metric} counter" in text
        for direction in ("upstream", "downstream"):
            assert f'{metric}{{direction="{direction}",{labels}}} 8\n' in text


def test_an_idle_api_connection_is_closed(monkeypatch):
    from socktools.proxy import httpd
    monkeypatch.setattr(httpd, "API_IDLE", 0.2)
    events = []
    server = ProxyServer(ProxyConfig(api="127.0.0.1:0"), events.append)
    server.open()
    port = int(events[0]["address"].rsplit(":", 1)[1])
    with in_thread(server, port):
        with connect(port, timeout=10) as idle:
            start = time.monotonic()
            assert idle.recv(100) == b""               # closed by the proxy, not our timeout
            assert time.monotonic() - start >= 0.1
        with connect(port, timeout=10) as busy:       # the API still answers
            busy.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            assert busy.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_deleted_proxys_connections_still_count_in_the_total():
    import urllib.request

    def api(method, path, doc=None):
        req = urllib.request.Request(f"http://127.0.0.1:{px.api}{path}", method=method,
                                     data=None if doc is None else json.dumps(doc).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    with ThreadServer(echo) as srv, ProxyProcess("--api", "127.0.0.1:0") as px:
        port = int(api("POST", "/proxies", {"name": "gone", "upstream": f"127.0.0.1:{srv.port}"})["listen"]
                   .rsplit(":", 1)[1])
        with connect(port) as c:
            c.sendall(b"12345")
            assert recv_exactly(c, 5) == b"12345"
            api("DELETE", "/proxies/gone")
            assert recv_exactly(c, 1) == b""           # its connections are closed with it
        summary = px.stop()
    assert summary["proxies"] == {}
    assert summary["total"]["accepted"] == 1 and summary["total"]["from_client"] == 5
    assert summary["total"]["ended"] == {"proxy-deleted": 1}


@pytest.mark.skipif(not hasattr(__import__("resource"), "prlimit"), reason="needs resource.prlimit (Linux)")
def test_the_api_pauses_when_out_of_descriptors_and_answers_once_some_are_free():
    """EMFILE at the API's accept: the API pauses (a log line, no spin on a listener that stays
    readable) and serves the waiting client once descriptors are free again."""
    import os
    import resource
    import urllib.request

    from tests.conftest import wait_until
    with ThreadServer(echo) as srv, ProxyProcess("--listen", "127.0.0.1:0", "--to", f"127.0.0.1:{srv.port}",
                                                 "--api", "127.0.0.1:0") as px:
        pid = px.proc.pid
        spare = 6
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + spare,) * 2)
        clients = [connect(px.port) for _ in range(spare)]     # two descriptors a pair: the rest run out
        try:
            for c in clients:
                c.sendall(b"x")
            api = socket.create_connection(("127.0.0.1", px.api), timeout=10)
            api.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert wait_until(lambda: "api: accept paused" in px.stderr(), timeout=10), px.stderr()
            lines = px.stderr().count("api: accept paused")
            for c in clients:
                c.close()
            clients = []
            assert b"socktools" in recv_until_closed(api)      # served once descriptors were free
            api.close()
            # paused and retried 4 times a second, not once per wake-up of a readable listener
            assert lines < 50, px.stderr()
        finally:
            for c in clients:
                c.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{px.api}/version", timeout=10) as resp:
            assert resp.status == 200
