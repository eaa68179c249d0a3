"""What the pollers must guarantee: a stale event for a reused fd number never reaches
the socket's new owner (epoll is used directly, so events are looked up by fd, not by key)."""

from __future__ import annotations

import socket

import pytest

from tests.loop_helpers import Collect

pytestmark = pytest.mark.timeout(60)

def test_stale_event_of_a_reused_fd_is_not_delivered_to_the_new_owner(plain_loop):
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
            plain_loop.add_connection(b, other)
            events_of_b.append(other)

    proto = CloseAndReplace()
    conn_a = plain_loop.add_connection(a, proto)
    fd = conn_a.fd
    poller = plain_loop._poller
    real_poll = poller.poll
    batches = [[(fd, 1), (fd, 1)]]  # one batch: A's event, then a stale duplicate

    def poll(timeout):
        if batches:
            plain_loop.stop()  # this one iteration only
            return batches.pop()
        return real_poll(timeout)

    poller.poll = poll
    plain_loop.run(timeout=5)
    assert proto.data == [b"for A"]
    assert events_of_b and events_of_b[0].data == [], "B got an event that was A's"
    plain_loop.run(until=lambda: events_of_b[0].data, timeout=5)  # the next real poll: B's own event
    assert events_of_b[0].data == [b"for B"]
    a_peer.close()
    for b, b_peer in pairs:
        b_peer.close()
