"""The proxy's zero-copy path (os.splice) on real loopback sockets: bytes exact, bounded
back-pressure, half-close and reset passed on -- each checked while the link is spliced."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from socktools.proxy import splice
from tests.conftest import server_recv_queues, wait_until
from tests.proxy_helpers import (abort, bulk_echo, connect, end_watcher, in_thread, recv_exactly, recv_until_closed,
                                 send_until_blocked)
from tests.test_proxy import echo
from tests.threadserver import ThreadServer

pytestmark = pytest.mark.skipif(not splice.AVAILABLE, reason="os.splice needs Linux and Python 3.10+")


class running_proxy:
    """An in-process proxy (so a test can look at its links) in front of ``port``."""

    def __init__(self, port: int, **config) -> None:
        from socktools.proxy.config import ProxyConfig, ProxySpec
        from socktools.proxy.runner import ProxyServer
        self.events: list = []
        spec = ProxySpec("p", "127.0.0.1:0", f"127.0.0.1:{port}", True, ())
        config.setdefault("splice", "always")
        self.server = ProxyServer(ProxyConfig(proxies=(spec,), **config), self.events.append)
        self.server.open()
        self.port = int(self.events[0]["listen"].rsplit(":", 1)[1])
        self._thread = in_thread(self.server, self.port)

    def pair(self):
        pairs = list(self.server.proxies["p"].pairs)
        return pairs[0] if len(pairs) == 1 and pairs[0].connected else None

    def spliced(self) -> bool:
        pair = self.pair()
        return pair is not None and pair.up.pipe is not None and pair.down.pipe is not None

    def __enter__(self):
        self._thread.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.__exit__(*exc)


def _sysctl_max(name: str) -> int:
    with open(f"/proc/sys/net/ipv4/{name}") as f:
        return int(f.read().split()[2])


def test_an_untouched_link_is_spliced_and_every_byte_arrives_in_order():
    payload = os.urandom(4 * 1024 * 1024 + 17)
    with ThreadServer(echo) as srv, running_proxy(srv.port) as px:
        with connect(px.port, timeout=10) as c:
            c.sendall(b"hello")
            assert recv_exactly(c, 5) == b"hello"
            assert px.spliced(), "a link with no toxic and no --decode should splice"
            got = bulk_echo(c, payload)
        assert got == payload
        assert wait_until(lambda: any(e["event"] == "connection" for e in px.events), timeout=10)
    ev = next(e for e in px.events if e["event"] == "connection")
    n = len(payload) + 5
    assert ev["from_client"] == ev["to_upstream"] == ev["from_upstream"] == ev["to_client"] == n
    assert ev["how"] == "closed"


def test_no_splice_copies_as_before():
    with ThreadServer(echo) as srv, running_proxy(srv.port, splice="never") as px:
        with connect(px.port) as c:
            c.sendall(b"hello")
            assert recv_exactly(c, 5) == b"hello"
            pair = px.pair()
            assert pair is not None and pair.up.pipe is None and pair.down.pipe is None


@pytest.mark.parametrize("mode", ["always", "never"])
def test_a_server_that_stops_reading_bounds_the_link_and_blocks_the_client(mode):
    """Back-pressure, spliced (``always``: the pipe holds at most its capacity) and on the batch
    path (``never``, small writes: a write the kernel does not take whole is buffered, and the
    link pauses its source above HIGH_WATER, at most one read more): the proxy stops reading the
    client (whose socket to the proxy keeps a receive queue), and every byte arrives, in order,
    once the server reads again."""
    from socktools.core.loop import READ_SIZE
    from socktools.proxy.link import HIGH_WATER
    go = threading.Event()
    received = []

    def slow_reader(conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.recv(1)                 # one byte, so the link is settled before the flood
        go.wait(30)
        received.append(recv_until_closed(conn, limit=1 << 28))

    def batched():
        pair = px.pair()
        return pair is not None and px.server.loop._batch.get(pair.client.fd) is pair.client

    with ThreadServer(slow_reader) as srv, running_proxy(srv.port, splice=mode) as px:
        c = connect(px.port)
        c.sendall(b"x")
        assert wait_until(px.spliced if mode == "always" else batched, timeout=10)
        stream, blocked = send_until_blocked(c, os.urandom(65536 if mode == "always" else 4096))
        assert blocked, f"the client sent {len(stream)} bytes and never blocked"
        link = px.pair().up
        assert link.paused
        if mode == "always":
            assert link.pipe is not None and 0 < link.pipe.count <= link.pipe.size
            assert link.held <= splice.PIPE_SIZE
        else:
            assert link.pipe is None and HIGH_WATER < link.held <= HIGH_WATER + READ_SIZE
        assert wait_until(lambda: (server_recv_queues(px.port) or 0) > 0, timeout=10)
        # kernel buffers on four sockets (at most tcp_rmem/tcp_wmem maxima) plus one pipe or HIGH_WATER
        assert len(stream) < 2 * (_sysctl_max("tcp_rmem") + _sysctl_max("tcp_wmem")) + splice.PIPE_SIZE + READ_SIZE
        go.set()
        c.setblocking(True)
        c.settimeout(30)
        c.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: received, timeout=30)
        assert received[0] == bytes(stream)
        c.close()


def test_a_half_close_passes_through_a_spliced_link_and_the_reply_comes_back():
    def read_all_then_answer(conn):
        data = recv_until_closed(conn)
        conn.sendall(b"got %d" % len(data))
        conn.close()

    with ThreadServer(read_all_then_answer) as srv, running_proxy(srv.port) as px:
        with connect(px.port, timeout=10) as c:
            c.sendall(b"x" * 1000)
            assert wait_until(px.spliced, timeout=10)
            c.sendall(b"y" * 200_000)
            c.shutdown(socket.SHUT_WR)
            assert recv_until_closed(c) == b"got 201000"


def test_a_reset_by_the_server_reaches_the_client_through_a_spliced_link():
    def reset_after_bytes(conn):
        recv_exactly(conn, 4)
        abort(conn)

    with ThreadServer(reset_after_bytes) as srv, running_proxy(srv.port) as px:
        with connect(px.port, timeout=10) as c:
            assert wait_until(px.spliced, timeout=10)
            c.sendall(b"boom")
            with pytest.raises(ConnectionResetError):
                while c.recv(100):
                    pass
        assert wait_until(lambda: any(e["event"] == "connection" for e in px.events), timeout=10)
    assert next(e for e in px.events if e["event"] == "connection")["how"] == "upstream-ECONNRESET"


def test_a_reset_by_the_client_reaches_the_server_through_a_spliced_link():
    seen = []
    with ThreadServer(end_watcher(seen)) as srv, running_proxy(srv.port) as px:
        c = connect(px.port)
        c.sendall(b"hi")
        assert wait_until(px.spliced, timeout=10)
        abort(c)
        assert wait_until(lambda: seen, timeout=10) and seen == ["reset"]


def test_a_toxic_added_to_a_spliced_connection_unsplices_it_and_its_removal_splices_again():
    """Toxics added through the API act on open connections: the link leaves the pipe (what
    it held goes first, nothing is lost or reordered), the toxic sees what follows, and the
    toxic's removal brings the link back to splicing."""
    import json
    import urllib.request

    def api(method, path, doc=None):
        req = urllib.request.Request(f"http://127.0.0.1:{api_port}{path}", method=method,
                                     data=None if doc is None else json.dumps(doc).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status

    with ThreadServer(echo) as srv, running_proxy(srv.port, api="127.0.0.1:0") as px:
        api_port = int(next(e for e in px.events if e["event"] == "api")["address"].rsplit(":", 1)[1])
        with connect(px.port, timeout=10) as c:
            sent, got = bytearray(), bytearray()
            t = threading.Thread(target=lambda: got.extend(recv_until_closed(c)))
            t.start()
            for i in range(200):                      # bytes in flight while the toxic arrives
                block = os.urandom(16384)
                c.sendall(block)
                sent += block
                if i == 100:
                    assert wait_until(px.spliced, timeout=10)     # (the upstream may still be connecting)
                    assert api("POST", "/proxies/p/toxics",
                               {"type": "latency", "attributes": {"latency": 50}}) == 200
                    assert px.pair().down.pipe is None and px.pair().down.stages
                    assert px.pair().up.pipe is not None      # the other direction is untouched
            assert api("DELETE", "/proxies/p/toxics/latency_downstream") == 204
            assert wait_until(px.spliced, timeout=10)
            c.sendall(b"end")
            sent += b"end"
            c.shutdown(socket.SHUT_WR)
            t.join(30)
        assert bytes(got) == bytes(sent)
