"""The I/O core's batch path (``Protocol.data_batch``): many connections served per poll."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Callable

import pytest

from socktools.core.loop import Loop
from tests.loop_helpers import (Echo, Peer, Recorder, TINY, _socketpair, _tcp, _tcp_pair, assert_same_bytes,
                               payload, run_until)

pytestmark = pytest.mark.timeout(60)

# ================================================================= the batch path
# The suite above runs with the batch path on (the ``loop`` fixture's "+batch"
# variant), one connection at a time.  These put many connections in one poll.

class BatchEcho(Echo):
    """Echo through ``data_batch``/``write_batch``; remembers the batch sizes it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def data_batch(self, conns: list, datas: list) -> None:
        self.batches.append(len(conns))
        for conn, data in zip(conns, datas):
            Recorder.data_received(self, conn, data)
        conns[0].loop.write_batch(conns, datas)


def _tcp_pairs(n: int) -> list:
    pairs = [_tcp() for _ in range(n)]
    for a, b in pairs:
        b.setblocking(False)
    return pairs


def _close_all(pairs) -> None:
    for a, b in pairs:
        a.close()
        b.close()


def _send_all_then_run(loop: Loop, peers: list, msgs: list, want: Callable[[], bool], what: str) -> None:
    """Every peer sends before the loop runs again, so one poll finds them all ready."""
    for peer, msg in zip(peers, msgs):
        peer.sock.sendall(msg)
    run_until(loop, want, what)


def test_batch_serves_many_connections_each_its_own_bytes(default_loop):
    loop = default_loop
    pairs = _tcp_pairs(40)
    try:
        proto = BatchEcho()
        conns = [loop.add_connection(b, proto) for a, b in pairs]
        peers = [Peer(loop, a).start_reading() for a, b in pairs]
        assert all(loop._batch.get(c.fd) is c for c in conns), "steady connections join the batch"
        expected = [bytearray() for _ in peers]
        for rnd in range(20):
            msgs = [payload(64 + 37 * i + rnd, seed=1000 * rnd + i) for i in range(len(peers))]
            for exp, msg in zip(expected, msgs):
                exp += msg
            _send_all_then_run(loop, peers, msgs, lambda: all(len(p.received) == len(e) for p, e in
                                                               zip(peers, expected)), f"round {rnd} echoed")
        for peer, exp in zip(peers, expected):
            assert_same_bytes(bytes(peer.received), bytes(exp))
        assert max(proto.batches) > 1, "no poll delivered more than one connection"
        total = sum(len(e) for e in expected)
        assert loop.byte_totals() == (total, total)
        assert proto.calls.count("data") == sum(proto.batches)
    finally:
        _close_all(pairs)


def test_batch_eof_and_reset_take_the_per_connection_path(default_loop):
    """In one poll: a half-close, a reset, and data on the rest."""
    loop = default_loop
    pairs = _tcp_pairs(8)
    try:
        recs = [BatchEcho() for _ in pairs]
        conns = [loop.add_connection(b, rec) for (a, b), rec in zip(pairs, recs)]
        peers = [Peer(loop, a).start_reading() for a, b in pairs]
        _send_all_then_run(loop, peers, [b"warm"] * len(peers),
                           lambda: all(len(p.received) == 4 for p in peers), "warm-up echoed")
        pairs[0][0].shutdown(socket.SHUT_WR)
        pairs[1][0].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peers[1].stop_reading()
        pairs[1][0].close()
        for peer in peers[2:]:
            peer.sock.sendall(b"after")
        run_until(loop, lambda: recs[0].lost and recs[1].lost and all(
            len(p.received) == 9 for p in peers[2:]), "EOF, reset and echoes handled")
        assert recs[0].calls[-2:] == ["eof", "lost"] and recs[0].exc is None
        assert isinstance(recs[1].exc, ConnectionResetError) and conns[1].failed_in == "recv"
        assert all(not rec.lost for rec in recs[2:])
        assert all(bytes(p.received) == b"warmafter" for p in peers[2:])
        assert conns[0].fd not in loop._batch and conns[1].fd not in loop._batch
    finally:
        _close_all(pairs)


