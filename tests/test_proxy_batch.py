"""``--splice auto`` (the default) on real loopback sockets: a plain link's small messages go
through the loop's batch path, a bulk transfer switches that link to splice(2); bytes exact,
counts exact, and a toxic added or removed moves a link out of and back into the batch.  (The
batch path's back-pressure is tested beside splice's, in test_proxy_splice.py.)"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request

import pytest

from socktools.proxy import splice
from tests.conftest import wait_until
from tests.proxy_helpers import bulk_echo, connect, recv_exactly, recv_until_closed
from tests.test_proxy import echo
from tests.test_proxy_splice import running_proxy
from tests.threadserver import ThreadServer


def _batched(px, conn) -> bool:
    return conn is not None and px.server.loop._batch.get(conn.fd) is conn


def _round_trips(c, n: int, size: int = 64) -> None:
    for i in range(n):
        msg = os.urandom(size)
        c.sendall(msg)
        assert recv_exactly(c, size) == msg, f"round trip {i}"


def _connection_event(px) -> dict:
    assert wait_until(lambda: any(e["event"] == "connection" for e in px.events), timeout=10)
    return next(e for e in px.events if e["event"] == "connection")


@pytest.mark.skipif(not splice.AVAILABLE, reason="os.splice needs Linux and Python 3.10+")
def test_small_messages_are_batched_a_bulk_transfer_splices_and_small_ones_batch_again():
    from socktools.proxy.splice import UNSPLICE_AFTER
    payload = os.urandom(4 * 1024 * 1024 + 5)
    after = UNSPLICE_AFTER + 4
    with ThreadServer(echo) as srv, running_proxy(srv.port, splice="auto") as px:
        with connect(px.port, timeout=10) as c:
            _round_trips(c, 50)
            pair = px.pair()
            assert pair.up.pipe is None and pair.down.pipe is None, "small messages should not splice"
            assert wait_until(lambda: _batched(px, pair.client) and _batched(px, pair.upstream), timeout=10)
            sender = threading.Thread(target=c.sendall, args=(payload,))
            sender.start()
            assert wait_until(px.spliced, timeout=10), "a bulk transfer should splice both directions"
            assert not _batched(px, pair.client) and not _batched(px, pair.upstream)
            assert recv_exactly(c, len(payload)) == payload
            sender.join(30)
            _round_trips(c, after)            # small messages again: back to the batch path
            assert wait_until(lambda: _batched(px, pair.client) and _batched(px, pair.upstream), timeout=10)
            assert pair.up.pipe is None and pair.down.pipe is None
            _round_trips(c, 3)
            c.shutdown(socket.SHUT_WR)
            assert recv_until_closed(c) == b""
    ev = _connection_event(px)
    n = (50 + after + 3) * 64 + len(payload)
    assert ev["from_client"] == ev["to_upstream"] == ev["from_upstream"] == ev["to_client"] == n


def test_never_copies_even_a_bulk_transfer_on_the_batch_path():
    payload = os.urandom(2 * 1024 * 1024)
    with ThreadServer(echo) as srv, running_proxy(srv.port, splice="never") as px:
        with connect(px.port, timeout=10) as c:
            got = bulk_echo(c, payload)
            pair = px.pair()
            assert pair is None or (pair.up.pipe is None and pair.down.pipe is None)
        assert got == payload
    ev = _connection_event(px)
    assert ev["from_client"] == ev["to_upstream"] == ev["from_upstream"] == ev["to_client"] == len(payload)


def test_a_toxic_takes_a_link_out_of_the_batch_and_its_removal_puts_it_back():
    def api(method, path, doc=None):
        req = urllib.request.Request(f"http://127.0.0.1:{api_port}{path}", method=method,
                                     data=None if doc is None else json.dumps(doc).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status

    with ThreadServer(echo) as srv, running_proxy(srv.port, splice="auto", api="127.0.0.1:0") as px:
        api_port = int(next(e for e in px.events if e["event"] == "api")["address"].rsplit(":", 1)[1])
        with connect(px.port, timeout=10) as c:
            _round_trips(c, 3)
            pair = px.pair()
            assert wait_until(lambda: _batched(px, pair.upstream), timeout=10)
            assert api("POST", "/proxies/p/toxics", {"type": "latency", "attributes": {"latency": 100}}) == 200
            assert not _batched(px, pair.upstream) and pair.down.stages
            t0 = time.monotonic()
            _round_trips(c, 1)
            assert time.monotonic() - t0 >= 0.1, "the toxic must see the first reply after it"
            assert api("DELETE", "/proxies/p/toxics/latency_downstream") == 204
            assert wait_until(lambda: _batched(px, pair.upstream), timeout=10)
            _round_trips(c, 3)
