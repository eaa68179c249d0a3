"""What flood needs from the I/O core, beyond tests/test_iocore.py's behaviour suite.

* a stale event for a reused fd number never reaches the socket's new owner
  (epoll is used directly, so events are looked up by fd, not by key);
* ``open_connection(ctx=...)`` sets ``conn.ctx`` before any callback, even an
  immediate failure's;
* ``Connection.read_size`` bounds each recv().
"""

from __future__ import annotations

import select
import selectors
import socket

import pytest

from socktools.core.loop import Connection, Loop, Protocol

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["epoll", "selectors"] if hasattr(select, "epoll") else ["selectors"])
def loop(request):
    lp = Loop() if request.param == "epoll" else Loop(selectors.DefaultSelector())
    yield lp
    lp.close()


class Collect(Protocol):
    def __init__(self) -> None:
        self.data: list = []
        self.lost: list = []
        self.ctx_seen: list = []

    def data_received(self, conn: Connection, data: bytes) -> None:
        self.data.append(data)

    def connection_lost(self, conn: Connection, exc) -> None:
        self.ctx_seen.append(conn.ctx)
        self.lost.append(exc)


def test_stale_event_of_a_reused_fd_is_not_delivered_to_the_new_owner(loop):
    """Conn A's handler closes A and adopts B, which gets A's fd number; the batch
    still holds a second event for that fd, from A's time.  B must not see it."""
    a, a_peer = socket.socketpair()
    a_peer.send(b"for A")
    events_of_b = []
    pairs = []

    class CloseAndReplace(Collect):
        def data_received(self, conn, data):
            super().data_received(conn, data)
            fd = conn.fd
            conn.abort()
            b, b_peer = socket.socketpair()
            pairs.append((b, b_peer))
            b_peer.send(b"for B")
            assert b.fileno() == fd, "the kernel hands out the lowest free fd"
            other = Collect()
            loop.add_connection(b, other)
            events_of_b.append(other)

    proto = CloseAndReplace()
    conn_a = loop.add_connection(a, proto)
    fd = conn_a.fd
    poller = loop._poller
    real_poll = poller.poll
    batches = [[(fd, 1), (fd, 1)]]  # one batch: A's event, then a stale duplicate

    def poll(timeout):
        if batches:
            loop.stop()  # this one iteration only
            return batches.pop()
        return real_poll(timeout)

    poller.poll = poll
    loop.run(timeout=5)
    assert proto.data == [b"for A"]
    assert events_of_b and events_of_b[0].data == [], "B got an event that was A's"
    loop.run(until=lambda: events_of_b[0].data, timeout=5)  # the next real poll: B's own event
    assert events_of_b[0].data == [b"for B"]
    a_peer.close()
    for b, b_peer in pairs:
        b_peer.close()


def test_open_connection_ctx_is_set_even_for_an_immediate_failure(loop, tmp_path):
    """An AF_UNIX connect to a missing path fails inside connect() itself."""
    proto = Collect()
    marker = object()
    conn = loop.open_connection(str(tmp_path / "nobody"), proto, family=socket.AF_UNIX, ctx=marker)
    assert conn.closed and conn.failed_in == "connect"
    assert proto.ctx_seen == [marker]
    assert isinstance(proto.lost[0], OSError)


def test_read_size_bounds_each_recv(loop):
    a, peer = socket.socketpair()
    proto = Collect()
    conn = loop.add_connection(a, proto)
    conn.read_size = 3
    peer.send(b"abcdefgh")
    loop.run(until=lambda: sum(map(len, proto.data)) == 8, timeout=5)
    assert proto.data == [b"abc", b"def", b"gh"]
    peer.close()