def test_batch_partial_write_buffers_then_rejoins():
    """A peer that stops reading: the write falls short, the rest is buffered per
    connection (the batch is left), and once flushed the connection rejoins."""
    lp = Loop()
    a, b = _tcp_pair(socket.AF_INET, "127.0.0.1", TINY)
    other_a, other_b = _tcp()
    try:
        proto = BatchEcho()
        conn = lp.add_connection(b, proto)
        other = lp.add_connection(other_b, proto)
        a.setblocking(False)
        sent = bytearray()
        chunk = payload(2048, seed=3)
        while conn.pending == 0:  # the peer never reads: its window and our buffer fill
            try:
                n = a.send(chunk)
                sent += chunk[:n]
            except BlockingIOError:
                pass
            other_a.sendall(b"x")
            lp.run(timeout=0.01)
        assert lp._batch.get(conn.fd) is None, "a buffering connection is not in the batch"
        assert lp._batch.get(other.fd) is other
        peer = Peer(lp, a).start_reading()
        run_until(lp, lambda: conn.pending == 0 and lp._batch.get(conn.fd) is conn,
                  "flushed and back in the batch")
        run_until(lp, lambda: len(peer.received) == len(sent), "everything echoed")
        assert_same_bytes(bytes(peer.received), bytes(sent))
    finally:
        lp.close()
        for s in (a, other_a):
            s.close()


def test_write_batch_skips_a_connection_closed_in_between(default_loop):
    """data_batch aborts one connection and a new socket reuses its fd number at
    once: write_batch must neither write to the closed one nor to the newcomer."""
    loop = default_loop
    pairs = _tcp_pairs(6)

    class Closer(BatchEcho):
        victim = newcomer = None
        reused = False
        spare: list = []

        def data_batch(self, conns: list, datas: list) -> None:
            self.batches.append(len(conns))
            if self.victim is None:
                self.victim, freed = conns[0], conns[0].fd
                self.victim.abort()
                while len(self.spare) < 1000:  # new fds take the lowest free numbers
                    x, y = socket.socketpair()
                    self.spare += [x, y]
                    if freed in (x.fileno(), y.fileno()):  # connected: a stray write would arrive
                        self.newcomer = x if x.fileno() == freed else y
                        self.reused = True
                        break
            conns[0].loop.write_batch(conns, datas)

    proto = Closer()
    try:
        conns = [loop.add_connection(b, proto) for a, b in pairs]
        peers = [Peer(loop, a).start_reading() for a, b in pairs]
        for peer in peers:
            peer.sock.sendall(b"ping")
        run_until(loop, lambda: proto.victim is not None and all(
            p.received == b"ping" for p, c in zip(peers, conns) if c is not proto.victim), "the others answered")
        assert proto.reused, "the scenario needs the fd number reused at once"
        victim_peer = peers[conns.index(proto.victim)]
        run_until(loop, lambda: victim_peer.eof or victim_peer.error is not None, "the victim's peer sees the close")
        assert victim_peer.received == b""
        stray = proto.spare[-1] if proto.newcomer is proto.spare[-2] else proto.spare[-2]
        with pytest.raises(BlockingIOError):  # nothing was written to the newcomer
            stray.recv(1, socket.MSG_DONTWAIT)
    finally:
        for sock in proto.spare:
            sock.close()
        _close_all(pairs)


def test_set_protocol_moves_a_connection_between_the_paths(default_loop):
    loop = default_loop
    a, b = _socketpair()
    try:
        plain, batched = Echo(), BatchEcho()
        conn = loop.add_connection(b, plain)
        assert conn.fd not in loop._batch
        conn.set_protocol(batched)
        assert loop._batch.get(conn.fd) is conn
        peer = Peer(loop, a).start_reading()
        a.sendall(b"one")
        run_until(loop, lambda: peer.received == b"one", "echo through the batch")
        assert batched.batches == [1] and plain.calls == ["made"]
        conn.set_protocol(plain)
        assert conn.fd not in loop._batch and not loop._batch_handlers
        a.sendall(b"two")
        run_until(loop, lambda: peer.received == b"onetwo", "echo per event")
        assert plain.calls == ["made", "data"] and batched.batches == [1]
    finally:
        a.close()
        b.close()


def test_batch_spurious_readiness_keeps_the_others_aligned(default_loop, monkeypatch):
    """A read that finds nothing (EAGAIN) drops out of the batch; every other
    connection's answer still goes to its own peer, and the skipped data is
    served on the next poll."""
    import socktools.core.loop as iocore
    loop = default_loop
    pairs = _tcp_pairs(5)
    try:
        proto = BatchEcho()
        conns = [loop.add_connection(b, proto) for a, b in pairs]
        peers = [Peer(loop, a).start_reading() for a, b in pairs]
        victim = conns[1].fd
        real_read, skipped = iocore._read, []

        def read(fd, n):
            if fd == victim and not skipped:
                skipped.append(fd)
                raise BlockingIOError(errno.EAGAIN, "pretend nothing was there")
            return real_read(fd, n)

        monkeypatch.setattr(iocore, "_read", read)
        msgs = [bytes([65 + i]) * (10 + i) for i in range(len(peers))]
        _send_all_then_run(loop, peers, msgs, lambda: all(p.received == m for p, m in zip(peers, msgs)),
                           "every peer gets its own echo")
        assert skipped == [victim] and max(proto.batches) > 1
        assert not proto.lost and not any(c.closed for c in conns)
    finally:
        _close_all(pairs)


def test_a_bug_in_data_batch_ends_that_batch_only(default_loop, caplog):
    loop = default_loop
    pairs = _tcp_pairs(5)
    by_a, by_b = _socketpair()
    try:
        class Broken(BatchEcho):
            def data_batch(self, conns: list, datas: list) -> None:
                raise ValueError("bug in data_batch")

        proto = Broken()
        conns = [loop.add_connection(b, proto) for a, b in pairs]
        bystander = Echo()  # per-event path, same loop
        by_conn = loop.add_connection(by_b, bystander)
        by_peer = Peer(loop, by_a).start_reading()
        with caplog.at_level("ERROR", logger="socktools.core.loop"):
            for a, b in pairs:
                a.sendall(b"x")
            run_until(loop, lambda: all(c.closed for c in conns), "the batch's connections closed")
        assert {c.failed_in for c in conns} == {"internal"}
        assert isinstance(proto.exc, ValueError) and proto.calls.count("lost") == len(conns)
        assert any("Broken raised ValueError" in r.getMessage() for r in caplog.records)
        by_a.sendall(b"still here")
        run_until(loop, lambda: by_peer.received == b"still here", "the bystander echoes")
        assert not by_conn.closed
    finally:
        _close_all(pairs)
        by_a.close()
        by_b.close()


def _shared_batch(calls: list, returned: list):
    def data_batch(conns: list, datas: list) -> None:
        calls.append(len(conns))
        returned.append(conns[0].loop.write_batch(conns, datas))
    return data_batch


def test_protocols_sharing_one_data_batch_are_served_in_one_call_with_per_connection_counts(default_loop):
    """Two protocol classes with one data_batch function (a proxy's client and upstream
    sides) make one group: one call per poll for both, not one per protocol.  With
    ``count_each`` each connection's own counters hold its bytes, and byte_totals() does not
    count them twice; write_batch says True when every byte reached the kernel."""
    loop = default_loop
    loop.count_each = True
    calls: list = []
    returned: list = []
    shared = _shared_batch(calls, returned)

    class Left(Echo):
        data_batch = staticmethod(shared)

    class Right(Echo):
        data_batch = staticmethod(shared)

    pairs = _tcp_pairs(10)
    try:
        conns = [loop.add_connection(b, (Left if i % 2 else Right)()) for i, (a, b) in enumerate(pairs)]
        peers = [Peer(loop, a).start_reading() for a, b in pairs]
        assert len(loop._batch_handlers) == 1
        msgs = [payload(100 + i, seed=i) for i in range(len(peers))]
        _send_all_then_run(loop, peers, msgs, lambda: all(len(p.received) == len(m) for p, m in zip(peers, msgs)),
                           "every message echoed")
        for peer, msg in zip(peers, msgs):
            assert_same_bytes(bytes(peer.received), msg)
        assert sum(calls) == len(conns) and max(calls) > 1, calls
        assert len(calls) < len(conns), "the two protocols should share calls"
        assert all(r is True for r in returned)
        for conn, msg in zip(conns, msgs):
            assert conn.bytes_in == conn.bytes_out == len(msg)
        total = sum(map(len, msgs))
        assert loop.byte_totals() == (total, total)
    finally:
        _close_all(pairs)
